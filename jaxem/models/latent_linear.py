"""Linear-Gaussian latent models: factor analysis and probabilistic PCA, by EM.

    x = μ + Wᵀ z + ε,    z ~ N(0, I_q),    ε ~ N(0, Ψ)

with ``Ψ`` diagonal (factor analysis; Rubin and Thayer 1982) or ``σ² I``
(probabilistic PCA; Tipping and Bishop 1999). ``W`` is stored as scikit-learn's
``components_``: shape ``(q, D)``, one row per factor, so ``C = Wᵀ W + Ψ``.

Cost of one E-step on ``n`` rows is O(n D q), never O(n D²): with
``M = I_q + W Ψ⁻¹ Wᵀ = L Lᵀ`` (Cholesky of a ``q × q`` matrix),

* ``E[z | x] = M⁻¹ W Ψ⁻¹ (x - μ)`` and ``Cov[z | x] = M⁻¹`` (Woodbury);
* ``log |C| = Σ log Ψ + 2 Σ log diag L`` (matrix determinant lemma);
* ``(x - μ)ᵀ C⁻¹ (x - μ) = Σ (x - μ)² / Ψ - |L⁻¹ W Ψ⁻¹ (x - μ)|²``.

The statistics are sums over rows, about the E-step's own mean ``μ`` (offsets
``d = x - μ``): ``Σ w``, ``Σ w d``, ``Σ w d∘d``, ``Σ w d E[z]ᵀ``, ``Σ w E[z]`` and
``Σ w E[z] E[z]ᵀ``. The M-step regresses ``d`` on ``[E z, 1]`` (the exact M-step
over ``W`` and the mean together, then sets the mean to the weighted sample mean,
its maximum for any covariance, so each step still raises the likelihood), so the
mean is the weighted sample mean from the first iteration on whatever it started
from (:meth:`LatentLinear.init` starts it there).

Heywood cases (a noise variance driven to 0) are kept finite by a floor,
``noise_floor`` (default 1e-12, scikit-learn's ``SMALL``), on every noise variance.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular

from jaxem import _iterate, ops
from jaxem.contract import Chunks, Model

__all__ = [
    "LatentLinear",
    "LatentLinearParams",
    "LatentLinearStats",
    "LatentLinearHyper",
    "NOISE_KINDS",
    "factor_analysis",
    "ppca",
]

#: ``"diagonal"``: factor analysis (one noise variance per feature); ``"isotropic"``:
#: probabilistic PCA (one noise variance for all).
NOISE_KINDS = ("diagonal", "isotropic")


class LatentLinearParams(NamedTuple):
    """Mean ``(D,)``, loadings ``components`` ``(q, D)`` (scikit-learn's layout) and
    noise variances ``(D,)`` (all equal for probabilistic PCA)."""

    mean: jax.Array
    components: jax.Array
    noise_variance: jax.Array


class LatentLinearStats(NamedTuple):
    """Weighted sums over rows of the offsets ``d = x - μ`` from the E-step's mean."""

    weight: jax.Array  # Σ w, ()
    offset: jax.Array  # Σ w d, (D,)
    offset_squares: jax.Array  # Σ w d∘d, (D,)
    offset_latent: jax.Array  # Σ w d E[z]ᵀ, (D, q)
    latent: jax.Array  # Σ w E[z], (q,)
    latent_outer: jax.Array  # Σ w E[z] E[z]ᵀ, (q, q) (the posterior covariance comes in the M-step)


class LatentLinearHyper(NamedTuple):
    """The floor on every noise variance (Heywood cases)."""

    noise_floor: jax.Array


@dataclasses.dataclass(frozen=True)
class LatentLinear(Model):
    """Factor analysis or probabilistic PCA with ``n_components`` latent dimensions.

    Parameters
    ----------
    n_components : int
        Latent dimensions ``q`` (0 gives a Gaussian with diagonal or isotropic
        covariance). Factor analysis allows ``q <= D``; probabilistic PCA needs
        ``q < D`` (its noise is the variance left in the discarded directions).
        :func:`jaxem.fit` checks ``q`` against the data's ``D``.
    noise : {"diagonal", "isotropic"}
        ``Ψ`` diagonal (factor analysis) or ``σ² I`` (probabilistic PCA).
    noise_floor : float
        Lower bound on every noise variance (default 1e-12, scikit-learn's).

    Notes
    -----
    Initialisation (one restart, from its own key): the mean is the weighted mean
    of the rows and the noise variances their weighted variances (their average
    for probabilistic PCA), both from two chunked passes; the loadings are
    standard normal draws scaled by each feature's standard deviation and by
    ``1 / sqrt(q + 1)``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import jaxem
    >>> z = jax.random.normal(jax.random.key(0), (500, 1))
    >>> noise = 0.1 * jax.random.normal(jax.random.key(1), (500, 3))
    >>> X = z @ jnp.array([[1.0, 2.0, -1.0]]) + noise
    >>> result = jaxem.fit(jaxem.factor_analysis(1), X, key=jax.random.key(2), tol=1e-8,
    ...                    max_iter=500)
    >>> loadings = result.params.components[0]
    >>> print((loadings / loadings[0]).round(1))
    [ 1.  2. -1.]
    """

    n_components: int
    noise: str = "diagonal"
    noise_floor: float = dataclasses.field(default=1e-12, compare=False)

    outputs: ClassVar[tuple[str, ...]] = ("log_prob", "transform")

    def __post_init__(self):
        if (
            not isinstance(self.n_components, int)
            or isinstance(self.n_components, bool)
            or self.n_components < 0
        ):
            raise ValueError(f"n_components must be a non-negative int, got {self.n_components!r}.")
        if self.noise not in NOISE_KINDS:
            raise ValueError(f"noise must be one of {NOISE_KINDS}, got {self.noise!r}.")
        if not self.noise_floor > 0:
            raise ValueError(f"noise_floor must be positive, got {self.noise_floor!r}.")

    def check_features(self, n_features: int) -> None:
        """Raise ``ValueError`` if ``n_components`` does not suit ``n_features``."""
        q = self.n_components
        if self.noise == "isotropic" and q >= n_features:
            raise ValueError(
                f"n_components={q} must be < n_features={n_features} for probabilistic "
                "PCA: its noise variance is the variance left outside the q latent "
                "directions. Use fewer components."
            )
        if q > n_features:
            raise ValueError(
                f"n_components={q} must be <= n_features={n_features} for factor "
                "analysis. Use fewer components."
            )

    # -- contract ---------------------------------------------------------------------------
    def hyper(self, dtype) -> LatentLinearHyper:
        return LatentLinearHyper(np.asarray(self.noise_floor, dtype))

    def init(self, key, chunks: Chunks, hyper) -> LatentLinearParams:
        self.check_features(chunks.x.shape[-1])
        dtype = chunks.weights.dtype

        def moments(x, weights):
            return jnp.sum(weights), weights @ x

        total, sums = _iterate.chunked_sum(moments, chunks)
        mean = sums / total

        def squares(x, weights):  # about the mean: no cancellation
            offset = x - mean
            return weights @ (offset * offset)

        variance = _iterate.chunked_sum(squares, chunks) / total
        variance = jnp.maximum(variance, hyper.noise_floor)
        scale = jnp.sqrt(variance) / jnp.sqrt(jnp.asarray(self.n_components + 1, dtype))
        draws = jax.random.normal(key, (self.n_components, mean.shape[0]), dtype)
        noise = self._tie(variance)
        return LatentLinearParams(mean, draws * scale, noise)

    def e_step(self, params: LatentLinearParams, x, weights, hyper):
        used = weights > 0
        # where(): rows of weight 0 may hold inf or NaN, and 0 * inf is NaN.
        x = jnp.where(used[:, None], x, 0)
        _, latent, log_density = self._posterior(params, x)
        latent = jnp.where(used[:, None], latent, 0)
        total = jnp.sum(weights)
        # Σ w d and Σ w d∘d through the chunk's own weighted mean c, which all
        # restarts share: with e = x - c and δ = c - μ, d = e + δ, so
        # Σ w d∘d = Σ w e∘e + δ∘(2 Σ w e + δ Σ w), a sum of non-negative terms (Σ w e
        # is rounding) and no row pass per restart. Under vmap the column sums of
        # per-restart (rows, D) products hit a slow path of XLA:CPU in float32 at a
        # single restart (Σ w d∘d alone took 34 ms per 8,192 rows at D = 256, 1 ms
        # shared).
        centre = (weights @ x) / jnp.where(total > 0, total, 1)
        spread = x - centre
        spread_sum = weights @ spread
        shift = centre - params.mean
        weighted_latent = weights[:, None] * latent
        latent_sum = jnp.sum(weighted_latent, axis=0)
        # Σ w d E[z]ᵀ = Σ w x E[z]ᵀ - μ Σ w E[z]ᵀ: the product with the rows, which all
        # restarts share, is one matrix product under vmap (the batched product with the
        # offsets is 4x slower on CPU); Σ w E[z] is about 0 once μ is the sample mean,
        # so the difference does not cancel.
        offset_latent = x.T @ weighted_latent - jnp.outer(params.mean, latent_sum)
        stats = LatentLinearStats(
            weight=total,
            offset=spread_sum + total * shift,
            offset_squares=jnp.sum(weights[:, None] * spread * spread, axis=0)
            + shift * (2 * spread_sum + total * shift),
            offset_latent=offset_latent,
            latent=latent_sum,
            latent_outer=weighted_latent.T @ latent,
        )
        return stats, jnp.sum(jnp.where(used, weights * log_density, 0.0))

    def m_step(self, stats: LatentLinearStats, params: LatentLinearParams, hyper):
        q = self.n_components
        weight = stats.weight
        # E[z̃ z̃ᵀ] summed, z̃ = [z, 1]: the posterior covariance M⁻¹ enters once per row.
        posterior = self._posterior_covariance(params)
        second = jnp.block(
            [
                [stats.latent_outer + weight * posterior, stats.latent[:, None]],
                [stats.latent[None, :], weight[None, None]],
            ]
        )
        cross = jnp.concatenate([stats.offset_latent, stats.offset[:, None]], axis=1)  # (D, q+1)
        # Regression of d on z̃: [Wᵀ, b] = cross second⁻¹ (second is positive definite).
        factor = jnp.linalg.cholesky(second)
        loadings = cho_solve((factor, True), cross.T).T  # (D, q+1)
        # diag Σ E[(d - W̃ z̃)(d - W̃ z̃)ᵀ] at the optimum: Σ d∘d - diag(W̃ crossᵀ).
        residual = stats.offset_squares - jnp.sum(loadings * cross, axis=1)
        noise = self._tie(residual / weight)
        noise = jnp.maximum(noise, hyper.noise_floor)
        # The mean then moves to the weighted sample mean, the maximum over the mean
        # for any covariance: the likelihood rises again (a generalised EM step), and
        # from the first iteration on the mean is exact.
        return LatentLinearParams(
            mean=params.mean + stats.offset / weight,
            components=self._expanded(stats, posterior, loadings[:, :q].T),
            noise_variance=noise,
        )

    def _expanded(self, stats: LatentLinearStats, posterior, components):
        """Parameter expansion (PX-EM; Liu, Rubin and Wu 1998): the M-step of the
        model with ``z ~ N(η, Σ_z)`` also fits ``η`` and ``Σ_z`` from the posterior
        moments; mapped back to ``z ~ N(0, I)`` the loadings become ``L_zᵀ W``
        (``Σ_z = L_z L_zᵀ``; ``W η`` moves the mean, which is set to the sample mean
        anyway). Still monotone (EM of the expanded model), and it removes EM's
        slowest direction, the scale of the latent space."""
        weight = stats.weight
        centre = stats.latent / weight
        spread = (stats.latent_outer / weight + posterior) - jnp.outer(centre, centre)
        return jnp.linalg.cholesky(spread).T @ components

    def log_prob(self, params: LatentLinearParams, x):
        """Per-row log-density under ``N(μ, Wᵀ W + Ψ)``."""
        return self._posterior(params, x)[2]

    def transform(self, params: LatentLinearParams, x):
        """``(n, q)`` posterior means ``E[z | x]`` (scikit-learn's ``transform``)."""
        return self._posterior(params, x)[1]

    def n_parameters(self, n_features: int) -> int:
        q = self.n_components
        noise = n_features if self.noise == "diagonal" else 1
        # Loadings up to a rotation of the latent space, mean, noise.
        return n_features * q - q * (q - 1) // 2 + n_features + noise

    def row_width(self, x) -> int:
        # The E-step holds (rows, D) offsets: chunks of ~2M elements stay in cache
        # (8,192 rows at D = 256: 1.5x faster per iteration than one 100,000-row chunk).
        return max(1, x.shape[-1], self.n_components)

    def sample(self, key, params: LatentLinearParams, n_samples: int):
        """``n_samples`` draws ``(n_samples, D)`` from the model."""
        latent_key, noise_key = jax.random.split(key)
        dtype = params.mean.dtype
        z = jax.random.normal(latent_key, (n_samples, self.n_components), dtype)
        eps = jax.random.normal(noise_key, (n_samples, params.mean.shape[0]), dtype)
        return params.mean + z @ params.components + eps * jnp.sqrt(params.noise_variance)

    # -- derived quantities ------------------------------------------------------------------
    def _tie(self, noise):
        """Probabilistic PCA shares one noise variance: the average."""
        if self.noise == "isotropic":
            return jnp.full_like(noise, jnp.mean(noise))
        return noise

    def _inner_cholesky(self, params: LatentLinearParams):
        """Lower Cholesky factor ``L`` of ``M = I_q + W Ψ⁻¹ Wᵀ`` ``(q, q)``."""
        w = params.components
        scaled = w / params.noise_variance
        inner = jnp.eye(self.n_components, dtype=w.dtype) + scaled @ w.T
        return jnp.linalg.cholesky(inner)

    def _posterior_covariance(self, params: LatentLinearParams):
        """``Cov[z | x] = M⁻¹`` ``(q, q)``, the same for every row."""
        factor = self._inner_cholesky(params)
        identity = jnp.eye(self.n_components, dtype=factor.dtype)
        return cho_solve((factor, True), identity)

    @staticmethod
    def _quadratic(params: LatentLinearParams, offset, precision, whitened, latent):
        """Rows ``dᵀ C⁻¹ d``. Woodbury's ``Σ d²/Ψ - |L⁻¹ W Ψ⁻¹ d|²`` cancels: by 54x on
        the factor-analysis benchmark's data, which costs float32 rows 30 ulps and
        biases their mean (+1e-4 per row at ~434). Below float64 it is taken as
        ``min_z |d - Wᵀ z|²_Ψ⁻¹ + |z|²``, attained at ``z = E[z | x]``: two
        non-negative terms, and insensitive to first order to rounding in ``E[z | x]``
        (a minimum). float64 keeps Woodbury's form (6 of its 53 bits lost): the
        residual's per-restart ``(rows, q) x (q, D)`` product doubled its E-step at 4
        restarts (XLA:CPU's batched products)."""
        if jnp.finfo(offset.dtype).bits >= 64:
            return jnp.sum(offset * offset * precision, axis=1) - jnp.sum(
                whitened * whitened, axis=1
            )
        residual = offset - latent @ params.components
        return jnp.sum(residual * residual * precision, axis=1) + jnp.sum(latent * latent, axis=1)

    def _posterior(self, params: LatentLinearParams, x):
        """``(d, E[z | x], log p(x))`` of every row, ``d = x - μ``; O(n D q)."""
        offset = x - params.mean
        precision = 1.0 / params.noise_variance
        factor = self._inner_cholesky(params)
        # L⁻¹ once (q × q; M ⪰ I keeps it well conditioned), then matrix products:
        # XLA:CPU's triangular solve with ~1000 right-hand sides is 500x slower.
        inverse = solve_triangular(
            factor, jnp.eye(self.n_components, dtype=factor.dtype), lower=True
        )
        # Rows L⁻¹ W Ψ⁻¹ d as x H - μ H with H = Ψ⁻¹ Wᵀ L⁻ᵀ (D × q): the product with
        # the rows, which all restarts share, is one matrix product under vmap.
        project = (params.components * precision).T @ inverse.T
        whitened = x @ project - params.mean @ project
        latent = whitened @ inverse  # rows M⁻¹ W Ψ⁻¹ d
        quadratic = self._quadratic(params, offset, precision, whitened, latent)
        log_det = jnp.sum(jnp.log(params.noise_variance)) + 2 * ops.log_det_from_cholesky(factor)
        n_features = x.shape[-1]
        constant = n_features * jnp.log(2 * jnp.pi).astype(offset.dtype)
        return offset, latent, -0.5 * (constant + log_det + quadratic)


def factor_analysis(n_components: int, *, noise_floor: float = 1e-12) -> LatentLinear:
    """Factor analysis with ``n_components`` factors; see :class:`LatentLinear`."""
    return LatentLinear(n_components=n_components, noise="diagonal", noise_floor=noise_floor)


def ppca(n_components: int, *, noise_floor: float = 1e-12) -> LatentLinear:
    """Probabilistic PCA with ``n_components`` latent dimensions; see :class:`LatentLinear`."""
    return LatentLinear(n_components=n_components, noise="isotropic", noise_floor=noise_floor)

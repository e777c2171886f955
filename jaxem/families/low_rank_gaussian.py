"""Gaussian components with low-rank-plus-diagonal covariances ``W_k W_kᵀ + Ψ_k``.

Each component is a factor analyser, ``x = μ_k + W_k z + ε``, ``z ~ N(0, I_q)``,
``ε ~ N(0, Ψ_k)`` with ``W_k`` ``(D, q)`` loadings and ``Ψ_k`` diagonal: a mixture
of them is a mixture of factor analysers (Ghahramani and Hinton 1996), and with
``isotropic=True`` (``Ψ_k = σ_k² I``) a mixture of probabilistic PCAs (Tipping and
Bishop 1999).

Nothing ``D x D`` is ever formed. With ``M_k = I_q + W_kᵀ Ψ_k⁻¹ W_k = L_k L_kᵀ``
(``q x q``) and offsets ``d = x - μ_k``,

* ``dᵀ C_k⁻¹ d = Σ d² / Ψ_k - |L_k⁻¹ W_kᵀ Ψ_k⁻¹ d|²`` (Woodbury),
* ``log |C_k| = Σ log Ψ_k + 2 Σ log diag L_k`` (matrix determinant lemma),
* ``E[z | x, k] = M_k⁻¹ W_kᵀ Ψ_k⁻¹ d`` and ``Cov[z | x, k] = M_k⁻¹``,

so an E-step costs O(n K D q): one ``(n, D) x (D, K q)`` product with the rows.

EM (Ghahramani and Hinton's): the statistics are sums over rows, about the E-step's
means ``c_k``, of ``r``, ``r d``, ``r d∘d``, ``r d E[z]ᵀ``, ``r E[z]`` and
``r E[z zᵀ]``; the M-step regresses ``d`` on ``z̃ = [z, 1]`` jointly, which updates
the loadings and the means together (the exact M-step of the complete-data
likelihood: the log-likelihood never decreases), then ``Ψ_k = diag(Σ r d dᵀ -
W̃_k Σ r z̃ dᵀ) / Σ r`` (its mean over the features for ``isotropic``), plus
``reg_covar``.

At initialisation there are no loadings to take posteriors under: the statistics
are then the weighted mean and diagonal scatter and a sketch ``S_k Ω`` of each
component's scatter against a fixed Gaussian ``(D, q)`` matrix ``Ω`` (one step of
a randomised range finder, Halko, Martinsson and Tropp 2011), all merged by Chan,
Golub and LeVeque's update; the initial loadings span that sketch, scaled to carry
half of each component's variance, the other half going to ``Ψ``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from jaxem import ops
from jaxem.contract import Family
from jaxem.families.gaussian import GaussianStats, gaussian

__all__ = [
    "LowRankGaussian",
    "LowRankGaussianParams",
    "LowRankGaussianStats",
    "LowRankGaussianInitStats",
    "LowRankGaussianHyper",
    "low_rank_gaussian",
]


class LowRankGaussianParams(NamedTuple):
    """Parameters of ``K`` components with covariance ``W Wᵀ + Ψ``.

    Attributes
    ----------
    means : (K, D)
    loadings : (K, D, q) ``W``, defined up to a rotation of the latent space
    noise_variances : (K, D) the diagonal of ``Ψ`` (all equal per component for
        ``isotropic``)
    """

    means: jax.Array
    loadings: jax.Array
    noise_variances: jax.Array


class LowRankGaussianStats(NamedTuple):
    """Expected complete-data statistics about the E-step's means ``centre``
    (``d = x - centre``); every field but ``centre`` is a sum over rows."""

    centre: jax.Array  # (K, D), the E-step's means: the same for every chunk
    weight: jax.Array  # Σ r, (K,)
    offset: jax.Array  # Σ r d, (K, D)
    offset_squares: jax.Array  # Σ r d∘d, (K, D)
    offset_latent: jax.Array  # Σ r d E[z]ᵀ, (K, D, q)
    latent: jax.Array  # Σ r E[z], (K, q)
    latent_second: jax.Array  # Σ r E[z zᵀ] (posterior covariance included), (K, q, q)


class LowRankGaussianInitStats(NamedTuple):
    """Statistics without parameters (initialisation): weight, mean and diagonal
    scatter (:class:`GaussianStats`, diag), and ``Σ r (x - mean)(x - mean)ᵀ Ω``
    ``(K, D, q)``."""

    moments: GaussianStats
    sketch: jax.Array


class LowRankGaussianHyper(NamedTuple):
    """``reg_covar``, added to every noise variance."""

    reg_covar: jax.Array


@dataclasses.dataclass(frozen=True)
class LowRankGaussian(Family):
    """Gaussian component family with covariances ``W_k W_kᵀ + Ψ_k`` of rank ``q`` plus
    diagonal (mixtures of factor analysers; of probabilistic PCAs with ``isotropic``).

    Parameters
    ----------
    rank : int
        Latent dimensions ``q``, ``1 <= q < n_features``.
    isotropic : bool
        ``Ψ_k = σ_k² I`` (mixtures of probabilistic PCA) instead of any diagonal.
    reg_covar : float
        Added to every noise variance (keeps ``Ψ`` positive). Excluded from equality:
        changing it does not recompile.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> import jaxem
    >>> family = jaxem.low_rank_gaussian(rank=1)
    >>> params = jaxem.LowRankGaussianParams(
    ...     jnp.zeros((1, 2)), jnp.array([[[1.0], [1.0]]]), jnp.ones((1, 2)))
    >>> x = jnp.array([[1.0, 0.0]])  # scipy: N(0, [[2, 1], [1, 2]]).logpdf = -2.7205
    >>> print(jaxem.families.log_densities(family, params, x).round(4))
    [[-2.7205]]

    Two clusters, each spread along one direction:

    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(400, 1)) * 3
    >>> X = np.where(np.arange(400)[:, None] < 200, z * [1, 1, 0] - 10, z * [0, 1, -1] + 10)
    >>> X = (X + 0.1 * rng.normal(size=X.shape)).astype(np.float32)
    >>> result = jaxem.fit(jaxem.mixture(family, 2), X, key=jax.random.key(0), n_restarts=2)
    >>> print(np.sort(result.params.components.means[:, 0]).round(0))
    [-10.  10.]
    """

    rank: int
    isotropic: bool = False
    reg_covar: float = dataclasses.field(default=1e-6, compare=False)

    update_letters: ClassVar[str] = "mc"

    def __post_init__(self):
        check_rank(self.rank)
        if not self.reg_covar >= 0:
            raise ValueError(f"reg_covar must be non-negative, got {self.reg_covar!r}.")

    # -- contract ---------------------------------------------------------------------------
    def hyper(self, dtype) -> LowRankGaussianHyper:
        return LowRankGaussianHyper(np.asarray(self.reg_covar, dtype))

    def check_data(self, x) -> None:
        """Raise ``ValueError`` unless ``x`` is 2-D, finite, with more features than
        ``rank``."""
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(
                f"Data must be 2-D (n_samples, n_features), got {x.ndim}-D; reshape one "
                "feature with X.reshape(-1, 1)."
            )
        if not np.all(np.isfinite(x)):
            raise ValueError(
                "Low-rank Gaussian data must be finite; got NaN or infinity. "
                "Drop or impute the missing values."
            )
        check_rank(self.rank, x.shape[1])

    def features(self, x):
        """Not used (the log-densities and statistics are overridden): the rows."""
        return x

    def component_width(self, x) -> int:
        """The statistics hold ``(n, K, D)`` offsets. Sized by ``K`` alone, a chunk's
        temporaries peaked at 7 GB for 20,000 rows at ``D = 256``, ``K = 32`` (and ran
        out of 24 GB at 200,000); an eighth of ``D`` keeps each ``(n, K, D)`` array at
        16M elements (1.1-1.7 GB peak at 20,000 rows) while the row blocks stay large
        enough for the projections' matrix products."""
        return max(1, int(x.shape[-1]) // 8)

    def log_base_measure(self, x):
        return jnp.full(x.shape[:1], -0.5 * x.shape[-1] * ops.LOG_2PI, x.dtype)

    def natural_parameters(self, params):
        raise NotImplementedError(
            "A low-rank Gaussian has no D-sized natural-parameter form; use log_densities."
        )

    def m_step(self, stats, counts, hyper: LowRankGaussianHyper) -> LowRankGaussianParams:
        if isinstance(stats, LowRankGaussianInitStats):
            return self._initial_m_step(stats, hyper)
        return self._solve(stats, hyper, intercept=True)

    def n_parameters(self, n_components: int, n_features: int) -> int:
        """Means, loadings up to a rotation of the latent space, and noise."""
        q = self.rank
        noise = 1 if self.isotropic else n_features
        return n_components * (n_features + n_features * q - q * (q - 1) // 2 + noise)

    def sample(self, key, params: LowRankGaussianParams, labels):
        latent_key, noise_key = jax.random.split(key)
        means, loadings, noise = params
        dtype = means.dtype
        z = jax.random.normal(latent_key, (labels.shape[0], self.rank), dtype)
        eps = jax.random.normal(noise_key, (labels.shape[0], means.shape[1]), dtype)
        signal = jnp.einsum("nq,ndq->nd", z, loadings[labels])
        return means[labels] + signal + eps * jnp.sqrt(noise[labels])

    # -- optional hooks -----------------------------------------------------------------------
    def log_densities(self, params: LowRankGaussianParams, x):
        """``(n, K)`` log-densities through Woodbury and the determinant lemma."""
        return self._posterior(params, x)[0]

    def statistics(self, params: LowRankGaussianParams | None, x, resp):
        """:class:`LowRankGaussianStats` under ``params``, or
        :class:`LowRankGaussianInitStats` when ``params`` is None."""
        x = x.astype(resp.dtype)
        if params is None:
            return self._initial_statistics(x, resp)
        _, latent, inverse = self._posterior(params, x)
        # Rows of weight 0 (padding, which may hold anything) contribute nothing.
        present = resp > 0
        x = jnp.where(jnp.any(present, axis=1, keepdims=True), x, 0)
        latent = jnp.where(present[..., None], latent, 0)
        weighted = resp[..., None] * latent  # (n, K, q)
        latent_sum = weighted.sum(0)
        n_rows, n_components, q = latent.shape
        means = params.means
        # Σ r d E[z]ᵀ = Σ r x E[z]ᵀ - μ Σ r E[z]ᵀ: one product with the rows, which all
        # components (and restarts) share; Σ r E[z] is small against Σ r once μ is
        # near the component's mean, so the difference does not cancel.
        cross = (x.T @ weighted.reshape(n_rows, -1)).reshape(-1, n_components, q)
        cross = jnp.swapaxes(cross, 0, 1) - means[:, :, None] * latent_sum[:, None, :]
        offsets = x[:, None, :] - means[None]
        weight = resp.sum(0)
        posterior = jnp.swapaxes(inverse, -1, -2) @ inverse  # M⁻¹ = L⁻ᵀ L⁻¹
        return LowRankGaussianStats(
            centre=means,
            weight=weight,
            offset=jnp.einsum("nk,nkd->kd", resp, offsets),
            offset_squares=jnp.einsum("nk,nkd->kd", resp, offsets * offsets),
            offset_latent=cross,
            latent=latent_sum,
            latent_second=jnp.einsum("nkq,nkp->kqp", weighted, latent)
            + weight[:, None, None] * posterior,
        )

    def combine_stats(self, a, b):
        if isinstance(a, LowRankGaussianInitStats):
            return self._merge_initial(a, b)
        return ops.tree_add(a, b)._replace(centre=a.centre)

    def scale_stats(self, stats, factor):
        if isinstance(stats, LowRankGaussianInitStats):
            moments = self._diag.scale_stats(stats.moments, factor)
            return LowRankGaussianInitStats(moments, stats.sketch * factor)
        return jax.tree.map(lambda leaf: leaf * factor, stats)._replace(centre=stats.centre)

    def keep_fixed(self, old, new, update: str, stats, counts, hyper):
        """Conditional M-steps (ECM) about the E-step's parameters ``old``: without
        ``"m"`` the means stay and ``W``, ``Ψ`` regress the offsets on ``z`` alone;
        without ``"c"`` ``W``, ``Ψ`` stay and the means move by the mean residual."""
        del counts
        update_means, update_covariances = "m" in update, "c" in update
        if update_means and update_covariances:
            return new
        if not (update_means or update_covariances):
            return old
        if update_covariances:
            return self._solve(stats, hyper, intercept=False)
        residual = stats.offset - jnp.einsum("kdq,kq->kd", old.loadings, stats.latent)
        weight = jnp.maximum(stats.weight, ops.tiny(stats.weight.dtype))
        return old._replace(means=stats.centre + residual / weight[:, None])

    def seeding_points(self, x):
        return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)

    def params_from_rows(self, rows, hyper: LowRankGaussianHyper) -> LowRankGaussianParams:
        """Components centred on ``rows`` with noise ``reg_covar`` and loadings along
        ``Ω`` of the same scale (loadings of 0 would be a fixed point of EM)."""
        n_components, n_features = rows.shape
        scale = jnp.sqrt(hyper.reg_covar / self.rank).astype(rows.dtype)
        sketch = self._sketch_matrix(n_features, rows.dtype) / jnp.sqrt(n_features)
        loadings = jnp.broadcast_to(scale * sketch, (n_components, n_features, self.rank))
        noise = jnp.full((n_components, n_features), hyper.reg_covar, rows.dtype)
        return LowRankGaussianParams(rows, loadings, noise)

    def unconstrain(self, params: LowRankGaussianParams) -> LowRankGaussianParams:
        """Means and loadings as they are; log noise variances."""
        return params._replace(noise_variances=jnp.log(params.noise_variances))

    def constrain(self, values: LowRankGaussianParams) -> LowRankGaussianParams:
        """Inverse of :meth:`unconstrain`."""
        noise = jnp.exp(values.noise_variances)
        if self.isotropic:
            noise = jnp.broadcast_to(jnp.mean(noise, axis=-1, keepdims=True), noise.shape)
        return values._replace(noise_variances=noise)

    def to_layout(self, params: LowRankGaussianParams) -> dict[str, Any]:
        """``means``, ``loadings``, ``noise_variances`` and, in scikit-learn's
        ``"full"`` layout, ``covariances`` ``W Wᵀ + Ψ``, ``precisions`` and
        ``precisions_cholesky`` ``(K, D, D)`` (numpy arrays; formed here once, never
        during a fit)."""
        params = jax.device_get(params)
        full = gaussian("full")
        covariances = self.covariances(params)
        dense = full.params_from_covariances(jnp.asarray(params.means), covariances)
        return jax.device_get(
            {
                "means": params.means,
                "loadings": params.loadings,
                "noise_variances": params.noise_variances,
                "covariances": covariances,
                "precisions": full.precisions(dense),
                "precisions_cholesky": dense.precisions_cholesky,
            }
        )

    def from_layout(self, dtype, *, means, loadings, noise_variances) -> LowRankGaussianParams:
        """Parameters from ``means`` ``(K, D)``, ``loadings`` ``(K, D, q)`` and
        ``noise_variances`` ``(K, D)``."""
        return LowRankGaussianParams(
            jnp.asarray(means, dtype),
            jnp.asarray(loadings, dtype),
            jnp.asarray(noise_variances, dtype),
        )

    # -- conveniences (not part of the contract) -------------------------------------------
    @staticmethod
    def layout_shape(n_components: int, n_features: int) -> tuple[int, ...]:
        """Shape of ``covariances``, ``precisions`` and ``precisions_cholesky`` in
        :meth:`to_layout`: scikit-learn's 'full' layout ``(K, D, D)``."""
        return (n_components, n_features, n_features)

    @staticmethod
    def covariances(params: LowRankGaussianParams):
        """``(K, D, D)`` covariances ``W Wᵀ + Ψ`` (numpy; for display and layouts)."""
        loadings = np.asarray(params.loadings)
        noise = np.asarray(params.noise_variances)
        dense = loadings @ np.swapaxes(loadings, -1, -2)
        index = np.arange(noise.shape[-1])
        dense[:, index, index] += noise
        return dense

    # -- internals ----------------------------------------------------------------------------
    @property
    def _diag(self):
        return gaussian("diag", exact=True)

    def _sketch_matrix(self, n_features: int, dtype):
        """The fixed ``(D, q)`` Gaussian test matrix ``Ω`` of the initial sketch."""
        return jax.random.normal(jax.random.key(0), (n_features, self.rank), dtype)

    def _posterior(self, params: LowRankGaussianParams, x):
        """``(log p(x | k), E[z | x, k], L⁻¹)``: ``(n, K)``, ``(n, K, q)``, ``(K, q, q)``."""
        means, loadings, noise = params
        x = x.astype(means.dtype)
        n_rows = x.shape[0]
        n_components, n_features, q = loadings.shape
        precision = 1.0 / noise  # (K, D)
        scaled = loadings * precision[..., None]  # Ψ⁻¹ W, (K, D, q)
        inner = jnp.eye(q, dtype=means.dtype) + jnp.swapaxes(loadings, -1, -2) @ scaled
        factor = jnp.linalg.cholesky(inner)  # (K, q, q)
        # L⁻¹ once (q x q; M ⪰ I keeps it well conditioned), then products: a
        # triangular solve with many right-hand sides is slow on XLA:CPU.
        identity = jnp.broadcast_to(jnp.eye(q, dtype=means.dtype), factor.shape)
        inverse = solve_triangular(factor, identity, lower=True)
        project = scaled @ jnp.swapaxes(inverse, -1, -2)  # Ψ⁻¹ W L⁻ᵀ, (K, D, q)
        # Rows (L⁻¹ Wᵀ Ψ⁻¹ d)ᵀ = x H - μ H: one (n, D) x (D, K q) product with the rows.
        flat = jnp.swapaxes(project, 0, 1).reshape(n_features, n_components * q)
        whitened = (x @ flat).reshape(n_rows, n_components, q) - jnp.einsum(
            "kd,kdq->kq", means, project
        )
        latent = jnp.einsum("nkq,kqp->nkp", whitened, inverse)  # L⁻ᵀ L⁻¹ Wᵀ Ψ⁻¹ d
        offsets = x[:, None, :] - means[None]
        # A reduction, not a product: it fuses with the offsets, never stored (n, K, D).
        # It cancels (float32 rows off by up to ~130 ulps on factor-analysis data);
        # LatentLinear's residual form fixes that but its per-component (n, K, q) x
        # (K, q, D) product made this float32 E-step 2.3x slower on XLA:CPU.
        quadratic = jnp.sum(offsets * offsets * precision, axis=-1) - jnp.sum(
            whitened * whitened, axis=-1
        )
        log_det = jnp.sum(jnp.log(noise), axis=-1) + 2 * ops.log_det_from_cholesky(factor)
        constant = n_features * ops.LOG_2PI
        return -0.5 * (constant + log_det + quadratic), latent, inverse

    def _solve(self, stats: LowRankGaussianStats, hyper, *, intercept: bool):
        """The M-step: regress the offsets on ``[z, 1]`` (``intercept``) or on ``z``."""
        weight = stats.weight
        used = weight > 0
        q = self.rank
        if intercept:
            top = jnp.concatenate([stats.latent_second, stats.latent[:, :, None]], axis=2)
            bottom = jnp.concatenate([stats.latent[:, None, :], weight[:, None, None]], axis=2)
            second = jnp.concatenate([top, bottom], axis=1)  # (K, q+1, q+1)
            cross = jnp.concatenate([stats.offset_latent, stats.offset[:, :, None]], axis=2)
        else:
            second, cross = stats.latent_second, stats.offset_latent
        # A component without weight has all-zero statistics: solve against I instead.
        identity = jnp.eye(second.shape[-1], dtype=second.dtype)
        second = jnp.where(used[:, None, None], second, identity)
        factor = jnp.linalg.cholesky(second)
        # [W, b] = cross second⁻¹ (second is symmetric positive definite).
        solved = jax.scipy.linalg.cho_solve((factor, True), jnp.swapaxes(cross, -1, -2))
        coefficients = jnp.swapaxes(solved, -1, -2)  # (K, D, q+1) or (K, D, q)
        # diag Σ r (d - W̃ z̃)(d - W̃ z̃)ᵀ at the optimum: Σ r d∘d - diag(W̃ crossᵀ).
        residual = stats.offset_squares - jnp.sum(coefficients * cross, axis=-1)
        divisor = jnp.where(used, weight, 1)[:, None]
        noise = jnp.where(used[:, None], jnp.maximum(residual, 0) / divisor, 0)
        noise = self._tie(noise) + hyper.reg_covar
        means = stats.centre + (coefficients[..., q] if intercept else 0)
        return LowRankGaussianParams(means, coefficients[..., :q], noise)

    def _tie(self, noise):
        """Probabilistic PCA shares one noise variance per component: the average."""
        if self.isotropic:
            return jnp.broadcast_to(jnp.mean(noise, axis=-1, keepdims=True), noise.shape)
        return noise

    def _initial_statistics(self, x, resp) -> LowRankGaussianInitStats:
        moments = self._diag.statistics(None, x, resp)
        offsets = x[:, None, :] - moments.mean[None]  # about the chunk's own means
        sketched = offsets @ self._sketch_matrix(x.shape[-1], x.dtype)  # (n, K, q)
        sketch = jnp.einsum("nk,nkd,nkq->kdq", resp, offsets, sketched)
        return LowRankGaussianInitStats(moments, sketch)

    def _initial_m_step(self, stats: LowRankGaussianInitStats, hyper) -> LowRankGaussianParams:
        moments = stats.moments
        weight = jnp.where(moments.weight > 0, moments.weight, 1)[:, None]
        variance = moments.scatter / weight  # (K, D)
        sketch = stats.sketch / weight[..., None]  # C Ω, (K, D, q)
        # Loadings along the sketch carrying half of the total variance.
        size = jnp.sum(sketch * sketch, axis=(1, 2))
        total = jnp.sum(variance, axis=-1)
        scale = jnp.sqrt(0.5 * total / jnp.where(size > 0, size, 1))
        loadings = sketch * scale[:, None, None]
        noise = self._tie(0.5 * variance) + hyper.reg_covar
        return LowRankGaussianParams(moments.mean, loadings, noise)

    def _merge_initial(self, a: LowRankGaussianInitStats, b: LowRankGaussianInitStats):
        """Chan, Golub and LeVeque's merge, the sketch included: ``S_ab Ω = S_a Ω +
        S_b Ω + (n_a n_b / n) δ (δᵀ Ω)`` with ``δ`` the difference of the means."""
        moments = self._diag.combine_stats(a.moments, b.moments)
        n_a, n_b = a.moments.weight, b.moments.weight
        total = n_a + n_b
        factor = jnp.where(total > 0, n_a * n_b / jnp.where(total > 0, total, 1), 0)
        delta = a.moments.mean - b.moments.mean  # (K, D)
        sketched = delta @ self._sketch_matrix(delta.shape[-1], delta.dtype)
        update = factor[:, None, None] * delta[:, :, None] * sketched[:, None, :]
        return LowRankGaussianInitStats(moments, a.sketch + b.sketch + update)


def check_rank(rank, n_features: int | None = None, *, name: str = "The covariance rank") -> None:
    """Raise ``TypeError`` / ``ValueError`` unless ``rank`` is an int with
    ``1 <= rank < n_features``; ``name`` is what the messages call it (an estimator
    names its parameter)."""
    if not isinstance(rank, (int, np.integer)) or isinstance(rank, bool):
        raise TypeError(f"{name} must be an int >= 1, got {rank!r}.")
    if rank < 1:
        raise ValueError(f"{name} must be an int >= 1, got {rank!r}.")
    if n_features is not None and rank >= n_features:
        raise ValueError(
            f"The covariance rank q={rank} must be < n_features={n_features}: at q >= D "
            "the covariance is unrestricted; use covariance_type='full' instead."
        )


def low_rank_gaussian(
    rank: int, *, isotropic: bool = False, reg_covar: float = 1e-6
) -> LowRankGaussian:
    """Low-rank-plus-diagonal Gaussian family; see :class:`LowRankGaussian`."""
    return LowRankGaussian(
        rank=int(rank) if isinstance(rank, np.integer) else rank,
        isotropic=isotropic,
        reg_covar=reg_covar,
    )

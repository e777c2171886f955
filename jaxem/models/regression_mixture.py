"""Mixtures of linear regressions (R's flexmix) and mixtures of experts, by EM.

    y | x, z = k  ~  N(x βₖ + bₖ, σₖ²),      p(z = k | x) = softmax(g(x))ₖ

with ``g(x)ₖ = log πₖ`` (a mixture of regressions: the weights do not depend on
``x``) or ``g(x)ₖ = aₖ + x γₖ`` (a mixture of experts: a softmax gate).

The rows are :class:`RegressionRows` ``(x, y)``, a pytree the engine chunks like
any other. With ``x̃ = [x, 1]``, ``β̃ₖ = [βₖ, bₖ]`` and the residuals
``eₖ = y - x̃ β̃ₖ`` of the E-step's own parameters, the statistics are sums over
rows weighted by ``w rₖ``: ``Σ r``, ``Σ r x̃ x̃ᵀ``, ``Σ r x̃ e``, ``Σ r e²``. They
hold the same information as ``Σ r x̃ y`` and ``Σ r y²`` (``Σ r x̃ y = Σ r x̃ e +
(Σ r x̃ x̃ᵀ) β̃``), but the residuals are small where the fit is good, so the
residual sum of squares does not cancel in float32. The M-step is a weighted least
squares per component with a ridge ``reg`` on its normal equations, and the
weighted mean squared residual plus ``reg`` as the noise variance.

The gate of a mixture of experts has no closed-form M-step, and the M-step never
sees the rows, so it takes one Newton-like step on Böhning's (1992) quadratic
lower bound of the gate's part of EM's objective, ``Σₙ wₙ Σₖ rₙₖ log softmax(Θ
x̃ₙ)ₖ``, whose Hessian is bounded by ``½ (I - 11ᵀ/K) ⊗ S`` with ``S = Σ w x̃ x̃ᵀ``.
Its gradient ``G = Σ w (r - p) x̃ᵀ`` (``p`` the gate's probabilities) and ``S`` are
sums over rows, so the step ``Θ ← Θ + 2 G S⁻¹`` is a generalised EM step: it never
lowers the bound, which touches the objective at the E-step's gate, so the
log-likelihood never decreases (Jordan and Jacobs 1994 use IRLS inner loops,
which need the rows).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxem import _iterate, ops
from jaxem.contract import Chunks, Model
from jaxem.seeding import kmeans_plusplus_chunked, lloyd, nearest_centers

__all__ = [
    "RegressionRows",
    "RegressionMixtureModel",
    "RegressionMixtureParams",
    "RegressionMixtureStats",
    "RegressionMixtureHyper",
    "GATES",
    "REGRESSION_INITS",
    "regression_mixture",
    "mixture_of_experts",
]

#: ``"constant"``: mixing weights that do not depend on ``x`` (a mixture of
#: regressions); ``"softmax"``: weights ``softmax(a + x γ)`` (a mixture of experts).
GATES = ("constant", "softmax")
#: Initial responsibilities: every row to a uniformly drawn line ("random", flexmix's
#: default), or one-hot on the nearest k-means centre of the points ``(x, y)``
#: ("kmeans": k-means++ seeds then Lloyd; "k-means++": the seeds alone).
REGRESSION_INITS = ("random", "kmeans", "k-means++")


class RegressionRows(NamedTuple):
    """Rows of a regression: inputs ``x`` ``(n, n_features)`` and responses ``y``
    ``(n,)``, the data a :class:`RegressionMixtureModel` takes."""

    x: Any
    y: Any


class RegressionMixtureParams(NamedTuple):
    """One restart's parameters.

    Attributes
    ----------
    log_weights : (K,) gate intercepts ``a``; for a constant gate the log mixing
        weights ``log π``.
    gate_coef : (K, D) gate slopes ``γ`` (zero for a constant gate).
    coef : (K, D) regression coefficients ``β``.
    intercept : (K,) regression intercepts ``b``.
    variances : (K,) noise variances ``σ²``.
    """

    log_weights: jax.Array
    gate_coef: jax.Array
    coef: jax.Array
    intercept: jax.Array
    variances: jax.Array


class RegressionMixtureStats(NamedTuple):
    """Sums over rows (``x̃ = [x, 1]``; ``r`` the responsibilities times the row
    weights; ``e`` the residuals of the E-step's parameters; ``p`` its gate)."""

    counts: jax.Array  # Σ r, (K,)
    design: jax.Array  # Σ r x̃ x̃ᵀ, (K, D+1, D+1)
    cross: jax.Array  # Σ r x̃ e, (K, D+1)
    squares: jax.Array  # Σ r e², (K,)
    gate_gradient: jax.Array  # Σ (r - w p) x̃ᵀ, (K, D+1); zero for a constant gate
    gate_design: jax.Array  # Σ w x̃ x̃ᵀ, (D+1, D+1); zero for a constant gate


class RegressionMixtureHyper(NamedTuple):
    """The ridge / variance floor ``reg``, the k-means init's relative tolerance and
    the gate slopes' penalty ``gate_reg``."""

    reg: jax.Array
    kmeans_tol: jax.Array
    gate_reg: jax.Array


@dataclasses.dataclass(frozen=True)
class RegressionMixtureModel(Model):
    """Mixture of ``n_components`` linear regressions of a scalar response, with
    constant weights or a softmax gate (a mixture of experts).

    Parameters
    ----------
    n_components : int
        Number of regression lines (experts).
    gate : {"constant", "softmax"}
        Mixing weights that do not depend on ``x`` (flexmix's model) or a softmax of
        a linear function of ``x``, fitted by one Böhning step per iteration (see
        the module's notes: a generalised EM step, monotone).
    init_method : {"random", "kmeans", "k-means++"}
        Initial responsibilities (see :data:`REGRESSION_INITS`); then one M-step.
        Given parameters go through :func:`jaxem.fit`'s ``init_params``.
    kmeans_max_iter : int
        Lloyd iterations cap of the "kmeans" init.
    reg : float
        Added to the diagonal of every component's weighted normal equations (a
        ridge on the coefficients and the intercept, with ten machine epsilons of
        their mean diagonal, so collinear inputs still factorise in float32) and to
        every noise variance,
        as scikit-learn's ``reg_covar``: a component with few, collinear or no rows
        keeps finite parameters. Also regularises the gate's ``S``. Default 1e-6;
        excluded from equality (no recompile).
    gate_reg : float
        Penalty ``gate_reg / 2 · Σ γ²`` on the gate's slopes (a Gaussian prior: MAP
        EM; the monitored objective is the penalised log-likelihood, and the
        Böhning step maximises the penalised bound, so it still never decreases).
        Where the regions of the experts are perfectly separated the gate's
        likelihood has no finite maximum; a penalty gives it one. In units of rows
        (the engine rescales the weights to sum to the number of rows). Default 0;
        excluded from equality.

    Notes
    -----
    The data are :class:`RegressionRows` ``(x, y)`` with ``y`` of shape ``(n,)``.
    k-means on ``(x, y)`` groups rows by place, not by line: lines that cross are
    cut across, and EM may stay in that local optimum (measured: two crossing lines
    of slopes ±3 end at slopes ±0.7 from "kmeans", at ±3 from "random"). Prefer
    "random" with several restarts there.

    Examples
    --------
    >>> import jax, numpy as np
    >>> import jaxem
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(-1, 1, (400, 1))
    >>> line = rng.integers(2, size=400)
    >>> y = np.where(line == 0, 2 * x[:, 0], -2 * x[:, 0] + 1) + 0.05 * rng.normal(size=400)
    >>> model = jaxem.regression_mixture(2)
    >>> result = jaxem.fit(model, jaxem.RegressionRows(x, y), key=jax.random.key(0),
    ...                    n_restarts=4, tol=1e-8, max_iter=500)
    >>> print(np.sort(np.asarray(result.params.coef[:, 0])).round(1))
    [-2.  2.]
    """

    n_components: int
    gate: str = "constant"
    init_method: str = "random"
    kmeans_max_iter: int = 300
    reg: float = dataclasses.field(default=1e-6, compare=False)
    gate_reg: float = dataclasses.field(default=0.0, compare=False)

    outputs: ClassVar[tuple[str, ...]] = ("log_prob", "predict", "predict_proba", "gate_proba")

    def __post_init__(self):
        if (
            not isinstance(self.n_components, int)
            or isinstance(self.n_components, bool)
            or self.n_components < 1
        ):
            raise ValueError(f"n_components must be a positive int, got {self.n_components!r}.")
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {self.gate!r}.")
        if self.init_method not in REGRESSION_INITS:
            raise ValueError(f"init must be one of {REGRESSION_INITS}, got {self.init_method!r}.")
        if not self.reg >= 0:
            raise ValueError(f"reg must be a non-negative number, got {self.reg!r}.")
        if not self.gate_reg >= 0:
            raise ValueError(f"gate_reg must be a non-negative number, got {self.gate_reg!r}.")

    # -- contract ---------------------------------------------------------------------------
    def hyper(self, dtype) -> RegressionMixtureHyper:
        return RegressionMixtureHyper(
            reg=np.asarray(self.reg, dtype),
            kmeans_tol=np.asarray(1e-4, dtype),
            gate_reg=np.asarray(self.gate_reg, dtype),
        )

    def init(self, key, chunks: Chunks, hyper) -> RegressionMixtureParams:
        """One restart: responsibilities from ``init_method``, then the M-step from a
        reference of zero coefficients (and a uniform gate)."""
        rows = _check_rows(chunks.x, leading=2)
        dtype = chunks.weights.dtype
        n_components = self.n_components
        reference = self._reference(rows.x.shape[-1], dtype)

        if self.init_method == "random":

            def responsibilities(chunk, index):
                # One uniform draw per row (flexmix's random partition): soft random
                # responsibilities start every line near the same pooled fit, and
                # EM then separates them so slowly that ``tol`` may stop it there.
                keys = _iterate.row_keys(key, index, chunk.y.shape[0])
                labels = jax.vmap(lambda k: jax.random.randint(k, (), 0, n_components))(keys)
                return jax.nn.one_hot(labels, n_components, dtype=dtype)

        else:
            centers, _ = kmeans_plusplus_chunked(key, chunks, n_components, points=_points)
            if self.init_method == "kmeans":
                centers = lloyd(
                    centers,
                    Chunks(jax.vmap(_points)(chunks.x), chunks.weights),
                    max_iter=self.kmeans_max_iter,
                    tol=hyper.kmeans_tol,
                )

            def responsibilities(chunk, index):
                labels, _ = nearest_centers(_points(chunk), centers)
                return jax.nn.one_hot(labels, n_components, dtype=dtype)

        def chunk_statistics(data, weights):
            chunk, index = data
            resp = responsibilities(chunk, index) * weights[:, None]
            return self._statistics(reference, chunk.x, chunk.y, resp, weights)

        numbered = Chunks((chunks.x, _iterate.chunk_indices(chunks.n_chunks)), chunks.weights)
        stats = _iterate.chunked_sum(chunk_statistics, numbered)
        return self.m_step(stats, reference, hyper)

    def e_step(self, params: RegressionMixtureParams, x, weights, hyper):
        rows = _check_rows(x, leading=1)
        used = weights > 0
        # where(): rows of weight 0 may hold inf or NaN, and 0 * inf is NaN.
        inputs = jnp.where(used[:, None], rows.x, 0)
        response = jnp.where(used, rows.y, 0)
        log_joint = self._log_joint(params, inputs, response)
        resp, log_likelihood = ops.softmax_and_logsumexp(log_joint, axis=1, scale=weights)
        stats = self._statistics(params, inputs, response, resp, weights)
        return stats, jnp.sum(jnp.where(used, weights * log_likelihood, 0.0))

    def m_step(self, stats: RegressionMixtureStats, params: RegressionMixtureParams, hyper):
        n_coefficients = stats.cross.shape[-1]
        dtype = stats.counts.dtype
        identity = jnp.eye(n_coefficients, dtype=dtype)
        old = _stacked(params)
        # Weighted least squares: (Σ r x̃x̃ᵀ + reg I) β̃ = Σ r x̃ y, with Σ r x̃ y rebuilt
        # from the residual sums; solved for the step δ = β̃_new - β̃_old.
        # The ridge, plus ten epsilons of the mean diagonal so that collinear inputs
        # still factorise in float32 (1e-6 is below float32's resolution of Σ r x̃x̃ᵀ).
        mean_diagonal = jnp.trace(stats.design, axis1=1, axis2=2) / n_coefficients
        ridge = hyper.reg + ops.tiny(dtype) * mean_diagonal
        system = stats.design + ridge[:, None, None] * identity
        rhs = stats.cross - ridge[:, None] * old  # Σ r x̃ y - (Σ r x̃x̃ᵀ + ridge I) β̃_old
        factor = jnp.linalg.cholesky(system)
        step = jax.vmap(lambda f, b: jax.scipy.linalg.cho_solve((f, True), b))(factor, rhs)
        # Σ r (e - x̃ δ)² without forming the new residuals.
        squares = (
            stats.squares
            - 2.0 * jnp.sum(step * stats.cross, axis=1)
            + jnp.einsum("ki,kij,kj->k", step, stats.design, step)
        )
        counts = stats.counts + ops.tiny(dtype)
        variances = jnp.maximum(squares, 0.0) / counts + hyper.reg
        new = old + step
        if self.gate == "constant":
            log_weights = jnp.log(counts / jnp.sum(counts))
            gate_coef = jnp.zeros_like(params.gate_coef)
        else:
            gate = jnp.concatenate([params.gate_coef, params.log_weights[:, None]], axis=1)
            # S + εI bounds the Hessian from above too (still a minorant); ε keeps a
            # feature that is constant on the rows from making S singular.
            spread = jnp.trace(stats.gate_design) / n_coefficients
            floor = hyper.reg + ops.tiny(dtype) * spread
            # Maximiser of the bound minus the penalty, over centred steps Δ:
            # Δ (½ (S + εI) + λ E) = G - λ Θ E, E selecting the slopes.
            slopes = identity.at[-1, -1].set(0.0)
            curvature = 0.5 * (stats.gate_design + floor * identity) + hyper.gate_reg * slopes
            rhs = stats.gate_gradient - hyper.gate_reg * gate @ slopes
            bound = jnp.linalg.cholesky(curvature)
            gate = gate + jax.scipy.linalg.cho_solve((bound, True), rhs.T).T
            # Logits are defined up to a common shift: keep them centred.
            gate = gate - jnp.mean(gate, axis=0)
            log_weights, gate_coef = gate[:, -1], gate[:, :-1]
        return RegressionMixtureParams(
            log_weights=log_weights,
            gate_coef=gate_coef,
            coef=new[:, :-1],
            intercept=new[:, -1],
            variances=variances,
        )

    def log_prior(self, params: RegressionMixtureParams, hyper):
        """``-gate_reg / 2 · Σ γ²`` (0 for a constant gate)."""
        if self.gate == "constant":
            return jnp.zeros((), params.coef.dtype)
        return -0.5 * hyper.gate_reg * jnp.sum(params.gate_coef * params.gate_coef)

    def log_prob(self, params: RegressionMixtureParams, x):
        """Per-row log-likelihood ``log p(y | x)``, shape ``(n,)``."""
        rows = _check_rows(x, leading=1)
        return jax.nn.logsumexp(self._log_joint(params, rows.x, rows.y), axis=1)

    def predict(self, params: RegressionMixtureParams, x):
        """Expected response ``E[y | x] = Σₖ p(k | x) (x βₖ + bₖ)``, shape ``(n,)``;
        ``y`` is not read."""
        rows = _check_rows(x, leading=1)
        gate = jnp.exp(self._log_gate(params, rows.x))
        return jnp.sum(gate * self._means(params, rows.x), axis=1)

    def predict_proba(self, params: RegressionMixtureParams, x):
        """``(n, K)`` posterior probability of each component given ``x`` and ``y``."""
        rows = _check_rows(x, leading=1)
        return ops.softmax_and_logsumexp(self._log_joint(params, rows.x, rows.y), axis=1)[0]

    def gate_proba(self, params: RegressionMixtureParams, x):
        """``(n, K)`` mixing probabilities given ``x`` alone (the gate); ``y`` is not
        read."""
        rows = _check_rows(x, leading=1)
        return jnp.exp(self._log_gate(params, rows.x))

    def n_parameters(self, n_features: int) -> int:
        k = self.n_components
        gate = (k - 1) * (n_features + 1) if self.gate == "softmax" else k - 1
        return k * (n_features + 1) + k + gate

    def row_width(self, x) -> int:
        # The statistics hold (rows, K, D+1) products.
        return self.n_components * (_check_rows(x, leading=1).x.shape[-1] + 1)

    # -- derived quantities ------------------------------------------------------------------
    def _reference(self, n_features: int, dtype) -> RegressionMixtureParams:
        """Zero coefficients, unit variances and a uniform gate: what the init's
        statistics are taken about."""
        k = self.n_components
        return RegressionMixtureParams(
            log_weights=jnp.full((k,), -jnp.log(k), dtype),
            gate_coef=jnp.zeros((k, n_features), dtype),
            coef=jnp.zeros((k, n_features), dtype),
            intercept=jnp.zeros((k,), dtype),
            variances=jnp.ones((k,), dtype),
        )

    def _means(self, params: RegressionMixtureParams, x):
        """``(n, K)`` fitted values ``x βₖ + bₖ``."""
        return x @ params.coef.T + params.intercept

    def _log_gate(self, params: RegressionMixtureParams, x):
        """``(n, K)`` log mixing probabilities."""
        if self.gate == "constant":
            log_weights = params.log_weights - jax.nn.logsumexp(params.log_weights)
            return jnp.broadcast_to(log_weights, (x.shape[0], self.n_components))
        logits = x @ params.gate_coef.T + params.log_weights
        return logits - jax.nn.logsumexp(logits, axis=1, keepdims=True)

    def _log_joint(self, params: RegressionMixtureParams, x, y):
        """``(n, K)`` ``log p(k | x) + log N(y; x βₖ + bₖ, σₖ²)``."""
        residual = y[:, None] - self._means(params, x)
        log_density = -0.5 * (
            ops.LOG_2PI + jnp.log(params.variances) + residual * residual / params.variances
        )
        return self._log_gate(params, x) + log_density

    def _statistics(self, params, x, y, resp, weights) -> RegressionMixtureStats:
        """Sums of rows ``(x, y)`` under ``resp`` (responsibilities times weights)."""
        design = jnp.concatenate([x, jnp.ones_like(x[:, :1])], axis=1)
        residual = y[:, None] - self._means(params, x)
        weighted = resp[:, :, None] * design[:, None, :]  # (n, K, D+1)
        n_coefficients = design.shape[1]
        if self.gate == "constant":
            gate_gradient = jnp.zeros((self.n_components, n_coefficients), resp.dtype)
            gate_design = jnp.zeros((n_coefficients, n_coefficients), resp.dtype)
        else:
            gate = jnp.exp(self._log_gate(params, x)) * weights[:, None]
            gate_gradient = (resp - gate).T @ design
            gate_design = (design * weights[:, None]).T @ design
        return RegressionMixtureStats(
            counts=resp.sum(0),
            design=jnp.einsum("nki,nj->kij", weighted, design),
            cross=jnp.einsum("nki,nk->ki", weighted, residual),
            squares=jnp.sum(resp * residual * residual, axis=0),
            gate_gradient=gate_gradient,
            gate_design=gate_design,
        )


def _stacked(params: RegressionMixtureParams):
    """``(K, D+1)`` coefficients with the intercept last (``β̃``)."""
    return jnp.concatenate([params.coef, params.intercept[:, None]], axis=1)


def _points(rows: RegressionRows):
    """What the k-means init clusters: ``(x, y)`` side by side."""
    return jnp.concatenate([rows.x, rows.y[..., None].astype(rows.x.dtype)], axis=-1)


def _check_rows(x, *, leading: int) -> RegressionRows:
    """``x`` as :class:`RegressionRows` with ``leading`` row axes before the features
    (2 for chunked rows); raise a ``ValueError`` that names the fix otherwise."""
    if not isinstance(x, RegressionRows):
        raise TypeError(
            "A regression mixture takes jaxem.RegressionRows(x, y), not "
            f"{type(x).__name__}: pass the inputs and the responses together."
        )
    if x.x.ndim != leading + 1:
        raise ValueError(
            f"RegressionRows.x must be 2-D (n_samples, n_features), got {x.x.ndim - leading + 1} "
            "dimension(s)."
        )
    if x.y.ndim != leading:
        raise ValueError(
            "RegressionRows.y must be 1-D (one response per row), got shape "
            f"{x.y.shape[leading - 1 :]}; fit one model per response column."
        )
    return x


def regression_mixture(
    n_components: int, init: str = "random", *, gate: str = "constant", reg: float = 1e-6
) -> RegressionMixtureModel:
    """Mixture of linear regressions; see :class:`RegressionMixtureModel`."""
    return RegressionMixtureModel(n_components=n_components, gate=gate, init_method=init, reg=reg)


def mixture_of_experts(
    n_components: int, init: str = "random", *, reg: float = 1e-6, gate_reg: float = 0.0
) -> RegressionMixtureModel:
    """Mixture of linear experts with a softmax gate; see :class:`RegressionMixtureModel`."""
    return RegressionMixtureModel(
        n_components=n_components, gate="softmax", init_method=init, reg=reg, gate_reg=gate_reg
    )

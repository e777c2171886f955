"""Multivariate Gaussian components: full, tied, diagonal and spherical covariances.

Parameters follow scikit-learn: means and the Cholesky factor of the precision
(``precisions_cholesky_``), upper triangular for full and tied, ``1/σ`` for diag
and spherical. The log-density is written in natural-parameter form,

    log N(x | μ, Σ) = -½ xᵀPx + xᵀPμ - ½ μᵀPμ + log|U| - D/2 log 2π,   P = U Uᵀ,

so that the densities of all components are one product of the features
``[vech(x xᵀ), x]`` (full, tied), ``[x², x]`` (diag) or ``[|x|², x]``
(spherical) with a parameter matrix. In float32 centre the data first (the
estimators do): the quadratic terms then stay small and cancellation harmless.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from jaxem import _iterate, ops, seeding
from jaxem.contract import Chunks, Family
from jaxem.families.base import check_observed_rows

__all__ = [
    "Gaussian",
    "GaussianParams",
    "GaussianStats",
    "GaussianHyper",
    "GaussianPriorHyper",
    "WishartPrior",
    "CovarianceView",
    "Conditional",
    "gaussian",
    "COVARIANCE_TYPES",
]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
#: Relative tolerance and iteration cap of the Lloyd iterations that seed the
#: emission means in :meth:`Gaussian.initial_params` (scikit-learn's KMeans defaults).
KMEANS_TOL = 1e-4
KMEANS_MAX_ITER = 300


class GaussianParams(NamedTuple):
    """Parameters of ``K`` Gaussian components.

    Attributes
    ----------
    means : (K, D)
    precisions_cholesky : (K, D, D) full, (D, D) tied, (K, D) diag, (K,) spherical
    """

    means: jax.Array
    precisions_cholesky: jax.Array


class GaussianStats(NamedTuple):
    """Per component: total weight, weighted mean and scatter about that mean.

    Chunks merge by Chan, Golub and LeVeque's pairwise update
    (:meth:`Gaussian.combine_stats`), never by subtracting raw moments, so the
    covariances keep their digits for data far from the origin and for components
    much narrower than the data.

    Attributes
    ----------
    weight : (K,) ``Σ r``
    mean : (K, D) ``Σ r x / Σ r`` (0 where the weight is 0)
    scatter : ``Σ r (x - mean)(x - mean)ᵀ`` (K, D, D) for full and tied, its
        diagonal (K, D) for diag, its trace (K,) for spherical.
    """

    weight: jax.Array
    mean: jax.Array
    scatter: jax.Array


class GaussianHyper(NamedTuple):
    """Numeric hyperparameters: ``reg_covar`` is added to every covariance diagonal;
    ``init_covar`` to the diagonal of the data covariance in :meth:`Gaussian.initial_params`."""

    reg_covar: jax.Array
    init_covar: jax.Array


class GaussianPriorHyper(NamedTuple):
    """Hyperparameters of the MAP M-step (hmmlearn's normal / inverse-Wishart priors).

    ``means_prior`` (μ₀) and ``means_weight`` (λ) are the normal prior on the means,
    ``covars_prior`` (Ψ) and ``covars_weight`` (ν) the (inverse-gamma / inverse-
    Wishart) prior on the covariances; ``reg_covar`` is still added to the diagonal.
    Every field broadcasts against the parameter it regularises. ``init_covar`` is
    used by :meth:`Gaussian.initial_params` only, as in :class:`GaussianHyper`.
    """

    reg_covar: jax.Array
    means_prior: jax.Array
    means_weight: jax.Array
    covars_prior: jax.Array
    covars_weight: jax.Array
    init_covar: jax.Array


class WishartPrior(NamedTuple):
    """Conjugate Gaussian-Wishart prior of variational mixtures (scikit-learn's
    ``BayesianGaussianMixture``): the means are Gaussian about ``mean`` with precision
    ``mean_precision`` times the component's, the precisions Wishart with
    ``degrees_of_freedom`` and scale matrix the inverse of ``covariance`` (in this
    covariance type's layout: ``(D, D)`` full and tied, ``(D,)`` diag, a scalar
    spherical)."""

    mean_precision: jax.Array
    mean: jax.Array
    degrees_of_freedom: jax.Array
    covariance: jax.Array


class Conditional(NamedTuple):
    """Rows given their observed coordinates, under every component
    (:meth:`Gaussian.conditional`).

    Attributes
    ----------
    log_density : (n, K)
        Log-density of each row's observed coordinates (marginal over the missing).
    completed : (n, K, D)
        The rows with missing entries replaced by ``E[x_m | x_o, k]``.
    covariance : array or None
        ``Cov[x_m | x_o, k]`` embedded with zeros at observed coordinates: (n, K, D, D)
        full, (n, 1, D, D) tied (the same for every component), the diagonal (n, K, D)
        for diag, its trace (n, K) for spherical; None when not asked for.
    """

    log_density: jax.Array
    completed: jax.Array
    covariance: jax.Array | None


class CovarianceView(NamedTuple):
    """Covariances arranged for display, the same way for every covariance type.

    Attributes
    ----------
    per_component : ndarray or None
        One entry per component: ``(K, D, D)`` matrices (full) or ``(K, D)``
        per-feature variances (diag; spherical, its one variance repeated over the
        features); None when the components share one matrix.
    shared : ndarray or None
        The ``(D, D)`` matrix shared by all components (tied), else None.
    note : str
        What a reader should know about the layout, or ``""``.
    """

    per_component: np.ndarray | None
    shared: np.ndarray | None
    note: str = ""


def _first_not_spd(matrices: np.ndarray) -> int | None:
    """Index of the first of ``matrices`` ``(..., D, D)`` that is not finite, symmetric
    (scikit-learn's tolerance: ``np.allclose``) and positive-definite; None if all are.
    Host-side checks of matrices users give (precisions, covariances)."""
    for index, matrix in enumerate(matrices.reshape((-1,) + matrices.shape[-2:])):
        if not (
            np.all(np.isfinite(matrix))
            and np.allclose(matrix, matrix.T, rtol=1e-5, atol=1e-8)
            and np.all(np.linalg.eigvalsh(matrix) > 0.0)
        ):
            return index
    return None


@dataclasses.dataclass(frozen=True)
class Gaussian(Family):
    """Gaussian component family.

    Parameters
    ----------
    covariance_type : {"full", "tied", "diag", "spherical"}
    reg_covar : float
        Non-negative regularisation added to the diagonal of the covariances.
        Passed to compiled code as an array, so changing it does not recompile.
    map_prior : bool
        False (default): scikit-learn's maximum-likelihood M-step. True: hmmlearn's
        MAP M-step with the priors below (see :class:`GaussianPriorHyper` and
        :meth:`map_m_step`); ``hyper`` then returns a :class:`GaussianPriorHyper`.
    means_prior, means_weight, covars_prior, covars_weight : float or array
        hmmlearn's priors, used only when ``map_prior`` is True (defaults are
        hmmlearn's). Excluded from equality, like ``reg_covar``.
    init_covar : float
        Added to the diagonal of the data covariance that initialises every
        covariance in :meth:`initial_params` (hmmlearn's ``min_covar``). Excluded
        from equality.
    exact : bool
        False (default): the one-GEMM natural-parameter forms, the fastest on a CPU;
        the expanded quadratic forms lose digits for components much narrower than
        their distance from the origin (centre the data). True: log-densities from
        whitened offsets ``(x - μ_k) U_k`` and statistics in two passes per chunk
        (scatter about each component's chunk mean), exact in either precision but
        batched small products, several times slower on a CPU (measured in
        ``benchmarks/RESULTS.md``). The estimators use True.
    missing : bool
        False (default): every entry is observed (NaN is not expected). True: NaN
        entries are missing at random and EM is exact for the observed data. Each
        row's log-density is that of its observed coordinates' marginal, and its
        statistics hold the conditional expectations ``E[x_m | x_o, k]`` of the
        missing coordinates and, in the scatter, their conditional covariances
        (see :meth:`conditional`). Always in the exact (whitened) forms. Costs one
        ``D x D`` Cholesky per row and component (full; per row for tied;
        elementwise for diag and spherical). At initialisation, with no parameters
        to condition on, a missing entry counts as 0 (the estimators centre the
        data on its observed means). A static field: programs with and without it
        differ.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import jaxem
    >>> family = jaxem.gaussian("diag")
    >>> params = jaxem.GaussianParams(means=jnp.zeros((1, 2)), precisions_cholesky=jnp.ones((1, 2)))
    >>> log_density = jaxem.families.log_densities(family, params, jnp.zeros((1, 2)))
    >>> print(round(float(log_density[0, 0]), 4))
    -1.8379
    """

    covariance_type: str = "full"
    reg_covar: float = dataclasses.field(default=1e-6, compare=False)
    map_prior: bool = False
    means_prior: float = dataclasses.field(default=0.0, compare=False)
    means_weight: float = dataclasses.field(default=0.0, compare=False)
    covars_prior: float = dataclasses.field(default=1e-2, compare=False)
    covars_weight: float = dataclasses.field(default=1.0, compare=False)
    init_covar: float = dataclasses.field(default=1e-3, compare=False)
    exact: bool = False
    missing: bool = False

    update_letters: ClassVar[str] = "mc"

    def __post_init__(self):
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {COVARIANCE_TYPES}, got {self.covariance_type!r}."
            )
        if not (isinstance(self.reg_covar, (int, float)) and self.reg_covar >= 0):
            raise ValueError(f"reg_covar must be a non-negative float, got {self.reg_covar!r}.")
        if not (isinstance(self.init_covar, (int, float)) and self.init_covar >= 0):
            raise ValueError(f"init_covar must be a non-negative float, got {self.init_covar!r}.")

    # -- contract ---------------------------------------------------------------------------
    def hyper(self, dtype) -> GaussianHyper | GaussianPriorHyper:
        if self.map_prior:
            return GaussianPriorHyper(
                *(
                    np.asarray(value, dtype)
                    for value in (
                        self.reg_covar,
                        self.means_prior,
                        self.means_weight,
                        self.covars_prior,
                        self.covars_weight,
                        self.init_covar,
                    )
                )
            )
        return GaussianHyper(
            reg_covar=np.asarray(self.reg_covar, dtype),
            init_covar=np.asarray(self.init_covar, dtype),
        )

    def check_data(self, x) -> None:
        """Gaussian components accept any finite real data; with ``missing``, NaN too,
        but every row needs an observed entry."""
        if not self.missing:
            return
        x = np.asarray(x)
        if np.isinf(x).any():
            raise ValueError(
                "Input contains infinity: only NaN marks a missing entry. Replace the "
                "infinite values (by NaN if they are missing)."
            )
        check_observed_rows(np.isnan(x))

    def features(self, x):
        if self.covariance_type in ("full", "tied"):
            rows, cols = ops.triu_indices(x.shape[-1])
            quadratic = x[:, rows] * x[:, cols]
        elif self.covariance_type == "diag":
            quadratic = x * x
        else:
            quadratic = jnp.sum(x * x, axis=-1, keepdims=True)
        return jnp.concatenate([quadratic, x], axis=-1)

    def log_base_measure(self, x):
        return jnp.full(x.shape[:1], -0.5 * x.shape[-1] * ops.LOG_2PI, x.dtype)

    def component_width(self, x) -> int:
        """Per-row, per-component size of the largest E-step temporary, in units of
        the ``(n, K)`` log-densities, so that a mixture's chunks stay near the
        engine's element budget at any ``D``.

        The exact forms hold ``(n, K, D)`` offsets (an eighth of ``D``, as the
        low-rank family: 16M-element offsets per chunk, large enough row blocks for
        the products); ``missing`` full and tied, a ``D x D`` conditional precision
        per row and component (``D² / 8``); the natural-parameter form, the
        ``(n, P)`` features that every component shares (``P / 256``). Sized by
        ``K`` alone, a 'diag' mixture at ``D = 256``, ``K = 32`` held 6 GB of
        offsets per 20,000-row chunk. Below ``D = 8`` each is 1 (the default), but
        the conditional precisions' from ``D = 3``.
        """
        n_features = int(x.shape[-1])
        if self.missing and self.covariance_type in ("full", "tied"):
            return max(1, n_features * n_features // 8)
        if self.exact or self.missing:
            return max(1, n_features // 8)
        triangle = n_features * (n_features + 1) // 2
        quadratic = {"full": triangle, "tied": triangle, "diag": n_features}
        return max(1, (quadratic.get(self.covariance_type, 1) + n_features) // 256)

    def natural_parameters(self, params: GaussianParams):
        means, chol = params
        n_components, n_features = means.shape
        if self.covariance_type in ("full", "tied"):
            chol = jnp.broadcast_to(chol, (n_components, n_features, n_features))
            precision = chol @ jnp.swapaxes(chol, -1, -2)
            # -½ xᵀPx over the upper triangle: diagonal terms -½P_ii, off-diagonal -P_ij.
            rows, cols = ops.triu_indices(n_features)
            scale = jnp.where(rows == cols, -0.5, -1.0).astype(means.dtype)
            quadratic = precision[:, rows, cols] * scale
            linear = jnp.einsum("kij,kj->ki", precision, means)
            log_det = ops.log_det_from_cholesky(chol)
        else:
            precision = chol * chol  # (K, D) diag or (K,) spherical
            if self.covariance_type == "diag":
                quadratic = -0.5 * precision
                linear = precision * means
                log_det = jnp.sum(jnp.log(chol), axis=-1)
            else:
                quadratic = -0.5 * precision[:, None]
                linear = precision[:, None] * means
                log_det = n_features * jnp.log(chol)
        bias = -0.5 * jnp.sum(linear * means, axis=-1) + log_det
        return jnp.concatenate([quadratic, linear], axis=-1), bias

    def log_densities(self, params: GaussianParams, x):
        """``(n, K)`` log-densities. With ``exact``, from the whitened offsets
        ``y = (x - μ_k) U_k``: ``-½|y|² + log|U_k| - D/2 log 2π``, no quadratic form
        expanded; else the one-product natural-parameter form. With ``missing``, the
        log-densities of each row's observed coordinates (see :meth:`conditional`)."""
        if self.missing:
            return self.conditional(params, x, covariances=False).log_density
        if not self.exact:
            return super().log_densities(params, x)
        squared, log_det = self.squared_distances(params, x)
        n_features = params.means.shape[-1]
        return -0.5 * squared + log_det - 0.5 * n_features * ops.LOG_2PI

    def squared_distances(self, params: GaussianParams, x):
        """``(δ², log|U|)``: squared Mahalanobis distances ``|(x - μ_k) U_k|²`` of every
        row to every component ``(n, K)``, from whitened offsets (nothing expanded,
        whatever ``exact``), and the log-determinants of the factors ``(K,)``.

        Elliptical families built on this one (Student-t) use them too.
        """
        means, chol = params
        x = x.astype(means.dtype)
        n_features = means.shape[-1]
        if self.covariance_type in ("full", "tied"):
            log_det = ops.log_det_from_cholesky(
                jnp.broadcast_to(chol, means.shape[:1] + chol.shape[-2:])
            )
        elif self.covariance_type == "diag":
            log_det = jnp.sum(jnp.log(chol), axis=-1)
        else:
            log_det = n_features * jnp.log(chol)
        offsets = x[:, None, :] - means[None]  # (n, K, D)
        return self._whitened_squares(params, offsets), log_det

    def _whitened_squares(self, params: GaussianParams, offsets):
        """``|o_nk U_k|²`` ``(n, K)`` for offsets ``o`` ``(n, K, D)``."""
        means, chol = params
        if self.covariance_type in ("full", "tied"):
            chol = jnp.broadcast_to(chol, means.shape[:1] + chol.shape[-2:])
            whitened = jnp.einsum("nkd,kde->nke", offsets, chol)
        elif self.covariance_type == "diag":
            whitened = offsets * chol[None]
        else:
            whitened = offsets * chol[None, :, None]
        return jnp.sum(whitened * whitened, axis=-1)

    def conditional(self, params: GaussianParams, x, covariances: bool = True) -> Conditional:
        """Every row given its observed coordinates, under every component (``missing``).

        With ``o`` the observed coordinates of a row (those not NaN), ``m`` the
        missing ones and ``P = Σ⁻¹ = U Uᵀ``: ``E[x_m | x_o] = μ_m - P_mm⁻¹ P_mo (x_o -
        μ_o)``, ``Cov[x_m | x_o] = P_mm⁻¹`` (the Schur complement
        ``Σ_mm - Σ_mo Σ_oo⁻¹ Σ_om``), and the observed marginal's log-density is

            log N(x_o; μ_o, Σ_oo) = -½ δ̂ᵀ P δ̂ + log|U| - ½ log|P_mm| - |o|/2 log 2π,

        ``δ̂`` the completed row's offset. ``P_mm`` is embedded with static shapes as
        ``G = M̄ P M̄ + M`` (``M`` the diagonal 0/1 mask of the observed coordinates,
        ``M̄ = I - M``), whose Cholesky factor has ``P_mm``'s log-determinant and
        whose inverse is ``P_mm⁻¹`` on the missing block and ``I`` on the observed
        one: one ``D x D`` factor per row and component (per row for tied, whose
        ``P`` is shared); diag and spherical are elementwise. A row with nothing
        missing gets ``G = I`` and its complete-data density.

        Parameters
        ----------
        params : GaussianParams
        x : (n, D) array, NaN where an entry is missing
        covariances : bool
            Whether to compute the conditional covariances (for the statistics).

        Returns
        -------
        Conditional
        """
        means, chol = params
        x = x.astype(means.dtype)
        observed = ~jnp.isnan(x)
        offsets = jnp.where(observed[:, None], x[:, None, :] - means[None], 0)  # (n, K, D)
        gone = (~observed).astype(means.dtype)  # (n, D): 1 where missing
        n_observed = observed.sum(1).astype(means.dtype)
        covariance = None
        if self.covariance_type in ("full", "tied"):
            # Shared (tied) precision: one factor per row, the K offsets its right-hand sides.
            chol = chol if self.covariance_type == "full" else chol[None]
            precision = chol @ jnp.swapaxes(chol, -1, -2)  # (K or 1, D, D)
            eye = jnp.eye(means.shape[-1], dtype=means.dtype)
            embedded = (
                gone[:, None, :, None] * precision[None] * gone[:, None, None, :]
                + (1 - gone)[:, None, :, None] * eye
            )  # (n, K or 1, D, D)
            factor = ops.small_cholesky(embedded)
            per_component = jnp.broadcast_to(precision, means.shape[:1] + precision.shape[1:])
            pulled = gone[:, None] * jnp.einsum("kde,nke->nkd", per_component, offsets)
            if self.covariance_type == "full":
                shift = ops.small_cho_solve(factor, pulled[..., None])[..., 0]
            else:  # the K right-hand sides as the columns of one solve per row
                columns = jnp.swapaxes(pulled, 1, 2)[:, None]
                shift = jnp.swapaxes(ops.small_cho_solve(factor, columns)[:, 0], 1, 2)
            offsets = offsets - shift  # the completed rows' offsets from the means
            log_det = ops.log_det_from_cholesky(
                jnp.broadcast_to(params.precisions_cholesky, means.shape[:1] + chol.shape[-2:])
            ) - ops.log_det_from_cholesky(factor)  # log|U| - ½ log|P_mm|
            if covariances:
                inverse = ops.small_cho_solve(factor, jnp.broadcast_to(eye, factor.shape))
                covariance = gone[:, None, :, None] * inverse * gone[:, None, None, :]
        elif self.covariance_type == "diag":
            log_det = (1 - gone) @ jnp.log(chol).T
            if covariances:
                covariance = gone[:, None, :] / (chol * chol)[None]
        else:
            log_det = n_observed[:, None] * jnp.log(chol)[None]
            if covariances:
                covariance = gone.sum(1)[:, None] / (chol * chol)[None]
        squared = self._whitened_squares(params, offsets)
        log_density = -0.5 * squared + log_det - 0.5 * ops.LOG_2PI * n_observed[:, None]
        completed = jnp.where(observed[:, None], x[:, None, :], means[None] + offsets)
        return Conditional(log_density, completed, covariance)

    def statistics(self, params: GaussianParams | None, x, resp) -> GaussianStats:
        """Weights, means and scatter about the means of the rows ``x`` under ``resp``.
        With ``exact``, two passes over the chunk (exact where ``Σ r x xᵀ - N μ μᵀ``
        cancels); else raw moments by one product. ``params`` is not needed, except
        with ``missing``: the rows completed by their conditional means under each
        component, plus the conditional covariances in the scatter (at
        initialisation, ``params`` None, a missing entry counts as 0)."""
        if self.missing:
            if params is None:
                x = jnp.where(jnp.isnan(x), 0, x)
            else:
                return self._missing_statistics(params, x, resp)
        del params
        x = x.astype(resp.dtype)
        weight = resp.sum(0)
        mean = (resp.T @ x) / _safe(weight)[:, None]
        if not self.exact:  # raw second moments by one product, then about the mean
            return GaussianStats(weight, mean, self._raw_scatter(resp, x, weight, mean))
        offsets = x[:, None, :] - mean[None]  # (n, K, D)
        return GaussianStats(weight, mean, self._scatter(resp, offsets))

    def _missing_statistics(self, params: GaussianParams, x, resp) -> GaussianStats:
        """Statistics of the rows completed under each component: the completed
        rows' weighted means and scatter, plus ``Σ r Cov[x_m | x_o, k]``."""
        given = self.conditional(params, x)
        weight = resp.sum(0)
        mean = jnp.einsum("nk,nkd->kd", resp, given.completed) / _safe(weight)[:, None]
        scatter = self._scatter(resp, given.completed - mean[None])
        covariance = given.covariance
        if self.covariance_type == "full":
            scatter = scatter + jnp.einsum("nk,nkde->kde", resp, covariance)
        elif self.covariance_type == "tied":
            scatter = scatter + jnp.einsum("nk,nde->kde", resp, covariance[:, 0])
        elif self.covariance_type == "diag":
            scatter = scatter + jnp.einsum("nk,nkd->kd", resp, covariance)
        else:
            scatter = scatter + jnp.sum(resp * covariance, axis=0)
        return GaussianStats(weight, mean, scatter)

    def impute(self, params: GaussianParams, x):
        """``(n, K, D)``: every row under every component with its missing entries
        (NaN) replaced by their conditional means ``E[x_m | x_o, k]``; observed
        entries unchanged. Without ``missing``, the rows as they are."""
        if not self.missing:
            return super().impute(params, x)
        return self.conditional(params, x, covariances=False).completed

    def _raw_scatter(self, resp, x, weight, mean):
        """``Σ r x xᵀ - N m mᵀ`` from one ``respᵀ features`` product (``exact=False``)."""
        n_features = x.shape[1]
        # Slicing the product, not the features: a sliced copy of the (n, P) features
        # costs more than the product's D extra columns.
        second = (resp.T @ self.features(x))[:, :-n_features]
        if self.covariance_type in ("full", "tied"):
            second = ops.unvech(second, n_features)
        elif self.covariance_type == "spherical":
            second = second[:, 0]
        centre = self._scatter(weight[None], mean[None])
        return second - centre

    def combine_stats(self, a: GaussianStats, b: GaussianStats) -> GaussianStats:
        """The statistics of two chunks together (Chan, Golub & LeVeque): the means
        move by ``δ n_b / n`` and the scatters add up with ``δ δᵀ n_a n_b / n``."""
        weight = a.weight + b.weight
        share = b.weight / _safe(weight)  # 0 when both are empty
        delta = b.mean - a.mean
        mean = a.mean + delta * share[:, None]
        between = self._scatter((a.weight * share)[None], delta[None])
        return GaussianStats(weight, mean, a.scatter + b.scatter + between)

    def scale_stats(self, stats: GaussianStats, factor) -> GaussianStats:
        """Weights and scatters scale with the rows' weights; means do not."""
        return GaussianStats(stats.weight * factor, stats.mean, stats.scatter * factor)

    def _scatter(self, resp, offsets):
        """``Σ_n r_nk o_nk o_nkᵀ`` in this covariance type's layout, for offsets
        ``o`` (n, K, D)."""
        if self.covariance_type in ("full", "tied"):
            return jnp.einsum("nk,nkd,nke->kde", resp, offsets, offsets)
        squares = resp[:, :, None] * offsets * offsets
        if self.covariance_type == "diag":
            return squares.sum(0)
        return squares.sum((0, 2))

    def _scatter_about(self, stats: GaussianStats, counts, points):
        """``Σ r (x - p)(x - p)ᵀ`` per component about ``points`` (K, D): the scatter
        about the mean plus ``N (mean - p)(mean - p)ᵀ``, a sum of positive terms."""
        return stats.scatter + self._scatter(counts[None], (stats.mean - points)[None])

    def m_step(self, stats: GaussianStats, counts, hyper) -> GaussianParams:
        if isinstance(hyper, GaussianPriorHyper):
            return self.map_m_step(stats, counts, hyper)
        means, covariances = self.moments(stats, counts, hyper.reg_covar)
        return self.params_from_covariances_checked(means, covariances)

    def moments(self, stats: GaussianStats, counts, reg_covar):
        """``(means, covariances)`` as scikit-learn's ``_estimate_gaussian_parameters``
        computes them from the statistics, covariances in this type's layout.

        The means divide by the floored count, ``Σ r x / (N + 10 eps)``, and the
        covariances are about them (a lone point keeps a tiny positive variance, as in
        scikit-learn, where the exact scatter about its own mean is 0), divided by the
        floored count, plus ``reg_covar`` on the diagonal; tied pools all components.
        """
        safe_counts = counts + ops.tiny(counts.dtype)
        means = stats.mean * (counts / safe_counts)[:, None]
        scatter = self._scatter_about(stats, counts, means)
        n_features = means.shape[-1]
        if self.covariance_type == "full":
            covariance = scatter / safe_counts[:, None, None] + reg_covar * jnp.eye(n_features)
        elif self.covariance_type == "tied":
            covariance = scatter.sum(0) / jnp.sum(safe_counts) + reg_covar * jnp.eye(n_features)
        elif self.covariance_type == "diag":
            covariance = scatter / safe_counts[:, None] + reg_covar
        else:  # spherical: the mean over features of the diagonal variances
            covariance = scatter / (n_features * safe_counts) + reg_covar
        return means, covariance

    def params_from_covariances_checked(self, means, covariances) -> GaussianParams:
        """Parameters from covariances in this type's layout; a covariance that is not
        positive definite gives NaN factors (the engine marks the restart non-finite)."""
        if self._matrices:
            return GaussianParams(means, ops.precision_cholesky_from_covariance(covariances))
        positive = covariances > 0
        return GaussianParams(means, jnp.where(positive, jax.lax.rsqrt(covariances), jnp.nan))

    def map_m_step(
        self, stats: GaussianStats, counts, hyper: GaussianPriorHyper, means=None
    ) -> GaussianParams:
        """hmmlearn's MAP M-step (Huang, Acero & Hon, *Spoken Language Processing*).

        ``μ = (λ μ₀ + Σ r x) / (λ + Σ r)``, and with ``S(μ) = λ (μ-μ₀)(μ-μ₀)ᵀ + Σ r (x-μ)(x-μ)ᵀ``:

        - diag: ``σ² = (Ψ + diag S) / max(max(ν - 1, 0) + Σ r, 1e-5)``;
        - spherical: the mean over features of the diag variances;
        - full: ``Σ = (Ψ + S) / max(max(ν - D, 0) + Σ r, 1e-5)``;
        - tied: ``Σ = (Ψ + Σ_k S_k) / max(max(ν - D, 0) + Σ_k Σ r, 1e-5)``.

        ``reg_covar`` is then added to the diagonal. ``means`` (K, D), when given,
        are kept fixed instead of re-estimated (hmmlearn without ``"m"`` in ``params``).
        """
        prior_mean, prior_weight = hyper.means_prior, hyper.means_weight
        if means is None:
            # An empty component without a prior keeps mean 0 instead of 0 / 0.
            weight = prior_weight + counts[:, None]
            pulled = prior_weight * (prior_mean - stats.mean)
            means = stats.mean + pulled / jnp.where(weight > 0, weight, 1)
        offset = means - prior_mean
        n_features = means.shape[-1]
        scatter = self._scatter_about(stats, counts, means)
        if self.covariance_type in ("diag", "spherical"):
            if self.covariance_type == "diag":
                scatter = prior_weight * offset**2 + scatter
                prior = hyper.covars_prior
            else:
                scatter = prior_weight * jnp.sum(offset**2, -1) + scatter
                prior = jnp.sum(
                    jnp.broadcast_to(hyper.covars_prior, means.shape[:1] + (n_features,)), -1
                )
            denominator = jnp.maximum(jnp.maximum(hyper.covars_weight - 1, 0) + counts, 1e-5)
            if self.covariance_type == "diag":
                variance = (prior + scatter) / denominator[:, None] + hyper.reg_covar
            else:
                variance = (prior + scatter) / (n_features * denominator) + hyper.reg_covar
            return GaussianParams(means, jnp.where(variance > 0, jax.lax.rsqrt(variance), jnp.nan))
        scatter = prior_weight * offset[:, :, None] * offset[:, None, :] + scatter
        weight = jnp.maximum(hyper.covars_weight - n_features, 0)
        # Denominators floored at 1e-5 as hmmlearn does for diag (it has no floor here, so
        # a component with no weight at all would get an infinite covariance).
        if self.covariance_type == "full":
            denominator = jnp.maximum(weight + counts, 1e-5)
            covariance = (hyper.covars_prior + scatter) / denominator[:, None, None]
        else:
            denominator = jnp.maximum(weight + counts.sum(), 1e-5)
            covariance = (hyper.covars_prior + scatter.sum(0)) / denominator
        eye = jnp.eye(n_features, dtype=means.dtype)
        covariance = covariance + hyper.reg_covar * eye
        chol = ops.precision_cholesky_from_covariance(covariance)
        # hmmlearn evaluates a covariance that is not positive definite as Σ + min_covar I
        # (its Cholesky retry); the same here, per matrix, so such a state stays usable.
        rescued = ops.precision_cholesky_from_covariance(covariance + hyper.init_covar * eye)
        usable = jnp.all(jnp.isfinite(chol), axis=(-2, -1), keepdims=True)
        return GaussianParams(means, jnp.where(usable, chol, rescued))

    def log_prior(self, params: GaussianParams, hyper, active):
        """Log density, up to a constant, of the prior that :meth:`map_m_step` is the
        mode of (0 without ``map_prior``), summed over the ``active`` components.

        With ``P = Σ⁻¹``, ``ν' = max(ν - D, 0)`` (full, tied) or ``max(ν - 1, 0)``
        per variance (diag, spherical) and ``Ψ`` the ``covars_prior``, per covariance
        ``-ν'/2 log|Σ| - ½ tr(P Ψ)``, and per mean ``-λ/2 (μ-μ₀)ᵀ P (μ-μ₀)``: adding
        the log-likelihood, :meth:`map_m_step` (``reg_covar = 0``) maximises it.
        """
        if not isinstance(hyper, GaussianPriorHyper):
            return super().log_prior(params, hyper, active)
        means, chol = params
        n_features = means.shape[-1]
        # (μ_k - μ₀)ᵀ P_k (μ_k - μ₀): the diagonal of every prior mean against every component.
        prior_means = jnp.broadcast_to(hyper.means_prior, means.shape)
        squared, log_det = self.squared_distances(params, prior_means)
        mean_terms = -0.5 * hyper.means_weight * jnp.diagonal(squared)  # (K,)
        if self.covariance_type in ("full", "tied"):
            precision = chol @ jnp.swapaxes(chol, -1, -2)
            scale = jnp.broadcast_to(hyper.covars_prior, precision.shape)
            trace = jnp.sum(precision * scale, axis=(-2, -1))
            # -ν'/2 log|Σ| = ν' log|U|.
            covariance_terms = jnp.maximum(hyper.covars_weight - n_features, 0) * log_det
        else:
            precision = chol * chol
            scale = jnp.broadcast_to(hyper.covars_prior, means.shape)
            if self.covariance_type == "spherical":
                scale = jnp.sum(scale, -1)
            trace = jnp.sum(jnp.reshape(precision * scale, means.shape[:1] + (-1,)), -1)
            covariance_terms = jnp.maximum(hyper.covars_weight - 1, 0) * log_det
        if self.covariance_type == "tied":  # one covariance, shared by every component
            return jnp.sum(jnp.where(active, mean_terms, 0.0)) + covariance_terms[0] - 0.5 * trace
        per_component = mean_terms + covariance_terms - 0.5 * trace
        return jnp.sum(jnp.where(active, per_component, 0.0))

    # -- the normal-inverse-Wishart prior (host side, numpy; not the contract) --------------
    def default_conjugate_prior(self, x, n_components: int) -> dict[str, Any]:
        """mclust's default conjugate prior (``defaultPrior``; Fraley and Raftery 2007)
        for ``n_components`` components on the rows ``x`` ``(n, D)``.

        Shrinkage ``κ = 0.01``, mean the data mean, ``ν = D + 2`` degrees of freedom,
        scale ``cov(x) / K^(2/D)`` (full, tied) or, for diag and spherical, the mean
        of the per-feature variances ``/ K^(2/D)`` (a number).

        Returns
        -------
        dict
            ``mean``, ``shrinkage``, ``degrees_of_freedom``, ``scale`` (numpy float64),
            the arguments of :meth:`conjugate_prior`.

        Examples
        --------
        >>> import numpy as np
        >>> import jaxem
        >>> x = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
        >>> prior = jaxem.gaussian("diag").default_conjugate_prior(x, n_components=4)
        >>> prior["mean"], prior["degrees_of_freedom"], round(float(prior["scale"]), 4)
        (array([1., 1.]), 4.0, 0.3333)
        """
        x = np.asarray(x, np.float64)
        n_features = x.shape[1]
        covariance = np.atleast_2d(np.cov(x, rowvar=False))
        factor = float(n_components) ** (-2.0 / n_features)
        if self._matrices:
            scale = factor * covariance
        else:
            scale = np.asarray(factor * np.trace(covariance) / n_features)
        return {
            "mean": x.mean(axis=0),
            "shrinkage": 0.01,
            "degrees_of_freedom": float(n_features + 2),
            "scale": scale,
        }

    def conjugate_prior(
        self, *, mean, shrinkage, degrees_of_freedom, scale, n_components: int
    ) -> dict[str, Any]:
        """The MAP fields of this family (``means_prior``, ``means_weight``,
        ``covars_prior``, ``covars_weight``: :meth:`map_m_step`'s parametrisation) whose
        M-step is the posterior mode under the conjugate prior

        - full: ``μ_k | Σ_k ~ N(μ₀, Σ_k / κ)``, ``Σ_k ~ IW(ν, Λ)``;
        - tied: the same with one ``Σ`` shared by the ``n_components`` means;
        - diag: per feature ``μ_kj | σ²_kj ~ N(μ₀j, σ²_kj / κ)``,
          ``σ²_kj ~ IG(ν/2, ς²_j/2)``;
        - spherical: ``μ_k | σ²_k ~ N(μ₀, σ²_k I / κ)``, ``σ²_k ~ IG(ν/2, ς²/2)``;

        so with ``S_k`` the scatter of component ``k`` about its mean ``x̄_k`` and
        ``B_k = κ n_k / (κ + n_k) (x̄_k - μ₀)(x̄_k - μ₀)ᵀ``, the M-step gives
        ``μ_k = (n_k x̄_k + κ μ₀) / (n_k + κ)`` and (Fraley and Raftery 2007)

        - full: ``Σ_k = (Λ + S_k + B_k) / (ν + n_k + D + 2)``;
        - tied: ``Σ = (Λ + Σ_k (S_k + B_k)) / (ν + n + D + K + 1)``;
        - diag: ``σ²_kj = (ς²_j + [S_k + B_k]_jj) / (ν + n_k + 3)``;
        - spherical: ``σ²_k = (ς² + tr(S_k + B_k)) / (ν + (n_k + 1) D + 2)``;

        then ``reg_covar`` on the diagonal.

        Parameters
        ----------
        mean : array-like (D,)
            ``μ₀``, in the coordinates the model is fitted in.
        shrinkage : float >= 0
            ``κ``, the prior's weight on the means in pseudo-rows.
        degrees_of_freedom : float >= 0
            ``ν``.
        scale : array-like
            ``Λ`` (D, D) symmetric positive definite (full, tied); ``ς²`` a positive
            number or (D,) per feature (diag); a positive number (spherical).
        n_components : int
            ``K`` (the tied mode counts the ``K`` mean priors).

        Returns
        -------
        dict
            Keyword arguments for :func:`gaussian` with ``map_prior=True``.

        Raises
        ------
        ValueError
            If ``shrinkage`` or ``degrees_of_freedom`` is negative or not finite, or
            ``scale`` has the wrong shape or is not positive (definite).

        Examples
        --------
        >>> import jaxem
        >>> fields = jaxem.gaussian("spherical").conjugate_prior(
        ...     mean=[0.0, 0.0], shrinkage=0.01, degrees_of_freedom=4.0, scale=0.5,
        ...     n_components=3)
        >>> family = jaxem.gaussian("spherical", map_prior=True, **fields)
        >>> float(fields["covars_weight"])  # (ν + 2) / D + 2
        5.0
        """
        mean = np.asarray(mean, np.float64)
        if mean.ndim != 1:
            raise ValueError(
                f"The prior mean must be a vector (n_features,), got shape {mean.shape}."
            )
        n_features = mean.shape[0]
        for name, value in (("shrinkage", shrinkage), ("degrees_of_freedom", degrees_of_freedom)):
            if not (np.ndim(value) == 0 and np.isfinite(value) and value >= 0):
                raise ValueError(
                    f"The prior's {name} must be a non-negative number, got {value!r}."
                )
        scale = np.asarray(scale, np.float64)
        nu = float(degrees_of_freedom)
        if self._matrices:
            if scale.shape != (n_features, n_features):
                raise ValueError(
                    f"The prior scale of {self.covariance_type!r} covariances must be a "
                    f"({n_features}, {n_features}) matrix, got shape {scale.shape}."
                )
            if not (np.allclose(scale, scale.T) and np.all(np.linalg.eigvalsh(scale) > 0)):
                raise ValueError("The prior scale must be symmetric positive definite.")
            # ν_h - D = ν + D + 2 (full), ν + D + K + 1 (tied): the exponents of |Σ|.
            extra = (
                n_features + 2 if self.covariance_type == "full" else n_features + 1 + n_components
            )
            covars_weight = nu + n_features + extra
            covars_prior = scale
        else:
            allowed = {(), (n_features,)} if self.covariance_type == "diag" else {()}
            if (
                scale.shape not in allowed
                or not np.all(scale > 0)
                or not np.all(np.isfinite(scale))
            ):
                shapes = (
                    "number or (n_features,) array" if self.covariance_type == "diag" else "number"
                )
                raise ValueError(
                    f"The prior scale of {self.covariance_type!r} variances must be a positive "
                    f"{shapes}, got {scale!r}."
                )
            if self.covariance_type == "diag":  # ν_h - 1 = ν + 3
                covars_weight, covars_prior = nu + 4, scale
            else:  # D (ν_h - 1) = ν + D + 2, and the map step sums Ψ over the features
                covars_weight, covars_prior = (nu + 2) / n_features + 2, scale / n_features
        return {
            "means_prior": mean,
            "means_weight": float(shrinkage),
            "covars_prior": covars_prior,
            "covars_weight": float(covars_weight),
        }

    # -- the variational Gaussian-Wishart posterior (BayesianGaussianMixture) -------------
    def wishart_posterior(
        self, stats: GaussianStats, counts, active, prior: WishartPrior, reg_covar
    ):
        """Variational posterior of the means and precisions given the statistics, as
        scikit-learn's ``BayesianGaussianMixture._estimate_means`` and
        ``_estimate_wishart_*`` (Bishop, *PRML* 10.60-10.63, covariances normalised by
        the degrees of freedom).

        Parameters
        ----------
        stats : GaussianStats
        counts : (K,) responsibility sums.
        active : (K,) bool, the components in use (the rest is padding; tied pools
            only these).
        prior : WishartPrior
        reg_covar : float, added to the diagonal of the data covariances.

        Returns
        -------
        (GaussianParams, mean_precision, degrees_of_freedom)
            The posterior means with the Cholesky factors of the normalised
            precisions, and the ``(K,)`` precision scale of the means and degrees of
            freedom (tied: one value, repeated).
        """
        nk = counts + ops.tiny(counts.dtype)
        xk, sk = self.moments(stats, counts, reg_covar)
        mean_precision = prior.mean_precision + nk
        means = (prior.mean_precision * prior.mean + nk[:, None] * xk) / mean_precision[:, None]
        diff = xk - prior.mean
        shrink = prior.mean_precision / mean_precision
        kind = self.covariance_type
        if kind == "tied":
            n_active = jnp.sum(active).astype(nk.dtype)
            share = jnp.sum(jnp.where(active, nk, 0)) / n_active
            dof = prior.degrees_of_freedom + share
            between = jnp.einsum("k,kd,ke->de", jnp.where(active, nk * shrink, 0), diff, diff)
            covariance = (prior.covariance + sk * share + between / n_active) / dof
            dof = jnp.full(nk.shape, dof)
        else:
            dof = prior.degrees_of_freedom + nk
            if kind == "full":
                outer = diff[:, :, None] * diff[:, None, :]
                covariance = prior.covariance + nk[:, None, None] * sk
                covariance = (covariance + (nk * shrink)[:, None, None] * outer) / dof[
                    :, None, None
                ]
            elif kind == "diag":
                spread = sk + shrink[:, None] * diff * diff
                covariance = (prior.covariance + nk[:, None] * spread) / dof[:, None]
            else:
                spread = sk + shrink * jnp.mean(diff * diff, axis=1)
                covariance = (prior.covariance + nk * spread) / dof
        return self.params_from_covariances_checked(means, covariance), mean_precision, dof

    def expected_log_densities(self, params: GaussianParams, mean_precision, dof, x):
        """``(n, K)`` expected log-densities ``E[log N(x | μ_k, Λ_k⁻¹)]`` under the
        posterior (scikit-learn's ``BayesianGaussianMixture._estimate_log_prob``)."""
        n_features = x.shape[-1]
        log_gauss = self.log_densities(params, x) - 0.5 * n_features * jnp.log(dof)
        return log_gauss + 0.5 * (_expected_log_det(dof, n_features) - n_features / mean_precision)

    def wishart_bound(self, params: GaussianParams, mean_precision, dof, active):
        """The posterior's terms of scikit-learn's lower bound: ``-Σ_k log B(W_k, ν_k)
        - D/2 Σ_k log β_k`` over the ``active`` components (its constants dropped)."""
        n_features = params.means.shape[-1]
        log_det = self.log_det_cholesky(params) - 0.5 * n_features * jnp.log(dof)
        ranks = jnp.arange(n_features, dtype=dof.dtype)[:, None]
        log_norm = -(
            dof * log_det
            + dof * n_features * 0.5 * np.log(2.0)
            + jnp.sum(jax.scipy.special.gammaln(0.5 * (dof - ranks)), axis=0)
        )
        # Tied: one Wishart counted once per component, as scikit-learn.
        log_wishart = jnp.sum(jnp.where(active, log_norm, 0))
        log_precision = jnp.sum(jnp.where(active, jnp.log(mean_precision), 0))
        return -log_wishart - 0.5 * n_features * log_precision

    def log_det_cholesky(self, params: GaussianParams):
        """``(K,)`` log-determinants of the precision factors (tied: repeated)."""
        chol = params.precisions_cholesky
        n_components, n_features = params.means.shape
        if self._matrices:
            return jnp.broadcast_to(ops.log_det_from_cholesky(chol), (n_components,))
        if self.covariance_type == "diag":
            return jnp.sum(jnp.log(chol), axis=-1)
        return n_features * jnp.log(chol)

    def degrees_of_freedom_layout(self, dof) -> np.ndarray:
        """scikit-learn's ``degrees_of_freedom_``: ``(K,)``, or one number for tied."""
        dof = np.asarray(dof, np.float64)
        return dof[0] if self.covariance_type == "tied" else dof

    def default_covariance_prior(self, X) -> np.ndarray:
        """scikit-learn's default ``covariance_prior_``: the data's covariance in this
        type's layout (numpy, float64)."""
        X = np.asarray(X, np.float64)
        if self._matrices:
            return np.atleast_2d(np.cov(X.T))
        variance = np.var(X, axis=0, ddof=1)
        return variance if self.covariance_type == "diag" else variance.mean()

    def check_covariance_prior(self, covariance_prior, n_features: int):
        """A user's ``covariance_prior`` checked with scikit-learn's messages, returned
        as given (``(D, D)`` full and tied, ``(D,)`` diag, a number spherical).

        Examples
        --------
        >>> import numpy as np
        >>> import jaxem
        >>> jaxem.gaussian("diag").check_covariance_prior(np.array([1.0, -1.0]), 2)
        Traceback (most recent call last):
        ...
        ValueError: 'diag precision' should be positive
        """
        kind = self.covariance_type
        if kind == "spherical":  # a positive number, checked by the parameter constraints
            return covariance_prior
        prior = np.asarray(covariance_prior)
        shape = (n_features, n_features) if self._matrices else (n_features,)
        if prior.shape != shape:
            raise ValueError(
                f"The parameter '{kind} covariance_prior' should have the shape of {shape}, "
                f"but got {prior.shape}"
            )
        # The precision checks of one component (tied: the shared matrix itself).
        self.check_precisions(prior if kind == "tied" else prior[None], 1, n_features)
        return covariance_prior

    def n_parameters(self, n_components: int, n_features: int) -> int:
        covariance = {
            "full": n_components * n_features * (n_features + 1) // 2,
            "tied": n_features * (n_features + 1) // 2,
            "diag": n_components * n_features,
            "spherical": n_components,
        }[self.covariance_type]
        return covariance + n_components * n_features

    def sample(self, key, params: GaussianParams, labels):
        means, chol = params
        noise = jax.random.normal(key, (labels.shape[0], means.shape[1]), means.dtype)
        if self.covariance_type in ("full", "tied"):
            chol = jnp.broadcast_to(chol, (means.shape[0],) + chol.shape[-2:])[labels]
            # Σ = U⁻ᵀ U⁻¹, so U⁻ᵀ z has covariance Σ.
            steps = solve_triangular(jnp.swapaxes(chol, -1, -2), noise[..., None], lower=True)[
                ..., 0
            ]
        elif self.covariance_type == "diag":
            steps = noise / chol[labels]
        else:
            steps = noise / chol[labels][:, None]
        return means[labels] + steps

    # -- optional hooks -----------------------------------------------------------------------
    def seeding_points(self, x):
        """The rows themselves: k-means runs on the data, not on ``[x², x]``. With
        ``missing``, a missing entry counts as 0 (the centre of centred data)."""
        x = x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)
        return jnp.where(jnp.isnan(x), 0, x) if self.missing else x

    def seeding_key(self):
        """Seeding points depend on ``missing`` only, not on the covariance type."""
        return ("gaussian rows", self.missing)

    def params_from_rows(self, rows, hyper) -> GaussianParams:
        """Components centred on ``rows`` (K, D) with covariance ``reg_covar · I``.

        This is the M-step from one point per component, computed exactly: the
        moment form would subtract two equal large numbers. With ``map_prior``, the
        MAP M-step from one point each (scatter 0, exact too).
        """
        n_components, n_features = rows.shape
        rows = self.seeding_points(rows) if self.missing else rows
        if isinstance(hyper, GaussianPriorHyper):
            ones = jnp.ones((n_components,), rows.dtype)
            scatter_shape = {
                "full": (n_components, n_features, n_features),
                "tied": (n_components, n_features, n_features),
                "diag": (n_components, n_features),
                "spherical": (n_components,),
            }[self.covariance_type]
            stats = GaussianStats(ones, rows, jnp.zeros(scatter_shape, rows.dtype))
            return self.map_m_step(stats, ones, hyper)
        scale = jax.lax.rsqrt(hyper.reg_covar) * jnp.ones((), rows.dtype)
        if self.covariance_type == "full":
            chol = scale * jnp.broadcast_to(
                jnp.eye(n_features, dtype=rows.dtype), (n_components, n_features, n_features)
            )
        elif self.covariance_type == "tied":
            chol = scale * jnp.eye(n_features, dtype=rows.dtype)
        elif self.covariance_type == "diag":
            chol = jnp.full((n_components, n_features), scale, rows.dtype)
        else:
            chol = jnp.full((n_components,), scale, rows.dtype)
        return GaussianParams(rows, chol)

    #: Former name of :meth:`params_from_rows`.
    params_at_points = params_from_rows

    def initial_params(self, key, chunks: Chunks, n_components: int, hyper) -> GaussianParams:
        """hmmlearn's init: k-means centres (k-means++ seeds, then Lloyd) as means, and
        every covariance the weighted data covariance plus ``init_covar`` on its diagonal.
        Two passes over the chunks for the covariance (mean, then centred products)."""
        dtype = chunks.weights.dtype
        points = Chunks(jax.vmap(self.seeding_points)(chunks.x).astype(dtype), chunks.weights)
        seeds, _ = seeding.kmeans_plusplus_chunked(key, points, n_components)
        means = seeding.lloyd(seeds, points, max_iter=KMEANS_MAX_ITER, tol=KMEANS_TOL)
        total, sums = _iterate.chunked_sum(lambda x, w: (w.sum(), w @ x), points)
        mean = sums / total

        def scatter(x, w):
            centred = (x - mean) * jnp.sqrt(w)[:, None]
            return centred.T @ centred

        # np.cov's unbiased normalisation, as hmmlearn.
        covariance = _iterate.chunked_sum(scatter, points) / jnp.maximum(total - 1, 1)
        x = points.x
        n_features = x.shape[-1]
        covariance = covariance + hyper.init_covar * jnp.eye(n_features, dtype=dtype)
        if self.covariance_type == "full":
            layout = jnp.broadcast_to(covariance, (n_components, n_features, n_features))
        elif self.covariance_type == "tied":
            layout = covariance
        elif self.covariance_type == "diag":
            layout = jnp.broadcast_to(jnp.diag(covariance), (n_components, n_features))
        else:
            layout = jnp.full((n_components,), jnp.mean(covariance), dtype)
        return self.params_from_covariances(means, layout)

    def keep_fixed(self, old, new, update: str, stats, counts, hyper) -> GaussianParams:
        """Means from ``new`` if ``"m" in update``, covariances if ``"c"``, else ``old``'s.

        With ``"c"`` but not ``"m"`` the MAP covariances are re-estimated around the
        fixed old means, as hmmlearn does (only the MAP form keeps the means apart).
        """
        update_means, update_covariances = "m" in update, "c" in update
        if update_covariances and not update_means and isinstance(hyper, GaussianPriorHyper):
            new = self.map_m_step(stats, counts, hyper, means=old.means)
        return GaussianParams(
            new.means if update_means else old.means,
            new.precisions_cholesky if update_covariances else old.precisions_cholesky,
        )

    def where_components(self, keep, on_true, on_false) -> GaussianParams:
        """Per component; the tied factor, shared by all components, is ``on_true``'s
        if any component is kept and ``on_false``'s otherwise."""
        if self.covariance_type != "tied":
            return super().where_components(keep, on_true, on_false)
        return GaussianParams(
            jnp.where(keep[:, None], on_true.means, on_false.means),
            jnp.where(jnp.any(keep), on_true.precisions_cholesky, on_false.precisions_cholesky),
        )

    def take_components(self, params: GaussianParams, index) -> GaussianParams:
        """The components in ``index``; a tied factor has no component axis and stays."""
        if self.covariance_type != "tied":
            return super().take_components(params, index)
        return GaussianParams(params.means[index], params.precisions_cholesky)

    def unconstrain(self, params: GaussianParams) -> GaussianParams:
        """Means as they are; the precision factors with the log of their positive
        diagonal (the log of the whole factor for diag and spherical)."""
        factors = params.precisions_cholesky
        free = ops.log_diagonal(factors) if self._matrices else jnp.log(factors)
        return GaussianParams(params.means, free)

    def constrain(self, values: GaussianParams) -> GaussianParams:
        """Inverse of :meth:`unconstrain`."""
        free = values.precisions_cholesky
        factors = ops.exp_diagonal(free) if self._matrices else jnp.exp(free)
        return GaussianParams(values.means, factors)

    def to_layout(self, params: GaussianParams) -> dict[str, Any]:
        """``means``, ``covariances``, ``precisions`` and ``precisions_cholesky`` in
        scikit-learn's layout for this covariance type (numpy arrays)."""
        return jax.device_get(
            {
                "means": params.means,
                "covariances": self.covariances(params),
                "precisions": self.precisions(params),
                "precisions_cholesky": params.precisions_cholesky,
            }
        )

    def from_layout(
        self, dtype, *, means, covariances=None, precisions_cholesky=None
    ) -> GaussianParams:
        """Parameters from ``means`` and either ``covariances`` or ``precisions_cholesky``
        in scikit-learn's layout."""
        if (covariances is None) == (precisions_cholesky is None):
            raise ValueError("Pass exactly one of covariances and precisions_cholesky.")
        means = jnp.asarray(means, dtype)
        if covariances is not None:
            return self.params_from_covariances(means, covariances)
        return GaussianParams(means, jnp.asarray(precisions_cholesky, dtype))

    # -- conveniences (not part of the contract) -------------------------------------------
    def covariances(self, params: GaussianParams):
        """Covariances in scikit-learn's layout for this covariance type."""
        chol = params.precisions_cholesky
        if self.covariance_type in ("full", "tied"):
            return ops.covariance_from_precision_cholesky(chol)
        return 1.0 / (chol * chol)

    def precisions(self, params: GaussianParams):
        """Precisions in scikit-learn's layout for this covariance type."""
        chol = params.precisions_cholesky
        if self.covariance_type in ("full", "tied"):
            return chol @ jnp.swapaxes(chol, -1, -2)
        return chol * chol

    def params_from_covariances(self, means, covariances) -> GaussianParams:
        """Parameters from means and covariances in scikit-learn's layout."""
        means = jnp.asarray(means)
        covariances = jnp.asarray(covariances, means.dtype)
        if self.covariance_type in ("full", "tied"):
            return GaussianParams(means, ops.precision_cholesky_from_covariance(covariances))
        return GaussianParams(means, jax.lax.rsqrt(covariances))

    # -- scikit-learn / hmmlearn layouts on the host (numpy float64; not the contract) -------
    @property
    def _matrices(self) -> bool:
        """Whether the layout holds matrices (full, tied) rather than variances."""
        return self.covariance_type in ("full", "tied")

    def layout_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        """Shape of the covariances, precisions and precision factors in scikit-learn's
        (and hmmlearn's) layout for this covariance type.

        Parameters
        ----------
        n_components : int
        n_features : int

        Returns
        -------
        tuple of int
            ``(K, D, D)`` full, ``(D, D)`` tied, ``(K, D)`` diag, ``(K,)`` spherical.

        Examples
        --------
        >>> import jaxem
        >>> [jaxem.gaussian(kind).layout_shape(3, 2) for kind in ("full", "tied", "diag")]
        [(3, 2, 2), (2, 2), (3, 2)]
        >>> jaxem.gaussian("spherical").layout_shape(3, 2)
        (3,)
        """
        return {
            "full": (n_components, n_features, n_features),
            "tied": (n_features, n_features),
            "diag": (n_components, n_features),
            "spherical": (n_components,),
        }[self.covariance_type]

    def layout_from_cholesky(self, precisions_cholesky) -> dict[str, np.ndarray]:
        """scikit-learn's ``covariances_``, ``precisions_`` and ``precisions_cholesky_``
        from the precision factor, computed in float64 with numpy on the host.

        Parameters
        ----------
        precisions_cholesky : array-like in this type's layout
            Upper-triangular ``U`` with ``U Uᵀ = P`` (full, tied), ``1/σ`` (diag,
            spherical).

        Returns
        -------
        dict
            ``covariances``, ``precisions`` and ``precisions_cholesky`` as float64
            numpy arrays of the factor's shape.

        Examples
        --------
        >>> import jaxem
        >>> layout = jaxem.gaussian("diag").layout_from_cholesky([[2.0, 0.5]])
        >>> layout["covariances"], layout["precisions"]
        (array([[0.25, 4.  ]]), array([[4.  , 0.25]]))
        """
        chol = np.asarray(precisions_cholesky, np.float64)
        if self._matrices:
            inverse = np.linalg.inv(chol)  # Σ = (U Uᵀ)⁻¹ = U⁻ᵀ U⁻¹
            covariances = np.swapaxes(inverse, -1, -2) @ inverse
            precisions = chol @ np.swapaxes(chol, -1, -2)
        else:
            covariances = 1.0 / (chol * chol)
            precisions = chol * chol
        return {"covariances": covariances, "precisions": precisions, "precisions_cholesky": chol}

    def check_precisions(self, precisions, n_components: int, n_features: int) -> np.ndarray:
        """Check user-given precisions in scikit-learn's layout, with its messages.

        Parameters
        ----------
        precisions : ndarray
            Already validated as an array (``sklearn.utils.check_array``).
        n_components : int
        n_features : int

        Returns
        -------
        ndarray
            The precisions in float64.

        Raises
        ------
        ValueError
            If the shape is not :meth:`layout_shape`, a variance precision is not
            positive, or a precision matrix is not symmetric positive-definite.

        Examples
        --------
        >>> import numpy as np
        >>> import jaxem
        >>> jaxem.gaussian("spherical").check_precisions(np.array([1.0, 0.0]), 2, 3)
        Traceback (most recent call last):
        ...
        ValueError: 'spherical precision' should be positive
        """
        kind = self.covariance_type
        shape = self.layout_shape(n_components, n_features)
        if np.shape(precisions) != shape:
            raise ValueError(
                f"The parameter '{kind} precision' should have the shape of {shape}, "
                f"but got {np.shape(precisions)}"
            )
        precisions = np.asarray(precisions, np.float64)
        if not self._matrices:
            if np.any(precisions <= 0.0):
                raise ValueError(f"'{kind} precision' should be positive")
            return precisions
        if _first_not_spd(precisions) is not None:
            raise ValueError(f"'{kind} precision' should be symmetric, positive-definite")
        return precisions

    def cholesky_from_precisions(self, precisions) -> np.ndarray:
        """The precision factor in scikit-learn's layout from precisions in that layout.

        Upper-triangular ``U`` with ``U Uᵀ = P`` computed as scikit-learn does (flip,
        Cholesky, flip) for full and tied, ``sqrt(P)`` for diag and spherical; numpy,
        float64.

        Parameters
        ----------
        precisions : array-like in this type's layout (see :meth:`check_precisions`)

        Returns
        -------
        ndarray
            ``precisions_cholesky`` of the same shape.

        Examples
        --------
        >>> import numpy as np
        >>> import jaxem
        >>> factor = jaxem.gaussian("tied").cholesky_from_precisions([[2.0, 1.0], [1.0, 2.0]])
        >>> np.allclose(np.triu(factor), factor), np.allclose(factor @ factor.T, [[2, 1], [1, 2]])
        (True, True)
        """
        precisions = np.asarray(precisions, np.float64)
        if not self._matrices:
            return np.sqrt(precisions)
        flipped = precisions[..., ::-1, ::-1]
        return np.linalg.cholesky(flipped)[..., ::-1, ::-1]

    def cholesky_from_covariances(self, covariances, name: str = "covariances") -> np.ndarray:
        """The precision factor in scikit-learn's layout from covariances in that
        layout, as :meth:`params_from_covariances` but with numpy, float64, on the host
        (no program to compile): ``U = L⁻ᵀ`` for the Cholesky factor ``L`` of ``Σ``
        (full, tied), ``1/sqrt(Σ)`` (diag, spherical).

        Raises
        ------
        ValueError
            If a covariance is not symmetric positive-definite (full, tied) or a
            variance not positive and finite (diag, spherical); ``name`` is the
            attribute the message names.

        Examples
        --------
        >>> import numpy as np
        >>> import jaxem
        >>> covariances = np.array([[2.0, 1.0], [1.0, 2.0]])
        >>> factor = jaxem.gaussian("tied").cholesky_from_covariances(covariances)
        >>> np.allclose(factor @ factor.T, np.linalg.inv(covariances))
        True
        >>> jaxem.gaussian("diag").cholesky_from_covariances([[1.0, -2.0]], "covars_")
        Traceback (most recent call last):
        ...
        ValueError: 'diag' covars_ must be positive and finite; component 0 is not.
        """
        covariances = np.asarray(covariances, np.float64)
        if not self._matrices:
            bad = ~(np.isfinite(covariances) & (covariances > 0))
            if np.any(bad):
                component = int(np.argwhere(bad)[0][0]) if bad.ndim else 0
                raise ValueError(
                    f"{self.covariance_type!r} {name} must be positive and finite; "
                    f"component {component} is not."
                )
            return 1.0 / np.sqrt(covariances)
        component = _first_not_spd(covariances)
        if component is not None:
            which = "the matrix" if covariances.ndim == 2 else f"component {component}"
            raise ValueError(
                f"{self.covariance_type!r} {name} must be symmetric, positive-definite; "
                f"{which} is not."
            )
        return np.swapaxes(np.linalg.inv(np.linalg.cholesky(covariances)), -1, -2)

    def sample_numpy(self, rng, means, covariances, counts) -> np.ndarray:
        """scikit-learn's ``GaussianMixture.sample`` draws with a numpy generator.

        ``multivariate_normal`` per component for full and tied, ``mean +
        standard_normal · sqrt(variance)`` for diag and spherical, in that order, so
        equal parameters and generator state give scikit-learn's exact samples.

        Parameters
        ----------
        rng : numpy.random.RandomState
        means : array-like (K, D)
        covariances : array-like in this type's layout
        counts : array-like of int (K,)
            Rows to draw from every component.

        Returns
        -------
        ndarray (sum(counts), D)
            float64 samples, grouped by component.

        Examples
        --------
        >>> import numpy as np
        >>> import jaxem
        >>> rng = np.random.RandomState(0)
        >>> x = jaxem.gaussian("spherical").sample_numpy(rng, np.zeros((2, 3)), [1.0, 4.0], [2, 1])
        >>> x.shape
        (3, 3)
        """
        means = np.asarray(means, np.float64)
        covariances = np.asarray(covariances, np.float64)
        n_components, n_features = means.shape
        if self._matrices:
            covariances = np.broadcast_to(
                covariances, (n_components, n_features, n_features)
            )  # tied: the one matrix for every component
            blocks = [
                rng.multivariate_normal(mean, covariance, int(count))
                for mean, covariance, count in zip(means, covariances, counts)
            ]
        else:
            blocks = [
                mean + rng.standard_normal(size=(count, n_features)) * np.sqrt(covariance)
                for mean, covariance, count in zip(means, covariances, counts)
            ]
        return np.vstack(blocks)

    def unit_covariances(self, n_components: int, n_features: int) -> np.ndarray:
        """Identity covariances in this type's layout (float64).

        Examples
        --------
        >>> import jaxem
        >>> jaxem.gaussian("diag").unit_covariances(2, 3).shape
        (2, 3)
        """
        eye = np.eye(n_features)
        return {
            "full": np.tile(eye, (n_components, 1, 1)),
            "tied": eye,
            "diag": np.ones((n_components, n_features)),
            "spherical": np.ones(n_components),
        }[self.covariance_type]

    def compact_covariances(
        self, covariances, n_components: int, n_features: int, name: str = "covariances"
    ) -> np.ndarray:
        """Covariances in this type's layout, checked; hmmlearn's spherical layout too.

        hmmlearn's initialisation stores spherical variances tiled over the features,
        ``(n_components, n_features)``; those are averaged to ``(n_components,)``.

        Parameters
        ----------
        covariances : array-like
        n_components : int
        n_features : int
        name : str
            The attribute named in the error message.

        Returns
        -------
        ndarray
            float64, of shape :meth:`layout_shape`.

        Raises
        ------
        ValueError
            If the shape is neither the layout's nor (spherical) the tiled one or
            ``n_components`` values in a ``(K, 1, ...)`` array, as hmmlearn accepts.

        Examples
        --------
        >>> import numpy as np
        >>> import jaxem
        >>> jaxem.gaussian("spherical").compact_covariances(np.full((2, 3), 2.0), 2, 3)
        array([2., 2.])
        >>> jaxem.gaussian("diag").compact_covariances(np.ones(2), 2, 3, "covars_")
        Traceback (most recent call last):
        ...
        ValueError: 'diag' covars_ must have shape (2, 3), got (2,).
        """
        covariances = np.asarray(covariances, np.float64)
        expected = self.layout_shape(n_components, n_features)
        if self.covariance_type == "spherical":
            if covariances.shape == (n_components, n_features):
                covariances = covariances.mean(axis=1)  # hmmlearn's tiled layout
            elif covariances.ndim > 1 and covariances.size == n_components == len(covariances):
                covariances = covariances.reshape(n_components)  # hmmlearn ravels (K, 1, ...)
        if covariances.shape != expected:
            raise ValueError(
                f"{self.covariance_type!r} {name} must have shape {expected}, "
                f"got {covariances.shape}."
            )
        return covariances

    def full_covariances(self, covariances, n_components: int, n_features=None) -> np.ndarray:
        """Covariances as one full matrix per component, ``(K, D, D)``, from this type's
        layout (hmmlearn's ``fill_covars``; numpy).

        Parameters
        ----------
        covariances : array-like in this type's layout
            For spherical, every value is a variance (hmmlearn ravels them).
        n_components : int
        n_features : int, optional
            Needed for spherical variances, which do not carry it; by default the
            last axis of ``covariances``.

        Returns
        -------
        ndarray (K, D, D)

        Examples
        --------
        >>> import jaxem
        >>> jaxem.gaussian("diag").full_covariances([[1.0, 2.0]], 1)
        array([[[1., 0.],
                [0., 2.]]])
        """
        covariances = np.asarray(covariances)
        kind = self.covariance_type
        if kind == "full":
            return covariances
        if kind == "diag":
            return np.array([np.diag(row) for row in covariances])
        if kind == "tied":
            return np.tile(covariances, (n_components, 1, 1))
        if n_features is None:
            raise ValueError("Spherical covariances need n_features to fill full matrices.")
        return np.ravel(covariances)[:, None, None] * np.eye(n_features)[None]

    def covariance_view(self, covariances, n_features: int) -> CovarianceView:
        """Covariances in scikit-learn's layout arranged for display; see
        :class:`CovarianceView`.

        Examples
        --------
        >>> import numpy as np
        >>> import jaxem
        >>> view = jaxem.gaussian("spherical").covariance_view(np.array([1.0, 2.0]), 3)
        >>> view.per_component
        array([[1., 1., 1.],
               [2., 2., 2.]])
        >>> view.shared is None, view.note
        (True, '(spherical: one variance shared by all features of a component)')
        """
        covariances = np.asarray(covariances, np.float64)
        kind = self.covariance_type
        if kind == "tied":
            return CovarianceView(per_component=None, shared=covariances)
        if kind == "spherical":
            return CovarianceView(
                per_component=np.repeat(covariances[:, None], n_features, axis=1),
                shared=None,
                note="(spherical: one variance shared by all features of a component)",
            )
        return CovarianceView(per_component=covariances, shared=None)


def _expected_log_det(dof, n_features: int):
    """``E[log |Λ|] - D log 2`` part of a Wishart with ``dof`` degrees of freedom and
    unit-normalised scale: ``D log 2 + Σ_i ψ((ν - i) / 2)``."""
    ranks = jnp.arange(n_features, dtype=dof.dtype)[:, None]
    return n_features * np.log(2.0) + jnp.sum(jax.scipy.special.digamma(0.5 * (dof - ranks)), 0)


def _safe(weight):
    """``weight`` with zeros replaced by ones, for divisions that must give 0 / 1."""
    return jnp.where(weight > 0, weight, 1)


def gaussian(
    covariance_type: str = "full",
    reg_covar: float = 1e-6,
    *,
    init_covar: float = 1e-3,
    exact: bool = False,
    missing: bool = False,
    **priors,
) -> Gaussian:
    """Gaussian component family; see :class:`Gaussian`.

    ``priors`` are the optional MAP fields (``map_prior=True``, ``means_prior``, ...).
    """
    return Gaussian(
        covariance_type=covariance_type,
        reg_covar=reg_covar,
        init_covar=init_covar,
        exact=exact,
        missing=missing,
        **priors,
    )

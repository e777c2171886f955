"""Multivariate Student-t components, each with its own degrees of freedom.

A Student-t is a Gaussian scale mixture: given a latent scale ``u ~ Gamma(ν/2,
ν/2)``, ``x ~ N(μ, Σ / u)``, and

    log t(x | μ, Σ, ν) = log Γ((ν + D)/2) - log Γ(ν/2) - D/2 log(ν π) - ½ log|Σ|
                         - (ν + D)/2 log(1 + δ²/ν),       δ² = (x - μ)ᵀ Σ⁻¹ (x - μ).

EM (McLachlan and Peel, *Finite Mixture Models*, 7.5) adds the scales: the E-step
weights every row by ``u = (ν + D)/(ν + δ²)`` beside its responsibility ``r``, so
far rows (outliers) count little; the M-step is the Gaussian M-step of the
``r u``-weighted rows (the scatter divided by ``Σ r``), and ``ν`` solves

    log(ν/2) - ψ(ν/2) = -1 - (1/Σr) Σ r (log u - u) - ψ((ν₀ + D)/2) + log((ν₀ + D)/2)

(ν₀ the E-step's), a decreasing function of ``ν`` on the left: a fixed number of
bisection steps in ``log ν`` over ``[dof_min, dof_max]``, then one Newton step so
the result is differentiable in the statistics.

Everything Gaussian comes from :class:`jaxem.families.Gaussian` (``exact``):
whitened offsets for the distances, the ``r u``-weighted statistics merged by
Chan, Golub and LeVeque's update, the covariance types, the layouts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma, gammaln, polygamma

from jaxem.contract import Family
from jaxem.families.gaussian import (
    COVARIANCE_TYPES,
    Gaussian,
    GaussianHyper,
    GaussianParams,
    GaussianStats,
    gaussian,
)

__all__ = ["StudentT", "StudentTParams", "StudentTStats", "StudentTHyper", "student_t"]

#: Bisection steps of the degrees-of-freedom update: 2⁻⁶⁰ of log(dof_max / dof_min)
#: is below float64's resolution.
_BISECTION_STEPS = 60


class StudentTParams(NamedTuple):
    """Parameters of ``K`` Student-t components.

    Attributes
    ----------
    means : (K, D) locations (the means where ``ν > 1``)
    precisions_cholesky : the scale matrices' precision factors, in the Gaussian
        layout of the covariance type: (K, D, D) full, (D, D) tied, (K, D) diag, (K,)
        spherical
    degrees_of_freedom : (K,)
    """

    means: jax.Array
    precisions_cholesky: jax.Array
    degrees_of_freedom: jax.Array


class StudentTStats(NamedTuple):
    """Statistics of the rows weighted by responsibility times latent scale.

    Attributes
    ----------
    scaled : GaussianStats
        Weight ``Σ r u``, mean ``Σ r u x / Σ r u`` and scatter about it.
    dof_sum : (K,)
        ``Σ r (log u - u + ψ((ν₀ + D)/2) - log((ν₀ + D)/2))``, the sum the
        degrees-of-freedom equation needs (ν₀: the E-step's).
    """

    scaled: GaussianStats
    dof_sum: jax.Array


class StudentTHyper(NamedTuple):
    """The Gaussian part's hyperparameters, the initial (or fixed) degrees of
    freedom, and the interval the update stays in."""

    gaussian: GaussianHyper
    dof: jax.Array
    dof_min: jax.Array
    dof_max: jax.Array


def _dof_function(dof):
    """``log(ν/2) - ψ(ν/2)``: positive, decreasing from ``+∞`` to 0."""
    return jnp.log(dof / 2) - digamma(dof / 2)


def _dof_constant(dof, n_features):
    """``ψ((ν + D)/2) - log((ν + D)/2)`` of the E-step's ``ν``."""
    half = (dof + n_features) / 2
    return digamma(half) - jnp.log(half)


def solve_dof(target, dof_min, dof_max):
    """``ν`` in ``[dof_min, dof_max]`` with ``log(ν/2) - ψ(ν/2) = target`` (clipped).

    Bisection in ``log ν`` for a fixed number of steps, then one Newton step (so
    the result has the implicit derivative in ``target``), clipped to the interval.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from jaxem.families.student_t import _dof_function, solve_dof
    >>> print(solve_dof(_dof_function(jnp.array([3.0, 30.0])), 1.0, 200.0).round(4))
    [ 3. 30.]
    """
    target = jnp.asarray(target)
    low = jnp.broadcast_to(jnp.log(jnp.asarray(dof_min, target.dtype)), target.shape)
    high = jnp.broadcast_to(jnp.log(jnp.asarray(dof_max, target.dtype)), target.shape)

    def step(_, bounds):
        low, high = bounds
        middle = (low + high) / 2
        # The function decreases: above the target, the root lies at larger ν.
        above = _dof_function(jnp.exp(middle)) > target
        return jnp.where(above, middle, low), jnp.where(above, high, middle)

    low, high = jax.lax.fori_loop(0, _BISECTION_STEPS, step, (low, high))
    dof = jnp.exp((low + high) / 2)
    slope = 1 / dof - polygamma(1, dof / 2) / 2
    dof = dof - (_dof_function(dof) - target) / slope
    return jnp.clip(dof, dof_min, dof_max)


@dataclasses.dataclass(frozen=True)
class StudentT(Family):
    """Multivariate Student-t component family with per-component degrees of freedom.

    Parameters
    ----------
    covariance_type : {"full", "tied", "diag", "spherical"}
        Layout of the scale matrices, as :class:`Gaussian`'s covariances.
    reg_covar : float
        Added to the diagonal of every scale matrix.
    dof : float
        Initial degrees of freedom of every component (the fixed value with
        ``fix_dof``).
    fix_dof : bool
        Keep the degrees of freedom at ``dof`` instead of estimating them.
    dof_min, dof_max : float
        The estimated degrees of freedom stay in ``[dof_min, dof_max]``; at 200 a
        component is Gaussian to within a fraction of a percent.

    ``reg_covar``, ``dof``, ``dof_min`` and ``dof_max`` are excluded from equality:
    changing them does not recompile.

    Notes
    -----
    The contract's exponential-family hooks (``features``, ``natural_parameters``,
    ``log_base_measure``) describe the complete-data Gaussian at latent scale
    ``u = 1``; the Student-t itself overrides ``log_densities``, ``statistics``,
    ``combine_stats`` and ``scale_stats``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> import jaxem
    >>> family = jaxem.student_t("full")
    >>> params = jaxem.StudentTParams(jnp.zeros((1, 2)), jnp.eye(2)[None], jnp.array([4.0]))
    >>> x = jnp.array([[1.0, 0.0]])  # scipy.stats.multivariate_t.logpdf: -2.5073
    >>> print(jaxem.families.log_densities(family, params, x).round(4))
    [[-2.5073]]

    Two clusters with heavy tails:

    >>> rng = np.random.default_rng(0)
    >>> scales = np.sqrt(3.0 / rng.chisquare(3.0, size=(400, 1)))
    >>> X = rng.normal(size=(400, 2)) * scales + np.where(np.arange(400)[:, None] < 200, -5, 5)
    >>> result = jaxem.fit(jaxem.mixture(family, 2), X.astype(np.float32),
    ...                    key=jax.random.key(0), n_restarts=2)
    >>> print(np.sort(result.params.components.means[:, 0]).round(0))
    [-5.  5.]
    """

    covariance_type: str = "full"
    reg_covar: float = dataclasses.field(default=1e-6, compare=False)
    dof: float = dataclasses.field(default=5.0, compare=False)
    fix_dof: bool = False
    dof_min: float = dataclasses.field(default=1.0, compare=False)
    dof_max: float = dataclasses.field(default=200.0, compare=False)

    update_letters: ClassVar[str] = "mc"

    def __post_init__(self):
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {COVARIANCE_TYPES}, got {self.covariance_type!r}."
            )
        if not 0 < self.dof_min <= self.dof <= self.dof_max:
            raise ValueError(
                "The degrees of freedom need 0 < dof_min <= dof <= dof_max, got "
                f"dof_min={self.dof_min!r}, dof={self.dof!r}, dof_max={self.dof_max!r}."
            )

    @property
    def gaussian(self) -> Gaussian:
        """The Gaussian family of the same covariance type (exact forms)."""
        return gaussian(self.covariance_type, self.reg_covar, exact=True)

    @staticmethod
    def _gaussian_params(params: StudentTParams) -> GaussianParams:
        return GaussianParams(params.means, params.precisions_cholesky)

    def layout_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        """Shape of the scale matrices in scikit-learn's layout (see
        :meth:`Gaussian.layout_shape`)."""
        return self.gaussian.layout_shape(n_components, n_features)

    # -- contract ---------------------------------------------------------------------------
    def hyper(self, dtype) -> StudentTHyper:
        return StudentTHyper(
            self.gaussian.hyper(dtype),
            np.asarray(self.dof, dtype),
            np.asarray(self.dof_min, dtype),
            np.asarray(self.dof_max, dtype),
        )

    def check_data(self, x) -> None:
        """Raise ``ValueError`` unless ``x`` is 2-D, real and finite."""
        x = np.asarray(x)
        if x.ndim != 2 or x.dtype.kind not in "iubf":
            raise ValueError(
                f"Student-t data must be a 2-D real array (n_samples, n_features), got "
                f"{x.ndim}-D of dtype {x.dtype}; reshape one feature with X.reshape(-1, 1)."
            )
        if not np.all(np.isfinite(x)):
            raise ValueError(
                "Student-t data must be finite; got NaN or infinity. "
                "Drop or impute the missing values."
            )

    def component_width(self, x) -> int:
        """As the Gaussian's exact forms (the same ``(n, K, D)`` offsets)."""
        return self.gaussian.component_width(x)

    def features(self, x):
        return self.gaussian.features(x)

    def log_base_measure(self, x):
        return self.gaussian.log_base_measure(x)

    def natural_parameters(self, params: StudentTParams):
        return self.gaussian.natural_parameters(self._gaussian_params(params))

    def m_step(self, stats: StudentTStats, counts, hyper: StudentTHyper) -> StudentTParams:
        components = self.gaussian.m_step(stats.scaled, counts, hyper.gaussian)
        if self.fix_dof:
            dof = jnp.broadcast_to(hyper.dof, counts.shape).astype(counts.dtype)
        else:
            # A component without weight gets the initial degrees of freedom.
            weighted = counts > 0
            mean = stats.dof_sum / jnp.where(weighted, counts, 1)
            target = jnp.where(weighted, -1 - mean, _dof_function(hyper.dof))
            dof = solve_dof(target, hyper.dof_min, hyper.dof_max)
        return StudentTParams(components.means, components.precisions_cholesky, dof)

    def n_parameters(self, n_components: int, n_features: int) -> int:
        gaussian_part = self.gaussian.n_parameters(n_components, n_features)
        return gaussian_part + (0 if self.fix_dof else n_components)

    def sample(self, key, params: StudentTParams, labels):
        normal_key, scale_key = jax.random.split(key)
        draws = self.gaussian.sample(normal_key, self._gaussian_params(params), labels)
        half = params.degrees_of_freedom[labels] / 2
        scale = jax.random.gamma(scale_key, half, dtype=draws.dtype) / half  # u ~ Γ(ν/2, ν/2)
        means = params.means[labels]
        return means + (draws - means) * jax.lax.rsqrt(scale)[:, None]

    # -- optional hooks -----------------------------------------------------------------------
    def log_densities(self, params: StudentTParams, x):
        """``(n, K)`` log-densities from the whitened offsets' squared lengths."""
        squared, log_det = self.gaussian.squared_distances(self._gaussian_params(params), x)
        dof = params.degrees_of_freedom
        n_features = params.means.shape[-1]
        normaliser = (
            gammaln((dof + n_features) / 2)
            - gammaln(dof / 2)
            - 0.5 * n_features * jnp.log(dof * jnp.pi)
            + log_det
        )
        return normaliser - 0.5 * (dof + n_features) * jnp.log1p(squared / dof)

    def latent_scales(self, params: StudentTParams, x):
        """``(n, K)`` expected latent scales ``u = (ν + D)/(ν + δ²)`` (small for outliers)."""
        squared, _ = self.gaussian.squared_distances(self._gaussian_params(params), x)
        dof = params.degrees_of_freedom
        return (dof + params.means.shape[-1]) / (dof + squared)

    def statistics(self, params: StudentTParams | None, x, resp) -> StudentTStats:
        """Gaussian statistics of the rows weighted by ``r u``, and the degrees-of-freedom
        sum. At initialisation (``params`` None) every scale is 1 and the sum makes the
        M-step return the initial degrees of freedom."""
        n_features = x.shape[-1]
        if params is None:
            scaled = self.gaussian.statistics(None, x, resp)
            dof = jnp.asarray(self.dof, resp.dtype)
            # -1 - dof_sum / Σr = log(ν/2) - ψ(ν/2) at ν = self.dof: the root is self.dof.
            per_row = -1 - _dof_function(dof)
            return StudentTStats(scaled, resp.sum(0) * per_row)
        scales = self.latent_scales(params, x).astype(resp.dtype)
        # Rows of weight 0 (padding, which may hold anything) contribute nothing.
        present = resp > 0
        scales = jnp.where(present, scales, 1)
        scaled = self.gaussian.statistics(None, x, resp * scales)
        constant = _dof_constant(params.degrees_of_freedom, n_features)
        per_row = jnp.log(scales) - scales + constant
        return StudentTStats(scaled, jnp.sum(jnp.where(present, resp * per_row, 0), axis=0))

    def combine_stats(self, a: StudentTStats, b: StudentTStats) -> StudentTStats:
        return StudentTStats(self.gaussian.combine_stats(a.scaled, b.scaled), a.dof_sum + b.dof_sum)

    def scale_stats(self, stats: StudentTStats, factor) -> StudentTStats:
        return StudentTStats(
            self.gaussian.scale_stats(stats.scaled, factor), stats.dof_sum * factor
        )

    def seeding_points(self, x):
        return self.gaussian.seeding_points(x)

    def seeding_key(self):
        return self.gaussian.seeding_key()

    def params_from_rows(self, rows, hyper: StudentTHyper) -> StudentTParams:
        """Components centred on ``rows`` with scale ``reg_covar · I`` and the initial
        degrees of freedom."""
        means, chol = self.gaussian.params_from_rows(rows, hyper.gaussian)
        return StudentTParams(means, chol, jnp.full(rows.shape[:1], hyper.dof, means.dtype))

    def initial_params(self, key, chunks, n_components: int, hyper: StudentTHyper):
        """The Gaussian's (hmmlearn's) init, with the initial degrees of freedom."""
        means, chol = self.gaussian.initial_params(key, chunks, n_components, hyper.gaussian)
        return StudentTParams(means, chol, jnp.full((n_components,), hyper.dof, means.dtype))

    def where_components(self, keep, on_true, on_false) -> StudentTParams:
        means, chol = self.gaussian.where_components(
            keep, self._gaussian_params(on_true), self._gaussian_params(on_false)
        )
        dof = jnp.where(keep, on_true.degrees_of_freedom, on_false.degrees_of_freedom)
        return StudentTParams(means, chol, dof)

    def take_components(self, params: StudentTParams, index) -> StudentTParams:
        means, chol = self.gaussian.take_components(self._gaussian_params(params), index)
        return StudentTParams(means, chol, params.degrees_of_freedom[index])

    def unconstrain(self, params: StudentTParams) -> StudentTParams:
        """The Gaussian part as :meth:`Gaussian.unconstrain`; the log degrees of freedom."""
        free = self.gaussian.unconstrain(self._gaussian_params(params))
        return StudentTParams(*free, jnp.log(params.degrees_of_freedom))

    def constrain(self, values: StudentTParams) -> StudentTParams:
        """Inverse of :meth:`unconstrain`."""
        part = self.gaussian.constrain(self._gaussian_params(values))
        return StudentTParams(*part, jnp.exp(values.degrees_of_freedom))

    def to_layout(self, params: StudentTParams) -> dict[str, Any]:
        """``means``, ``covariances`` (the scale matrices, not the covariances
        ``ν/(ν-2) Σ``), ``precisions``, ``precisions_cholesky`` in scikit-learn's
        layout, and ``degrees_of_freedom`` (numpy arrays)."""
        layout = self.gaussian.to_layout(self._gaussian_params(params))
        layout["degrees_of_freedom"] = jax.device_get(params.degrees_of_freedom)
        return layout

    def from_layout(
        self, dtype, *, means, degrees_of_freedom, covariances=None, precisions_cholesky=None
    ) -> StudentTParams:
        """Parameters from ``means``, ``degrees_of_freedom`` and either ``covariances``
        (scale matrices) or ``precisions_cholesky``."""
        means, chol = self.gaussian.from_layout(
            dtype, means=means, covariances=covariances, precisions_cholesky=precisions_cholesky
        )
        return StudentTParams(means, chol, jnp.asarray(degrees_of_freedom, dtype))


def student_t(
    covariance_type: str = "full",
    reg_covar: float = 1e-6,
    *,
    dof: float = 5.0,
    fix_dof: bool = False,
    dof_min: float = 1.0,
    dof_max: float = 200.0,
) -> StudentT:
    """Student-t component family; see :class:`StudentT`."""
    return StudentT(
        covariance_type=covariance_type,
        reg_covar=reg_covar,
        dof=dof,
        fix_dof=fix_dof,
        dof_min=dof_min,
        dof_max=dof_max,
    )

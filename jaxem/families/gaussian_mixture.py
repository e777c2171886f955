"""Components that are themselves mixtures of ``M`` Gaussians (hmmlearn's GMMHMM emissions).

Component (state) ``k`` has sub-component weights ``w_k`` and ``M`` Gaussians:

    log p_k(x) = log Σ_m w_km N(x | μ_km, Σ_km).

EM adds the sub-component as a second latent variable: the E-step splits every
row's responsibility ``r_k`` over the sub-components in proportion to
``w_km N(x | μ_km, Σ_km)`` (the inner E-step, in :meth:`GMM.statistics`), and the
M-step is the Gaussian M-step of each component's ``M`` sub-components under those
weights, plus the weights' (Dirichlet MAP) update. Everything Gaussian comes from
:class:`jaxem.families.Gaussian` (``exact``), mapped over the components: whitened
log-densities, statistics merged by Chan, Golub and LeVeque's update, the
maximum-likelihood and MAP M-steps and the four covariance types, where ``tied``
means one covariance per component shared by its sub-components (hmmlearn's).

A mixture of such components is valid (if not identifiable: any split of the
sub-components between components fits equally); its use is the HMM.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxem import seeding
from jaxem.contract import Chunks, Family
from jaxem.families.gaussian import (
    COVARIANCE_TYPES,
    KMEANS_MAX_ITER,
    KMEANS_TOL,
    Gaussian,
    GaussianParams,
    GaussianPriorHyper,
    GaussianStats,
)

__all__ = ["GMM", "GMMParams", "GMMHyper", "gmm", "hmmlearn_covariance_prior"]


class GMMParams(NamedTuple):
    """Parameters of ``K`` components of ``M`` Gaussians each.

    Attributes
    ----------
    log_weights : (K, M) log sub-component weights
    means : (K, M, D)
    precisions_cholesky : the Gaussian layout per component: (K, M, D, D) full,
        (K, D, D) tied (one per component), (K, M, D) diag, (K, M) spherical
    """

    log_weights: jax.Array
    means: jax.Array
    precisions_cholesky: jax.Array


class GMMHyper(NamedTuple):
    """The Gaussian part's hyperparameters and the Dirichlet concentration of the
    sub-component weights."""

    gaussian: Any
    weights_prior: jax.Array


def _hash_uniform(x):
    """A number in [0, 1) per row from its values alone (a fixed pseudo-random hash):
    the same wherever and in whatever chunk the row is."""
    x = jnp.where(jnp.isfinite(x), x, 0)
    angle = x @ jnp.linspace(12.9898, 78.233, x.shape[-1], dtype=x.dtype) + 0.5
    value = jnp.sin(angle) * 43758.5453
    return value - jnp.floor(value)


@dataclasses.dataclass(frozen=True)
class GMM(Family):
    """Components that are mixtures of ``n_mix`` Gaussians (GMM emissions).

    Parameters
    ----------
    n_mix : int
        Gaussians per component.
    covariance_type : {"full", "tied", "diag", "spherical"}
        As :class:`Gaussian`'s, per sub-component; ``"tied"``: one covariance per
        component, shared by its sub-components (hmmlearn's GMMHMM).
    reg_covar : float
        Added to the diagonal of every covariance.
    map_prior : bool
        Use :meth:`Gaussian.map_m_step` with the priors below (``means_prior``,
        ``means_weight``, ``covars_prior``, ``covars_weight``, in
        :class:`Gaussian`'s parametrisation); False: maximum likelihood.
    weights_prior : float or array (M,)
        Dirichlet concentration of every component's sub-component weights (1:
        maximum likelihood).
    init_covar : float
        Added to the diagonal of the data covariance that initialises every
        covariance (hmmlearn's ``min_covar``).
    previous_means_scatter : bool
        hmmlearn's GMMHMM M-step: in an HMM, the covariances are the scatter about
        the E-step's means (not the new ones) over the weight; the means and weights
        are EM's. False (default): EM's M-step (covariances about the new means).

    Numeric fields are excluded from equality (changing them does not recompile).

    Notes
    -----
    A component is not of exponential-family form (its log-density is a
    log-sum-exp): :meth:`log_densities` and :meth:`statistics` are overridden,
    :meth:`features` and :meth:`log_base_measure` are a sub-component's (the
    complete-data Gaussian's), and :meth:`natural_parameters` is refused.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import jaxem
    >>> family = jaxem.gmm(2, "diag")
    >>> params = family.from_layout(jnp.float32, weights=[[0.5, 0.5]],
    ...                             means=[[[-1.0], [1.0]]], covariances=[[[1.0], [1.0]]])
    >>> # 0.5 N(0 | -1, 1) + 0.5 N(0 | 1, 1) = N(1 | 0, 1): log 0.24197 = -1.4189
    >>> print(jaxem.families.log_densities(family, params, jnp.zeros((1, 1))).round(4))
    [[-1.4189]]
    """

    n_mix: int = 1
    covariance_type: str = "diag"
    reg_covar: float = dataclasses.field(default=1e-6, compare=False)
    map_prior: bool = False
    weights_prior: float = dataclasses.field(default=1.0, compare=False)
    means_prior: float = dataclasses.field(default=0.0, compare=False)
    means_weight: float = dataclasses.field(default=0.0, compare=False)
    covars_prior: float = dataclasses.field(default=0.0, compare=False)
    covars_weight: float = dataclasses.field(default=0.0, compare=False)
    init_covar: float = dataclasses.field(default=1e-3, compare=False)
    previous_means_scatter: bool = False

    update_letters: ClassVar[str] = "wmc"

    def __post_init__(self):
        if not isinstance(self.n_mix, (int, np.integer)) or self.n_mix < 1:
            raise ValueError(f"n_mix must be a positive int, got {self.n_mix!r}.")
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {COVARIANCE_TYPES}, got {self.covariance_type!r}."
            )

    @property
    def gaussian(self) -> Gaussian:
        """The Gaussian family of one component's ``n_mix`` sub-components (exact)."""
        return Gaussian(
            covariance_type=self.covariance_type,
            reg_covar=self.reg_covar,
            map_prior=self.map_prior,
            means_prior=self.means_prior,
            means_weight=self.means_weight,
            covars_prior=self.covars_prior,
            covars_weight=self.covars_weight,
            init_covar=self.init_covar,
            exact=True,
        )

    @staticmethod
    def _components(params: GMMParams) -> GaussianParams:
        """The sub-components' Gaussian parameters, with a leading component axis."""
        return GaussianParams(params.means, params.precisions_cholesky)

    # -- contract ---------------------------------------------------------------------------
    def hyper(self, dtype) -> GMMHyper:
        return GMMHyper(self.gaussian.hyper(dtype), np.asarray(self.weights_prior, dtype))

    def check_data(self, x) -> None:
        """Raise ``ValueError`` unless ``x`` is 2-D, real and finite (the Gaussian's)."""
        self.gaussian.check_data(x)

    def features(self, x):
        return self.gaussian.features(x)

    def log_base_measure(self, x):
        return self.gaussian.log_base_measure(x)

    def natural_parameters(self, params: GMMParams):
        raise NotImplementedError(
            "A Gaussian-mixture component is not of exponential-family form (its "
            "log-density is a log-sum-exp over sub-components): use log_densities."
        )

    def sub_log_densities(self, params: GMMParams, x):
        """``(n, K, M)`` log of ``w_km N(x | μ_km, Σ_km)`` for every row."""
        per_component = jax.vmap(self.gaussian.log_densities, in_axes=(0, None))(
            self._components(params), x
        )  # (K, n, M)
        return jnp.swapaxes(per_component + params.log_weights[:, None, :], 0, 1)

    def log_densities(self, params: GMMParams, x):
        """``(n, K)``: the log-sum-exp of :meth:`sub_log_densities` over sub-components."""
        return jax.nn.logsumexp(self.sub_log_densities(params, x), axis=-1)

    def statistics(self, params: GMMParams | None, x, resp) -> GaussianStats:
        """Per component, the Gaussian statistics of its sub-components (leading ``K``
        axis) under ``resp`` split by the inner E-step. At initialisation (``params``
        None) there is nothing to split by: every row gives twice the share to one
        sub-component picked by a fixed hash of its values, so the sub-components
        start apart (equal shares would keep them equal for ever)."""
        n_mix = self.n_mix
        x = x.astype(resp.dtype)
        if params is None:
            pick = jnp.floor(_hash_uniform(x) * n_mix).astype(jnp.int32)
            inner = (1 + jax.nn.one_hot(pick, n_mix, dtype=resp.dtype)) / (n_mix + 1)
            inner = jnp.broadcast_to(inner[:, None, :], resp.shape + (n_mix,))
        else:
            inner = jax.nn.softmax(self.sub_log_densities(params, x).astype(resp.dtype), -1)
        # Rows of weight 0 (padding, which may hold anything) contribute nothing.
        weights = jnp.where(resp[..., None] > 0, resp[..., None] * inner, 0)  # (n, K, M)
        x = jnp.where(jnp.any(resp > 0, axis=1, keepdims=True), x, 0)
        return jax.vmap(self.gaussian.statistics, in_axes=(None, None, 1))(None, x, weights)

    def combine_stats(self, a: GaussianStats, b: GaussianStats) -> GaussianStats:
        return jax.vmap(self.gaussian.combine_stats)(a, b)

    def scale_stats(self, stats: GaussianStats, factor) -> GaussianStats:
        return self.gaussian.scale_stats(stats, factor)

    def _log_weights(self, sub_counts, hyper: GMMHyper):
        """hmmlearn's weights: ``(N_km + α - 1) / (N_k + Σ_m (α - 1))``, clipped at 0;
        a component without weight keeps uniform weights."""
        pseudo = jnp.maximum(sub_counts + hyper.weights_prior - 1, 0)
        total = pseudo.sum(-1, keepdims=True)
        weights = jnp.where(total > 0, pseudo / jnp.where(total > 0, total, 1), 1 / self.n_mix)
        return jnp.log(weights)

    def m_step(self, stats: GaussianStats, counts, hyper: GMMHyper) -> GMMParams:
        del counts  # the sub-components' weights are in the statistics
        components = jax.vmap(self.gaussian.m_step, in_axes=(0, 0, None))(
            stats, stats.weight, hyper.gaussian
        )
        return GMMParams(self._log_weights(stats.weight, hyper), *components)

    def keep_fixed(self, old, new, update: str, stats, counts, hyper) -> GMMParams:
        """Weights, means and covariances from ``new`` by letter (``w``, ``m``, ``c``),
        else ``old``'s. Covariances updated with fixed means are re-estimated about the
        old means; with ``previous_means_scatter`` always about the E-step's means
        (hmmlearn's rule), with the prior's terms about the means kept."""
        means = new.means if "m" in update else old.means
        chol = old.precisions_cholesky
        if "c" in update:
            chol = new.precisions_cholesky
            if self.previous_means_scatter or "m" not in update:
                chol = jax.vmap(self._covariances_about, in_axes=(0, 0, 0, None))(
                    stats, means, old.means, hyper.gaussian
                )
        log_weights = new.log_weights if "w" in update else old.log_weights
        return GMMParams(log_weights, means, chol)

    def _covariances_about(self, stats: GaussianStats, means, centres, hyper):
        """One component's covariance factors: the scatter about ``centres`` over the
        weight (the Gaussian's M-step, prior terms about ``means``)."""
        gaussian = self.gaussian
        about = GaussianStats(
            stats.weight, means, gaussian._scatter_about(stats, stats.weight, centres)
        )
        if isinstance(hyper, GaussianPriorHyper):
            return gaussian.map_m_step(about, stats.weight, hyper, means=means)[1]
        return gaussian.m_step(about, stats.weight, hyper)[1]

    def log_prior(self, params: GMMParams, hyper: GMMHyper, active):
        """The Gaussian's prior per component, plus the weights' Dirichlet
        ``Σ (α - 1) log w``, over the ``active`` components."""
        every = jnp.ones((self.n_mix,), bool)
        gaussian = jax.vmap(self.gaussian.log_prior, in_axes=(0, None, None))(
            self._components(params), hyper.gaussian, every
        )
        weights = jnp.sum(
            (hyper.weights_prior - 1) * jnp.maximum(params.log_weights, -1e30), axis=-1
        )
        return jnp.sum(jnp.where(active, gaussian + weights, 0.0))

    def n_parameters(self, n_components: int, n_features: int) -> int:
        per_component = self.gaussian.n_parameters(self.n_mix, n_features) + self.n_mix - 1
        return n_components * per_component

    def sample(self, key, params: GMMParams, labels):
        pick_key, draw_key = jax.random.split(key)
        subs = jax.random.categorical(pick_key, params.log_weights[labels])
        keys = jax.random.split(draw_key, labels.shape[0])

        def one(key, label, sub):
            component = jax.tree.map(lambda leaf: leaf[label], self._components(params))
            return self.gaussian.sample(key, component, sub[None])[0]

        return jax.vmap(one)(keys, labels, subs)

    # -- optional hooks -----------------------------------------------------------------------
    def seeding_points(self, x):
        return self.gaussian.seeding_points(x)

    def seeding_key(self):
        return self.gaussian.seeding_key()

    def params_from_rows(self, rows, hyper: GMMHyper) -> GMMParams:
        """Component ``k``'s sub-components all at ``rows[k]`` (the Gaussian's one-point
        fit), equal weights. They start equal, so stay equal under EM: for a mixture
        of these components prefer the inits that go through :meth:`statistics`."""
        means, chol = self.gaussian.params_from_rows(rows, hyper.gaussian)
        return self._tiled(means, chol, rows.shape[0])

    def _tiled(self, means, chol, n_components: int) -> GMMParams:
        """Every component's sub-components copies of the Gaussian ``(means, chol)``
        of ``n_components`` components (a tied ``chol`` is shared by all)."""
        n_mix = self.n_mix
        means = jnp.broadcast_to(means[:, None], (n_components, n_mix) + means.shape[1:])
        if self.covariance_type == "tied":
            chol = jnp.broadcast_to(chol, (n_components,) + chol.shape)
        else:
            chol = jnp.broadcast_to(chol[:, None], (n_components, n_mix) + chol.shape[1:])
        log_weights = jnp.full((n_components, n_mix), -jnp.log(n_mix), means.dtype)
        return GMMParams(log_weights, means, chol)

    def initial_params(self, key, chunks: Chunks, n_components: int, hyper: GMMHyper):
        """hmmlearn's GMMHMM init: k-means of the rows into the components, k-means of
        each component's rows into its sub-components (a component with fewer rows than
        ``n_mix``: draws about the centre of the components' centres, with the data's
        per-feature spread), equal weights, every covariance the data covariance plus
        ``init_covar`` on its diagonal."""
        state_key, sub_key, draw_key = jax.random.split(key, 3)
        dtype = chunks.weights.dtype
        centres, chol = self.gaussian.initial_params(
            state_key, chunks, n_components, hyper.gaussian
        )
        points = Chunks(jax.vmap(self.seeding_points)(chunks.x).astype(dtype), chunks.weights)
        labels = jax.vmap(lambda x: seeding.nearest_centers(x, centres)[0])(points.x)
        n_mix = self.n_mix

        def sub_means(key, k):
            weights = jnp.where(labels == k, points.weights, 0)
            mine = Chunks(points.x, weights)
            seeds, _ = seeding.kmeans_plusplus_chunked(key, mine, n_mix)
            means = seeding.lloyd(seeds, mine, max_iter=KMEANS_MAX_ITER, tol=KMEANS_TOL)
            return means, jnp.sum(weights > 0)

        keys = jax.random.split(sub_key, n_components)
        means, n_rows = jax.vmap(sub_means)(keys, jnp.arange(n_components))
        # hmmlearn's fallback for a component with too few rows.
        spread = jnp.sqrt(jnp.diagonal(self._data_covariance(chol)))
        draws = jnp.mean(centres, 0) + spread * jax.random.normal(draw_key, means.shape, dtype)
        means = jnp.where((n_rows >= n_mix)[:, None, None], means, draws)
        tiled = self._tiled(centres, chol, n_components)
        return tiled._replace(means=means.astype(dtype))

    def _data_covariance(self, chol):
        """The full ``(D, D)`` data covariance of the Gaussian init's factors."""
        layout = self.gaussian.covariances(GaussianParams(None, chol))
        first = layout if self.covariance_type == "tied" else layout[0]
        if self.covariance_type == "diag":
            return jnp.diag(first)
        if self.covariance_type == "spherical":
            # The spherical init holds the mean variance only.
            return first * jnp.eye(1, dtype=first.dtype)
        return first

    # -- hmmlearn's GMMHMM layouts on the host (numpy; not the contract) ----------------------
    def layout_shapes(self, n_components: int, n_features: int) -> dict[str, tuple]:
        """Shapes of ``weights``, ``means`` and ``covariances`` in :meth:`to_layout`."""
        n_mix = self.n_mix
        return {
            "weights": (n_components, n_mix),
            "means": (n_components, n_mix, n_features),
            "covariances": {
                "spherical": (n_components, n_mix),
                "diag": (n_components, n_mix, n_features),
                "full": (n_components, n_mix, n_features, n_features),
                "tied": (n_components, n_features, n_features),
            }[self.covariance_type],
        }

    def unit_covariances(self, n_components: int, n_features: int) -> np.ndarray:
        """Identity covariances in the layout of :meth:`to_layout`."""
        shape = self.layout_shapes(n_components, n_features)["covariances"]
        if self.covariance_type in ("full", "tied"):
            return np.broadcast_to(np.eye(n_features), shape)
        return np.ones(shape)

    def to_layout(self, params: GMMParams) -> dict[str, Any]:
        """``weights`` (K, M), ``means`` (K, M, D) and ``covariances`` in hmmlearn's
        GMMHMM layout: (K, M, D, D) full, (K, D, D) tied, (K, M, D) diag, (K, M)
        spherical (numpy arrays)."""
        covariances = jax.vmap(self.gaussian.covariances)(self._components(params))
        return jax.device_get(
            {
                "weights": jnp.exp(params.log_weights),
                "means": params.means,
                "covariances": covariances,
            }
        )

    def from_layout(self, dtype, *, weights, means, covariances) -> GMMParams:
        """Parameters from ``weights``, ``means`` and ``covariances`` in the layout of
        :meth:`to_layout`."""
        means = jnp.asarray(means, dtype)
        components = jax.vmap(self.gaussian.params_from_covariances)(
            means, jnp.asarray(covariances, dtype)
        )
        weights = jnp.asarray(weights, dtype)
        log_weights = jnp.log(jnp.maximum(weights, jnp.finfo(dtype).tiny))
        return GMMParams(log_weights, *components)


def hmmlearn_covariance_prior(
    covariance_type: str, n_mix: int, n_features: int, covars_prior=None, covars_weight=None
):
    """hmmlearn's GMMHMM covariance priors (None: its defaults per type) as
    ``(covars_prior, covars_weight)`` of :meth:`Gaussian.map_m_step`, whose M-step
    then equals hmmlearn's.

    hmmlearn divides by ``N + ν + D + 2`` (full), ``N + M + ν + D + 1`` (tied, the
    state's weight), ``N + 2α + 3`` (diag: α = ``covars_prior``, β = ``covars_weight``,
    numerator ``2β + ...``) and ``D (N + 1) + 2α + 2`` (spherical); the Gaussian's
    M-step by ``max(ν' - D, 0) + N`` (full, tied) and ``max(ν' - 1, 0) + N`` (diag;
    times ``D`` for spherical, whose prior is summed over the features).

    >>> prior, weight = hmmlearn_covariance_prior("full", 2, 3)
    >>> print(prior, weight)  # hmmlearn's default: ν' = D, maximum likelihood
    0.0 3.0
    """
    d, n_mix = n_features, n_mix
    if covariance_type in ("full", "tied"):
        prior = 0.0 if covars_prior is None else covars_prior
        if covariance_type == "full":
            weight = -(d + 2.0) if covars_weight is None else covars_weight
            return prior, np.asarray(weight, np.float64) + 2 * d + 2
        weight = -(n_mix + d + 1.0) if covars_weight is None else covars_weight
        return prior, np.asarray(weight, np.float64) + n_mix + 2 * d + 1
    alpha = -1.5 if covariance_type == "diag" else -(n_mix + 2.0) / 2.0
    alpha = np.asarray(alpha if covars_prior is None else covars_prior, np.float64)
    beta = np.asarray(0.0 if covars_weight is None else covars_weight, np.float64)
    if covariance_type == "diag":
        return 2 * beta, 2 * alpha + 4
    return 2 * beta / d, 2 + (2 * alpha + 2) / d


def gmm(
    n_mix: int = 1,
    covariance_type: str = "diag",
    reg_covar: float = 1e-6,
    **fields,
) -> GMM:
    """Gaussian-mixture component family; see :class:`GMM` (``fields``: its other
    fields, e.g. ``map_prior=True, covars_prior=...``)."""
    return GMM(n_mix=n_mix, covariance_type=covariance_type, reg_covar=reg_covar, **fields)

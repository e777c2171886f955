"""Finite mixtures over any component family.

    p(x) = Σ_k π_k p_k(x)

The E-step computes log-responsibilities in log space and returns the
additive statistics ``(Σ r_k, Σ r_k φ(x))``; the M-step sets ``π`` from the
counts and hands the feature sums to the family.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxem import _iterate, ops
from jaxem.contract import Chunks, Family, Model, Seeding, check_assignment
from jaxem.families.gaussian import WishartPrior
from jaxem.seeding import (
    kmeans_plusplus_chunked,
    lloyd,
    nearest_centers,
    random_rows,
)

__all__ = [
    "Mixture",
    "MixtureParams",
    "MixtureStats",
    "MixtureHyper",
    "LabelledRows",
    "MixtureSeeding",
    "mixture",
    "INIT_METHODS",
    "BayesianMixture",
    "BayesianMixtureParams",
    "BayesianMixtureStats",
    "BayesianMixtureHyper",
    "bayesian_mixture",
    "WEIGHT_PRIOR_TYPES",
]

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")
WEIGHT_PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")


class MixtureParams(NamedTuple):
    """Log mixing proportions ``(K,)`` and the family's component parameters."""

    log_weights: jax.Array
    components: Any


class MixtureStats(NamedTuple):
    """Responsibility sums ``(K,)`` and the family's weighted statistics
    (:meth:`~jaxem.contract.Family.statistics`: by default the feature sums ``(K, F)``)."""

    counts: jax.Array
    emission_stats: Any


class MixtureHyper(NamedTuple):
    """Numeric hyperparameters: the family's, the k-means init tolerance, the
    number of components in use (the rest of ``max_components`` is padding), and the
    Dirichlet concentration on the mixing weights (1: none)."""

    family: Any
    kmeans_tol: jax.Array
    n_active: jax.Array
    weights_prior: jax.Array


class LabelledRows(NamedTuple):
    """Rows with per-row log prior probabilities over the components (semi-supervised
    EM): the data a :class:`Mixture` takes in place of plain rows.

    The E-step adds ``log_prior`` to the log-joint, so row ``n``'s responsibilities
    are ``∝ q_nk π_k p_k(x_n)`` and EM maximises ``Σ_n log Σ_k q_nk π_k p_k(x_n)``.
    A labelled row has ``log_prior`` 0 at its component and ``-inf`` elsewhere (it
    keeps its label with probability one); a row without information has 0
    everywhere (Nigam et al.'s semi-supervised log-likelihood).

    Attributes
    ----------
    x : (n, n_features) the rows.
    log_prior : (n, max_components) floating, ``log q``; ``-inf`` allowed.

    Examples
    --------
    >>> import jax, numpy as np
    >>> import jaxem
    >>> X = np.repeat([[0.0], [4.0]], 20, axis=0) + np.random.default_rng(0).normal(size=(40, 1))
    >>> log_prior = np.zeros((40, 2))
    >>> log_prior[0] = [-np.inf, 0.0]  # row 0 (of the cluster at 0) is in component 1
    >>> model = jaxem.mixture(jaxem.gaussian("diag"), 2)
    >>> result = jaxem.fit(model, jaxem.LabelledRows(X, log_prior), key=jax.random.key(0))
    >>> means = np.asarray(result.params.components.means[:, 0])
    >>> bool(abs(means[0] - 4) < 0.5 and abs(means[1]) < 0.5)
    True
    """

    x: Any
    log_prior: jax.Array


@dataclasses.dataclass(frozen=True)
class Mixture(Model):
    """Mixture of ``n_components`` components of one family.

    Parameters
    ----------
    family : Family
        Component family, e.g. ``jaxem.gaussian("full")``.
    n_components : int
        Number of components.
    init_method : {"kmeans", "k-means++", "random", "random_from_data"}
        Initialisation, with scikit-learn's meanings: responsibilities from a
        k-means fit (k-means++ seeds then Lloyd), one-hot responsibilities on the
        k-means++ seeds or on random distinct rows, or uniform random
        responsibilities. All run on the device, batched over restarts.
    kmeans_max_iter : int
        Lloyd iterations cap of the "kmeans" init (scikit-learn's KMeans default).
    weights_prior : float
        Dirichlet concentration ``α >= 1`` on the mixing weights (MAP EM): the
        M-step adds ``α - 1`` pseudo-counts to every component, ``π_k = (n_k + α - 1)
        / (n + K (α - 1))``, and the monitored objective gains ``(α - 1) Σ log π_k``.
        1 (default): maximum likelihood. Excluded from equality (no recompile).
    max_components : int, optional
        Size of the component arrays (default ``n_components``). Components past
        ``n_components`` are padding: weight 0 (``log_weights = -inf``), they win no
        row and copy component 0's parameters. Models that differ only in
        ``n_components`` up to ``max_components`` are equal and share one compiled
        program: ``n_components`` reaches it as an array through :meth:`hyper`.
        :func:`jaxem.fit` trims the padding from its result.
    assignment : {"soft", "hard", "stochastic"}
        How the E-step assigns rows to components. ``"soft"`` (default): posterior
        probabilities, EM; the monitored objective is the log-likelihood.
        ``"hard"``: every row to its most probable component (classification EM,
        Celeux and Govaert 1992; ties to the lowest index); the monitored objective
        is the classification log-likelihood ``Σ_i max_k log π_k p_k(x_i)``, which
        never decreases, and a restart stops when it changes by less than ``tol``
        (in practice when no row changes component). ``"stochastic"``: every row to
        a component drawn from its posterior (stochastic EM, Celeux and Diebolt
        1985), from keys the engine derives from the fit's key per restart,
        iteration and row; the log-likelihood it monitors does not converge, so
        every restart runs ``max_iter`` iterations and the result is the M-step of
        the statistics averaged over the second half of them, with its
        log-likelihood (see :meth:`jaxem.contract.Model.stochastic`).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import jaxem
    >>> X = jnp.concatenate([jnp.zeros((50, 1)), jnp.ones((50, 1)) * 5.0])
    >>> X = X + jax.random.normal(jax.random.key(0), X.shape) * 0.1
    >>> model = jaxem.mixture(jaxem.gaussian("diag"), n_components=2)
    >>> result = jaxem.fit(model, X, key=jax.random.key(1), n_restarts=4)
    >>> print(jnp.sort(result.params.components.means[:, 0]).round(1))
    [0. 5.]
    """

    family: Family
    n_components: int = dataclasses.field(compare=False)
    init_method: str = "kmeans"
    kmeans_max_iter: int = 300
    max_components: int | None = None
    weights_prior: float = dataclasses.field(default=1.0, compare=False)
    assignment: str = "soft"

    outputs: ClassVar[tuple[str, ...]] = (
        "log_prob",
        "predict",
        "predict_proba",
        "log_responsibilities",
        "entropy",
        "impute",
    )

    def __post_init__(self):
        if not isinstance(self.n_components, int) or self.n_components < 1:
            raise ValueError(f"n_components must be a positive int, got {self.n_components!r}.")
        if self.max_components is None:
            object.__setattr__(self, "max_components", self.n_components)
        if not isinstance(self.max_components, int) or self.max_components < self.n_components:
            raise ValueError(
                f"max_components must be an int >= n_components={self.n_components}, "
                f"got {self.max_components!r}."
            )
        if not (np.ndim(self.weights_prior) == 0 and self.weights_prior >= 1):
            raise ValueError(
                "weights_prior (the Dirichlet concentration on the mixing weights) must be "
                f"a number >= 1, got {self.weights_prior!r}."
            )
        if self.init_method not in INIT_METHODS:
            raise ValueError(f"init must be one of {INIT_METHODS}, got {self.init_method!r}.")
        check_assignment(self.assignment)

    # -- contract ---------------------------------------------------------------------------
    def hyper(self, dtype) -> MixtureHyper:
        return MixtureHyper(
            self.family.hyper(dtype),
            np.asarray(1e-4, dtype),
            np.asarray(self.n_components, np.int32),
            np.asarray(self.weights_prior, dtype),
        )

    def active(self, hyper: MixtureHyper):
        """``(max_components,)`` True for the components in use."""
        return jnp.arange(self.max_components) < hyper.n_active

    def e_step(self, params: MixtureParams, x, weights, hyper):
        """Soft or hard E-step; for ``assignment="stochastic"`` the soft one (the
        expectation of the drawn statistics)."""
        return self.e_step_with_keys(None, params, x, weights, hyper)

    def e_step_with_keys(self, keys, params: MixtureParams, x, weights, hyper):
        """The E-step; with ``keys`` (one per row) and ``assignment="stochastic"``,
        every row goes to one component drawn from its posterior."""
        log_joint = self.log_joint(params, x)
        resp, objective = ops.softmax_and_logsumexp(log_joint, axis=1, scale=weights)
        rows = _rows(x)
        labels = None
        if self.assignment == "hard":
            labels = jnp.argmax(log_joint, axis=1)
            objective = jnp.max(log_joint, axis=1)  # the classification log-likelihood
        elif self.assignment == "stochastic" and keys is not None:
            labels = jax.vmap(jax.random.categorical)(keys, log_joint)
        if labels is not None:
            resp = jax.nn.one_hot(labels, self.max_components, dtype=resp.dtype)
            resp = resp * weights[:, None]
        stats = MixtureStats(resp.sum(0), self.family.statistics(params.components, rows, resp))
        # where() keeps 0 * -inf of padding rows from turning the sum into NaN.
        return stats, jnp.sum(jnp.where(weights > 0, weights * objective, 0.0))

    def stochastic(self) -> bool:
        return self.assignment == "stochastic"

    def m_step(self, stats: MixtureStats, params: MixtureParams, hyper) -> MixtureParams:
        active = self.active(hyper)
        # The Dirichlet prior's α - 1 pseudo-counts (0 without a prior: unchanged bits).
        counts = stats.counts + ops.tiny(stats.counts.dtype) + (hyper.weights_prior - 1)
        total = jnp.sum(jnp.where(active, counts, 0))
        components = self.family.m_step(stats.emission_stats, stats.counts, hyper.family)
        return MixtureParams(
            log_weights=jnp.where(active, jnp.log(counts / total), -jnp.inf),
            components=self._pad_components(components, active),
        )

    def log_prior(self, params: MixtureParams, hyper):
        """``(α - 1) Σ_k log π_k`` over the active components plus the family's prior."""
        active = self.active(hyper)
        pseudo = hyper.weights_prior - 1
        # Guarded: a weight of 0 without a prior must give 0, not 0 · -inf.
        dirichlet = jnp.sum(jnp.where(active & (pseudo != 0), pseudo * params.log_weights, 0.0))
        return dirichlet + self.family.log_prior(params.components, hyper.family, active)

    def combine_stats(self, a: MixtureStats, b: MixtureStats) -> MixtureStats:
        """Counts add; the family merges its own statistics."""
        return _combine(self.family, a, b)

    def scale_stats(self, stats: MixtureStats, factor) -> MixtureStats:
        """Counts scale; the family scales its own statistics."""
        return MixtureStats(
            stats.counts * factor, self.family.scale_stats(stats.emission_stats, factor)
        )

    def is_finite(self, params: MixtureParams):
        """Finite components; a log-weight may be ``-inf`` (a component of weight 0)."""
        log_weights = params.log_weights
        return ops.tree_all_finite(params.components) & jnp.all(
            ~jnp.isnan(log_weights) & (log_weights < jnp.inf)
        )

    def unconstrain(self, params: MixtureParams) -> MixtureParams:
        """Log-weights recentred over the components (padding stays ``-inf``) and the
        family's unconstrained components."""
        return MixtureParams(
            ops.centred_logs(params.log_weights), self.family.unconstrain(params.components)
        )

    def constrain(self, values: MixtureParams) -> MixtureParams:
        """Inverse of :meth:`unconstrain`."""
        return MixtureParams(
            ops.normalised_logs(values.log_weights), self.family.constrain(values.components)
        )

    def has_padding(self) -> bool:
        return self.n_components < self.max_components

    def trim(self, params: MixtureParams) -> MixtureParams:
        index = np.arange(self.n_components)
        return MixtureParams(
            params.log_weights[: self.n_components],
            self.family.take_components(params.components, index),
        )

    def pad(self, params: MixtureParams) -> MixtureParams:
        params = jax.tree.map(np.asarray, params)
        n_given = params.log_weights.shape[-1]
        index = np.arange(self.max_components)
        log_weights = np.pad(
            params.log_weights, (0, self.max_components - n_given), constant_values=-np.inf
        )
        components = self.family.take_components(
            params.components, np.where(index < n_given, index, 0)
        )
        return MixtureParams(log_weights, components)

    def _pad_components(self, components, active):
        """Padding components copy component 0: finite whenever it is."""
        index = jnp.where(active, jnp.arange(self.max_components), 0)
        return self.family.take_components(components, index)

    def seeding(self) -> MixtureSeeding | None:
        """The data-driven part of the init (k-means++, Lloyd, rows drawn), which
        depends on the family only through its seeding points; None for "random"."""
        if self.init_method == "random":
            return None
        return MixtureSeeding(
            self.family,
            self.family.seeding_key(),
            self.init_method,
            self.max_components,
            self.kmeans_max_iter,
        )

    def init(self, key, chunks: Chunks, hyper) -> MixtureParams:
        """One restart's initial parameters (see ``init_method``).

        With :class:`LabelledRows`, the seeds of components that have labelled rows
        are those rows' means (seeded k-means, Basu, Banerjee and Mooney 2002), and
        every row's initial responsibilities are the method's (one-hot on the
        nearest centre, or random) times its prior ``q``, renormalised (``q`` alone
        where they disagree): a labelled row starts in its component.
        """
        seeding = self.seeding()
        seeds = None if seeding is None else seeding.seed(key, chunks, hyper)
        return self.init_from_seeds(seeds, key, chunks, hyper)

    def init_from_seeds(self, seeds, key, chunks: Chunks, hyper) -> MixtureParams:
        """One restart's initial parameters from :class:`MixtureSeeding`'s seeds: seed
        rows' one-point fits, or the M-step from one-hot responsibilities on the
        nearest seed centre (random responsibilities for "random", ``seeds`` None)."""
        family, n_components = self.family, self.max_components
        active = self.active(hyper)
        dtype = chunks.weights.dtype
        labelled = isinstance(chunks.x, LabelledRows)
        rows = Chunks(_rows(chunks.x), chunks.weights)
        if _seeds_are_rows(self.init_method, labelled):
            # One-hot responsibilities on the seed rows only, as scikit-learn.
            index = jnp.where(active, seeds, seeds[0])
            seed_rows = _iterate.take_rows(rows, index)
            return self._params_from_seed_rows(seed_rows, hyper, dtype)

        if seeds is not None:
            centers = seeds

            def responsibilities(x_chunk, index):
                points = family.seeding_points(x_chunk).astype(dtype)
                labels, _ = nearest_centers(points, centers, active)
                return jax.nn.one_hot(labels, n_components, dtype=dtype)

        else:  # "random": uniform random responsibilities, normalised per row

            def responsibilities(x_chunk, index):
                # Keys per row: the draws do not depend on the chunking or devices.
                keys = _iterate.row_keys(key, index, x_chunk.shape[0])
                raw = jax.vmap(lambda k: jax.random.uniform(k, (n_components,), dtype))(keys)
                raw = jnp.where(active, raw, 0)
                return raw / raw.sum(axis=1, keepdims=True)

        def chunk_stats(chunk, _):
            x_chunk, w_chunk, index = chunk
            resp = responsibilities(_rows(x_chunk), index)
            if labelled:
                resp = _times_prior(resp, _row_prior(x_chunk.log_prior, active))
            resp = resp * w_chunk[:, None]
            return MixtureStats(resp.sum(0), family.statistics(None, _rows(x_chunk), resp))

        # Global chunk numbers, for the rows' keys of the "random" init.
        numbers = _iterate.chunk_indices(chunks.n_chunks)
        indexed = Chunks((chunks.x, chunks.weights, numbers), chunks.weights)
        stats = _iterate.chunked_sum(chunk_stats, indexed, partial(_combine, self.family))
        return self.m_step(stats, None, hyper)

    def _params_from_seed_rows(self, rows, hyper, dtype) -> MixtureParams:
        """Equal weights and the family's one-point fits to the seed rows."""
        active = self.active(hyper)
        log_weights = jnp.where(active, -jnp.log(hyper.n_active.astype(dtype)), -jnp.inf)
        return MixtureParams(log_weights, self.family.params_from_rows(rows, hyper.family))

    def log_prob(self, params: MixtureParams, x):
        """Per-row log-likelihood ``log p(x)``, shape ``(n,)``."""
        return jax.nn.logsumexp(self.log_joint(params, x), axis=1)

    def n_parameters(self, n_features: int) -> int:
        return self.family.n_parameters(self.n_components, n_features) + self.n_components - 1

    def row_width(self, x) -> int:
        return self.max_components * self.family.component_width(_rows(x))

    # -- derived quantities ------------------------------------------------------------------
    def log_joint(self, params: MixtureParams, x):
        """``(n, K)`` log of ``π_k p_k(x)`` (times ``q_nk`` for :class:`LabelledRows`)."""
        log_joint = self.family.log_densities(params.components, _rows(x)) + params.log_weights
        if isinstance(x, LabelledRows):
            log_joint = log_joint + x.log_prior.astype(log_joint.dtype)
        return log_joint

    def log_responsibilities(self, params: MixtureParams, x):
        """``(n, K)`` log posterior probability of each component."""
        log_joint = self.log_joint(params, x)
        return log_joint - jax.nn.logsumexp(log_joint, axis=1, keepdims=True)

    def entropy(self, params: MixtureParams, x):
        """Per-row entropy of the responsibilities, ``-Σ_k r_k log r_k`` (nats), the
        classification term of ICL."""
        log_resp = self.log_responsibilities(params, x)
        # Components of weight 0 (padding) have r = 0: 0 log 0 = 0, not NaN.
        terms = jnp.where(log_resp > -jnp.inf, jnp.exp(log_resp) * log_resp, 0.0)
        return -jnp.sum(terms, axis=1)

    def predict(self, params: MixtureParams, x):
        """Most probable component of every row."""
        return jnp.argmax(self.log_joint(params, x), axis=1)

    def predict_proba(self, params: MixtureParams, x):
        """``(n, K)`` posterior probability of each component."""
        return ops.softmax_and_logsumexp(self.log_joint(params, x), axis=1)[0]

    def impute(self, params: MixtureParams, x):
        """Rows with their missing entries (NaN) replaced by the conditional mean
        ``Σ_k p(k | x_o) E_k[x_m | x_o]``, the posterior taken on the observed
        coordinates; observed entries unchanged. Needs a family that takes missing
        entries (``jaxem.gaussian(..., missing=True)``); with others the rows come
        back as they are."""
        completed = self.family.impute(params.components, x)
        resp = self.predict_proba(params, x)
        filled = jnp.sum(resp[:, :, None] * completed, axis=1)
        # Observed entries exactly as given, whatever the rounding of the sum.
        return jnp.where(jnp.isnan(x), filled, x.astype(filled.dtype))

    def sample(self, key, params: MixtureParams, n_samples: int):
        """``(x, labels)``: ``n_samples`` draws and the components they came from."""
        label_key, draw_key = jax.random.split(key)
        labels = jax.random.categorical(label_key, params.log_weights, shape=(n_samples,))
        return self.family.sample(draw_key, params.components, labels), labels


def _seeds_are_rows(init_method: str, labelled: bool) -> bool:
    """Whether the seeds are row indices (one-hot responsibilities on those rows)
    rather than centres (one-hot on each row's nearest centre)."""
    return init_method in ("k-means++", "random_from_data") and not labelled


@dataclasses.dataclass(frozen=True)
class MixtureSeeding(Seeding):
    """A mixture's seeding (see :meth:`Mixture.seeding`): ``n_components`` seed rows
    (k-means++ or uniform draws, by index) or centres (k-means++ or drawn rows, then
    Lloyd's iterations for "kmeans"; with :class:`LabelledRows`, the means of labelled
    rows), in the family's seeding points.

    ``family`` only provides :meth:`~jaxem.contract.Family.seeding_points` and is not
    compared: ``points_key``, its ``seeding_key()``, stands for it, so mixtures of
    Gaussians of every covariance type share this program.
    """

    family: Family = dataclasses.field(compare=False, repr=False)
    points_key: Any
    init_method: str
    n_components: int
    kmeans_max_iter: int

    def seed(self, key, chunks: Chunks, hyper):
        """Seed row indices ``(K,)`` or centres ``(K, P)`` of one restart; ``hyper``
        is the mixture's (``kmeans_tol``, ``n_active``)."""
        family, n_components = self.family, self.n_components
        active = jnp.arange(n_components) < hyper.n_active
        dtype = chunks.weights.dtype
        labelled = isinstance(chunks.x, LabelledRows)
        rows = Chunks(_rows(chunks.x), chunks.weights)

        def points(rows):  # what distance-based seeding works on, chunk by chunk
            return family.seeding_points(rows).astype(dtype)

        if _seeds_are_rows(self.init_method, labelled):
            # Greedy k-means++ and Gumbel top-k draws pick rows one by one, so the first
            # n_components of max_components picks are the n_components picks.
            if self.init_method == "k-means++":
                return kmeans_plusplus_chunked(key, rows, n_components, points=points)[1]
            return random_rows(key, rows.weights, n_components)
        if self.init_method == "random_from_data":
            index = random_rows(key, rows.weights, n_components)
            seeds = points(_iterate.take_rows(rows, index))
        else:
            seeds, _ = kmeans_plusplus_chunked(key, rows, n_components, points=points)
        if labelled:
            seeds = self._labelled_seeds(seeds, chunks, points, active)
        centers = jnp.where(active[:, None], seeds, seeds[0])
        if self.init_method == "kmeans":
            centers = lloyd(
                centers,
                Chunks(jax.vmap(points)(rows.x), rows.weights),
                max_iter=self.kmeans_max_iter,
                tol=hyper.kmeans_tol,
                n_active=hyper.n_active,
            )
        return centers

    @staticmethod
    def _labelled_seeds(seeds, chunks: Chunks, points, active):
        """``seeds`` with those of components that have labelled rows replaced by their
        rows' mean (in seeding points), each row weighted by how much its prior
        exceeds the uniform one, ``max(q_nk - 1/K, 0)`` (0 for a row without
        information)."""

        def sums(x, weights):
            prior = _row_prior(x.log_prior, active)
            uniform = 1.0 / jnp.sum(active).astype(prior.dtype)
            excess = jnp.where(active, jnp.maximum(prior - uniform, 0.0), 0.0) * weights[:, None]
            return excess.sum(0), excess.T @ points(x.x)

        mass, total = _iterate.chunked_sum(sums, chunks)
        means = total / jnp.where(mass > 0, mass, 1.0)[:, None]
        return jnp.where((mass > 0)[:, None], means, seeds)


def _row_prior(log_prior, active):
    """``(n, K)`` per-row prior probabilities over the active components."""
    return ops.softmax_and_logsumexp(jnp.where(active, log_prior, -jnp.inf), axis=1)[0]


def _times_prior(resp, prior):
    """``resp · prior`` renormalised per row; ``prior`` alone where they disagree."""
    product = resp * prior
    total = product.sum(axis=1, keepdims=True)
    return jnp.where(total > 0, product / jnp.where(total > 0, total, 1.0), prior)


def _rows(x):
    """The rows of ``x``: plain rows, or those of :class:`LabelledRows`."""
    return x.x if isinstance(x, LabelledRows) else x


def _combine(family, a, b):
    """Mixture statistics of two chunks together (any extra leaves add up)."""
    merged = a._replace(
        counts=a.counts + b.counts,
        emission_stats=family.combine_stats(a.emission_stats, b.emission_stats),
    )
    extra = [name for name in a._fields if name not in ("counts", "emission_stats")]
    return merged._replace(**{name: getattr(a, name) + getattr(b, name) for name in extra})


# -- variational Bayesian mixtures ------------------------------------------------------------
class BayesianMixtureParams(NamedTuple):
    """Variational posterior of a Bayesian Gaussian mixture (one restart).

    Attributes
    ----------
    log_weights : (K,) expected log weights ``E[log π_k]`` (``-inf`` for padding).
    components : the family's parameters: posterior means and the Cholesky factors
        of the normalised precisions (scikit-learn's ``means_``,
        ``precisions_cholesky_``).
    mean_precision : (K,) ``β_k``, scale of the precision of the means.
    degrees_of_freedom : (K,) ``ν_k`` of the Wishart posteriors (tied: repeated).
    concentration : (K,) Dirichlet concentrations, or the first Beta parameters of
        the stick-breaking (Dirichlet process) posterior.
    concentration_rest : (K,) the second Beta parameters (Dirichlet process); zero
        for the Dirichlet distribution.
    """

    log_weights: jax.Array
    components: Any
    mean_precision: jax.Array
    degrees_of_freedom: jax.Array
    concentration: jax.Array
    concentration_rest: jax.Array


class BayesianMixtureStats(NamedTuple):
    """:class:`MixtureStats` plus ``entropy``, the sum over rows of the entropy of the
    responsibilities (its term of the lower bound)."""

    counts: jax.Array
    emission_stats: Any
    entropy: jax.Array


class BayesianMixtureHyper(NamedTuple):
    """:class:`MixtureHyper`'s fields (its ``weights_prior``, for MAP EM, is unused),
    the weights' concentration prior and the Gaussian-Wishart prior
    (:class:`jaxem.WishartPrior`)."""

    family: Any
    kmeans_tol: jax.Array
    n_active: jax.Array
    weights_prior: jax.Array
    weight_concentration_prior: jax.Array
    prior: WishartPrior


@dataclasses.dataclass(frozen=True)
class BayesianMixture(Mixture):
    """Gaussian mixture fitted by variational Bayes (scikit-learn's
    ``BayesianGaussianMixture``): variational EM on the mixture's statistics.

    The E-step weighs the expected log-densities under the Gaussian-Wishart posterior
    with the expected log weights; the M-step updates the posterior (Dirichlet or
    stick-breaking weights, Gaussian means, Wishart precisions) from the counts,
    means and scatters; the engine monitors scikit-learn's lower bound per row
    (:meth:`objective`), which never decreases.

    Parameters
    ----------
    family : Gaussian
        ``jaxem.gaussian(covariance_type, reg_covar)``: its covariance type and
        ``reg_covar`` are the model's.
    n_components, init_method, kmeans_max_iter, max_components
        As :class:`Mixture`.
    weight_concentration_prior_type : {"dirichlet_process", "dirichlet_distribution"}
    weight_concentration_prior : float
        ``γ`` (> 0).
    mean_precision_prior : float
        ``β₀`` (> 0).
    mean_prior : array (D,)
        ``m₀``, in the coordinates of the data the model is fitted on.
    degrees_of_freedom_prior : float
        ``ν₀`` (> D - 1).
    covariance_prior : array
        ``W₀⁻¹`` in the family's covariance layout.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import jaxem
    >>> X = jnp.concatenate([jnp.zeros((50, 1)), jnp.ones((50, 1)) * 5.0])
    >>> X = X + jax.random.normal(jax.random.key(0), X.shape) * 0.1
    >>> model = jaxem.bayesian_mixture(
    ...     jaxem.gaussian("diag"), 2, mean_prior=jnp.zeros(1), covariance_prior=jnp.ones(1)
    ... )
    >>> result = jaxem.fit(model, X, key=jax.random.key(1), n_restarts=2)
    >>> # Posterior means shrink towards the prior mean 0: 50 · 5 / (50 + 1) = 4.9.
    >>> print(jnp.sort(result.params.components.means[:, 0]).round(1))
    [0.  4.9]
    """

    weight_concentration_prior_type: str = "dirichlet_process"
    weight_concentration_prior: float = dataclasses.field(default=1.0, compare=False)
    mean_precision_prior: float = dataclasses.field(default=1.0, compare=False)
    mean_prior: Any = dataclasses.field(default=None, compare=False)
    degrees_of_freedom_prior: float = dataclasses.field(default=1.0, compare=False)
    covariance_prior: Any = dataclasses.field(default=None, compare=False)

    def __post_init__(self):
        super().__post_init__()
        if self.weight_concentration_prior_type not in WEIGHT_PRIOR_TYPES:
            raise ValueError(
                f"weight_concentration_prior_type must be one of {WEIGHT_PRIOR_TYPES}, "
                f"got {self.weight_concentration_prior_type!r}."
            )
        if self.mean_prior is None or self.covariance_prior is None:
            raise ValueError(
                "A Bayesian mixture needs mean_prior (n_features,) and covariance_prior "
                "(in the family's covariance layout); BayesianGaussianMixture computes "
                "scikit-learn's defaults from the data."
            )
        if self.weights_prior != 1:
            raise ValueError(
                "weights_prior (MAP EM's Dirichlet on the weights) does not apply to a "
                "Bayesian mixture: its prior on the weights is weight_concentration_prior."
            )
        if self.assignment != "soft":
            raise ValueError(
                f"A Bayesian mixture is fitted by variational EM (assignment='soft'); got "
                f"assignment={self.assignment!r}."
            )

    def hyper(self, dtype) -> BayesianMixtureHyper:
        base = super().hyper(dtype)
        prior = WishartPrior(
            *(
                np.asarray(value, dtype)
                for value in (
                    self.mean_precision_prior,
                    self.mean_prior,
                    self.degrees_of_freedom_prior,
                    self.covariance_prior,
                )
            ),
        )
        concentration = np.asarray(self.weight_concentration_prior, dtype)
        return BayesianMixtureHyper(*base, concentration, prior)

    def e_step(self, params: BayesianMixtureParams, x, weights, hyper):
        log_joint = self.log_joint(params, x)
        resp, log_norm = ops.softmax_and_logsumexp(log_joint, axis=1, scale=weights)
        log_resp = log_joint - log_norm[:, None]
        # 0 log 0 = 0 for components of no responsibility (padding, zero-weight rows).
        entropy = -jnp.sum(jnp.where(resp > 0, resp * log_resp, 0.0))
        stats = BayesianMixtureStats(
            resp.sum(0), self.family.statistics(params.components, x, resp), entropy
        )
        return stats, jnp.sum(jnp.where(weights > 0, weights * log_norm, 0.0))

    def m_step(self, stats, params, hyper) -> BayesianMixtureParams:
        active = self.active(hyper)
        counts = jnp.where(active, stats.counts, 0)
        components, mean_precision, dof = self.family.wishart_posterior(
            stats.emission_stats, counts, active, hyper.prior, hyper.family.reg_covar
        )
        nk = counts + ops.tiny(counts.dtype)
        prior = hyper.weight_concentration_prior
        if self.weight_concentration_prior_type == "dirichlet_process":
            # Stick breaking: Beta(1 + N_k, γ + Σ_{j>k} N_j), padding's N_j = 0.
            used = jnp.where(active, nk, 0)
            later = jnp.concatenate([jnp.cumsum(used[::-1])[-2::-1], jnp.zeros_like(used[:1])])
            concentration, rest = 1.0 + nk, prior + later
        else:
            concentration, rest = prior + nk, jnp.zeros_like(nk)
        log_weights = self.expected_log_weights(concentration, rest, active)
        index = jnp.where(active, jnp.arange(self.max_components), 0)
        return BayesianMixtureParams(
            log_weights,
            self._pad_components(components, active),
            mean_precision[index],
            dof[index],
            concentration[index],
            rest[index],
        )

    def expected_log_weights(self, concentration, rest, active):
        """``(K,)`` ``E[log π_k]`` under the weights' posterior (``-inf`` for padding)."""
        digamma = jax.scipy.special.digamma
        if self.weight_concentration_prior_type == "dirichlet_process":
            digamma_sum = digamma(concentration + rest)
            broken = digamma(rest) - digamma_sum
            before = jnp.concatenate([jnp.zeros_like(broken[:1]), jnp.cumsum(broken)[:-1]])
            log_weights = digamma(concentration) - digamma_sum + before
        else:
            total = jnp.sum(jnp.where(active, concentration, 0))
            log_weights = digamma(concentration) - digamma(total)
        return jnp.where(active, log_weights, -jnp.inf)

    def objective(self, stats, log_likelihood, new_params, hyper, total_weight):
        """scikit-learn's lower bound (its ``_compute_lower_bound``, constants dropped),
        a total over the rows as scikit-learn monitors it: the entropy of the E-step's
        responsibilities and the new posterior's terms."""
        del log_likelihood, total_weight
        active = self.active(hyper)
        params = new_params
        bound = stats.entropy + self.family.wishart_bound(
            params.components, params.mean_precision, params.degrees_of_freedom, active
        )
        special = jax.scipy.special
        if self.weight_concentration_prior_type == "dirichlet_process":
            log_beta = special.betaln(params.concentration, params.concentration_rest)
            log_norm_weight = -jnp.sum(jnp.where(active, log_beta, 0))
        else:
            concentration = jnp.where(active, params.concentration, 1.0)
            log_norm_weight = special.gammaln(
                jnp.sum(jnp.where(active, concentration, 0))
            ) - jnp.sum(jnp.where(active, special.gammaln(concentration), 0))
        return bound - log_norm_weight

    def _params_from_seed_rows(self, rows, hyper, dtype) -> BayesianMixtureParams:
        """The posterior from one-hot responsibilities on the seed rows, as scikit-learn."""
        resp = jnp.diag(self.active(hyper).astype(dtype))
        stats = MixtureStats(resp.sum(0), self.family.statistics(None, rows, resp))
        return self.m_step(stats, None, hyper)

    # Variational: its objective is a bound of the new parameters, not a likelihood to
    # extrapolate; SQUAREM refuses it.
    unconstrain = Model.unconstrain
    constrain = Model.constrain

    def is_finite(self, params: BayesianMixtureParams):
        rest = (params.mean_precision, params.degrees_of_freedom, params.concentration)
        return super().is_finite(params) & ops.tree_all_finite(rest)

    def trim(self, params: BayesianMixtureParams) -> BayesianMixtureParams:
        head = super().trim(MixtureParams(params.log_weights, params.components))
        cut = slice(0, self.n_components)
        return BayesianMixtureParams(*head, *(np.asarray(leaf)[..., cut] for leaf in params[2:]))

    def pad(self, params: BayesianMixtureParams) -> BayesianMixtureParams:
        head = super().pad(MixtureParams(params.log_weights, params.components))
        n_given = np.shape(params.log_weights)[-1]
        index = np.arange(self.max_components)
        index = np.where(index < n_given, index, 0)
        return BayesianMixtureParams(*head, *(np.asarray(leaf)[index] for leaf in params[2:]))

    def log_joint(self, params: BayesianMixtureParams, x):
        """``(n, K)`` expected log weights plus expected log-densities."""
        log_densities = self.family.expected_log_densities(
            params.components, params.mean_precision, params.degrees_of_freedom, x
        )
        return log_densities + params.log_weights

    def weights(self, params: BayesianMixtureParams):
        """``(K,)`` posterior mean weights (scikit-learn's ``weights_``)."""
        concentration, rest = params.concentration, params.concentration_rest
        if self.weight_concentration_prior_type == "dirichlet_process":
            total = concentration + rest
            kept = jnp.concatenate([jnp.ones_like(total[:1]), jnp.cumprod(rest / total)[:-1]])
            weights = concentration / total * kept
        else:
            weights = concentration
        weights = jnp.where(params.log_weights > -jnp.inf, weights, 0)
        return weights / jnp.sum(weights)

    def sample(self, key, params: BayesianMixtureParams, n_samples: int):
        """Draws from the mixture with the posterior mean weights and the components'
        normalised covariances, as scikit-learn's ``sample``."""
        label_key, draw_key = jax.random.split(key)
        log_weights = jnp.log(self.weights(params))
        labels = jax.random.categorical(label_key, log_weights, shape=(n_samples,))
        return self.family.sample(draw_key, params.components, labels), labels


def bayesian_mixture(
    family: Family,
    n_components: int,
    init: str = "kmeans",
    *,
    weight_concentration_prior_type: str = "dirichlet_process",
    weight_concentration_prior: float | None = None,
    mean_precision_prior: float = 1.0,
    mean_prior=None,
    degrees_of_freedom_prior: float | None = None,
    covariance_prior=None,
    max_components: int | None = None,
) -> BayesianMixture:
    """Variational Bayesian Gaussian mixture; see :class:`BayesianMixture`.

    ``weight_concentration_prior`` defaults to ``1 / n_components`` and
    ``degrees_of_freedom_prior`` to the number of features (that of ``mean_prior``),
    as in scikit-learn.
    """
    if mean_prior is not None and degrees_of_freedom_prior is None:
        degrees_of_freedom_prior = float(np.shape(mean_prior)[-1])
    return BayesianMixture(
        family=family,
        n_components=n_components,
        init_method=init,
        max_components=max_components,
        weight_concentration_prior_type=weight_concentration_prior_type,
        weight_concentration_prior=(
            1.0 / n_components if weight_concentration_prior is None else weight_concentration_prior
        ),
        mean_precision_prior=mean_precision_prior,
        mean_prior=mean_prior,
        degrees_of_freedom_prior=degrees_of_freedom_prior,
        covariance_prior=covariance_prior,
    )


def mixture(
    family: Family,
    n_components: int,
    init: str = "kmeans",
    *,
    max_components: int | None = None,
    weights_prior: float = 1.0,
    assignment: str = "soft",
) -> Mixture:
    """Mixture model over ``family``; see :class:`Mixture`."""
    return Mixture(
        family=family,
        n_components=n_components,
        init_method=init,
        max_components=max_components,
        weights_prior=weights_prior,
        assignment=assignment,
    )

"""Finite mixtures over any component family.

    p(x) = Σ_k π_k p_k(x)

The E-step computes log-responsibilities in log space and returns the
additive statistics ``(Σ r_k, Σ r_k φ(x))``; the M-step sets ``π`` from the
counts and hands the feature sums to the family.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxem import _iterate, ops
from jaxem.contract import Chunks, Family, Model
from jaxem.seeding import (
    kmeans_plusplus_chunked,
    lloyd,
    nearest_centers,
    random_rows,
)

__all__ = ["Mixture", "MixtureParams", "MixtureStats", "MixtureHyper", "mixture", "INIT_METHODS"]

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")


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
    """Numeric hyperparameters: the family's, the k-means init tolerance, and the
    number of components in use (the rest of ``max_components`` is padding)."""

    family: Any
    kmeans_tol: jax.Array
    n_active: jax.Array


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
    max_components : int, optional
        Size of the component arrays (default ``n_components``). Components past
        ``n_components`` are padding: weight 0 (``log_weights = -inf``), they win no
        row and copy component 0's parameters. Models that differ only in
        ``n_components`` up to ``max_components`` are equal and share one compiled
        program: ``n_components`` reaches it as an array through :meth:`hyper`.
        :func:`jaxem.fit` trims the padding from its result.

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
        if self.init_method not in INIT_METHODS:
            raise ValueError(f"init must be one of {INIT_METHODS}, got {self.init_method!r}.")

    # -- contract ---------------------------------------------------------------------------
    def hyper(self, dtype) -> MixtureHyper:
        return MixtureHyper(
            self.family.hyper(dtype),
            jnp.asarray(1e-4, dtype),
            jnp.asarray(self.n_components, jnp.int32),
        )

    def active(self, hyper: MixtureHyper):
        """``(max_components,)`` True for the components in use."""
        return jnp.arange(self.max_components) < hyper.n_active

    def e_step(self, params: MixtureParams, x, weights, hyper):
        log_joint = self.log_joint(params, x)
        resp, log_norm = ops.softmax_and_logsumexp(log_joint, axis=1, scale=weights)
        stats = MixtureStats(resp.sum(0), self.family.statistics(params.components, x, resp))
        # where() keeps 0 * -inf of padding rows from turning the sum into NaN.
        return stats, jnp.sum(jnp.where(weights > 0, weights * log_norm, 0.0))

    def m_step(self, stats: MixtureStats, params: MixtureParams, hyper) -> MixtureParams:
        active = self.active(hyper)
        counts = stats.counts + ops.tiny(stats.counts.dtype)
        total = jnp.sum(jnp.where(active, counts, 0))
        components = self.family.m_step(stats.emission_stats, stats.counts, hyper.family)
        return MixtureParams(
            log_weights=jnp.where(active, jnp.log(counts / total), -jnp.inf),
            components=self._pad_components(components, active),
        )

    def combine_stats(self, a: MixtureStats, b: MixtureStats) -> MixtureStats:
        """Counts add; the family merges its own statistics."""
        return MixtureStats(
            a.counts + b.counts, self.family.combine_stats(a.emission_stats, b.emission_stats)
        )

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

    def init(self, key, chunks: Chunks, hyper) -> MixtureParams:
        family, n_components = self.family, self.max_components
        active = self.active(hyper)
        dtype = chunks.weights.dtype

        def points(rows):  # what distance-based seeding works on, chunk by chunk
            return family.seeding_points(rows).astype(dtype)

        if self.init_method in ("k-means++", "random_from_data"):
            # Greedy k-means++ and Gumbel top-k draws pick rows one by one, so the first
            # n_components of max_components picks are the n_components picks.
            if self.init_method == "k-means++":
                _, index = kmeans_plusplus_chunked(key, chunks, n_components, points=points)
            else:
                index = random_rows(key, chunks.weights, n_components)
            # One-hot responsibilities on the seed rows only, as scikit-learn.
            index = jnp.where(active, index, index[0])
            log_weights = jnp.where(active, -jnp.log(hyper.n_active.astype(dtype)), -jnp.inf)
            rows = _iterate.take_rows(chunks, index)
            return MixtureParams(log_weights, family.params_from_rows(rows, hyper.family))

        if self.init_method == "kmeans":
            seeds, _ = kmeans_plusplus_chunked(key, chunks, n_components, points=points)
            centers = lloyd(
                jnp.where(active[:, None], seeds, seeds[0]),
                Chunks(jax.vmap(points)(chunks.x), chunks.weights),
                max_iter=self.kmeans_max_iter,
                tol=hyper.kmeans_tol,
                n_active=hyper.n_active,
            )

            def responsibilities(x_chunk, index):
                labels, _ = nearest_centers(points(x_chunk), centers, active)
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
            resp = responsibilities(x_chunk, index) * w_chunk[:, None]
            return MixtureStats(resp.sum(0), family.statistics(None, x_chunk, resp))

        # Global chunk numbers, for the rows' keys of the "random" init.
        numbers = _iterate.chunk_indices(chunks.n_chunks)
        indexed = Chunks((chunks.x, chunks.weights, numbers), chunks.weights)
        stats = _iterate.chunked_sum(chunk_stats, indexed, self.combine_stats)
        return self.m_step(stats, None, hyper)

    def log_prob(self, params: MixtureParams, x):
        """Per-row log-likelihood ``log p(x)``, shape ``(n,)``."""
        return jax.nn.logsumexp(self.log_joint(params, x), axis=1)

    def n_parameters(self, n_features: int) -> int:
        return self.family.n_parameters(self.n_components, n_features) + self.n_components - 1

    def row_width(self, x) -> int:
        return self.max_components

    # -- derived quantities ------------------------------------------------------------------
    def log_joint(self, params: MixtureParams, x):
        """``(n, K)`` log of ``π_k p_k(x)``."""
        return self.family.log_densities(params.components, x) + params.log_weights

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


def mixture(
    family: Family, n_components: int, init: str = "kmeans", *, max_components: int | None = None
) -> Mixture:
    """Mixture model over ``family``; see :class:`Mixture`."""
    return Mixture(
        family=family, n_components=n_components, init_method=init, max_components=max_components
    )

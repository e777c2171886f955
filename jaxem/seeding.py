"""Seeding and Lloyd's iterations: plain functions any model may call.

k-means++ (scikit-learn's greedy variant with local trials), distinct random rows,
nearest centres, and Lloyd's algorithm for one restart. Mixtures seed their
responsibilities with them, k-means is built on them, and the Gaussian family
seeds hmmlearn's emission means with them. Nothing here knows about a model.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxem import _iterate
from jaxem.contract import Chunks, Model

__all__ = [
    "squared_distances",
    "nearest_centers",
    "cluster_sums",
    "random_rows",
    "kmeans_plusplus",
    "data_mean_variance",
    "lloyd",
    "Lloyd",
    "LloydHyper",
    "KMeansParams",
    "KMeansStats",
]


class KMeansParams(NamedTuple):
    """Cluster centres, shape ``(n_clusters, n_features)``."""

    centers: jax.Array


class KMeansStats(NamedTuple):
    """Additive statistics plus a mergeable list of the rows farthest from their centres."""

    counts: jax.Array  # (K,) total weight per cluster
    sums: jax.Array  # (K, D) weighted sum of rows per cluster
    far_distances: jax.Array  # (K,) descending; -inf for missing entries
    far_points: jax.Array  # (K, D)
    far_weights: jax.Array  # (K,)
    far_labels: jax.Array  # (K,) cluster each far point is currently assigned to


def _top_farthest(distances, x, weights, labels, n_keep):
    """The ``n_keep`` largest distances with their rows, padded with -inf if short."""
    take = min(n_keep, distances.shape[0])
    values, index = jax.lax.top_k(distances, take)
    pad = n_keep - take
    return (
        jnp.pad(values, (0, pad), constant_values=-jnp.inf),
        jnp.pad(x[index], ((0, pad), (0, 0))),
        jnp.pad(weights[index], (0, pad)),
        jnp.pad(labels[index], (0, pad)),
    )


def squared_distances(x, centers):
    """``(n, K)`` squared Euclidean distances as one matrix product, clipped at 0."""
    distances = (
        jnp.sum(x * x, axis=1, keepdims=True) - 2.0 * x @ centers.T + jnp.sum(centers**2, axis=1)
    )
    return jnp.maximum(distances, 0.0)


def nearest_centers(x, centers, active=None):
    """Nearest centre of every row and the squared distance to it.

    Parameters
    ----------
    x : (n, D) rows; centers : (K, D).
    active : (K,) bool, optional; centres marked False (padding) are never nearest.

    Returns
    -------
    labels : (n,) int32, the lowest index among equally near centres.
    distances : (n,) squared Euclidean distance to that centre, clipped at 0.

    Notes
    -----
    Ranks ``|c|² - 2 c·x`` (the row's own ``|x|²`` cannot change the order), as
    scikit-learn's Lloyd loop does; one ``(K, D) @ (D, n)`` product, then a minimum
    and a minimum index over the leading axis, which XLA vectorises over rows.
    """
    n_clusters = centers.shape[0]
    partial = jnp.sum(centers * centers, axis=1)[:, None] - 2.0 * (centers @ x.T)
    if active is not None:
        partial = jnp.where(active[:, None], partial, jnp.inf)
    best = jnp.min(partial, axis=0)
    index = jnp.arange(n_clusters, dtype=jnp.int32)[:, None]
    labels = jnp.min(jnp.where(partial == best, index, n_clusters), axis=0)
    return labels, jnp.maximum(best + jnp.sum(x * x, axis=1), 0.0)


def cluster_sums(labels, x, weights, n_clusters):
    """Per-cluster total weight and weighted sum of rows: ``(K,)`` and ``(K, D)``.

    A scatter-add on CPU (``n D`` additions, independent of ``K``); a one-hot matrix
    product on other platforms (deterministic, and fast on GPU/TPU).
    """

    def scatter(labels, x, weights):
        counts = jax.ops.segment_sum(weights, labels, n_clusters)
        return counts, jax.ops.segment_sum(x * weights[:, None], labels, n_clusters)

    def one_hot(labels, x, weights):
        member = (jnp.arange(n_clusters)[:, None] == labels) * weights
        return member.sum(axis=1), member @ x

    return jax.lax.platform_dependent(labels, x, weights, cpu=scatter, default=one_hot)


def random_rows(key, weights, n_rows: int):
    """Indices of ``n_rows`` distinct rows of positive weight, uniformly drawn."""
    valid = (weights > 0).astype(weights.dtype)
    return jax.random.choice(key, weights.shape[0], (n_rows,), replace=False, p=valid / valid.sum())


def kmeans_plusplus(key, x, weights, n_clusters: int, n_local_trials: int | None = None):
    """Greedy k-means++ seeding with local trials, as scikit-learn's ``kmeans_plusplus``.

    Parameters
    ----------
    key : PRNG key.
    x : (n, D) rows; weights : (n,) sample weights (0 marks padding).
    n_clusters : number of centres.
    n_local_trials : candidates per step; ``None`` means ``2 + int(log(n_clusters))``.

    Returns
    -------
    centers : (n_clusters, D)
    indices : (n_clusters,) rows chosen.
    """
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(n_clusters))
    first_key, loop_key = jax.random.split(key)
    first = jax.random.choice(first_key, x.shape[0], p=weights / weights.sum())
    closest = squared_distances(x, x[first][None])[:, 0]
    centers = jnp.zeros((n_clusters, x.shape[1]), x.dtype).at[0].set(x[first])
    indices = jnp.zeros((n_clusters,), jnp.int32).at[0].set(first.astype(jnp.int32))
    last_valid = jnp.max(jnp.where(weights > 0, jnp.arange(x.shape[0]), 0))

    def step(c, carry):
        centers, indices, closest = carry
        cumulative = jnp.cumsum(weights * closest)
        draws = jax.random.uniform(jax.random.fold_in(loop_key, c), (n_local_trials,), x.dtype)
        candidates = jnp.searchsorted(cumulative, draws * cumulative[-1])
        candidates = jnp.minimum(candidates, last_valid)
        to_candidates = jnp.minimum(closest[:, None], squared_distances(x, x[candidates]))
        potentials = weights @ to_candidates
        best = jnp.argmin(potentials)
        chosen = candidates[best]
        return (
            centers.at[c].set(x[chosen]),
            indices.at[c].set(chosen.astype(jnp.int32)),
            to_candidates[:, best],
        )

    centers, indices, _ = jax.lax.fori_loop(1, n_clusters, step, (centers, indices, closest))
    return centers, indices


class LloydHyper(NamedTuple):
    """The number of clusters in use (the rest of ``max_clusters`` is padding)."""

    n_active: jax.Array


@dataclasses.dataclass(frozen=True)
class Lloyd(Model):
    """Lloyd's iterations as hard EM: assign each row to its nearest centre, move each
    centre to the mean of its rows, re-seed empty clusters with the farthest rows.

    The E-step's statistics are additive (counts, sums, inertia) plus a running
    top-``K`` of the rows farthest from their centres, merged by
    :meth:`combine_stats`; the tracked "log-likelihood" is ``-inertia / weight``.
    Convergence is scikit-learn's: summed squared centre shift at most ``tol``.
    Initialisation is the caller's (see :class:`jaxem.KMeansModel`).

    ``max_clusters`` (default ``n_clusters``) sizes the arrays; clusters past
    ``n_clusters`` are padding that never wins a row and sits on centre 0, so fits
    with any ``n_clusters`` up to ``max_clusters`` share one compiled program
    (``n_clusters`` reaches it as an array through :meth:`hyper`).
    """

    n_clusters: int = dataclasses.field(compare=False)
    max_clusters: int | None = None

    def __post_init__(self):
        if not isinstance(self.n_clusters, int) or self.n_clusters < 1:
            raise ValueError(f"n_clusters must be a positive int, got {self.n_clusters!r}.")
        if self.max_clusters is None:
            object.__setattr__(self, "max_clusters", self.n_clusters)
        if not isinstance(self.max_clusters, int) or self.max_clusters < self.n_clusters:
            raise ValueError(
                f"max_clusters must be an int >= n_clusters={self.n_clusters}, "
                f"got {self.max_clusters!r}."
            )

    def hyper(self, dtype) -> LloydHyper:
        return LloydHyper(jnp.asarray(self.n_clusters, jnp.int32))

    def active(self, hyper: LloydHyper):
        """``(max_clusters,)`` True for the clusters in use."""
        return jnp.arange(self.max_clusters) < hyper.n_active

    def trim(self, params: KMeansParams) -> KMeansParams:
        return KMeansParams(params.centers[..., : self.n_clusters, :])

    def pad(self, params: KMeansParams) -> KMeansParams:
        centers = jnp.asarray(params.centers)  # (..., K, D)
        index = jnp.arange(self.max_clusters)
        return KMeansParams(centers[..., jnp.where(index < centers.shape[-2], index, 0), :])

    def e_step(self, params: KMeansParams, x, weights, hyper):
        labels, nearest = nearest_centers(x, params.centers, self.active(hyper))
        counts, sums = cluster_sums(labels, x, weights, self.max_clusters)
        far = _top_farthest(
            jnp.where(weights > 0, nearest, -jnp.inf), x, weights, labels, self.max_clusters
        )
        return KMeansStats(counts, sums, *far), -(weights @ nearest)

    def combine_stats(self, a: KMeansStats, b: KMeansStats) -> KMeansStats:
        joined = [jnp.concatenate([p, q]) for p, q in zip(a[2:], b[2:])]
        values, index = jax.lax.top_k(joined[0], self.max_clusters)
        return KMeansStats(
            a.counts + b.counts,
            a.sums + b.sums,
            values,
            *(leaf[index] for leaf in joined[1:]),
        )

    def m_step(self, stats: KMeansStats, params: KMeansParams, hyper) -> KMeansParams:
        counts, sums = stats.counts, stats.sums
        # Re-seed empty clusters, in index order, with the farthest points (scikit-learn's
        # rule); each moved point leaves the cluster it was assigned to. As scikit-learn,
        # nothing moves when every row sits on a centre (more clusters than distinct rows).
        active = self.active(hyper)
        empty = (counts == 0) & active
        rank = jnp.cumsum(empty) - 1
        available = empty & jnp.isfinite(stats.far_distances[rank]) & (stats.far_distances[0] > 0)
        point = stats.far_points[rank] * stats.far_weights[rank][:, None]
        moved = jnp.where(available[:, None], point, 0.0)
        leaving = jax.nn.one_hot(stats.far_labels[rank], self.max_clusters, dtype=sums.dtype)
        leaving = leaving * available[:, None]
        sums = jnp.where(available[:, None], point, sums - leaving.T @ moved)
        moved_weight = jnp.where(available, stats.far_weights[rank], 0.0)
        counts = jnp.where(available, moved_weight, counts - leaving.T @ moved_weight)
        centers = jnp.where(
            counts[:, None] > 0, sums / jnp.where(counts > 0, counts, 1.0)[:, None], params.centers
        )
        # Padding clusters follow centre 0: nearest-centre ties go to the lowest index,
        # so they never win a row even where no mask is applied.
        return KMeansParams(jnp.where(active[:, None], centers, centers[0]))

    def converged(self, old_params, new_params, log_likelihood, previous, tol):
        del log_likelihood, previous
        shift = jnp.sum((new_params.centers - old_params.centers) ** 2)
        # Unchanged labels give the same centres up to rounding (XLA may reassociate the
        # sums); count a shift at rounding level as scikit-learn's "strict convergence".
        eps = jnp.finfo(shift.dtype).eps
        rounding = 16 * eps * eps * jnp.sum(new_params.centers**2)
        return shift <= jnp.maximum(tol, rounding)

    def row_width(self, x) -> int:
        """A row's E-step work per restart, one distance per cluster (sizes the chunks)."""
        return self.max_clusters


def data_mean_variance(chunks: Chunks):
    """Weighted variance of the rows averaged over features (scikit-learn's tol scale)."""

    def moments(x, w):
        return jnp.sum(w), w @ x, w @ (x * x)

    total, first, second = _iterate.chunked_sum(moments, chunks)
    mean = first / total
    return jnp.mean(second / total - mean * mean)


def lloyd(centers, chunks: Chunks, *, max_iter: int, tol, n_active=None):
    """Run Lloyd's iterations for one restart from ``centers``; returns the final centres.

    Used inside other models' initialisation (the Gaussian mixture's "kmeans"
    init); ``tol`` is relative, as scikit-learn's.
    """
    model = Lloyd(centers.shape[0])
    hyper = model.hyper(centers.dtype)
    if n_active is not None:
        hyper = LloydHyper(jnp.asarray(n_active, jnp.int32))
    state = _iterate.run_em(
        model,
        KMeansParams(centers[None]),
        chunks,
        hyper,
        max_iter=max_iter,
        tol=tol * data_mean_variance(chunks),
        n_trace=max_iter,
    )
    return state.params.centers[0]

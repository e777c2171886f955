"""k-means as hard EM (Lloyd's algorithm) under the engine's model contract.

The E-step assigns every row to its nearest centre and returns additive
statistics (per-cluster weights and weighted sums) plus the summed inertia, so
the engine chunks, batches restarts and shards it like any other model. The
"log-likelihood" the engine tracks is ``-inertia / total weight``.

Empty clusters are re-seeded with the points farthest from their centres, as
scikit-learn does. Those points are found with a running top-``K`` that rides
along the statistics; merging two top-``K`` lists is associative, so the model
supplies ``combine_stats`` instead of plain addition.

Cost of one E-step (``n`` rows, ``K`` clusters, ``D`` features): the distances
are one ``(K, D) @ (D, n)`` product laid out cluster-major, so the nearest centre
is an elementwise minimum over ``K`` rows (XLA's ``argmin``, a variadic
reduction, is several times slower on CPU than the matrix product itself);
the label is the lowest index attaining that minimum (scikit-learn's tie rule).
Per-cluster sums are a scatter-add on CPU (``n D`` additions) and a one-hot
matrix product elsewhere (deterministic on GPU). Tracking the top-``K`` farthest rows
costs 5-10 % of an iteration on a 2-core CPU (K = 64).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from jaxem import _iterate
from jaxem.contract import Chunks
from jaxem.seeding import (
    KMeansParams,
    KMeansStats,
    Lloyd,
    cluster_sums,
    kmeans_plusplus_chunked,
    nearest_centers,
    random_rows,
)

__all__ = [
    "KMeansModel",
    "KMeansParams",
    "KMeansStats",
    "MiniBatchFitState",
    "MiniBatchOptions",
    "MiniBatchRecord",
    "MiniBatchState",
    "kmeans",
]


class MiniBatchState(NamedTuple):
    """Where mini-batch k-means stands between batches.

    ``centers`` (K, D); ``counts`` (K,) the weight every centre has absorbed (its
    learning rate is ``batch weight / counts``); ``since_reassign`` () int32, rows
    counted since low-count centres were last considered for reassignment.
    """

    centers: jax.Array
    counts: jax.Array
    since_reassign: jax.Array


class MiniBatchOptions(NamedTuple):
    """Numbers of a mini-batch fit, as arrays (changing them does not recompile).

    ``reassignment_ratio``; ``tol`` the absolute bound on the summed squared centre
    change (0: off); ``ewa_alpha`` the weight of a batch in the smoothed inertia;
    ``max_no_improvement`` (int32; a huge value for None); ``batch_size`` the rows per
    batch (normalises the batch inertia, counts towards ``since_reassign``).
    """

    reassignment_ratio: jax.Array
    tol: jax.Array
    ewa_alpha: jax.Array
    max_no_improvement: jax.Array
    batch_size: jax.Array


class MiniBatchFitState(NamedTuple):
    """:class:`MiniBatchState` plus scikit-learn's early-stopping bookkeeping: the
    exponentially weighted average (``ewa``) of the mean batch inertia, its minimum,
    the steps since it last improved, the steps taken, and whether the fit stopped."""

    state: MiniBatchState
    ewa: jax.Array
    ewa_min: jax.Array
    no_improvement: jax.Array
    step: jax.Array
    stopped: jax.Array


class MiniBatchRecord(NamedTuple):
    """What one step of a mini-batch fit did, for the verbose report: the mean batch
    inertia before the update, the smoothed inertia after it, how many centres were
    reassigned, and why the fit stopped there (0: it did not; 1: small centre
    change; 2: no improvement of the smoothed inertia)."""

    batch_inertia: jax.Array
    ewa: jax.Array
    n_reassigned: jax.Array
    stop_reason: jax.Array


@dataclasses.dataclass(frozen=True)
class KMeansModel(Lloyd):
    """k-means model (hard-assignment EM) for :func:`jaxem.fit`.

    Parameters
    ----------
    n_clusters : int
        Number of clusters.
    init_method : {"k-means++", "random"}
        Seeding: greedy k-means++ with local trials (scikit-learn's), or distinct
        rows drawn uniformly.
    n_local_trials : int or None
        Candidates per k-means++ step; ``None`` means ``2 + int(log(n_clusters))``.

    Notes
    -----
    ``tol`` given to :func:`jaxem.fit` is an absolute bound on the summed squared
    centre shift. scikit-learn's relative ``tol`` equals
    ``tol * data_mean_variance(...)``; :class:`jaxem.KMeans` applies that scaling.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import jaxem
    >>> X = jnp.array([[0.0, 0.0], [0.5, 0.0], [5.0, 5.0], [5.5, 5.0]])
    >>> result = jaxem.fit(jaxem.kmeans(2), X, key=jax.random.key(0), n_restarts=4, tol=0.0)
    >>> print(jnp.sort(result.params.centers[:, 0]))
    [0.25 5.25]
    """

    init_method: str = "k-means++"
    n_local_trials: int | None = None

    outputs: ClassVar[tuple[str, ...]] = (
        "log_prob",
        "predict",
        "nearest_squared_distance",
        "transform",
    )

    def __post_init__(self):
        super().__post_init__()
        if self.init_method not in ("k-means++", "random"):
            raise ValueError(f"init must be 'k-means++' or 'random', got {self.init_method!r}.")

    def init(self, key, chunks: Chunks, hyper) -> KMeansParams:
        if self.init_method == "random":
            # Distinct rows drawn with probability proportional to the sample weight,
            # as scikit-learn's KMeans(init="random"), chunk by chunk.
            index = random_rows(key, chunks.weights, self.max_clusters, weighted=True)
            centers = _iterate.take_rows(chunks, index)
        else:
            # Greedy k-means++ picks seeds one by one, so the first n_clusters of
            # max_clusters seeds are the n_clusters seeds (local trials: max_clusters').
            centers, _ = kmeans_plusplus_chunked(
                key, chunks, self.max_clusters, self.n_local_trials
            )
        active = self.active(hyper)
        return KMeansParams(jnp.where(active[:, None], centers, centers[0]))

    def log_prob(self, params: KMeansParams, x):
        """Per-row negative squared distance to the nearest centre."""
        return -nearest_centers(x, params.centers)[1]

    def predict(self, params: KMeansParams, x):
        """Index of the nearest centre of every row (the lowest on ties)."""
        return nearest_centers(x, params.centers)[0]

    def nearest_squared_distance(self, params: KMeansParams, x):
        """Squared distance of every row to its nearest centre, from coordinate
        differences (accurate where the expanded form cancels)."""
        labels, _ = nearest_centers(x, params.centers)
        difference = x - params.centers[labels]
        return jnp.sum(difference * difference, axis=1)

    def transform(self, params: KMeansParams, x):
        """``(n, max_clusters)`` Euclidean distances to every centre, from differences."""
        difference = x[:, None, :] - params.centers[None, :, :]
        return jnp.sqrt(jnp.sum(difference * difference, axis=2))

    def n_parameters(self, n_features: int) -> int:
        return self.n_clusters * n_features

    # -- mini-batch k-means (Sculley 2010, with scikit-learn's reassignment) -------------
    def minibatch_step(self, state: MiniBatchState, x, weights, n_rows, increment, key, ratio):
        """One mini-batch update of every centre from a batch of rows.

        Each row goes to its nearest centre; a centre that receives weight ``w_b``
        with weighted row sum ``s_b`` moves to ``(c n + s_b) / (n + w_b)`` and its
        count ``n`` grows by ``w_b`` (a learning rate of ``w_b / (n + w_b)``, as
        scikit-learn). Then, when a centre has count 0 or ``since_reassign`` (grown
        by ``increment``) reaches ``10 K``, centres with count below ``ratio`` times
        the largest are moved onto distinct rows of the batch drawn uniformly with
        ``key`` (at most ``n_rows // 2`` of them, those of lowest count), and their
        counts set to the smallest count of the others.

        Parameters
        ----------
        state : :class:`MiniBatchState` (the model's ``max_clusters`` centres, all in use).
        x : (B, D) the batch, padded; weights : (B,), 0 on padding.
        n_rows : () int32, the batch's real rows (the first ``n_rows`` of ``x``).
        increment : () int32, added to ``since_reassign``.
        key : PRNG key for the reassignment; ratio : () reassignment ratio.

        Returns
        -------
        state : the new :class:`MiniBatchState`.
        inertia : () weighted sum of squared distances to the centres before the update.
        n_reassigned : () int32.
        shift : () summed squared change of the centres.
        """
        centers, counts = state.centers, state.counts
        n_clusters = centers.shape[0]
        # scikit-learn decides on reassignment from the counts before the update.
        since = state.since_reassign + increment
        reassign = jnp.any(counts == 0) | (since >= 10 * n_clusters)
        since = jnp.where(reassign, 0, since)

        labels, squared = nearest_centers(x, centers)
        inertia = weights @ squared
        batch_counts, sums = cluster_sums(labels, x, weights, n_clusters)
        new_counts = counts + batch_counts
        touched = batch_counts > 0
        safe = jnp.where(touched, new_counts, 1.0)
        moved = (centers * counts[:, None] + sums) / safe[:, None]
        new_centers = jnp.where(touched[:, None], moved, centers)

        # Low-count centres, the lowest ones first when more than half the batch.
        low = reassign & (ratio > 0) & (new_counts < ratio * jnp.max(new_counts))
        limit = n_rows // 2
        rank = jnp.argsort(jnp.argsort(new_counts, stable=True), stable=True)
        low = jnp.where(jnp.sum(low) > n_rows / 2, low & (rank < limit), low)
        n_reassigned = jnp.sum(low, dtype=jnp.int32)
        # Distinct rows drawn uniformly among the batch's real rows: the highest of
        # uniform scores (independent of the data's dtype).
        scores = jax.random.uniform(key, (x.shape[0],), jnp.float32)
        scores = jnp.where(jnp.arange(x.shape[0]) < n_rows, scores, -1.0)
        _, rows = jax.lax.top_k(scores, min(n_clusters, x.shape[0]))
        slot = jnp.clip(jnp.cumsum(low) - 1, 0, rows.shape[0] - 1)
        new_centers = jnp.where(low[:, None], x[rows[slot]], new_centers)
        # The reassigned start from the smallest remaining count (not from 0, which
        # would reassign them again at once), as scikit-learn does.
        smallest = jnp.min(jnp.where(low, jnp.inf, new_counts))
        new_counts = jnp.where(low & jnp.isfinite(smallest), smallest, new_counts)

        shift = jnp.sum((new_centers - centers) ** 2)
        return MiniBatchState(new_centers, new_counts, since), inertia, n_reassigned, shift

    def minibatch_fit_step(self, fit: MiniBatchFitState, x, key, options: MiniBatchOptions):
        """One step of a mini-batch fit on a batch of unit-weight rows (drawn with
        probability proportional to the sample weights), with scikit-learn's early
        stopping: the first step's inertia is ignored; after that the smoothed mean
        batch inertia ``ewa ← (1 - α) ewa + α inertia / B`` stops the fit when it has
        not improved for ``max_no_improvement`` steps, and ``tol > 0`` stops it when
        the summed squared centre change is at most ``tol``.

        Returns ``(fit, record)``: the new :class:`MiniBatchFitState` and this step's
        :class:`MiniBatchRecord`.
        """
        n_rows = x.shape[0]
        weights = jnp.ones((n_rows,), x.dtype)
        increment = options.batch_size.astype(jnp.int32)
        state, inertia, n_reassigned, shift = self.minibatch_step(
            fit.state, x, weights, jnp.int32(n_rows), increment, key, options.reassignment_ratio
        )
        step = fit.step + 1
        counted = step > 1  # the first step measures the initial centres
        batch_inertia = inertia / options.batch_size
        alpha = options.ewa_alpha
        first = step == 2
        smoothed = jnp.where(first, batch_inertia, fit.ewa * (1 - alpha) + batch_inertia * alpha)
        ewa = jnp.where(counted, smoothed, fit.ewa)
        small = counted & (options.tol > 0) & (shift <= options.tol)
        improved = first | (ewa < fit.ewa_min)
        no_improvement = jnp.where(
            counted, jnp.where(improved, 0, fit.no_improvement + 1), fit.no_improvement
        )
        ewa_min = jnp.where(counted & improved, ewa, fit.ewa_min)
        lack = counted & ~small & (no_improvement >= options.max_no_improvement)
        reason = jnp.where(small, 1, jnp.where(lack, 2, 0)).astype(jnp.int32)
        fit = MiniBatchFitState(state, ewa, ewa_min, no_improvement, step, small | lack)
        return fit, MiniBatchRecord(batch_inertia, ewa, n_reassigned, reason)


def kmeans(
    n_clusters: int,
    init: str = "k-means++",
    n_local_trials: int | None = None,
    *,
    max_clusters: int | None = None,
) -> KMeansModel:
    """k-means model; see :class:`KMeansModel`."""
    return KMeansModel(
        n_clusters=n_clusters,
        max_clusters=max_clusters,
        init_method=init,
        n_local_trials=n_local_trials,
    )

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
import numpy as np

from jaxem import _iterate
from jaxem.contract import Chunks, Model

__all__ = [
    "squared_distances",
    "nearest_centers",
    "cluster_sums",
    "random_rows",
    "kmeans_plusplus",
    "kmeans_plusplus_chunked",
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


def _chunk(tree, i):
    """Chunk ``i`` of every leaf of a chunked pytree (leaves ``(n_chunks, chunk_size, ...)``)."""
    return jax.tree.map(lambda leaf: jax.lax.dynamic_index_in_dim(leaf, i, keepdims=False), tree)


def _identity(x):
    return x


def _to_center(points, rows, center, center_row):
    """``(n,)`` squared distances of the rows numbered ``rows`` to one centre, the row
    ``center_row``: one matrix-vector product, and exactly 0 on the centre's own row
    (the expanded form may leave rounding there, which could draw it again)."""
    return jnp.where(rows == center_row, 0, squared_distances(points, center[None])[:, 0])


def _to_own_centers(points, centers):
    """``(n,)`` squared distance of each row to its own centre ``centers[i]``, by direct
    differences (exactly 0 on a row equal to its centre)."""
    return jnp.sum((points - centers) ** 2, axis=-1)


def _positive_mass(weights, values):
    """``weights * values`` on rows of positive weight, 0 on padding whatever it holds."""
    return jnp.where(weights > 0, weights * values, 0)


def _cdf(mass):
    """What inverse-CDF searches of ``mass`` (1-D, non-negative) need, computed once:
    ``mass``, its cumulative sum, and the last index with mass (0 if none)."""
    last = jnp.max(jnp.where(mass > 0, jnp.arange(mass.shape[0]), 0))
    return mass, jnp.cumsum(mass), last


def _inverse_cdf(cdf, target):
    """First index with mass whose cumulative mass reaches ``target`` (the last index with
    mass past the total), and the mass before it; ``cdf`` is :func:`_cdf`'s.

    A masked minimum rather than a binary search: an index without mass is never
    returned, even where rounding gives it a step of the cumulative sum of its own.
    """
    mass, cumulative, last = cdf
    size = mass.shape[0]
    found = jnp.min(jnp.where((mass > 0) & (cumulative >= target), jnp.arange(size), size))
    index = jnp.where(found < size, found, last)
    return index, cumulative[index] - mass[index]


def _chunk_cdf(mass, weights):
    """:func:`_cdf` of one chunk's masses, or of its ``weights`` where no row has mass
    (its rows all sit on centres; its total was positive by rounding only), so the
    row drawn always has positive weight. Also returns whether it fell back."""
    empty = ~jnp.any(mass > 0)
    return _cdf(jnp.where(empty, weights, mass)), empty


def _search_chunk(cdf, empty, residual, share):
    """Row of one chunk whose interval holds ``residual`` of its mass (or ``share`` of
    its total weight after :func:`_chunk_cdf` fell back)."""
    return _inverse_cdf(cdf, jnp.where(empty, share * cdf[1][-1], residual))[0]


def _draw_rows(fractions, chunk_mass, chunk_weight, rows_of_chunk):
    """Rows drawn with probability proportional to a mass, by a two-level inverse CDF.

    Parameters
    ----------
    fractions : (m,) numbers in [0, 1], one per draw: draw ``t`` is the row where the
        cumulative mass crosses ``fractions[t]`` times the total.
    chunk_mass : (n_chunks,) total mass of every chunk (over every shard of the rows).
    chunk_weight : (n_chunks,) total weight of every chunk: where there is no mass at
        all (every row sits on a centre), rows are drawn by weight.
    rows_of_chunk : function of a (global) chunk index giving the ``(chunk_size,)``
        masses of its rows (summing to that chunk's entry of ``chunk_mass`` up to
        rounding) and their non-negative weights.

    Returns
    -------
    chunk_index, row_index : (m,) int32 each.

    Notes
    -----
    Only the chunk totals are summed over all rows; each draw then searches one
    chunk, one draw at a time, so no cumulative sum over all rows is ever held.
    """
    chunk_mass = jnp.where(jnp.sum(chunk_mass) > 0, chunk_mass, chunk_weight)
    chunks = _cdf(chunk_mass)
    targets = fractions * chunks[1][-1]
    chunk_index, before = jax.vmap(_inverse_cdf, in_axes=(None, 0))(chunks, targets)
    residuals = targets - before
    totals = chunk_mass[chunk_index]
    shares = jnp.clip(residuals / jnp.where(totals > 0, totals, 1), 0, 1)
    if chunk_mass.shape[0] == 1:
        # Every draw searches the one chunk: its table is built once.
        cdf, empty = _chunk_cdf(*rows_of_chunk(0))
        search = jax.vmap(_search_chunk, in_axes=(None, None, 0, 0))
        row_index = search(cdf, empty, residuals, shares)
    else:

        def search(draw):
            index, residual, share = draw
            return _search_chunk(*_chunk_cdf(*rows_of_chunk(index)), residual, share)

        row_index = jax.lax.map(search, (chunk_index, residuals, shares))
    return chunk_index.astype(jnp.int32), row_index.astype(jnp.int32)


def _label_dtype(n_clusters: int):
    """Smallest integer dtype holding the labels ``0 .. n_clusters - 1``."""
    if n_clusters <= 1 << 8:
        return jnp.uint8
    if n_clusters <= 1 << 16:
        return jnp.uint16
    return jnp.int32


def _join_nearest(points, centers, nearest, new, to_new):
    """What is known of every row's nearest centre, and its squared distance to it, once
    centre ``new`` joins those already chosen (``to_new``: the distances to it).

    ``nearest`` is either that squared distance itself (floating) or the label of
    that centre (integer: the distance is recomputed, by direct differences, for a
    quarter of the memory or less).
    """
    if jnp.issubdtype(nearest.dtype, jnp.floating):
        closest = jnp.minimum(nearest, to_new)
        return closest, closest
    current = _to_own_centers(points, centers[nearest])
    closer = to_new < current
    return jnp.where(closer, new, nearest).astype(nearest.dtype), jnp.where(closer, to_new, current)


def random_rows(key, weights, n_rows: int, *, weighted: bool = False):
    """Indices of ``n_rows`` distinct rows of positive weight (Gumbel top-``k``).

    Parameters
    ----------
    key : PRNG key.
    weights : (n,) weights, or (n_chunks, chunk_size) chunked weights (see
        :class:`jaxem.contract.Chunks`); 0 marks padding.
    n_rows : number of rows to draw, at most the number of rows of positive weight.
    weighted : draw with probability proportional to the weight (scikit-learn's
        ``KMeans(init="random")``) instead of uniformly among rows of positive weight.

    Returns
    -------
    (n_rows,) int32 indices into the rows in order (chunk by chunk for chunked
    weights). They come in decreasing order of their Gumbel keys, so the first ``c``
    do not depend on ``n_rows``. Each row's Gumbel key comes from its own
    :func:`jaxem._iterate.row_keys`, so the rows drawn do not depend on the chunking (nor on how
    rows are split over devices); memory stays O(chunk).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> weights = jnp.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0]).reshape(3, 2)
    >>> rows = random_rows(jax.random.key(0), weights, 4)
    >>> sorted(rows.tolist())
    [1, 2, 4, 5]
    """
    chunked = weights.reshape((-1, weights.shape[-1]))
    n_chunks, chunk_size = chunked.shape
    dtype = jnp.result_type(float, weights.dtype)
    if weighted:
        mass = jnp.where(chunked > 0, chunked, 0).astype(dtype)
    else:
        mass = (chunked > 0).astype(dtype)
    total = _iterate.across_shards(mass.sum())
    take = min(n_rows, chunk_size)
    global_index = _iterate.chunk_indices(n_chunks)

    def top(index):
        chunk = global_index[index]
        gumbel = jax.vmap(lambda k: jax.random.gumbel(k, (), dtype))(
            _iterate.row_keys(key, chunk, chunk_size)
        )
        values, rows = jax.lax.top_k(gumbel + jnp.log(mass[index] / total), take)
        rows = (rows + chunk * chunk_size).astype(jnp.int32)  # int32 whatever x64 says
        pad = n_rows - take
        return jnp.pad(values, (0, pad), constant_values=-jnp.inf), jnp.pad(rows, (0, pad))

    def merge(best, new):
        # The new rows first: they beat the -inf padding of a short first chunk.
        values, rows = (jnp.concatenate(pair) for pair in zip(new, best))
        values, order = jax.lax.top_k(values, n_rows)
        return values, rows[order]

    best = top(0)
    if n_chunks > 1:
        best, _ = jax.lax.scan(
            lambda best, index: (merge(best, top(index)), None), best, jnp.arange(1, n_chunks)
        )
    if _iterate.row_axis() is not None:  # every shard's best rows (a few numbers each)
        gathered = _iterate.all_chunks(jax.tree.map(lambda leaf: leaf[None], best))
        best = jax.lax.top_k(gathered[0].reshape(-1), n_rows)
        best = best[0], gathered[1].reshape(-1)[best[1]]
    return best[1]


def kmeans_plusplus_chunked(
    key, chunks: Chunks, n_clusters: int, n_local_trials: int | None = None, points=None
):
    """Greedy k-means++ seeding with local trials over chunked data, chunk by chunk.

    scikit-learn's ``kmeans_plusplus``: the first centre is a row drawn with
    probability proportional to its weight; each next one is the best, by the
    resulting potential ``Σ w · min_c |x - c|²``, of ``n_local_trials`` rows drawn with
    probability proportional to ``w · min_c |x - c|²``.

    Parameters
    ----------
    key : PRNG key.
    chunks : the data, see :func:`jaxem._iterate.make_chunks` (weight 0 marks padding,
        which is never chosen whatever it holds).
    n_clusters : number of centres.
    n_local_trials : candidates per step; ``None`` means ``2 + int(log(n_clusters))``.
    points : function mapping a chunk of ``chunks.x`` (or one row of it, as a batch of
        one) to floating ``(rows, P)`` points to seed on; default the rows themselves.

    Returns
    -------
    centers : (n_clusters, P) the chosen points.
    indices : (n_clusters,) int32 rows chosen, counted through the chunks in order
        (indices into ``chunks.flat()``).

    Notes
    -----
    Each step is one pass over the chunks (``lax.scan``): it joins the previous
    step's centre to every row's nearest, and sums the potential
    ``Σ w · min(closest, |x - candidate|²)`` of every candidate per chunk. The
    winner's per-chunk sums are the chunk totals the next draws search: the chunk
    by its total, then the row within it, so no cumulative sum over all rows exists.

    Memory per restart (under ``vmap`` over keys) is one small integer per row, the
    label of its nearest centre, from which the distance is recomputed, plus
    O(chunk_size × n_local_trials) temporaries; data in one chunk keeps the distances
    instead. Rows chosen as centres get a distance of exactly 0, so they are never
    drawn again; other rows equal to a centre get at worst the rounding of
    :func:`squared_distances`' expanded form.

    The centres are chosen one at a time, so the first ``c`` do not depend on
    ``n_clusters`` (for a fixed ``n_local_trials``). Chunked or not, the draws are
    the same up to the rounding of sums.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from jaxem._iterate import make_chunks
    >>> x = jnp.array([[0.0], [0.1], [5.0], [5.1], [10.0], [10.1], [10.2]])
    >>> chunks = make_chunks(x, jnp.ones(7), chunk_size=3)  # 3 chunks, 2 padding rows
    >>> centers, indices = kmeans_plusplus_chunked(jax.random.key(0), chunks, 3)
    >>> sorted(int(c) for c in centers[:, 0] // 5)  # one centre per group
    [0, 1, 2]
    """
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(n_clusters))
    points = _identity if points is None else points
    # With the rows sharded (see jaxem._iterate.rows_sharded), ``chunks`` are this
    # shard's; draws and chunk numbers are global, so the seeds are a one-device fit's.
    weights = chunks.weights
    n_chunks, chunk_size = weights.shape
    global_index = _iterate.chunk_indices(n_chunks)
    one_chunk = _iterate.n_global_chunks(n_chunks) == 1

    def chunk_points(index):
        return points(_chunk(chunks.x, index))

    def chunk_rows(index):
        return global_index[index] * chunk_size + jnp.arange(chunk_size, dtype=jnp.int32)

    def row_points(chunk_index, row_index):
        rows = _iterate.take_rows(chunks, chunk_index * chunk_size + row_index)
        return jax.vmap(lambda row: points(jax.tree.map(lambda leaf: leaf[None], row))[0])(rows)

    point_dtype = jax.eval_shape(chunk_points, 0).dtype
    dtype = jnp.result_type(point_dtype, weights.dtype)
    first_key, loop_key = jax.random.split(key)

    # First centre: a row drawn in proportion to its weight (as jax.random.choice).
    row_weights = jnp.where(weights > 0, weights, 0).astype(dtype)
    weight_totals = _iterate.all_chunks(row_weights.sum(axis=1))

    def rows_of_chunk(row_mass):
        def rows(index):
            return _iterate.from_chunk(lambda i: (row_mass(i), row_weights[i]), chunks, index)

        return rows

    # Draws are float32 in either precision, so float32 and float64 data seed alike.
    fraction = 1 - jax.random.uniform(first_key, (1,), jnp.float32).astype(dtype)
    chunk_index, row_index = _draw_rows(
        fraction, weight_totals, weight_totals, rows_of_chunk(lambda i: row_weights[i])
    )
    first = row_points(chunk_index, row_index)[0]
    centers = jnp.zeros((n_clusters, first.shape[0]), point_dtype).at[0].set(first)
    flat_index = chunk_index * chunk_size + row_index
    indices = jnp.zeros((n_clusters,), jnp.int32).at[0].set(flat_index[0])
    if n_clusters == 1:
        return centers, indices

    if one_chunk:
        # All rows are one chunk, as big as the work the chunk size allows: keep the
        # distances themselves rather than recompute them from labels.
        labels = _to_center(chunk_points(0), chunk_rows(0), first, indices[0])[None]
        chunk_totals = _positive_mass(weights, labels).sum(axis=1)
    else:
        labels = jnp.zeros((n_chunks, chunk_size), _label_dtype(n_clusters))

        def first_total(index):
            to_first = _to_center(chunk_points(index), chunk_rows(index), first, indices[0])
            return _positive_mass(weights[index], to_first).sum()

        chunk_totals = _iterate.all_chunks(jax.lax.map(first_total, jnp.arange(n_chunks)))

    def step(c, carry):
        centers, indices, labels, chunk_totals = carry
        previous = c - 1

        def join_previous(x, index, labels):
            to_previous = _to_center(x, chunk_rows(index), centers[previous], indices[previous])
            return _join_nearest(x, centers, labels, previous, to_previous)

        def row_mass(index):
            _, closest = join_previous(chunk_points(index), index, labels[index])
            return _positive_mass(weights[index], closest).astype(dtype)

        fractions = jax.random.uniform(
            jax.random.fold_in(loop_key, c), (n_local_trials,), jnp.float32
        ).astype(dtype)
        chunk_index, row_index = _draw_rows(
            fractions, chunk_totals, weight_totals, rows_of_chunk(row_mass)
        )
        candidates = row_points(chunk_index, row_index)

        def evaluate(labels, index):
            x = chunk_points(index)
            new_labels, closest = join_previous(x, index, labels[index])
            # The expanded form (one matrix product) suffices to rank the candidates.
            to_candidates = jnp.minimum(closest[:, None], squared_distances(x, candidates))
            # Padding may hold anything: zero its terms before the product with weights.
            used = weights[index] > 0
            to_candidates = jnp.where(used[:, None], to_candidates, 0)
            potentials = jnp.where(used, weights[index], 0) @ to_candidates
            return labels.at[index].set(new_labels), potentials.astype(dtype)

        labels, potentials = jax.lax.scan(evaluate, labels, jnp.arange(n_chunks))
        best = jnp.argmin(_iterate.across_shards(potentials.sum(axis=0)))
        return (
            centers.at[c].set(candidates[best]),
            indices.at[c].set(chunk_index[best] * chunk_size + row_index[best]),
            labels,
            _iterate.all_chunks(potentials[:, best]),
        )

    carry = (centers, indices, labels, chunk_totals.astype(dtype))
    centers, indices, _, _ = jax.lax.fori_loop(1, n_clusters, step, carry)
    return centers, indices


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

    Notes
    -----
    :func:`kmeans_plusplus_chunked` on the rows as one chunk. Data that is already
    chunked should go to that function: memory then stays O(chunk) per restart.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.array([[0.0, 0.0], [0.0, 0.1], [4.0, 4.0], [4.1, 4.0]])
    >>> centers, indices = kmeans_plusplus(jax.random.key(1), x, jnp.ones(4), 2)
    >>> sorted(int(i) // 2 for i in indices)  # one centre in each pair
    [0, 1]
    """
    return kmeans_plusplus_chunked(key, Chunks(x[None], weights[None]), n_clusters, n_local_trials)


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
        return LloydHyper(np.asarray(self.n_clusters, np.int32))

    def active(self, hyper: LloydHyper):
        """``(max_clusters,)`` True for the clusters in use."""
        return jnp.arange(self.max_clusters) < hyper.n_active

    def has_padding(self) -> bool:
        return self.n_clusters < self.max_clusters

    def trim(self, params: KMeansParams) -> KMeansParams:
        return KMeansParams(params.centers[: self.n_clusters])

    def pad(self, params: KMeansParams) -> KMeansParams:
        centers = np.asarray(params.centers)  # (..., K, D), on the host
        index = np.arange(self.max_clusters)
        return KMeansParams(centers[..., np.where(index < centers.shape[-2], index, 0), :])

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

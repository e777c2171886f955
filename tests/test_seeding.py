"""k-means++ and random rows over chunked data: the same picks as over all rows at once.

The reference is the all-rows algorithm in numpy (one cumulative sum over every row,
scikit-learn's greedy local trials) fed the same uniform draws, in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import kmeans_plusplus as sklearn_kmeans_plusplus

from jaxem._iterate import make_chunks
from jaxem.contract import Chunks
from jaxem.seeding import kmeans_plusplus, kmeans_plusplus_chunked, random_rows
from tests.conftest import jit_small, make_blobs

N_ROWS = 203
X = make_blobs(n_samples=N_ROWS, n_features=3, n_clusters=5, seed=2, spread=3.0)[0]
WEIGHTS = np.where(
    np.arange(N_ROWS) % 7 == 3, 0.0, np.random.default_rng(1).uniform(0.5, 2, N_ROWS)
)


def _reference(key, x, weights, n_clusters, n_trials):
    """The all-rows k-means++ in numpy, with jaxem's random draws."""
    first_key, loop_key = jax.random.split(key)
    cumulative = np.cumsum(weights)
    fraction = 1 - float(jax.random.uniform(first_key, (1,), jnp.float32)[0])
    indices = [int(np.searchsorted(cumulative, fraction * cumulative[-1]))]
    closest = ((x - x[indices[0]]) ** 2).sum(axis=1)
    for c in range(1, n_clusters):
        # float32 draws in either precision, as jaxem's seeding
        draws = jax.random.uniform(jax.random.fold_in(loop_key, c), (n_trials,), jnp.float32)
        draws = np.asarray(draws, np.float64)
        cumulative = np.cumsum(weights * closest)
        candidates = np.searchsorted(cumulative, np.asarray(draws) * cumulative[-1])
        to_candidates = ((x[:, None] - x[candidates]) ** 2).sum(axis=-1)
        to_candidates = np.minimum(closest[:, None], to_candidates)
        best = np.argmin(weights @ to_candidates)
        indices.append(int(candidates[best]))
        closest = to_candidates[:, best]
    return np.array(indices)


@jit_small(static_argnames=("n_clusters", "n_trials", "chunk_size"))
def _seeds(keys, x, weights, *, n_clusters, n_trials=None, chunk_size=None):
    """k-means++ of every key: over the plain rows, or over chunks of ``chunk_size``."""
    if chunk_size is None:
        seed = lambda key: kmeans_plusplus(key, x, weights, n_clusters, n_trials)  # noqa: E731
    else:
        chunks = make_chunks(x, weights, chunk_size)
        seed = lambda key: kmeans_plusplus_chunked(key, chunks, n_clusters, n_trials)  # noqa: E731
    return jax.vmap(seed)(keys)


def _keys(n, seed=0):
    return jax.random.split(jax.random.key(seed), n)


def test_one_chunk_matches_the_all_rows_algorithm(x64):
    keys = _keys(32)
    _, indices = _seeds(keys, X, WEIGHTS, n_clusters=6)
    expected = [_reference(key, X, WEIGHTS, 6, 2 + int(np.log(6))) for key in keys]
    np.testing.assert_array_equal(indices, expected)


@pytest.mark.parametrize("chunk_size", [1, 32, 50, 203, 256])
def test_chunked_equals_unchunked(x64, chunk_size):
    keys = _keys(32, seed=1)
    centers, indices = _seeds(keys, X, WEIGHTS, n_clusters=7)
    chunked_centers, chunked_indices = _seeds(keys, X, WEIGHTS, n_clusters=7, chunk_size=chunk_size)
    np.testing.assert_array_equal(chunked_indices, indices)
    np.testing.assert_array_equal(chunked_centers, centers)
    assert chunked_centers.dtype == jnp.float64
    np.testing.assert_array_equal(centers, X[np.asarray(indices)])


def test_float32_under_jit_and_vmap():
    x = X.astype(np.float32)
    centers, indices = _seeds(_keys(64), x, WEIGHTS.astype(np.float32), n_clusters=5, chunk_size=40)
    assert centers.dtype == jnp.float32 and indices.dtype == jnp.int32
    np.testing.assert_array_equal(centers, x[np.asarray(indices)])
    assert all(len(set(row)) == 5 for row in np.asarray(indices).tolist())


@pytest.mark.parametrize("n_chunks", [1, 16])
def test_padding_is_never_chosen_whatever_it_holds(n_chunks):
    # Chunks built by hand: weight-0 rows hold NaN and huge values.
    x = X.astype(np.float32).copy()
    x[WEIGHTS == 0] = np.nan
    x[::11] = np.where(WEIGHTS[::11, None] == 0, 1e30, x[::11])
    padded = np.concatenate([x, np.full((5, 3), np.nan, np.float32)])
    weights = np.concatenate([WEIGHTS, np.zeros(5)]).astype(np.float32)
    shape = (n_chunks, len(weights) // n_chunks)
    chunks = Chunks(jnp.asarray(padded.reshape(shape + (3,))), jnp.asarray(weights.reshape(shape)))
    seed = jit_small(jax.vmap(lambda key: kmeans_plusplus_chunked(key, chunks, 8)))
    centers, indices = seed(_keys(200))
    assert np.all(weights[np.asarray(indices)] > 0)
    assert np.all(np.isfinite(centers))


def test_a_heavy_row_is_drawn_first():
    weights = np.ones(N_ROWS)
    weights[57] = 1000.0 * N_ROWS
    _, indices = _seeds(_keys(200), X, weights, n_clusters=4, chunk_size=32)
    assert np.mean(np.asarray(indices)[:, 0] == 57) > 0.95


def test_rows_on_a_centre_are_not_drawn_again():
    # Three distinct rows, repeated: three clusters take all three, more repeat none of
    # them until every distinct row is a centre, and then only draw rows of positive weight.
    x = np.repeat(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 5.0]]), 20, axis=0)
    weights = np.where(np.arange(60) % 4 == 0, 0.0, 1.0)
    for n_clusters in (3, 5):
        centers, indices = _seeds(_keys(50), x, weights, n_clusters=n_clusters, chunk_size=16)
        distinct = [len({tuple(c) for c in row[:3]}) for row in np.asarray(centers)]
        assert distinct == [3] * 50
        assert np.all(weights[np.asarray(indices)] > 0)


def test_first_centres_do_not_depend_on_n_clusters():
    keys = _keys(16)
    few = _seeds(keys, X, WEIGHTS, n_clusters=3, n_trials=4, chunk_size=50)
    many = _seeds(keys, X, WEIGHTS, n_clusters=9, n_trials=4, chunk_size=50)
    np.testing.assert_array_equal(many[1][:, :3], few[1])
    np.testing.assert_array_equal(many[0][:, :3], few[0])


def test_potential_is_comparable_to_sklearn():
    x = make_blobs(n_samples=300, n_features=2, n_clusters=6, seed=4, spread=3.0)[0]
    centers, _ = _seeds(_keys(300), x.astype(np.float32), np.ones(300), n_clusters=6, chunk_size=64)

    def potential(centers):
        return np.sum(np.min(((x[:, None] - centers[None]) ** 2).sum(-1), axis=1))

    ours = np.mean([potential(np.asarray(c, np.float64)) for c in centers])
    theirs = np.mean(
        [potential(sklearn_kmeans_plusplus(x, 6, random_state=s)[0]) for s in range(300)]
    )
    assert 0.9 < ours / theirs < 1.1, (ours, theirs)


def test_seeding_points_of_a_pytree():
    # Points computed chunk by chunk from a pytree equal the rows computed up front.
    tree = {"a": X[:, :2].astype(np.float32), "b": X[:, 2:].astype(np.float32)}
    chunks = make_chunks(tree, jnp.asarray(WEIGHTS, jnp.float32), 30)

    def points(x):
        return 2 * jnp.concatenate([x["a"], x["b"] ** 2], axis=1)

    key = jax.random.key(5)
    centers, indices = kmeans_plusplus_chunked(key, chunks, 6, points=points)
    whole = points(jax.tree.map(jnp.asarray, tree))
    np.testing.assert_array_equal(centers, whole[indices])
    assert np.all(WEIGHTS[np.asarray(indices)] > 0)


# -- random rows ----------------------------------------------------------------------------
@pytest.mark.parametrize("weighted", [False, True])
def test_random_rows_do_not_depend_on_the_chunking(weighted):
    weights = jnp.asarray(WEIGHTS, jnp.float32)
    for seed in range(3):
        key = jax.random.key(seed)
        whole = random_rows(key, weights, 6, weighted=weighted)
        for chunk_size in (1, 16, 64):
            chunked = make_chunks(jnp.asarray(X), weights, chunk_size).weights
            np.testing.assert_array_equal(random_rows(key, chunked, 6, weighted=weighted), whole)


def test_weighted_random_rows_are_drawn_in_proportion_to_the_weight():
    weights = jnp.asarray(WEIGHTS, jnp.float32)
    first = jit_small(jax.vmap(lambda key: random_rows(key, weights, 1, weighted=True)[0]))
    rows = np.asarray(first(_keys(20000)))
    frequencies = np.bincount(rows, minlength=N_ROWS) / rows.size
    np.testing.assert_allclose(frequencies, WEIGHTS / WEIGHTS.sum(), atol=0.003)


def test_random_rows_over_chunks():
    chunks = make_chunks(jnp.asarray(X), jnp.asarray(WEIGHTS, jnp.float32), 16)

    @jit_small(static_argnums=1)
    def draw(keys, n_rows):
        return jax.vmap(lambda key: random_rows(key, chunks.weights, n_rows))(keys)

    rows = np.asarray(draw(_keys(4000), 20))
    assert rows.dtype == np.int32
    assert all(len(set(row)) == 20 for row in rows.tolist())
    assert np.all(WEIGHTS[rows] > 0)
    np.testing.assert_array_equal(np.asarray(draw(_keys(4000), 5)), rows[:, :5])
    # Uniform over rows of positive weight, whatever their weight or chunk.
    frequencies = np.bincount(rows.ravel(), minlength=N_ROWS)[WEIGHTS > 0] / rows.size
    np.testing.assert_allclose(frequencies, 1 / np.sum(WEIGHTS > 0), atol=0.002)


def test_random_rows_over_chunks_in_64_bit_mode(x64):
    """Chunk offsets are int64 under x64; the rows stay int32 (the scan's carry)."""
    chunks = make_chunks(jnp.asarray(X), jnp.asarray(WEIGHTS), 16)
    rows = np.asarray(random_rows(jax.random.key(0), chunks.weights, 5))
    assert rows.dtype == np.int32 and np.all(WEIGHTS[rows] > 0)


def test_more_random_rows_than_a_chunk():
    weights = jnp.ones((4, 3))
    rows = random_rows(jax.random.key(0), weights, 7)
    assert sorted(set(rows.tolist())) == sorted(rows.tolist()) and rows.max() < 12

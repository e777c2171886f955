"""The k-means model (Lloyd as hard EM) against scikit-learn's Lloyd and its own contract.

Reference fits run scikit-learn's ``KMeans(init=centres, n_init=1, algorithm="lloyd")``
from the same initial centres in float64; jaxem's absolute ``tol`` is scikit-learn's
relative one times the mean feature variance.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans as SklearnKMeans
from sklearn.cluster import kmeans_plusplus as sklearn_kmeans_plusplus
from sklearn.exceptions import ConvergenceWarning

import jaxem
from jaxem._iterate import make_chunks
from jaxem.seeding import KMeansParams, kmeans_plusplus, kmeans_plusplus_chunked, nearest_centers
from tests.conftest import make_blobs

MAX_ITER = 300


def _fit(x, centers, *, tol=0.0, weights=None, chunk_size=None, max_iter=MAX_ITER):
    """jaxem Lloyd from ``centers`` ((K, D) or (R, K, D)) with scikit-learn's relative tol."""
    centers = np.asarray(centers)
    n_restarts = 1 if centers.ndim == 2 else centers.shape[0]
    return jaxem.fit(
        jaxem.kmeans(centers.shape[-2]),
        x,
        key=jax.random.key(0),
        n_restarts=n_restarts,
        init_params=KMeansParams(centers),
        tol=tol * np.var(x, axis=0).mean(),
        weights=weights,
        chunk_size=chunk_size,
        max_iter=max_iter,
    )


def _final(x, centers, weights=None):
    """Labels and inertia of a final assignment step, as scikit-learn computes them."""
    labels = np.asarray(nearest_centers(jnp.asarray(x), jnp.asarray(centers))[0])
    weights = np.ones(len(x)) if weights is None else weights
    return labels, float(weights @ np.sum((x - np.asarray(centers)[labels]) ** 2, axis=1))


def _sklearn(x, centers, *, tol=0.0, weights=None):
    return SklearnKMeans(
        len(centers), init=centers, n_init=1, algorithm="lloyd", tol=tol, max_iter=MAX_ITER
    ).fit(x, sample_weight=weights)


def _assert_matches_sklearn(x, init, *, tol, weights=None):
    ours = _fit(x, init, tol=tol, weights=weights)
    theirs = _sklearn(x, init, tol=tol, weights=weights)
    labels, inertia = _final(x, ours.params.centers, weights)
    np.testing.assert_allclose(ours.params.centers, theirs.cluster_centers_, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(labels, theirs.labels_)
    np.testing.assert_allclose(inertia, theirs.inertia_, rtol=1e-10, atol=1e-12)
    assert ours.n_iter == theirs.n_iter_
    return ours


def _blobs():
    return make_blobs(n_samples=300, n_features=2, n_clusters=3, seed=0)[0]


def _datasets(faithful):
    blobs = _blobs()
    wide, _ = make_blobs(n_samples=240, n_features=5, n_clusters=4, seed=1, spread=2.0)
    return {"blobs": (blobs, 3), "wide-blobs": (wide, 4), "faithful": (faithful, 3)}


@pytest.mark.parametrize("tol", [1e-4, 0.0])
def test_equals_sklearn_lloyd_from_the_same_centres(x64, faithful, tol):
    for name, (x, k) in _datasets(faithful).items():
        init = x[np.random.default_rng(3).choice(len(x), k, replace=False)]
        ours = _assert_matches_sklearn(x, init, tol=tol)
        assert ours.converged, name


def test_equals_sklearn_when_stopped_by_max_iter(x64):
    x = _blobs()
    init = x[[0, 1, 2]]
    ours = _fit(x, init, max_iter=1)
    theirs = SklearnKMeans(3, init=init, n_init=1, tol=0.0, max_iter=1).fit(x)
    np.testing.assert_allclose(ours.params.centers, theirs.cluster_centers_, rtol=1e-10)
    assert ours.n_iter == theirs.n_iter_ == 1 and not ours.converged
    np.testing.assert_array_equal(_final(x, ours.params.centers)[0], theirs.labels_)


def test_inertia_never_increases_for_any_restart(x64):
    x, _ = make_blobs(300, 2, n_clusters=5, seed=2, spread=2.0)  # overlapping: many steps
    result = jaxem.fit(jaxem.kmeans(6), x, key=jax.random.key(4), n_restarts=8, tol=0.0)
    trace = np.asarray(result.restarts.trace)  # -inertia / total weight, NaN-padded
    assert np.asarray(result.restarts.n_iter).max() > 5
    for row, n_iter in zip(trace, np.asarray(result.restarts.n_iter)):
        assert np.all(np.isfinite(row[:n_iter])) and np.all(np.isnan(row[n_iter:]))
        assert np.all(np.diff(row[:n_iter]) >= -1e-12 * np.abs(row[0])), row[:n_iter]


def _far_init(x, k, n_far, seed=0):
    """``k`` centres: ``k - n_far`` data rows and ``n_far`` points far from all data."""
    rng = np.random.default_rng(seed)
    rows = x[rng.choice(len(x), k - n_far, replace=False)]
    far = x.max(axis=0) + 100.0 * (1.0 + np.arange(n_far))[:, None]
    return np.concatenate([rows, far])


def _three_inits():
    """Data and three inits with 0, 1 and 3 clusters empty at the first step."""
    x, _ = make_blobs(n_samples=200, n_features=3, n_clusters=4, seed=5)
    return x, np.stack([_far_init(x, 4, n_far, seed=n_far) for n_far in (0, 1, 3)])


def test_batched_restarts_equal_independent_single_runs(x64):
    x, inits = _three_inits()
    batched = _fit(x, inits, tol=1e-4)
    for r, init in enumerate(inits):
        single = _fit(x, init, tol=1e-4)
        np.testing.assert_allclose(batched.restarts.params.centers[r], single.params.centers)
        assert int(batched.restarts.n_iter[r]) == single.n_iter
        np.testing.assert_allclose(batched.restarts.log_likelihood[r], single.log_likelihood)


def test_chunked_equals_unchunked_including_relocation(x64):
    # Three empty clusters at the first step: the farthest rows come from several chunks.
    x, inits = _three_inits()
    whole = _fit(x, inits, tol=1e-4)
    chunked = _fit(x, inits, tol=1e-4, chunk_size=37)
    np.testing.assert_allclose(
        whole.restarts.params.centers, chunked.restarts.params.centers, rtol=1e-10, atol=1e-10
    )
    np.testing.assert_array_equal(whole.restarts.n_iter, chunked.restarts.n_iter)
    assert len(np.unique(_final(x, chunked.restarts.params.centers[2])[0])) == 4


def test_sample_weights_equal_duplicated_rows(x64, faithful):
    x = faithful
    counts = np.arange(len(x)) % 3 + 1
    init = x[[5, 50, 100]]
    weighted = _fit(x, init, tol=1e-4, weights=counts.astype(float))
    repeated = _fit(np.repeat(x, counts, axis=0), init, tol=1e-4)
    np.testing.assert_allclose(weighted.params.centers, repeated.params.centers, rtol=1e-10)
    assert weighted.n_iter == repeated.n_iter
    np.testing.assert_allclose(weighted.log_likelihood, repeated.log_likelihood, rtol=1e-10)
    # ... and both equal scikit-learn's weighted Lloyd.
    _assert_matches_sklearn(x, init, tol=1e-4, weights=counts.astype(float))


def test_one_empty_cluster_is_reseeded_exactly_as_sklearn(x64):
    x = _blobs()
    init = _far_init(x, 3, 1)
    # The re-seeding step itself (the farthest row moves, leaving its cluster) ...
    first = _fit(x, init, max_iter=1)
    theirs = SklearnKMeans(3, init=init, n_init=1, max_iter=1).fit(x)
    np.testing.assert_allclose(first.params.centers, theirs.cluster_centers_, rtol=1e-10)
    # ... and the whole fit.
    ours = _assert_matches_sklearn(x, init, tol=1e-4)
    labels, _ = _final(x, ours.params.centers)
    assert np.all(np.isfinite(ours.params.centers))
    assert len(np.unique(labels)) == 3


def test_several_empty_clusters_are_reseeded_like_sklearn(x64):
    # scikit-learn hands the farthest rows to the empty clusters in argpartition order,
    # so the clusters may come out permuted: compare as sets.
    x, _ = make_blobs(n_samples=300, n_features=2, n_clusters=5, seed=7)
    init = _far_init(x, 5, 3)
    ours = _fit(x, init, tol=1e-4)
    theirs = _sklearn(x, init, tol=1e-4)
    centers = np.asarray(ours.params.centers)
    assert np.all(np.isfinite(centers))
    order = np.lexsort(centers.T)
    np.testing.assert_allclose(
        centers[order], theirs.cluster_centers_[np.lexsort(theirs.cluster_centers_.T)], rtol=1e-10
    )
    labels, inertia = _final(x, centers)
    assert len(np.unique(labels)) == 5
    np.testing.assert_allclose(inertia, theirs.inertia_, rtol=1e-10, atol=1e-12)
    assert ours.n_iter == theirs.n_iter_


def test_more_clusters_than_distinct_points_stays_finite(x64):
    # Every row sits on a centre: nothing to re-seed (scikit-learn's rule). The empty
    # cluster keeps its centre, here a copy of the largest cluster's, where scikit-learn
    # puts it; re-seeding it with a row would move it to (0, 0).
    x = np.repeat(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 5.0]]), [4, 4, 6], axis=0)
    init = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 5.0], [0.0, 5.0]])
    with pytest.warns(ConvergenceWarning, match="distinct clusters"):  # scikit-learn's
        ours = _assert_matches_sklearn(x, init, tol=1e-4)
    labels, inertia = _final(x, ours.params.centers)
    assert len(np.unique(labels)) == 3 and inertia == 0.0
    # From k-means++ seeds too: finite, every distinct row its own cluster.
    result = jaxem.fit(jaxem.kmeans(5), x, key=jax.random.key(0), n_restarts=4)
    assert np.all(np.isfinite(result.restarts.params.centers))
    assert len(np.unique(_final(x, result.params.centers)[0])) == 3


def test_chunks_are_sized_by_the_number_of_clusters():
    # The engine sizes chunks by the model's row_width; without it a k-means E-step
    # ran on all rows at once (an (R, K, n) distance array; 10x slower at n = 2e5).
    model = jaxem.kmeans(64)
    assert model.row_width(np.zeros((5, 3))) == 64
    assert jaxem.engine.default_chunk_size(200_000, 8, model.row_width(None)) == 4096


def test_model_predict_log_prob_and_bad_arguments():
    model = jaxem.kmeans(2)
    params = KMeansParams(jnp.array([[0.0, 0.0], [4.0, 0.0]]))
    x = jnp.array([[1.0, 0.0], [3.0, 1.0]])
    np.testing.assert_array_equal(model.predict(params, x), [0, 1])
    np.testing.assert_allclose(model.log_prob(params, x), [-1.0, -2.0])
    assert model.n_parameters(2) == 4
    with pytest.raises(ValueError, match="n_clusters must be a positive int, got 0"):
        jaxem.kmeans(0)
    with pytest.raises(ValueError, match="init must be 'k-means\\+\\+' or 'random', got 'kmeans'"):
        jaxem.kmeans(2, init="kmeans")


def test_nearest_centers_breaks_ties_to_the_lowest_index():
    x = jnp.array([[0.0, 0.0], [2.0, 0.0], [1.0, 0.0]])
    centers = jnp.array([[2.0, 0.0], [0.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    labels, distances = nearest_centers(x, centers)
    np.testing.assert_array_equal(labels, [1, 0, 0])
    np.testing.assert_allclose(distances, [0.0, 0.0, 1.0])


# -- seeding: one compiled program (same data shape, k and number of keys) ------------------
SEED_DATA = make_blobs(n_samples=300, n_features=2, n_clusters=6, seed=4, spread=3.0)[0]


@functools.partial(jax.jit, static_argnums=(2, 3))
def _seeds(x, weights, k, chunk_size=None, n_keys=2000):
    """k-means++ of ``n_keys`` keys, over all rows or over chunks of ``chunk_size``."""
    keys = jax.random.split(jax.random.key(11), n_keys)
    if chunk_size is None:
        return jax.vmap(lambda key: kmeans_plusplus(key, x, weights, k))(keys)
    chunks = make_chunks(x, weights, chunk_size)
    return jax.vmap(lambda key: kmeans_plusplus_chunked(key, chunks, k))(keys)


def _potential(x, centers, weights=None):
    weights = np.ones(len(x)) if weights is None else weights
    return float(weights @ np.min(((x[:, None] - centers[None]) ** 2).sum(-1), axis=1))


@pytest.mark.parametrize("chunk_size", [None, 64])
def test_kmeans_plusplus_picks_distinct_rows_following_the_weights(chunk_size):
    x = SEED_DATA.astype(np.float32)
    weights = np.where(np.arange(300) % 3 == 0, 0.0, 1.0 + np.arange(300) % 4).astype(np.float32)
    centers, indices = _seeds(x, weights, 6, chunk_size)
    indices = np.asarray(indices)
    assert all(len(set(row)) == 6 for row in indices)
    assert np.all(weights[indices] > 0)  # zero-weight rows never chosen
    np.testing.assert_array_equal(np.asarray(centers), x[indices])
    # The first seed is drawn with probability proportional to the weight.
    frequencies = np.bincount(weights[indices[:, 0]].astype(int), minlength=5)[1:] / 2000
    expected = np.array([w * np.sum(weights == w) for w in (1, 2, 3, 4)]) / weights.sum()
    np.testing.assert_allclose(frequencies, expected, atol=0.035)


@pytest.mark.parametrize("chunk_size", [None, 64])
def test_kmeans_plusplus_potential_is_comparable_to_sklearn(chunk_size):
    x = SEED_DATA
    centers, _ = _seeds(x.astype(np.float32), np.ones(300, np.float32), 6, chunk_size)
    ours = np.mean([_potential(x, np.asarray(c, np.float64)) for c in centers[:300]])
    theirs = np.mean(
        [_potential(x, sklearn_kmeans_plusplus(x, 6, random_state=s)[0]) for s in range(300)]
    )
    assert 0.9 < ours / theirs < 1.1, (ours, theirs)


def test_random_init_draws_distinct_rows_of_positive_weight():
    x = np.arange(40.0, dtype=np.float32)[:, None]
    weights = np.where(np.arange(40) < 20, 0.0, 1.0).astype(np.float32)
    result = jaxem.fit(
        jaxem.kmeans(5, init="random"),
        x,
        key=jax.random.key(0),
        n_restarts=16,
        weights=weights,
        max_iter=0,
    )
    centers = np.asarray(result.restarts.params.centers)[..., 0]
    assert np.all(centers >= 20)
    assert all(len(set(row)) == 5 for row in centers)

"""``jaxem.KMeans`` as a drop-in for ``sklearn.cluster.KMeans``.

Fits from the same initial centres match scikit-learn in float64 (the ``x64``
fixture); float32 is the default. Small data sets padded to the same row bucket
share compiled programs, which keeps this file fast.
"""

import re
import warnings

import jax
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.cluster import KMeans as SklearnKMeans
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.metrics import euclidean_distances
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

import jaxem
from jaxem.estimators.kmeans import KMeans
from tests.conftest import make_blobs

ATTRIBUTES = ("cluster_centers_", "labels_", "inertia_", "n_iter_")


def _blobs(n_samples=300, n_features=2, n_clusters=3, seed=0):
    return make_blobs(n_samples=n_samples, n_features=n_features, n_clusters=n_clusters, seed=seed)[
        0
    ]


def _assert_same_fit(ours, theirs, rtol=1e-10):
    np.testing.assert_allclose(ours.cluster_centers_, theirs.cluster_centers_, rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(ours.labels_, theirs.labels_)
    np.testing.assert_allclose(ours.inertia_, theirs.inertia_, rtol=rtol)
    assert ours.n_iter_ == theirs.n_iter_


# -- 1. the same fit as scikit-learn from the same initial centres --------------------------
@pytest.mark.parametrize("tol", [1e-4, 0.0])
def test_matches_sklearn_from_an_array_init(x64, faithful, tol):
    for x, k in [(_blobs(), 3), (faithful, 4)]:
        init = x[np.random.default_rng(1).choice(len(x), k, replace=False)]
        ours = KMeans(k, init=init, tol=tol).fit(x)
        theirs = SklearnKMeans(k, init=init, tol=tol).fit(x)
        _assert_same_fit(ours, theirs)
        assert ours.cluster_centers_.dtype == np.float64 and ours.labels_.dtype == np.int32
        assert isinstance(ours.inertia_, float) and isinstance(ours.n_iter_, int)


def test_matches_sklearn_with_sample_weights_and_max_iter(x64, faithful):
    weights = np.random.default_rng(2).uniform(0.0, 3.0, len(faithful))
    init = faithful[[0, 1, 2]]
    for max_iter in (2, 300):
        ours = KMeans(3, init=init, max_iter=max_iter).fit(faithful, sample_weight=weights)
        theirs = SklearnKMeans(3, init=init, max_iter=max_iter).fit(faithful, sample_weight=weights)
        _assert_same_fit(ours, theirs)
        assert ours.score(faithful, sample_weight=weights) == pytest.approx(-theirs.inertia_)


def test_sample_weights_equal_repeated_rows(x64, faithful):
    counts = np.arange(len(faithful)) % 4  # zero weight = row removed
    init = faithful[[1, 2, 3]]
    weighted = KMeans(3, init=init).fit(faithful, sample_weight=counts)
    repeated = KMeans(3, init=init).fit(np.repeat(faithful, counts, axis=0))
    np.testing.assert_allclose(weighted.cluster_centers_, repeated.cluster_centers_, rtol=1e-10)
    np.testing.assert_allclose(weighted.inertia_, repeated.inertia_, rtol=1e-10)
    assert weighted.n_iter_ == repeated.n_iter_
    np.testing.assert_array_equal(weighted.predict(faithful), repeated.predict(faithful))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_precision_follows_the_input(faithful, dtype):
    assert not jax.config.read("jax_enable_x64")
    faithful = faithful.astype(dtype)
    init = faithful[[0, 100, 200]]
    ours = KMeans(3, init=init).fit(faithful)
    theirs = SklearnKMeans(3, init=init).fit(faithful)
    assert ours.cluster_centers_.dtype == dtype
    assert ours.transform(faithful).dtype == dtype
    assert not jax.config.read("jax_enable_x64")
    np.testing.assert_allclose(ours.cluster_centers_, theirs.cluster_centers_, rtol=1e-5)
    np.testing.assert_array_equal(ours.labels_, theirs.labels_)
    np.testing.assert_allclose(ours.inertia_, theirs.inertia_, rtol=1e-5)


# -- 2. n_init, callable init and the choice of the best initialisation ---------------------
def _counting_init(calls):
    def init(X, n_clusters, random_state):
        calls.append(X)
        return X[random_state.choice(len(X), n_clusters, replace=False)]

    return init


@pytest.mark.parametrize("n_init", ["auto", 3])
def test_n_init_and_callable_init_as_sklearn(x64, n_init):
    x = _blobs()
    ours_calls, their_calls = [], []
    ours = KMeans(3, init=_counting_init(ours_calls), n_init=n_init, random_state=0).fit(x)
    theirs = SklearnKMeans(3, init=_counting_init(their_calls), n_init=n_init, random_state=0)
    theirs.fit(x)
    # scikit-learn 1.9: "auto" runs 10 initialisations for a callable.
    assert len(ours_calls) == len(their_calls) == (10 if n_init == "auto" else 3)
    # The callable sees the centred data, as scikit-learn's does; the same draws from
    # the same RandomState give the same centres, hence the same best fit.
    np.testing.assert_allclose(ours_calls[0], their_calls[0])
    _assert_same_fit(ours, theirs)


@pytest.mark.parametrize(
    ("init", "expected"), [("k-means++", 1), ("random", 10), (np.zeros((3, 2)), 1)]
)
def test_n_init_auto_counts_initialisations(capsys, init, expected):
    km = KMeans(3, init=init, n_init="auto", max_iter=1, verbose=1, random_state=0).fit(_blobs())
    assert capsys.readouterr().out.count("Initialization complete") == expected
    assert km._n_init == expected  # scikit-learn's resolved count (its tests read it)


def test_array_init_with_several_n_init_warns_and_runs_one(capsys):
    message = (
        "Explicit initial center position passed: performing only one init in KMeans "
        "instead of n_init=4."
    )
    with pytest.warns(RuntimeWarning, match=re.escape(message)):
        km = KMeans(3, init=_blobs()[:3], n_init=4, verbose=1).fit(_blobs())
    assert capsys.readouterr().out.count("Initialization complete") == 1
    assert km._n_init == 1


def test_best_initialisation_has_the_lowest_final_inertia(x64):
    # After one iteration the first init has the higher inertia although its initial
    # centres had the lower one: the engine's pre-update criterion would pick it.
    x = np.array([0.0, 1.0, 2.0, 10.0, 11.0, 12.0, 30.0, 31.0])[:, None]
    inits = iter([[[9.6], [-0.8]], [[20.2], [32.1]]])

    def init(X, n_clusters, random_state):
        return np.asarray(next(inits)) - x.mean()  # X is centred: shift to its frame

    ours = KMeans(2, init=init, n_init=2, max_iter=1).fit(x)
    np.testing.assert_allclose(ours.cluster_centers_, [[6.0], [30.5]])
    np.testing.assert_allclose(ours.inertia_, 154.5)
    np.testing.assert_allclose(ours.inertia_, -ours.score(x))
    inits = iter([[[9.6], [-0.8]], [[20.2], [32.1]]])
    _assert_same_fit(ours, SklearnKMeans(2, init=init, n_init=2, max_iter=1).fit(x))


def test_restarts_search_finds_sklearn_quality(faithful):
    ours = KMeans(4, init="random", n_init=8, random_state=0).fit(faithful)
    theirs = SklearnKMeans(4, init="random", n_init=8, random_state=0).fit(faithful)
    assert ours.inertia_ <= theirs.inertia_ * (1 + 1e-4)
    assert len(np.unique(ours.labels_)) == 4


# -- 3. predict, transform, score, fit_* ----------------------------------------------------
def test_methods_agree_with_each_other_and_sklearn(x64, faithful):
    init = faithful[[3, 30, 300 % len(faithful)]]
    ours = KMeans(3, init=init).fit(faithful)
    theirs = SklearnKMeans(3, init=init).fit(faithful)
    np.testing.assert_array_equal(ours.predict(faithful), ours.labels_)
    np.testing.assert_array_equal(ours.predict(faithful[:7]), theirs.predict(faithful[:7]))
    np.testing.assert_allclose(ours.transform(faithful), theirs.transform(faithful), rtol=1e-10)
    np.testing.assert_allclose(ours.score(faithful), theirs.score(faithful), rtol=1e-10)
    np.testing.assert_allclose(ours.score(faithful), -ours.inertia_, rtol=1e-12)
    np.testing.assert_array_equal(clone(ours).fit_predict(faithful), ours.labels_)
    np.testing.assert_allclose(clone(ours).fit_transform(faithful), ours.transform(faithful))
    assert ours.get_feature_names_out().tolist() == ["kmeans0", "kmeans1", "kmeans2"]


def test_centres_set_by_hand_are_used_without_centring():
    km = KMeans(2)
    km.cluster_centers_ = np.array([[0.0, 0.0], [10.0, 0.0]], np.float32)
    np.testing.assert_array_equal(km.predict([[1.0, 0.0], [9.0, 1.0]]), [0, 1])
    np.testing.assert_allclose(km.transform([[1.0, 0.0]]), [[1.0, 9.0]])


def test_transform_is_euclidean_distance_to_the_centres():
    x = _blobs().astype(np.float32)
    km = KMeans(3, random_state=0).fit(x)
    expected = euclidean_distances(x, km.cluster_centers_)
    np.testing.assert_allclose(km.transform(x), expected, rtol=1e-5, atol=1e-5)


def test_verbose_prints_sklearn_lines(capsys):
    km = KMeans(3, n_init=1, random_state=0, verbose=1).fit(_blobs())
    out = capsys.readouterr().out
    assert out.startswith("Initialization complete\nIteration 0, inertia ")
    assert f"Converged at iteration {km.n_iter_ - 1}: center shift at most tol, within" in out
    # scikit-learn's test_kmeans_verbose patterns.
    assert re.search(r"center shift .* within tolerance", out)
    strict = KMeans(3, n_init=1, random_state=0, verbose=1, tol=0).fit(_blobs())
    out = capsys.readouterr().out
    assert re.search(r"Converged at iteration \d+: strict convergence\.", out)
    lines = [line for line in out.splitlines() if line.startswith("Iteration")]
    inertias = [float(line.split()[-1].rstrip(".")) for line in lines]
    assert len(inertias) == strict.n_iter_
    # Lloyd never increases the inertia; at strict convergence the last line is the
    # inertia of the final centres.
    assert np.all(np.diff(inertias) <= 1e-5 * inertias[0])
    np.testing.assert_allclose(inertias[-1], strict.inertia_, rtol=1e-5)


def test_elkan_gives_exactly_the_lloyd_result():
    x = _blobs(n_clusters=4, seed=3)
    for kwargs in ({"n_init": 3}, {"init": "random", "n_init": 2}):
        lloyd = KMeans(4, random_state=0, algorithm="lloyd", **kwargs).fit(x)
        elkan = KMeans(4, random_state=0, algorithm="elkan", **kwargs).fit(x)
        for name in ATTRIBUTES:
            np.testing.assert_array_equal(getattr(elkan, name), getattr(lloyd, name))


@pytest.mark.parametrize("copy_x", [True, False])
def test_x_is_never_modified(copy_x):
    x = _blobs()
    before = x.copy()
    KMeans(3, random_state=0, copy_x=copy_x).fit(x)
    np.testing.assert_array_equal(x, before)


# -- 3b. sparse input -----------------------------------------------------------------------
def _sparse_blobs():
    x = _blobs(n_samples=200, n_features=6, n_clusters=4, seed=5)
    return np.where(np.random.default_rng(6).random(x.shape) < 0.5, 0.0, x)


@pytest.mark.parametrize(
    "container", [sp.csr_matrix, sp.csr_array, sp.csc_matrix, sp.csc_array, sp.coo_matrix]
)
@pytest.mark.parametrize("block_elements", [None, 6 * 7])  # default, and 7 rows a block
def test_sparse_input_gives_the_dense_result(container, block_elements, monkeypatch):
    import jaxem.estimators.kmeans as module

    if block_elements is not None:
        monkeypatch.setattr(module, "_SPARSE_BLOCK_ELEMENTS", block_elements)
    x = _sparse_blobs()
    weights = np.random.default_rng(7).uniform(0.5, 2.0, len(x))
    dense = KMeans(4, n_init=3, random_state=0).fit(x, sample_weight=weights)
    sparse = KMeans(4, n_init=3, random_state=0).fit(container(x), sample_weight=weights)
    np.testing.assert_array_equal(sparse.labels_, dense.labels_)
    np.testing.assert_allclose(sparse.cluster_centers_, dense.cluster_centers_, rtol=1e-6)
    np.testing.assert_allclose(sparse.inertia_, dense.inertia_, rtol=1e-6)
    assert sparse.n_iter_ == dense.n_iter_
    queries = x[::3] + 0.5
    np.testing.assert_array_equal(sparse.predict(container(queries)), dense.predict(queries))
    np.testing.assert_allclose(
        sparse.transform(container(queries)), dense.transform(queries), rtol=1e-6
    )
    np.testing.assert_allclose(sparse.score(container(queries)), dense.score(queries), rtol=1e-6)
    np.testing.assert_array_equal(
        clone(sparse).fit_predict(container(x)), clone(dense).fit_predict(x)
    )
    np.testing.assert_allclose(
        clone(sparse).fit_transform(container(x)), clone(dense).fit_transform(x), rtol=1e-6
    )


def test_sparse_float32_and_init_choices():
    x = _sparse_blobs().astype(np.float32)
    rows = [0, 50, 100, 150]
    by_array = KMeans(4, init=x[rows]).fit(sp.csr_matrix(x))
    dense = KMeans(4, init=x[rows]).fit(x)
    # float32: the two data means (the centring offsets) may differ in the last bit.
    np.testing.assert_allclose(by_array.cluster_centers_, dense.cluster_centers_, atol=1e-6)
    np.testing.assert_array_equal(by_array.labels_, dense.labels_)
    assert by_array.cluster_centers_.dtype == np.float32
    # A callable init sees the sparse rows uncentred (as in scikit-learn); its centres
    # are in the data's coordinates.
    seen = []

    def init(X, n_clusters, random_state):
        seen.append(X)
        return X[rows].toarray()

    by_callable = KMeans(4, init=init, n_init=1).fit(sp.csr_matrix(x))
    assert sp.issparse(seen[0])
    np.testing.assert_allclose(by_callable.cluster_centers_, by_array.cluster_centers_)
    np.testing.assert_array_equal(by_callable.labels_, by_array.labels_)


def test_sparse_bad_input():
    x = sp.csr_matrix(_sparse_blobs())
    bad = x.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        KMeans(3).fit(bad)
    km = KMeans(3, random_state=0).fit(x)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        km.predict(bad)
    features = "X has 5 features, but KMeans is expecting 6 features as input."
    for method in ("predict", "transform", "score"):
        with pytest.raises(ValueError, match=features):
            getattr(km, method)(sp.csr_matrix(np.zeros((4, 5))))
    with pytest.raises(ValueError, match="n_samples=2 should be >= n_clusters=3"):
        KMeans(3).fit(x[:2])


# -- 4. degenerate data and bad input -------------------------------------------------------
def test_fewer_distinct_points_than_clusters_warns_like_sklearn():
    x = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 0.0]]), 3, axis=0)
    message = (
        "Number of distinct clusters (3) found smaller than n_clusters (5). "
        "Possibly due to duplicate points in X."
    )
    with pytest.warns(ConvergenceWarning, match=re.escape(message)):
        SklearnKMeans(5, random_state=0).fit(x)
    with pytest.warns(ConvergenceWarning, match=re.escape(message)):
        km = KMeans(5, random_state=0).fit(x)
    assert np.all(np.isfinite(km.cluster_centers_))
    assert km.inertia_ == 0.0 and len(np.unique(km.labels_)) == 3


def test_no_warning_when_every_cluster_is_used():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        KMeans(3, random_state=0).fit(_blobs())


@pytest.mark.parametrize(
    ("X", "message"),
    [
        ([[np.nan, 1.0], [1.0, 2.0]], "Input X contains NaN."),
        ([[np.inf, 1.0], [1.0, 2.0]], "Input X contains infinity"),
        (np.zeros((0, 2)), re.escape("Found array with 0 sample(s) (shape=(0, 2))")),
        (np.zeros(5), "Expected 2D array, got 1D array instead"),
        (np.zeros((5, 2, 2)), "Found array with dim 3"),
        (np.zeros((3, 2)), re.escape("n_samples=3 should be >= n_clusters=4.")),
    ],
)
def test_bad_training_data(X, message):
    with pytest.raises(ValueError, match=message):
        SklearnKMeans(4).fit(X)
    with pytest.raises(ValueError, match=message):
        KMeans(4).fit(X)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_clusters": 0}, "The 'n_clusters' parameter of KMeans must be an int in the range"),
        ({"init": "kmeans"}, "The 'init' parameter of KMeans must be a str among"),
        ({"n_init": 0}, "The 'n_init' parameter of KMeans must be a str among"),
        ({"max_iter": 0}, "The 'max_iter' parameter of KMeans must be an int in the range"),
        ({"tol": -1.0}, "The 'tol' parameter of KMeans must be a float in the range"),
        ({"algorithm": "auto"}, "The 'algorithm' parameter of KMeans must be a str among"),
        ({"copy_x": "yes"}, "The 'copy_x' parameter of KMeans must be an instance of"),
    ],
)
def test_invalid_parameters(params, message):
    with pytest.raises(InvalidParameterError, match=message):
        KMeans(**params).fit(_blobs())


def test_bad_initial_centres_and_weights():
    x = _blobs()
    shape = "The shape of the initial centers (2, 2) does not match the number of clusters 3."
    with pytest.raises(ValueError, match=re.escape(shape)):
        KMeans(3, init=np.zeros((2, 2))).fit(x)
    features = (
        "The shape of the initial centers (3, 3) does not match the number of features "
        "of the data 2."
    )
    with pytest.raises(ValueError, match=re.escape(features)):
        KMeans(3, init=np.zeros((3, 3))).fit(x)
    with pytest.raises(ValueError, match=re.escape(features)):
        KMeans(3, init=lambda X, k, random_state: np.zeros((3, 3))).fit(x)
    weights = np.ones(len(x))
    weights[0] = -1.0
    with pytest.raises(ValueError, match="Negative values in data passed to `sample_weight`"):
        KMeans(3).fit(x, sample_weight=weights)
    with pytest.raises(ValueError, match="Sample weights must contain at least one non-zero"):
        KMeans(3).fit(x, sample_weight=np.zeros(len(x)))
    with pytest.raises(
        ValueError, match=re.escape("sample_weight.shape == (3,), expected (300,)!")
    ):
        KMeans(3).fit(x, sample_weight=np.ones(3))


def test_predict_before_fit_and_wrong_feature_count():
    x = _blobs()
    message = "This KMeans instance is not fitted yet. Call 'fit' with appropriate arguments"
    for method in ("predict", "transform", "score"):
        with pytest.raises(NotFittedError, match=message):
            getattr(KMeans(3), method)(x)
    km = KMeans(3, random_state=0).fit(x)
    features = "X has 3 features, but KMeans is expecting 2 features as input."
    for method in ("predict", "transform", "score"):
        with pytest.raises(ValueError, match=features):
            getattr(km, method)(np.zeros((4, 3)))


def test_elkan_with_one_cluster_warns_and_runs_lloyd():
    message = "algorithm='elkan' doesn't make sense for a single cluster. Using 'lloyd' instead."
    with pytest.warns(RuntimeWarning, match=re.escape(message)):
        km = KMeans(1, algorithm="elkan").fit(_blobs())
    np.testing.assert_allclose(km.cluster_centers_[0], _blobs().mean(axis=0), rtol=1e-5)


# -- 5. scikit-learn API --------------------------------------------------------------------
def test_clone_and_pipeline():
    assert jaxem.KMeans is KMeans and jaxem.estimators.KMeans is KMeans
    x = _blobs()
    km = KMeans(3, n_init=2, random_state=0)
    assert clone(km).get_params() == km.get_params()
    pipeline = make_pipeline(StandardScaler(), clone(km)).fit(x)
    labels = pipeline.predict(x)
    assert labels.shape == (300,) and len(np.unique(labels)) == 3
    assert pipeline.transform(x).shape == (300, 3)
    assert np.isfinite(pipeline.score(x))


def _expected_failed_checks(estimator):
    reason = (
        "Random seeding: the check shuffles the weighted rows, so JAX's generator draws "
        "other k-means++ seeds than for the repeated rows and the fits differ; weights "
        "equal repetition exactly from the same initial centres "
        "(test_sample_weights_equal_repeated_rows)."
    )
    return {
        "check_sample_weight_equivalence_on_dense_data": reason,
        "check_sample_weight_equivalence_on_sparse_data": reason,
    }


@parametrize_with_checks(
    [KMeans(n_clusters=2, n_init=2, max_iter=5)], expected_failed_checks=_expected_failed_checks
)
def test_sklearn_estimator_checks(estimator, check):
    """scikit-learn's checks, with the small settings scikit-learn uses for its KMeans."""
    check(estimator)

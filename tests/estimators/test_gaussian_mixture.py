"""jaxem.GaussianMixture against scikit-learn's GaussianMixture.

XLA compilation dominates the run time on CPU (1-4 s per program), so the tests
share programs: a program is keyed by (covariance type, n_components, init,
n_init, max_iter, padded rows, n_features, dtype), and ``tol`` and ``reg_covar``
are array inputs. Most tests use ``_shared()`` on 257-512 rows of 2 features (padded
to 512, like Old Faithful's 272 rows).
"""

import re
import warnings

import jax
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.mixture import GaussianMixture as SKGaussianMixture
from sklearn.model_selection import GridSearchCV, ShuffleSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

import jaxem
from jaxem import GaussianMixture, engine
from jaxem.estimators import _validation

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
ATTRIBUTES = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")


def _shared(**params):
    """The configuration most tests share (one compiled program per covariance type)."""
    return GaussianMixture(
        **{"n_components": 2, "init_params": "random_from_data", "random_state": 0, **params}
    )


def _three_blobs(seed=0, n_per_blob=100):
    """300 rows, 2 features: three blobs, so two components have several local optima."""
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [5.0, 0.0], [2.5, 7.0]])
    return np.concatenate([c + rng.normal(size=(n_per_blob, 2)) for c in centers])


def _initial_parameters(X, covariance_type, rows=(0, 100, 200)):
    """weights_init, means_init, precisions_init: data rows and the data's variances."""
    n_components = len(rows)
    precision = 1.0 / X.var(axis=0)
    precisions = {
        "full": np.stack([np.diag(precision)] * n_components),
        "tied": np.diag(precision),
        "diag": np.stack([precision] * n_components),
        "spherical": np.full(n_components, precision.mean()),
    }[covariance_type]
    return dict(
        weights_init=np.full(n_components, 1.0 / n_components),
        means_init=X[list(rows)],
        precisions_init=precisions,
    )


def _copy_into_sklearn(gm):
    """A scikit-learn estimator holding jaxem's fitted parameters."""
    sk = SKGaussianMixture(
        gm.n_components, covariance_type=gm.covariance_type, random_state=gm.random_state
    )
    for name in ATTRIBUTES + ("n_features_in_", "converged_", "n_iter_", "lower_bound_"):
        setattr(sk, name, getattr(gm, name))
    return sk


# -- 1. float64: scikit-learn's numbers from the same initial parameters --------------------
@pytest.mark.parametrize(
    ("covariance_type", "tol"),
    [("full", 1e-5), ("tied", 1e-6), ("diag", 1e-7), ("spherical", 1e-8)],
)
def test_matches_sklearn_float64(faithful, x64, covariance_type, tol):
    params = dict(n_components=3, covariance_type=covariance_type, tol=tol, random_state=0)
    params.update(_initial_parameters(faithful, covariance_type))
    gm = GaussianMixture(**params).fit(faithful)
    sk = SKGaussianMixture(**params).fit(faithful)

    assert 20 <= sk.n_iter_ <= 50
    assert gm.n_iter_ == sk.n_iter_ and gm.converged_ and sk.converged_
    for name in ATTRIBUTES:
        assert getattr(gm, name).dtype == np.float64
        np.testing.assert_allclose(getattr(gm, name), getattr(sk, name), rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(gm.lower_bound_, sk.lower_bound_, rtol=1e-6)
    np.testing.assert_allclose(gm.lower_bounds_, sk.lower_bounds_, rtol=1e-6)

    # Every method, against scikit-learn holding jaxem's parameters.
    same = _copy_into_sklearn(gm)
    np.testing.assert_allclose(gm.score_samples(faithful), same.score_samples(faithful), rtol=1e-9)
    np.testing.assert_allclose(gm.predict_proba(faithful), same.predict_proba(faithful), atol=1e-9)
    np.testing.assert_array_equal(gm.predict(faithful), same.predict(faithful))
    np.testing.assert_allclose(gm.score(faithful), same.score(faithful), rtol=1e-12)
    np.testing.assert_allclose(gm.bic(faithful), same.bic(faithful), rtol=1e-12)
    np.testing.assert_allclose(gm.aic(faithful), same.aic(faithful), rtol=1e-12)
    # The formulas, with the free parameters counted by hand (K=3, D=2).
    n_parameters = {"full": 17, "tied": 11, "diag": 14, "spherical": 11}[covariance_type]
    log_likelihood = gm.score(faithful) * len(faithful)
    np.testing.assert_allclose(
        gm.bic(faithful), -2 * log_likelihood + n_parameters * np.log(len(faithful))
    )
    np.testing.assert_allclose(gm.aic(faithful), -2 * log_likelihood + 2 * n_parameters)
    X_gm, y_gm = gm.sample(50)
    X_sk, y_sk = same.sample(50)
    assert X_gm.dtype == np.float64 and y_gm.dtype == np.int64
    np.testing.assert_array_equal(y_gm, y_sk)
    np.testing.assert_allclose(X_gm, X_sk, rtol=1e-9)


def test_warm_start_matches_sklearn(faithful, x64):
    """Each warm fit continues the last one; jaxem and scikit-learn stay together fit by
    fit (n_init is ignored after the first fit), and once converged the next fit stops
    after one iteration, as scikit-learn's (its first change is measured from the
    previous fit's lower bound)."""
    params = dict(n_components=3, tol=1e-7, warm_start=True, n_init=3)
    params.update(_initial_parameters(faithful, "full"))
    gm, sk = GaussianMixture(**params), SKGaussianMixture(**params)
    n_iters, lower_bound = [], -np.inf
    for _ in range(5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm.fit(faithful)
            sk.fit(faithful)
        n_iters.append(gm.n_iter_)
        assert (gm.n_iter_, gm.converged_) == (sk.n_iter_, sk.converged_)
        np.testing.assert_allclose(gm.means_, sk.means_, rtol=1e-6)
        np.testing.assert_allclose(gm.lower_bound_, sk.lower_bound_, rtol=1e-9)
        assert gm.lower_bounds_[0] >= lower_bound  # continued, not restarted
        lower_bound = gm.lower_bound_
    assert n_iters[:2] == [100, 100] and n_iters[-1] == 1 and gm.converged_


# -- 2. every init; partial initial parameters; n_init keeps the best restart ---------------
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_each_init_finds_the_optimum(faithful, init_params):
    """Faithful has one two-component optimum: every init reaches scikit-learn's."""
    params = dict(n_components=2, init_params=init_params, tol=1e-5, random_state=0)
    gm = GaussianMixture(**params).fit(faithful)
    sk = SKGaussianMixture(**params).fit(faithful)
    assert gm.converged_
    np.testing.assert_allclose(gm.lower_bound_, sk.lower_bound_, rtol=1e-5)
    order = np.argsort(gm.means_[:, 0])
    np.testing.assert_allclose(gm.means_[order], np.sort(sk.means_, axis=0), rtol=1e-3)
    np.testing.assert_allclose(np.sort(gm.weights_), np.sort(sk.weights_), atol=1e-3)


def test_partial_initial_parameters_follow_sklearn(faithful):
    """means_init alone: the weights and covariances are the M-step of the k-means
    responsibilities (covariances around the k-means means, not means_init), as
    scikit-learn; k-means on Faithful's two clusters gives both the same partition."""
    means_init = faithful[[0, 1]]
    params = dict(n_components=2, means_init=means_init, max_iter=0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # max_iter=0 is an initialisation: no warning
        gm = GaussianMixture(**params).fit(faithful)
    sk = SKGaussianMixture(**params).fit(faithful)
    # Centring and uncentring the data may move the last bit.
    np.testing.assert_allclose(gm.means_, means_init, rtol=1e-15)
    for name in ("weights_", "precisions_cholesky_", "covariances_"):
        np.testing.assert_allclose(getattr(gm, name), getattr(sk, name), rtol=1e-5, err_msg=name)
    assert gm.means_init is means_init  # constructor arguments are never rewritten
    # max_iter=0: the initial parameters, as scikit-learn (the engine used to refuse it).
    assert (gm.n_iter_, gm.converged_, gm.lower_bounds_) == (0, False, [])
    assert gm.lower_bound_ == -np.inf


def test_lower_bounds_trace_the_kept_restart():
    """scikit-learn 1.9's lower_bounds_: the kept initialisation's lower bound at each of
    its n_iter_ iterations, as a list of floats ending with lower_bound_."""
    X = _three_blobs()
    gm = _shared(n_init=8, tol=1e-4, random_state=3).fit(X)
    best = gm.restarts_.trace[gm.best_restart_]
    assert gm.best_restart_ > 0  # not just the first restart's trace
    assert isinstance(gm.lower_bounds_, list) and len(gm.lower_bounds_) == gm.n_iter_ > 2
    assert all(type(value) is float for value in gm.lower_bounds_)
    np.testing.assert_array_equal(gm.lower_bounds_, best[: gm.n_iter_])
    assert gm.lower_bounds_[-1] == gm.lower_bound_
    assert 0 <= gm.lower_bounds_[-1] - gm.lower_bounds_[-2] < gm.tol  # converged, EM ascent
    assert np.all(np.diff(gm.lower_bounds_) > -1e-5)
    # A warm start that converges at its first iteration has one value, as scikit-learn.
    gm.set_params(warm_start=True).fit(X)
    assert (gm.n_iter_, len(gm.lower_bounds_)) == (1, 1)


def test_n_init_keeps_the_best_restart():
    """Restart keys do not depend on n_init, so the single-init run is restart 0 of the
    n_init=8 run: the batch can only do as well or better."""
    X = _three_blobs()
    gains = []
    for seed in range(4):
        single = _shared(random_state=seed).fit(X)
        batched = _shared(random_state=seed, n_init=8).fit(X)
        assert batched.lower_bound_ >= single.lower_bound_
        gains.append(batched.lower_bound_ - single.lower_bound_)
    assert max(gains) > 0.1  # some single init was beaten by another restart


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("max_iter", [1, 100])
def test_kept_restart_does_not_depend_on_the_batch(max_iter):
    """The kept restart is run again alone: its result is bit for bit what n_init=1
    gives when restart 0 wins (a batch of 10 restarts moved the last bits of restart
    0 before: scikit-learn's test_init failed by 2e-16), and near-ties within
    rounding go to restart 0."""
    kept_zero = 0
    for seed in range(6):
        X = np.random.RandomState(seed).randn(50, 2) + np.repeat([[0, 0], [2, 2]], 25, axis=0)
        options = dict(n_components=2, max_iter=max_iter, random_state=seed, tol=1e-8)
        single = GaussianMixture(n_init=1, **options).fit(X)
        batched = GaussianMixture(n_init=10, **options).fit(X)
        assert batched.lower_bound_ >= single.lower_bound_
        assert batched.lower_bounds_[-1] == batched.lower_bound_
        if batched.best_restart_ == 0:
            kept_zero += 1
            for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
                np.testing.assert_array_equal(getattr(batched, name), getattr(single, name))
    assert kept_zero >= 2


# -- 3. bad input, every message pinned -----------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    return _shared().fit(_three_blobs())


@pytest.mark.parametrize(
    ("X", "message"),
    [
        ([[0.0, np.nan], [1.0, 2.0], [3.0, 4.0]], "Input X contains NaN"),
        (
            [[0.0, np.inf], [1.0, 2.0], [3.0, 4.0]],
            "Input X contains infinity or a value too large for dtype('float64')",
        ),
        (
            np.empty((0, 2)),
            "Found array with 0 sample(s) (shape=(0, 2)) while a minimum of 2 is required "
            "by GaussianMixture.",
        ),
        (np.arange(5.0), "Expected 2D array, got 1D array instead"),
        (
            np.zeros((4, 2, 2)),
            "Found array with dim 3, while dim <= 2 is required by GaussianMixture.",
        ),
        (
            [[0.0, 1.0]],
            "Found array with 1 sample(s) (shape=(1, 2)) while a minimum of 2 is required",
        ),
        (
            [[0.0, 1.0], [1.0, 2.0]],
            "Expected n_samples >= n_components but got n_components = 3, n_samples = 2",
        ),
        ([["a", "b"], ["c", "d"], ["e", "f"]], "could not convert string to float"),
    ],
    ids=["nan", "inf", "empty", "1d", "3d", "one-sample", "too-few-samples", "strings"],
)
def test_bad_data_in_fit(X, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        GaussianMixture(n_components=3).fit(X)


def test_sparse_input_is_refused():
    sparse = pytest.importorskip("scipy.sparse")
    X = sparse.random(10, 2, density=0.5, format="csr")
    with pytest.raises(TypeError, match="Sparse data was passed for X, but dense data is required"):
        GaussianMixture().fit(X)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score", "bic"])
def test_bad_data_after_fit(fitted, method):
    predict = getattr(fitted, method)
    message = "X has 3 features, but GaussianMixture is expecting 2 features as input."
    with pytest.raises(ValueError, match=re.escape(message)):
        predict(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="Input X contains NaN"):
        predict([[0.0, np.nan]])
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array instead"):
        predict(np.zeros(2))


@pytest.mark.parametrize(
    "method", ["predict", "predict_proba", "score_samples", "score", "bic", "aic", "sample"]
)
def test_not_fitted(method):
    args = () if method == "sample" else (np.zeros((3, 2)),)
    message = "This GaussianMixture instance is not fitted yet. Call 'fit'"
    with pytest.raises(NotFittedError, match=re.escape(message)):
        getattr(GaussianMixture(), method)(*args)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            dict(n_components=0),
            "The 'n_components' parameter of GaussianMixture must be an int in the range "
            "[1, inf). Got 0 instead.",
        ),
        (
            dict(covariance_type="bogus"),
            "The 'covariance_type' parameter of GaussianMixture must be a str among",
        ),
        (dict(tol=-1.0), "The 'tol' parameter of GaussianMixture must be a float in the range"),
        (dict(reg_covar=-1e-3), "The 'reg_covar' parameter of GaussianMixture must be a float"),
        (dict(max_iter=-1), "The 'max_iter' parameter of GaussianMixture must be an int"),
        (dict(max_iter=2.5), "The 'max_iter' parameter of GaussianMixture must be an int"),
        (dict(n_init=0), "The 'n_init' parameter of GaussianMixture must be an int"),
        (dict(init_params="kmeans+"), "The 'init_params' parameter of GaussianMixture must be"),
        (dict(means_init="x"), "The 'means_init' parameter of GaussianMixture must be an array"),
        (dict(random_state="x"), "The 'random_state' parameter of GaussianMixture must be"),
        (dict(warm_start="yes"), "The 'warm_start' parameter of GaussianMixture must be"),
        (dict(verbose_interval=0), "The 'verbose_interval' parameter of GaussianMixture must be"),
    ],
)
def test_invalid_parameters(params, message):
    gm = GaussianMixture(**params)
    for fit in (gm.fit, gm.fit_predict):
        with pytest.raises(InvalidParameterError, match=re.escape(message)):
            fit(np.zeros((4, 2)))


@pytest.mark.parametrize(
    ("covariance_type", "params", "message"),
    [
        (
            "full",
            dict(weights_init=[0.5, 0.3, 0.2]),
            "The parameter 'weights' should have the shape of (2,), but got (3,)",
        ),
        (
            "full",
            dict(weights_init=[1.5, -0.5]),
            # scikit-learn's message, whose labels swap min and max, word for word
            "The parameter 'weights' should be in the range [0, 1], but got max value -0.50000, "
            "min value 1.50000",
        ),
        (
            "full",
            dict(weights_init=[0.5, 0.6]),
            "The parameter 'weights' should be normalized, but got sum(weights) = 1.10000",
        ),
        (
            "full",
            dict(means_init=np.zeros((2, 3))),
            "The parameter 'means' should have the shape of (2, 2), but got (2, 3)",
        ),
        (
            "full",
            dict(precisions_init=np.ones((2, 2))),
            "The parameter 'full precision' should have the shape of (2, 2, 2), but got (2, 2)",
        ),
        (
            "full",
            dict(precisions_init=np.array([np.eye(2), [[1.0, 2.0], [0.0, 1.0]]])),
            "'full precision' should be symmetric, positive-definite",
        ),
        (
            "tied",
            dict(precisions_init=-np.eye(2)),
            "'tied precision' should be symmetric, positive-definite",
        ),
        (
            "diag",
            dict(precisions_init=[[1.0, 1.0], [1.0, 0.0]]),
            "'diag precision' should be positive",
        ),
        (
            "spherical",
            dict(precisions_init=[1.0, -1.0]),
            "'spherical precision' should be positive",
        ),
        (
            "spherical",
            dict(precisions_init=np.ones((2, 2))),
            "The parameter 'spherical precision' should have the shape of (2,), but got (2, 2)",
        ),
        ("full", dict(means_init=[[0.0, np.nan], [1.0, 1.0]]), "Input contains NaN"),
    ],
)
def test_invalid_initial_parameters(covariance_type, params, message):
    gm = _shared(covariance_type=covariance_type, **params)
    with pytest.raises(ValueError, match=re.escape(message)):
        gm.fit(_three_blobs())


def test_bad_sample_count_and_warm_start_shape(fitted):
    message = "Invalid value for 'n_samples': 0 . The sampling requires at least one sample."
    with pytest.raises(ValueError, match=re.escape(message)):
        fitted.sample(0)
    warm = clone(fitted).set_params(warm_start=True).fit(_three_blobs())
    warm.set_params(n_components=3)
    with pytest.raises(ValueError, match=re.escape("Set warm_start=False to start afresh.")):
        warm.fit(_three_blobs())


def test_every_restart_failing_names_the_fixes():
    """reg_covar=0 on identical points: every covariance is 0, every restart non-finite."""
    with pytest.raises(ValueError, match=re.escape("Try a larger reg_covar, fewer components")):
        _shared(reg_covar=0.0).fit(np.ones((300, 2)))


# -- 4. degenerate data, fit_predict, convergence warning, sample ---------------------------
@pytest.mark.parametrize(
    "X",
    [
        np.repeat([[0.0, 0.0], [1.0, 5.0], [4.0, 2.0]], 100, axis=0),  # duplicated points
        np.column_stack([np.arange(300.0), np.full(300, 7.0)]),  # a constant column
        np.full((300, 2), 3.5),  # all points identical
        1e6 + _three_blobs(),  # a large offset: float32 works on centred data
    ],
    ids=["duplicates", "constant-column", "identical", "offset"],
)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_degenerate_data_gives_finite_parameters(X, covariance_type):
    gm = _shared(covariance_type=covariance_type).fit(X)
    for name in ATTRIBUTES:
        assert np.all(np.isfinite(getattr(gm, name))), name
    assert np.isfinite(gm.lower_bound_) and np.all(np.isfinite(gm.score_samples(X)))
    np.testing.assert_allclose(gm.weights_.sum(), 1.0, rtol=1e-5)
    # The means lie within the data (the float32 centring is undone).
    assert np.all(gm.means_ >= X.min(axis=0) - 1e-6 * np.abs(X).max())
    assert np.all(gm.means_ <= X.max(axis=0) + 1e-6 * np.abs(X).max())


def test_large_offset_fits_like_centred_data():
    X = _three_blobs()
    shifted = _shared().fit(X + 1e4)
    centred = _shared().fit(X)
    np.testing.assert_allclose(shifted.means_ - 1e4, centred.means_, atol=1e-2)
    np.testing.assert_allclose(shifted.lower_bound_, centred.lower_bound_, rtol=1e-5)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fit_predict_equals_fit_then_predict(covariance_type):
    X = _three_blobs(seed=1)
    # Also when EM stopped early (max_iter=1), as scikit-learn's test does.
    for max_iter in (1, 100) if covariance_type == "full" else (100,):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm = _shared(covariance_type=covariance_type, max_iter=max_iter, tol=0.0)
            labels = gm.fit_predict(X)
            np.testing.assert_array_equal(labels, gm.fit(X).predict(X))
    assert labels.dtype == np.int64


def test_convergence_warning():
    message = (
        "Best performing initialization did not converge. Try different init parameters, "
        "or increase max_iter, tol, or check for degenerate data."
    )
    gm = _shared(max_iter=1, tol=0.0)
    with pytest.warns(ConvergenceWarning, match=re.escape(message)):
        gm.fit(_three_blobs())
    assert not gm.converged_ and gm.n_iter_ == 1 and len(gm.lower_bounds_) == 1


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample(covariance_type):
    gm = _shared(covariance_type=covariance_type).fit(_three_blobs())
    X, y = gm.sample(500)
    assert X.shape == (500, 2) and y.shape == (500,)
    assert X.dtype == gm.means_.dtype == np.float64 and y.dtype == np.int64
    assert set(np.unique(y)) <= {0, 1}
    np.testing.assert_array_equal(y, np.sort(y))  # grouped by component, as scikit-learn
    for k in range(2):  # each component's draws sit around its mean
        np.testing.assert_allclose(X[y == k].mean(axis=0), gm.means_[k], atol=0.5)
    X_again, _ = gm.sample(500)
    np.testing.assert_array_equal(X, X_again)  # an int random_state repeats, as scikit-learn


def test_verbose_prints_sklearn_lines(capsys):
    with pytest.warns(ConvergenceWarning):
        _shared(verbose=2, verbose_interval=1, max_iter=1, tol=0.0).fit(_three_blobs())
    out = capsys.readouterr().out
    assert "Initialization 0" in out and "  Iteration 1\t ll change" in out
    assert "Initialization did not converge." in out


# -- 5. scikit-learn API: clone, Pipeline, GridSearchCV, the estimator checks ---------------
def test_clone_pipeline_and_grid_search():
    X = _three_blobs(n_per_blob=130)  # 390 rows: padded to 512 like every fit here
    gm = _shared(reg_covar=1e-4)
    assert clone(gm).get_params() == gm.get_params()

    pipeline = make_pipeline(StandardScaler(), clone(gm)).fit(X)
    assert np.isfinite(pipeline.score(X)) and pipeline.predict(X).shape == (390,)

    # reg_covar is an array input of the compiled program: the search compiles nothing new.
    cv = ShuffleSplit(n_splits=2, train_size=300, random_state=0)
    search = GridSearchCV(_shared(), {"reg_covar": [1e-6, 10.0]}, cv=cv).fit(X)
    assert search.best_params_ == {"reg_covar": 1e-6}
    assert isinstance(search.best_estimator_, GaussianMixture)
    assert search.best_estimator_.n_features_in_ == 2


@parametrize_with_checks([GaussianMixture(init_params="random_from_data")])
def test_sklearn_estimator_checks(estimator, check):
    """All of scikit-learn's checks pass; random_from_data only compiles faster."""
    check(estimator)


# -- 6. float32 by default ------------------------------------------------------------------
@pytest.mark.parametrize("global_x64", [False, True])
def test_precision_follows_the_input(faithful, global_x64):
    """float64 input: float64 fit and outputs, float32 input: float32, whatever the
    global flag; the flag is left as the caller set it."""
    with jax.enable_x64(global_x64):
        for dtype in (np.float64, np.float32):
            gm = GaussianMixture(n_components=2, max_iter=5, random_state=0)
            gm.fit(faithful.astype(dtype))
            for name in ATTRIBUTES:
                assert getattr(gm, name).dtype == dtype, name
            assert gm.predict_proba(faithful).dtype == dtype
            assert gm.score_samples(faithful).dtype == dtype
            assert gm.sample(3)[0].dtype == dtype
            assert jax.config.read("jax_enable_x64") is global_x64
    assert not jax.config.read("jax_enable_x64")


def test_float32_close_to_sklearn(faithful):
    faithful = faithful.astype(np.float32)
    gm = GaussianMixture(n_components=2, tol=1e-5, random_state=0).fit(faithful)
    sk = SKGaussianMixture(n_components=2, tol=1e-5, random_state=0).fit(faithful)
    # Both stop with |Δ mean log-likelihood| < 1e-5 near the same optimum, and float32
    # rounds a mean of 272 values of size ~4 to ~1e-6 relative: 1e-5 relative covers both.
    np.testing.assert_allclose(gm.lower_bound_, sk.lower_bound_, rtol=1e-5)
    np.testing.assert_allclose(gm.score(faithful), sk.score(faithful), rtol=1e-5)
    order = np.argsort(gm.means_[:, 0])
    np.testing.assert_allclose(gm.means_[order], np.sort(sk.means_, axis=0), rtol=1e-3)


def test_family_covariances_invert_the_precisions():
    """ops fix: covariance_from_precision_cholesky returned U⁻¹U⁻ᵀ, not (UUᵀ)⁻¹ = U⁻ᵀU⁻¹
    (equal only for diagonal covariances)."""
    covariance = np.array([[[2.0, 0.7], [0.7, 1.0]]], np.float32)
    family = jaxem.gaussian("full")
    params = family.params_from_covariances(np.zeros((1, 2), np.float32), covariance)
    np.testing.assert_allclose(family.covariances(params), covariance, rtol=1e-5)


def test_precision_policy():
    float32, float64 = np.dtype(np.float32), np.dtype(np.float64)
    assert _validation.input_precision(np.zeros(2, np.float32)) == float32
    assert _validation.input_precision(np.zeros(2, np.int8)) == float64
    assert _validation.input_precision([[1.0]]) == float64
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"a": np.zeros(2, np.float32), "b": np.zeros(2, np.float32)})
    assert _validation.input_precision(frame) == float32
    assert _validation.input_precision(frame.astype({"b": np.float64})) == float64
    with _validation.precision(float64):
        assert _validation.compute_dtype(np.float64) == float64
        assert _validation.compute_dtype(np.float32) == float32  # float32 input stays
    with _validation.precision(float32):
        assert _validation.compute_dtype(np.float64) == float32
    assert not jax.config.read("jax_enable_x64")  # the flag is left as it was


def test_padded_rows():
    assert [engine.padded_rows(n) for n in (1, 32, 33, 272, 2048)] == [1024] * 4 + [2048]
    assert engine.padded_rows(2049) == 2176  # a multiple of 4096 / 32
    for n in (3000, 100_000, 1_234_567):
        assert n <= engine.padded_rows(n) < 1.0625 * n

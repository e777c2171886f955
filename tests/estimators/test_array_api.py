"""scikit-learn's array API dispatch: array API input in, results and fitted attributes
out in its namespace and on its device, numbers equal to the NumPy fit's.

array_api_strict (a test dependency) is the namespace: it refuses everything outside
the standard, and offers several devices.
"""

import array_api_strict
import numpy as np
import pytest
import sklearn

import jaxem
from tests.conftest import make_blobs

X = make_blobs(n_samples=150, n_features=2, n_clusters=3, seed=0)[0]


def _numpy(array):
    return np.asarray(array_api_strict.asarray(array, device=array_api_strict.Device("CPU_DEVICE")))


def _namespace_and_device(array):
    return type(array).__module__.split(".")[0], array.device


@pytest.mark.parametrize(
    "dtype, device",
    [(np.float64, array_api_strict.Device("CPU_DEVICE")), (np.float32, None)],
    ids=["float64", "float32-device1"],
)
def test_gaussian_mixture_answers_in_the_input_namespace(dtype, device):
    device = device or array_api_strict.Device("device1")
    data = X.astype(dtype)
    options = dict(n_components=3, init_params="random_from_data", random_state=0)
    reference = jaxem.GaussianMixture(**options).fit(data)
    x_xp = array_api_strict.asarray(data, device=device)
    with sklearn.config_context(array_api_dispatch=True):
        gm = jaxem.GaussianMixture(**options).fit(x_xp)
        results = {
            "means_": gm.means_,
            "covariances_": gm.covariances_,
            "precisions_cholesky_": gm.precisions_cholesky_,
            "weights_": gm.weights_,
            "predict": gm.predict(x_xp),
            "predict_proba": gm.predict_proba(x_xp),
            "score_samples": gm.score_samples(x_xp),
            "sample": gm.sample(5)[0],
        }
        scores = gm.score(x_xp), gm.bic(x_xp), gm.aic(x_xp)
    for name, value in results.items():
        assert _namespace_and_device(value) == ("array_api_strict", device), name
    assert all(isinstance(score, float) for score in scores)
    # The same numbers as the NumPy fit, in the input's precision.
    for name in ("means_", "covariances_", "weights_"):
        value = _numpy(results[name])
        assert value.dtype == dtype
        np.testing.assert_array_equal(value, getattr(reference, name))
    np.testing.assert_array_equal(_numpy(results["predict"]), reference.predict(data))
    assert scores[0] == reference.score(data)
    np.testing.assert_array_equal(_numpy(results["sample"]), reference.sample(5)[0])


def test_array_parameters_are_used_and_left_as_given():
    means_init = array_api_strict.asarray([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    options = dict(n_components=3, init_params="random", random_state=0)
    gm = jaxem.GaussianMixture(means_init=means_init, **options)
    with sklearn.config_context(array_api_dispatch=True):
        gm.fit(array_api_strict.asarray(X))
    assert gm.means_init is means_init  # a parameter is never replaced (clone, get_params)
    plain = jaxem.GaussianMixture(means_init=_numpy(means_init), **options).fit(X)
    np.testing.assert_array_equal(_numpy(gm.means_), plain.means_)


def test_predicting_on_array_api_input_leaves_a_numpy_fit_numpy():
    gm = jaxem.GaussianMixture(n_components=2, init_params="random", random_state=0).fit(X)
    with sklearn.config_context(array_api_dispatch=True):
        labels = gm.predict(array_api_strict.asarray(X))
    assert _namespace_and_device(labels)[0] == "array_api_strict"
    assert type(gm.means_) is np.ndarray and type(gm.covariances_) is np.ndarray
    np.testing.assert_array_equal(_numpy(labels), gm.predict(X))


def test_without_dispatch_nothing_changes():
    gm = jaxem.GaussianMixture(n_components=2, random_state=0).fit(X)
    assert type(gm.means_) is np.ndarray and type(gm.predict(X)) is np.ndarray
    with sklearn.config_context(array_api_dispatch=True):  # NumPy input stays NumPy
        gm = jaxem.GaussianMixture(n_components=2, init_params="random", random_state=0).fit(X)
        assert type(gm.means_) is np.ndarray and type(gm.predict(X)) is np.ndarray


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++"])
def test_kmeans_inits_refused_under_dispatch_as_scikit_learn_does(init_params):
    gm = jaxem.GaussianMixture(n_components=2, init_params=init_params)
    with sklearn.config_context(array_api_dispatch=True):
        with pytest.raises(NotImplementedError, match="Allowed `init_params` are"):
            gm.fit(X)
    assert not hasattr(gm, "means_")

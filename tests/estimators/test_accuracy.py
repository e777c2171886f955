"""Accuracy on the data users really have, in both precisions.

Each data set below once broke the one-pass moment form (``Σ r x xᵀ - N μ μᵀ``,
expanded quadratic forms in the densities): timestamps, an offset of 1e8, a
component of spread 1e-3 next to one of spread 1e3, a 100-dimensional
near-singular full fit, HMM emissions offset by 1e4. From the same start:

- float64 matches scikit-learn / hmmlearn (parameters relative 1e-8, the mean
  log-likelihood per sample relative 1e-10). Where the peer itself loses digits to
  an offset (its densities expand ``x U - μ U`` at 1e8, hmmlearn's diagonal
  densities expand ``x²/σ² - 2xμ/σ² + μ²/σ²`` at 1e4), the reference is the peer's
  fit of the data minus the offset, the same model written without it.
- float32 matches the float64 reference to 1e-4 wherever the peer's own float32
  does, and elsewhere fails only with a clear ValueError.
- float32 agrees with float64 to float32 accuracy (1e-5 relative) on
  well-conditioned data, including integer data with few distinct values.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hmmlearn.hmm import GaussianHMM as HMMLearnGaussianHMM
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SKGaussianMixture

import jaxem

N_ITER = 30


def _blobs(rng, n, centres, spreads):
    centres = np.asarray(centres, np.float64)
    labels = rng.integers(0, len(centres), n)
    noise = rng.normal(size=(n, centres.shape[1]))
    return centres[labels] + noise * np.asarray(spreads, np.float64)[labels][:, None]


def _timestamps():
    rng = np.random.default_rng(0)
    x = _blobs(rng, 600, [[0, 0], [5, 3]], [1, 0.5])
    x[:, 0] = 1.7e9 + 3600 * x[:, 0]  # Unix seconds, clusters hours apart
    return x, 0.0


def _offset_1e8():
    rng = np.random.default_rng(1)
    return _blobs(rng, 600, [[0, 0, 0], [4, 4, 0]], [1, 0.7]) + 1e8, 1e8


def _two_spreads():
    rng = np.random.default_rng(2)
    return _blobs(rng, 600, [[0, 0], [3000, -2000]], [1e-3, 1e3]), 0.0


def _near_singular_100d():
    rng = np.random.default_rng(3)
    latent = _blobs(rng, 800, [np.zeros(10), np.full(10, 3.0)], [1, 1])
    return latent @ rng.normal(size=(10, 100)) + 1e-3 * rng.normal(size=(800, 100)), 0.0


DATA_SETS = {
    "timestamps": _timestamps,
    "offset_1e8": _offset_1e8,
    "spreads_1e-3_and_1e3": _two_spreads,
    "near_singular_100d": _near_singular_100d,
}


def _quiet_fit(estimator, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tol=0: max_iter is reached
        return estimator.fit(X)


def _same_start(X):
    """Parameters after one scikit-learn EM step: a start both sides share."""
    start = _quiet_fit(SKGaussianMixture(2, max_iter=1, random_state=1), X)
    return dict(
        n_components=2,
        tol=0.0,
        max_iter=N_ITER,
        weights_init=start.weights_,
        means_init=start.means_,
        precisions_init=start.precisions_,
    )


def _reference(X, offset, params):
    """scikit-learn's float64 fit of ``X - offset`` (the means shifted back), and its
    mean log-likelihood of ``X``."""
    shifted = dict(params, means_init=params["means_init"] - offset)
    sk = _quiet_fit(SKGaussianMixture(**shifted), X - offset)
    return sk, sk.score(X - offset)


@pytest.fixture(scope="module", params=list(DATA_SETS))
def case(request):
    X, offset = DATA_SETS[request.param]()
    params = _same_start(X)
    sk, sk_score = _reference(X, offset, params)
    return request.param, X, offset, params, sk, sk_score


def test_float64_matches_sklearn_from_the_same_start(case):
    name, X, offset, params, sk, sk_score = case
    ours = _quiet_fit(jaxem.GaussianMixture(**params), X)
    assert ours.means_.dtype == np.float64
    # Relative to the means themselves: at 1e8 a float64 mean is stored to 1.5e-8.
    np.testing.assert_allclose(ours.means_, sk.means_ + offset, rtol=1e-8, err_msg=name)
    np.testing.assert_allclose(ours.weights_, sk.weights_, rtol=1e-8, err_msg=name)
    np.testing.assert_allclose(ours.covariances_, sk.covariances_, rtol=1e-8, err_msg=name)
    np.testing.assert_allclose(ours.score(X), sk_score, rtol=1e-10, err_msg=name)


def test_float32_as_accurate_as_sklearns_float32(case):
    name, X, offset, params, sk, sk_score = case
    X32 = X.astype(np.float32)
    params32 = dict(params, means_init=params["means_init"].astype(np.float32))
    try:
        sk32_error = abs(_quiet_fit(SKGaussianMixture(**params32), X32).score(X32) - sk_score)
    except ValueError:  # scikit-learn's float32 finds a covariance ill-defined
        sk32_error = np.inf
    try:
        ours = _quiet_fit(jaxem.GaussianMixture(**params32), X32)
    except ValueError as error:
        assert sk32_error > 1e-4 * abs(sk_score), f"{name}: {error}"
        assert "float64" in str(error)  # the message names the fix
        return
    assert ours.means_.dtype == np.float32
    if sk32_error <= 1e-4 * abs(sk_score):
        np.testing.assert_allclose(ours.score(X32), sk_score, rtol=1e-4, err_msg=name)


# -- float32 against float64 on well-conditioned data -------------------------------------


def _iris_integers():
    return np.rint(load_iris().data).astype(np.int64)


def _fifty_thousand_rows():
    rng = np.random.default_rng(4)
    return _blobs(rng, 50_000, rng.normal(size=(4, 5)) * 4, [1.0, 0.5, 2.0, 1.5])


@pytest.mark.parametrize(
    "load, n_components", [("faithful", 2), (_iris_integers, 3), (_fifty_thousand_rows, 4)]
)
def test_float32_agrees_with_float64(load, n_components, faithful):
    X = faithful if load == "faithful" else load()
    start = jaxem.GaussianMixture(n_components, max_iter=0, random_state=0).fit(X)
    params = dict(
        n_components=n_components,
        tol=1e-10,
        max_iter=50,
        weights_init=start.weights_,
        means_init=start.means_,
        precisions_init=start.precisions_,
    )
    wide = _quiet_fit(jaxem.GaussianMixture(**params), X)
    narrow = _quiet_fit(jaxem.GaussianMixture(**params), X.astype(np.float32))
    assert wide.means_.dtype == np.float64 and narrow.means_.dtype == np.float32
    scale = np.abs(wide.means_).max()
    np.testing.assert_allclose(narrow.means_, wide.means_, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(narrow.weights_, wide.weights_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(narrow.lower_bound_, wide.lower_bound_, rtol=1e-5)
    np.testing.assert_allclose(narrow.score(X), wide.score(X), rtol=1e-5)
    # The float32 lower bound is its own score (the fit converged), to float32 accuracy.
    np.testing.assert_allclose(narrow.lower_bound_, narrow.score(X), rtol=1e-5)


# -- HMM emissions far from the origin -----------------------------------------------------


def _hmm_data(offset):
    rng = np.random.default_rng(5)
    transmat = np.array([[0.9, 0.1], [0.2, 0.8]])
    states = [0]
    for _ in range(599):
        states.append(rng.choice(2, p=transmat[states[-1]]))
    means = np.array([[0.0, 0.0], [3.0, 1.0]])
    return offset + means[states] + 0.5 * rng.normal(size=(600, 2))


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_hmm_emissions_offset_by_1e4(covariance_type):
    offset = 1e4
    X = _hmm_data(offset)
    covars = {"full": np.array([np.eye(2)] * 2), "diag": np.ones((2, 2))}[covariance_type]

    def fitted(cls, data, shift, dtype=np.float64):
        model = cls(2, covariance_type=covariance_type, n_iter=N_ITER, tol=0, init_params="")
        model.startprob_ = np.array([0.6, 0.4])
        model.transmat_ = np.array([[0.7, 0.3], [0.4, 0.6]])
        model.means_ = np.array([[0.5, 0.5], [2.5, 0.5]]) + shift
        model.covars_ = covars
        return model.fit(data.astype(dtype))

    reference = fitted(HMMLearnGaussianHMM, X - offset, 0.0)
    reference_score = reference.score(X - offset) / len(X)
    ours = fitted(jaxem.GaussianHMM, X, offset)
    np.testing.assert_allclose(ours.means_ - offset, reference.means_, rtol=1e-8)
    np.testing.assert_allclose(ours.covars_, reference.covars_, rtol=1e-8)
    np.testing.assert_allclose(ours.transmat_, reference.transmat_, rtol=1e-8)
    np.testing.assert_allclose(ours.score(X) / len(X), reference_score, rtol=1e-10)
    # float32 data at 1e4 is rounded to 1e-3: the float32 fit is judged against
    # hmmlearn's fit of those same rounded values.
    X32 = X.astype(np.float32)
    rounded = X32.astype(np.float64) - offset
    reference32 = fitted(HMMLearnGaussianHMM, rounded, 0.0)
    narrow = fitted(jaxem.GaussianHMM, X32, offset, np.float32)
    np.testing.assert_allclose(
        narrow.score(X32) / len(X), reference32.score(rounded) / len(X), rtol=1e-4
    )
    np.testing.assert_allclose(narrow.means_ - offset, reference32.means_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(narrow.transmat_, reference32.transmat_, rtol=1e-4, atol=1e-5)

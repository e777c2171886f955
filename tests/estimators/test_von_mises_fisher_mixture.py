"""VonMisesFisherMixture: against a naive numpy EM and numpy spherical k-means from the
same start (float64), float32 against float64, the methods, and bad input."""

import warnings

import numpy as np
import pytest
from scipy import optimize, special, stats
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning

from jaxem import VonMisesFisherMixture

N_ROWS, N_FEATURES, N_ITER = 120, 4, 15


def _directions(seed=0, dtype=np.float64):
    """Three clusters of directions in S^3 (κ 8, 20 and 50), drawn with scipy."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(3, N_FEATURES))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    counts = [40, 40, 40]
    blocks = [
        stats.vonmises_fisher(mean, kappa).rvs(count, random_state=rng)
        for mean, kappa, count in zip(means, (8.0, 20.0, 50.0), counts)
    ]
    x = np.concatenate(blocks)[rng.permutation(N_ROWS)]
    return x.astype(dtype)


# -- naive numpy EM in float64 ---------------------------------------------------------------
def _log_densities(X, means, kappas):
    return np.stack([stats.vonmises_fisher(m, k).logpdf(X) for m, k in zip(means, kappas)], axis=1)


def _concentration(mean_resultant, n_features):
    nu = n_features / 2 - 1

    def residual(kappa):
        return special.ive(nu + 1, kappa) / special.ive(nu, kappa) - mean_resultant

    return optimize.brentq(residual, mean_resultant, 1e7, xtol=1e-14, rtol=4 * np.finfo(float).eps)


def _em(X, weights, means, kappas, n_iter):
    history = []
    for _ in range(n_iter):
        log_joint = _log_densities(X, means, kappas) + np.log(weights)
        log_norm = logsumexp(log_joint, axis=1, keepdims=True)
        history.append(log_norm.mean())
        resp = np.exp(log_joint - log_norm)
        counts = resp.sum(0)
        weights = counts / counts.sum()
        sums = resp.T @ X
        lengths = np.linalg.norm(sums, axis=1)
        means = sums / lengths[:, None]
        kappas = np.array([_concentration(r, X.shape[1]) for r in lengths / counts])
    log_joint = _log_densities(X, means, kappas) + np.log(weights)
    return weights, means, kappas, logsumexp(log_joint, axis=1), np.array(history)


def _start(X, **kwargs):
    """The estimator's own initial parameters (a max_iter=0 fit), to continue with
    warm_start."""
    return VonMisesFisherMixture(3, max_iter=0, random_state=0, **kwargs).fit(X)


def test_matches_naive_numpy_em_float64():
    """From the estimator's initial parameters, N_ITER EM iterations equal a naive numpy
    EM's (scipy's log-densities, a root-find for κ): weights, directions,
    concentrations, the log-likelihood history and per-row log-likelihoods."""
    X = _directions()
    start = _start(X, init_params="random")
    weights, means, kappas = (
        start.weights_.copy(),
        start.means_.copy(),
        start.concentrations_.copy(),
    )
    assert means.dtype == np.float64 and kappas.dtype == np.float64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tol=0 never converges
        fitted = start.set_params(warm_start=True, max_iter=N_ITER, tol=0.0).fit(X)
    assert fitted.n_iter_ == N_ITER
    ref_weights, ref_means, ref_kappas, ref_log_prob, history = _em(
        X, weights, means, kappas, N_ITER
    )
    np.testing.assert_allclose(fitted.weights_, ref_weights, rtol=1e-9)
    np.testing.assert_allclose(fitted.means_, ref_means, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fitted.concentrations_, ref_kappas, rtol=1e-9)
    np.testing.assert_allclose(fitted.lower_bounds_, history, rtol=1e-10)
    np.testing.assert_allclose(fitted.score_samples(X), ref_log_prob, rtol=1e-10)
    # EM moved: the reference is not the start, and the clusters' κ are told apart.
    assert np.max(np.abs(ref_kappas - kappas)) > 1.0
    assert np.ptp(np.log(ref_kappas)) > 1.0


def _spherical_kmeans(X, means):
    """Spherical k-means (Dhillon and Modha 2001): nearest direction by cosine, then the
    normalised sum of each cluster's rows; until no row moves."""
    labels = None
    for _ in range(100):
        new = np.argmax(X @ means.T, axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        sums = np.stack([X[labels == k].sum(0) for k in range(means.shape[0])])
        means = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    return labels, means


def test_hard_assignment_with_a_large_shared_concentration_is_spherical_kmeans():
    X = _directions(seed=1)
    start = _start(X, init_params="random_from_data", assignment="hard", concentration=1e6)
    np.testing.assert_array_equal(start.concentrations_, 1e6)
    seeds = start.means_.copy()  # the fit below continues (and overwrites) start
    labels, means = _spherical_kmeans(X, seeds)
    fitted = start.set_params(warm_start=True, max_iter=100, tol=1e-12).fit(X)
    assert fitted.converged_
    np.testing.assert_array_equal(fitted.predict(X), labels)
    np.testing.assert_allclose(fitted.means_, means, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(fitted.concentrations_, 1e6)
    # Not a trivial fixed point: the directions moved from the seed rows.
    assert fitted.n_iter_ > 1 and np.max(np.abs(means - seeds)) > 1e-2


def test_float32_fit_is_accurate_to_float32():
    """The same fit in float32 and float64 (same seeds, same number of iterations from the
    same start): parameters and log-likelihoods agree to float32's precision."""
    X = _directions(seed=2)
    kwargs = dict(n_init=2, random_state=0, tol=0.0, max_iter=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        double = VonMisesFisherMixture(3, **kwargs).fit(X)
        single = VonMisesFisherMixture(3, **kwargs).fit(X.astype(np.float32))
    assert single.means_.dtype == np.float32 and single.concentrations_.dtype == np.float32
    assert single.score_samples(X.astype(np.float32)).dtype == np.float32
    eps = np.finfo(np.float32).eps
    # Measured: weights 1.6 eps, directions 0.5 eps, κ 1.9 eps, lower bound 20 eps.
    np.testing.assert_allclose(single.weights_, double.weights_, rtol=16 * eps)
    np.testing.assert_allclose(single.means_, double.means_, rtol=0, atol=8 * eps)
    np.testing.assert_allclose(single.concentrations_, double.concentrations_, rtol=64 * eps)
    np.testing.assert_allclose(single.lower_bound_, double.lower_bound_, rtol=128 * eps)
    # A log-density is κ μ·x + log C_D(κ), two terms of size κ: absolute error ~ κ eps.
    np.testing.assert_allclose(
        single.score_samples(X.astype(np.float32)),
        double.score_samples(X),
        rtol=1e2 * eps,
        atol=4 * double.concentrations_.max() * eps,
    )


def test_methods_sample_bic_and_aic():
    X = _directions()
    fitted = VonMisesFisherMixture(3, n_init=2, random_state=0).fit(X)
    proba = fitted.predict_proba(X)
    assert proba.shape == (N_ROWS, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(fitted.predict(X), proba.argmax(1))
    np.testing.assert_array_equal(
        fitted.predict(X), VonMisesFisherMixture(3, n_init=2, random_state=0).fit_predict(X)
    )
    np.testing.assert_allclose(np.linalg.norm(fitted.means_, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(fitted.score(X), fitted.score_samples(X).mean())
    n_parameters = 2 + 3 * N_FEATURES  # K - 1 weights, D - 1 per direction and a κ each
    np.testing.assert_allclose(
        fitted.bic(X), -2 * fitted.score(X) * N_ROWS + n_parameters * np.log(N_ROWS)
    )
    np.testing.assert_allclose(fitted.aic(X), -2 * fitted.score(X) * N_ROWS + 2 * n_parameters)
    sample, labels = fitted.sample(300)
    assert sample.shape == (300, N_FEATURES) and sample.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(sample, axis=1), 1.0, rtol=1e-12)
    fitted.predict(sample)  # the samples lie in the support
    assert np.all(np.diff(labels) >= 0) and labels.shape == (300,)


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "X, message",
    [
        (np.ones((10, 3)), r"must be unit vectors.*Normalise rows, e\.g\. X / np\.linalg\.norm"),
        (np.ones((10, 1)), "at least 2 features"),
    ],
)
def test_bad_input_raises_with_the_fix(X, message):
    with pytest.raises(ValueError, match=message):
        VonMisesFisherMixture(2).fit(X)


def test_non_finite_input_and_bad_rows_at_predict_raise():
    X = _directions()
    bad = X.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        VonMisesFisherMixture(2).fit(bad)
    fitted = VonMisesFisherMixture(2, max_iter=3, random_state=0).fit(X)
    with pytest.raises(ValueError, match="must be unit vectors"):
        fitted.predict(2 * X)
    with pytest.raises(ValueError, match="concentration"):
        VonMisesFisherMixture(2, concentration=-1.0).fit(X)

"""GMMHMM and MultinomialHMM against hmmlearn 0.3 from the same start (float64).

Both sides get the same parameters set by hand and ``init_params=""``, run a fixed
number of iterations (``tol=-inf``), and must agree on the log-likelihood history
(``monitor_.history``) and on every fitted parameter; then bad input, sampling and
the family's log-density against scipy.
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.stats import multivariate_normal

import jaxem

hmm = pytest.importorskip("hmmlearn.hmm")

K, M, D = 3, 2, 2
LENGTHS = [100, 100, 100]
N_ITER = 6
START = np.array([0.5, 0.3, 0.2])
TRANSMAT = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
WEIGHTS = np.array([[0.4, 0.6], [0.5, 0.5], [0.3, 0.7]])
MEANS = np.stack([np.stack([np.full(D, c - 1.0), np.full(D, c + 1.0)]) for c in (-6, 0, 6)])
MATRIX = np.array([[1.5, 0.3], [0.3, 1.2]])
COVARS = {
    "diag": np.full((K, M, D), 1.5),
    "spherical": np.full((K, M), 1.5),
    "full": np.broadcast_to(MATRIX, (K, M, D, D)).copy(),
    "tied": np.broadcast_to(MATRIX, (K, D, D)).copy(),
}


@pytest.fixture(autouse=True)
def _quiet_hmmlearn():
    """hmmlearn logs a notice whenever a MultinomialHMM is built."""
    logger = logging.getLogger("hmmlearn")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def _gaussian_data():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(m, 1.0, (60, D)) for m in (-6, 0, 6, 0, -6)])


def _gmmhmm_pair(covariance_type, **kwargs):
    pair = []
    for cls in (jaxem.GMMHMM, hmm.GMMHMM):
        model = cls(
            K,
            n_mix=M,
            covariance_type=covariance_type,
            init_params="",
            n_iter=N_ITER,
            tol=-np.inf,
            **kwargs,
        )
        model.startprob_, model.transmat_ = START, TRANSMAT
        model.weights_, model.means_, model.covars_ = WEIGHTS, MEANS, COVARS[covariance_type]
        pair.append(model)
    return pair


def _assert_same_fit(ours, theirs, names):
    assert len(ours.monitor_.history) == len(theirs.monitor_.history) == N_ITER
    assert_allclose(list(ours.monitor_.history), list(theirs.monitor_.history), rtol=1e-10)
    for name in names:
        assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("covariance_type", ["diag", "full", "tied", "spherical"])
def test_gmmhmm_follows_hmmlearn_from_the_same_start(covariance_type):
    X = _gaussian_data()
    ours, theirs = _gmmhmm_pair(covariance_type)
    ours.fit(X, LENGTHS)
    theirs.fit(X, LENGTHS)
    _assert_same_fit(ours, theirs, ["startprob_", "transmat_", "weights_", "means_", "covars_"])
    assert ours.score(X, LENGTHS) == pytest.approx(theirs.score(X, LENGTHS), rel=1e-10)


def test_gmmhmm_with_priors_and_fixed_means_follows_hmmlearn():
    """Covariances and weights re-estimated about fixed means, under hmmlearn's
    inverse-gamma prior and a Dirichlet prior on the weights."""
    X = _gaussian_data()
    ours, theirs = _gmmhmm_pair(
        "diag", params="tcw", weights_prior=2.0, covars_prior=1.0, covars_weight=0.5
    )
    ours.fit(X, LENGTHS)
    theirs.fit(X, LENGTHS)
    _assert_same_fit(ours, theirs, ["transmat_", "weights_", "means_", "covars_"])
    assert_allclose(ours.means_, MEANS)


def test_gmmhmm_with_means_prior_follows_hmmlearn():
    X = _gaussian_data()
    ours, theirs = _gmmhmm_pair("full", means_prior=1.0, means_weight=5.0)
    ours.fit(X, LENGTHS)
    theirs.fit(X, LENGTHS)
    _assert_same_fit(ours, theirs, ["weights_", "means_", "covars_"])


def test_multinomialhmm_follows_hmmlearn_from_the_same_start():
    rng = np.random.default_rng(1)
    probs = np.array([[0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.4, 0.4]])
    states = np.repeat([0, 1, 0, 1], 50)
    X = np.stack([rng.multinomial(rng.integers(3, 9), probs[s]) for s in states])
    pair = []
    for cls in (jaxem.MultinomialHMM, hmm.MultinomialHMM):
        model = cls(2, init_params="", n_iter=N_ITER, tol=-np.inf)
        model.startprob_ = np.array([0.6, 0.4])
        model.transmat_ = np.array([[0.7, 0.3], [0.2, 0.8]])
        model.emissionprob_ = np.array([[0.3, 0.3, 0.2, 0.2], [0.2, 0.2, 0.3, 0.3]])
        pair.append(model.fit(X, [100, 100]))
    ours, theirs = pair
    _assert_same_fit(ours, theirs, ["startprob_", "transmat_", "emissionprob_"])
    assert_allclose(ours.n_trials, X.sum(axis=1))  # None becomes the rows' totals
    assert ours.score(X) == pytest.approx(theirs.score(X), rel=1e-10)


def test_multinomialhmm_checks_counts_and_trials():
    model = jaxem.MultinomialHMM(2, n_trials=5)
    with pytest.raises(ValueError, match="Total count for each sample should add up"):
        model.fit(np.array([[1, 4], [2, 2]]))
    with pytest.raises(ValueError, match="nonnegative integers.*non-negative"):
        jaxem.MultinomialHMM(2).fit(np.array([[1, -1], [2, 2]]))
    with pytest.raises(ValueError, match="nonnegative integers.*integers"):
        jaxem.MultinomialHMM(2).fit(np.array([[1.5, 1.0], [2, 2]]))
    fitted = jaxem.MultinomialHMM(2, n_iter=2, random_state=0).fit(
        np.array([[1, 4], [2, 3], [5, 0], [0, 5]])
    )
    X, states = fitted.sample(20, random_state=0)
    assert X.dtype == np.int64 and np.all(X.sum(axis=1) == 5) and states.shape == (20,)
    fitted.n_trials = np.array([4, 5, 5, 5])
    with pytest.raises(ValueError, match="a single n_trials must be given"):
        fitted.sample(3)
    fitted.n_trials = None
    with pytest.raises(ValueError, match="a single n_trials must be given"):
        fitted.sample(3)


def test_gmmhmm_checks_its_parameters():
    X = _gaussian_data()
    model = jaxem.GMMHMM(K, n_mix=M, init_params="st")
    model.weights_, model.means_, model.covars_ = WEIGHTS, MEANS, np.ones((K, D))
    with pytest.raises(ValueError, match=r"covars_ must have shape \(3, 2, 2\)"):
        model.fit(X, LENGTHS)
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        jaxem.GMMHMM(K, covariance_type="bad").fit(X)
    with pytest.raises(ValueError, match="n_mix must be a positive int"):
        jaxem.GMMHMM(K, n_mix=0).fit(X)


def test_gmmhmm_fit_from_its_own_init_samples_and_decodes():
    X = _gaussian_data()
    model = jaxem.GMMHMM(K, n_mix=M, n_iter=20, random_state=0).fit(X, LENGTHS)
    history = np.asarray(model.monitor_.history)
    assert np.all(np.diff(history) > -1e-8 * np.abs(history[1:]))
    assert_allclose(model.weights_.sum(axis=1), 1.0)
    # Three states at -6, 0 and 6: each state's weighted mean finds one.
    centres = np.sort(np.einsum("km,kmd->kd", model.weights_, model.means_)[:, 0])
    assert_allclose(centres, [-6, 0, 6], atol=0.5)
    sample, states = model.sample(50, random_state=0)
    assert sample.shape == (50, D) and states.shape == (50,)
    assert model.predict(X, LENGTHS).shape == (len(X),)


@pytest.mark.parametrize("covariance_type", ["diag", "full", "tied", "spherical"])
def test_gmm_family_log_density_against_scipy(x64, covariance_type):
    family = jaxem.gmm(M, covariance_type)
    params = family.from_layout(
        jnp.float64, weights=WEIGHTS, means=MEANS, covariances=COVARS[covariance_type]
    )
    x = np.random.default_rng(2).normal(0, 4, (7, D))
    reference = np.empty((7, K))
    full = {
        "diag": lambda k, m: np.diag(COVARS["diag"][k, m]),
        "spherical": lambda k, m: COVARS["spherical"][k, m] * np.eye(D),
        "full": lambda k, m: COVARS["full"][k, m],
        "tied": lambda k, m: COVARS["tied"][k],
    }[covariance_type]
    for k in range(K):
        density = sum(
            WEIGHTS[k, m] * multivariate_normal(MEANS[k, m], full(k, m)).pdf(x) for m in range(M)
        )
        reference[:, k] = np.log(density)
    ours = jaxem.families.log_densities(family, params, jnp.asarray(x))
    assert_allclose(np.asarray(ours), reference, rtol=1e-12)
    layout = family.to_layout(params)
    assert_allclose(layout["covariances"], COVARS[covariance_type], rtol=1e-12)
    assert_allclose(layout["weights"], WEIGHTS, rtol=1e-12)


def test_gmm_family_m_step_is_the_weighted_estimate(x64):
    """One EM step of a mixture of GMM components against a naive numpy one."""
    family = jaxem.gmm(M, "full", reg_covar=0.0)
    params = family.from_layout(
        jnp.float64, weights=WEIGHTS, means=MEANS, covariances=COVARS["full"]
    )
    x = _gaussian_data()
    resp = np.random.default_rng(3).dirichlet(np.ones(K), len(x))
    stats = family.statistics(params, jnp.asarray(x), jnp.asarray(resp))
    new = family.m_step(stats, jnp.asarray(resp.sum(0)), family.hyper(jnp.float64))
    layout = family.to_layout(new)
    for k in range(K):
        joint = np.stack(
            [
                WEIGHTS[k, m] * multivariate_normal(MEANS[k, m], COVARS["full"][k, m]).pdf(x)
                for m in range(M)
            ],
            axis=1,
        )
        r = resp[:, k, None] * joint / joint.sum(1, keepdims=True)
        assert_allclose(layout["weights"][k], r.sum(0) / r.sum(), rtol=1e-10)
        for m in range(M):
            mean = r[:, m] @ x / r[:, m].sum()
            offsets = x - mean
            covariance = (r[:, m, None] * offsets).T @ offsets / r[:, m].sum()
            assert_allclose(layout["means"][k, m], mean, rtol=1e-10)
            assert_allclose(layout["covariances"][k, m], covariance, rtol=1e-9)


def test_gmm_family_refuses_natural_parameters_and_bad_sizes():
    with pytest.raises(ValueError, match="n_mix must be a positive int"):
        jaxem.gmm(0)
    family = jaxem.gmm(2)
    with pytest.raises(NotImplementedError, match="not of exponential-family form"):
        family.natural_parameters(None)
    sample = family.sample(
        jax.random.key(0),
        family.from_layout(jnp.float32, weights=WEIGHTS, means=MEANS, covariances=COVARS["diag"]),
        jnp.array([0, 2, 2]),
    )
    assert sample.shape == (3, D)

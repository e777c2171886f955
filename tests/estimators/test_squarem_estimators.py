"""``accelerate="squarem"`` on the discrete mixtures, the Student-t mixture and
``jaxem.select``: the same optimum as plain EM from the same start, the parameter's
scikit-learn plumbing, and clear errors where SQUAREM does not apply."""

import jax
import numpy as np
import pytest
from sklearn.base import clone

import jaxem
from jaxem import engine

N = 240  # rows of every data set here: one shape, few compilations
TOL = 1e-10
MAX_ITER = 3000


def _labels(rng):
    return rng.integers(2, size=N)


def _poisson(rng):
    return rng.poisson(np.array([[2.0, 3.0, 4.0], [3.0, 4.5, 3.0]])[_labels(rng)])


def _bernoulli(rng):
    probs = np.array([[0.2, 0.4, 0.6, 0.7, 0.3, 0.5], [0.4, 0.5, 0.3, 0.6, 0.5, 0.3]])
    return (rng.uniform(size=(N, 6)) < probs[_labels(rng)]).astype(np.int64)


def _categorical(rng):
    probs = np.array(
        [[[0.4, 0.3, 0.2, 0.1]] * 3, [[0.2, 0.2, 0.3, 0.3]] * 3]
    )  # (component, column, symbol)
    cumulative = np.cumsum(probs[_labels(rng)], axis=-1)
    return (rng.uniform(size=(N, 3, 1)) > cumulative).sum(-1)


def _multinomial(rng):
    probs = np.array([[0.3, 0.3, 0.2, 0.1, 0.1], [0.2, 0.2, 0.2, 0.2, 0.2]])
    return np.stack([rng.multinomial(12, p) for p in probs[_labels(rng)]])


def _student_t(rng):
    centres = np.array([[0.0, 0.0], [1.5, 1.0]])
    scale = np.sqrt(3 / rng.chisquare(3, size=(N, 1)))  # t with 3 dof
    return centres[_labels(rng)] + scale * rng.normal(size=(N, 2))


CASES = [
    (jaxem.PoissonMixture, {}, _poisson),
    (jaxem.BernoulliMixture, {}, _bernoulli),
    (jaxem.CategoricalMixture, {}, _categorical),
    (jaxem.MultinomialMixture, {}, _multinomial),
    (jaxem.StudentTMixture, {"covariance_type": "diag"}, _student_t),
]
IDS = [case[0].__name__ for case in CASES]


@pytest.mark.parametrize("estimator, options, make", CASES, ids=IDS)
def test_reaches_plain_em_optimum_from_the_same_start(x64, estimator, options, make):
    X = make(np.random.default_rng(0)).astype(np.float64)
    settings = dict(n_init=1, tol=TOL, max_iter=MAX_ITER, random_state=0, **options)
    plain = estimator(2, **settings).fit(X)
    fast = estimator(2, accelerate="squarem", **settings).fit(X)
    assert plain.converged_ and fast.converged_
    # Same start: the first E-step (of the shared initial parameters) agrees.
    assert fast.lower_bounds_[0] == pytest.approx(plain.lower_bounds_[0], abs=1e-12)
    assert abs(fast.lower_bound_ - plain.lower_bound_) < 1e-6
    assert fast.lower_bound_ >= plain.lower_bounds_[0]
    # The monitored objective never decreases (up to rounding).
    assert np.all(np.diff(fast.lower_bounds_) >= -1e-12)
    np.testing.assert_allclose(fast.weights_, plain.weights_, atol=1e-3)
    assert fast.n_iter_ < plain.n_iter_


@pytest.mark.parametrize("estimator, options, make", CASES, ids=IDS)
def test_parameter_plumbing_and_bad_values(estimator, options, make):
    model = estimator(2, accelerate="squarem", **options)
    assert model.get_params()["accelerate"] == "squarem"
    assert clone(model).get_params()["accelerate"] == "squarem"
    assert model.set_params(accelerate=None).accelerate is None
    assert estimator(2).accelerate is None
    assert "accelerate : None or 'squarem'" in estimator.__doc__
    X = make(np.random.default_rng(0))
    with pytest.raises(ValueError, match="accelerate"):
        estimator(2, accelerate="SQUAREM", **options).fit(X)


def test_stochastic_assignment_refuses_squarem():
    X = _poisson(np.random.default_rng(0))
    with pytest.raises(ValueError, match="stochastic EM"):
        jaxem.PoissonMixture(2, assignment="stochastic", accelerate="squarem").fit(X)


def test_family_without_hooks_is_refused_by_name():
    X = np.random.default_rng(0).normal(size=(N, 3))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    model = jaxem.mixture(jaxem.von_mises_fisher(), 2)
    with pytest.raises(ValueError, match="VonMisesFisher"):
        engine.fit(model, X.astype(np.float32), key=jax.random.key(0), accelerate="squarem")


def test_select_gives_the_same_table(x64):
    # Three overlapping clusters, so every count tried is identified: where the
    # likelihood is flat (more components than clusters) the parameters, and with
    # them ICL's entropy, are only pinned to about sqrt(tol). Even here plain EM's
    # stopping error moves ICL by ~1e-5 per sample at tol 1e-10 (0 difference in the
    # log-likelihood), by ~3e-7 at 1e-13: the tighter tol makes both sides' stops
    # agree, not the table looser.
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [2.5, 0.0], [0.0, 2.5]])
    X = centres[np.arange(N) % 3] + rng.normal(size=(N, 2))
    settings = dict(
        n_components=[1, 2, 3],
        covariance_type=["diag", "spherical"],
        n_init=2,
        tol=1e-13,
        max_iter=MAX_ITER,
        random_state=0,
    )
    plain = jaxem.select(X, **settings)
    fast = jaxem.select(X, accelerate="squarem", **settings)
    assert fast.estimator_.accelerate == "squarem"
    assert fast.best_ == plain.best_
    for field in ("n_components", "covariance_type", "n_parameters"):
        np.testing.assert_array_equal(fast.table[field], plain.table[field])
    for field in ("bic", "aic", "icl", "log_likelihood"):
        np.testing.assert_allclose(fast.table[field] / N, plain.table[field] / N, atol=1e-6)
    assert fast.table["n_iter"].sum() < plain.table["n_iter"].sum()
    with pytest.raises(ValueError, match="accelerate"):
        jaxem.select(X, accelerate="anderson", **settings)


def test_select_states_carries_the_estimators_accelerate(x64):
    rng = np.random.default_rng(2)
    X = np.concatenate([rng.normal(0, 1, (N // 2, 1)), rng.normal(2.5, 1, (N // 2, 1))])
    base = jaxem.GaussianHMM(n_init=1, tol=1e-8, n_iter=MAX_ITER, random_state=0)
    plain = jaxem.select_states(base, X, n_components=[1, 2])
    fast = jaxem.select_states(clone(base).set_params(accelerate="squarem"), X, n_components=[1, 2])
    assert fast.estimator_.accelerate == "squarem"
    assert fast.best_ == plain.best_
    np.testing.assert_allclose(
        fast.table["log_likelihood"] / N, plain.table["log_likelihood"] / N, atol=1e-6
    )

"""PoissonMixture, BernoulliMixture and CategoricalMixture: references and bad input.

Each estimator is checked against a naive numpy EM run from the estimator's own
initial parameters (a ``max_iter=0`` fit, continued with ``warm_start``) in float64,
its log-densities against scipy; bad input raises errors that name the fix.
"""

import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from jaxem import BernoulliMixture, CategoricalMixture, MultinomialMixture, PoissonMixture

N_ROWS, N_ITER = 120, 15


def _counts(seed=0):
    rng = np.random.default_rng(seed)
    rates = np.array([[1.0, 6.0, 3.0], [9.0, 2.0, 4.0], [3.0, 3.0, 12.0]])
    return rng.poisson(rates[np.arange(N_ROWS) % 3]).astype(np.int64)


def _binary(seed=0):
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0.1, 0.9, size=(3, 5))
    return (rng.random((N_ROWS, 5)) < probs[np.arange(N_ROWS) % 3]).astype(np.int64)


def _codes(seed=0):
    """Three columns with 2, 4 and 3 categories."""
    rng = np.random.default_rng(seed)
    labels = np.arange(N_ROWS) % 3
    columns = []
    for n_categories in (2, 4, 3):
        probs = rng.dirichlet(np.ones(n_categories), size=3)
        cumulative = np.cumsum(probs[labels], axis=1)
        columns.append(np.minimum((rng.random((N_ROWS, 1)) > cumulative).sum(1), n_categories - 1))
    return np.column_stack(columns)


def _documents(seed=0):
    rng = np.random.default_rng(seed)
    topics = rng.dirichlet(np.ones(6), size=3)
    return np.stack([rng.multinomial(rng.integers(5, 40), topics[i % 3]) for i in range(N_ROWS)])


# -- naive numpy EM in float64 ---------------------------------------------------------------
def _poisson_log_densities(X, rates):
    return stats.poisson.logpmf(X[:, None, :], rates[None]).sum(-1)


def _bernoulli_log_densities(X, probs):
    return stats.bernoulli.logpmf(X[:, None, :], probs[None]).sum(-1)


def _multinomial_log_densities(X, probs):
    return np.stack([stats.multinomial.logpmf(X, X.sum(1), p) for p in probs], 1)


def _multinomial_m_step(X, resp, counts):
    sums = resp.T @ X
    return sums / sums.sum(1, keepdims=True)


def _categorical_log_densities(X, probs):
    columns = np.arange(X.shape[1])
    # probs (K, D, C): the probability of every row's code in every column.
    with np.errstate(divide="ignore"):
        return np.log(probs[:, columns, X]).sum(-1).T


def _em(X, weights, params, log_densities, m_step, n_iter):
    for _ in range(n_iter):
        log_joint = log_densities(X, params) + np.log(weights)
        resp = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))
        counts = resp.sum(0)
        weights = counts / counts.sum()
        params = m_step(X, resp, counts)
    log_joint = log_densities(X, params) + np.log(weights)
    return weights, params, logsumexp(log_joint, axis=1)


def _poisson_m_step(X, resp, counts):
    return resp.T @ X / counts[:, None]


def _bernoulli_m_step(X, resp, counts):
    eps = np.finfo(np.float64).eps
    return np.clip(resp.T @ X / counts[:, None], eps, 1 - eps)


def _categorical_m_step(X, resp, counts):
    n_symbols = X.max() + 1
    one_hot = (X[:, :, None] == np.arange(n_symbols)).astype(np.float64)  # (n, D, C)
    return np.einsum("nk,ndc->kdc", resp, one_hot) / counts[:, None, None]


REFERENCES = {
    "poisson": (PoissonMixture, _counts, "rates_", _poisson_log_densities, _poisson_m_step),
    "bernoulli": (
        BernoulliMixture,
        _binary,
        "probabilities_",
        _bernoulli_log_densities,
        _bernoulli_m_step,
    ),
    "multinomial": (
        MultinomialMixture,
        _documents,
        "probabilities_",
        _multinomial_log_densities,
        _multinomial_m_step,
    ),
    "categorical": (
        CategoricalMixture,
        _codes,
        "probabilities_",
        _categorical_log_densities,
        _categorical_m_step,
    ),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_matches_naive_numpy_em_float64(name):
    """From the estimator's initial parameters, N_ITER EM iterations equal a naive
    numpy EM's (weights, component parameters, per-row log-likelihoods); the
    log-densities are scipy's."""
    cls, data, attribute, log_densities, m_step = REFERENCES[name]
    X = data()
    start = cls(3, max_iter=0, init_params="random", random_state=0).fit(X)
    weights, params = start.weights_.copy(), getattr(start, attribute).copy()
    assert weights.dtype == np.float64 and params.dtype == np.float64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tol=0 never converges
        fitted = start.set_params(warm_start=True, max_iter=N_ITER, tol=0.0).fit(X)
    assert fitted.n_iter_ == N_ITER
    ref_weights, ref_params, ref_log_prob = _em(X, weights, params, log_densities, m_step, N_ITER)
    np.testing.assert_allclose(fitted.weights_, ref_weights, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(getattr(fitted, attribute), ref_params, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fitted.score_samples(X), ref_log_prob, rtol=1e-10)
    np.testing.assert_allclose(fitted.score(X), ref_log_prob.mean(), rtol=1e-10)
    # The EM moved: the reference is not just the start.
    assert np.max(np.abs(ref_params - params)) > 1e-2


def test_float32_input_fits_in_float32():
    X = _counts().astype(np.float32)
    fitted = PoissonMixture(3, random_state=0).fit(X)
    assert fitted.rates_.dtype == np.float32 and fitted.weights_.dtype == np.float32
    assert fitted.score_samples(X).dtype == np.float32
    reference = PoissonMixture(3, random_state=0).fit(X.astype(np.float64))
    order = np.argsort(fitted.rates_[:, 0])
    np.testing.assert_allclose(
        fitted.rates_[order], reference.rates_[np.argsort(reference.rates_[:, 0])], rtol=1e-4
    )


def test_bic_counts_each_columns_categories():
    """BIC's parameter count: K - 1 weights and K (C_d - 1) per column."""
    X = _codes()
    fitted = CategoricalMixture(3, max_iter=5, random_state=0).fit(X)
    assert fitted.n_categories_.tolist() == [2, 4, 3]
    n_parameters = 2 + 3 * (1 + 3 + 2)
    expected = -2 * fitted.score(X) * N_ROWS + n_parameters * np.log(N_ROWS)
    np.testing.assert_allclose(fitted.bic(X), expected)
    np.testing.assert_allclose(fitted.aic(X), -2 * fitted.score(X) * N_ROWS + 2 * n_parameters)
    # Categories beyond a column's count have probability 0 and are never sampled.
    assert np.all(fitted.probabilities_[:, 0, 2:] == 0)
    np.testing.assert_allclose(fitted.probabilities_.sum(-1), 1.0)
    sample, labels = fitted.sample(500)
    assert sample.shape == (500, 3) and labels.shape == (500,)
    assert np.all(sample.max(0) < fitted.n_categories_)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_predict_methods_and_sample(name):
    cls, data, attribute, _, _ = REFERENCES[name]
    X = data()
    fitted = cls(3, n_init=2, random_state=0).fit(X)
    proba = fitted.predict_proba(X)
    assert proba.shape == (N_ROWS, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(fitted.predict(X), proba.argmax(1))
    np.testing.assert_array_equal(
        fitted.predict(X), cls(3, n_init=2, random_state=0).fit_predict(X)
    )
    sample, labels = fitted.sample(50)
    assert sample.shape == (50, X.shape[1])
    fitted.predict(sample)  # samples lie in the support
    assert np.bincount(labels, minlength=3).sum() == 50


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cls, X, message",
    [
        (PoissonMixture, [[1, -2], [3, 4]], "Poisson counts must be non-negative"),
        (PoissonMixture, [[1.5, 2], [3, 4]], "Poisson counts must be integers"),
        (BernoulliMixture, [[0, 2], [1, 0]], "Bernoulli data must hold only 0 and 1"),
        (BernoulliMixture, [[0, 0.5], [1, 0]], "Bernoulli data must hold only 0 and 1"),
        (MultinomialMixture, [[1, -2], [3, 4]], "Multinomial counts must be non-negative"),
        (MultinomialMixture, [[1, 2.5], [3, 4]], "Multinomial counts must be integers"),
        (CategoricalMixture, [[0, -1], [1, 0]], r"Categorical symbols must lie in"),
        (CategoricalMixture, [[0, 1.5], [1, 0]], "Categorical symbols must be integers"),
    ],
)
def test_values_outside_the_support(cls, X, message):
    with pytest.raises(ValueError, match=message):
        cls(1).fit(X)


def test_bad_input_after_fit():
    X = _codes()
    fitted = CategoricalMixture(2, max_iter=3, random_state=0).fit(X)
    outside = X.copy()
    outside[0, 0] = 2  # column 0 has 2 categories
    with pytest.raises(ValueError, match="Categorical column 0 must hold symbols in"):
        fitted.predict(outside)
    with pytest.raises(ValueError, match="X has 2 features, but CategoricalMixture is expecting 3"):
        fitted.score(X[:, :2])
    counts = PoissonMixture(2, max_iter=3, random_state=0).fit(_counts())
    with pytest.raises(ValueError, match="Poisson counts must be non-negative"):
        counts.score_samples(-_counts())
    with pytest.raises(ValueError, match="n_categories must be an int or 3 ints"):
        CategoricalMixture(2, n_categories=[2, 4]).fit(X)
    with pytest.raises(ValueError, match=r"Categorical column 1 must hold symbols in \[0, 2\]"):
        CategoricalMixture(2, n_categories=[2, 3, 3]).fit(X)


def test_binarize_thresholds_any_values():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    fitted = BernoulliMixture(2, binarize=0.0, random_state=0).fit(X)
    np.testing.assert_allclose(
        fitted.score_samples(X), BernoulliMixture(2, random_state=0).fit(X > 0).score_samples(X > 0)
    )


@pytest.mark.parametrize(
    "cls", [PoissonMixture, BernoulliMixture, CategoricalMixture, MultinomialMixture]
)
def test_not_fitted(cls):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        cls(2).predict([[0, 1]])
    with pytest.raises(NotFittedError, match="not fitted yet"):
        cls(2).sample(3)


#: These checks fit on random non-negative reals, which PoissonMixture (and
#: MultinomialMixture) refuse as
#: non-integer counts (outside the support: a ValueError that says so). The same
#: shared mixture code passes them under BernoulliMixture and CategoricalMixture.
_NOT_COUNTS = "fits random non-integer values, which are not counts"
_EXPECTED_FAILURES: dict = {
    PoissonMixture: {
        "check_array_api_input": _NOT_COUNTS,
        "check_dict_unchanged": _NOT_COUNTS,
        "check_dont_overwrite_parameters": _NOT_COUNTS,
        "check_dtype_object": _NOT_COUNTS,
        "check_estimators_dtypes": _NOT_COUNTS,
        "check_estimators_fit_returns_self": _NOT_COUNTS,
        "check_estimators_nan_inf": _NOT_COUNTS,
        "check_estimators_overwrite_params": _NOT_COUNTS,
        "check_estimators_pickle": _NOT_COUNTS,
        "check_f_contiguous_array_estimator": _NOT_COUNTS,
        "check_fit2d_1feature": _NOT_COUNTS,
        "check_fit2d_predict1d": _NOT_COUNTS,
        "check_fit_check_is_fitted": _NOT_COUNTS,
        "check_fit_idempotent": _NOT_COUNTS,
        "check_fit_score_takes_y": _NOT_COUNTS,
        "check_methods_sample_order_invariance": _NOT_COUNTS,
        "check_methods_subset_invariance": _NOT_COUNTS,
        "check_n_features_in": _NOT_COUNTS,
        "check_n_features_in_after_fitting": _NOT_COUNTS,
        "check_pipeline_consistency": _NOT_COUNTS,
        "check_readonly_memmap_input": _NOT_COUNTS,
    },
}
_EXPECTED_FAILURES[MultinomialMixture] = _EXPECTED_FAILURES[PoissonMixture]


@parametrize_with_checks(
    [
        PoissonMixture(init_params="random_from_data"),
        BernoulliMixture(init_params="random_from_data", binarize=0.0),
        CategoricalMixture(init_params="random_from_data"),
        MultinomialMixture(init_params="random_from_data"),
    ],
    expected_failed_checks=lambda estimator: _EXPECTED_FAILURES.get(type(estimator), {}),
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)

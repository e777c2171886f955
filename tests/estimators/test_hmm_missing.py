"""GaussianHMM(missing="em"): Baum-Welch on the observed entries, against a naive numpy
reference (forward-backward on the observed coordinates' marginal densities, the
M-step on the conditional moments of the missing ones), equal to the complete-data
fit without NaN, gaps (rows with nothing observed) and bad input."""

import numpy as np
import pytest
from scipy.stats import norm

import jaxem

N_STATES, N_FEATURES = 2, 3
LENGTHS = [120, 80]


def _truth():
    truth = jaxem.GaussianHMM(n_components=N_STATES, init_params="")
    truth.startprob_ = np.array([0.7, 0.3])
    truth.transmat_ = np.array([[0.9, 0.1], [0.2, 0.8]])
    truth.means_ = np.array([[-2.0, 0.0, 1.0], [2.0, 1.0, -1.0]])
    truth.covars_ = np.array([[1.0, 0.5, 2.0], [0.7, 1.5, 1.0]])
    return truth


def _data(fraction=0.25, gaps=(5, 150)):
    X, _ = _truth().sample(sum(LENGTHS), random_state=0)
    rng = np.random.default_rng(1)
    X[rng.random(X.shape) < fraction] = np.nan
    X[list(gaps)] = np.nan  # rows with nothing observed: gaps in the sequences
    return X


def _start(model, X):
    """Explicit starting parameters (the same for jaxem and the reference)."""
    model.startprob_ = np.array([0.5, 0.5])
    model.transmat_ = np.array([[0.8, 0.2], [0.3, 0.7]])
    model.means_ = np.array([[-1.0, 0.5, 0.0], [1.0, 0.5, 0.0]])
    model.covars_ = np.array([[2.0, 2.0, 2.0], [1.5, 1.5, 1.5]])
    return model


def _log_emissions(X, means, variances):
    """(T, K) log density of each row's observed coordinates (0 for a gap)."""
    observed = ~np.isnan(X)
    dens = norm.logpdf(np.nan_to_num(X)[:, None, :], means[None], np.sqrt(variances)[None])
    return np.sum(np.where(observed[:, None, :], dens, 0.0), axis=-1)


def _forward_backward(log_b, startprob, transmat):
    """Scaled forward-backward: log-likelihood, posteriors γ (T, K), pair sums ξ (K, K)."""
    shift = log_b.max(axis=1, keepdims=True)
    b = np.exp(log_b - shift)
    n = b.shape[0]
    alpha, scale = np.zeros_like(b), np.zeros(n)
    alpha[0] = startprob * b[0]
    for t in range(n):
        if t:
            alpha[t] = (alpha[t - 1] @ transmat) * b[t]
        scale[t] = alpha[t].sum()
        alpha[t] /= scale[t]
    beta = np.ones_like(b)
    for t in range(n - 2, -1, -1):
        beta[t] = transmat @ (b[t + 1] * beta[t + 1]) / scale[t + 1]
    gamma = alpha * beta
    xi = np.zeros_like(transmat)
    for t in range(n - 1):
        xi += np.outer(alpha[t], b[t + 1] * beta[t + 1]) * transmat / scale[t + 1]
    return np.sum(np.log(scale)) + np.sum(shift), gamma, xi


def _reference_step(X, startprob, transmat, means, variances):
    """One maximum-likelihood Baum-Welch step with missing entries (diagonal
    covariances): returns the new parameters and the log-likelihood of the old."""
    total, start, pairs = 0.0, np.zeros(N_STATES), np.zeros((N_STATES, N_STATES))
    weight = np.zeros(N_STATES)
    first, second = np.zeros((N_STATES, N_FEATURES)), np.zeros((N_STATES, N_FEATURES))
    for block in np.split(X, np.cumsum(LENGTHS)[:-1]):
        log_likelihood, gamma, xi = _forward_backward(
            _log_emissions(block, means, variances), startprob, transmat
        )
        total += log_likelihood
        start += gamma[0]
        pairs += xi
        observed = ~np.isnan(block)[:, None, :]
        x = np.nan_to_num(block)[:, None, :]
        # E[x | z=k] and E[x^2 | z=k]: observed as is, missing from the state's moments.
        mean = np.where(observed, x, means[None])
        square = np.where(observed, x * x, means[None] ** 2 + variances[None])
        weight += gamma.sum(axis=0)
        first += np.einsum("tk,tkd->kd", gamma, mean)
        second += np.einsum("tk,tkd->kd", gamma, square)
    new_means = first / weight[:, None]
    new_variances = second / weight[:, None] - new_means**2
    new_start = start / start.sum()
    return (new_start, pairs / pairs.sum(axis=1, keepdims=True), new_means, new_variances), total


def _ml(**kwargs):
    """hmmlearn's defaults less its priors: maximum likelihood, as the reference."""
    return jaxem.GaussianHMM(
        n_components=N_STATES, covars_prior=0.0, covars_weight=1.0, init_params="", **kwargs
    )


def test_one_step_equals_the_numpy_reference(x64):
    X = _data()
    model = _start(_ml(missing="em", n_iter=1, tol=-np.inf), X).fit(X, LENGTHS)
    start = _start(_ml(), X)
    variances = np.array([np.diag(c) for c in start.covars_])
    (startprob, transmat, means, new_variances), log_likelihood = _reference_step(
        X, start.startprob_, start.transmat_, start.means_, variances
    )
    np.testing.assert_allclose(model.startprob_, startprob, rtol=1e-9)
    np.testing.assert_allclose(model.transmat_, transmat, rtol=1e-9)
    np.testing.assert_allclose(model.means_, means, rtol=1e-9, atol=1e-12)
    fitted = np.array([np.diag(c) for c in model.covars_])
    np.testing.assert_allclose(fitted, new_variances, rtol=1e-9)
    np.testing.assert_allclose(model.monitor_.history[0], log_likelihood, rtol=1e-10)
    # score: the observed data's log-likelihood under the fitted parameters.
    (_, _, _, _), after = _reference_step(X, startprob, transmat, means, new_variances)
    np.testing.assert_allclose(model.score(X, LENGTHS), after, rtol=1e-10)


def test_fit_increases_the_observed_log_likelihood_and_handles_gaps(x64):
    X = _data()
    model = jaxem.GaussianHMM(
        n_components=N_STATES, missing="em", n_iter=40, tol=1e-8, random_state=0, n_init=2
    ).fit(X, LENGTHS)
    history = np.asarray(model.monitor_.history)
    assert len(history) > 3 and np.all(np.diff(history) >= -1e-8 * np.abs(history[1:]))
    order = np.argsort(model.means_[:, 0])
    np.testing.assert_allclose(model.means_[order], _truth().means_, atol=0.6)
    states = model.predict(X, LENGTHS)
    assert states.shape == (len(X),)
    posteriors = model.predict_proba(X, LENGTHS)
    assert np.all(np.isfinite(posteriors)) and np.allclose(posteriors.sum(axis=1), 1.0)
    # Every row's posterior, gaps included (theirs come from their neighbours), is the
    # reference forward-backward's at the fitted parameters.
    variances = np.array([np.diag(c) for c in model.covars_])
    first = X[: LENGTHS[0]]
    _, gamma, _ = _forward_backward(
        _log_emissions(first, model.means_, variances), model.startprob_, model.transmat_
    )
    np.testing.assert_allclose(posteriors[: LENGTHS[0]], gamma, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_without_nan_equals_the_complete_data_fit(covariance_type, x64):
    X, _ = _truth().sample(sum(LENGTHS), random_state=2)
    settings = dict(
        n_components=N_STATES, covariance_type=covariance_type, n_iter=15, random_state=0
    )
    plain = jaxem.GaussianHMM(**settings).fit(X, LENGTHS)
    em = jaxem.GaussianHMM(missing="em", **settings).fit(X, LENGTHS)
    np.testing.assert_allclose(em.means_, plain.means_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(em.covars_, plain.covars_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(em.transmat_, plain.transmat_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(em.monitor_.history, plain.monitor_.history, rtol=1e-10)


def test_float32_input_matches_float64():
    X = _data()
    settings = dict(n_components=N_STATES, missing="em", n_iter=20, tol=0.0, random_state=0)
    single = jaxem.GaussianHMM(**settings).fit(X.astype(np.float32), LENGTHS)
    double = jaxem.GaussianHMM(**settings).fit(X, LENGTHS)
    np.testing.assert_allclose(single.means_, double.means_, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(
        single.score(X.astype(np.float32), LENGTHS), double.score(X, LENGTHS), rtol=1e-5
    )


def test_bad_input_is_refused():
    X = _data()
    with pytest.raises(ValueError, match=r"contains NaN(.|\n)*GaussianHMM\(missing='em'\)"):
        jaxem.GaussianHMM(n_components=N_STATES).fit(X, LENGTHS)
    # The same hint wherever the estimator offers missing='em'.
    with pytest.raises(ValueError, match=r"GaussianMixture\(missing='em'\)"):
        jaxem.GaussianMixture(2).fit(X)
    with pytest.raises(ValueError, match="missing must be 'error' or 'em'"):
        jaxem.GaussianHMM(n_components=N_STATES, missing="drop").fit(X, LENGTHS)
    infinite = X.copy()
    infinite[3, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        jaxem.GaussianHMM(n_components=N_STATES, missing="em").fit(infinite, LENGTHS)
    unobserved = X.copy()
    unobserved[:, 2] = np.nan
    with pytest.raises(ValueError, match="Feature 2 has no observed entry"):
        jaxem.GaussianHMM(n_components=N_STATES, missing="em").fit(unobserved, LENGTHS)
    fitted = jaxem.GaussianHMM(n_components=N_STATES, n_iter=2).fit(np.nan_to_num(X), LENGTHS)
    with pytest.raises(ValueError, match="contains NaN"):
        fitted.score(X, LENGTHS)

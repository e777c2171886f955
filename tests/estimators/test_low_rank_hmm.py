"""``GaussianHMM(covariance_type="lowrank", covariance_rank=q)``: one Baum-Welch step
against a numpy forward-backward and Ghahramani and Hinton's M-step weighted by the
state posteriors, monotone EM, the limit q = D - 1 against 'full', fixed loadings,
inference, parameter counts, persistence, float32 and bad input (float64 references)."""

import numpy as np
import pytest
from scipy import stats

import jaxem
from tests.estimators.test_persistence import _rewrite
from tests.references import forward_backward, mfa_m_step

K, D, Q = 2, 3, 1
LENGTHS = [160, 140]


@pytest.fixture(scope="module")
def data():
    """Two states with full covariances, sticky transitions (a full-covariance HMM)."""
    rng = np.random.default_rng(0)
    transmat = np.array([[0.9, 0.1], [0.2, 0.8]])
    means = np.array([[-2.0, 0.0, 1.0], [2.0, 1.0, -1.0]])
    factors = rng.normal(size=(K, D, D))
    covariances = factors @ np.swapaxes(factors, 1, 2) + 0.2 * np.eye(D)
    states = [0]
    for _ in range(sum(LENGTHS) - 1):
        states.append(rng.choice(K, p=transmat[states[-1]]))
    states = np.array(states)
    noise = np.einsum(
        "kde,ne->nkd", np.linalg.cholesky(covariances), rng.normal(size=(len(states), D))
    )
    return means[states] + noise[np.arange(len(states)), states]


def _start(rank=Q, seed=1):
    rng = np.random.default_rng(seed)
    return {
        "startprob_": np.array([0.6, 0.4]),
        "transmat_": np.array([[0.7, 0.3], [0.4, 0.6]]),
        "means_": rng.normal(size=(K, D)),
        "loadings_": rng.normal(size=(K, D, rank)),
        "noise_variances_": rng.uniform(0.5, 2.0, size=(K, D)),
    }


def _model(start=None, **options):
    options = {"covariance_type": "lowrank", "covariance_rank": Q, "random_state": 0, **options}
    model = jaxem.GaussianHMM(K, **options)
    for name, value in (start or {}).items():
        setattr(model, name, value)
    return model


def _posteriors(x, start):
    """Per-sequence numpy forward-backward under ``start``: ``(log p, γ, Σ ξ, Σ γ_0)``."""
    w, psi = start["loadings_"], start["noise_variances_"]
    log_b = np.stack(
        [
            stats.multivariate_normal(start["means_"][k], w[k] @ w[k].T + np.diag(psi[k])).logpdf(x)
            for k in range(K)
        ],
        1,
    )
    total, gammas, xi, first = 0.0, [], np.zeros((K, K)), np.zeros(K)
    for a, b in zip(np.cumsum([0, *LENGTHS[:-1]]), np.cumsum(LENGTHS)):
        log_p, gamma, pairs = forward_backward(
            np.log(start["startprob_"]), np.log(start["transmat_"]), log_b[a:b]
        )
        total, xi, first = total + log_p, xi + pairs, first + gamma[0]
        gammas.append(gamma)
    return total, np.concatenate(gammas), xi, first


def test_one_baum_welch_step_equals_numpy_reference(data):
    start = _start()
    model = _model(start, init_params="", n_iter=1, tol=0).fit(data, LENGTHS)
    log_p, gamma, xi, first = _posteriors(data, start)
    means, loadings, noise = mfa_m_step(
        data, gamma, start["means_"], start["loadings_"], start["noise_variances_"], 1e-3
    )
    np.testing.assert_allclose(model.monitor_.history[0], log_p, rtol=1e-12)
    np.testing.assert_allclose(model.startprob_, first / len(LENGTHS), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        model.transmat_, xi / xi.sum(1, keepdims=True), rtol=1e-9, atol=1e-12
    )
    np.testing.assert_allclose(model.means_, means, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(model.loadings_, loadings, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(model.noise_variances_, noise, rtol=1e-9, atol=1e-9)
    covariances = loadings @ np.swapaxes(loadings, 1, 2) + np.stack([np.diag(p) for p in noise])
    np.testing.assert_allclose(model.covars_, covariances, rtol=1e-9, atol=1e-9)


def test_float32_is_computed_in_float32_and_accurate_to_float32(data):
    start = _start()
    model = _model(start, init_params="", n_iter=1, tol=0).fit(data.astype(np.float32), LENGTHS)
    assert model.restarts_.log_likelihood.dtype == np.float32
    assert model.loadings_.dtype == np.float64  # fitted attributes are float64, as hmmlearn's
    _, gamma, _, _ = _posteriors(data, start)
    means, loadings, noise = mfa_m_step(
        data, gamma, start["means_"], start["loadings_"], start["noise_variances_"], 1e-3
    )
    np.testing.assert_allclose(model.means_, means, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.loadings_, loadings, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.noise_variances_, noise, rtol=1e-4, atol=1e-4)


def test_log_likelihood_never_decreases_and_inference_matches_numpy(data):
    model = _model(n_iter=40, tol=0).fit(data, LENGTHS)
    history = np.array(model.monitor_.history)
    assert history.size == 40
    assert np.all(np.diff(history) >= -1e-10 * np.abs(history).max()), np.diff(history)
    assert history[-1] > history[0] + 1.0
    fitted = {name: getattr(model, name) for name in _start()}
    log_p, gamma, _, _ = _posteriors(data, fitted)
    np.testing.assert_allclose(model.score(data, LENGTHS), log_p, rtol=1e-10)
    np.testing.assert_allclose(model.predict_proba(data, LENGTHS), gamma, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(model.decode(data, LENGTHS, algorithm="map")[1], gamma.argmax(1))
    assert model.predict(data, LENGTHS).shape == (sum(LENGTHS),)
    # aic / bic: W has D q - q (q - 1) / 2 free scalars (rotation), Ψ has D.
    counts = model._n_fit_scalars_per_param()
    assert counts == {"s": K - 1, "t": K * (K - 1), "m": K * D, "c": K * (D * Q + D)}
    n_parameters = sum(counts.values())
    np.testing.assert_allclose(
        model.bic(data, LENGTHS), -2 * log_p + n_parameters * np.log(len(data)), rtol=1e-10
    )
    x, states = model.sample(20000, random_state=0)
    assert x.shape == (20000, D) and x.dtype == np.float64
    for k in range(K):  # the full covariance W Wᵀ + Ψ, within 5 standard errors
        c, n_k = model.covars_[k], np.sum(states == k)
        error = np.sqrt((np.outer(np.diag(c), np.diag(c)) + c**2) / n_k)
        assert np.all(np.abs(np.cov(x[states == k].T) - c) < 5 * error)


def test_rank_d_minus_one_reaches_the_full_model(data):
    """q = D - 1 = 2 in D = 3: ``W Wᵀ + Ψ`` has 8 scalars for the 6 of a covariance and
    covers (nearly) every covariance, so the fits end at the same log-likelihood up to
    factor analysis's slow EM convergence and the two M-steps' regularisation (1e-3 on Ψ
    here, covars_prior=1e-2 added to 'full''s scatter)."""
    options = {"n_iter": 500, "tol": 1e-6, "n_init": 2, "random_state": 0}
    full = jaxem.GaussianHMM(K, covariance_type="full", **options).fit(data, LENGTHS)
    low = _model(covariance_rank=D - 1, **options).fit(data, LENGTHS)
    gap = full.monitor_.history[-1] - low.monitor_.history[-1]
    assert abs(gap) < 0.05, gap


def test_params_without_c_keep_loadings_and_noise_fixed(data):
    start = _start()
    model = _model(start, init_params="st", params="stm", n_iter=15, tol=0).fit(data, LENGTHS)
    np.testing.assert_array_equal(model.loadings_, start["loadings_"])
    np.testing.assert_array_equal(model.noise_variances_, start["noise_variances_"])
    assert np.abs(model.means_ - start["means_"]).max() > 0.1  # the means did move
    history = np.array(model.monitor_.history)
    assert np.all(np.diff(history) >= -1e-10 * np.abs(history).max())


def test_refit_after_another_covariance_type(data):
    model = jaxem.GaussianHMM(K, covariance_type="diag", n_iter=2, random_state=0)
    model.fit(data, LENGTHS).set_params(covariance_type="lowrank", covariance_rank=Q)
    model.fit(data, LENGTHS)
    assert model.loadings_.shape == (K, D, Q) and "_covars_" not in vars(model)
    model.set_params(covariance_type="full", covariance_rank=None).fit(data, LENGTHS)
    assert model.covars_.shape == (K, D, D) and "loadings_" not in vars(model)


def test_save_and_load_round_trip(data, tmp_path):
    model = _model(n_iter=5).fit(data, LENGTHS)
    path = tmp_path / "lowrank_hmm.npz"
    model.save(path)
    loaded = jaxem.GaussianHMM.load(path)
    assert loaded.get_params() == model.get_params()
    for name in ("startprob_", "transmat_", "means_", "loadings_", "noise_variances_", "covars_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    assert loaded.score(data, LENGTHS) == model.score(data, LENGTHS)
    np.testing.assert_array_equal(loaded.predict(data, LENGTHS), model.predict(data, LENGTHS))

    def widen(metadata, arrays):  # loadings of rank 2 in a rank-1 model
        arrays["attributes/loadings_"] = np.ones((K, D, 2))
        metadata["attributes"]["loadings_"]["shape"] = [K, D, 2]

    _rewrite(path, widen)
    with pytest.raises(ValueError, match=r"loadings_ has shape \(2, 3, 2\).*need \(2, 3, 1\)"):
        jaxem.GaussianHMM.load(path)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"covariance_rank": None}, "needs covariance_rank"),
        ({"covariance_rank": 0}, "covariance_rank must be an int >= 1"),
        ({"covariance_rank": D}, "must be < n_features=3"),
        ({"covariance_type": "full"}, "only for covariance_type='lowrank'"),
        ({"missing": "em"}, "missing='em' is not available"),
        ({"covars_prior": 0.5}, "covars_prior .priors. are not available"),
        ({"covars_weight": 2.0}, "covars_weight .priors. are not available"),
        ({"means_weight": 1.0}, "means_weight .priors. are not available"),
        ({"covariance_type": "diagonal", "covariance_rank": None}, "covariance_type must be"),
    ],
)
def test_bad_options_are_refused(data, options, match):
    with pytest.raises(ValueError, match=match):
        _model(**options).fit(data, LENGTHS)


def test_a_rank_that_is_no_int_is_a_type_error(data):
    with pytest.raises(TypeError, match="covariance_rank must be an int >= 1, got 1.5"):
        _model(covariance_rank=1.5).fit(data, LENGTHS)


def test_bad_starting_values_are_refused(data):
    with pytest.raises(ValueError, match="covars_ cannot be set"):
        _model().covars_ = np.stack([np.eye(D)] * K)
    start = _start()
    del start["noise_variances_"]
    with pytest.raises(ValueError, match="Only loadings_ is set"):
        _model(start, init_params="st").fit(data, LENGTHS)
    start = _start(rank=2)
    with pytest.raises(ValueError, match=r"loadings_ must have shape \(2, 3, 1\)"):
        _model(start, init_params="st").fit(data, LENGTHS)
    start = _start()
    start["noise_variances_"][0, 0] = 0.0
    with pytest.raises(ValueError, match="noise_variances_ finite and positive"):
        _model(start, init_params="st").fit(data, LENGTHS)
    with pytest.raises(ValueError, match="partial_fit"):
        _model().partial_fit(data, LENGTHS)

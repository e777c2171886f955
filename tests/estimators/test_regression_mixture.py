"""``jaxem.RegressionMixture`` and ``jaxem.MixtureOfExperts``: attributes in the
caller's coordinates, outputs against numpy, precision, bad input.

References for the EM itself (a naive numpy EM, float64) are in
tests/models/test_regression_mixture.py.
"""

import warnings

import jax
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import norm
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

import jaxem

N_ROWS = 240
COEF = np.array([[2.0, -1.0], [-2.0, 0.5], [0.0, 1.5]])
INTERCEPT = np.array([0.0, 1.0, -1.0])
SCALE = np.array([0.1, 0.2, 0.15])


def _lines(dtype=np.float64, seed=0):
    """Three crossing lines in two inputs centred far from the origin (x ~ 100)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (N_ROWS, 2))
    labels = rng.integers(3, size=N_ROWS)
    noise = SCALE[labels] * rng.normal(size=N_ROWS)
    y = np.sum(x * COEF[labels], axis=1) + INTERCEPT[labels] + noise
    # Inputs far from the origin: y = (x' - 100) β + b = x' β + (b - 100 Σβ).
    return (x + 100.0).astype(dtype), y.astype(dtype), labels


def _shifted_intercepts():
    return INTERCEPT - 100.0 * COEF.sum(axis=1)


@pytest.fixture(scope="module")
def fitted():
    X, y, _ = _lines()
    return jaxem.RegressionMixture(3, n_init=4, random_state=0).fit(X, y), X, y


def _order(estimator):
    """The fitted lines matched to COEF (by the first slope: 2, -2, 0)."""
    return [int(np.argmin(np.abs(estimator.coef_[:, 0] - c))) for c in COEF[:, 0]]


def test_recovers_the_lines_in_the_callers_coordinates(fitted):
    estimator, X, y = fitted
    order = _order(estimator)
    assert sorted(order) == [0, 1, 2]
    np.testing.assert_allclose(estimator.coef_[order], COEF, atol=0.05)
    np.testing.assert_allclose(estimator.intercept_[order], _shifted_intercepts(), atol=3.0)
    # The lines' heights where the data are (x ~ 100) are exact to the noise.
    centre = np.full(2, 100.0)
    np.testing.assert_allclose(
        estimator.coef_[order] @ centre + estimator.intercept_[order], INTERCEPT, atol=0.05
    )
    np.testing.assert_allclose(np.sqrt(estimator.variances_[order]), SCALE, rtol=0.25)
    assert estimator.converged_ and estimator.n_iter_ > 1
    assert estimator.weights_.sum() == pytest.approx(1.0)
    assert estimator.coef_.dtype == np.float64
    assert estimator.lower_bound_ == pytest.approx(estimator.score(X, y), abs=1e-4)


def _numpy_log_joint(estimator, X, y):
    if isinstance(estimator, jaxem.MixtureOfExperts):
        logits = X @ estimator.gate_coef_.T + estimator.gate_intercept_
        log_gate = logits - logsumexp(logits, axis=1, keepdims=True)
    else:
        log_gate = np.log(estimator.weights_) * np.ones((len(X), 1))
    means = X @ estimator.coef_.T + estimator.intercept_
    return log_gate, log_gate + norm.logpdf(y[:, None], means, np.sqrt(estimator.variances_))


@pytest.mark.parametrize("cls", [jaxem.RegressionMixture, jaxem.MixtureOfExperts])
def test_outputs_against_numpy(cls):
    X, y, _ = _lines()
    estimator = cls(3, max_iter=20, random_state=0).fit(X, y)
    log_gate, log_joint = _numpy_log_joint(estimator, X, y)
    log_prob = logsumexp(log_joint, axis=1)
    np.testing.assert_allclose(estimator.score_samples(X, y), log_prob, rtol=1e-9)
    assert estimator.score(X, y) == pytest.approx(log_prob.mean(), rel=1e-9)
    np.testing.assert_allclose(
        estimator.predict_proba(X, y), np.exp(log_joint - log_prob[:, None]), atol=1e-9
    )
    np.testing.assert_allclose(estimator.predict_proba(X), np.exp(log_gate), rtol=1e-9)
    means = X @ estimator.coef_.T + estimator.intercept_
    np.testing.assert_allclose(
        estimator.predict(X), np.sum(np.exp(log_gate) * means, axis=1), rtol=1e-9
    )
    n_params = cls(3)._build_model(3, 3).n_parameters(2)
    assert estimator.bic(X, y) == pytest.approx(
        -2 * log_prob.sum() + n_params * np.log(N_ROWS), rel=1e-9
    )
    assert estimator.aic(X, y) == pytest.approx(-2 * log_prob.sum() + 2 * n_params, rel=1e-9)


def test_float32_in_float32_and_accurate():
    X, y, _ = _lines(np.float32)
    X64, y64, _ = _lines()
    start = dict(coef_init=COEF + 0.3, intercept_init=_shifted_intercepts(), max_iter=30)
    narrow = jaxem.RegressionMixture(3, **start).fit(X, y)
    wide = jaxem.RegressionMixture(3, **start).fit(X64, y64)
    for name in ("coef_", "intercept_", "variances_", "weights_"):
        assert getattr(narrow, name).dtype == np.float32, name
        assert getattr(wide, name).dtype == np.float64, name
    for out in (narrow.predict(X), narrow.score_samples(X, y), narrow.predict_proba(X, y)):
        assert out.dtype == np.float32
    np.testing.assert_allclose(narrow.coef_, wide.coef_, atol=2e-3)
    np.testing.assert_allclose(narrow.variances_, wide.variances_, rtol=2e-2)
    np.testing.assert_allclose(narrow.predict(X), wide.predict(X64), atol=5e-3)
    assert jax.config.read("jax_enable_x64") is False  # never flipped globally


def test_given_lines_start_the_fit():
    X, y, _ = _lines()
    start = dict(coef_init=COEF, intercept_init=_shifted_intercepts())
    estimator = jaxem.RegressionMixture(3, max_iter=0, **start).fit(X, y)
    np.testing.assert_allclose(estimator.coef_, COEF, atol=1e-12)
    np.testing.assert_allclose(estimator.intercept_, _shifted_intercepts(), atol=1e-9)
    np.testing.assert_allclose(estimator.weights_, 1 / 3)
    np.testing.assert_allclose(estimator.variances_, np.var(y))


def test_experts_gate_separates_regions():
    rng = np.random.default_rng(3)
    X = rng.uniform(-2, 2, (N_ROWS, 1))
    left = rng.uniform(size=N_ROWS) < 1 / (1 + np.exp(4 * X[:, 0]))
    y = np.where(left, 2 * X[:, 0], -X[:, 0]) + 0.1 * rng.normal(size=N_ROWS)
    experts = jaxem.MixtureOfExperts(2, n_init=4, random_state=0).fit(X, y)
    gate = experts.predict_proba(np.array([[-1.5], [1.5]]))
    first = int(np.argmax(experts.coef_[:, 0]))  # the slope-2 expert
    assert gate[0, first] > 0.9 and gate[1, first] < 0.1
    constant = jaxem.RegressionMixture(2, n_init=4, random_state=0).fit(X, y)
    assert experts.score(X, y) > constant.score(X, y) + 0.05
    trace = experts.restarts_.trace[experts.best_restart_]
    values = trace[np.isfinite(trace)]
    assert np.all(np.diff(values) >= -1e-6 * np.abs(values).max())  # float64 fit


def test_more_restarts_never_end_lower():
    X, y, _ = _lines(seed=1)
    one = jaxem.RegressionMixture(3, random_state=0).fit(X, y)
    many = jaxem.RegressionMixture(3, n_init=6, random_state=0).fit(X, y)
    assert many.lower_bound_ >= one.lower_bound_ - 1e-12
    again = clone(one).fit(X, y)
    np.testing.assert_array_equal(again.coef_, one.coef_)


def test_convergence_warning():
    X, y, _ = _lines()
    with pytest.warns(ConvergenceWarning, match="did not converge after 2 iterations"):
        jaxem.RegressionMixture(3, max_iter=2, random_state=0).fit(X, y)


@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda X, y: (X, y[:-1]), ValueError, "y has 239 entries but X has 240 rows"),
        (
            lambda X, y: (X, np.where(np.arange(N_ROWS) == 3, np.nan, y)),
            ValueError,
            "y contains NaN",
        ),
        (
            lambda X, y: (X, np.where(np.arange(N_ROWS) == 3, np.inf, y)),
            ValueError,
            "y contains inf",
        ),
        (lambda X, y: (np.where(X == X[0, 0], np.nan, X), y), ValueError, "X contains NaN"),
        (lambda X, y: (X, np.stack([y, y], 1)), ValueError, r"y must be 1-D .* shape \(240, 2\)"),
        (lambda X, y: (X, None), ValueError, "requires y to be passed"),
        (lambda X, y: (X[:2], y[:2]), ValueError, "Expected n_samples >= n_components"),
    ],
)
def test_bad_input_raises(change, error, message):
    X, y, _ = _lines()
    with pytest.raises(error, match=message):
        jaxem.RegressionMixture(3).fit(*change(X, y))


@pytest.mark.parametrize(
    "params, message",
    [
        ({"coef_init": COEF}, "coef_init and intercept_init go together"),
        ({"variances_init": np.ones(3)}, "need coef_init and intercept_init"),
        ({"coef_init": COEF[:2], "intercept_init": INTERCEPT}, r"coef_init must have shape"),
        (
            {"coef_init": COEF, "intercept_init": INTERCEPT, "variances_init": -np.ones(3)},
            "positive",
        ),
        ({"coef_init": COEF, "intercept_init": INTERCEPT, "weights_init": np.ones(3)}, "sum to 1"),
        ({"init_params": "kmeans++"}, "init_params"),
        ({"reg": -1.0}, "reg"),
    ],
)
def test_bad_parameters_raise(params, message):
    X, y, _ = _lines()
    with pytest.raises(ValueError, match=message):
        jaxem.RegressionMixture(3, **params).fit(X, y)


def test_evaluation_checks(fitted):
    estimator, X, y = fitted
    with pytest.raises(NotFittedError):
        jaxem.RegressionMixture(3).predict(X)
    with pytest.raises(ValueError, match="y has 3 entries but X has 240 rows"):
        estimator.score(X, y[:3])
    with pytest.raises(ValueError, match="X has 3 features"):
        estimator.predict(np.ones((4, 3)))
    # A column vector is one response per row.
    np.testing.assert_allclose(
        estimator.score_samples(X, y[:, None]), estimator.score_samples(X, y)
    )


def test_every_init_fits():
    X, y, _ = _lines()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for init in ("random", "kmeans", "k-means++"):
            estimator = jaxem.RegressionMixture(3, init_params=init, max_iter=5).fit(X, y)
            assert np.all(np.isfinite(estimator.coef_)), init


#: Checks that call ``score_samples(X)``: here the log-likelihood is of ``y`` given
#: ``x``, so it needs ``y`` (by design, as ``score``).
_NEEDS_Y = {
    name: "score_samples(X, y) needs the response"
    for name in (
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_array_api_input",
    )
}


@parametrize_with_checks(
    [jaxem.RegressionMixture(2, max_iter=5, random_state=0)],
    expected_failed_checks=lambda estimator: _NEEDS_Y,
)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_degenerate_data_gives_finite_lines(dtype):
    """Collinear inputs (a duplicated column: singular normal equations, factorised
    in float32 thanks to the relative floor on the ridge), a constant response (zero
    residuals) and as many rows as lines (each line through one row)."""
    X, y, _ = _lines(dtype)
    cases = [(np.c_[X[:, :1], X[:, :1]], y), (X, np.zeros_like(y)), (X[:3], y[:3])]
    for X_case, y_case in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            estimator = jaxem.RegressionMixture(3, n_init=2, random_state=0).fit(X_case, y_case)
        for name in ("coef_", "intercept_", "variances_", "weights_"):
            assert np.all(np.isfinite(getattr(estimator, name))), name
        assert np.isfinite(estimator.score(X_case, y_case))


def test_all_restarts_failed_names_the_fixes():
    X, y, _ = _lines(np.float32)
    start = dict(coef_init=np.full((3, 2), 1e30), intercept_init=np.zeros(3))
    with pytest.raises(ValueError, match="restarts of RegressionMixture .* larger reg"):
        jaxem.RegressionMixture(3, **start).fit(X, y)


def test_experts_gate_penalty_converges_on_separated_regions():
    rng = np.random.default_rng(4)
    X = rng.uniform(-2, 2, (N_ROWS, 1))
    y = np.where(X[:, 0] < 0, 2 * X[:, 0], -X[:, 0]) + 0.1 * rng.normal(size=N_ROWS)
    options = dict(n_init=2, max_iter=1000, tol=1e-9, random_state=0)
    with pytest.warns(ConvergenceWarning):
        free = jaxem.MixtureOfExperts(2, **options).fit(X, y)
    penalised = jaxem.MixtureOfExperts(2, gate_reg=1.0, **options).fit(X, y)
    assert penalised.converged_ and not free.converged_
    assert np.ptp(free.gate_coef_) > np.ptp(penalised.gate_coef_)
    with pytest.raises(ValueError, match="gate_reg"):
        jaxem.MixtureOfExperts(2, gate_reg=-1.0).fit(X, y)

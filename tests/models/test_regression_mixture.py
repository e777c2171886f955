"""Mixtures of linear regressions and of experts (``jaxem.regression_mixture``,
``jaxem.mixture_of_experts``) against a naive numpy EM, in float64.

The contract suite (tests/test_contract.py) covers additivity, zero-weight rows,
non-decreasing log-likelihood, batched == single and chunked == unchunked for both.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

import jaxem
from jaxem import engine

N_ROWS = 300
#: Three lines in two inputs: (coefficients, intercept, noise standard deviation).
LINES = (([2.0, -1.0], 0.0, 0.1), ([-2.0, 0.5], 1.0, 0.2), ([0.0, 1.5], -1.0, 0.15))


def _lines(seed=0, n_rows=N_ROWS):
    """Rows drawn from the three crossing lines, labels uniform."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (n_rows, 2))
    labels = rng.integers(3, size=n_rows)
    coef = np.array([line[0] for line in LINES])
    intercept = np.array([line[1] for line in LINES])
    scale = np.array([line[2] for line in LINES])
    noise = scale[labels] * rng.normal(size=n_rows)
    y = np.sum(x * coef[labels], axis=1) + intercept[labels] + noise
    return x, y, labels


def _regions(seed=1, n_rows=N_ROWS):
    """Experts: y = 2x + 1 for x < 0, y = -x + 1 for x > 0 (the lines cross at x = 0,
    where they meet), noise 0.1."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (n_rows, 1))
    y = np.where(x[:, 0] < 0, 2 * x[:, 0], -x[:, 0]) + 1 + 0.1 * rng.normal(size=n_rows)
    return x, y


# -- a naive numpy EM ----------------------------------------------------------------------------
def _numpy_log_joint(params, x, y, gate):
    log_weights, gate_coef, coef, intercept, variances = params
    logits = log_weights + (x @ gate_coef.T if gate == "softmax" else 0.0)
    log_gate = logits - logsumexp(logits, axis=-1, keepdims=True)
    residual = y[:, None] - (x @ coef.T + intercept)
    return log_gate - 0.5 * (np.log(2 * np.pi * variances) + residual**2 / variances)


def _numpy_em(params, x, y, w, n_iter, gate, reg, gate_reg=0.0):
    """EM written out row by row in its textbook form (Σ r x̃ y, Σ r y², no residual
    sums); the gate by the Böhning step. Returns the parameters and the mean
    log-likelihood of every E-step."""
    params = [np.array(p, np.float64) for p in params]
    w = w * len(w) / np.sum(w)  # the engine's normalisation: the ridge is in rows
    n_rows, n_features = x.shape
    design = np.hstack([x, np.ones((n_rows, 1))])
    eps = 10 * np.finfo(np.float64).eps
    trace = []
    for _ in range(n_iter):
        log_joint = _numpy_log_joint(params, x, y, gate)
        norm = logsumexp(log_joint, axis=1)
        penalty = 0.5 * gate_reg * np.sum(params[1] ** 2)  # MAP: the log prior joins
        trace.append((np.sum(w * norm) - penalty) / np.sum(w))
        resp = np.exp(log_joint - norm[:, None]) * w[:, None]
        counts = resp.sum(0)
        new = []
        variances = []
        for k in range(len(counts)):
            a = (design * resp[:, k : k + 1]).T @ design
            a += (reg + eps * np.trace(a) / (n_features + 1)) * np.eye(n_features + 1)
            beta = np.linalg.solve(a, (design * resp[:, k : k + 1]).T @ y)
            variances.append(np.sum(resp[:, k] * (y - design @ beta) ** 2) / (counts[k] + eps))
            new.append(beta)
        new = np.array(new)
        variances = np.array(variances) + reg
        if gate == "constant":
            log_weights = np.log((counts + eps) / np.sum(counts + eps))
            gate_coef = np.zeros_like(params[1])
        else:
            theta = np.hstack([params[1], params[0][:, None]])
            logits = design @ theta.T
            prob = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
            gradient = (resp - w[:, None] * prob).T @ design
            s = (design * w[:, None]).T @ design
            s += (reg + eps * np.trace(s) / (n_features + 1)) * np.eye(n_features + 1)
            # Maximise G·Δ - ¼ tr(Δᵀ Δ S) - λ/2 |slopes of Θ + Δ|² over centred Δ.
            slopes = np.diag(np.r_[np.ones(n_features), 0.0])
            rhs = gradient - gate_reg * theta @ slopes
            theta = theta + np.linalg.solve(0.5 * s + gate_reg * slopes, rhs.T).T
            theta -= theta.mean(axis=0)
            log_weights, gate_coef = theta[:, -1], theta[:, :-1]
        params = [log_weights, gate_coef, new[:, :-1], new[:, -1], variances]
    return params, np.array(trace)


@pytest.mark.parametrize("gate, gate_reg", [("constant", 0.0), ("softmax", 0.0), ("softmax", 5.0)])
def test_equals_a_naive_numpy_em_from_the_same_start(gate, gate_reg, x64):
    """Same initial parameters, same number of iterations, sample weights: parameters
    and the log-likelihood history (plus the gate's penalty) to 1e-10."""
    x, y, _ = _lines()
    w = np.random.default_rng(5).uniform(0.5, 2.0, N_ROWS)
    model = dataclasses.replace(jaxem.regression_mixture(3, gate=gate, reg=1e-3), gate_reg=gate_reg)
    rows = jaxem.RegressionRows(x, y)
    start = engine.initialise(model, rows, key=jax.random.key(2), n_restarts=1)
    start = jax.tree.map(lambda leaf: leaf[0], start)
    n_iter = 30
    result = jaxem.fit(
        model, rows, key=jax.random.key(0), weights=w, init_params=start, tol=-1.0,
        max_iter=n_iter, chunk_size=64,
    )  # fmt: skip
    expected, trace = _numpy_em(start, x, y, w, n_iter, gate, reg=1e-3, gate_reg=gate_reg)
    assert result.n_iter == n_iter
    for name, actual, wanted in zip(result.params._fields, result.params, expected):
        np.testing.assert_allclose(np.asarray(actual), wanted, rtol=1e-10, atol=1e-10, err_msg=name)
    np.testing.assert_allclose(
        np.asarray(result.restarts.trace[0, :n_iter]), trace, rtol=1e-10, atol=1e-12
    )
    # The parameters moved: the comparison is not of a fixed point.
    assert abs(trace[-1] - trace[0]) > 0.1


def test_recovers_three_crossing_lines(x64):
    x, y, labels = _lines(seed=3, n_rows=600)
    model = jaxem.regression_mixture(3)
    result = jaxem.fit(
        model, jaxem.RegressionRows(x, y), key=jax.random.key(1), n_restarts=8, tol=1e-10,
        max_iter=500,
    )  # fmt: skip
    order = np.argsort(np.asarray(result.params.intercept))  # intercepts -1, 0, 1
    coef = np.asarray(result.params.coef)[order]
    np.testing.assert_allclose(coef, [LINES[2][0], LINES[0][0], LINES[1][0]], atol=0.05)
    np.testing.assert_allclose(np.asarray(result.params.intercept)[order], [-1, 0, 1], atol=0.05)
    sd = np.sqrt(np.asarray(result.params.variances)[order])
    np.testing.assert_allclose(sd, [0.15, 0.1, 0.2], rtol=0.2)
    weights = np.exp(np.asarray(result.params.log_weights))[order]
    np.testing.assert_allclose(weights, np.bincount(labels)[[2, 0, 1]] / 600, atol=0.03)


def test_experts_gate_separates_regions_and_never_decreases(x64):
    x, y = _regions()
    rows = jaxem.RegressionRows(x, y)
    options = dict(key=jax.random.key(0), n_restarts=4, tol=-1.0, max_iter=200)
    experts = jaxem.fit(jaxem.mixture_of_experts(2), rows, **options)
    for row in np.asarray(experts.restarts.trace):
        values = row[np.isfinite(row)]
        assert len(values) == 200
        assert np.all(np.diff(values) >= -1e-12 * np.abs(values).max()), np.diff(values).min()
    params = experts.params
    left = int(np.argmax(np.asarray(params.coef[:, 0])))  # the slope-2 expert
    np.testing.assert_allclose(np.asarray(params.coef[:, 0])[[left, 1 - left]], [2, -1], atol=0.05)
    grid = jaxem.RegressionRows(np.array([[-1.5], [-0.5], [0.5], [1.5]]), np.zeros(4))
    gate = np.asarray(jaxem.mixture_of_experts(2).gate_proba(params, grid))
    assert np.all(gate[:2, left] > 0.9) and np.all(gate[2:, left] < 0.1), gate
    # The expected response follows each region's line.
    predicted = np.asarray(jaxem.mixture_of_experts(2).predict(params, grid))
    np.testing.assert_allclose(predicted, [-2, 0, 0.5, -0.5], atol=0.1)
    # A gate that sees x explains the data better than constant weights.
    constant = jaxem.fit(jaxem.regression_mixture(2), rows, **options)
    assert float(experts.log_likelihood) > float(constant.log_likelihood) + 0.1


def test_gate_penalty_gives_separated_regions_a_finite_maximum(x64):
    """Regions split exactly at x = 0: without a penalty the gate's slope grows at
    every iteration (no finite maximum); with ``gate_reg`` EM converges, monotone in
    the penalised objective."""
    x, y = _regions()
    rows = jaxem.RegressionRows(x, y)
    options = dict(key=jax.random.key(0), n_restarts=2, max_iter=1500)
    free = jaxem.fit(jaxem.mixture_of_experts(2), rows, tol=1e-9, **options)
    assert not bool(free.converged)
    penalised = jaxem.fit(jaxem.mixture_of_experts(2, gate_reg=1.0), rows, tol=1e-9, **options)
    assert bool(penalised.converged)
    for row in np.asarray(penalised.restarts.trace):
        values = row[np.isfinite(row)]
        assert np.all(np.diff(values) >= -1e-12 * np.abs(values).max()), np.diff(values).min()
    slope = lambda result: np.ptp(np.asarray(result.params.gate_coef[:, 0]))  # noqa: E731
    assert slope(free) > 2 * slope(penalised) > 0


def test_float32_matches_float64():
    """Float32 from the same start lands on the float64 fit to float32 accuracy."""
    x, y, _ = _lines()
    model = jaxem.regression_mixture(3)
    with jax.enable_x64(True):
        rows = jaxem.RegressionRows(x, y)
        start = engine.initialise(model, rows, key=jax.random.key(2), n_restarts=1)
        wide = jaxem.fit(model, rows, key=jax.random.key(0), init_params=start, max_iter=50)
        start = jax.tree.map(np.asarray, start)
    narrow = jaxem.fit(
        model,
        jaxem.RegressionRows(x.astype(np.float32), y.astype(np.float32)),
        key=jax.random.key(0),
        init_params=jax.tree.map(lambda leaf: leaf.astype(np.float32), start),
        max_iter=50,
    )
    assert narrow.params.coef.dtype == jnp.float32
    for actual, wanted in zip(narrow.params, wide.params):
        np.testing.assert_allclose(np.asarray(actual), np.asarray(wanted), rtol=2e-3, atol=2e-4)


def test_outputs_against_numpy(x64):
    x, y, _ = _lines()
    model = jaxem.mixture_of_experts(3)
    rows = jaxem.RegressionRows(x, y)
    params = jaxem.fit(model, rows, key=jax.random.key(0), max_iter=5).params
    numpy_params = [np.asarray(p) for p in params]
    log_joint = _numpy_log_joint(numpy_params, x, y, "softmax")
    log_prob, proba, gate, predicted = engine.evaluate(
        model, params, rows, ("log_prob", "predict_proba", "gate_proba", "predict")
    )
    np.testing.assert_allclose(log_prob, logsumexp(log_joint, axis=1), rtol=1e-12)
    np.testing.assert_allclose(proba, np.exp(log_joint - logsumexp(log_joint, 1, keepdims=True)))
    logits = numpy_params[0] + x @ numpy_params[1].T
    numpy_gate = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    np.testing.assert_allclose(gate, numpy_gate, rtol=1e-12)
    means = x @ numpy_params[2].T + numpy_params[3]
    np.testing.assert_allclose(predicted, np.sum(numpy_gate * means, axis=1), rtol=1e-12)


def test_n_parameters():
    assert jaxem.regression_mixture(3).n_parameters(2) == 3 * 3 + 3 + 2
    assert jaxem.mixture_of_experts(3).n_parameters(2) == 3 * 3 + 3 + 2 * 3


def test_bad_input_raises():
    x, y, _ = _lines()
    key = jax.random.key(0)
    model = jaxem.regression_mixture(2)
    with pytest.raises(TypeError, match=r"takes jaxem.RegressionRows\(x, y\)"):
        jaxem.fit(model, x, key=key)
    with pytest.raises(ValueError, match="y must be 1-D"):
        jaxem.fit(model, jaxem.RegressionRows(x, np.stack([y, y], 1)), key=key)
    with pytest.raises(ValueError, match="same number of rows"):
        jaxem.fit(model, jaxem.RegressionRows(x, y[:-1]), key=key)
    with pytest.raises(ValueError, match="gate must be one of"):
        jaxem.regression_mixture(2, gate="linear")
    with pytest.raises(ValueError, match="init must be one of"):
        jaxem.regression_mixture(2, "random_from_data")
    with pytest.raises(ValueError, match="reg must be a non-negative"):
        jaxem.regression_mixture(2, reg=-1.0)
    with pytest.raises(ValueError, match="gate_reg must be a non-negative"):
        jaxem.mixture_of_experts(2, gate_reg=-1.0)
    with pytest.raises(ValueError, match="n_components must be a positive int"):
        jaxem.regression_mixture(0)

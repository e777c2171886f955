"""The Student-t family: densities against scipy, the degrees-of-freedom update against
scipy's root finder, and EM against a naive numpy EM from the same start (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, special, stats

import jaxem
from jaxem.families import log_densities
from jaxem.families.student_t import solve_dof
from tests.families.test_families import _gaussian_layout

N_ITER = 12


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_log_densities_match_scipy(covariance_type, x64):
    rng = np.random.default_rng(0)
    n_components, n_features = 3, 3
    means = rng.normal(size=(n_components, n_features))
    layout, full = _gaussian_layout(covariance_type, rng, n_components, n_features)
    dof = np.array([1.5, 4.0, 60.0])
    family = jaxem.student_t(covariance_type)
    params = family.from_layout(
        jnp.float64, means=means, covariances=layout, degrees_of_freedom=dof
    )
    x = rng.normal(scale=3.0, size=(20, n_features))
    got = np.asarray(log_densities(family, params, jnp.asarray(x)))
    expected = np.stack(
        [stats.multivariate_t.logpdf(x, means[k], full[k], df=dof[k]) for k in range(3)], 1
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def _dof_equation(dof, target):
    return np.log(dof / 2) - special.digamma(dof / 2) - target


def test_solve_dof_matches_scipy_root_finder_and_clips(x64):
    targets = np.array([2.0, 0.3, 0.05, 0.01])
    got = np.asarray(solve_dof(jnp.asarray(targets), 1.0, 200.0))
    # 2.0 has its root below 1 and is clipped there.
    assert _dof_equation(1.0, targets[0]) < 0
    expected = [1.0] + [
        optimize.brentq(_dof_equation, 1.0, 200.0, args=(t,), xtol=1e-14) for t in targets[1:]
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # Roots above 200 (targets below h(200) ≈ 0.005; no root at all for <= 0) clip there.
    np.testing.assert_allclose(solve_dof(jnp.array([0.004, 0.0, -0.1]), 1.0, 200.0), [200.0] * 3)


def _naive_em(x, weights, means, covariances, dof, n_iter, reg, diag):
    """McLachlan and Peel's EM for a t mixture, written out with scipy's densities."""
    n_features = x.shape[1]
    for _ in range(n_iter):
        log_joint = np.stack(
            [
                stats.multivariate_t.logpdf(x, means[k], covariances[k], df=dof[k])
                for k in range(len(weights))
            ],
            1,
        ) + np.log(weights)
        resp = np.exp(log_joint - special.logsumexp(log_joint, axis=1, keepdims=True))
        offsets = x[:, None, :] - means[None]
        squared = np.einsum("nkd,kde,nke->nk", offsets, np.linalg.inv(covariances), offsets)
        scales = (dof + n_features) / (dof + squared)
        counts = resp.sum(0)
        weights = counts / counts.sum()
        ru = resp * scales
        means = (ru.T @ x) / ru.sum(0)[:, None]
        offsets = x[:, None, :] - means[None]
        covariances = np.einsum("nk,nkd,nke->kde", ru, offsets, offsets) / counts[:, None, None]
        if diag:
            covariances = covariances * np.eye(n_features)
        covariances = covariances + reg * np.eye(n_features)
        new_dof = []
        for k in range(len(weights)):
            half = (dof[k] + n_features) / 2
            mean = np.sum(resp[:, k] * (np.log(scales[:, k]) - scales[:, k])) / counts[k]
            target = -1 - mean - special.digamma(half) + np.log(half)
            new_dof.append(optimize.brentq(_dof_equation, 1.0, 200.0, args=(target,), xtol=1e-14))
        dof = np.array(new_dof)
    return weights, means, covariances, dof


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_mixture_em_matches_naive_numpy_em(covariance_type, x64):
    """jaxem.fit of a t mixture from given parameters equals the naive EM above after
    N_ITER iterations: weights, means, scale matrices and degrees of freedom."""
    rng = np.random.default_rng(1)
    centers = np.array([[-4.0, 0.0], [4.0, 1.0]])
    scales = np.sqrt(3.0 / rng.chisquare(3.0, size=(200, 1)))
    x = centers[np.arange(200) % 2] + rng.normal(size=(200, 2)) * scales
    weights = np.array([0.4, 0.6])
    means = np.array([[-3.0, 1.0], [3.0, -1.0]])
    covariances = np.stack([np.eye(2) * 2.0, np.array([[1.5, 0.3], [0.3, 1.0]])])
    if covariance_type == "diag":
        covariances = covariances * np.eye(2)
    dof = np.array([3.0, 10.0])
    family = jaxem.student_t(covariance_type, reg_covar=1e-6)
    layout = covariances if covariance_type == "full" else np.diagonal(covariances, 0, 1, 2)
    start = jaxem.MixtureParams(
        jnp.log(jnp.asarray(weights)),
        family.from_layout(jnp.float64, means=means, covariances=layout, degrees_of_freedom=dof),
    )
    result = jaxem.fit(
        jaxem.mixture(family, 2),
        jnp.asarray(x),
        key=jax.random.key(0),
        max_iter=N_ITER,
        tol=0.0,
        init_params=start,
    )
    assert int(result.n_iter) == N_ITER
    expected = _naive_em(
        x, weights, means, covariances, dof, N_ITER, 1e-6, covariance_type == "diag"
    )
    got = family.to_layout(result.params.components)
    got_covariances = got["covariances"]
    if covariance_type == "diag":
        got_covariances = np.stack([np.diag(row) for row in got_covariances])
    np.testing.assert_allclose(np.exp(result.params.log_weights), expected[0], rtol=1e-9)
    np.testing.assert_allclose(got["means"], expected[1], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got_covariances, expected[2], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["degrees_of_freedom"], expected[3], rtol=1e-8)
    # The degrees of freedom moved from the start (the update is not a no-op).
    assert np.max(np.abs(expected[3] - dof)) > 0.5


def test_fixed_dof_and_parameter_count(x64):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_t(3.0, size=(100, 2)))
    fixed = jaxem.student_t("diag", dof=7.0, fix_dof=True)
    result = jaxem.fit(jaxem.mixture(fixed, 2), x, key=jax.random.key(0), max_iter=5)
    np.testing.assert_array_equal(result.params.components.degrees_of_freedom, [7.0, 7.0])
    free = jaxem.student_t("diag")
    assert free.n_parameters(2, 2) == fixed.n_parameters(2, 2) + 2
    assert fixed.n_parameters(2, 2) == jaxem.gaussian("diag").n_parameters(2, 2)


def test_sample_has_the_distribution(x64):
    family = jaxem.student_t("full")
    params = family.from_layout(
        jnp.float64,
        means=np.array([[1.0, -2.0]]),
        covariances=np.array([[[2.0, 0.5], [0.5, 1.0]]]),
        degrees_of_freedom=np.array([6.0]),
    )
    draws = np.asarray(family.sample(jax.random.key(0), params, jnp.zeros(20000, jnp.int32)))
    np.testing.assert_allclose(draws.mean(0), [1.0, -2.0], atol=0.05)
    # The covariance of a t is ν/(ν - 2) times its scale matrix.
    expected = 1.5 * np.array([[2.0, 0.5], [0.5, 1.0]])
    np.testing.assert_allclose(np.cov(draws.T), expected, rtol=0.1)


@pytest.mark.parametrize(
    "x, message",
    [
        (np.array([[np.nan, 1.0]]), "Student-t data must be finite"),
        (np.array([1.0, 2.0]), "Student-t data must be a 2-D real array"),
    ],
)
def test_check_data_messages(x, message):
    with pytest.raises(ValueError, match=message):
        jaxem.student_t().check_data(x)


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="0 < dof_min <= dof <= dof_max"):
        jaxem.student_t(dof=0.5, dof_min=1.0)
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        jaxem.student_t("banded")

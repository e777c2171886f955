"""The von Mises-Fisher family: its normaliser and Bessel ratio against scipy, the
M-step against a naive numpy estimate, the sampler, the support check, float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, special, stats

import jaxem
from jaxem.families import log_densities
from jaxem.families.von_mises_fisher import (
    concentration_from_mean_resultant,
    log_normaliser,
    mean_resultant_length,
)

DIMENSIONS = (2, 3, 10, 100)
KAPPAS = np.array([1e-3, 0.1, 0.9, 1.0, 1.1, 3.0, 30.0, 250.0, 1e4])


def _directions(rng, n_rows, n_features):
    x = rng.normal(size=(n_rows, n_features))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _reference_log_normaliser(kappa, n_features):
    """``log C_D(κ)`` from scipy's exponentially scaled Bessel function."""
    nu = n_features / 2 - 1
    log_bessel = np.log(special.ive(nu, kappa)) + kappa
    return nu * np.log(kappa) - n_features / 2 * np.log(2 * np.pi) - log_bessel


def _reference_concentration(mean_resultant, n_features):
    """``κ`` solving ``I_{D/2}(κ) / I_{D/2-1}(κ) = r̄`` by a bracketing root-find."""
    nu = n_features / 2 - 1

    def residual(kappa):
        return special.ive(nu + 1, kappa) / special.ive(nu, kappa) - mean_resultant

    # A_D(κ) < κ, so the root lies above r̄ (where ive is finite for D <= 100).
    return optimize.brentq(residual, mean_resultant, 1e7, xtol=1e-14, rtol=4 * np.finfo(float).eps)


# -- log-densities against scipy -------------------------------------------------------------
@pytest.mark.parametrize("n_features", DIMENSIONS)
def test_log_densities_match_scipy(n_features, x64):
    rng = np.random.default_rng(n_features)
    family = jaxem.von_mises_fisher()
    means = _directions(rng, len(KAPPAS), n_features)
    params = family.from_layout(jnp.float64, means=means, concentrations=KAPPAS)
    # Rows near each mean (where a concentrated density lives) and anywhere.
    near = means + rng.normal(size=means.shape) / np.sqrt(KAPPAS)[:, None] / 3
    x = np.concatenate(
        [_directions(rng, 20, n_features), near / np.linalg.norm(near, axis=1)[:, None]]
    )
    got = np.asarray(log_densities(family, params, jnp.asarray(x)))
    expected = np.stack(
        [stats.vonmises_fisher(m, k).logpdf(x) for m, k in zip(means, KAPPAS)], axis=1
    )
    # scipy forms κ μ·x and log C_D(κ) separately too: absolute rounding of κ · eps.
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=4e-16 * KAPPAS.max())
    layout = family.to_layout(params)
    np.testing.assert_allclose(layout["means"], means, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(layout["concentrations"], KAPPAS)


@pytest.mark.parametrize("n_features", DIMENSIONS + (1000,))
def test_log_normaliser_and_bessel_ratio_match_scipy(n_features, x64):
    kappa = np.logspace(-3, 4, 50)
    expected = _reference_log_normaliser(kappa, n_features)
    finite = np.isfinite(expected)  # scipy's ive underflows for D = 1000 and small κ
    assert finite.sum() >= 10
    got = np.asarray(log_normaliser(jnp.asarray(kappa), n_features))
    np.testing.assert_allclose(got[finite], expected[finite], rtol=5e-14, atol=5e-14)
    nu = n_features / 2 - 1
    ratio = special.ive(nu + 1, kappa) / special.ive(nu, kappa)
    got_ratio, got_complement = mean_resultant_length(jnp.asarray(kappa), n_features)
    np.testing.assert_allclose(np.asarray(got_ratio)[finite], ratio[finite], rtol=5e-13)
    # 1 - A from scipy cancels where A is near 1: compare only where it keeps 1e-12.
    kept = finite & (1 - ratio > 1e-4)
    np.testing.assert_allclose(np.asarray(got_complement)[kept], 1 - ratio[kept], rtol=1e-11)


def test_log_normaliser_at_zero_and_for_large_dimension(x64):
    """κ = 0: minus the log area of the sphere; D = 1000, small κ (where scipy's ive
    underflows): the power series ``log C = log Γ(D/2) - log 2 - (D/2) log π - κ²/(2D)``."""
    for n_features in (2, 3, 1000):
        area = np.log(2) + n_features / 2 * np.log(np.pi) - special.gammaln(n_features / 2)
        np.testing.assert_allclose(float(log_normaliser(jnp.zeros(()), n_features)), -area)
    kappa = np.array([1e-3, 0.5, 1.0])
    series = -(np.log(2) + 500 * np.log(np.pi) - special.gammaln(500)) - kappa**2 / 2000
    # Next term of log Σ: -κ⁴ / (8 D² (D+2)) < 1.3e-10 at κ = 1.
    got = np.asarray(log_normaliser(jnp.asarray(kappa), 1000))
    np.testing.assert_allclose(got, series, rtol=1e-13, atol=2e-10)


@pytest.mark.parametrize("n_features", DIMENSIONS + (1000,))
def test_concentration_solves_the_ratio_equation(n_features, x64):
    """Banerjee's approximation plus Newton steps: the root of ``A_D(κ) = r̄``."""
    kappa = np.logspace(-2, 5, 15)
    ratio, complement = mean_resultant_length(jnp.asarray(kappa), n_features)
    got = np.asarray(concentration_from_mean_resultant(ratio, complement, n_features))
    np.testing.assert_allclose(got, kappa, rtol=1e-11)
    if n_features > 100:
        return  # scipy's ive underflows there: the round trip above is the check
    for r in (0.05, 0.5, 0.9, 0.999):
        expected = _reference_concentration(r, n_features)
        found = concentration_from_mean_resultant(jnp.asarray(r), jnp.asarray(1 - r), n_features)
        np.testing.assert_allclose(float(found), expected, rtol=1e-11)


@pytest.mark.parametrize("n_features", (3, 100))
def test_float32_normaliser_ratio_and_concentration_are_accurate_to_float32(n_features):
    kappa = np.logspace(-3, 4, 29)
    with jax.enable_x64(True):
        expected = np.asarray(log_normaliser(jnp.asarray(kappa), n_features))
        ratio, complement = map(np.asarray, mean_resultant_length(jnp.asarray(kappa), n_features))
    eps = np.finfo(np.float32).eps
    got = np.asarray(log_normaliser(jnp.asarray(kappa, jnp.float32), n_features), np.float64)
    np.testing.assert_allclose(got, expected, rtol=32 * eps, atol=32 * eps)
    got_ratio, got_complement = mean_resultant_length(jnp.asarray(kappa, jnp.float32), n_features)
    np.testing.assert_allclose(np.asarray(got_ratio), ratio, rtol=32 * eps)
    np.testing.assert_allclose(np.asarray(got_complement), complement, rtol=32 * eps)
    found = concentration_from_mean_resultant(
        jnp.asarray(ratio, jnp.float32), jnp.asarray(complement, jnp.float32), n_features
    )
    np.testing.assert_allclose(np.asarray(found), kappa, rtol=512 * eps)


# -- M-step against a naive numpy estimate ---------------------------------------------------
def test_m_step_matches_naive_weighted_estimate(x64):
    rng = np.random.default_rng(0)
    n_features = 5
    x = _directions(rng, 60, n_features) + np.array([2.0, 0, 0, 0, 0])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    resp = rng.dirichlet(np.ones(3), 60)
    family = jaxem.von_mises_fisher()
    stats_ = family.statistics(None, jnp.asarray(x), jnp.asarray(resp))
    params = family.m_step(stats_, jnp.asarray(resp.sum(0)), family.hyper(jnp.float64))
    sums = resp.T @ x
    lengths = np.linalg.norm(sums, axis=1)
    np.testing.assert_allclose(params.means, sums / lengths[:, None], rtol=1e-13, atol=1e-15)
    expected = [_reference_concentration(r, n_features) for r in lengths / resp.sum(0)]
    np.testing.assert_allclose(params.concentrations, expected, rtol=1e-11)


def test_float32_m_step_keeps_its_digits_for_a_concentrated_component():
    """κ = 1e4 on S^2 from 5000 float32 rows: 1 - r̄ ~ 1e-4 cancels in ``1 - ‖m‖`` (25 %
    off in κ that way); from the scatter about the mean, the float32 M-step is within
    8e-6 (67 eps) of the float64 M-step of the same rows."""
    rng = np.random.default_rng(0)
    mean = np.array([1.0, 0.0, 0.0])
    x = stats.vonmises_fisher(mean, 1e4).rvs(5000, random_state=rng).astype(np.float32)
    family = jaxem.von_mises_fisher()

    def m_step(dtype):
        rows, resp = jnp.asarray(x, dtype), jnp.ones((len(x), 1), dtype)
        statistics = family.statistics(None, rows, resp)
        return family.m_step(statistics, resp.sum(0), family.hyper(dtype))

    with jax.enable_x64(True):
        expected = m_step(jnp.float64)
    got = m_step(jnp.float32)
    eps = np.finfo(np.float32).eps
    np.testing.assert_allclose(got.concentrations, expected.concentrations, rtol=256 * eps)
    np.testing.assert_allclose(got.means, expected.means, rtol=0, atol=4 * eps)


def test_m_step_keeps_empty_and_single_point_components_finite(x64):
    """No weight: ``μ = e_1``, ``κ = 0``; one point (``r̄ = 1``): ``max_concentration``;
    a fixed concentration is kept."""
    family = jaxem.von_mises_fisher(max_concentration=5e5)
    rows = jnp.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    resp = jnp.asarray([[0.0, 0.0], [0.0, 1.0]])  # component 0 has no weight
    stats_ = family.statistics(None, rows, resp)
    params = family.m_step(stats_, resp.sum(0), family.hyper(jnp.float64))
    np.testing.assert_allclose(params.means, [[1.0, 0, 0], [0, 1.0, 0]])
    assert float(params.concentrations[0]) < 1e-12
    assert float(params.concentrations[1]) == 5e5
    fixed = jaxem.von_mises_fisher(concentration=7.0)
    params = fixed.m_step(stats_, resp.sum(0), fixed.hyper(jnp.float64))
    np.testing.assert_allclose(params.concentrations, [7.0, 7.0])
    assert fixed.n_parameters(2, 3) == 4 and family.n_parameters(2, 3) == 6


# -- sampling --------------------------------------------------------------------------------
@pytest.mark.parametrize("n_features, kappa", [(2, 0.5), (3, 20.0), (10, 2e3), (3, 1e4)])
def test_wood_sampler_has_the_right_mean_resultant_and_direction(n_features, kappa, x64):
    """E[μ · x] = A_D(κ) (within 5 standard errors of 4000 draws); the draws are unit
    vectors, and their mean direction is μ."""
    rng = np.random.default_rng(1)
    family = jaxem.von_mises_fisher()
    mean = _directions(rng, 1, n_features)
    params = family.from_layout(jnp.float64, means=mean, concentrations=[kappa])
    draws = np.asarray(family.sample(jax.random.key(0), params, jnp.zeros(4000, jnp.int32)))
    np.testing.assert_allclose(np.linalg.norm(draws, axis=1), 1.0, rtol=1e-12)
    cosines = draws @ mean[0]
    expected, _ = mean_resultant_length(jnp.asarray(kappa), n_features)
    assert abs(cosines.mean() - float(expected)) < 5 * cosines.std() / np.sqrt(4000)
    # scipy's draws (Wood's algorithm too) agree in distribution.
    theirs = stats.vonmises_fisher(mean[0], kappa).rvs(4000, random_state=rng) @ mean[0]
    assert stats.ks_2samp(cosines, theirs).pvalue > 1e-3
    mean_direction = draws.sum(0) / np.linalg.norm(draws.sum(0))
    assert mean_direction @ mean[0] > 0.9


# -- the support check -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "x, message",
    [
        (np.array([1.0, 0.0]), r"must be 2-D \(n_samples, n_features\), got 1-D"),
        (np.array([["a", "b"]]), "must be numeric"),
        (np.ones((3, 1)), "at least 2 features .*got n_features=1"),
        (np.array([[1.0, 0.0], [np.nan, 0.0]]), "must be finite; got NaN or infinity"),
        (
            np.array([[1.0, 0.0], [3.0, 4.0]]),
            r"must be unit vectors.*row 1 has norm 5.*Normalise rows, e\.g\. "
            r"X / np\.linalg\.norm\(X, axis=1, keepdims=True\)",
        ),
    ],
)
def test_check_data_messages(x, message):
    with pytest.raises(ValueError, match=message):
        jaxem.von_mises_fisher().check_data(x)


def test_check_data_tolerance_follows_the_dtype():
    """Rows normalised in float32 pass as float32 and fail as float64 (off by 1e-7)."""
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    jaxem.von_mises_fisher().check_data(x)
    jaxem.von_mises_fisher().check_data(np.array([[0, 1], [1, 0]]))  # integer one-hot
    off = x.astype(np.float64)
    off[0] *= 1 + 1e-7
    with pytest.raises(ValueError, match="must be unit vectors"):
        jaxem.von_mises_fisher().check_data(off)


def test_equality_letters_and_keep_fixed(x64):
    """Numbers do not change equality (no recompile); fixing κ does. hmmlearn-style
    letters: ``m`` updates the directions, ``k`` the concentrations."""
    family = jaxem.von_mises_fisher()
    assert family == jaxem.von_mises_fisher(max_concentration=10.0)
    assert jaxem.von_mises_fisher(concentration=1.0) == jaxem.von_mises_fisher(concentration=2.0)
    assert jaxem.von_mises_fisher(concentration=1.0) != family
    assert family.update_letters == "mk"
    old = family.from_layout(jnp.float64, means=[[1.0, 0.0]], concentrations=[1.0])
    new = family.from_layout(jnp.float64, means=[[0.0, 1.0]], concentrations=[5.0])
    kept = family.keep_fixed(old, new, "m", None, None, None)
    np.testing.assert_array_equal(kept.means, new.means)
    np.testing.assert_array_equal(kept.concentrations, old.concentrations)
    kept = family.keep_fixed(old, new, "k", None, None, None)
    np.testing.assert_array_equal(kept.means, old.means)
    np.testing.assert_array_equal(kept.concentrations, new.concentrations)


def test_bad_family_arguments():
    with pytest.raises(ValueError, match="max_concentration must be a positive float"):
        jaxem.von_mises_fisher(max_concentration=0.0)
    with pytest.raises(ValueError, match="concentration must be None .* non-negative float"):
        jaxem.von_mises_fisher(concentration=-1.0)

"""The multinomial family: log-densities against scipy, the M-step against naive counts."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jaxem
from jaxem.families import log_densities


def test_log_densities_match_scipy(x64):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=3)
    x = np.stack([rng.multinomial(rng.integers(0, 40), probs[i % 3]) for i in range(30)])
    family = jaxem.multinomial()
    params = family.from_layout(jnp.float64, probabilities=probs)
    got = np.asarray(log_densities(family, params, jnp.asarray(x)))
    expected = np.stack([stats.multinomial.logpmf(x, x.sum(1), p) for p in probs], 1)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # Integer counts give the same (float64 features).
    np.testing.assert_allclose(log_densities(family, params, jnp.asarray(x, jnp.int32)), got)


@pytest.mark.parametrize("prior", [1.0, 2.0])
def test_m_step_matches_naive_counts(prior, x64):
    rng = np.random.default_rng(1)
    x = rng.poisson(3.0, size=(40, 4)).astype(float)
    resp = rng.dirichlet(np.ones(3), size=40)
    family = jaxem.multinomial(prior)
    params = family.m_step(
        jnp.asarray(resp.T @ x), jnp.asarray(resp.sum(0)), family.hyper(jnp.float64)
    )
    pseudo = prior - 1 + resp.T @ x
    np.testing.assert_allclose(
        family.to_layout(params)["probabilities"], pseudo / pseudo.sum(1, keepdims=True)
    )
    # A component with no counts gets uniform, finite probabilities.
    empty = family.m_step(jnp.zeros((1, 4)), jnp.zeros(1), jaxem.multinomial().hyper(jnp.float64))
    np.testing.assert_allclose(np.exp(empty.log_probs), 0.25)


@pytest.mark.parametrize(
    "x, message",
    [
        (np.array([[1, -1]]), "Multinomial counts must be non-negative"),
        (np.array([[1.5, 1.0]]), "Multinomial counts must be integers"),
        (np.array([[np.inf, 1.0]]), "Multinomial counts must be finite"),
        (np.array([1, 2]), "Multinomial data must be 2-D"),
    ],
)
def test_check_data_messages(x, message):
    with pytest.raises(ValueError, match=message):
        jaxem.multinomial().check_data(x)

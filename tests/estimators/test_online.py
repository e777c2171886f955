"""Online (stepwise) EM: engine.online_step and GaussianMixture.partial_fit."""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from jaxem import engine
from tests.conftest import make_blobs

X, _ = make_blobs(6000, n_features=3, n_clusters=3, seed=11)


def test_a_first_step_on_all_rows_is_one_em_iteration(x64):
    model = jaxem.mixture(jaxem.gaussian("full"), 3)
    start = engine.initialise(model, X, key=jax.random.key(0), n_restarts=2)
    state, log_likelihood = engine.online_step(model, None, X, init_params=start)
    one = jaxem.fit(model, X, key=jax.random.key(0), n_restarts=2, init_params=start, max_iter=1)
    for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(one.restarts.params)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(log_likelihood, one.restarts.log_likelihood, rtol=1e-12)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
def test_scaled_statistics_merge_as_reweighted_rows(covariance_type, x64):
    """(1 - γ) s_A + γ s_B are the statistics of A's rows weighted 1 - γ and B's γ."""
    family = jaxem.gaussian(covariance_type)
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(40, 3)) + 5, rng.normal(size=(25, 3)) * 2
    resp_a, resp_b = rng.dirichlet(np.ones(2), 40), rng.dirichlet(np.ones(2), 25)
    step = 0.3
    mixed = family.combine_stats(
        family.scale_stats(family.statistics(None, jnp.asarray(a), jnp.asarray(resp_a)), 1 - step),
        family.scale_stats(family.statistics(None, jnp.asarray(b), jnp.asarray(resp_b)), step),
    )
    together = family.statistics(
        None,
        jnp.asarray(np.concatenate([a, b])),
        jnp.asarray(np.concatenate([resp_a * (1 - step), resp_b * step])),
    )
    for got, want in zip(mixed, together):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_partial_fit_reaches_the_batch_log_likelihood():
    rng = np.random.default_rng(0)
    batch = jaxem.GaussianMixture(3, n_init=2, random_state=0, tol=1e-8, max_iter=300).fit(X)
    online = jaxem.GaussianMixture(3, n_init=2, random_state=0)
    for _ in range(2):
        rows = rng.permutation(X.shape[0])
        for start in range(0, X.shape[0], 500):
            online.partial_fit(X[rows[start : start + 500]])
    assert online.n_iter_ == 24 and online.converged_ is False
    assert abs(online.score(X) - batch.score(X)) < 1e-3
    np.testing.assert_allclose(np.sort(online.weights_), np.sort(batch.weights_), atol=0.01)


def test_partial_fit_after_fit_starts_from_the_fit_and_fit_ends_it():
    fitted = jaxem.GaussianMixture(3, random_state=0).fit(X)
    before = fitted.score(X)
    fitted.partial_fit(X[:2000])
    assert fitted.n_iter_ == 1 and abs(fitted.score(X) - before) < 0.05
    fitted.fit(X)
    assert not hasattr(fitted, "_online_state")


def test_partial_fit_survives_save_and_load(tmp_path):
    online = jaxem.GaussianMixture(3, random_state=0).partial_fit(X[:1000])
    buffer = io.BytesIO()
    online.save(buffer)
    buffer.seek(0)
    loaded = jaxem.GaussianMixture.load(buffer)
    loaded.partial_fit(X[1000:2000])  # continues from the saved parameters
    assert np.isfinite(loaded.score(X))


def test_partial_fit_refuses_bad_batches():
    online = jaxem.GaussianMixture(3, random_state=0)
    with pytest.raises(
        ValueError,
        match="Expected n_samples >= n_components but got n_components = 3, n_samples = 2",
    ):
        online.partial_fit(X[:2])
    online.partial_fit(X[:100])
    with pytest.raises(ValueError, match="features"):
        online.partial_fit(X[:100, :2])
    with pytest.raises(ValueError, match="step_decay"):
        jaxem.GaussianMixture(3, step_decay=1.5).partial_fit(X[:100])

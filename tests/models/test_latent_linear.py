"""Factor analysis and probabilistic PCA (``jaxem.factor_analysis``, ``jaxem.ppca``)
against closed forms and scikit-learn, in float64.

The contract suite (tests/test_contract.py) covers additivity, zero-weight rows,
non-decreasing log-likelihood, batched == single and chunked == unchunked for both.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.decomposition import FactorAnalysis as SklearnFactorAnalysis

import jaxem

N_ROWS, N_FEATURES = 300, 6


def _data(seed=0, n_rows=N_ROWS):
    """Two strong factors, per-feature noise well away from 0 (no Heywood case), a
    mean far from the origin."""
    rng = np.random.default_rng(seed)
    loadings = rng.normal(scale=2.0, size=(2, N_FEATURES))
    noise = rng.uniform(0.5, 1.5, size=N_FEATURES)
    x = rng.normal(size=(n_rows, 2)) @ loadings + rng.normal(size=(n_rows, N_FEATURES)) * noise
    return x + 10.0


def _covariance(params):
    w = np.asarray(params.components)
    return w.T @ w + np.diag(np.asarray(params.noise_variance))


def _fit(model, x, **options):
    options = {"key": jax.random.key(0), "tol": 0.0, "max_iter": 3000, **options}
    return jaxem.fit(model, x, **options)


def test_ppca_equals_the_closed_form(x64):
    """Tipping and Bishop: σ² is the mean of the discarded eigenvalues of the sample
    covariance and Wᵀ W = U_q (Λ_q - σ² I) U_qᵀ; the mean is the sample mean."""
    x = _data()
    result = _fit(jaxem.ppca(2), x, n_restarts=2)
    assert result.restarts.status[0] == jaxem.MAX_ITER  # tol=0: runs to max_iter
    eigenvalues, vectors = np.linalg.eigh(np.cov(x, rowvar=False, bias=True))
    eigenvalues, vectors = eigenvalues[::-1], vectors[:, ::-1]
    sigma2 = eigenvalues[2:].mean()
    np.testing.assert_allclose(np.asarray(result.params.noise_variance), sigma2, rtol=1e-8)
    top = vectors[:, :2]
    expected = top @ np.diag(eigenvalues[:2] - sigma2) @ top.T
    w = np.asarray(result.params.components)
    np.testing.assert_allclose(w.T @ w, expected, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(np.asarray(result.params.mean), x.mean(0), rtol=1e-12)
    # The closed-form maximum log-likelihood (Tipping and Bishop, eq. 4).
    closed = -0.5 * (
        N_FEATURES * np.log(2 * np.pi)
        + np.log(eigenvalues[:2]).sum()
        + (N_FEATURES - 2) * np.log(sigma2)
        + N_FEATURES
    )
    log_prob = jaxem.ppca(2).log_prob(result.params, jnp.asarray(x))
    np.testing.assert_allclose(float(log_prob.mean()), closed, rtol=1e-11)


def test_factor_analysis_equals_scikit_learn(x64):
    """The same maximum, covariance and noise variances. EM runs to its fixed point
    (3000 and 6000 iterations agree to every digit); scikit-learn's iteration stops
    after 119 iterations whatever ``tol`` (rounding makes its log-likelihood fall),
    with parameters about 1e-7 relative from that point: the tolerances on the
    parameters and per-row scores are set by that, the mean's by the quadratic maximum."""
    x = _data(1)
    result = _fit(jaxem.factor_analysis(2), x, n_restarts=2)
    assert result.restarts.status[0] == jaxem.MAX_ITER  # tol=0: runs to max_iter
    peer = SklearnFactorAnalysis(2, tol=1e-12, max_iter=100_000, svd_method="lapack").fit(x)
    log_prob = jaxem.factor_analysis(2).log_prob(result.params, jnp.asarray(x))
    np.testing.assert_allclose(float(log_prob.mean()), peer.score(x), rtol=1e-10)
    np.testing.assert_allclose(log_prob, peer.score_samples(x), rtol=1e-6)
    covariance = peer.get_covariance()
    np.testing.assert_allclose(
        _covariance(result.params), covariance, rtol=1e-6, atol=1e-6 * np.abs(covariance).max()
    )
    np.testing.assert_allclose(result.params.noise_variance, peer.noise_variance_, rtol=1e-6)
    np.testing.assert_allclose(result.params.mean, peer.mean_, rtol=1e-12)


def test_transform_is_the_posterior_mean(x64):
    """E[z|x] by Woodbury against the D x D formula W C⁻¹ (x - μ)."""
    x = _data()
    model = jaxem.factor_analysis(2)
    params = jax.tree.map(
        lambda leaf: leaf[0], jaxem.engine.initialise(model, x, key=jax.random.key(0))
    )
    covariance = _covariance(params)
    expected = (x - np.asarray(params.mean)) @ np.linalg.solve(
        covariance, np.asarray(params.components).T
    )
    np.testing.assert_allclose(model.transform(params, jnp.asarray(x)), expected, rtol=1e-10)
    from scipy.stats import multivariate_normal

    density = multivariate_normal(np.asarray(params.mean), covariance).logpdf(x)
    np.testing.assert_allclose(model.log_prob(params, jnp.asarray(x)), density, rtol=1e-10)


@pytest.mark.parametrize("model", [jaxem.factor_analysis(2), jaxem.ppca(2)], ids=["fa", "ppca"])
def test_integer_weights_equal_repeated_rows(model, x64):
    x = _data(2, n_rows=60)
    counts = np.arange(60) % 3 + 1
    init = jax.tree.map(
        lambda leaf: leaf[0], jaxem.engine.initialise(model, x, key=jax.random.key(0))
    )
    options = dict(key=jax.random.key(0), init_params=init, max_iter=40, tol=1e-10)
    weighted = jaxem.fit(model, x, weights=counts, **options)
    repeated = jaxem.fit(model, np.repeat(x, counts, axis=0), **options)
    for left, right in zip(weighted.params, repeated.params):
        np.testing.assert_allclose(left, right, rtol=1e-9, atol=1e-12)
    assert weighted.n_iter == repeated.n_iter
    # The mean is the weighted sample mean.
    np.testing.assert_allclose(weighted.params.mean, np.average(x, axis=0, weights=counts))


def test_heywood_case_keeps_the_noise_floor(x64):
    """A feature that the factor explains exactly drives its noise variance to 0: it
    stops at the floor, every parameter stays finite and the log-likelihood rises
    (the floored variance is the constrained maximum of the M-step)."""
    rng = np.random.default_rng(3)
    z = rng.normal(size=(200, 1))
    x = np.concatenate([z, z @ [[1.0, -2.0]] + rng.normal(size=(200, 2))], axis=1)
    model = jaxem.factor_analysis(1, noise_floor=0.05)
    result = _fit(model, x, max_iter=300, tol=0.0)
    noise = np.asarray(result.params.noise_variance)
    assert noise[0] == 0.05 and noise[1:].min() > 0.5
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in result.params)
    trace = np.asarray(result.restarts.trace[0])
    trace = trace[np.isfinite(trace)]
    assert np.all(np.diff(trace) >= -1e-12 * np.abs(trace).max())


@pytest.mark.parametrize(
    "model, message",
    [
        (jaxem.ppca(3), "n_components=3 must be < n_features=3 for probabilistic PCA"),
        (jaxem.factor_analysis(4), "n_components=4 must be <= n_features=3 for factor"),
    ],
)
def test_too_many_latent_dimensions_raise(model, message):
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=message):
        jaxem.fit(model, x, key=jax.random.key(0))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: jaxem.factor_analysis(-1), "n_components must be a non-negative int"),
        (lambda: jaxem.ppca(1.5), "n_components must be a non-negative int"),
        (lambda: jaxem.factor_analysis(1, noise_floor=0.0), "noise_floor must be positive"),
        (lambda: jaxem.LatentLinear(1, noise="full"), "noise must be one of"),
    ],
)
def test_bad_model_arguments_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()

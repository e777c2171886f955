"""The low-rank-plus-diagonal Gaussian family (mixtures of factor analysers): densities
against scipy, one EM step against a naive numpy EM (Ghahramani and Hinton 1996) from
the same parameters, monotone EM, the limits q = D - 1 (the full mixture) and K = 1
(factor analysis), chunked statistics, and bad ranks (float64 references)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn.datasets import make_blobs
from sklearn.decomposition import FactorAnalysis

import jaxem
from jaxem.families import log_densities
from tests.references import mfa_m_step

K, D, Q = 3, 5, 2


def _params(rng, dtype=jnp.float64, isotropic=False):
    means = rng.normal(scale=3.0, size=(K, D))
    loadings = rng.normal(size=(K, D, Q))
    noise = rng.uniform(0.2, 1.5, size=(K, D))
    if isotropic:
        noise = np.repeat(noise[:, :1], D, axis=1)
    return jaxem.LowRankGaussianParams(
        jnp.asarray(means, dtype), jnp.asarray(loadings, dtype), jnp.asarray(noise, dtype)
    )


def _covariances(params):
    w, psi = np.asarray(params.loadings, np.float64), np.asarray(params.noise_variances)
    return w @ np.swapaxes(w, 1, 2) + np.stack([np.diag(p) for p in psi])


def _data(n=200, seed=0):
    x, _ = make_blobs(n_samples=n, n_features=D, centers=K, random_state=seed)
    rng = np.random.default_rng(seed)
    # Correlated features inside each blob, so that the loadings have work to do.
    return x + rng.normal(size=(n, 1)) * np.linspace(-1, 1, D)


def test_log_densities_match_scipy(x64):
    rng = np.random.default_rng(0)
    params = _params(rng)
    x = rng.normal(scale=4.0, size=(30, D))
    got = np.asarray(log_densities(jaxem.low_rank_gaussian(Q), params, jnp.asarray(x)))
    cov = _covariances(params)
    means = np.asarray(params.means)
    expected = np.stack(
        [stats.multivariate_normal(means[k], cov[k]).logpdf(x) for k in range(K)], 1
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_float32_log_densities_are_accurate_to_float32(x64):
    rng = np.random.default_rng(1)
    params64 = _params(rng)
    params32 = jax.tree.map(lambda leaf: leaf.astype(jnp.float32), params64)
    x = rng.normal(scale=4.0, size=(30, D))
    family = jaxem.low_rank_gaussian(Q)
    got = log_densities(family, params32, jnp.asarray(x, jnp.float32))
    assert got.dtype == jnp.float32
    expected = np.asarray(log_densities(family, params64, jnp.asarray(x)))
    np.testing.assert_allclose(np.asarray(got, np.float64), expected, rtol=2e-5)


def _naive_em_step(x, log_weights, means, loadings, noise, reg, isotropic):
    """One EM step of a mixture of factor analysers: dense densities, then
    :func:`tests.references.mfa_m_step`."""
    n = x.shape[0]
    log_joint = (
        np.stack(
            [
                stats.multivariate_normal(
                    means[k], loadings[k] @ loadings[k].T + np.diag(noise[k])
                ).logpdf(x)
                for k in range(K)
            ],
            1,
        )
        + log_weights
    )
    top = log_joint.max(1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(log_joint - top).sum(1))
    resp = np.exp(log_joint - log_norm[:, None])
    new_means, new_loadings, new_noise = mfa_m_step(x, resp, means, loadings, noise, reg, isotropic)
    counts = resp.sum(0)
    return (
        np.log(counts / n),
        new_means,
        new_loadings,
        new_noise,
        log_norm.mean(),
    )


@pytest.mark.parametrize("isotropic", [False, True])
def test_one_em_step_matches_naive_numpy(isotropic, x64):
    rng = np.random.default_rng(2)
    x = _data()
    params = _params(rng, isotropic=isotropic)
    params = params._replace(means=jnp.asarray(x[:K]))
    log_weights = np.log(np.array([0.5, 0.3, 0.2]))
    model = jaxem.mixture(jaxem.low_rank_gaussian(Q, isotropic=isotropic, reg_covar=1e-3), K)
    hyper = model.hyper(jnp.float64)
    start = jaxem.MixtureParams(jnp.asarray(log_weights), params)
    weights = jnp.ones(x.shape[0])
    stats_, log_likelihood = model.e_step(start, jnp.asarray(x), weights, hyper)
    new = model.m_step(stats_, start, hyper)
    expected = _naive_em_step(
        x, log_weights, *(np.asarray(leaf) for leaf in params), 1e-3, isotropic
    )
    np.testing.assert_allclose(float(log_likelihood) / x.shape[0], expected[4], rtol=1e-12)
    np.testing.assert_allclose(new.log_weights, expected[0], rtol=1e-10)
    np.testing.assert_allclose(new.components.means, expected[1], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(new.components.loadings, expected[2], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(new.components.noise_variances, expected[3], rtol=1e-9)


def test_log_likelihood_never_decreases_from_the_sketch_init(x64):
    x = _data(seed=3)
    model = jaxem.mixture(jaxem.low_rank_gaussian(Q), K)
    result = jaxem.fit(
        model, jnp.asarray(x), key=jax.random.key(0), n_restarts=3, tol=0, max_iter=60
    )
    for row in np.asarray(result.restarts.trace):
        values = row[np.isfinite(row)]
        assert values.size == 60
        assert np.all(np.diff(values) >= -1e-12 * np.abs(values).max()), np.diff(values)


def test_initial_statistics_merge_exactly_over_chunks(x64):
    family = jaxem.low_rank_gaussian(Q)
    x = jnp.asarray(_data() + 100.0)  # far from the origin: a raw-moment merge would cancel
    resp = jax.nn.softmax(jax.random.normal(jax.random.key(0), (x.shape[0], K), jnp.float64))
    whole = family.statistics(None, x, resp)
    merged = family.combine_stats(
        family.statistics(None, x[:70], resp[:70]), family.statistics(None, x[70:], resp[70:])
    )
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(merged)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-8)
    # The sketch is the scatter about each component's mean times Ω.
    omega = np.asarray(family._sketch_matrix(D, jnp.float64))
    r, xs = np.asarray(resp), np.asarray(x)
    for k in range(K):
        mean = r[:, k] @ xs / r[:, k].sum()
        scatter = (r[:, k, None] * (xs - mean)).T @ (xs - mean)
        np.testing.assert_allclose(whole.sketch[k], scatter @ omega, rtol=1e-10)


def test_rank_d_minus_one_approaches_the_full_mixture(x64):
    x = jnp.asarray(_data(seed=4))
    options = dict(key=jax.random.key(0), n_restarts=4, tol=1e-10, max_iter=2000)
    full = jaxem.fit(jaxem.mixture(jaxem.gaussian("full", 1e-8), K), x, **options)
    low = jaxem.fit(jaxem.mixture(jaxem.low_rank_gaussian(D - 1, reg_covar=1e-8), K), x, **options)
    # The low-rank model is nested in the full one: never above, and with q = D - 1
    # within 1e-3 nats per sample of it on these data.
    assert low.log_likelihood <= full.log_likelihood + 1e-8
    assert full.log_likelihood - low.log_likelihood < 1e-3, (
        full.log_likelihood,
        low.log_likelihood,
    )


def test_one_component_is_factor_analysis(x64):
    # One factor: well identified (two factors on five features drift to Heywood cases,
    # where the likelihood is too flat for either fit to pin the covariance).
    rng = np.random.default_rng(6)
    z = rng.normal(size=(500, 1))
    noise = rng.normal(size=(500, D)) * rng.uniform(0.5, 1.0, D)
    x = z @ (2 * rng.normal(size=(1, D))) + noise + 2.0
    model = jaxem.mixture(jaxem.low_rank_gaussian(1, reg_covar=0.0), 1)
    result = jaxem.fit(model, jnp.asarray(x), key=jax.random.key(0), tol=1e-13, max_iter=5000)
    reference = FactorAnalysis(1, tol=1e-13, max_iter=100000).fit(x)
    np.testing.assert_allclose(result.log_likelihood, reference.score(x), rtol=1e-10)
    covariance = jaxem.low_rank_gaussian(1).covariances(result.params.components)[0]
    np.testing.assert_allclose(covariance, reference.get_covariance(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        result.params.components.noise_variances[0], reference.noise_variance_, rtol=1e-4
    )


def test_chunks_are_sized_by_the_offsets_the_statistics_hold():
    # (n, K, D) offsets: at D = 256 and K = 32, chunks sized by K alone ran out of memory.
    model = jaxem.mixture(jaxem.low_rank_gaussian(16), 32)
    x = np.zeros((200_000, 256), np.float32)
    assert model.row_width(x) == 32 * 256 // 8
    rows = jaxem.engine.default_chunk_size(len(x), 1, model.row_width(x))
    assert rows * 32 * 256 <= 1 << 24  # 64 MB in float32 per (n, K, D) array


@pytest.mark.parametrize(
    "rank, error, match",
    [
        (0, ValueError, ">= 1"),
        (-2, ValueError, ">= 1"),
        (1.5, TypeError, "must be an int"),
        (True, TypeError, "must be an int"),
        ("2", TypeError, "must be an int"),
    ],
)
def test_bad_rank_is_refused(rank, error, match):
    with pytest.raises(error, match=match):
        jaxem.low_rank_gaussian(rank)


def test_rank_at_least_the_features_is_refused():
    x = np.random.default_rng(0).normal(size=(50, 3))
    for rank in (3, 4):
        with pytest.raises(ValueError, match="must be < n_features=3"):
            jaxem.low_rank_gaussian(rank).check_data(x)


@pytest.mark.parametrize("isotropic", [False, True])
def test_unconstrained_form_round_trips_and_stays_valid(isotropic, x64):
    """SQUAREM extrapolates in the free form: any affine combination maps back to
    positive noise variances (equal per component when isotropic)."""
    family = jaxem.low_rank_gaussian(Q, isotropic=isotropic)
    params = _params(np.random.default_rng(7), isotropic=isotropic)
    back = family.constrain(family.unconstrain(params))
    for got, want in zip(back, params):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    other = family.unconstrain(jax.tree.map(lambda leaf: leaf * 1.3, params))
    far = family.constrain(
        jax.tree.map(lambda a, b: a + 7.0 * (b - a), family.unconstrain(params), other)
    )
    noise = np.asarray(far.noise_variances)
    assert np.all(noise > 0) and np.all(np.isfinite(noise))
    if isotropic:
        np.testing.assert_allclose(noise, noise[:, :1] * np.ones((1, D)), rtol=1e-12)


@pytest.mark.parametrize(
    "update, fixed", [("stm", ("loadings", "noise_variances")), ("stc", ("means",))]
)
def test_hmm_conditional_m_steps_keep_the_fixed_part_and_never_decrease(update, fixed, x64):
    """An HMM updating only the means (or only W and Ψ) runs ECM's conditional M-steps
    about the E-step's parameters (keep_fixed): the fixed leaves stay as they started
    and the log-likelihood still never decreases."""
    from jaxem import engine

    x = _data(n=150, seed=8)
    obs, mask = jaxem.pad_sequences(x, [60, 50, 40], dtype=np.float64)
    data = (jnp.asarray(obs), jnp.asarray(mask))
    model = jaxem.hmm(jaxem.low_rank_gaussian(Q), K, update=update)
    init = engine.initialise(model, data, key=jax.random.key(0), n_restarts=1)
    result = jaxem.fit(model, data, key=jax.random.key(0), init_params=init, tol=0, max_iter=25)
    values = np.asarray(result.restarts.trace)[0]
    values = values[np.isfinite(values)]
    assert values.size == 25
    assert np.all(np.diff(values) >= -1e-12 * np.abs(values).max()), np.diff(values)
    assert values[-1] > values[0] + 1e-3  # the free part did move
    start, end = init.emissions, result.params.emissions
    for name in fixed:
        np.testing.assert_array_equal(getattr(end, name), getattr(start, name)[0])

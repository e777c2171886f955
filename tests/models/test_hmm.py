"""The HMM model under the engine contract: statistics, padding, restarts, numerics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from jaxem import _iterate
from jaxem.models.hmm import HMMParams

LENGTHS = [30, 17, 24]
K = 3


def _gaussian_data(seed=0, lengths=LENGTHS, n_features=2):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, size=sum(lengths))
    return rng.normal(size=(sum(lengths), n_features)) + 4.0 * labels[:, None]


def _params(family, x, seed=1):
    rng = np.random.default_rng(seed)
    startprob = jnp.asarray(rng.dirichlet(np.ones(K)))
    transmat = jnp.asarray(rng.dirichlet(np.ones(K) * 2, size=K))
    means = jnp.asarray(x[rng.choice(len(x), K, replace=False)])
    covariances = jnp.ones((K, x.shape[1]), means.dtype)
    return HMMParams(startprob, transmat, family.params_from_covariances(means, covariances))


def _assert_tree_close(a, b, rtol=1e-9, atol=1e-9):
    for left, right in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(left), np.asarray(right), rtol=rtol, atol=atol)


@pytest.fixture
def setting(x64):
    family = jaxem.gaussian("diag", reg_covar=0.0, map_prior=True)
    model = jaxem.hmm(family, K)
    x = _gaussian_data()
    obs, mask = jaxem.pad_sequences(x, LENGTHS)
    return model, (jnp.asarray(obs), jnp.asarray(mask)), _params(family, x)


def test_statistics_merge_and_padding_has_zero_weight(setting):
    model, (obs, mask), params = setting
    hyper = model.hyper(obs.dtype)
    ones = jnp.ones(obs.shape[0])
    e_step = jax.jit(model.e_step)
    whole = e_step(params, (obs, mask), ones, hyper)
    first = e_step(params, (obs[:1], mask[:1]), ones[:1], hyper)
    rest = e_step(params, (obs[1:], mask[1:]), ones[1:], hyper)
    # Emission statistics merge by the family's rule (means and scatters: Chan's update).
    joined = (model.combine_stats(first[0], rest[0]), first[1] + rest[1])
    _assert_tree_close(whole, joined)
    # A zero-weight sequence full of garbage changes nothing.
    garbage = jnp.full((1,) + obs.shape[1:], jnp.nan)
    padded = e_step(
        params,
        (jnp.concatenate([obs, garbage]), jnp.concatenate([mask, jnp.ones((1, mask.shape[1]))])),
        jnp.concatenate([ones, jnp.zeros(1)]),
        hyper,
    )
    _assert_tree_close(whole, padded)


def test_padding_invariance(setting):
    model, (obs, mask), params = setting
    longer_obs = jnp.concatenate([obs, jnp.full((3, 5, 2), 1e6)], axis=1)
    longer_mask = jnp.concatenate([mask, jnp.zeros((3, 5))], axis=1)
    kwargs = dict(key=jax.random.key(0), init_params=params, max_iter=5, tol=-1.0)
    short = jaxem.fit(model, (obs, mask), **kwargs)
    long = jaxem.fit(model, (longer_obs, longer_mask), **kwargs)
    _assert_tree_close(short.params, long.params)
    np.testing.assert_allclose(short.restarts.trace, long.restarts.trace, rtol=1e-10)


def test_log_likelihood_non_decreasing_and_batched_restarts_equal_single_runs(x64):
    model = jaxem.hmm(jaxem.gaussian("full"), K)
    x = _gaussian_data(seed=3)
    obs, mask = jaxem.pad_sequences(x, LENGTHS)
    data = (jnp.asarray(obs), jnp.asarray(mask))
    hyper = model.hyper(data[0].dtype)
    chunks = _iterate.make_chunks(data, jnp.ones(3), 3)
    keys = jax.random.split(jax.random.key(5), 4)
    inits = jax.jit(jax.vmap(model.init, in_axes=(0, None, None)))(keys, chunks, hyper)
    batched = jaxem.fit(model, data, key=keys[0], n_restarts=4, init_params=inits, max_iter=20)
    trace = np.asarray(batched.restarts.trace)
    for row in trace:
        row = row[np.isfinite(row)]
        assert np.all(np.diff(row) >= -1e-9 * np.abs(row[1:]))
    for index in [0, 3]:
        single = jaxem.fit(
            model,
            data,
            key=keys[0],
            init_params=jax.tree.map(lambda leaf, i=index: leaf[i], inits),
            max_iter=20,
        )
        np.testing.assert_allclose(single.restarts.trace[0], trace[index], rtol=1e-9)
        _assert_tree_close(
            single.params, jax.tree.map(lambda leaf, i=index: leaf[i], batched.restarts.params)
        )


def test_associative_forward_backward_gives_the_same_fit(setting):
    model, data, params = setting
    parallel = jaxem.hmm(model.family, K, algorithm="associative")
    kwargs = dict(key=jax.random.key(0), init_params=params, max_iter=5, tol=-1.0)
    _assert_tree_close(
        jaxem.fit(model, data, **kwargs).params,
        jaxem.fit(parallel, data, **kwargs).params,
        rtol=1e-7,
        atol=1e-8,
    )
    states, _ = model.decode(params, *data)
    parallel_states, _ = parallel.decode(params, *data)
    np.testing.assert_array_equal(states, parallel_states)


def test_default_scaled_forward_backward_gives_the_log_space_fit(setting):
    model, data, params = setting
    assert model.algorithm == "scaled"
    log_space = jaxem.hmm(model.family, K, algorithm="scan")
    kwargs = dict(key=jax.random.key(0), init_params=params, max_iter=5, tol=-1.0)
    fast, reference = jaxem.fit(model, data, **kwargs), jaxem.fit(log_space, data, **kwargs)
    np.testing.assert_allclose(fast.restarts.trace, reference.restarts.trace, rtol=1e-10)
    _assert_tree_close(fast.params, reference.params, rtol=1e-10, atol=1e-12)


def test_converged_is_hmmlearn_increase_below_tol():
    model = jaxem.hmm(jaxem.poisson(), 2)
    assert bool(model.converged(None, None, -10.0, -10.005, 1e-2))
    assert bool(model.converged(None, None, -10.5, -10.0, 1e-2))  # a decrease stops too
    assert not bool(model.converged(None, None, -9.0, -10.0, 1e-2))


def test_unvisited_state_keeps_finite_parameters(x64):
    x = np.concatenate([np.zeros((20, 1)), np.ones((20, 1)) * 5]) + 0.1 * np.arange(40)[:, None] % 1
    counts = np.round(np.abs(x)).astype(float)
    for family, data in [
        (jaxem.gaussian("diag"), x),
        (jaxem.gaussian("full", reg_covar=0.0, map_prior=True), x),
        (jaxem.categorical(4), (x[:, :1] > 2).astype(np.int32)),
        (jaxem.poisson(), counts),
    ]:
        model = jaxem.hmm(family, 3)
        obs, mask = jaxem.pad_sequences(data, [40], dtype=np.float64)
        obs = jnp.asarray(obs)
        params = jax.jit(model.init)(
            jax.random.key(0),
            _iterate.make_chunks((obs, jnp.asarray(mask)), jnp.ones(1), 1),
            model.hyper(jnp.float64),
        )
        # State 2 can never be entered.
        params = params._replace(
            startprob=jnp.array([0.5, 0.5, 0.0]),
            transmat=jnp.array([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.3, 0.3, 0.4]]),
        )
        result = jaxem.fit(
            model, (obs, jnp.asarray(mask)), key=jax.random.key(0), init_params=params
        )
        assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(result.params))
        assert float(result.params.startprob[2]) == 0.0
        assert np.isfinite(result.log_likelihood)


def test_long_sequence_many_states_stays_finite():
    # T = 10,000 steps, K = 100 states, emissions spread over ~1e4 nats: one E-step (float32).
    n_steps, n_states = 10_000, 100
    key = jax.random.key(0)
    x = jax.random.normal(key, (1, n_steps, 1)) * jnp.logspace(0, 3, n_steps)[None, :, None]
    family = jaxem.gaussian("diag")
    model = jaxem.hmm(family, n_states)
    params = HMMParams(
        jnp.full((n_states,), 1.0 / n_states),
        jax.nn.softmax(jax.random.normal(key, (n_states, n_states)), axis=1),
        family.params_from_covariances(
            jnp.linspace(-100, 100, n_states)[:, None], jnp.logspace(-2, 2, n_states)[:, None]
        ),
    )
    stats, log_likelihood = jax.jit(model.e_step)(
        params, (x, jnp.ones((1, n_steps))), jnp.ones(1), model.hyper(jnp.float32)
    )
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(stats))
    assert np.isfinite(float(log_likelihood))
    np.testing.assert_allclose(float(stats.counts.sum()), n_steps, rtol=1e-3)
    np.testing.assert_allclose(float(stats.transitions.sum()), n_steps - 1, rtol=1e-3)


def test_sample_shapes_and_states():
    family = jaxem.categorical(3)
    model = jaxem.hmm(family, 2)
    params = HMMParams(
        jnp.array([1.0, 0.0]),
        jnp.array([[0.0, 1.0], [1.0, 0.0]]),
        family.params_from_probabilities(jnp.eye(2, 3)),
    )
    x, states = model.sample(jax.random.key(0), params, 6)
    np.testing.assert_array_equal(states, [0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(x[:, 0], [0, 1, 0, 1, 0, 1])


@pytest.mark.parametrize(
    "lengths, message",
    [
        ([3, 3], r"lengths sum to 6 but X has 5 samples; lengths must sum to len\(X\)\."),
        ([5, 0], r"lengths must be positive integers; got \[5, 0\]"),
        ([6, -1], r"lengths must be positive integers; got \[6, -1\]"),
        ([2.5, 2.5], "lengths must be integers"),
        ([], "lengths must be a non-empty 1-D sequence of ints"),
    ],
)
def test_pad_sequences_rejects_bad_lengths(lengths, message):
    with pytest.raises(ValueError, match=message):
        jaxem.pad_sequences(np.zeros((5, 1)), lengths)


def test_family_check_data_messages():
    with pytest.raises(ValueError, match=r"Categorical symbols must lie in \[0, 2\]"):
        jaxem.categorical(3).check_data(np.array([[0], [3]]))
    with pytest.raises(ValueError, match="Categorical data must have shape"):
        jaxem.categorical(3).check_data(np.array([0, 1]))
    with pytest.raises(ValueError, match="Poisson counts must be non-negative"):
        jaxem.poisson().check_data(np.array([[1.0], [-1.0]]))
    with pytest.raises(ValueError, match="Poisson counts must be integers"):
        jaxem.poisson().check_data(np.array([[1.5]]))


def test_default_gaussian_m_step_is_unchanged_by_the_prior_extension(x64):
    # The maximum-likelihood path (no priors) must stay scikit-learn's formula.
    family = jaxem.gaussian("diag")
    # Σx = 4 and Σx² = 10 of one component of weight 2, D = 1: mean 2, scatter 10 - 8.
    sums = jaxem.families.GaussianStats(jnp.array([2.0]), jnp.array([[2.0]]), jnp.array([[2.0]]))
    params = family.m_step(sums, jnp.array([2.0]), family.hyper(jnp.float64))
    variance = (
        10.0 / (2.0 + 10 * np.finfo(float).eps) - (4.0 / (2.0 + 10 * np.finfo(float).eps)) ** 2
    )
    np.testing.assert_allclose(
        float(params.precisions_cholesky[0, 0]), 1 / np.sqrt(variance + 1e-6), rtol=1e-14
    )
    assert isinstance(family.hyper(jnp.float64), jaxem.families.GaussianHyper)

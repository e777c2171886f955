"""Tests for jaxem.models.hmm_inference against brute force, hmmlearn and each other."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from jaxem.models.hmm_inference import (
    HMMPosterior,
    blocked_forward_backward,
    forward_backward,
    parallel_forward_backward,
    parallel_viterbi,
    scaled_forward_backward,
    viterbi,
)

SMOOTHERS = [forward_backward, scaled_forward_backward, parallel_forward_backward]
#: The smoothers exact for any transitions, whatever the emission spread.
LOG_SPACE_SMOOTHERS = [forward_backward, parallel_forward_backward]
DECODERS = [viterbi, parallel_viterbi]


def random_hmm(rng, n_states, n_steps, *, zeros=False, scale=1.0):
    """Random log-parameters; ``zeros`` forbids some starts and transitions."""
    initial = rng.dirichlet(np.ones(n_states))
    transition = rng.dirichlet(np.ones(n_states), size=n_states)
    if zeros:
        # Forbid the first state at start and a random subset of transitions, but
        # keep one allowed transition per row so every row stays a distribution.
        initial[0] = 0.0
        forbidden = rng.random((n_states, n_states)) < 0.4
        forbidden[np.arange(n_states), rng.integers(n_states, size=n_states)] = False
        transition = np.where(forbidden, 0.0, transition)
        initial /= initial.sum()
        transition /= transition.sum(1, keepdims=True)
    with np.errstate(divide="ignore"):
        log_initial, log_transition = np.log(initial), np.log(transition)
    log_emission = scale * rng.normal(size=(n_steps, n_states))
    return log_initial, log_transition, log_emission


def brute_force(log_initial, log_transition, log_emission):
    """Every quantity by enumerating all K^T paths (float64 NumPy)."""
    n_steps, n_states = log_emission.shape
    paths = np.array(list(itertools.product(range(n_states), repeat=n_steps)))
    steps = np.arange(n_steps)
    log_joint = (
        log_initial[paths[:, 0]]
        + log_transition[paths[:, :-1], paths[:, 1:]].sum(1)
        + log_emission[steps, paths].sum(1)
    )
    log_likelihood = logsumexp(log_joint)
    weights = np.exp(log_joint - log_likelihood)
    one_hot = paths[:, :, None] == np.arange(n_states)  # (paths, T, K)
    smoothed = np.einsum("p,ptk->tk", weights, one_hot)
    counts = np.einsum("p,pti,ptj->ij", weights, one_hot[:, :-1], one_hot[:, 1:])
    # alpha_t(k) = p(x_{1:t}, z_t = k) and beta_t(k) = p(x_{t+1:T} | z_t = k) from the
    # prefix / suffix of each path; every prefix (suffix) is repeated once per choice of
    # the remaining states, hence the log K corrections.
    transitions = log_transition[paths[:, :-1], paths[:, 1:]]
    emissions = log_emission[steps, paths]
    log_alpha = np.empty((n_steps, n_states))
    log_beta = np.empty((n_steps, n_states))
    for t in range(n_steps):
        prefix = log_initial[paths[:, 0]] + transitions[:, :t].sum(1) + emissions[:, : t + 1].sum(1)
        suffix = transitions[:, t:].sum(1) + emissions[:, t + 1 :].sum(1)
        for k in range(n_states):
            at_k = paths[:, t] == k
            log_alpha[t, k] = logsumexp(prefix[at_k]) - (n_steps - 1 - t) * np.log(n_states)
            log_beta[t, k] = logsumexp(suffix[at_k]) - t * np.log(n_states)
    best = np.argmax(log_joint)
    return log_likelihood, log_alpha, log_beta, smoothed, counts, paths[best], log_joint[best]


def assert_close(actual, desired, tol):
    np.testing.assert_allclose(np.asarray(actual), desired, rtol=tol, atol=tol)


def assert_posteriors_close(actual, desired, tol):
    for name in HMMPosterior._fields:
        got, want = np.asarray(getattr(actual, name)), np.asarray(getattr(desired, name))
        # -inf messages (impossible states) must match exactly, the rest up to tol.
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg=name)
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=tol, atol=tol, err_msg=name)


# ----------------------------------------------------------------------- brute force

# Shapes are shared between tests where possible: every new (K, T, dtype) recompiles.
TINY_SHAPES = [(2, 1), (3, 2), (2, 5), (3, 5)]


@pytest.mark.parametrize("smoother", SMOOTHERS)
@pytest.mark.parametrize("zeros", [False, True])
@pytest.mark.parametrize("n_states, n_steps", TINY_SHAPES)
def test_smoother_matches_brute_force(x64, smoother, zeros, n_states, n_steps):
    rng = np.random.default_rng(100 * n_states + n_steps + 7 * zeros)
    params = random_hmm(rng, n_states, n_steps, zeros=zeros)
    ll, log_alpha, log_beta, smoothed, counts, _, _ = brute_force(*params)

    post = smoother(*params)
    assert post.log_likelihood.dtype == jnp.float64
    assert_close(post.log_likelihood, ll, 1e-10)
    assert_close(post.log_alpha, log_alpha, 1e-10)
    assert_close(post.log_beta, log_beta, 1e-10)
    assert_close(post.smoothed, smoothed, 1e-10)
    assert_close(post.transition_counts, counts, 1e-10)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("zeros", [False, True])
@pytest.mark.parametrize("n_states, n_steps", TINY_SHAPES)
def test_viterbi_matches_brute_force(x64, decoder, zeros, n_states, n_steps):
    rng = np.random.default_rng(100 * n_states + n_steps + 7 * zeros)
    params = random_hmm(rng, n_states, n_steps, zeros=zeros)
    *_, best_path, best_log_prob = brute_force(*params)

    states, log_prob = decoder(*params)
    assert states.dtype == jnp.int32
    np.testing.assert_array_equal(states, best_path)
    assert_close(log_prob, best_log_prob, 1e-10)


# -------------------------------------------------------------- sequential/parallel


def test_sequential_and_parallel_agree_float64(x64):
    params = random_hmm(np.random.default_rng(0), 5, 200, zeros=True, scale=3.0)
    seq, par = forward_backward(*params), parallel_forward_backward(*params)
    for name in HMMPosterior._fields:
        assert_close(getattr(par, name), np.asarray(getattr(seq, name)), 1e-9)
    seq_states, seq_log_prob = viterbi(*params)
    par_states, par_log_prob = parallel_viterbi(*params)
    np.testing.assert_array_equal(par_states, seq_states)
    assert_close(par_log_prob, float(seq_log_prob), 1e-9)


def test_float32_matches_float64_reference():
    n_steps = 200
    params = random_hmm(np.random.default_rng(1), 5, n_steps, scale=3.0)
    with jax.enable_x64(True):
        ref = jax.tree.map(np.asarray, forward_backward(*params))
        ref_states, _ = viterbi(*params)
    params32 = [jnp.asarray(p, jnp.float32) for p in params]
    eps = float(np.finfo(np.float32).eps)
    # Summing T log-normalisers of size <= |log p| loses at most ~T eps |log p|.
    log_tol = n_steps * eps * abs(float(ref.log_likelihood))
    for smoother in SMOOTHERS:
        post = smoother(*params32)
        assert post.smoothed.dtype == post.transition_counts.dtype == jnp.float32
        assert abs(float(post.log_likelihood) - ref.log_likelihood) <= log_tol
        np.testing.assert_allclose(post.log_alpha, ref.log_alpha, atol=log_tol, rtol=0)
        np.testing.assert_allclose(post.log_beta, ref.log_beta, atol=log_tol, rtol=0)
        # Normalised posteriors only carry the per-step rounding (observed ~3 eps);
        # the counts add up T - 1 of them.
        np.testing.assert_allclose(post.smoothed, ref.smoothed, atol=100 * eps, rtol=0)
        np.testing.assert_allclose(
            post.transition_counts, ref.transition_counts, atol=n_steps * 10 * eps, rtol=0
        )
    for decoder in DECODERS:
        states, _ = decoder(*params32)
        np.testing.assert_array_equal(states, ref_states)


# --------------------------------------------------------------------------- padding


def pad(log_emission, n_steps):
    """Pad with NaN emissions: padded steps must never be read."""
    length, n_states = log_emission.shape
    padding = np.full((n_steps - length, n_states), np.nan)
    return np.concatenate([log_emission, padding]), np.arange(n_steps) < length


def padded_batch(log_emission, lengths):
    batch = [pad(log_emission[:length], len(log_emission)) for length in lengths]
    return jnp.asarray(np.stack([e for e, _ in batch])), jnp.asarray(
        np.stack([m for _, m in batch])
    )


@pytest.mark.parametrize("smoother", SMOOTHERS)
def test_padding_does_not_change_posteriors(x64, smoother):
    log_initial, log_transition, log_emission = random_hmm(
        np.random.default_rng(2), 3, 12, zeros=True
    )
    lengths = [2, 5, 12]
    emissions, masks = padded_batch(log_emission, lengths)
    batched = jax.vmap(smoother, in_axes=(None, None, 0, 0))
    posts = batched(log_initial, log_transition, emissions, masks)

    for row, length in enumerate(lengths):
        ref = smoother(log_initial, log_transition, log_emission[:length])
        post = jax.tree.map(lambda x, r=row: np.asarray(x[r]), posts)
        assert_close(post.log_likelihood, float(ref.log_likelihood), 1e-12)
        assert_close(post.log_alpha[:length], np.asarray(ref.log_alpha), 1e-12)
        assert_close(post.log_beta[:length], np.asarray(ref.log_beta), 1e-12)
        assert_close(post.smoothed[:length], np.asarray(ref.smoothed), 1e-12)
        assert_close(post.smoothed[length:], 0.0, 0)
        assert_close(post.transition_counts, np.asarray(ref.transition_counts), 1e-12)
        assert np.isclose(post.transition_counts.sum(), length - 1)


@pytest.mark.parametrize("decoder", DECODERS)
def test_padding_does_not_change_viterbi(x64, decoder):
    log_initial, _, log_emission = random_hmm(np.random.default_rng(3), 3, 12, scale=0.5)
    # A strongly cyclic chain: if padded steps acted as real transitions, backtracking
    # through them would move the last valid state.
    log_transition = np.log(0.05 + 0.85 * np.roll(np.eye(3), 1, axis=1))
    lengths = [2, 5, 12]
    emissions, masks = padded_batch(log_emission, lengths)
    batched = jax.vmap(decoder, in_axes=(None, None, 0, 0))
    states, log_probs = batched(log_initial, log_transition, emissions, masks)

    for row, length in enumerate(lengths):
        ref_states, ref_log_prob = decoder(log_initial, log_transition, log_emission[:length])
        np.testing.assert_array_equal(states[row, :length], ref_states)
        np.testing.assert_array_equal(states[row, length:], 0)
        assert_close(log_probs[row], float(ref_log_prob), 1e-12)


# --------------------------------------------------------------------------- hmmlearn


def test_matches_hmmlearn(x64):
    hmm = pytest.importorskip("hmmlearn.hmm")
    _hmmc = pytest.importorskip("hmmlearn._hmmc")
    rng = np.random.default_rng(5)
    n_states, n_symbols, n_steps = 3, 4, 12
    model = hmm.CategoricalHMM(n_components=n_states, n_features=n_symbols)
    model.startprob_ = rng.dirichlet(np.ones(n_states))
    model.transmat_ = rng.dirichlet(np.ones(n_states), size=n_states)
    model.emissionprob_ = rng.dirichlet(np.ones(n_symbols), size=n_states)
    symbols = rng.integers(n_symbols, size=(n_steps, 1))
    log_initial, log_transition = np.log(model.startprob_), np.log(model.transmat_)
    log_emission = np.log(model.emissionprob_[:, symbols[:, 0]].T)

    _, fwd = _hmmc.forward_log(model.startprob_, model.transmat_, log_emission)
    bwd = _hmmc.backward_log(model.startprob_, model.transmat_, log_emission)
    xi_sum = np.exp(_hmmc.compute_log_xi_sum(fwd, model.transmat_, bwd, log_emission))
    ref_log_prob, ref_states = model.decode(symbols, algorithm="viterbi")
    for smoother in SMOOTHERS:
        post = smoother(log_initial, log_transition, log_emission)
        assert_close(post.log_likelihood, model.score(symbols), 1e-10)
        assert_close(post.smoothed, model.predict_proba(symbols), 1e-10)
        assert_close(post.log_alpha, fwd, 1e-10)
        assert_close(post.log_beta, bwd, 1e-10)
        assert_close(post.transition_counts, xi_sum, 1e-10)
    for decoder in DECODERS:
        states, best = decoder(log_initial, log_transition, log_emission)
        np.testing.assert_array_equal(states, ref_states)
        assert_close(best, ref_log_prob, 1e-10)


# -------------------------------------------------------------------------- numerics


def test_long_sequence_with_huge_emissions_stays_finite():
    # Exact zeros in the start and transition probabilities make this strictly harder
    # than the dense case: -inf entries meet emissions spread over +-1e4.
    n_steps, n_states = 10_000, 40
    rng = np.random.default_rng(6)
    log_initial, log_transition, _ = random_hmm(rng, n_states, 1, zeros=True)
    assert np.isneginf(log_transition).mean() > 0.3
    log_emission = rng.uniform(-1e4, 1e4, size=(n_steps, n_states))
    params = [jnp.asarray(p, jnp.float32) for p in (log_initial, log_transition, log_emission)]

    seq, par = forward_backward(*params), parallel_forward_backward(*params)
    for post in (seq, par):
        assert np.isfinite(float(post.log_likelihood))
        np.testing.assert_allclose(post.smoothed.sum(1), 1.0, atol=1e-4)
        assert np.all(np.isfinite(post.transition_counts))
        np.testing.assert_allclose(post.transition_counts.sum(), n_steps - 1, rtol=1e-4)
        assert not np.any(np.isnan(post.log_alpha)) and not np.any(np.isnan(post.log_beta))
    # |log p| ~ 1e8 here, so float32 resolves it to ~10 nats at best.
    ll = float(seq.log_likelihood)
    assert abs(float(par.log_likelihood) - ll) <= 1e-6 * abs(ll)

    for states, log_prob in (viterbi(*params), parallel_viterbi(*params)):
        assert np.all((states >= 0) & (states < n_states))
        # The best path cannot beat the sum over all paths.
        assert np.isfinite(float(log_prob)) and float(log_prob) <= ll + 1e-6 * abs(ll)


def exp_range_example():
    """State 0 is absorbing and emits x_2 terribly; state 1 starts 1000 nats behind."""
    log_initial = np.log([0.5, 0.5])
    with np.errstate(divide="ignore"):
        log_transition = np.log([[1.0, 0.0], [0.5, 0.5]])
    log_emission = np.array([[0.0, -1000.0], [-2000.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    return log_initial, log_transition, log_emission


@pytest.mark.parametrize("smoother", LOG_SPACE_SMOOTHERS)
def test_products_beyond_the_exp_range_stay_exact(x64, smoother):
    # State 0 is absorbing and emits x_2 terribly; state 1 starts 1000 nats behind. So
    # alpha_2 = [-2000, -1000.7]: the only path into state 1 is 1000 nats below the
    # row/column maxima of its factors, where max-shifted exponentials underflow even
    # in float64. A plain shifted matmul would return -inf for it.
    params = exp_range_example()
    ll, log_alpha, log_beta, smoothed, counts, _, _ = brute_force(*params)
    post = smoother(*params)
    assert_close(post.log_likelihood, ll, 1e-12)
    assert_close(post.log_alpha, log_alpha, 1e-12)
    assert_close(post.log_beta, log_beta, 1e-12)
    assert_close(post.smoothed, smoothed, 1e-12)
    assert_close(post.transition_counts, counts, 1e-12)


def test_scaled_refuses_what_it_cannot_resolve(x64):
    # Probability-space sums cannot see a path 1000 nats behind the best: the scaled
    # smoother must say so (-inf, as hmmlearn's scaling raises) rather than answer.
    post = scaled_forward_backward(*exp_range_example())
    assert float(post.log_likelihood) == -np.inf
    for field in post:
        assert not np.any(np.isnan(field))


# --------------------------------------------------------------------------- scaled


@pytest.mark.parametrize("zeros", [False, True])
def test_scaled_matches_log_space_float64(x64, zeros):
    # Random problems, forbidden starts and transitions (-inf), padded sequences.
    rng = np.random.default_rng(20 + zeros)
    log_initial, log_transition, log_emission = random_hmm(rng, 5, 200, zeros=zeros, scale=3.0)
    if zeros:
        assert np.isneginf(log_initial).any() and np.isneginf(log_transition).any()
    emissions, masks = padded_batch(log_emission, [1, 2, 77, 200])
    batched = [
        jax.vmap(smoother, in_axes=(None, None, 0, 0))(
            log_initial, log_transition, emissions, masks
        )
        for smoother in (scaled_forward_backward, forward_backward)
    ]
    post, ref = (jax.tree.map(np.asarray, b) for b in batched)
    assert post.log_likelihood.dtype == np.float64
    assert_posteriors_close(post, ref, 1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scaled_stability_case(dtype):
    # Emission log-likelihoods up to 2e4 apart between states, |log p| ~ 1e8.
    n_steps, n_states = 10_000, 100
    rng = np.random.default_rng(6)
    log_initial, log_transition, _ = random_hmm(rng, n_states, 1)
    log_emission = rng.uniform(-1e4, 1e4, size=(n_steps, n_states))
    params = [np.asarray(p, dtype) for p in (log_initial, log_transition, log_emission)]
    with jax.enable_x64(True):  # the reference, on the very same (rounded) inputs
        ref = jax.tree.map(np.asarray, forward_backward(*[p.astype(np.float64) for p in params]))
    with jax.enable_x64(dtype == np.float64):
        post = jax.tree.map(np.asarray, scaled_forward_backward(*params))
    assert post.smoothed.dtype == post.transition_counts.dtype == dtype
    if dtype == np.float64:
        assert_posteriors_close(post, ref, 1e-10)
        return
    # float32: everything to float32 resolution (measured: posteriors 0.9 eps, counts
    # 5 eps, log-likelihood 0.12 eps relative; the log-space scan in float32 is off
    # by 2800 eps in the posteriors here).
    eps = float(np.finfo(np.float32).eps)
    assert abs(float(post.log_likelihood) - ref.log_likelihood) <= eps * abs(ref.log_likelihood)
    for name in ("log_alpha", "log_beta"):
        got, want = getattr(post, name), getattr(ref, name)
        np.testing.assert_allclose(got, want, rtol=0, atol=4 * eps * np.abs(want).max())
    np.testing.assert_allclose(post.smoothed, ref.smoothed, rtol=0, atol=10 * eps)
    np.testing.assert_allclose(
        post.transition_counts, ref.transition_counts, rtol=0, atol=100 * eps
    )


def test_scaled_zero_transitions_beyond_its_range_are_refused_without_nan(x64):
    # The stability case with exact zeros: paths into some states run only through
    # states thousands of nats behind, which the scaled sums cannot see.
    n_steps, n_states = 10_000, 100
    rng = np.random.default_rng(6)
    log_initial, log_transition, _ = random_hmm(rng, n_states, 1, zeros=True)
    log_emission = rng.uniform(-1e4, 1e4, size=(n_steps, n_states))
    post = scaled_forward_backward(log_initial, log_transition, log_emission)
    assert float(post.log_likelihood) == -np.inf
    for field in post:
        assert not np.any(np.isnan(field))


@pytest.mark.parametrize("smoother", SMOOTHERS)
@pytest.mark.parametrize("decoder", DECODERS)
def test_impossible_sequence_gives_minus_inf_without_nan(x64, smoother, decoder):
    log_initial, log_transition, log_emission = random_hmm(np.random.default_rng(7), 3, 5)
    log_emission[2] = -np.inf  # no state can emit x_3
    post = smoother(log_initial, log_transition, log_emission)
    assert float(post.log_likelihood) == -np.inf
    for field in post:
        assert not np.any(np.isnan(field))
    states, log_prob = decoder(log_initial, log_transition, log_emission)
    assert float(log_prob) == -np.inf and not np.any(np.isnan(states))


@pytest.mark.parametrize("smoother", SMOOTHERS)
@pytest.mark.parametrize("decoder", DECODERS)
def test_single_step_float32(smoother, decoder):
    log_initial, log_transition, log_emission = random_hmm(np.random.default_rng(8), 2, 1)
    params = [jnp.asarray(p, jnp.float32) for p in (log_initial, log_transition, log_emission)]
    joint = log_initial + log_emission[0]
    valid = jnp.ones(1, bool)

    post = smoother(*params, valid)
    assert post.smoothed.dtype == post.transition_counts.dtype == jnp.float32
    assert_close(post.log_likelihood, logsumexp(joint), 1e-6)
    assert_close(post.smoothed[0], np.exp(joint - logsumexp(joint)), 1e-6)
    assert_close(post.log_alpha[0], joint, 1e-6)
    assert_close(post.log_beta, np.zeros((1, 2)), 0)
    assert_close(post.transition_counts, np.zeros((2, 2)), 0)
    states, log_prob = decoder(*params, valid)
    assert states.dtype == jnp.int32
    np.testing.assert_array_equal(states, [np.argmax(joint)])
    assert_close(log_prob, joint.max(), 1e-6)

    # An all-padding sequence is empty: log p = 0 and no posterior mass anywhere.
    post = smoother(*params, ~valid)
    assert float(post.log_likelihood) == 0.0
    assert not np.any(post.smoothed) and not np.any(post.transition_counts)
    states, log_prob = decoder(*params, ~valid)
    assert float(log_prob) == 0.0 and not np.any(states)


# --------------------------------------------------------------------------- blocked

# (K, T, block_size): T a multiple of the block or not, T = 1, T below the block size,
# one-step blocks and the default block size.
BLOCKED_CASES = [(3, 1, None), (3, 2, None), (4, 37, 5), (4, 37, 100), (5, 200, None), (5, 200, 1)]


@pytest.mark.parametrize("zeros", [False, True])
@pytest.mark.parametrize("n_states, n_steps, block_size", BLOCKED_CASES)
def test_blocked_matches_sequential_float64(x64, zeros, n_states, n_steps, block_size):
    rng = np.random.default_rng(10 * n_steps + n_states + zeros)
    params = random_hmm(rng, n_states, n_steps, zeros=zeros, scale=3.0)
    if zeros:
        assert np.isneginf(params[0]).any() and np.isneginf(params[1]).any()
    post = blocked_forward_backward(*params, block_size=block_size)
    assert post.log_likelihood.dtype == jnp.float64
    assert_posteriors_close(post, forward_backward(*params), 1e-10)


@pytest.mark.parametrize("zeros", [False, True])
@pytest.mark.parametrize("n_states, n_steps", TINY_SHAPES)
def test_blocked_matches_brute_force(x64, zeros, n_states, n_steps):
    rng = np.random.default_rng(100 * n_states + n_steps + 7 * zeros)
    params = random_hmm(rng, n_states, n_steps, zeros=zeros)
    ll, log_alpha, log_beta, smoothed, counts, _, _ = brute_force(*params)
    post = blocked_forward_backward(*params, block_size=2)
    assert_close(post.log_likelihood, ll, 1e-10)
    assert_close(post.log_alpha, log_alpha, 1e-10)
    assert_close(post.log_beta, log_beta, 1e-10)
    assert_close(post.smoothed, smoothed, 1e-10)
    assert_close(post.transition_counts, counts, 1e-10)


@pytest.mark.parametrize("block_size", [None, 7])
def test_blocked_float32_matches_float64_reference(block_size):
    # Same tolerances, and the same reasoning, as for the other smoothers.
    n_steps = 200
    params = random_hmm(np.random.default_rng(1), 5, n_steps, scale=3.0)
    with jax.enable_x64(True):
        ref = jax.tree.map(np.asarray, forward_backward(*params))
    eps = float(np.finfo(np.float32).eps)
    log_tol = n_steps * eps * abs(float(ref.log_likelihood))
    post = blocked_forward_backward(
        *[jnp.asarray(p, jnp.float32) for p in params], block_size=block_size
    )
    assert post.smoothed.dtype == post.transition_counts.dtype == jnp.float32
    assert abs(float(post.log_likelihood) - ref.log_likelihood) <= log_tol
    np.testing.assert_allclose(post.log_alpha, ref.log_alpha, atol=log_tol, rtol=0)
    np.testing.assert_allclose(post.log_beta, ref.log_beta, atol=log_tol, rtol=0)
    np.testing.assert_allclose(post.smoothed, ref.smoothed, atol=100 * eps, rtol=0)
    np.testing.assert_allclose(
        post.transition_counts, ref.transition_counts, atol=n_steps * 10 * eps, rtol=0
    )


@pytest.mark.parametrize("block_size", [None, 4])
def test_blocked_padding_does_not_change_posteriors(x64, block_size):
    log_initial, log_transition, log_emission = random_hmm(
        np.random.default_rng(2), 3, 12, zeros=True
    )
    lengths = [1, 2, 5, 12]
    emissions, masks = padded_batch(log_emission, lengths)

    def smoother(*args):
        return blocked_forward_backward(*args, block_size=block_size)

    posts = jax.vmap(smoother, in_axes=(None, None, 0, 0))(
        log_initial, log_transition, emissions, masks
    )
    for row, length in enumerate(lengths):
        ref = forward_backward(log_initial, log_transition, log_emission[:length])
        post = jax.tree.map(lambda x, r=row: np.asarray(x[r]), posts)
        assert_close(post.log_likelihood, float(ref.log_likelihood), 1e-12)
        assert_close(post.log_alpha[:length], np.asarray(ref.log_alpha), 1e-12)
        assert_close(post.log_beta[:length], np.asarray(ref.log_beta), 1e-12)
        # Padded steps repeat the last forward message and have beta = 1.
        last = np.asarray(ref.log_alpha)[-1]
        assert_close(post.log_alpha[length:], np.broadcast_to(last, (12 - length, 3)), 1e-12)
        assert_close(post.log_beta[length:], 0.0, 0)
        assert_close(post.smoothed[:length], np.asarray(ref.smoothed), 1e-12)
        assert_close(post.smoothed[length:], 0.0, 0)
        assert_close(post.transition_counts, np.asarray(ref.transition_counts), 1e-12)


def test_blocked_impossible_and_empty_sequences_have_no_nan(x64):
    log_initial, log_transition, log_emission = random_hmm(np.random.default_rng(7), 3, 5)
    log_emission[2] = -np.inf  # no state can emit x_3
    post = blocked_forward_backward(log_initial, log_transition, log_emission, block_size=2)
    assert float(post.log_likelihood) == -np.inf
    for field in post:
        assert not np.any(np.isnan(field))
    # An all-padding sequence is empty: log p = 0 and no posterior mass anywhere.
    empty = blocked_forward_backward(
        log_initial, log_transition, log_emission, jnp.zeros(5, bool), block_size=2
    )
    assert float(empty.log_likelihood) == 0.0
    assert not np.any(empty.smoothed) and not np.any(empty.transition_counts)
    ref = forward_backward(log_initial, log_transition, log_emission, jnp.zeros(5, bool))
    assert_posteriors_close(empty, ref, 1e-12)


@pytest.mark.parametrize("zeros", [False, True])
def test_blocked_huge_emissions_stay_finite(zeros):
    # The stability case of the log-space smoothers. With dense transitions the blocked
    # smoother is as accurate as they are; with exact zeros, emission spreads beyond the
    # float32 exp range make it approximate (documented), but never NaN or infinite.
    n_steps, n_states = 10_000, 100
    rng = np.random.default_rng(6)
    log_initial, log_transition, _ = random_hmm(rng, n_states, 1, zeros=zeros)
    log_emission = rng.uniform(-1e4, 1e4, size=(n_steps, n_states))
    params = [jnp.asarray(p, jnp.float32) for p in (log_initial, log_transition, log_emission)]

    post = blocked_forward_backward(*params)
    assert np.isfinite(float(post.log_likelihood))
    np.testing.assert_allclose(post.smoothed.sum(1), 1.0, atol=1e-4)
    assert np.all(np.isfinite(post.transition_counts))
    np.testing.assert_allclose(post.transition_counts.sum(), n_steps - 1, rtol=1e-4)
    assert not np.any(np.isnan(post.log_alpha)) and not np.any(np.isnan(post.log_beta))
    ll = float(forward_backward(*params).log_likelihood)
    # |log p| ~ 1e8: float32 resolves ~10 nats. Measured: 2e-8 dense, 4e-3 with zeros.
    assert abs(float(post.log_likelihood) - ll) <= (1e-2 if zeros else 1e-6) * abs(ll)


def test_blocked_rejects_bad_block_size():
    params = random_hmm(np.random.default_rng(9), 2, 4)
    with pytest.raises(ValueError, match="block_size"):
        blocked_forward_backward(*params, block_size=0)


def test_hmm_model_blocked_algorithm_matches_scan():
    import jaxem

    rng = np.random.default_rng(11)
    X = np.concatenate([rng.normal(0, 1, (40, 2)), rng.normal(5, 1, (40, 2))])
    obs, mask = jaxem.pad_sequences(X.astype(np.float32), [50, 30])
    data = (jnp.asarray(obs), jnp.asarray(mask))
    scan = jaxem.hmm(jaxem.gaussian("diag"), n_states=3, algorithm="scan")
    blocked = jaxem.hmm(jaxem.gaussian("diag"), n_states=3, algorithm="blocked")
    params = jaxem.fit(scan, data, key=jax.random.key(0), n_restarts=1).params
    ref, post = scan.posteriors(params, *data), blocked.posteriors(params, *data)
    np.testing.assert_allclose(post.log_likelihood, ref.log_likelihood, rtol=1e-5)
    np.testing.assert_allclose(post.smoothed, ref.smoothed, atol=1e-5)
    np.testing.assert_allclose(post.transition_counts, ref.transition_counts, atol=1e-4)
    np.testing.assert_array_equal(blocked.decode(params, *data)[0], scan.decode(params, *data)[0])

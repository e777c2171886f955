"""Packed HMM rows (several sequences per row, ``starts`` / mask code 2) against the
same sequences run one by one: inference, the model's E-step and ``pack_sequences``."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from jaxem.models import hmm_inference
from tests.references import forward_backward as reference_forward_backward

LENGTHS = (5, 1, 7, 3)  # packed into one row of ROW_LENGTH steps, padding at the end
ROW_LENGTH = 20
N_STATES = 3

SMOOTHERS = {
    "scaled": hmm_inference.scaled_forward_backward,
    "scan": hmm_inference.forward_backward,
    "associative": hmm_inference.parallel_forward_backward,
    "blocked": hmm_inference.blocked_forward_backward,
    # Block boundaries on, before and after sequence boundaries.
    "blocked-3": lambda *args, **kwargs: hmm_inference.blocked_forward_backward(
        *args, block_size=3, **kwargs
    ),
}
DECODERS = {"viterbi": hmm_inference.viterbi, "associative": hmm_inference.parallel_viterbi}


def random_parameters(rng, n_states=N_STATES, n_steps=ROW_LENGTH):
    initial = rng.dirichlet(np.ones(n_states))
    transition = rng.dirichlet(np.ones(n_states), size=n_states)
    log_emission = 2.0 * rng.normal(size=(n_steps, n_states))
    return np.log(initial), np.log(transition), log_emission


def packed_row(lengths=LENGTHS, row_length=ROW_LENGTH):
    """``(mask, starts, segments)``: a row holding ``lengths`` back to back."""
    ends = np.cumsum(lengths)
    begins = ends - np.asarray(lengths)
    mask = np.arange(row_length) < ends[-1]
    starts = np.zeros(row_length, bool)
    starts[begins[1:]] = True
    return mask, starts, [slice(b, e) for b, e in zip(begins, ends)]


def numpy_viterbi(log_initial, log_transition, log_emission):
    """Best path and its log-probability by brute-force enumeration (float64)."""
    n_steps, n_states = log_emission.shape
    best, best_path = -np.inf, None
    for path in itertools.product(range(n_states), repeat=n_steps):
        path = np.array(path)
        score = (
            log_initial[path[0]]
            + log_transition[path[:-1], path[1:]].sum()
            + log_emission[np.arange(n_steps), path].sum()
        )
        if score > best:
            best, best_path = score, path
    return best_path, best


@pytest.mark.parametrize("name", sorted(SMOOTHERS))
def test_packed_row_equals_sequences_one_by_one(x64, name):
    rng = np.random.default_rng(0)
    log_initial, log_transition, log_emission = random_parameters(rng)
    mask, starts, segments = packed_row()
    # Padding may hold anything.
    log_emission[~mask] = np.nan
    post = SMOOTHERS[name](
        jnp.asarray(log_initial),
        jnp.asarray(log_transition),
        jnp.asarray(log_emission),
        jnp.asarray(mask),
        starts=jnp.asarray(starts),
    )
    total, counts, start_counts = 0.0, np.zeros((N_STATES, N_STATES)), np.zeros(N_STATES)
    smoothed = np.asarray(post.smoothed)
    for segment in segments:
        log_p, gamma, xi = reference_forward_backward(
            log_initial, log_transition, log_emission[segment]
        )
        total += log_p
        counts += xi
        start_counts += gamma[0]
        np.testing.assert_allclose(smoothed[segment], gamma, rtol=0, atol=1e-10)
    np.testing.assert_allclose(float(post.log_likelihood), total, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(post.transition_counts), counts, rtol=0, atol=1e-10)
    first = starts.copy()
    first[0] = True
    np.testing.assert_allclose(smoothed[first].sum(0), start_counts, rtol=0, atol=1e-10)
    assert np.all(smoothed[~mask] == 0)
    # The messages are those of the row as one chain: alpha + beta is still the
    # row's log-likelihood plus the log posterior.
    log_gamma = np.asarray(post.log_alpha + post.log_beta)[mask] - float(post.log_likelihood)
    np.testing.assert_allclose(np.exp(log_gamma), smoothed[mask], rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_packed_viterbi_equals_sequences_one_by_one(x64, name):
    rng = np.random.default_rng(1)
    log_initial, log_transition, log_emission = random_parameters(rng)
    mask, starts, segments = packed_row()
    states, log_prob = DECODERS[name](
        jnp.asarray(log_initial),
        jnp.asarray(log_transition),
        jnp.asarray(log_emission),
        jnp.asarray(mask),
        starts=jnp.asarray(starts),
    )
    states = np.asarray(states)
    total = 0.0
    for segment in segments:
        path, best = numpy_viterbi(log_initial, log_transition, log_emission[segment])
        np.testing.assert_array_equal(states[segment], path)
        total += best
    np.testing.assert_allclose(float(log_prob), total, rtol=1e-12)
    assert np.all(states[~mask] == 0)


def test_sample_path_draws_each_packed_sequence_from_its_own_posterior(x64):
    # Two sequences of two steps in one row of five: the joint law of the four drawn
    # states must be the product of the two sequences' exact posteriors (enumerated).
    rng = np.random.default_rng(2)
    n_states = 2
    log_initial, log_transition, log_emission = random_parameters(rng, n_states, 5)
    # Sticky transitions: ignoring the boundary would couple the two sequences.
    log_transition = np.log(np.array([[0.95, 0.05], [0.1, 0.9]]))
    mask, starts, segments = packed_row((2, 2), 5)
    post = hmm_inference.forward_backward(
        log_initial, log_transition, log_emission, mask, starts=starts
    )
    n_draws = 20_000
    keys = jax.random.split(jax.random.key(0), n_draws)
    paths = jax.vmap(hmm_inference.sample_path, in_axes=(0, None, None, None, None))(
        keys, jnp.asarray(log_transition), post.log_alpha, jnp.asarray(mask), jnp.asarray(starts)
    )
    paths = np.asarray(paths)
    assert np.all(paths[:, ~mask] == 0)
    codes = paths[:, :4] @ (n_states ** np.arange(4)[::-1])
    empirical = np.bincount(codes, minlength=n_states**4) / n_draws

    def segment_law(segment):
        law = {}
        for path in itertools.product(range(n_states), repeat=2):
            path = np.array(path)
            law[tuple(path)] = (
                log_initial[path[0]]
                + log_transition[path[0], path[1]]
                + log_emission[segment][np.arange(2), path].sum()
            )
        norm = logsumexp(list(law.values()))
        return {k: np.exp(v - norm) for k, v in law.items()}

    first, second = segment_law(segments[0]), segment_law(segments[1])
    exact = np.array(
        [first[a] * second[b] for a, b in itertools.product(first, second)]
    )  # codes enumerate (z0, z1, z2, z3) in the same order
    # 20,000 draws: the standard error of each frequency is below 0.0036.
    np.testing.assert_allclose(empirical, exact, rtol=0, atol=0.02)

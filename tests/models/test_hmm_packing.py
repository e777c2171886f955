"""Packed HMM rows (several sequences per row, ``starts`` / mask code 2) against the
same sequences run one by one: inference, the model's E-step and ``pack_sequences``."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

import jaxem
from jaxem.families.gaussian import GaussianParams
from jaxem.models import hmm_inference
from jaxem.models.hmm import HMMParams
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


def test_packed_row_in_float32_is_accurate_to_float32():
    # The default algorithm in float32 against the float64 references.
    rng = np.random.default_rng(4)
    log_initial, log_transition, log_emission = random_parameters(rng)
    mask, starts, segments = packed_row()
    post = hmm_inference.scaled_forward_backward(
        *(jnp.asarray(a, jnp.float32) for a in (log_initial, log_transition, log_emission)),
        jnp.asarray(mask),
        starts=jnp.asarray(starts),
    )
    assert post.smoothed.dtype == jnp.float32
    total, counts = 0.0, np.zeros((N_STATES, N_STATES))
    for segment in segments:
        log_p, gamma, xi = reference_forward_backward(
            log_initial, log_transition, log_emission[segment]
        )
        total += log_p
        counts += xi
        np.testing.assert_allclose(np.asarray(post.smoothed)[segment], gamma, atol=2e-6)
    np.testing.assert_allclose(float(post.log_likelihood), total, rtol=2e-6)
    np.testing.assert_allclose(np.asarray(post.transition_counts), counts, atol=1e-5)


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


# ------------------------------------------------------------------- model and packing


def _gaussian_hmm_case(assignment, seed=3):
    """A diagonal Gaussian HMM, its parameters and ``X`` cut into ``LENGTHS``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(sum(LENGTHS), 2)) + 2.0 * rng.integers(0, N_STATES, sum(LENGTHS))[:, None]
    model = jaxem.hmm(jaxem.gaussian("diag"), N_STATES, assignment=assignment)
    transmat = rng.dirichlet(np.ones(N_STATES), size=N_STATES)
    transmat[0, 1] = 0.0  # a forbidden transition, which no drawn path may take
    transmat /= transmat.sum(1, keepdims=True)
    params = HMMParams(
        jnp.asarray(rng.dirichlet(np.ones(N_STATES))),
        jnp.asarray(transmat),
        GaussianParams(jnp.asarray(x[:N_STATES] + 0.3), jnp.ones((N_STATES, 2))),
    )
    return model, params, x


def _e_step(model, params, observations, mask, keys=None):
    data = (jnp.asarray(observations), jnp.asarray(mask))
    weights = jnp.ones(mask.shape[0])
    stats, log_likelihood = model.e_step_with_keys(
        keys, params, data, weights, model.hyper(jnp.float64)
    )
    return jax.tree.map(np.asarray, stats), float(log_likelihood)


@pytest.mark.parametrize("assignment", ["soft", "hard"])
def test_model_statistics_packed_equal_padded(x64, assignment):
    model, params, x = _gaussian_hmm_case(assignment)
    padded = jaxem.pad_sequences(x, LENGTHS)
    observations, mask, _ = jaxem.pack_sequences(x, LENGTHS)
    assert mask.shape[0] < len(LENGTHS) and np.any(mask == 2)  # really packed
    padded_stats, padded_ll = _e_step(model, params, *padded)
    packed_stats, packed_ll = _e_step(model, params, observations, mask)
    np.testing.assert_allclose(packed_ll, padded_ll, rtol=1e-12)
    for packed, reference in zip(jax.tree.leaves(packed_stats), jax.tree.leaves(padded_stats)):
        np.testing.assert_allclose(packed, reference, rtol=1e-10, atol=1e-10)
    # One start per sequence, one pair per step inside a sequence.
    np.testing.assert_allclose(packed_stats.initial.sum(), len(LENGTHS), rtol=1e-12)
    np.testing.assert_allclose(
        packed_stats.transitions.sum(), sum(LENGTHS) - len(LENGTHS), rtol=1e-12
    )


def test_model_stochastic_statistics_of_packed_rows(x64):
    model, params, x = _gaussian_hmm_case("stochastic")
    observations, mask, _ = jaxem.pack_sequences(x, LENGTHS)
    keys = jax.random.split(jax.random.key(0), mask.shape[0])
    stats, _ = _e_step(model, params, observations, mask, keys)
    # Drawn paths: integer counts, one start per sequence, pairs only inside them,
    # and never the forbidden transition 0 -> 1.
    for counts in (stats.initial, stats.transitions, stats.counts):
        np.testing.assert_array_equal(counts, np.round(counts))
    assert stats.initial.sum() == len(LENGTHS)
    assert stats.transitions.sum() == sum(LENGTHS) - len(LENGTHS)
    assert stats.counts.sum() == sum(LENGTHS)
    assert stats.transitions[0, 1] == 0
    # Without keys the E-step is the expectation: Baum-Welch's statistics.
    soft, _ = _e_step(dataclasses.replace(model, assignment="soft"), params, observations, mask)
    expected, _ = _e_step(model, params, observations, mask)
    for leaf, reference in zip(jax.tree.leaves(expected), jax.tree.leaves(soft)):
        np.testing.assert_allclose(leaf, reference, rtol=1e-12)


def test_model_log_prob_and_decode_of_packed_rows(x64):
    model, params, x = _gaussian_hmm_case("soft")
    padded_obs, padded_mask = jaxem.pad_sequences(x, LENGTHS)
    observations, mask, (rows, cols) = jaxem.pack_sequences(x, LENGTHS)
    np.testing.assert_allclose(
        float(model.log_prob(params, (observations, mask)).sum()),
        float(model.log_prob(params, (padded_obs, padded_mask)).sum()),
        rtol=1e-12,
    )
    packed_states, packed_best = model.decode(params, observations, mask)
    padded_states, padded_best = model.decode(params, padded_obs, padded_mask)
    np.testing.assert_array_equal(
        np.asarray(packed_states)[rows, cols], np.asarray(padded_states)[padded_mask > 0]
    )
    np.testing.assert_allclose(float(packed_best.sum()), float(padded_best.sum()), rtol=1e-12)
    posterior = model.posteriors(params, observations, mask)
    padded_posterior = model.posteriors(params, padded_obs, padded_mask)
    np.testing.assert_allclose(
        np.asarray(posterior.smoothed)[rows, cols],
        np.asarray(padded_posterior.smoothed)[padded_mask > 0],
        atol=1e-12,
    )


def test_model_init_weighs_packed_starts_as_steps(x64):
    # Code 2 marks a start; init must weigh that step as 1, not 2.
    model, _, x = _gaussian_hmm_case("soft")
    observations, mask, _ = jaxem.pack_sequences(x, LENGTHS)
    key = jax.random.key(0)
    as_ones = jaxem.engine.initialise(
        model, (jnp.asarray(observations), jnp.asarray(np.minimum(mask, 1))), key=key
    )
    packed = jaxem.engine.initialise(model, (jnp.asarray(observations), jnp.asarray(mask)), key=key)
    for leaf, reference in zip(
        jax.tree.leaves(packed.emissions), jax.tree.leaves(as_ones.emissions)
    ):
        np.testing.assert_allclose(np.asarray(leaf), np.asarray(reference), rtol=1e-12)


def test_pack_sequences_layout():
    x = np.arange(16.0)[:, None] * np.ones((1, 2))
    observations, mask, (rows, cols) = jaxem.pack_sequences(x, LENGTHS)
    # 4 x 7 padded slots would be 28 for 16 steps: packed into 2 rows of 8.
    assert observations.shape == (2, 8, 2) and mask.shape == (2, 8)
    np.testing.assert_array_equal(observations[rows, cols], x)
    assert (mask > 0).sum() == 16 and (mask == 2).sum() == 2
    # Every sequence is contiguous in one row, starting with 1 (row head) or 2.
    begins = np.cumsum(LENGTHS) - np.asarray(LENGTHS)
    for begin, length in zip(begins, LENGTHS):
        row = rows[begin : begin + length]
        col = cols[begin : begin + length]
        assert np.all(row == row[0]) and np.array_equal(col, col[0] + np.arange(length))
        assert mask[row[0], col[0]] == (1 if col[0] == 0 else 2)
        assert np.all(mask[row[0], col[1:]] == 1)
    # Little padding to waste: rows stay sequences, in the input's order.
    observations, mask, (rows, cols) = jaxem.pack_sequences(np.zeros((100_000, 1)), [1000] * 100)
    assert observations.shape == (100, 1000, 1) and mask.max() == 1
    np.testing.assert_array_equal(rows, np.repeat(np.arange(100), 1000))
    # A path 2.5x longer for 18 % fewer slots is not worth it: three rows of 40.
    observations, mask, _ = jaxem.pack_sequences(np.zeros((98, 1)), [40, 25, 33])
    assert mask.shape == (3, 40) and mask.max() == 1
    # The case: one row of 10,500.
    observations, mask, _ = jaxem.pack_sequences(np.zeros((10_500, 1)), [10_000] + [1] * 500)
    assert observations.shape == (1, 10_500, 1) and (mask == 2).sum() == 500
    # A given row length is kept.
    observations, mask, _ = jaxem.pack_sequences(x, LENGTHS, max_length=10)
    assert mask.shape == (2, 10) and mask.dtype == np.float64
    assert jaxem.pack_sequences(x.astype(np.float32), LENGTHS)[1].dtype == np.float32


def test_pack_sequences_random_lengths():
    rng = np.random.default_rng(5)
    # (lengths, bound on slots / steps): many short sequences pack tightly; one long
    # and many tiny ones need 4 rows of 300 (a row at most 1/8 longer fits no better).
    cases = [(rng.integers(1, 40, 200), 1.125), (np.r_[300, rng.integers(1, 5, 300)], 1.2)]
    for lengths, bound in cases:
        x = np.arange(lengths.sum(), dtype=np.float64)
        observations, mask, (rows, cols) = jaxem.pack_sequences(x, lengths)
        np.testing.assert_array_equal(observations[rows, cols], x)
        # No two samples share a slot, padding is zero, and one start per sequence.
        assert len(set(zip(rows.tolist(), cols.tolist()))) == len(x)
        assert (mask > 0).sum() == len(x) and np.all(observations[mask == 0] == 0)
        assert (mask == 2).sum() + mask.shape[0] == len(lengths)
        assert mask.size <= bound * lengths.sum()
        assert mask.shape[1] <= np.ceil(1.125 * lengths.max())  # rows run step by step


@pytest.mark.parametrize(
    ("lengths", "max_length", "message"),
    [
        ([5, 1, 7, 2], None, "sum to 15"),
        ([5, 0, 7, 4], None, "positive"),
        ([5.5, 10.5], None, "integers"),
        ([], None, "non-empty"),
        (LENGTHS, 6, "shorter than the longest"),
    ],
)
def test_pack_sequences_refuses_bad_input(lengths, max_length, message):
    with pytest.raises(ValueError, match=message):
        jaxem.pack_sequences(np.zeros((16, 2)), lengths, max_length=max_length)

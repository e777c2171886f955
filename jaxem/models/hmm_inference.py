"""Exact inference for discrete-state hidden Markov models, magnitudes in log space.

Every function here handles a single sequence and is pure, so callers ``jax.jit`` and
``jax.vmap`` over sequences and restarts. Inputs are log-probabilities:

- ``log_initial`` ``(K,)``: ``log p(z_1 = k)``;
- ``log_transition`` ``(K, K)``: ``log p(z_{t+1} = j | z_t = i)``, rows are from-states;
- ``log_emission`` ``(T, K)``: ``log p(x_t | z_t = k)``;
- ``mask`` ``(T,)`` bool or ``None``: ``True`` on valid steps. Padding may only trail
  the valid steps, so a length-``L`` sequence padded to ``T`` has ``mask[:L]`` true.
- ``starts`` ``(T,)`` bool or ``None``: ``True`` on the first step of a sequence packed
  after another in the same row (see :func:`jaxem.pack_sequences`); step 0 always
  starts one.

Packing: a sequence boundary inside a row is exactly a transition matrix whose rows
all equal the start distribution (``A' = 1 πᵀ``: the next state does not depend on
the previous one). Every function here uses ``A'`` at the steps where ``starts`` is
true, so a packed row gives, exactly, the posteriors and Viterbi paths of its
independent sequences, the sum of their log-likelihoods (and of their best paths'
log-probabilities), and transition counts over the pairs inside sequences only.
``log_alpha`` and ``log_beta`` are then the messages of the row as one chain with
``A'`` at its boundaries (``log_alpha + log_beta`` is still the row's
log-likelihood plus the log posterior).

``-inf`` entries (impossible starts or transitions) are allowed. Padded steps act as
identity transitions with a zero log-emission, so they leave every valid-step result
unchanged, and the expected transition counts only sum over pairs of valid steps.

Forward-backward comes in four algorithms (``jaxem.hmm(..., algorithm=...)``):

- ``"scaled"``, :func:`scaled_forward_backward` (the models' default): sequential
  ``lax.scan`` passes in probability space, one ``K``-vector by ``(K, K)`` product per
  step, with emissions shifted to each step's best state and messages renormalised
  every step, the shifts and normalisers summed in log space; about 3x faster than
  ``"scan"`` on a CPU (the smoother alone; about 2x per EM iteration) and equal to it
  to rounding, but it refuses (log-likelihood ``-inf``) sequences where zero
  transitions meet emission spreads of hundreds of nats;
- ``"scan"``, :func:`forward_backward`: the same passes in log space (a log-sum-exp
  over ``K x K`` terms per step), exact for any transitions and emissions;
- ``"associative"``, :func:`parallel_forward_backward`, and ``"blocked"``,
  :func:`blocked_forward_backward`, below.

The ``parallel_*`` variants compute the same quantities with ``jax.lax.associative_scan``
in ``O(log T)`` depth (Hassan, Särkkä & García-Fernández, 2021, "Temporal parallelization
of inference in hidden Markov models"), at the price of ``O(T K^3)`` work instead of
``O(T K^2)``: use them on accelerators with long sequences and few states.

:func:`blocked_forward_backward` cuts time into about ``sqrt(T)`` blocks handled in
parallel, so its scans take about ``5 sqrt(T)`` steps instead of ``2 T``, also at
``O(T K^3)`` work: use it on a CPU for a few long sequences.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

__all__ = [
    "HMMPosterior",
    "scaled_forward_backward",
    "forward_backward",
    "parallel_forward_backward",
    "blocked_forward_backward",
    "viterbi",
    "parallel_viterbi",
    "sample_path",
]


class HMMPosterior(NamedTuple):
    """Posterior summaries of one sequence, as returned by :func:`forward_backward`.

    Attributes
    ----------
    log_likelihood : Array
        Scalar ``log p(x_{1:L})`` over the ``L`` valid steps (``0`` when ``L = 0``).
    log_alpha : Array
        ``(T, K)`` forward messages ``log p(x_{1:t}, z_t)``; padded steps repeat the last
        valid message.
    log_beta : Array
        ``(T, K)`` backward messages ``log p(x_{t+1:L} | z_t)``; zero on padded steps.
    smoothed : Array
        ``(T, K)`` posterior marginals ``p(z_t | x_{1:L})``; rows of padded steps are 0.
    transition_counts : Array
        ``(K, K)`` expected counts ``sum_t p(z_t = i, z_{t+1} = j | x_{1:L})`` over valid
        pairs.
    """

    log_likelihood: Array
    log_alpha: Array
    log_beta: Array
    smoothed: Array
    transition_counts: Array


# --------------------------------------------------------------------------- helpers


def _prepare(log_initial, log_transition, log_emission, mask, starts=None):
    """Cast to one float dtype, check shapes and neutralise padded emissions.

    Returns ``starts`` as a ``(T,)`` bool array, true only on valid steps after the
    first (step 0 starts a sequence whatever it says).
    """
    dtype = jnp.result_type(log_initial, log_transition, log_emission)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    log_initial = jnp.asarray(log_initial, dtype)
    log_transition = jnp.asarray(log_transition, dtype)
    log_emission = jnp.asarray(log_emission, dtype)
    if log_emission.ndim != 2:
        raise ValueError(f"log_emission must be (T, K), got {log_emission.shape}")
    n_steps, n_states = log_emission.shape
    if n_steps == 0:
        raise ValueError("sequences need at least one step (T >= 1)")
    if log_initial.shape != (n_states,):
        raise ValueError(f"log_initial must be ({n_states},), got {log_initial.shape}")
    if log_transition.shape != (n_states, n_states):
        raise ValueError(
            f"log_transition must be ({n_states}, {n_states}), got {log_transition.shape}"
        )
    if mask is None:
        mask = jnp.ones(n_steps, bool)
    else:
        mask = jnp.asarray(mask, bool)
        if mask.shape != (n_steps,):
            raise ValueError(f"mask must be ({n_steps},), got {mask.shape}")
    # Padded emissions may hold garbage (even NaN) from padded data; zero them so
    # they cannot leak into any branch of a `where`.
    log_emission = jnp.where(mask[:, None], log_emission, 0.0)
    return log_initial, log_transition, log_emission, mask, _starts(starts, mask)


def _starts(starts, mask):
    """``(T,)`` bool: sequence starts after step 0, on valid steps only."""
    n_steps = mask.shape[0]
    if starts is None:
        return jnp.zeros(n_steps, bool)
    starts = jnp.asarray(starts, bool)
    if starts.shape != (n_steps,):
        raise ValueError(f"starts must be ({n_steps},), got {starts.shape}")
    return starts & mask & (jnp.arange(n_steps) > 0)


def _finite_or_zero(x):
    """Replace non-finite normalisers by 0 so ``x - norm`` never forms ``-inf - -inf``."""
    return jnp.where(jnp.isfinite(x), x, jnp.zeros_like(x))


def _normalize(log_p, axis=-1):
    """Shift log-weights to log-sum-exp 0 along ``axis``; all ``-inf`` stays ``-inf``."""
    norm = jax.nn.logsumexp(log_p, axis=axis, keepdims=True)
    return log_p - _finite_or_zero(norm), jnp.squeeze(norm, axis)


def _log_eye(n_states, dtype):
    eye = jnp.eye(n_states, dtype=bool)
    return jnp.where(eye, jnp.zeros((), dtype), -jnp.inf)


def _smoothed(log_alpha_hat, log_beta_hat, mask):
    """Posterior marginals from messages known up to per-step scales, which cancel."""
    smoothed, _ = _normalize(log_alpha_hat + log_beta_hat)
    return jnp.where(mask[:, None], jnp.exp(smoothed), 0.0)


def _pair_posterior(log_alpha_hat, log_transition, log_right):
    """``p(z_t = i, z_{t+1} = j | x)`` from ``alpha_t`` and ``e_{t+1} + beta_{t+1}``.

    Normalising each pair on its own makes per-step message scales irrelevant. Works
    on one pair or on a stack of pairs.
    """
    log_xi = log_alpha_hat[..., :, None] + log_transition + log_right[..., None, :]
    log_norm = jax.nn.logsumexp(log_xi, axis=(-2, -1), keepdims=True)
    return jnp.exp(log_xi - _finite_or_zero(log_norm))


def _split_matmul(left, right):
    """``left.T @ right`` for ``left`` in ``[0, 1]`` and ``0 <= right <= 1 / tiny``.

    ``right`` is split at ``sqrt(max)`` into two parts so no partial sum overflows; the
    second comes back pre-divided by that ``sqrt(max)``. Products run at full precision
    (accelerators may otherwise round float32 operands to fewer mantissa bits).
    """
    log_cap = float(np.log(jnp.finfo(right.dtype).max) / 2)
    cap = jnp.asarray(np.exp(log_cap), right.dtype)
    low = jnp.minimum(right, cap)
    high = (right - low) / cap
    product = functools.partial(jnp.matmul, precision=lax.Precision.HIGHEST)
    return product(left.T, low), product(left.T, high), cap


# ----------------------------------------------------------------------- sequential


@jax.jit
def forward_backward(
    log_initial, log_transition, log_emission, mask=None, starts=None
) -> HMMPosterior:
    """Forward-backward smoothing with sequential ``jax.lax.scan`` passes.

    Messages are renormalised at every step and the log-normalisers are accumulated
    separately, so the result stays accurate for long sequences with huge emission
    log-probabilities, in float32 as in float64.

    Parameters
    ----------
    log_initial : Array
        ``(K,)`` initial-state log-probabilities.
    log_transition : Array
        ``(K, K)`` transition log-probabilities, rows are from-states.
    log_emission : Array
        ``(T, K)`` emission log-likelihoods ``log p(x_t | z_t = k)``.
    mask : Array, optional
        ``(T,)`` bool, ``True`` on valid steps; padding may only trail the valid steps.
    starts : Array, optional
        ``(T,)`` bool, ``True`` on the first step of every sequence packed after
        another in the row (see the module's docstring); ``None``: one sequence.

    Returns
    -------
    HMMPosterior
        Log-likelihood, forward/backward messages, smoothed marginals and expected
        transition counts, all in the input's float dtype.

    See Also
    --------
    parallel_forward_backward : Same result in ``O(log T)`` depth.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from jaxem.models.hmm_inference import forward_backward
    >>> log_initial = jnp.log(jnp.array([0.6, 0.4]))
    >>> log_transition = jnp.log(jnp.array([[0.7, 0.3], [0.2, 0.8]]))
    >>> log_emission = jnp.log(jnp.array([[0.9, 0.1], [0.2, 0.7], [0.1, 0.8]]))
    >>> post = forward_backward(log_initial, log_transition, log_emission)
    >>> print(round(float(post.log_likelihood), 4))
    -2.1754
    >>> print(np.round(np.asarray(post.smoothed), 3))
    [[0.865 0.135]
     [0.211 0.789]
     [0.072 0.928]]

    Padding the end of the sequence changes nothing and zeroes the padded rows:

    >>> padded = jnp.concatenate([log_emission, jnp.zeros((2, 2))])
    >>> mask = jnp.arange(5) < 3
    >>> post_padded = forward_backward(log_initial, log_transition, padded, mask)
    >>> print(round(float(post_padded.log_likelihood), 4))
    -2.1754
    >>> print(post_padded.smoothed[3:].sum())
    0.0

    Two sequences packed in one row (the second starts at step 3) give the sum of
    their log-likelihoods:

    >>> packed = jnp.concatenate([log_emission, log_emission])
    >>> starts = jnp.arange(6) == 3
    >>> post_packed = forward_backward(log_initial, log_transition, packed, starts=starts)
    >>> print(round(float(post_packed.log_likelihood), 4))
    -4.3508
    """
    log_initial, log_transition, log_emission, mask, starts = _prepare(
        log_initial, log_transition, log_emission, mask, starts
    )
    n_states = log_initial.shape[0]
    dtype = log_initial.dtype

    alpha0_hat, log_c0 = _normalize(log_initial + log_emission[0])
    log_c0 = jnp.where(mask[0], log_c0, 0.0)

    def forward_step(alpha_hat, inputs):
        log_e, valid, start = inputs
        predicted = jax.nn.logsumexp(alpha_hat[:, None] + log_transition, axis=0)
        # A new sequence forgets the previous one: alpha_hat sums to one, so the
        # boundary's transition 1 πᵀ predicts π.
        predicted = jnp.where(start, log_initial, predicted)
        new_hat, log_c = _normalize(predicted + log_e)
        # A padded step is an identity transition: keep the message, add nothing.
        new_hat = jnp.where(valid, new_hat, alpha_hat)
        log_c = jnp.where(valid, log_c, 0.0)
        return new_hat, (new_hat, log_c)

    _, (alpha_rest, log_c_rest) = lax.scan(
        forward_step, alpha0_hat, (log_emission[1:], mask[1:], starts[1:])
    )
    log_alpha_hat = jnp.concatenate([alpha0_hat[None], alpha_rest])
    log_c = jnp.concatenate([log_c0[None], log_c_rest])
    log_likelihood = jnp.sum(log_c)
    log_alpha = log_alpha_hat + jnp.cumsum(log_c)[:, None]

    def backward_step(beta_hat_next, inputs):
        log_e_next, valid_next, start_next = inputs
        log_b = jax.nn.logsumexp(log_transition + log_e_next + beta_hat_next, axis=1)
        # Before a boundary (transition 1 πᵀ) beta is the same for every state.
        log_b_start = jax.nn.logsumexp(log_initial + log_e_next + beta_hat_next)
        log_b = jnp.where(start_next, jnp.broadcast_to(log_b_start, log_b.shape), log_b)
        beta_hat, log_d = _normalize(log_b)
        # Before a padded step (or at the last valid one) beta is log 1 = 0.
        beta_hat = jnp.where(valid_next, beta_hat, 0.0)
        log_d = jnp.where(valid_next, log_d, 0.0)
        return beta_hat, (beta_hat, log_d)

    beta_last = jnp.zeros(n_states, dtype)
    _, (beta_rest, log_d_rest) = lax.scan(
        backward_step, beta_last, (log_emission[1:], mask[1:], starts[1:]), reverse=True
    )
    log_beta_hat = jnp.concatenate([beta_rest, beta_last[None]])
    log_d = jnp.concatenate([log_d_rest, jnp.zeros((1,), dtype)])
    # beta_t = beta_hat_t * prod_{s >= t} d_s: a reversed cumulative sum.
    log_beta = log_beta_hat + jnp.cumsum(log_d[::-1])[::-1][:, None]
    log_gamma, log_gamma_norm = _normalize(log_alpha_hat + log_beta_hat)
    smoothed = jnp.where(mask[:, None], jnp.exp(log_gamma), 0.0)
    # Pair posteriors p(z_t = i, z_{t+1} = j | x) share the normaliser of gamma_{t+1}
    # (times c_{t+1}), so one exp per pair suffices, outside the sequential scans.
    log_right = (
        log_emission[1:]
        + log_beta_hat[1:]
        - _finite_or_zero(log_c[1:])[:, None]
        - _finite_or_zero(log_gamma_norm[1:])[:, None]
    )
    # Pairs across a boundary are no transitions of A.
    log_right = jnp.where((mask[1:] & ~starts[1:])[:, None], log_right, -jnp.inf)
    counts = _pair_counts(log_alpha_hat[:-1], log_transition, log_right)
    return HMMPosterior(log_likelihood, log_alpha, log_beta, smoothed, counts)


def _pair_counts(log_left, log_transition, log_right):
    """``Σ_t exp(left_t[i] + log A[i, j] + right_t[j])`` over time, in blocks.

    Vectorised over a block of steps (fast on any device), scanned over blocks so
    memory stays at ``block × K²``.
    """
    n_pairs, n_states = log_left.shape
    if n_pairs == 0:
        return jnp.zeros((n_states, n_states), log_left.dtype)
    block = max(1, min(n_pairs, 4096 // n_states))
    n_blocks = -(-n_pairs // block)
    padding = ((0, n_blocks * block - n_pairs), (0, 0))
    log_left = jnp.pad(log_left, padding, constant_values=-jnp.inf)
    log_right = jnp.pad(log_right, padding, constant_values=-jnp.inf)

    def add_block(total, pair):
        left, right = pair
        return total + jnp.exp(left[:, :, None] + log_transition + right[:, None, :]).sum(0), None

    total, _ = lax.scan(
        add_block,
        jnp.zeros((n_states, n_states), log_left.dtype),
        (log_left.reshape(n_blocks, block, n_states), log_right.reshape(n_blocks, block, n_states)),
    )
    return total


@jax.jit
def viterbi(
    log_initial, log_transition, log_emission, mask=None, starts=None
) -> tuple[Array, Array]:
    """Most probable state path, by a max-product ``scan`` and a backtracking ``scan``.

    Parameters
    ----------
    log_initial : Array
        ``(K,)`` initial-state log-probabilities.
    log_transition : Array
        ``(K, K)`` transition log-probabilities, rows are from-states.
    log_emission : Array
        ``(T, K)`` emission log-likelihoods ``log p(x_t | z_t = k)``.
    mask : Array, optional
        ``(T,)`` bool, ``True`` on valid steps; padding may only trail the valid steps.
    starts : Array, optional
        ``(T,)`` bool, ``True`` on the first step of every sequence packed after
        another in the row (see the module's docstring); ``None``: one sequence.

    Returns
    -------
    states : Array
        ``(T,)`` int32 MAP states; padded steps hold 0. Ties go to the lowest index.
    log_prob : Array
        Scalar ``max_z log p(x_{1:L}, z_{1:L})``.

    See Also
    --------
    parallel_viterbi : Same path in ``O(log T)`` depth.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from jaxem.models.hmm_inference import viterbi
    >>> log_initial = jnp.log(jnp.array([0.6, 0.4]))
    >>> log_transition = jnp.log(jnp.array([[0.7, 0.3], [0.2, 0.8]]))
    >>> log_emission = jnp.log(jnp.array([[0.9, 0.1], [0.2, 0.7], [0.1, 0.8]]))
    >>> states, log_prob = viterbi(log_initial, log_transition, log_emission)
    >>> print(states, round(float(log_prob), 4))
    [0 1 1] -2.6231
    """
    log_initial, log_transition, log_emission, mask, starts = _prepare(
        log_initial, log_transition, log_emission, mask, starts
    )
    n_states = log_initial.shape[0]
    identity = jnp.arange(n_states, dtype=jnp.int32)

    # Max-messages are shifted to max 0 each step; the shifts sum to the path score.
    delta0 = log_initial + log_emission[0]
    shift0 = _finite_or_zero(jnp.max(delta0))
    shift0 = jnp.where(mask[0], shift0, 0.0)

    def forward_step(delta_hat, inputs):
        log_e, valid, start = inputs
        # At a boundary every from-state moves by log π: the best one points back.
        step_transition = jnp.where(start, log_initial[None, :], log_transition)
        scores = delta_hat[:, None] + step_transition
        pointers = jnp.argmax(scores, axis=0).astype(jnp.int32)
        new = jnp.max(scores, axis=0) + log_e
        shift = _finite_or_zero(jnp.max(new))
        new_hat = jnp.where(valid, new - shift, delta_hat)
        shift = jnp.where(valid, shift, 0.0)
        pointers = jnp.where(valid, pointers, identity)
        return new_hat, (pointers, shift)

    delta_last, (pointers, shifts) = lax.scan(
        forward_step, delta0 - shift0, (log_emission[1:], mask[1:], starts[1:])
    )
    log_prob = shift0 + jnp.sum(shifts) + jnp.max(delta_last)
    log_prob = jnp.where(mask[0], log_prob, 0.0)
    last_state = jnp.argmax(delta_last).astype(jnp.int32)

    def backtrack_step(state_next, pointers_t):
        state = pointers_t[state_next]
        return state, state

    _, states_rest = lax.scan(backtrack_step, last_state, pointers, reverse=True)
    states = jnp.concatenate([states_rest, last_state[None]])
    return jnp.where(mask, states, 0), log_prob


def sample_path(key, log_transition, log_alpha, mask=None, starts=None) -> Array:
    """A state path drawn from ``p(z_{1:L} | x_{1:L})`` by backward sampling on the
    forward messages (forward-filtering backward-sampling).

    Parameters
    ----------
    key : PRNG key of the sequence.
    log_transition : Array
        ``(K, K)`` transition log-probabilities, rows are from-states.
    log_alpha : Array
        ``(T, K)`` forward messages of :class:`HMMPosterior` (padded steps repeat the
        last valid one; only their normalisation per step is used).
    mask : Array, optional
        ``(T,)`` bool, ``True`` on valid steps; padding may only trail the valid steps.
    starts : Array, optional
        ``(T,)`` bool, ``True`` on the first step of every sequence packed after
        another in the row (see the module's docstring); ``None``: one sequence.

    Returns
    -------
    states : Array
        ``(T,)`` int32 drawn states; padded steps hold 0.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from jaxem.models.hmm_inference import forward_backward, sample_path
    >>> log_transition = jnp.log(jnp.array([[0.9, 0.1], [0.1, 0.9]]))
    >>> log_emission = jnp.log(jnp.array([[0.99, 0.01], [0.99, 0.01], [0.01, 0.99]]))
    >>> post = forward_backward(jnp.log(jnp.array([0.5, 0.5])), log_transition, log_emission)
    >>> sample_path(jax.random.key(0), log_transition, post.log_alpha).shape
    (3,)
    """
    n_steps = log_alpha.shape[0]
    mask = jnp.ones(n_steps, bool) if mask is None else jnp.asarray(mask, bool)
    starts = _starts(starts, mask)
    keys = jax.random.split(key, n_steps)
    # Padded steps repeat the last valid message: the last step's draw is z_L's.
    last = jax.random.categorical(keys[-1], log_alpha[-1]).astype(jnp.int32)

    def step(state_next, inputs):
        step_key, log_alpha_t, valid_next, start_next = inputs
        # The last step of a sequence packed before another is drawn from its
        # filtered message alone (the boundary's transition does not depend on it).
        log_move = jnp.where(start_next, 0.0, log_transition[:, state_next])
        drawn = jax.random.categorical(step_key, log_alpha_t + log_move)
        # Before a padded step the path stays put (an identity transition).
        state = jnp.where(valid_next, drawn.astype(jnp.int32), state_next)
        return state, state

    _, rest = lax.scan(step, last, (keys[:-1], log_alpha[:-1], mask[1:], starts[1:]), reverse=True)
    return jnp.where(mask, jnp.concatenate([rest, last[None]]), 0)


# ------------------------------------------------------------------------- scaled


def _scaled_emissions(log_emission):
    """Emission probabilities relative to each step's best state, and the log-shifts.

    ``p(x_t | k) = scaled[t, k] exp(shift[t])`` with ``max_k scaled[t, k] = 1``, so the
    shift absorbs any magnitude (``|log p| ~ 1e4`` and more). States too far behind
    the best underflow to 0, which :func:`scaled_forward_backward` checks is harmless.
    """
    shift = _finite_or_zero(jnp.max(log_emission, axis=-1))
    return jnp.exp(log_emission - shift[..., None]), shift


def _positive_or_one(x):
    """``x`` where positive, else 1: a divisor that leaves zero numerators at zero."""
    return jnp.where(x > 0, x, jnp.ones_like(x))


def _safe_log(x):
    """``log x`` for ``x >= 0``, ``-inf`` at 0, with a finite gradient everywhere."""
    return jnp.where(x > 0, jnp.log(_positive_or_one(x)), -jnp.inf)


def _scaled_forward(initial, transition, emission, mask, starts):
    """Forward messages ``alpha_hat_t ∝ p(x_{1:t}, z_t)`` in probability space, each
    row summing to 1 (padded steps repeat the last valid row).

    Each step is written reduce-then-scale (``Σ_i alpha[i] A[i, :]``, then times the
    emissions): XLA's CPU backend fuses that into one loop, several times faster than
    a ``dot`` per step.
    """
    first = initial * emission[0]
    first = first / _positive_or_one(jnp.sum(first))

    def step(alpha, inputs):
        emission_t, valid, start = inputs
        # alpha sums to one, so a boundary's transition 1 πᵀ predicts π.
        predicted = jnp.where(start, initial, jnp.sum(alpha[:, None] * transition, axis=0))
        joint = predicted * emission_t
        new = joint / _positive_or_one(jnp.sum(joint))
        # A padded step is an identity transition: keep the message.
        new = jnp.where(valid, new, alpha)
        return new, new

    _, rest = lax.scan(step, first, (emission[1:], mask[1:], starts[1:]))
    return jnp.concatenate([first[None], rest])


def _scaled_backward(initial, transition, emission, mask, starts):
    """``g_t ∝ p(x_t | z_t) beta_t(z_t)`` for ``t >= 1`` in probability space, each row
    summing to 1; ``beta_{t-1} ∝ A g_t`` follows with one product over time.

    Carrying ``g`` rather than ``beta`` keeps the step in the same reduce-then-scale
    form as the forward one (``Σ_j A[:, j] g[j]``, then times the emissions).
    """
    ones = jnp.ones(transition.shape[0], transition.dtype)
    transposed = transition.T

    def step(g_next, inputs):
        emission_t, valid_next, start_next = inputs
        beta = jnp.sum(g_next[:, None] * transposed, axis=0)
        # Before a boundary (transition 1 πᵀ) beta is π·g for every state.
        beta = jnp.where(start_next, jnp.sum(initial * g_next), beta)
        # Before a padded step (and at the last valid one) beta is 1.
        joint = jnp.where(valid_next, beta, ones) * emission_t
        new = joint / _positive_or_one(jnp.sum(joint))
        return new, new

    valid_next = jnp.concatenate([mask[2:], jnp.zeros((1,), bool)])[: mask.shape[0] - 1]
    start_next = jnp.concatenate([starts[2:], jnp.zeros((1,), bool)])[: mask.shape[0] - 1]
    _, g = lax.scan(step, ones, (emission[1:], valid_next, start_next), reverse=True)
    return g


@jax.jit
def scaled_forward_backward(
    log_initial, log_transition, log_emission, mask=None, starts=None
) -> HMMPosterior:
    """Forward-backward smoothing in probability space with per-step scaling.

    The recursions multiply probabilities, as hmmlearn's ``"scaling"`` implementation
    does, but every magnitude lives in log space: emissions enter relative to each
    step's best state (their log-shift is kept apart) and messages are renormalised at
    every step (their log-normalisers are summed apart). So nothing underflows even
    with emission log-likelihoods ``1e4`` apart. Each sequential step is then one
    ``K``-vector by ``(K, K)`` product, with no exponential, where :func:`forward_backward`
    takes a log-sum-exp over ``K x K`` terms; the expected transition counts are one
    ``(K, T) @ (T, K)`` product after the scans.

    Parameters
    ----------
    log_initial : Array
        ``(K,)`` initial-state log-probabilities.
    log_transition : Array
        ``(K, K)`` transition log-probabilities, rows are from-states; rows should be
        distributions (sum to one), exact zeros (``-inf``) are allowed.
    log_emission : Array
        ``(T, K)`` emission log-likelihoods ``log p(x_t | z_t = k)``.
    mask : Array, optional
        ``(T,)`` bool, ``True`` on valid steps; padding may only trail the valid steps.
    starts : Array, optional
        ``(T,)`` bool, ``True`` on the first step of every sequence packed after
        another in the row (see the module's docstring); ``None``: one sequence.

    Returns
    -------
    HMMPosterior
        Same fields as :func:`forward_backward`, equal to rounding within the limit
        below.

    See Also
    --------
    forward_backward : The log-space recursions, exact for any transitions.

    Notes
    -----
    Numeric limit. A step's sums run over the previous message in probability space,
    so states whose weight lies more than about 700 nats (float64; 87 in float32)
    below the step's best add nothing to them. That is exact to rounding unless a state
    can only be reached (or left) through such states, which takes (near-)zero
    transition probabilities *and* emission spreads of that size. Every step checks
    the masses it divides by against ``K² tiny / eps`` (about ``e^-667`` in float64,
    ``e^-65`` in float32 for ``K = 16``); a sequence with a step below it gets
    log-likelihood ``-inf`` (as hmmlearn's scaling implementation raises on
    underflow), so results are exact to rounding or refused, never silently
    approximate, and never NaN. :func:`forward_backward` has no such limit: with dense
    transitions no step comes near it, whatever the emissions (the tests use
    log-likelihoods ``1e4`` apart).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from jaxem.models.hmm_inference import scaled_forward_backward
    >>> log_initial = jnp.log(jnp.array([0.6, 0.4]))
    >>> log_transition = jnp.log(jnp.array([[0.7, 0.3], [0.2, 0.8]]))
    >>> log_emission = jnp.log(jnp.array([[0.9, 0.1], [0.2, 0.7], [0.1, 0.8]]))
    >>> post = scaled_forward_backward(log_initial, log_transition, log_emission)
    >>> print(round(float(post.log_likelihood), 4))
    -2.1754
    >>> print(np.round(np.asarray(post.transition_counts), 3))
    [[0.254 0.822]
     [0.028 0.896]]

    Emissions far beyond the exponential's range are no problem (float32 rounds
    ``log p - 1e4`` to about ``1e-3``, hence the coarser printing):

    >>> post = scaled_forward_backward(log_initial, log_transition, log_emission - 1e4)
    >>> print(round(float(post.log_likelihood), 2))
    -30002.18
    >>> print(np.round(np.asarray(post.smoothed), 2))
    [[0.87 0.13]
     [0.21 0.79]
     [0.07 0.93]]
    """
    log_initial, log_transition, log_emission, mask, starts = _prepare(
        log_initial, log_transition, log_emission, mask, starts
    )
    transition = jnp.exp(log_transition)
    initial = jnp.exp(log_initial)
    emission, shift = _scaled_emissions(log_emission)
    alpha_hat = _scaled_forward(initial, transition, emission, mask, starts)
    g = _scaled_backward(initial, transition, emission, mask, starts)

    # The sequential parts are done; the rest are products over all steps at once.
    matmul = functools.partial(jnp.matmul, precision=lax.Precision.HIGHEST)
    predicted = matmul(alpha_hat[:-1], transition)  # (alpha_hat_t A), t = 0..T-2
    # At a boundary the transition is 1 πᵀ: alpha_hat sums to one, so it predicts π.
    predicted = jnp.where(starts[1:, None], initial, predicted)
    # beta_t ∝ A g_{t+1} (π·g_{t+1} before a boundary), and 1 before a padded step
    # and at the last step.
    beta_next = jnp.where(starts[1:, None], matmul(g, initial)[:, None], matmul(g, transition.T))
    beta_hat = jnp.concatenate(
        [jnp.where(mask[1:, None], beta_next, 1.0), jnp.ones_like(initial)[None]]
    )

    # alpha_t = alpha_hat_t prod_{s <= t} c_s exp(shift_s): c_t is the mass the step
    # added before renormalising.
    total = jnp.concatenate(
        [jnp.sum(initial * emission[0])[None], jnp.sum(predicted * emission[1:], axis=1)]
    )
    log_total = jnp.where(mask, _safe_log(total) + shift, 0.0)
    log_likelihood = jnp.sum(log_total)

    joint = alpha_hat * beta_hat
    joint_total = jnp.sum(joint, axis=1, keepdims=True)
    smoothed = jnp.where(mask[:, None], joint / _positive_or_one(joint_total), 0.0)

    # Messages are exact to rounding except for entries that underflowed, whose
    # absolute error is at most about K tiny per product. A step's result then
    # stays exact to rounding while the masses it divides by (the forward step's,
    # the backward step's, and alpha_hat . beta_hat) exceed K² tiny / eps. Below that
    # only zero transitions meeting emission spreads of hundreds of nats lead; the
    # sequence is then refused (log-likelihood -inf, as hmmlearn's scaling
    # implementation raises on underflow) instead of answered inexactly.
    n_states = transition.shape[0]
    finfo = jnp.finfo(transition.dtype)
    resolvable = float(n_states**2 * finfo.tiny / finfo.eps)
    backward_total = jnp.sum(emission * beta_hat, axis=1)
    smallest = jnp.minimum(jnp.minimum(total, backward_total), joint_total[:, 0])
    unresolved = jnp.any(mask & (smallest < resolvable))
    log_likelihood = jnp.where(unresolved, -jnp.inf, log_likelihood)

    # xi_t[i, j] = alpha_hat_t[i] A[i, j] gamma_{t+1}[j] / pred_{t+1}[j] with
    # pred_{t+1} = alpha_hat_t A: one matmul over time, each pair summing to one.
    # pred >= tiny unless zero transitions starve a state; the clamp keeps the ratio
    # at most 1 / tiny even then.
    tiny = jnp.finfo(predicted.dtype).tiny
    ratio = jnp.where(predicted > 0, smoothed[1:] / jnp.maximum(predicted, tiny), 0.0)
    ratio = jnp.where(starts[1:, None], 0.0, ratio)  # boundary pairs are no transitions
    low, high, cap = _split_matmul(alpha_hat[:-1], ratio)
    counts = transition * low + (transition * high) * cap

    # Log messages from the exact log-emissions, not the floored scaled ones: states
    # far behind the best keep their finite log-weights, as in forward_backward.
    log_alpha_hat = (
        jnp.concatenate(
            [(log_initial + log_emission[0])[None], _safe_log(predicted) + log_emission[1:]]
        )
        - (shift + _finite_or_zero(_safe_log(total)))[:, None]
    )
    # Padding only trails: padded steps repeat the last valid message.
    last = jnp.maximum(jnp.sum(mask) - 1, 0)
    log_alpha_hat = jnp.where(mask[:, None], log_alpha_hat, log_alpha_hat[last])
    log_alpha = log_alpha_hat + jnp.cumsum(log_total)[:, None]
    # beta_t = (A g_{t+1}) exp(shift_{t+1}) G_{t+1} with g_t G_t = p(x_t | .) beta_t:
    # log G_t = log n_t + shift_{t+1} + log G_{t+1}, n_t the mass g_t was divided by.
    valid_next = jnp.concatenate([mask[1:], jnp.zeros((1,), bool)])
    shift_next = jnp.concatenate([shift[1:], jnp.zeros((1,), shift.dtype)])
    log_n = _safe_log(backward_total)
    log_g_scale = jnp.cumsum(
        jnp.where(mask, log_n + jnp.where(valid_next, shift_next, 0.0), 0.0)[::-1]
    )[::-1]
    log_g_scale_next = jnp.concatenate([log_g_scale[1:], jnp.zeros((1,), shift.dtype)])
    log_beta = (
        _safe_log(beta_hat) + jnp.where(valid_next, shift_next + log_g_scale_next, 0.0)[:, None]
    )
    return HMMPosterior(log_likelihood, log_alpha, log_beta, smoothed, counts)


# ------------------------------------------------------------------------- parallel


def _log_matmul(x, y):
    """``log(exp(x) @ exp(y))`` for stacks of square matrices, at matmul cost.

    Rows of ``x`` and columns of ``y`` are shifted by their maxima so that one BLAS
    product replaces the ``O(K^3)`` exponentials of an exact log-sum-exp. That is exact
    to rounding unless, for an entry, even its largest term ``x[i, k] + y[k, j]`` lies
    so far below ``max_k x[i, k] + max_k y[k, j]`` (about 70 nats in float32, 670 in
    float64) that eps-relative terms underflow. This only happens when (near-)zero
    transitions meet emission spreads of that size; such entries fall back to their
    largest term (the max-plus product), which is finite and within ``log K`` of the
    truth, instead of collapsing to ``-inf``.
    """
    row_max = _finite_or_zero(jnp.max(x, axis=-1, keepdims=True))
    col_max = _finite_or_zero(jnp.max(y, axis=-2, keepdims=True))
    scaled = jnp.matmul(jnp.exp(x - row_max), jnp.exp(y - col_max), precision=lax.Precision.HIGHEST)
    approx = jnp.log(scaled) + row_max + col_max
    largest = _max_plus_matmul(x, y)
    finfo = jnp.finfo(x.dtype)
    threshold = float(np.log(finfo.tiny) - np.log(finfo.eps))
    accurate = largest - row_max - col_max >= threshold
    return jnp.where(accurate, approx, largest)


def _max_plus_matmul(x, y):
    """``max_k x[..., i, k] + y[..., k, j]``; XLA fuses it without a ``K^3`` buffer."""
    product = jnp.max(x[..., :, :, None] + y[..., None, :, :], axis=-2)
    # Without the barrier XLA fuses this O(K^3) reduction into elementwise consumers
    # and recomputes it for every output element (measured ~10x slower).
    return lax.optimization_barrier(product)


def _scaled(matrices):
    """Split log-matrices into (entries with max 0, log-scale) to keep entries O(1).

    Products of thousands of steps reach magnitudes where float32 cannot resolve the
    O(1) differences between states; the scale carries the magnitude instead.
    """
    scale = _finite_or_zero(jnp.max(matrices, axis=(-2, -1)))
    return matrices - scale[..., None, None], scale


def _semiring_combine(product):
    """Associative operator on (scaled matrix, log-scale) pairs, ``earlier`` first."""

    def combine(earlier, later):
        matrix, scale = _scaled(product(earlier[0], later[0]))
        return matrix, earlier[1] + later[1] + scale

    return combine


def _step_matrices(log_initial, log_transition, log_emission, mask, starts):
    """``E_t[i, j] = log A[i, j] + log p(x_t | j)`` for ``t >= 1``; identity if padded,
    ``log π_j + log p(x_t | j)`` for every ``i`` at a sequence start."""
    n_states = log_transition.shape[0]
    step_transition = jnp.where(starts[1:, None, None], log_initial[None, None, :], log_transition)
    steps = step_transition + log_emission[1:, None, :]
    log_eye = _log_eye(n_states, log_transition.dtype)
    return jnp.where(mask[1:, None, None], steps, log_eye)


def _prefix_rows(elements, product):
    """First rows of the prefix products of ``elements`` along axis ``-3``.

    Every row of each first element is the same message, so each prefix product also
    has equal rows. Returns the rows (without their log-scale) and the log-scales.
    """
    time_axis = elements.ndim - 3
    prefix, scale = lax.associative_scan(
        _semiring_combine(product), _scaled(elements), axis=time_axis
    )
    return prefix[..., 0, :], scale


def _forward_elements(log_initial, log_transition, log_emission, mask, starts):
    """``[a_1, E_2, ..., E_T]`` with ``a_1`` broadcast to every row."""
    n_states = log_initial.shape[0]
    first = jnp.broadcast_to(log_initial + log_emission[0], (1, n_states, n_states))
    steps = _step_matrices(log_initial, log_transition, log_emission, mask, starts)
    return jnp.concatenate([first, steps])


@jax.jit
def parallel_forward_backward(
    log_initial, log_transition, log_emission, mask=None, starts=None
) -> HMMPosterior:
    """Forward-backward smoothing in ``O(log T)`` depth with ``associative_scan``.

    Forward messages are prefix products and backward messages suffix products of the
    per-step matrices ``E_t[i, j] = log A[i, j] + log p(x_t | j)`` in the log semiring
    (Hassan, Särkkä & García-Fernández, 2021). Each partial product is stored as a
    matrix with maximum 0 plus a log-scale, so long sequences keep full precision.
    The work is ``O(T K^3)`` (batched matmuls) against ``O(T K^2)`` for
    :func:`forward_backward`.

    Parameters
    ----------
    log_initial : Array
        ``(K,)`` initial-state log-probabilities.
    log_transition : Array
        ``(K, K)`` transition log-probabilities, rows are from-states.
    log_emission : Array
        ``(T, K)`` emission log-likelihoods ``log p(x_t | z_t = k)``.
    mask : Array, optional
        ``(T,)`` bool, ``True`` on valid steps; padding may only trail the valid steps.
    starts : Array, optional
        ``(T,)`` bool, ``True`` on the first step of every sequence packed after
        another in the row (see the module's docstring); ``None``: one sequence.

    Returns
    -------
    HMMPosterior
        Same fields as :func:`forward_backward`, equal up to rounding.

    Notes
    -----
    Log-semiring products go through max-shifted exponentials and a matmul. In the
    extreme case where an entry's terms all lie ~70 nats (float32) or ~670 nats
    (float64) below the row/column maxima of its factors, which needs (near-)zero
    transition probabilities together with emission spreads of that size, that entry
    falls back to its largest term and may be off by at most ``log K``. Prefer
    :func:`forward_backward` for such models.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from jaxem.models.hmm_inference import parallel_forward_backward
    >>> log_initial = jnp.log(jnp.array([0.6, 0.4]))
    >>> log_transition = jnp.log(jnp.array([[0.7, 0.3], [0.2, 0.8]]))
    >>> log_emission = jnp.log(jnp.array([[0.9, 0.1], [0.2, 0.7], [0.1, 0.8]]))
    >>> post = parallel_forward_backward(log_initial, log_transition, log_emission)
    >>> print(round(float(post.log_likelihood), 4))
    -2.1754
    >>> print(np.round(np.asarray(post.transition_counts), 3))
    [[0.254 0.822]
     [0.028 0.896]]
    """
    log_initial, log_transition, log_emission, mask, starts = _prepare(
        log_initial, log_transition, log_emission, mask, starts
    )
    n_states = log_initial.shape[0]
    dtype = log_initial.dtype

    forward = _forward_elements(log_initial, log_transition, log_emission, mask, starts)
    # beta_t = E_{t+1} ... E_T 1. Transposing turns this suffix product into the prefix
    # product J E_T^T ... E_{t+1}^T over reversed time (J = all-ones, log J = 0), whose
    # rows are all beta_t: one scan then handles both directions.
    ones = jnp.zeros((1, n_states, n_states), dtype)
    backward = jnp.concatenate([ones, jnp.swapaxes(forward[:0:-1], -1, -2)])
    rows, scale = _prefix_rows(jnp.stack([forward, backward]), _log_matmul)
    alpha_rows, alpha_scale = rows[0], scale[0]
    beta_rows, beta_scale = rows[1, ::-1], scale[1, ::-1]

    log_alpha = alpha_rows + alpha_scale[:, None]
    log_alpha_hat, last_norm = _normalize(alpha_rows)
    log_likelihood = last_norm[-1] + alpha_scale[-1]
    # Padding only trails, so an all-padding sequence is the only one with no mask[0].
    log_likelihood = jnp.where(mask[0], log_likelihood, 0.0)
    log_beta = beta_rows + beta_scale[:, None]
    log_beta_hat, _ = _normalize(beta_rows)

    smoothed = _smoothed(log_alpha_hat, log_beta_hat, mask)
    pairs = _pair_posterior(log_alpha_hat[:-1], log_transition, log_emission[1:] + log_beta_hat[1:])
    # Padding only trails, so the pair (t, t + 1) is valid exactly when t + 1 is; a
    # pair across a boundary is no transition of A.
    inside = mask[1:] & ~starts[1:]
    counts = jnp.sum(jnp.where(inside[:, None, None], pairs, 0.0), axis=0)
    return HMMPosterior(log_likelihood, log_alpha, log_beta, smoothed, counts)


@jax.jit
def parallel_viterbi(
    log_initial, log_transition, log_emission, mask=None, starts=None
) -> tuple[Array, Array]:
    """Most probable state path in ``O(log T)`` depth.

    Max-messages are prefix products in the max-plus semiring; back-pointers then
    follow from them independently per step, and the path is a suffix scan of the
    composition of back-pointer maps ``{0..K-1} -> {0..K-1}`` (composition of index
    arrays is associative). Unlike decoding by per-step max-marginals, this always
    returns one consistent path, even when several paths tie.

    Parameters
    ----------
    log_initial : Array
        ``(K,)`` initial-state log-probabilities.
    log_transition : Array
        ``(K, K)`` transition log-probabilities, rows are from-states.
    log_emission : Array
        ``(T, K)`` emission log-likelihoods ``log p(x_t | z_t = k)``.
    mask : Array, optional
        ``(T,)`` bool, ``True`` on valid steps; padding may only trail the valid steps.
    starts : Array, optional
        ``(T,)`` bool, ``True`` on the first step of every sequence packed after
        another in the row (see the module's docstring); ``None``: one sequence.

    Returns
    -------
    states : Array
        ``(T,)`` int32 MAP states; padded steps hold 0. Ties go to the lowest index, as
        in :func:`viterbi`, but rounding may break near-ties differently.
    log_prob : Array
        Scalar ``max_z log p(x_{1:L}, z_{1:L})``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from jaxem.models.hmm_inference import parallel_viterbi
    >>> log_initial = jnp.log(jnp.array([0.6, 0.4]))
    >>> log_transition = jnp.log(jnp.array([[0.7, 0.3], [0.2, 0.8]]))
    >>> log_emission = jnp.log(jnp.array([[0.9, 0.1], [0.2, 0.7], [0.1, 0.8]]))
    >>> states, log_prob = parallel_viterbi(log_initial, log_transition, log_emission)
    >>> print(states, round(float(log_prob), 4))
    [0 1 1] -2.6231
    """
    log_initial, log_transition, log_emission, mask, starts = _prepare(
        log_initial, log_transition, log_emission, mask, starts
    )
    n_states = log_initial.shape[0]
    identity = jnp.arange(n_states, dtype=jnp.int32)

    forward = _forward_elements(log_initial, log_transition, log_emission, mask, starts)
    delta_rows, delta_scale = _prefix_rows(forward, _max_plus_matmul)
    log_prob = jnp.max(delta_rows[-1]) + delta_scale[-1]
    log_prob = jnp.where(mask[0], log_prob, 0.0)

    # pointers[t, j]: best state at t given state j at t + 1; identity into padding.
    scores = delta_rows[:-1, :, None] + log_transition
    pointers = jnp.argmax(scores, axis=1).astype(jnp.int32)
    # At a boundary every to-state points back to the previous sequence's best end.
    best_end = jnp.argmax(delta_rows[:-1], axis=1).astype(jnp.int32)
    pointers = jnp.where(starts[1:, None], best_end[:, None], pointers)
    pointers = jnp.where(mask[1:, None], pointers, identity)
    last_state = jnp.argmax(delta_rows[-1]).astype(jnp.int32)
    # The last map is constant, so the suffix composition at t is the whole path's z_t.
    maps = jnp.concatenate([pointers, jnp.full((1, n_states), last_state)])

    def compose(later, earlier):
        # (earlier o later)[j] = earlier[later[j]]
        # promise_in_bounds: indices are states; it also keeps compilation fast.
        return jnp.take_along_axis(earlier, later, axis=-1, mode="promise_in_bounds")

    paths = lax.associative_scan(compose, maps, reverse=True)
    states = paths[:, 0]
    return jnp.where(mask, states, 0), log_prob


# ------------------------------------------------------------------------- blocked


def _default_block_size(n_moves):
    """About ``sqrt(T)`` steps per block, the measured optimum on a 2-core CPU."""
    return max(1, int(round(float(np.sqrt(max(n_moves, 1))))))


#: Rows of a block product may lag its largest entry by this many nats before being
#: rescaled on their own (each rescaling adds a rounding error to the row's offset).
_LAG = 10.0


def _block_products(initial, transition, log_emission, valid, start):
    """Directions of the products ``P_b = M_{first} ... M_{last}`` of every block.

    ``M_t = A diag(p(x_t | .))`` (``1 πᵀ diag(p(x_t | .))`` at a sequence start);
    padded steps are the identity. Inputs are in step
    layout ``(L, B, ...)``. Returns ``(P_hat, R)`` with ``P_b[i, j] ∝ P_hat[i, j]
    exp(R[i])``: each live row of ``P_hat`` has maximum 1 and ``R`` ``(B, K)`` holds the
    rows' relative log-scales (messages only need the direction, so the common scale
    is dropped).

    Emissions are exponentiated relative to the step's best state and floored at
    ``tiny K e^(2 + _LAG)`` (about ``e^-72`` in float32, ``e^-690`` in float64): a row
    of the running product then never underflows to zero while its predicted mass is
    positive.
    """
    _, n_blocks, n_states = log_emission.shape
    dtype = log_emission.dtype
    floor = float(np.log(jnp.finfo(dtype).tiny) + np.log(n_states) + 2.0 + _LAG)
    shift = _finite_or_zero(jnp.max(log_emission, axis=-1))
    scaled = jnp.exp(jnp.maximum(log_emission - shift[..., None], floor))

    # The carry X holds the product up to row scalings; dividing by them is deferred
    # to the next step, where it fuses with the emission scaling. Rows are divided by
    # the block's largest entry, so their relative sizes stay exact, unless a row lags
    # it by more than e^_LAG: that row is divided by its own maximum and the log-ratio
    # goes to its offset. Rows thus start each step with maximum in [e^-_LAG, 1].
    def step(carry, inputs):
        x, offset = carry
        b, ok, new_sequence = inputs
        row_max = jnp.max(x, axis=-1)
        top = jnp.max(row_max, axis=-1, keepdims=True)
        top = jnp.where(top > 0, top, 1.0)
        lagging = (row_max < top * np.exp(-_LAG)) & (row_max > 0)
        divisor = jnp.where(lagging, row_max, top)
        # Rescale before the emissions, which may be as small as e^floor.
        # X 1 πᵀ at a boundary: every row's mass moves to π.
        moved = jnp.where(
            new_sequence[:, None, None],
            jnp.sum(x, axis=-1, keepdims=True) * initial,
            jnp.matmul(x, transition),
        )
        new = (moved * (1.0 / divisor)[..., None]) * b[:, None, :]
        lag = jnp.where(lagging, jnp.log(jnp.where(lagging, row_max / top, 1.0)), 0.0)
        lag = jnp.where(row_max > 0, lag, -jnp.inf)
        new_carry = (
            jnp.where(ok[:, None, None], new, x),
            jnp.where(ok[:, None], offset + lag, offset),
        )
        return new_carry, None

    eye = jnp.broadcast_to(jnp.eye(n_states, dtype=dtype), (n_blocks, n_states, n_states))
    init = (eye, jnp.zeros((n_blocks, n_states), dtype))
    (x, offset), _ = lax.scan(step, init, (scaled, valid, start), unroll=4)
    row_max = jnp.max(x, axis=-1)
    live = row_max > 0
    safe_max = jnp.where(live, row_max, 1.0)
    offset = offset + jnp.where(live, jnp.log(safe_max), -jnp.inf)
    offset = offset - _finite_or_zero(jnp.max(offset, axis=-1))[:, None]
    return x / safe_max[..., None], offset


def _max_normalize(log_p):
    """Shift log-weights to maximum 0 (all ``-inf`` stays); returns them and the shift."""
    top = jnp.max(log_p, axis=-1)
    return log_p - _finite_or_zero(top)[..., None], top


def _lse0(log_p):
    """``logsumexp`` over the last axis with ``-inf`` replaced by 0 (for differences)."""
    return _finite_or_zero(jax.nn.logsumexp(log_p, axis=-1))


@functools.partial(jax.jit, static_argnames=("block_size",))
def blocked_forward_backward(
    log_initial, log_transition, log_emission, mask=None, block_size=None, starts=None
) -> HMMPosterior:
    """Forward-backward smoothing in blocks: about ``5 sqrt(T)`` sequential steps.

    Time is cut into ``B`` blocks of ``L`` steps (the end padded with masked steps, which
    are identity transitions). (1) For all blocks at once, a ``lax.scan`` over the ``L``
    in-block steps multiplies the step matrices ``M_t = A diag(p(x_t | .))`` in
    probability space, renormalised every step by its largest entry (a row lagging it
    by more than ``e^10`` is renormalised on its own, its log-offset kept apart).
    (2) Two short scans over the ``B`` blocks carry ``K``-vectors through these
    products: the direction of the forward message entering every block and of the
    backward message leaving it. (3) For all blocks at once, a scan over the ``L``
    steps runs the exact forward and backward recursions from those boundary
    messages, with emissions added in log space and messages renormalised every step;
    their log-normalisers are chained across blocks (in total mass, as in
    :func:`forward_backward`), so the log-likelihood and the messages' scales never
    depend on the block products' scales. Smoothed marginals and expected transition
    counts then cost a few vectorised passes and one ``(K, T) @ (T, K)`` matmul.

    The work is ``O(T K^3)`` (phase 1) against ``O(T K^2)`` for :func:`forward_backward`,
    but in ``3 L + 2 B`` scan steps of batched matmuls instead of ``2 T`` tiny ones: it
    pays off on a CPU for a few long sequences, where the sequential scan is bound by
    per-step overhead; with many sequences or restarts batched together the sequential
    scan is already efficient (see the Notes).

    Parameters
    ----------
    log_initial : Array
        ``(K,)`` initial-state log-probabilities.
    log_transition : Array
        ``(K, K)`` transition log-probabilities, rows are from-states; rows must be
        distributions (sum to one), exact zeros are allowed.
    log_emission : Array
        ``(T, K)`` emission log-likelihoods ``log p(x_t | z_t = k)``.
    mask : Array, optional
        ``(T,)`` bool, ``True`` on valid steps; padding may only trail the valid steps.
    block_size : int, optional
        Steps per block ``L`` (static: each value compiles anew). Default
        ``round(sqrt(T - 1))``, the measured optimum.
    starts : Array, optional
        ``(T,)`` bool, ``True`` on the first step of every sequence packed after
        another in the row (see the module's docstring); ``None``: one sequence.

    Returns
    -------
    HMMPosterior
        Same fields as :func:`forward_backward`, equal up to rounding within the limits
        below.

    See Also
    --------
    forward_backward : Sequential, exact in log space for any emission spread.
    parallel_forward_backward : ``O(log T)`` depth, for accelerators.

    Notes
    -----
    Numeric limits. Messages are multiplied in probability space, so within one step
    the states whose (message + emission) log-weight lies more than about 87 nats
    (float32; 708 in float64) below the best state's are dropped from that matrix or
    vector product. In phase 1 emissions are also floored at about ``e^-72`` (float32;
    ``e^-690`` in float64) relative to the step's best, so that no row of a block
    product underflows to zero. When transitions are dense this is exact to rounding
    even with huge emission spreads (the dropped terms are below float resolution). It
    is *not* exact when (near-)zero transition probabilities meet emission spreads
    beyond that range: then a state reachable only through dropped states is treated
    as unreachable for that step. The result stays finite and NaN-free and the
    expected counts still sum to the number of valid pairs, but the log-likelihood and
    posteriors are approximate. Measured in float32 on T = 10,000, K = 100, emissions
    uniform in ``±1e4`` (``|log p| ≈ 1e8``): with a dense ``A`` the log-likelihood
    matches the float64 reference to 2 nats (:func:`forward_backward`: 2 nats); with
    40% of ``A`` exactly zero it is finite but ``4.2e5`` nats (``4e-3`` relative) too
    low and some posteriors are wrong (:func:`forward_backward`: 10 nats). Use
    :func:`forward_backward` for such models. In ordinary float32 cases (T = 100,000,
    K = 16) the accuracy matches :func:`forward_backward`'s: smoothed marginals within
    ``6e-7`` and the log-likelihood within ``4e-4`` of float64.

    Timing (2-core CPU, float32, K = 16, jit): one sequence of T = 100,000 runs about
    3x faster than :func:`forward_backward`; 100 sequences of T = 1,000, or 8 vmapped
    restarts of T = 100,000, gain only 1.1-1.5x, because batching already amortises
    the sequential scan's per-step overhead while the blocked one does ``K`` times
    more arithmetic.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from jaxem.models.hmm_inference import blocked_forward_backward
    >>> log_initial = jnp.log(jnp.array([0.6, 0.4]))
    >>> log_transition = jnp.log(jnp.array([[0.7, 0.3], [0.2, 0.8]]))
    >>> log_emission = jnp.log(jnp.array([[0.9, 0.1], [0.2, 0.7], [0.1, 0.8]]))
    >>> post = blocked_forward_backward(log_initial, log_transition, log_emission)
    >>> print(round(float(post.log_likelihood), 4))
    -2.1754
    >>> print(np.round(np.asarray(post.smoothed), 3))
    [[0.865 0.135]
     [0.211 0.789]
     [0.072 0.928]]

    Any block size gives the same result, padding included:

    >>> padded = jnp.concatenate([log_emission, jnp.zeros((4, 2))])
    >>> mask = jnp.arange(7) < 3
    >>> post = blocked_forward_backward(
    ...     log_initial, log_transition, padded, mask, block_size=2
    ... )
    >>> print(round(float(post.log_likelihood), 4))
    -2.1754
    >>> print(np.round(np.asarray(post.transition_counts), 3))
    [[0.254 0.822]
     [0.028 0.896]]
    """
    log_initial, log_transition, log_emission, mask, starts = _prepare(
        log_initial, log_transition, log_emission, mask, starts
    )
    n_steps, n_states = log_emission.shape
    dtype = log_initial.dtype
    n_moves = n_steps - 1
    length = _default_block_size(n_moves) if block_size is None else int(block_size)
    if length < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    length = min(length, max(n_moves, 1))
    n_blocks = -(-max(n_moves, 1) // length)
    padding = n_blocks * length - n_moves

    transition = jnp.exp(log_transition)
    initial = jnp.exp(log_initial)
    # Step layout (L, B, ...): entry [l, b] is step s = 1 + b L + l (M_s maps t = s - 1
    # to s), so the scans over in-block steps read and write whole slices.
    log_e = jnp.pad(log_emission[1:], ((0, padding), (0, 0)))
    valid = jnp.pad(mask[1:], (0, padding))
    start = jnp.pad(starts[1:], (0, padding))
    log_e, valid, start = (
        jnp.swapaxes(x.reshape((n_blocks, length) + x.shape[1:]), 0, 1)
        for x in (log_e, valid, start)
    )

    def to_time(x):
        """``(L, B, ...)`` step layout to ``(B L, ...)`` time order."""
        return jnp.swapaxes(x, 0, 1).reshape((n_blocks * length,) + x.shape[2:])

    # (1) Direction of every block's product of step matrices, all blocks at once.
    p_hat, offset = _block_products(initial, transition, log_e, valid, start)

    # (2) Directions of the messages at block boundaries, sequentially over blocks.
    # Unlike the in-block normalisers, the first one is kept on an all-padding sequence
    # (log_alpha is then log_initial throughout, as in forward_backward).
    first_hat, first_scale = _max_normalize(log_initial + log_emission[0])

    def across_forward(hat, block):
        p, off = block
        weights, _ = _max_normalize(hat + off)
        new_hat, _ = _max_normalize(jnp.log(jnp.exp(weights) @ p))
        return new_hat, hat

    _, in_hat = lax.scan(across_forward, first_hat, (p_hat, offset))

    def across_backward(hat, block):
        p, off = block
        new_hat, _ = _max_normalize(jnp.log(p @ jnp.exp(hat)) + off)
        return new_hat, hat

    zeros = jnp.zeros(n_states, dtype)
    _, out_hat = lax.scan(across_backward, zeros, (p_hat, offset), reverse=True)

    # (3) Messages inside every block, in log space, all blocks at once.
    def inside_forward(hat, inputs):
        e, ok, new_sequence = inputs
        weights = jnp.exp(hat)
        # A boundary's transition 1 πᵀ predicts π times the message's mass.
        pred = jnp.where(
            new_sequence[:, None],
            jnp.sum(weights, axis=-1, keepdims=True) * initial,
            weights @ transition,
        )
        new_hat, norm = _max_normalize(jnp.log(pred) + e)
        new_hat = jnp.where(ok[:, None], new_hat, hat)
        norm = jnp.where(ok, norm, 0.0)
        return new_hat, (new_hat, norm, weights, pred)

    _, (alpha_hat, alpha_norm, weights, pred) = lax.scan(
        inside_forward, in_hat, (log_e, valid, start)
    )

    def inside_backward(hat, inputs):
        e, ok, new_sequence = inputs
        weights, top = _max_normalize(hat + e)
        # Before a boundary (transition 1 πᵀ) beta is π·(e β) for every state.
        moved = jnp.where(
            new_sequence[:, None],
            (jnp.exp(weights) @ initial)[:, None],
            jnp.exp(weights) @ transition.T,
        )
        new_hat, norm = _max_normalize(jnp.log(moved))
        new_hat = jnp.where(ok[:, None], new_hat, hat)
        norm = jnp.where(ok, _finite_or_zero(top) + norm, 0.0)
        norm = jnp.where(jnp.isfinite(top), norm, -jnp.inf)
        return new_hat, (new_hat, norm)

    # beta_hat[l, b] is the message at time s - 1 = b L + l.
    _, (beta_hat, beta_norm) = lax.scan(
        inside_backward, out_hat, (log_e, valid, start), reverse=True
    )

    # Scales chain the exact in-block normalisers: block b starts where block b - 1
    # ended, in total mass p(x_{1:t}) (forward) and in sum_k alpha_t beta_t (backward).
    forward_jump = _lse0(alpha_hat[-1, :-1]) - _lse0(in_hat[1:])
    forward_step = jnp.sum(alpha_norm, axis=0)[:-1] + forward_jump
    in_scale = jnp.cumsum(jnp.concatenate([first_scale[None], forward_step]))
    backward_jump = _lse0(in_hat[1:] + beta_hat[0, 1:]) - _lse0(in_hat[1:] + out_hat[:-1])
    backward_step = jnp.sum(beta_norm, axis=0)[1:] + backward_jump
    out_scale = jnp.cumsum(jnp.concatenate([backward_step, jnp.zeros(1, dtype)])[::-1])[::-1]
    alpha_scale = in_scale + jnp.cumsum(alpha_norm, axis=0)
    beta_scale = out_scale + jnp.cumsum(beta_norm[::-1], axis=0)[::-1]

    log_alpha = jnp.concatenate(
        [(first_hat + first_scale)[None], to_time(alpha_hat + alpha_scale[..., None])]
    )[:n_steps]
    log_beta = jnp.concatenate([to_time(beta_hat + beta_scale[..., None]), zeros[None]])[:n_steps]
    if n_steps == 1:
        last_hat, last_scale = first_hat, first_scale
    else:
        last_hat = alpha_hat[(n_steps - 2) % length, (n_steps - 2) // length]
        last_scale = alpha_scale[(n_steps - 2) % length, (n_steps - 2) // length]
    log_likelihood = jax.nn.logsumexp(last_hat) + last_scale
    log_likelihood = jnp.where(mask[0], log_likelihood, 0.0)

    def posterior(log_joint, ok):
        joint = jnp.exp(_max_normalize(log_joint)[0])
        total = jnp.sum(joint, axis=-1, keepdims=True)
        return jnp.where(ok[..., None], joint / jnp.where(total > 0, total, 1.0), 0.0)

    first_gamma = posterior(first_hat + beta_hat[0, 0], mask[0])
    beta_next = jnp.concatenate([beta_hat[1:], out_hat[None]])
    gamma = posterior(alpha_hat + beta_next, valid)
    smoothed = jnp.concatenate([first_gamma[None], to_time(gamma)])[:n_steps]

    # xi_t[i, j] = u_t[i] A[i, j] gamma_{t+1}[j] / pred_{t+1}[j], where u_t is the message
    # forward step t + 1 started from and pred_{t+1} = u_t A: one matmul over time, and
    # each pair posterior sums to one even across block boundaries.
    # pred >= tiny unless (near-)zero transitions starve a state; the clamp keeps the
    # ratio finite (at most 1 / tiny) even then.
    tiny = jnp.finfo(dtype).tiny
    ratio = jnp.where(pred > 0, gamma / jnp.maximum(pred, tiny), 0.0)
    ratio = jnp.where(start[..., None], 0.0, ratio)  # boundary pairs are no transitions
    flat_steps = (n_blocks * length, n_states)
    low, high, cap = _split_matmul(weights.reshape(flat_steps), ratio.reshape(flat_steps))
    counts = transition * low + (transition * high) * cap
    return HMMPosterior(log_likelihood, log_alpha, log_beta, smoothed, counts)

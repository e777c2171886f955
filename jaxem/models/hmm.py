"""Hidden Markov models over any component family, fitted by Baum-Welch.

The data unit is a row of sequences. Data is the pytree ``(observations, mask)``
with ``observations`` of shape ``(S, T_max, ...)`` and ``mask`` ``(S, T_max)``: 1 on
valid steps, 0 on the padding that ends a row, and 2 on the first step of a sequence
packed after another in the same row (see :func:`pad_sequences`, one sequence per row,
and :func:`pack_sequences`, several sequences per row with little padding). Or
``(observations, mask, log_prior)`` with per-step log prior weights over the states
``(S, T_max, K)`` (states known at some steps; see :class:`HMM`).
The engine chunks over rows and sample weights are per row.

A sequence boundary inside a row is exactly a transition matrix whose rows all equal
the start distribution, so a packed row's posteriors, Viterbi paths and statistics are
those of its independent sequences, and its log-likelihood is their sum
(:mod:`jaxem.models.hmm_inference`).

The E-step computes the emission log-densities of a whole chunk at once (the
family's ``log_densities``), runs forward-backward (:mod:`jaxem.models.hmm_inference`)
on every sequence with ``vmap``, and returns the additive statistics

    (Σ w γ₁, Σ w ξ, Σ w γ_t, the family's statistics of the frames weighted by w γ_t)

and ``Σ w log p(x_seq)``. The M-step sets the start and transition probabilities
with hmmlearn's Dirichlet pseudo-counts and hands the emission statistics to the family.

Start and transition probabilities are stored as probabilities, not logs: zeros
(forbidden starts or transitions, e.g. left-right models) are then finite
parameters, stay zero under EM as in hmmlearn, and the engine's finiteness check
is not fooled by ``log 0 = -inf``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxem import ops
from jaxem.contract import Chunks, Family, Model, check_assignment, finely_padded_rows
from jaxem.models import hmm_inference

__all__ = [
    "HMM",
    "HMMParams",
    "HMMStats",
    "HMMHyper",
    "hmm",
    "pad_sequences",
    "pack_sequences",
    "known_states",
    "ALGORITHMS",
    "INIT_TRANSITIONS",
]

#: Forward-backward algorithms: sequential scans in probability space with per-step
#: scaling (the default), sequential scans in log space, ``lax.associative_scan``, or
#: blocked (two-level) scans.
ALGORITHMS = ("scaled", "scan", "associative", "blocked")
#: Initial start / transition probabilities.
INIT_TRANSITIONS = ("random", "uniform", "dirichlet")


class HMMParams(NamedTuple):
    """Start probabilities ``(K,)``, transition matrix ``(K, K)`` (rows are from-states)
    and the family's emission parameters."""

    startprob: jax.Array
    transmat: jax.Array
    emissions: Any


class HMMStats(NamedTuple):
    """Additive Baum-Welch statistics (all weighted by the sequence weights).

    Attributes
    ----------
    initial : (K,) Σ γ₁
    transitions : (K, K) Σ_t ξ_t
    counts : (K,) Σ_t γ_t
    emission_stats : the family's statistics of the frames weighted by γ (by default
        the feature sums ``(K, F)`` Σ_t γ_tᵀ φ(x_t))
    """

    initial: jax.Array
    transitions: jax.Array
    counts: jax.Array
    emission_stats: Any


class HMMHyper(NamedTuple):
    """Numeric hyperparameters: the family's and the Dirichlet priors."""

    family: Any
    startprob_prior: jax.Array
    transmat_prior: jax.Array


def _normalize_rows(counts):
    """hmmlearn's ``normalize``: divide by the sum along the last axis; zero sums stay 0."""
    total = jnp.sum(counts, axis=-1, keepdims=True)
    return counts / jnp.where(total == 0, 1, total)


def _log(p):
    return jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1)), -jnp.inf)


@dataclasses.dataclass(frozen=True)
class HMM(Model):
    """Hidden Markov model with ``n_states`` states emitting from one family.

    Parameters
    ----------
    family : Family
        Emission family, e.g. ``jaxem.gaussian("diag")``, ``jaxem.categorical(4)``,
        ``jaxem.poisson()``, ``jaxem.bernoulli()``. For hmmlearn's Gaussian M-step use
        ``jaxem.gaussian(..., reg_covar=0.0, map_prior=True)``. The family draws the
        initial emission parameters (:meth:`~jaxem.contract.Family.initial_params`,
        hmmlearn's emission init for the Gaussian, categorical and Poisson ones).
    n_states : int
        Number of hidden states.
    algorithm : {"scaled", "scan", "associative", "blocked"}
        Forward-backward. ``"scaled"`` (default):
        :func:`~jaxem.models.hmm_inference.scaled_forward_backward`, sequential
        ``lax.scan`` passes in probability space with per-step scaling, magnitudes kept
        in log space (O(T K²) work; about 2x faster per EM iteration than ``"scan"``
        on a CPU); equal to ``"scan"`` to rounding, except that it refuses
        (log-likelihood ``-inf``) a sequence where zero transitions meet emission
        spreads beyond ~650 nats (float64; ~65 in float32). ``"scan"``:
        :func:`~jaxem.models.hmm_inference.forward_backward`, the same passes in log
        space, exact for any transitions. ``"associative"``: ``lax.associative_scan``
        (O(log T) depth, O(T K³) work; for accelerators). ``"blocked"``:
        :func:`~jaxem.models.hmm_inference.blocked_forward_backward` (about
        ``5 sqrt(T)`` sequential steps, O(T K³) work, with the same limit as
        ``"scaled"``). Decoding uses the sequential Viterbi except for "associative".
    update : str
        Parameters updated by the M-step, hmmlearn's letters: ``"s"`` start
        probabilities, ``"t"`` transitions, and the family's
        :attr:`~jaxem.contract.Family.update_letters` (``"m"`` means and ``"c"``
        covariances for Gaussian, ``"e"`` categorical and Bernoulli, ``"l"`` Poisson,
        ``"w"`` the sub-component weights of :class:`~jaxem.families.GMM`).
        The others keep their values (see :meth:`~jaxem.contract.Family.keep_fixed`).
    init_transitions : {"random", "uniform", "dirichlet"}
        Start and transition probabilities at init: normalised uniform draws,
        uniform, or hmmlearn's Dirichlet(1/K) draws (whose rejection sampler makes
        the compiled program several seconds slower to build).
    startprob_prior, transmat_prior : float or array
        Dirichlet concentrations; the M-step adds ``prior - 1`` pseudo-counts and
        clips at 0 (hmmlearn). 1 is maximum likelihood.
    fail_on_underflow : bool
        Emulate hmmlearn's ``implementation="scaling"``: a sequence with a step whose
        emission probabilities all underflow in float64 (log-density below -745.13
        in every state) has log-likelihood ``-inf``, so a fit fails as hmmlearn's
        does. False (default): every algorithm keeps magnitudes in log space and
        needs no such limit.
    assignment : {"soft", "hard", "stochastic"}
        ``"soft"`` (default): Baum-Welch. ``"hard"``: Viterbi training, the counts of
        every sequence's most probable path; the monitored objective is the mean
        log-probability of those paths (the classification log-likelihood, which
        never decreases). ``"stochastic"``: the counts of a path drawn from the
        posterior by forward-filtering backward-sampling
        (:func:`~jaxem.models.hmm_inference.sample_path`), one key per row from
        the engine; every restart runs ``max_iter`` iterations and the result is the
        M-step of the statistics averaged over their second half (see
        :meth:`jaxem.contract.Model.stochastic`).

    Notes
    -----
    States known at some time steps (semi-supervised HMMs): pass the data as
    ``(observations, mask, log_prior)`` with ``log_prior`` ``(S, T_max, K)`` a log
    weight of every state at every step, added to the emission log-densities in
    forward-backward and Viterbi. A known state is 0 there and ``-inf`` elsewhere
    (the posteriors keep it with probability one), an unknown step 0 everywhere;
    :func:`known_states` builds it from state indices (-1 unknown). The monitored
    log-likelihood is then ``log Σ_z Π_t q_t(z_t) p(x, z)``: that of the
    observations and the known states.

    Convergence follows hmmlearn's ``ConvergenceMonitor``: a restart stops when the
    log-likelihood *increase* is below ``tol`` (a decrease also stops it). The engine
    tracks the mean log-likelihood per unit of row weight, so to reproduce
    hmmlearn's ``tol`` on the total log-likelihood pass ``tol / total_weight``
    (``tol / n_rows`` without weights; a packed row's log-likelihood is the sum of
    its sequences'), as :class:`jaxem.GaussianHMM` does.

    The engine sizes its chunks of rows by :meth:`row_width` (``T_max × n_states``
    per row), so one E-step's memory stays bounded.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> import jaxem
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 1, (60, 1)), rng.normal(8, 1, (60, 1))])
    >>> obs, mask = jaxem.pad_sequences(X.astype(np.float32), [70, 50])
    >>> model = jaxem.hmm(jaxem.gaussian("diag"), n_states=2)
    >>> data = (jnp.asarray(obs), jnp.asarray(mask))
    >>> result = jaxem.fit(model, data, key=jax.random.key(0), n_restarts=4)
    >>> print(np.sort(np.asarray(result.params.emissions.means[:, 0])).round(0))
    [0. 8.]
    >>> states, log_prob = model.decode(result.params, obs, mask)
    >>> states.shape
    (2, 70)

    The first step of each sequence known to be in state 1:

    >>> labels = np.full(obs.shape[:2], -1)
    >>> labels[:, 0] = 1
    >>> known = (jnp.asarray(obs), jnp.asarray(mask), jaxem.known_states(labels, 2))
    >>> posterior = model.posteriors(result.params, *known)
    >>> print(np.asarray(posterior.smoothed[:, 0]).round(3))
    [[0. 1.]
     [0. 1.]]
    """

    family: Family
    n_states: int
    algorithm: str = "scaled"
    update: str = "stmcelw"
    init_transitions: str = "random"
    startprob_prior: float = dataclasses.field(default=1.0, compare=False)
    transmat_prior: float = dataclasses.field(default=1.0, compare=False)
    fail_on_underflow: bool = False
    assignment: str = "soft"

    outputs: ClassVar[tuple[str, ...]] = ("log_prob", "posterior", "viterbi")

    def __post_init__(self):
        if not isinstance(self.n_states, (int, np.integer)) or self.n_states < 1:
            raise ValueError(f"n_states must be a positive int, got {self.n_states!r}.")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}.")
        if self.init_transitions not in INIT_TRANSITIONS:
            raise ValueError(
                f"init_transitions must be one of {INIT_TRANSITIONS}, "
                f"got {self.init_transitions!r}."
            )
        check_assignment(self.assignment)

    # -- contract ---------------------------------------------------------------------------
    def hyper(self, dtype) -> HMMHyper:
        return HMMHyper(
            family=self.family.hyper(dtype),
            startprob_prior=np.asarray(self.startprob_prior, dtype),
            transmat_prior=np.asarray(self.transmat_prior, dtype),
        )

    def e_step(self, params: HMMParams, data, weights, hyper):
        """Baum-Welch's or Viterbi training's E-step; for ``assignment="stochastic"``
        Baum-Welch's (the expectation of the drawn paths' counts)."""
        return self.e_step_with_keys(None, params, data, weights, hyper)

    def stochastic(self) -> bool:
        return self.assignment == "stochastic"

    def e_step_with_keys(self, keys, params: HMMParams, data, weights, hyper):
        """The E-step; with ``keys`` (one per row) and ``assignment="stochastic"``,
        the counts of one path per sequence drawn from the posterior."""
        if self.assignment == "hard":
            log_emission, valid, starts, frames = self._log_emissions(params, *_unpacked(data))
            paths, log_likelihood = jax.vmap(self._decoder(), in_axes=(None, None, 0, 0, 0))(
                _log(params.startprob), _log(params.transmat), log_emission, valid, starts
            )
        else:
            posterior, frames, valid, starts = self._posteriors(params, data)
            log_likelihood = posterior.log_likelihood
        if self.assignment == "soft" or (keys is None and self.assignment == "stochastic"):
            smoothed, transition_counts = posterior.smoothed, posterior.transition_counts
        else:
            if self.assignment == "stochastic":
                paths = jax.vmap(hmm_inference.sample_path, in_axes=(0, None, 0, 0, 0))(
                    keys, _log(params.transmat), posterior.log_alpha, valid, starts
                )
            smoothed = jax.nn.one_hot(paths, self.n_states, dtype=params.transmat.dtype)
            smoothed = smoothed * valid[..., None]
            # Pairs (t, t + 1) inside a sequence: padding trails, so step t + 1 decides,
            # and a pair across a packed boundary is no transition.
            inside = (valid[:, 1:] & ~starts[:, 1:])[..., None]
            transition_counts = jnp.einsum(
                "sti,stj->sij", smoothed[:, :-1], jnp.where(inside, smoothed[:, 1:], 0)
            )
        n_sequences, n_steps = valid.shape
        # Every sequence's first step: step 0 of a row and the packed starts.
        first = starts | (jnp.arange(n_steps) == 0)
        # where() keeps zero-weight sequences (even NaN garbage) out of the sums.
        used = weights > 0
        smoothed = jnp.where(used[:, None, None], smoothed, 0) * weights[:, None, None]
        transition_counts = jnp.where(used[:, None, None], transition_counts, 0)
        # Padding frames and zero-weight sequences (which may hold anything) get no
        # responsibility, and are zeroed so 0 · NaN cannot leak into the sums.
        keep = (valid & used[:, None]).reshape(-1)
        gamma = jnp.where(keep[:, None], smoothed.reshape(n_sequences * n_steps, -1), 0)
        frames = jnp.where(keep.reshape((-1,) + (1,) * (frames.ndim - 1)), frames, 0)
        stats = HMMStats(
            initial=jnp.einsum("st,stk->k", first.astype(smoothed.dtype), smoothed),
            transitions=jnp.einsum("s,sij->ij", weights, transition_counts),
            counts=gamma.sum(0),
            emission_stats=self.family.statistics(params.emissions, frames, gamma),
        )
        log_likelihood = jnp.sum(jnp.where(used, weights * log_likelihood, 0.0))
        return stats, log_likelihood

    def m_step(self, stats: HMMStats, params: HMMParams, hyper) -> HMMParams:
        emissions = self.family.m_step(stats.emission_stats, stats.counts, hyper.family)
        if params is None:  # called from init: everything is new
            return HMMParams(
                _normalize_rows(stats.initial), _normalize_rows(stats.transitions), emissions
            )
        startprob = _normalize_rows(
            jnp.where(
                params.startprob == 0, 0, jnp.maximum(hyper.startprob_prior - 1 + stats.initial, 0)
            )
        )
        transmat = _normalize_rows(
            jnp.where(
                params.transmat == 0,
                0,
                jnp.maximum(hyper.transmat_prior - 1 + stats.transitions, 0),
            )
        )
        emissions = self.family.keep_fixed(
            params.emissions,
            emissions,
            self.update,
            stats.emission_stats,
            stats.counts,
            hyper.family,
        )
        return HMMParams(
            startprob if "s" in self.update else params.startprob,
            transmat if "t" in self.update else params.transmat,
            emissions,
        )

    def combine_stats(self, a: HMMStats, b: HMMStats) -> HMMStats:
        """Counts add; the family merges its own emission statistics."""
        return HMMStats(
            a.initial + b.initial,
            a.transitions + b.transitions,
            a.counts + b.counts,
            self.family.combine_stats(a.emission_stats, b.emission_stats),
        )

    def scale_stats(self, stats: HMMStats, factor) -> HMMStats:
        """Counts scale; the family scales its own statistics (a Gaussian's means
        do not scale), so online EM mixes them as reweighted sequences."""
        return HMMStats(
            stats.initial * factor,
            stats.transitions * factor,
            stats.counts * factor,
            self.family.scale_stats(stats.emission_stats, factor),
        )

    def converged(self, old_params, new_params, log_likelihood, previous, tol):
        """hmmlearn's criterion: the increase (not its absolute value) is below ``tol``."""
        del old_params, new_params
        return log_likelihood - previous < tol

    def unconstrain(self, params: HMMParams) -> HMMParams:
        """Start and transition probabilities as log-probabilities recentred over
        their last axis (zeros stay ``-inf``, so they stay 0); the family's emissions."""
        return HMMParams(
            ops.centred_logs(_log(params.startprob)),
            ops.centred_logs(_log(params.transmat)),
            self.family.unconstrain(params.emissions),
        )

    def constrain(self, values: HMMParams) -> HMMParams:
        """Inverse of :meth:`unconstrain`."""
        return HMMParams(
            jnp.exp(ops.normalised_logs(values.startprob)),
            jnp.exp(ops.normalised_logs(values.transmat)),
            self.family.constrain(values.emissions),
        )

    def init(self, key, chunks: Chunks, hyper) -> HMMParams:
        obs, mask, _ = _unpacked(chunks.x)
        n_states = self.n_states
        dtype = chunks.weights.dtype
        # The frames of each chunk of sequences, as a chunk of rows (padding steps get
        # weight 0, and the engine's chunked sums zero whatever they hold).
        n_chunks, chunk_size, n_steps = mask.shape
        frames = Chunks(
            obs.reshape((n_chunks, chunk_size * n_steps) + obs.shape[3:]).astype(
                self.family.data_dtype(dtype)
            ),
            ((mask > 0) * chunks.weights[..., None]).reshape(n_chunks, -1).astype(dtype),
        )
        transition_key, emission_key = jax.random.split(key)
        if self.init_transitions == "uniform":
            startprob = jnp.full((n_states,), 1.0 / n_states, dtype)
            transmat = jnp.full((n_states, n_states), 1.0 / n_states, dtype)
        else:
            start_key, trans_key = jax.random.split(transition_key)
            if self.init_transitions == "dirichlet":  # hmmlearn: Dirichlet(1/K) draws
                alpha = jnp.full((n_states,), 1.0 / n_states, dtype)
                startprob = jax.random.dirichlet(start_key, alpha, dtype=dtype)
                transmat = jax.random.dirichlet(trans_key, alpha, (n_states,), dtype=dtype)
            else:  # "random": normalised uniform draws (cheap to compile, no rejection loop)
                startprob = _normalize_rows(jax.random.uniform(start_key, (n_states,), dtype))
                transmat = _normalize_rows(
                    jax.random.uniform(trans_key, (n_states, n_states), dtype)
                )
        emissions = self.family.initial_params(emission_key, frames, n_states, hyper.family)
        return HMMParams(startprob, transmat, emissions)

    def log_prob(self, params: HMMParams, data):
        """Per-row log-likelihood ``log p(x_row)``, shape ``(S,)`` (a packed row's is the
        sum of its sequences')."""
        return self._posteriors(params, data)[0].log_likelihood

    def row_width(self, data) -> int:
        """A row's E-step work: ``T_max × n_states`` (sizes the engine's chunks)."""
        return data[0].shape[1] * self.n_states

    def padded_rows(self, n_rows: int) -> int:
        """Sequences are expensive rows (a padded one still costs a full scan): pad
        their count by less than 1/16."""
        return finely_padded_rows(n_rows)

    def posterior(self, params: HMMParams, data):
        """:meth:`posteriors` of the data pytree ``(observations, mask)`` (an output)."""
        return self._posteriors(params, data)[0]

    def viterbi(self, params: HMMParams, data):
        """:meth:`decode` of the data pytree ``(observations, mask)`` (an output)."""
        return self.decode(params, *data)

    def n_parameters(self, n_features: int) -> int:
        n_states = self.n_states
        return (
            self.family.n_parameters(n_states, n_features)
            + n_states
            - 1
            + n_states * (n_states - 1)
        )

    # -- derived quantities ------------------------------------------------------------------
    def log_emissions(self, params: HMMParams, observations, mask=None, log_prior=None):
        """``(S, T, K)`` emission log-densities, one matrix product for all frames
        (plus ``log_prior`` ``(S, T, K)``, states known at some steps, if given)."""
        return self._log_emissions(params, observations, mask, log_prior)[0]

    def posteriors(self, params: HMMParams, observations, mask=None, log_prior=None):
        """:class:`~jaxem.models.hmm_inference.HMMPosterior` of every sequence (leading
        ``S``); ``log_prior`` ``(S, T, K)``: states known at some steps."""
        if mask is None:
            mask = jnp.ones(observations.shape[:2], jnp.float32)
        data = (observations, mask) if log_prior is None else (observations, mask, log_prior)
        return self._posteriors(params, data)[0]

    def decode(self, params: HMMParams, observations, mask=None, log_prior=None):
        """Viterbi paths ``(S, T)`` (0 on padding) and their log-probabilities ``(S,)``
        (a packed row's is the sum of its sequences' best paths'); ``log_prior``
        ``(S, T, K)``: states known at some steps."""
        log_emission, valid, starts, _ = self._log_emissions(params, observations, mask, log_prior)
        return jax.vmap(self._decoder(), in_axes=(None, None, 0, 0, 0))(
            _log(params.startprob), _log(params.transmat), log_emission, valid, starts
        )

    def sample(self, key, params: HMMParams, n_steps: int):
        """``(x, states)``: one sequence of ``n_steps`` draws and its hidden states."""
        start_key, chain_key, emission_key = jax.random.split(key, 3)
        log_transmat = _log(params.transmat)
        first = jax.random.categorical(start_key, _log(params.startprob))

        def step(state, step_key):
            following = jax.random.categorical(step_key, log_transmat[state])
            return following, following

        _, rest = jax.lax.scan(step, first, jax.random.split(chain_key, max(n_steps - 1, 0)))
        states = jnp.concatenate([first[None], rest])[:n_steps].astype(jnp.int32)
        return self.family.sample(emission_key, params.emissions, states), states

    # -- internals ---------------------------------------------------------------------------
    def _decoder(self):
        if self.algorithm == "associative":
            return hmm_inference.parallel_viterbi
        return hmm_inference.viterbi

    def _log_emissions(self, params, observations, mask, log_prior=None):
        n_sequences, n_steps = observations.shape[:2]
        if mask is None:
            valid = jnp.ones((n_sequences, n_steps), bool)
            starts = jnp.zeros((n_sequences, n_steps), bool)
        else:
            # Mask codes: 0 padding, 1 a step, 2 the first step of a packed sequence.
            valid, starts = mask > 0, mask > 1
        frames = observations.reshape((n_sequences * n_steps,) + observations.shape[2:])
        frame_valid = valid.reshape(-1)
        # Padding frames may hold anything: zero them so 0 · NaN cannot leak.
        valid_frames = frame_valid.reshape((-1,) + (1,) * (frames.ndim - 1))
        frames = jnp.where(valid_frames, frames, jnp.zeros((), frames.dtype))
        log_emission = self.family.log_densities(params.emissions, frames)
        log_emission = jnp.where(frame_valid[:, None], log_emission, 0)
        dtype = params.transmat.dtype
        log_emission = log_emission.astype(dtype).reshape(n_sequences, n_steps, self.n_states)
        if log_prior is not None:  # states known at some steps; padding may hold anything
            log_emission = log_emission + jnp.where(valid[..., None], log_prior.astype(dtype), 0)
        return log_emission, valid, starts, frames

    def _posteriors(self, params, data):
        log_emission, valid, starts, frames = self._log_emissions(params, *_unpacked(data))
        smoother = {
            "scaled": hmm_inference.scaled_forward_backward,
            "scan": hmm_inference.forward_backward,
            "associative": hmm_inference.parallel_forward_backward,
            "blocked": hmm_inference.blocked_forward_backward,
        }[self.algorithm]
        log_initial, log_transition = _log(params.startprob), _log(params.transmat)
        posterior = jax.vmap(
            lambda log_e, ok, new: smoother(log_initial, log_transition, log_e, ok, starts=new)
        )(log_emission, valid, starts)
        if self.fail_on_underflow:
            underflow = jnp.any(valid & (log_emission.max(-1) < _LOG_SMALLEST_FLOAT64), axis=1)
            log_likelihood = jnp.where(underflow, -jnp.inf, posterior.log_likelihood)
            posterior = posterior._replace(log_likelihood=log_likelihood)
        return posterior, frames, valid, starts


def _unpacked(data):
    """``(observations, mask, log_prior or None)`` of the data pytree."""
    return tuple(data) if len(data) == 3 else (*data, None)


def known_states(states, n_states: int, dtype=np.float32) -> np.ndarray:
    """Log prior weights over the states from state indices known at some steps.

    Parameters
    ----------
    states : int array of any shape (``(S, T_max)`` for padded sequences)
        The state at every step, or -1 where it is unknown.
    n_states : int
    dtype : floating dtype of the result.

    Returns
    -------
    log_prior : numpy array of shape ``states.shape + (n_states,)``: 0 at a known
        state and ``-inf`` at the others; 0 everywhere at an unknown step. The third
        leaf of the HMM's data ``(observations, mask, log_prior)``.

    Raises
    ------
    ValueError
        If a state is not an integer in ``[-1, n_states)``.

    Examples
    --------
    >>> known_states([[1, -1]], 2)
    array([[[-inf,   0.],
            [  0.,   0.]]], dtype=float32)
    """
    raw = np.asarray(states)
    if raw.dtype.kind not in "iuf" or (
        raw.dtype.kind == "f" and not np.all(np.isfinite(raw) & (raw == np.round(raw)))
    ):
        raise ValueError(
            f"Known states must be integer state indices (-1 where unknown), got dtype "
            f"{raw.dtype}" + (" with non-integer values." if raw.dtype.kind == "f" else ".")
        )
    labels = raw.astype(np.int64)
    outside = (labels < -1) | (labels >= n_states)
    if np.any(outside):
        raise ValueError(
            f"Known states must lie in [-1, {n_states}) (a state index below n_states="
            f"{n_states}, or -1 where unknown); got {labels[outside].flat[0]}."
        )
    log_prior = np.where(np.arange(n_states) == labels[..., None], 0.0, -np.inf)
    return np.where(labels[..., None] < 0, 0.0, log_prior).astype(dtype)


#: log of the smallest positive float64 (a subnormal): below it exp() underflows to 0.
_LOG_SMALLEST_FLOAT64 = -745.1332191019411


def hmm(
    family: Family,
    n_states: int,
    *,
    algorithm: str = "scaled",
    update: str = "stmcelw",
    init_transitions: str = "random",
    startprob_prior: float = 1.0,
    transmat_prior: float = 1.0,
    fail_on_underflow: bool = False,
    assignment: str = "soft",
) -> HMM:
    """Hidden Markov model over ``family``; see :class:`HMM`."""
    return HMM(
        family=family,
        n_states=n_states,
        algorithm=algorithm,
        update=update,
        init_transitions=init_transitions,
        startprob_prior=startprob_prior,
        transmat_prior=transmat_prior,
        fail_on_underflow=fail_on_underflow,
        assignment=assignment,
    )


def pad_sequences(X, lengths=None, *, max_length: int | None = None, dtype=None):
    """Cut concatenated sequences into a padded batch, hmmlearn's ``(X, lengths)`` input.

    Parameters
    ----------
    X : array (n_samples, ...)
        All sequences concatenated along the first axis.
    lengths : sequence of int, optional
        Length of every sequence; ``None`` is one sequence of all rows. They must be
        positive integers summing to ``len(X)``.
    max_length : int, optional
        Padded length ``T_max`` (at least the longest sequence); default the longest.
        Reusing one value across calls reuses compiled programs.
    dtype : float dtype of the mask; default ``X``'s if floating, else float32.

    Returns
    -------
    observations : numpy array (S, T_max, ...), zeros on padding
    mask : numpy array (S, T_max), 1 on valid steps and 0 on padding

    See Also
    --------
    pack_sequences : Several sequences per row, so very unequal lengths cost about
        their total instead of ``S × T_max`` steps of work and memory.

    Examples
    --------
    >>> import numpy as np
    >>> import jaxem
    >>> obs, mask = jaxem.pad_sequences(np.arange(5.0)[:, None], [3, 2])
    >>> obs[:, :, 0]
    array([[0., 1., 2.],
           [3., 4., 0.]])
    >>> mask
    array([[1., 1., 1.],
           [1., 1., 0.]])
    """
    X, lengths = _checked_sequences(X, lengths)
    row_length = _row_length(lengths, max_length)
    n_sequences = lengths.shape[0]
    layout = (np.arange(n_sequences), np.zeros(n_sequences, np.int64), n_sequences, row_length)
    observations, mask, _ = _fill_rows(X, lengths, layout, dtype)
    return observations, mask


def pack_sequences(X, lengths=None, *, max_length: int | None = None, dtype=None):
    """Pack concatenated sequences several to a row, with little padding.

    Padding every sequence to the longest (:func:`pad_sequences`) costs ``S × T_max``
    steps of work and memory: one sequence of 10,000 steps and 500 of one step become
    5 M steps for 10,500 real ones. Here sequences share rows instead, back to back
    (first-fit decreasing), and the mask marks where each packed sequence starts (code
    2), which the HMM reads as a transition whose rows all equal the start
    distribution: a packed row's posteriors, paths and statistics are exactly those of
    its independent sequences, and its log-likelihood their sum.

    A row's steps run one after another, so rows are kept at most 1/8 longer than
    the longest sequence: the row length ``L`` is the smallest tried (from the longest
    sequence up to 9/8 of it, in steps of about 1/64) whose ``rows × L`` slots are at
    most 1.125 times the total number of steps, else the one with the fewest slots;
    rows are then cut to the longest packed one. So ``100 × 1,000`` steps stay 100
    rows of 1,000, ``1 × 10,000 + 500 × 1`` becomes one row of 10,500, and
    ``[40, 25, 33]`` stays three rows of 40 (one row of 98 would save 18 % of the
    slots for a path 2.5 times as long).

    Parameters
    ----------
    X : array (n_samples, ...)
        All sequences concatenated along the first axis.
    lengths : sequence of int, optional
        Length of every sequence; ``None`` is one sequence of all rows. They must be
        positive integers summing to ``len(X)``.
    max_length : int, optional
        The row length ``L`` (at least the longest sequence); default chosen as above.
        Reusing one value across calls reuses compiled programs.
    dtype : float dtype of the mask; default ``X``'s if floating, else float32.

    Returns
    -------
    observations : numpy array (R, L, ...), zeros on padding
    mask : numpy array (R, L): 0 on padding, 1 on a step, 2 on the first step of a
        sequence packed after another in its row
    index : pair ``(rows, cols)`` of int64 arrays of length ``n_samples``, every input
        sample's place: ``per_step[rows, cols]`` is in the input's order.

    Raises
    ------
    ValueError
        As :func:`pad_sequences`: for lengths that are not positive integers summing
        to ``len(X)``, or a ``max_length`` below the longest sequence.

    Examples
    --------
    >>> import numpy as np
    >>> import jaxem
    >>> X = np.arange(6.0)[:, None]
    >>> obs, mask, (rows, cols) = jaxem.pack_sequences(X, [4, 1, 1])
    >>> obs[:, :, 0]
    array([[0., 1., 2., 3.],
           [4., 5., 0., 0.]])
    >>> mask
    array([[1., 1., 1., 1.],
           [1., 2., 0., 0.]])
    >>> np.array_equal(obs[rows, cols], X)
    True
    """
    X, lengths = _checked_sequences(X, lengths)
    longest = int(lengths.max())
    if max_length is not None:
        row_length = _row_length(lengths, max_length)
        layout = _first_fit_decreasing(lengths, row_length)
    else:
        layout = _packed_layout(lengths, longest)
    return _fill_rows(X, lengths, layout, dtype)


#: pack_sequences accepts a row length whose slots exceed the steps by at most this,
#: and tries rows up to this factor longer than the longest sequence (a row's steps
#: are sequential: on a CPU its time grows with its length more than with its rows).
_PACKING_SLACK = 1.125


def _packed_layout(lengths, longest):
    """The layout of the first row length (from ``longest`` up by about 1/64, to
    ``_PACKING_SLACK`` times it) whose slots are within ``_PACKING_SLACK`` of the
    total, else the fewest slots; rows cut to the longest packed one."""
    total = int(lengths.sum())
    n_sequences = lengths.shape[0]
    if n_sequences * longest <= _PACKING_SLACK * total:  # padding wastes little: keep it
        return np.arange(n_sequences), np.zeros(n_sequences, np.int64), n_sequences, longest
    limit = min(total, int(np.ceil(_PACKING_SLACK * longest)))
    best = None
    candidate = longest
    while True:
        rows, offsets, n_rows, _ = _first_fit_decreasing(lengths, candidate)
        used = int((offsets + lengths).max())
        layout = (rows, offsets, n_rows, used)
        if best is None or n_rows * used < best[2] * best[3]:
            best = layout
        if n_rows * used <= _PACKING_SLACK * total or candidate >= limit:
            return best
        candidate = min(limit, candidate + max(1, -(-longest // 64)))


def _first_fit_decreasing(lengths, capacity):
    """``(rows, offsets, n_rows, capacity)``: sequences placed longest first, each in
    the first row with room (a max-tree over the rows' free space, O(S log S))."""
    n_sequences = lengths.shape[0]
    size = 1 << max(0, (n_sequences - 1).bit_length())
    free = [0] * size + [capacity] * n_sequences + [0] * (size - n_sequences)
    for node in range(size - 1, 0, -1):
        free[node] = max(free[2 * node], free[2 * node + 1])
    rows = np.empty(n_sequences, np.int64)
    offsets = np.empty(n_sequences, np.int64)
    for sequence in np.argsort(-lengths, kind="stable"):
        length = int(lengths[sequence])
        node = 1
        while node < size:
            node = 2 * node if free[2 * node] >= length else 2 * node + 1
        rows[sequence] = node - size
        offsets[sequence] = capacity - free[node]
        free[node] -= length
        node //= 2
        while node:
            free[node] = max(free[2 * node], free[2 * node + 1])
            node //= 2
    return rows, offsets, int(rows.max()) + 1, capacity


def _checked_sequences(X, lengths):
    """``(X, lengths)`` as arrays, with hmmlearn's checks on ``lengths``."""
    X = np.asarray(X)
    if X.ndim == 0:
        raise ValueError("X must have at least one dimension (n_samples, ...), got a scalar.")
    n_samples = X.shape[0]
    if lengths is None:
        lengths = np.array([n_samples])
    else:
        raw = np.asarray(lengths)
        if raw.ndim != 1 or raw.size == 0:
            raise ValueError(
                f"lengths must be a non-empty 1-D sequence of ints, got shape {raw.shape}."
            )
        if not (np.issubdtype(raw.dtype, np.integer) or np.all(raw == np.round(raw))):
            raise ValueError(f"lengths must be integers, got {raw.tolist()}.")
        lengths = raw.astype(np.int64)
    if np.any(lengths <= 0):
        raise ValueError(
            f"lengths must be positive integers; got {lengths.tolist()}. "
            "Drop empty sequences before fitting."
        )
    if lengths.sum() != n_samples:
        raise ValueError(
            f"lengths sum to {int(lengths.sum())} but X has {n_samples} samples; "
            "lengths must sum to len(X)."
        )
    return X, lengths


def _row_length(lengths, max_length):
    """``max_length``, checked against the longest sequence (default the longest)."""
    longest = int(lengths.max())
    if max_length is None:
        return longest
    if max_length < longest:
        raise ValueError(
            f"max_length={max_length} is shorter than the longest sequence ({longest})."
        )
    return int(max_length)


def _fill_rows(X, lengths, layout, dtype):
    """``(observations, mask, (rows, cols))`` of the sequences placed by ``layout``
    ``(row of each sequence, its offset in the row, n_rows, row_length)``."""
    rows_of, offsets, n_rows, row_length = layout
    if dtype is None:
        dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.float32
    begins = np.cumsum(lengths) - lengths
    rows = np.repeat(rows_of, lengths)
    cols = np.repeat(offsets - begins, lengths) + np.arange(X.shape[0])
    observations = np.zeros((n_rows, row_length) + X.shape[1:], X.dtype)
    observations[rows, cols] = X
    mask = np.zeros((n_rows, row_length), dtype)
    mask[rows, cols] = 1
    packed = offsets > 0  # a sequence after another in its row
    mask[rows_of[packed], offsets[packed]] = 2
    return observations, mask, (rows, cols)

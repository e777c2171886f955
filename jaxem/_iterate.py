"""The batched EM iteration: chunked statistics and one ``lax.while_loop``.

This is the traceable core of the engine. It knows the model contract (see
:mod:`jaxem.engine`) but no particular model, so models may reuse it inside their
own initialisation (the Gaussian mixture's "kmeans" init runs k-means through it).
The host-side API, restart keys and best-restart selection live in the engine.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxem import ops
from jaxem.contract import STATUS_MESSAGES, Chunks, Status

__all__ = [
    "Chunks",
    "Status",
    "trace_length",
    "LoopState",
    "RUNNING",
    "CONVERGED",
    "MAX_ITER",
    "NON_FINITE",
    "STATUS_MESSAGES",
    "make_chunks",
    "chunked_sum",
    "rows_sharded",
    "row_axis",
    "across_shards",
    "chunk_indices",
    "n_global_chunks",
    "all_chunks",
    "from_chunk",
    "take_rows",
    "row_keys",
    "batched_statistics",
    "run_em",
    "start_state",
    "em_update",
    "averaged_from",
    "ACCELERATIONS",
    "check_accelerate",
    "Squarem",
    "squarem_point",
    "squarem_update",
]

RUNNING, CONVERGED, MAX_ITER, NON_FINITE = (int(status) for status in Status)


def make_chunks(x, weights, chunk_size: int) -> Chunks:
    """Pad rows to a multiple of ``chunk_size`` with zero weight and reshape.

    Rows of weight 0 may hold anything (even 1e30 or NaN): :func:`chunked_sum` zeroes
    them chunk by chunk before a model sees them (here it would copy all the data).
    """
    n_rows = weights.shape[0]
    n_chunks = max(1, -(-n_rows // chunk_size))
    padding = n_chunks * chunk_size - n_rows

    def cut(leaf):
        leaf = jnp.pad(leaf, [(0, padding)] + [(0, 0)] * (leaf.ndim - 1))
        return leaf.reshape((n_chunks, chunk_size) + leaf.shape[1:])

    return Chunks(jax.tree.map(cut, x), cut(weights))


# -- rows sharded over devices ----------------------------------------------------------------
# Inside the engine's ``shard_map`` every device holds a contiguous block of the rows,
# cut into its own chunks: global chunk ``g`` is local chunk ``g - n_local * d`` of
# device ``d``, so the chunks are those of a one-device fit with the same chunk size.
# The functions below are the only places that reach across devices; with no row axis
# active they are the plain one-device operations.
_ROW_AXIS: list[str | None] = [None]


@contextlib.contextmanager
def rows_sharded(axis_name: str | None):
    """While tracing inside ``shard_map``, make the data functions of this module treat
    ``axis_name`` as the mesh axis the rows are split over (``None``: not split)."""
    _ROW_AXIS.append(axis_name)
    try:
        yield
    finally:
        _ROW_AXIS.pop()


def row_axis() -> str | None:
    """Name of the mesh axis the rows are split over while tracing, or None."""
    return _ROW_AXIS[-1]


def across_shards(total, combine=ops.tree_add):
    """``total`` (one shard's sum over its rows) merged over every shard of the rows.

    Sums travel by one all-reduce; other merges (``combine`` is not
    :func:`jaxem.ops.tree_add`) gather the shards' totals, which are statistics, never
    rows, and fold them in device order.
    """
    axis = row_axis()
    if axis is None:
        return total
    if combine is ops.tree_add:
        return jax.lax.psum(total, axis)
    gathered = jax.lax.all_gather(total, axis)
    parts = [jax.tree.map(lambda leaf, d=d: leaf[d], gathered) for d in range(_n_shards(axis))]
    return functools.reduce(combine, parts)


def _n_shards(axis) -> int:
    return jax.lax.axis_size(axis)


def chunk_indices(n_chunks: int):
    """``(n_chunks,)`` global index of every chunk this shard holds (``n_chunks`` of
    them)."""
    local = jnp.arange(n_chunks, dtype=jnp.int32)
    axis = row_axis()
    return local if axis is None else local + jax.lax.axis_index(axis) * n_chunks


def n_global_chunks(n_chunks: int) -> int:
    """Number of chunks over every shard, when each holds ``n_chunks``."""
    axis = row_axis()
    return n_chunks if axis is None else n_chunks * _n_shards(axis)


def all_chunks(values):
    """Per-chunk ``values`` (leading axis: this shard's chunks) of every chunk, in
    global order: small arrays (a number or a few per chunk), never rows."""
    axis = row_axis()
    return values if axis is None else jax.lax.all_gather(values, axis, tiled=True)


def from_chunk(fn, chunks: Chunks, index):
    """``fn(local_index)`` evaluated for the global chunk ``index`` (a scalar) by the
    shard that holds it, and given to every shard (one small all-reduce)."""
    axis = row_axis()
    if axis is None:
        return fn(index)
    n_local = chunks.n_chunks
    owner = index // n_local
    value = fn(index - owner * n_local if n_local > 1 else jnp.zeros_like(index))
    mine = owner == jax.lax.axis_index(axis)
    return jax.lax.psum(
        jax.tree.map(lambda leaf: jnp.where(mine, leaf, jnp.zeros((), leaf.dtype)), value), axis
    )


def row_keys(key, chunk, chunk_size: int):
    """``(chunk_size,)`` keys of the rows of (global) chunk ``chunk``: row ``i`` of
    the data gets ``fold_in(key, i)`` whatever the chunk size or the devices, so
    random draws per row do not depend on how the rows are cut."""
    rows = chunk * chunk_size + jnp.arange(chunk_size)
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, rows.astype(jnp.uint32))


def take_rows(chunks: Chunks, rows):
    """Rows ``rows`` (global flat indices, chunk by chunk) of ``chunks.x``, from
    whichever shard holds them."""
    chunk_size = chunks.chunk_size

    def rows_of(tree, index):
        return jax.tree.map(lambda leaf: leaf[index // chunk_size, index % chunk_size], tree)

    axis = row_axis()
    if axis is None:
        return rows_of(chunks.x, rows)
    per_shard = chunks.n_chunks * chunk_size
    owner = rows // per_shard
    local = jnp.clip(rows - jax.lax.axis_index(axis) * per_shard, 0, per_shard - 1)
    mine = owner == jax.lax.axis_index(axis)

    def masked(leaf):
        shape = mine.shape + (1,) * (leaf.ndim - mine.ndim)
        return jnp.where(mine.reshape(shape), leaf, jnp.zeros((), leaf.dtype))

    return jax.lax.psum(jax.tree.map(masked, rows_of(chunks.x, local)), axis)


def chunked_sum(fn, chunks: Chunks, combine=ops.tree_add):
    """``combine`` of ``fn(x_chunk, weights_chunk)`` over all chunks, by ``lax.scan``.

    Rows of weight 0 reach ``fn`` zeroed, whatever they held.

    Only one chunk's intermediates are alive at a time, so memory is
    O(chunk_size × whatever ``fn`` makes per row), never O(n_rows × ...). With the
    rows sharded (:func:`rows_sharded`), each shard sums its own chunks and the
    shards' totals are merged by :func:`across_shards`.
    """

    def clean(x, weights):
        # Rows of weight 0 must change nothing whatever they hold, and 0 · inf is NaN.
        used = weights > 0

        def zero(leaf):  # leaves without a row axis (a chunk's index) pass unchanged
            if leaf.ndim == 0 or leaf.shape[0] != used.shape[0]:
                return leaf
            mask = used.reshape(used.shape + (1,) * (leaf.ndim - 1))
            return jnp.where(mask, leaf, jnp.zeros((), leaf.dtype))

        return fn(jax.tree.map(zero, x), weights)

    first = jax.tree.map(lambda leaf: leaf[0], chunks)
    total = clean(first.x, first.weights)
    if chunks.n_chunks > 1:
        rest = jax.tree.map(lambda leaf: leaf[1:], chunks)

        def body(accumulated, chunk):
            return combine(accumulated, clean(chunk.x, chunk.weights)), None

        total, _ = jax.lax.scan(body, total, rest)
    return across_shards(total, combine)


def batched_statistics(model, params, chunks: Chunks, hyper, keys=None):
    """Statistics and summed log-likelihood of every restart in ``params``.

    Each chunk is read once and shared by all restarts (``vmap`` over the
    parameters only). With ``keys`` (one per restart, leading axis ``R``) the model's
    :meth:`~jaxem.contract.Model.e_step_with_keys` runs with row ``i`` of every
    restart drawing from ``fold_in(keys[r], i)`` (:func:`row_keys`).
    """
    combine = jax.vmap(lambda a, b: (model.combine_stats(a[0], b[0]), a[1] + b[1]))
    if keys is None:
        e_step = jax.vmap(model.e_step, in_axes=(0, None, None, None))
        return chunked_sum(lambda x, w: e_step(params, x, w, hyper), chunks, combine)
    keyed = jax.vmap(model.e_step_with_keys, in_axes=(0, 0, None, None, None))
    restart_row_keys = jax.vmap(row_keys, in_axes=(0, None, None))

    def chunk_statistics(data, weights):
        x, number = data
        return keyed(restart_row_keys(keys, number, weights.shape[0]), params, x, weights, hyper)

    numbered = Chunks((chunks.x, chunk_indices(chunks.n_chunks)), chunks.weights)
    return chunked_sum(chunk_statistics, numbered, combine)


class LoopState(NamedTuple):
    """Carry of the batched EM loop; every field has a leading restart axis.

    ``log_likelihood`` is the mean per-sample log-likelihood of the last E-step
    (of the parameters before the last M-step, as scikit-learn's ``lower_bound_``),
    plus the model's ``log_prior`` per sample (MAP EM: the log posterior);
    ``trace`` holds one such value per iteration, NaN after a restart stopped.
    A stochastic model (:meth:`~jaxem.contract.Model.stochastic`) also carries its
    restarts' loop ``key`` (iteration ``t`` draws from ``fold_in(key, t)``) and the
    running mean of the statistics of the averaged iterations, ``average``; both are
    None otherwise. With ``accelerate="squarem"``, ``accelerator`` is the
    :class:`Squarem` carry (None otherwise).
    """

    params: Any
    log_likelihood: jax.Array
    previous_log_likelihood: jax.Array
    n_iter: jax.Array
    status: jax.Array
    trace: jax.Array
    key: Any = None
    average: Any = None
    accelerator: Any = None


def trace_length(max_iter: int) -> int:
    """Columns of the per-iteration trace: ``max_iter`` rounded up to a power of two
    (at least 128), so that changing ``max_iter`` within a bucket compiles nothing."""
    return max(128, 1 << max(int(max_iter) - 1, 0).bit_length())


def start_state(
    params, n_trace: int, dtype, max_iter, key=None, average=None, accelerator=None
) -> LoopState:
    """The loop's carry before the first iteration (``max_iter`` may be traced);
    ``key`` and ``average`` (zero statistics) for a stochastic model only,
    ``accelerator`` for SQUAREM only."""
    n_restarts = jax.tree.leaves(params)[0].shape[0]
    max_iter = jnp.asarray(max_iter, jnp.int32)
    return LoopState(
        params=params,
        log_likelihood=jnp.full((n_restarts,), -jnp.inf, dtype),
        previous_log_likelihood=jnp.full((n_restarts,), -jnp.inf, dtype),
        n_iter=jnp.zeros((n_restarts,), jnp.int32),
        status=jnp.full((n_restarts,), jnp.where(max_iter > 0, RUNNING, MAX_ITER), jnp.int32),
        trace=jnp.full((n_restarts, n_trace), jnp.nan, dtype),
        key=key,
        average=average,
        accelerator=accelerator,
    )


def averaged_from(max_iter):
    """First iteration (0-based) whose statistics a stochastic model's result
    averages: the second half of the ``max_iter`` iterations are kept, the first
    half is burn-in."""
    return max_iter // 2


def em_update(
    model,
    state: LoopState,
    iteration,
    stats,
    log_likelihood_sum,
    total_weight,
    hyper,
    *,
    max_iter,
    tol,
) -> LoopState:
    """One EM iteration of every restart from its E-step's ``stats`` and summed
    log-likelihood (leading restart axis): the M-step, the convergence and
    non-finite tests, and the freezing of restarts that stopped.

    A restart whose log-likelihood or new parameters are not finite keeps its last
    finite parameters and the status ``NON_FINITE``. A stochastic model never
    converges (its log-likelihood is noisy): from iteration :func:`averaged_from` on,
    its statistics join the running mean ``state.average``.
    """
    converged_fn = jax.vmap(model.converged, in_axes=(0, 0, 0, 0, None))
    is_finite = jax.vmap(model.is_finite)
    m_step = jax.vmap(model.m_step, in_axes=(0, 0, None))
    # MAP EM monitors the log posterior of the E-step's parameters (0 added without a prior).
    log_prior = jax.vmap(model.log_prior, in_axes=(0, None))(state.params, hyper)
    objective = jax.vmap(model.objective, in_axes=(0, 0, 0, None, None))
    new_params = m_step(stats, state.params, hyper)
    # The mean per-row log-likelihood (log posterior under a prior), unless the model
    # monitors another objective.
    log_posterior_sum = log_likelihood_sum + log_prior.astype(log_likelihood_sum.dtype)
    log_likelihood = objective(stats, log_posterior_sum, new_params, hyper, total_weight)
    running = state.status == RUNNING
    finite = jnp.isfinite(log_likelihood) & is_finite(new_params)
    converged = converged_fn(state.params, new_params, log_likelihood, state.log_likelihood, tol)
    average = state.average
    if model.stochastic():
        converged = jnp.zeros_like(converged)
        # Running mean over the averaged iterations: the j-th one enters with 1/j.
        seen = (state.n_iter - averaged_from(max_iter) + 1).astype(log_likelihood.dtype)
        share = jnp.where(seen >= 1, 1 / jnp.maximum(seen, 1), 0)

        def mix(old, new, share):
            return model.combine_stats(
                model.scale_stats(old, 1 - share), model.scale_stats(new, share)
            )

        mixed = jax.vmap(mix)(average, stats, share)
        average = ops.tree_where(running & finite & (seen >= 1), mixed, average)
    n_iter = state.n_iter + 1
    status = jnp.where(
        ~finite,
        NON_FINITE,
        jnp.where(converged, CONVERGED, jnp.where(n_iter >= max_iter, MAX_ITER, RUNNING)),
    )
    return LoopState(
        params=ops.tree_where(running & finite, new_params, state.params),
        log_likelihood=jnp.where(running, log_likelihood, state.log_likelihood),
        previous_log_likelihood=jnp.where(
            running, state.log_likelihood, state.previous_log_likelihood
        ),
        n_iter=jnp.where(running, n_iter, state.n_iter),
        status=jnp.where(running, status, state.status).astype(jnp.int32),
        trace=state.trace.at[:, iteration].set(
            jnp.where(running, log_likelihood, jnp.nan), mode="drop"
        ),
        key=state.key,
        average=average,
        accelerator=state.accelerator,
    )


# -- SQUAREM (Varadhan and Roland 2008, scheme S3) ----------------------------------------------
#: Values of the engine's ``accelerate`` option: None (plain EM) or ``"squarem"``.
ACCELERATIONS = (None, "squarem")
# Where a restart's E-step of the loop's iteration is, in its SQUAREM cycle: at the
# cycle's start θ0, at θ1 = M(θ0), or at the extrapolated point θ'.
_AT_START, _AT_MIDDLE, _AT_EXTRAPOLATED = 0, 1, 2
#: Factor by which the step-length cap grows when a step reaches it, and shrinks when a
#: step that reached it is refused (the SQUAREM package's ``mstep``).
_STEP_GROWTH = 4.0
_MIN_GROWTH = 1.25


def check_accelerate(accelerate) -> None:
    """Raise ``ValueError`` unless ``accelerate`` is one of :data:`ACCELERATIONS`."""
    if not (accelerate is None or (isinstance(accelerate, str) and accelerate in ACCELERATIONS)):
        raise ValueError(
            f"accelerate must be one of {ACCELERATIONS} (None: plain EM), got {accelerate!r}."
        )


def _check_squarem(model, params) -> None:
    """Raise ``ValueError`` naming ``model`` if SQUAREM cannot run on it."""
    name = type(model).__name__
    if model.stochastic():
        raise ValueError(
            f"accelerate='squarem' does not apply to stochastic EM ({name} with "
            "assignment='stochastic': its objective is noisy); use accelerate=None."
        )
    try:
        jax.eval_shape(jax.vmap(model.unconstrain), params)
    except NotImplementedError as error:
        raise ValueError(
            f"accelerate='squarem' needs an unconstrained parameterisation of {name}'s "
            f"parameters (Model.unconstrain / constrain): {error} Use accelerate=None."
        ) from None


class Squarem(NamedTuple):
    """Per-restart carry of SQUAREM (leading restart axis on every field).

    ``phase``: where this iteration's E-step is in the cycle (θ0, θ1 or θ');
    ``start``: θ0 of the cycle; ``fallback``: θ2 = M(θ1), taken when the
    extrapolated point is refused; ``step``: the step length ``s = -α`` of the
    last extrapolation; ``step_max``: the cap on ``s``, which starts at 1 and grows
    by ``growth`` when a step at the cap is taken, as in the SQUAREM package
    (``mstep = 4``). A refused step sets the cap to ``step / growth`` (at least 1)
    and slows the regrowth (``growth`` to its square root, at least 1.25): with the
    package's rule (the cap divided by 4 after a refusal at the cap only) an HMM's
    cap went back and forth between 4 and 16 and every other extrapolation was
    refused, each a wasted E-step.
    """

    phase: jax.Array
    start: Any
    fallback: Any
    step_max: jax.Array
    step: jax.Array
    growth: jax.Array


def _squarem_start(params, dtype) -> Squarem:
    n_restarts = jax.tree.leaves(params)[0].shape[0]
    return Squarem(
        phase=jnp.zeros((n_restarts,), jnp.int32),
        start=params,
        fallback=params,
        step_max=jnp.ones((n_restarts,), dtype),
        step=jnp.ones((n_restarts,), dtype),
        growth=jnp.full((n_restarts,), _STEP_GROWTH, dtype),
    )


def squarem_point(model, start, middle, end, step_max):
    """SQUAREM's extrapolated point from θ0 = ``start``, θ1 = M(θ0) = ``middle`` and
    θ2 = M(θ1) = ``end`` (one restart), and the step length ``s`` it used.

    In the model's unconstrained parameterisation (:meth:`~jaxem.contract.Model.
    unconstrain`): ``r = u1 - u0``, ``v = (u2 - u1) - r``, ``α = -‖r‖ / ‖v‖`` with
    ``s = -α`` clipped to ``[1, step_max]`` (``s = 1`` is θ2 itself, the plain double
    EM step), and ``u' = u0 - 2 α r + α² v`` (scheme S3). Entries that are not
    finite in all three (log-probabilities fixed at 0) are taken from θ2, and so are
    whole leaves that did not move (parameters EM keeps fixed), bit for bit.
    """
    u0, u1, u2 = (model.unconstrain(params) for params in (start, middle, end))
    finite = jax.tree.map(
        lambda a, b, c: jnp.isfinite(a) & jnp.isfinite(b) & jnp.isfinite(c), u0, u1, u2
    )
    r = jax.tree.map(lambda f, a, b: jnp.where(f, b - a, 0), finite, u0, u1)
    v = jax.tree.map(lambda f, a, b, c: jnp.where(f, (c - b) - (b - a), 0), finite, u0, u1, u2)
    r2 = sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(r))
    v2 = sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(v))
    step = jnp.where(v2 > 0, jnp.sqrt(r2 / jnp.where(v2 > 0, v2, 1)), 1)
    step = jnp.clip(step, 1, step_max)
    point = jax.tree.map(
        lambda f, a, dr, dv, c: jnp.where(f, a + 2 * step * dr + step**2 * dv, c),
        finite,
        u0,
        r,
        v,
        u2,
    )
    point = model.constrain(point)
    moved = jax.tree.map(lambda dr, dv: jnp.any(dr != 0) | jnp.any(dv != 0), r, v)
    point = jax.tree.map(lambda m, p, e: jnp.where(m, p, e), moved, point, end)
    return point, step


def squarem_update(model, before: LoopState, after: LoopState, iteration, max_iter) -> LoopState:
    """The SQUAREM part of one loop iteration, after :func:`em_update` turned
    ``before`` into ``after`` (one E-step and M-step of every restart at its point).

    A restart whose E-step was at θ0 keeps ``after`` (its point is θ1) and records
    θ0. One at θ1 has ``after.params`` = θ2: its next point is the extrapolated θ'
    (:func:`squarem_point`; θ2 if that is not finite). One at θ' takes the
    stabilising M-step M(θ') (``after``) if the objective at θ' is finite and at
    least that at θ1 (the monitored objective then never decreases, and M(θ') does
    not decrease it either); otherwise θ' is refused: the restart goes on from θ2
    with θ1's objective (and trace value), and cannot converge or fail on the
    refused E-step. Restarts that stopped are left as ``after`` has them.
    """
    accelerator = before.accelerator
    phase = accelerator.phase
    was_running = before.status == RUNNING
    judged = was_running & (phase == _AT_EXTRAPOLATED)
    good = (after.status != NON_FINITE) & (after.log_likelihood >= before.log_likelihood)
    refused = judged & ~good
    taken = judged & good
    status = jnp.where(after.n_iter >= max_iter, MAX_ITER, RUNNING)
    state = after._replace(
        params=ops.tree_where(refused, accelerator.fallback, after.params),
        log_likelihood=jnp.where(refused, before.log_likelihood, after.log_likelihood),
        previous_log_likelihood=jnp.where(
            refused, before.previous_log_likelihood, after.previous_log_likelihood
        ),
        status=jnp.where(refused, status, after.status).astype(jnp.int32),
        trace=after.trace.at[:, iteration].set(
            jnp.where(refused, before.log_likelihood, after.trace[:, iteration]), mode="drop"
        ),
    )
    # The step cap: up after a step at the cap was taken, down after one was refused.
    at_cap = accelerator.step >= accelerator.step_max
    growth = accelerator.growth
    step_max = jnp.where(taken & at_cap, accelerator.step_max * growth, accelerator.step_max)
    # A refused length caps the next ones below it, and slows the cap's regrowth
    # (4, 2, 1.41, ...): a cap that grows back to a refused length refuses every
    # other cycle (each refusal wastes an E-step).
    step_max = jnp.where(refused, jnp.maximum(accelerator.step / growth, 1), step_max)
    growth = jnp.where(refused, jnp.maximum(jnp.sqrt(growth), _MIN_GROWTH), growth)
    going = state.status == RUNNING
    # From θ1 (E-step done) and θ2 = M(θ1): the extrapolated point.
    extrapolate = jax.vmap(functools.partial(squarem_point, model))
    point, step = extrapolate(accelerator.start, before.params, after.params, step_max)
    usable = jax.vmap(model.is_finite)(point)
    to_point = going & (phase == _AT_MIDDLE) & usable
    params = ops.tree_where(to_point, point, state.params)
    next_phase = jnp.where(
        phase == _AT_START, _AT_MIDDLE, jnp.where(to_point, _AT_EXTRAPOLATED, _AT_START)
    )
    return state._replace(
        params=params,
        accelerator=Squarem(
            phase=jnp.where(going, next_phase, phase).astype(jnp.int32),
            start=ops.tree_where(going & (phase == _AT_START), before.params, accelerator.start),
            fallback=ops.tree_where(
                going & (phase == _AT_MIDDLE), after.params, accelerator.fallback
            ),
            step_max=step_max,
            step=jnp.where(to_point, step, accelerator.step),
            growth=growth,
        ),
    )


def _averaged(model, state: LoopState, chunks: Chunks, hyper, total_weight) -> LoopState:
    """A stochastic model's result: every restart that iterated and stayed finite
    takes the M-step of its averaged statistics and the mean log-likelihood of
    those parameters (one more E-step, the soft one)."""
    params = jax.vmap(model.m_step, in_axes=(0, 0, None))(state.average, state.params, hyper)
    _, log_likelihood_sum = batched_statistics(model, params, chunks, hyper)
    log_likelihood = log_likelihood_sum / total_weight
    usable = (
        (state.status != NON_FINITE)
        & (state.n_iter > 0)
        & jnp.isfinite(log_likelihood)
        & jax.vmap(model.is_finite)(params)
    )
    return state._replace(
        params=ops.tree_where(usable, params, state.params),
        log_likelihood=jnp.where(usable, log_likelihood, state.log_likelihood),
    )


def run_em(
    model,
    params,
    chunks: Chunks,
    hyper,
    *,
    max_iter,
    tol,
    n_trace: int,
    keys=None,
    accelerate=None,
) -> LoopState:
    """Iterate E and M steps for all restarts until each converges or fails.

    Parameters
    ----------
    model : a :class:`jaxem.contract.Model`.
    params : pytree with a leading restart axis ``R``.
    chunks : the data, see :func:`make_chunks`.
    hyper : numeric hyperparameters of the model (a pytree of arrays).
    max_iter : iteration cap (int or traced integer array: no recompile).
    tol : convergence tolerance (array or float; traced, so no recompile).
    n_trace : static number of trace columns, at least ``max_iter``
        (see :func:`trace_length`).
    keys : (R,) loop keys, required by a stochastic model
        (:meth:`~jaxem.contract.Model.stochastic`), else ignored.
    accelerate : None (plain EM) or ``"squarem"`` (static): SQUAREM cycles per
        restart (:func:`squarem_update`); every iteration is still one E-step (one
        EM-map evaluation) of every restart, so ``n_iter``, ``max_iter`` and the
        trace count E-steps, and the ``tol`` test compares the objectives of
        consecutive E-steps as in plain EM.

    A restart stops on its own tolerance: its parameters are frozen with
    ``jnp.where`` while the others go on (:func:`em_update`). A restart whose
    log-likelihood or new parameters are not finite keeps its last finite
    parameters and the status ``NON_FINITE``; it never aborts the batch.
    """
    check_accelerate(accelerate)
    if accelerate == "squarem":
        _check_squarem(model, params)
    total_weight = across_shards(jnp.sum(chunks.weights))
    max_iter = jnp.minimum(jnp.asarray(max_iter, jnp.int32), n_trace)
    stochastic = model.stochastic()
    if stochastic and keys is None:
        raise ValueError(f"{type(model).__name__} draws in its E-step: run_em needs keys.")
    keys = keys if stochastic else None
    average = None
    if stochastic:
        shapes = jax.eval_shape(lambda p: batched_statistics(model, p, chunks, hyper)[0], params)
        average = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), shapes)

    def cond(carry):
        iteration, state = carry
        return (iteration < max_iter) & jnp.any(state.status == RUNNING)

    def body(carry):
        iteration, state = carry
        iteration_keys = None
        if stochastic:
            iteration_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(state.key, iteration)
        stats, log_likelihood_sum = batched_statistics(
            model, state.params, chunks, hyper, iteration_keys
        )
        updated = em_update(
            model,
            state,
            iteration,
            stats,
            log_likelihood_sum,
            total_weight,
            hyper,
            max_iter=max_iter,
            tol=tol,
        )
        if accelerate == "squarem":
            updated = squarem_update(model, state, updated, iteration, max_iter)
        return iteration + 1, updated

    dtype = chunks.weights.dtype
    accelerator = _squarem_start(params, dtype) if accelerate == "squarem" else None
    start = start_state(params, n_trace, dtype, max_iter, keys, average, accelerator)
    _, state = jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), start))
    if stochastic:
        state = _averaged(model, state, chunks, hyper, total_weight)
    return state

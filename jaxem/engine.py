"""The engine: every compiled program of jaxem lives here.

- :func:`fit_traced` is the pure core: initialise ``R`` restarts, run batched EM in
  one ``lax.while_loop``, pick the best usable restart on the device. It composes
  with ``jax.jit`` and ``jax.vmap`` (for example over several data sets of equal
  shape).
- :func:`fit` is its host-side wrapper: checks, row padding to size buckets (so data
  sets of nearby sizes share one program), one compiled program, and a
  ``ValueError`` naming the fixes when every restart failed.
- :func:`initialise`, :func:`evaluate`, :func:`statistics` and :func:`sample` run a
  model's initialisation (with the keys of :func:`fit`), its per-row outputs on new
  data (chunked), its final E-step, and its sampler. Estimators and the command line
  call these and compile nothing of their own.

Compile once, reuse everywhere: ``max_iter``, ``tol`` and every numeric
hyperparameter are array inputs of the programs; rows are padded with zero weight
to :func:`padded_rows` buckets (data up to 64 MiB; larger data keeps its shape, where
a padded copy would cost memory and compiling is a small part of the fit); models
pad sizes that only change numbers (a mixture's ``n_components`` within
``max_components``). What remains static is the
model's structure, the data's padded shape and dtype, the restart count and the
trace length bucket of :func:`jaxem._iterate.trace_length`. Every program goes
through :func:`_program`; once :func:`enable_compilation_cache` is on, it is also kept
traced and lowered on disk (:mod:`jaxem._program_store`) for the next process.

The model contract is :class:`jaxem.contract.Model`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxem import _iterate, _program_store, ops
from jaxem._iterate import (
    ACCELERATIONS,
    CONVERGED,
    MAX_ITER,
    NON_FINITE,
    RUNNING,
    check_accelerate,
)
from jaxem.contract import STATUS_MESSAGES, Chunks, Status, padded_rows

__all__ = [
    "ACCELERATIONS",
    "check_accelerate",
    "fit",
    "fit_traced",
    "fit_sweep",
    "SweepResult",
    "initialise",
    "initial_shapes",
    "restart_keys",
    "loop_keys",
    "evaluate",
    "statistics",
    "sample",
    "per_restart",
    "FitResult",
    "TracedFit",
    "AllRestartsFailed",
    "RestartSummary",
    "Chunks",
    "Status",
    "default_chunk_size",
    "padded_rows",
    "enable_compilation_cache",
    "resolve_mesh",
    "online_step",
    "OnlineState",
    "minibatch_fit",
    "minibatch_step",
    "rows_across_processes",
    "ROWS",
    "RESTARTS",
    "RUNNING",
    "CONVERGED",
    "MAX_ITER",
    "NON_FINITE",
    "STATUS_MESSAGES",
]


#: Rows per chunk are chosen so one chunk's per-row work stays near this many elements.
_CHUNK_ELEMENTS = 1 << 21

_ALL_FAILED = (
    "All {n} restarts ended with non-finite log-likelihood or parameters. Try a larger "
    "reg_covar, fewer components, scaling the features, or float64 (float64 input to the "
    "estimators, or jax.enable_x64 around jaxem.fit)."
)


class AllRestartsFailed(ValueError):
    """Every restart of a fit ended non-finite; ``restarts`` says what each did.

    A ``ValueError``, so code that catches scikit-learn's error keeps working; the
    estimators catch this class (never its message) to raise their peer's message.
    """

    def __init__(self, message: str, restarts: RestartSummary):
        super().__init__(message)
        self.restarts = restarts


class RestartSummary(NamedTuple):
    """What every restart did; arrays have a leading restart axis ``R``.

    Attributes
    ----------
    log_likelihood : (R,) final mean per-sample log-likelihood (NaN or -inf if failed)
    n_iter : (R,) iterations run
    status : (R,) a :class:`~jaxem.contract.Status` code
    trace : (R, n_trace) mean per-sample log-likelihood per iteration, NaN-padded
        (``n_trace`` is ``max_iter`` rounded up to a bucket; columns past ``max_iter``
        are NaN)
    params : every restart's final parameters (leading axis ``R``)
    """

    log_likelihood: jax.Array
    n_iter: jax.Array
    status: jax.Array
    trace: jax.Array
    params: Any


class TracedFit(NamedTuple):
    """Result of :func:`fit_traced`: arrays only, so it can leave ``jit`` and ``vmap``.

    Attributes
    ----------
    params : parameters of the best usable restart
    log_likelihood : its mean per-sample log-likelihood (scalar array)
    best_restart : its index (ties within rounding go to the lowest index)
    status : its :class:`~jaxem.contract.Status` code
    n_iter : its iteration count
    any_usable : False when every restart ended non-finite (``params`` then are
        restart 0's last finite ones and must not be used)
    restarts : :class:`RestartSummary` of all restarts
    """

    params: Any
    log_likelihood: jax.Array
    best_restart: jax.Array
    status: jax.Array
    n_iter: jax.Array
    any_usable: jax.Array
    restarts: RestartSummary


class FitResult(NamedTuple):
    """Result of :func:`fit`.

    Attributes
    ----------
    params : parameters of the best restart (padded components trimmed)
    log_likelihood : its mean per-sample log-likelihood (scikit-learn's ``lower_bound_``)
    best_restart : its index
    converged : whether it converged within ``max_iter``
    n_iter : its iteration count
    restarts : :class:`RestartSummary` of all restarts
    """

    params: Any
    log_likelihood: float
    best_restart: int
    converged: bool
    n_iter: int
    restarts: RestartSummary


# -- sizes -------------------------------------------------------------------------------------
def default_chunk_size(n_rows: int, n_restarts: int, row_width: int) -> int:
    """Rows per chunk: all rows when small, else about 2M elements of E-step work.

    ``row_width`` is the per-row, per-restart work of one E-step (the model's
    ``row_width``); above 256 rows the result is a multiple of 256 so shapes repeat
    across data sets of similar size.
    """
    rows = _CHUNK_ELEMENTS // max(1, n_restarts * row_width)
    if rows >= 256:
        rows = (rows // 256) * 256
    return max(1, min(n_rows, rows))


def _pad_rows(x, weights, n_rows: int):
    """``x`` (pytree) and ``weights`` padded with zero rows to ``n_rows``."""

    def pad(leaf):
        widths = [(0, n_rows - leaf.shape[0])] + [(0, 0)] * (leaf.ndim - 1)
        return np.pad(leaf, widths) if isinstance(leaf, np.ndarray) else jnp.pad(leaf, widths)

    if weights.shape[0] == n_rows:
        return x, weights
    return jax.tree.map(pad, x), pad(weights)


#: Data up to this size is padded to a row bucket (compile reuse); larger data keeps its
#: shape: a padded copy would cost memory, and compiling is a small part of its fit.
_PADDED_BYTES = 1 << 26


def _nbytes(x) -> int:
    return sum(
        int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(x)
    )


def _float_dtype(leaves):
    for leaf in leaves:
        dtype = np.dtype(leaf.dtype) if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
        if np.issubdtype(dtype, np.floating):
            return jnp.dtype(jax.dtypes.canonicalize_dtype(dtype))
    return jnp.dtype(jax.dtypes.canonicalize_dtype(float))


# -- the traceable core --------------------------------------------------------------------
def _normalised_weights(weights):
    """Weights rescaled to sum to the number of rows they keep: EM is then invariant to
    multiplying every weight by a constant (the ``+ 10 eps`` count floors are not)."""
    kept = jnp.sum(weights > 0).astype(weights.dtype)
    return weights * (kept / jnp.sum(weights))


def restart_keys(key, n_restarts: int, first_restart=0):
    """One key per restart: restart ``r`` draws from ``fold_in(key, first_restart + r)``.

    A restart's key depends on its index only, never on how many restarts run, so
    restart ``r`` of a batch can be run again alone (``n_restarts=1,
    first_restart=r``) and restart 0 is what a fit with one restart runs.
    ``first_restart`` may be traced.

    >>> import jax
    >>> keys = restart_keys(jax.random.key(0), 4)
    >>> bool((jax.random.key_data(keys[2]) == jax.random.key_data(
    ...     restart_keys(jax.random.key(0), 1, first_restart=2)[0])).all())
    True
    """
    indices = jnp.arange(n_restarts, dtype=jnp.uint32) + jnp.asarray(first_restart, jnp.uint32)
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)


#: Stream of the fit's key that a stochastic model's draws in the loop come from (the
#: restarts' initialisations draw from ``restart_keys(key, ...)``).
_LOOP_STREAM = 0x5E4D


def loop_keys(model, key, n_restarts: int, first_restart=0):
    """Per-restart keys of a stochastic model's draws in the loop (None for other
    models): restart ``r`` draws from ``restart_keys(fold_in(key, _LOOP_STREAM))[r]``,
    so, like its initialisation, they depend on its index only."""
    if not model.stochastic():
        return None
    return restart_keys(jax.random.fold_in(key, _LOOP_STREAM), n_restarts, first_restart)


def refuse_stochastic(model, what: str) -> None:
    """Raise ``ValueError`` if ``model`` draws in its E-step: ``what`` has no keys to
    hand it."""
    if model.stochastic():
        raise ValueError(
            f"{what} does not run stochastic EM (assignment='stochastic'); use jaxem.fit, "
            "or assignment='soft' or 'hard'."
        )


def _over_restarts(function, per_restart: tuple, *shared):
    """``function(*per_restart[r], *shared)`` for every restart ``r`` (the leading axis
    of each of ``per_restart``), stacked."""
    if jax.tree.leaves(per_restart)[0].shape[0] == 1:
        # One restart (estimators' default): unbatched, so its loops (k-means++, Lloyd)
        # trace without vmap's batching rules, about 40 % faster.
        one = jax.tree.map(lambda leaf: leaf[0], per_restart)
        return jax.tree.map(lambda leaf: leaf[None], function(*one, *shared))
    in_axes = (0,) * len(per_restart) + (None,) * len(shared)
    return jax.vmap(function, in_axes=in_axes)(*per_restart, *shared)


def _initial_params(model, keys, chunks, hyper, seeds=None):
    """Every restart's ``model.init``, or ``model.init_from_seeds`` of ``seeds``
    (computed beforehand by :func:`_seed_program`) when given."""
    if seeds is None:
        return _over_restarts(model.init, (keys,), chunks, hyper)
    return _over_restarts(model.init_from_seeds, (seeds, keys), chunks, hyper)


#: Log-likelihoods within this many units of rounding (relative) of the highest count
#: as tied: restarts that reach the same optimum differ by a few ulps, and which of them
#: wins must not depend on that noise.
_TIE_ULPS = 64


def _select_best(state: _iterate.LoopState) -> TracedFit:
    """The usable restart with the highest log-likelihood, ties (within rounding) to
    the lowest index."""
    # A restart that never iterated (max_iter=0) keeps its initial parameters and a
    # log-likelihood of -inf; it is usable, not failed.
    usable = (state.status != NON_FINITE) & (
        jnp.isfinite(state.log_likelihood) | (state.n_iter == 0)
    )
    score = jnp.where(usable & ~jnp.isnan(state.log_likelihood), state.log_likelihood, -jnp.inf)
    top = jnp.max(score)
    eps = jnp.finfo(score.dtype).eps
    tied = score >= top - _TIE_ULPS * eps * jnp.abs(jnp.where(jnp.isfinite(top), top, 0.0))
    best = jnp.where(top > -jnp.inf, jnp.argmax(tied), jnp.argmax(usable)).astype(jnp.int32)
    return TracedFit(
        params=jax.tree.map(lambda leaf: leaf[best], state.params),
        log_likelihood=state.log_likelihood[best],
        best_restart=best,
        status=state.status[best],
        n_iter=state.n_iter[best],
        any_usable=jnp.any(usable),
        restarts=RestartSummary(
            state.log_likelihood, state.n_iter, state.status, state.trace, state.params
        ),
    )


def fit_traced(
    model,
    x,
    weights,
    key,
    *,
    n_restarts: int,
    max_iter=100,
    tol=1e-3,
    hyper=None,
    init_params=None,
    chunk_size: int | None = None,
    n_trace: int | None = None,
    first_restart=0,
    accelerate=None,
    seeds=None,
) -> TracedFit:
    """Pure form of :func:`fit`, usable inside ``jax.jit``, ``jax.vmap`` and ``lax`` code.

    Parameters
    ----------
    model : a :class:`~jaxem.contract.Model` (static).
    x : array or pytree of arrays with a leading row axis (traced).
    weights : (n_rows,) non-negative weights, 0 on padding (traced). Rescaled to
        sum to the number of kept rows, so only their ratios matter.
    key : PRNG key; restart ``r`` draws from ``restart_keys(key, ...)[r]``, exactly as
        :func:`fit` does.
    n_restarts : static number of restarts.
    max_iter, tol : iteration cap and tolerance (traced).
    hyper : numeric hyperparameters; default ``model.hyper(dtype of weights)``.
    init_params : initial parameters with a leading restart axis, or None for
        ``model.init``.
    chunk_size : static rows per chunk; default :func:`default_chunk_size`.
    n_trace : static trace length; at least the largest ``max_iter`` used
        (default :func:`jaxem._iterate.trace_length` of ``max_iter`` when it is a
        Python int, else 128). EM stops at ``min(max_iter, n_trace)``.
    first_restart : index of the first restart (traced): the restarts are
        ``first_restart, ..., first_restart + n_restarts - 1`` of :func:`restart_keys`.
        A stochastic model's draws in the loop come from :func:`loop_keys`.
    accelerate : None or "squarem" (static); see :func:`fit`.
    seeds : the restarts' seeds (:meth:`~jaxem.contract.Model.seeding`), with a leading
        restart axis, computed beforehand with the same keys; None (default) seeds
        here. Ignored with ``init_params``.

    Returns
    -------
    TracedFit
        The best usable restart chosen on the device; ``any_usable`` tells whether
        there was one (the host wrapper raises when not).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import jaxem
    >>> model = jaxem.mixture(jaxem.gaussian("diag"), n_components=2)
    >>> data = jax.random.normal(jax.random.key(0), (3, 100, 2))  # three data sets
    >>> data = data.at[:, :50].add(6.0)
    >>> fit_all = jax.jit(jax.vmap(
    ...     lambda x: jaxem.fit_traced(model, x, jnp.ones(100), jax.random.key(1), n_restarts=4)
    ... ))
    >>> fits = fit_all(data)
    >>> fits.params.components.means.shape, bool(fits.any_usable.all())
    ((3, 2, 2), True)
    """
    n_rows = weights.shape[0]
    dtype = weights.dtype
    if hyper is None:
        hyper = model.hyper(dtype)
    if chunk_size is None:
        chunk_size = default_chunk_size(n_rows, n_restarts, model.row_width(x))
    if n_trace is None:
        n_trace = _iterate.trace_length(max_iter) if isinstance(max_iter, int) else 128
    weights = _normalised_weights(weights)
    chunks = _iterate.make_chunks(x, weights, min(chunk_size, n_rows))
    if init_params is None:
        keys = restart_keys(key, n_restarts, first_restart)
        init_params = _initial_params(model, keys, chunks, hyper, seeds)
    state = _iterate.run_em(
        model,
        init_params,
        chunks,
        hyper,
        max_iter=max_iter,
        tol=tol,
        n_trace=n_trace,
        keys=loop_keys(model, key, n_restarts, first_restart),
        accelerate=accelerate,
    )
    return _select_best(state)


def _fit_body(
    model,
    x,
    weights,
    key,
    hyper,
    init_params,
    seeds,
    max_iter,
    tol,
    first_restart,
    *,
    n_restarts,
    chunk_size,
    n_trace,
    accelerate=None,
):
    return fit_traced(
        model,
        x,
        weights,
        key,
        n_restarts=n_restarts,
        max_iter=max_iter,
        tol=tol,
        hyper=hyper,
        init_params=init_params,
        chunk_size=chunk_size,
        n_trace=n_trace,
        first_restart=first_restart,
        accelerate=accelerate,
        seeds=seeds,
    )


#: XLA options of every engine program. YNNPACK fusions off: XLA:CPU (jaxlib 0.10)
#: hands reductions and products of vmapped (per-restart) arrays to YNNPACK, which ran
#: a 'diag' mixture's E-step (N=20,000, D=256, K=32, float32) at 13.8 s per iteration
#: against 0.33 s without; a full mixture's one-GEMM E-step was 1.4x faster without
#: too. Ignored by other backends.
_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
#: XLA options of the programs of small problems (:func:`_sized`), which run in
#: milliseconds and compile in seconds: XLA's older (LLVM IR, not MLIR) fusion
#: emitters, which compile faster and run small problems as fast. XLA compile times
#: on the 2-core CPU, a 3-state GaussianHMM on 1,000 observations, default emitters ->
#: older ones: evaluation 0.35 -> 0.19 s; fit loop, both at level 0 (below), 0.63 ->
#: 0.26 s. Not for large problems:
#: the older emitters ran a full mixture's EM (N = 100,000, D = 16, K = 16, float32)
#: 20 % slower.
_SMALL_PROGRAM_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
#: Without a persistent compilation cache, where every process compiles its programs
#: again, small problems also take XLA's cheapest backend optimisation: a Gaussian
#: mixture's fit on iris (k-means init, 3 components, full) compiled and ran once in
#: 0.85 s against 1.24 s, but ran 9.4 ms a fit against 3.7 ms once compiled. At that
#: level, one LLVM module instead of XLA's 32 parts for parallel codegen: the parts'
#: fixed costs outweighed the parallelism (2-core CPU, fresh processes, medians of 5:
#: XLA compile seconds of a BIC loop over K = 1..10 on Old Faithful 0.99 -> 0.77 s, a
#: 3-state GaussianHMM fit + score 0.74 -> 0.63 s, iris fits + scores 0.62 -> 0.52 s;
#: run times unchanged). Not at the default level, which compiled slower in one part
#: (benchmarks/startup.py, cache on, first process: XLA compile seconds of the grid
#: search 2.2 -> 2.6 s, the BIC loop 2.2 -> 2.6 s, the HMM fit 1.3 -> 1.7 s).
_UNCACHED_SMALL_PROGRAM_OPTIONS = {
    **_SMALL_PROGRAM_OPTIONS,
    "xla_backend_optimization_level": 0,
    "xla_cpu_parallel_codegen_split_count": 1,
}
#: Work (padded rows x row width x restarts) up to which a problem counts as small.
_SMALL_WORK = 1 << 18


def _program(function=None, *, static=(), compiler_options=None, variants=True):
    """``function(model, *arrays, **static)`` compiled once per model, static values and
    input shapes (``model`` is always static). When :func:`enable_compilation_cache` is
    on, the traced and lowered program is also kept on disk (:mod:`jaxem._program_store`),
    so a new process neither traces nor lowers it again. With ``variants``, the
    program's ``small`` and ``small_uncached`` attributes are the same program compiled
    for small problems (:func:`_sized` picks)."""
    if function is None:
        return functools.partial(
            _program, static=static, compiler_options=compiler_options, variants=variants
        )
    compiler_options = {**_COMPILER_OPTIONS, **(compiler_options or {})}
    static_argnames = ("model",) + tuple(static)
    jitted = jax.jit(function, static_argnames=static_argnames, compiler_options=compiler_options)
    # Inside a caller's trace the program is part of the caller's, which JAX compiles
    # with the caller's options (a nested jit may not carry its own).
    nested = jax.jit(function, static_argnames=static_argnames)
    _JITTED.extend((jitted, nested))
    name = function.__name__.strip("_")

    @functools.wraps(function)
    def run(model, *arrays, **statics):
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(arrays)):
            return nested(model, *arrays, **statics)
        result = _program_store.call(
            name, jitted, function, model, arrays, statics, compiler_options
        )
        _release_programs_near_map_limit()
        return result

    run.jitted = jitted  # for inspecting the compiled program (tests)
    if variants:
        for attribute, options in (
            ("small", _SMALL_PROGRAM_OPTIONS),
            ("small_uncached", _UNCACHED_SMALL_PROGRAM_OPTIONS),
        ):
            options = {**compiler_options, **options}
            setattr(
                run,
                attribute,
                _program(function, static=static, compiler_options=options, variants=False),
            )
    return run


def _work(model, x, n_restarts: int) -> int:
    """Padded rows x row width x restarts: the size :func:`_sized` goes by."""
    return jax.tree.leaves(x)[0].shape[0] * model.row_width(x) * int(n_restarts)


def _persistent_cache_on() -> bool:
    return (
        jax.config.jax_enable_compilation_cache and jax.config.jax_compilation_cache_dir is not None
    )


def _sized(program, work: int):
    """``program``, or its variant compiled for small problems when ``work`` (padded
    rows x row width x restarts) is at most :data:`_SMALL_WORK`: the one that compiles
    cheapest where no persistent cache keeps it (:data:`_UNCACHED_SMALL_PROGRAM_OPTIONS`)."""
    if work > _SMALL_WORK:
        return program
    return program.small if _persistent_cache_on() else program.small_uncached


# -- bounding the compiled programs a process keeps ---------------------------------------------
# Each compiled XLA:CPU program holds a few hundred memory mappings (its JIT-compiled
# code and data sections: measured ~850 per HMM estimator fit, 3-4 programs). A
# process that compiles a few hundred distinct programs (a long test run, a grid over
# many shapes) reaches Linux's vm.max_map_count (65,530 by default), and the next
# compile dies inside LLVM (segfault or abort). So once the mappings pass three
# quarters of the limit, jaxem drops its compiled programs: those still needed compile
# again (or load from the persistent cache). A compile adds a few hundred mappings,
# far less than the quarter left.
_JITTED: list = []
_compiled_since_check = [False]


def _note_compile(event: str, *_args, **_kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _compiled_since_check[0] = True


jax.monitoring.register_event_duration_secs_listener(_note_compile)


@functools.cache
def _max_map_count() -> int | None:
    try:
        return int(Path("/proc/sys/vm/max_map_count").read_text())
    except (OSError, ValueError):  # not Linux: no such limit to watch
        return None


def _map_count() -> int:
    with open("/proc/self/maps", "rb") as maps:
        return sum(1 for _ in maps)


def near_map_limit(fraction: float = 0.75) -> bool:
    """Whether the process's memory mappings have passed ``fraction`` of Linux's
    ``vm.max_map_count`` (False where there is no such limit)."""
    limit = _max_map_count()
    return limit is not None and _map_count() >= int(limit * fraction)


def _release_programs_near_map_limit() -> None:
    """Drop every compiled program of jaxem when the process's memory mappings pass
    three quarters of ``vm.max_map_count``; checked only after a compile."""
    if not _compiled_since_check[0]:
        return
    _compiled_since_check[0] = False
    if near_map_limit():
        release_compiled_programs()


def release_compiled_programs() -> None:
    """Drop every compiled program jaxem holds; they compile again when next used."""
    for jitted in _JITTED:
        jitted.clear_cache()
    _sharded_fit_program.clear_cache()
    _program_store.forget_loaded()


_FIT_STATIC = ("n_restarts", "chunk_size", "n_trace", "accelerate")
_fit_program = _program(_fit_body, static=_FIT_STATIC)


@_program(static=("n_restarts", "chunk_size"))
def _init_program(model, x, weights, key, hyper, seeds, first_restart, *, n_restarts, chunk_size):
    chunks = _iterate.make_chunks(x, _normalised_weights(weights), chunk_size)
    keys = restart_keys(key, n_restarts, first_restart)
    return _initial_params(model, keys, chunks, hyper, seeds)


@_program(static=("n_restarts", "chunk_size"))
def _seed_program(model, x, weights, key, hyper, first_restart, *, n_restarts, chunk_size):
    """Every restart's ``model.seed``, ``model`` a :class:`~jaxem.contract.Seeding`: a
    program of its own, which models with equal seedings share (a Gaussian mixture's
    k-means init, whatever the covariance type)."""
    chunks = _iterate.make_chunks(x, _normalised_weights(weights), chunk_size)
    keys = restart_keys(key, n_restarts, first_restart)
    return _over_restarts(model.seed, (keys,), chunks, hyper)


def _host_seeds(model, prepared: _Prepared, key, first_restart, n_restarts: int):
    """The restarts' seeds from :func:`_seed_program`, or None for a model without a
    seeding (its init then runs whole in the caller's program)."""
    seeding = model.seeding()
    if seeding is None:
        return None
    return _sized(_seed_program, _work(model, prepared.x, n_restarts))(
        seeding,
        prepared.x,
        prepared.weights,
        key,
        prepared.hyper,
        _check_first_restart(first_restart),
        n_restarts=int(n_restarts),
        chunk_size=prepared.chunk_size,
    )


# -- data streamed from the host (jaxem._stream runs the loop) -------------------------------
@_program(static=("chunk_size", "first"))
def _stream_statistics_program(model, params, total, x, weights, hyper, *, chunk_size, first):
    """Every restart's statistics of one host chunk, merged into ``total`` (the
    previous chunks'; ignored when ``first``)."""
    chunks = _iterate.make_chunks(x, weights, chunk_size)
    stats = _iterate.batched_statistics(model, params, chunks, hyper)
    if first:
        return stats
    merge = jax.vmap(lambda a, b: (model.combine_stats(a[0], b[0]), a[1] + b[1]))
    return merge(total, stats)


@_program()
def _stream_update_program(model, state, iteration, total, total_weight, hyper, max_iter, tol):
    stats, log_likelihood_sum = total
    return _iterate.em_update(
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


@_program(static=("n_trace", "dtype"))
def _stream_start_program(model, params, max_iter, *, n_trace, dtype):
    del model
    return _iterate.start_state(params, n_trace, jnp.dtype(dtype), max_iter)


@_program()
def _select_program(model, state):
    del model
    return _select_best(state)


# -- online (stepwise) EM ---------------------------------------------------------------------
@_program(static=("chunk_size",))
def _online_step_program(
    model, params, running, x, weights, hyper, step, represented, *, chunk_size, mesh=None
):
    if mesh is None:
        chunks = _iterate.make_chunks(x, weights, chunk_size)
        stats, log_likelihood_sum = _iterate.batched_statistics(model, params, chunks, hyper)
    else:  # the batch's rows split over the mesh (:data:`_sharded_online_step_program`)
        stats, log_likelihood_sum = _statistics_sharded_body(
            model, params, x, weights, hyper, chunk_size=chunk_size, restarts=True, mesh=mesh
        )
    batch_weight = jnp.sum(weights)
    # Per-row statistics of the batch (times the rows it stands for), so batches of
    # any size mix alike.
    stats = jax.vmap(model.scale_stats, in_axes=(0, None))(stats, represented / batch_weight)
    if running is not None:

        def mix(old, new):
            return model.combine_stats(
                model.scale_stats(old, 1 - step), model.scale_stats(new, step)
            )

        stats = jax.vmap(mix)(running, stats)
    new_params = jax.vmap(model.m_step, in_axes=(0, 0, None))(stats, params, hyper)
    log_likelihood = log_likelihood_sum / batch_weight
    finite = jax.vmap(model.is_finite)(new_params) & jnp.isfinite(log_likelihood)
    # A restart whose step went non-finite keeps its parameters and statistics.
    keep = ops.tree_where(finite, new_params, params)
    stats = stats if running is None else ops.tree_where(finite, stats, running)
    return keep, stats, jnp.where(finite, log_likelihood, -jnp.inf)


class OnlineState(NamedTuple):
    """Where online EM stands: every restart's parameters and running per-row
    statistics (leading restart axis), and how many steps were taken."""

    params: Any
    stats: Any
    n_steps: int


def online_step(
    model,
    state: OnlineState | None,
    x,
    *,
    init_params,
    step_decay=0.6,
    step_offset=2.0,
    rows_represented=None,
    weights=None,
    hyper=None,
    chunk_size=None,
    mesh=None,
):
    """One step of stepwise EM (Cappé and Moulines 2009) for every restart on a batch.

    The running per-row statistics ``s`` move towards the batch's, ``ŝ``:
    ``s ← (1 - γ) s + γ ŝ`` with ``γ = (t + step_offset)^-step_decay`` at step ``t``
    (the first step from ``state=None``, ``t = 0``, takes the batch's statistics
    whole), and the parameters are the M-step of ``s``. ``0.5 < step_decay <= 1``
    gives Cappé and Moulines' convergence; smaller values forget faster (0: every
    step takes the batch's statistics whole).

    With ``rows_represented`` ``D``, ``ŝ`` is the batch's per-row statistics times
    ``D`` (the batch standing for a corpus of ``D`` rows: Hoffman, Blei and Bach's
    online variational Bayes for LDA, whose M-step wants corpus totals); a ``state``
    built by the caller (running statistics and ``n_steps``) then continues a fit
    started elsewhere.

    Parameters
    ----------
    model : a :class:`~jaxem.contract.Model`.
    state : the previous :class:`OnlineState`, or None to start from ``init_params``.
    x : the batch (rows padded to size buckets, so batches of nearby sizes share a
        program).
    init_params : parameters with a leading restart axis, used when ``state`` is None.
    step_decay : ``α`` of the step size.
    step_offset : ``τ`` of the step size ``(t + τ)^-α``; must be positive.
    rows_represented : None (per-row statistics) or the number of rows the batch
        stands for (its per-row statistics are multiplied by it).
    weights, hyper, chunk_size : as :func:`fit`.
    mesh : as :func:`statistics`: the batch's rows split over devices.

    Returns
    -------
    state : the new :class:`OnlineState`.
    log_likelihood : (R,) numpy, each restart's mean log-likelihood of the batch
        under its parameters before the step (``-inf`` where the step went
        non-finite; that restart keeps its parameters).
    """
    refuse_stochastic(model, "online_step")
    if not 0 <= float(step_decay) <= 1:
        raise ValueError(f"step_decay must be in [0, 1], got {step_decay!r}.")
    if not float(step_offset) > 0:
        raise ValueError(f"step_offset must be positive, got {step_offset!r}.")
    params = init_params if state is None else state.params
    n_restarts = jax.tree.leaves(params)[0].shape[0]
    mesh = _rows_mesh(mesh, x, "online_step")
    prepared = _prepare(model, x, weights, hyper, n_restarts, chunk_size, mesh)
    n_steps = 0 if state is None else state.n_steps
    step = 1.0 if state is None else (n_steps + float(step_offset)) ** -float(step_decay)
    represented = 1.0 if rows_represented is None else float(rows_represented)
    weights = prepared.weights
    arrays = (
        params,
        None if state is None else state.stats,
        prepared.x,
        weights * (np.sum(weights > 0) / np.sum(weights)),
        prepared.hyper,
        np.asarray(step, prepared.dtype),
        np.asarray(represented, prepared.dtype),
    )
    if mesh is None:
        program = _online_step_program
    else:
        program = functools.partial(_sharded_online_step_program, mesh=mesh)
    params, stats, log_likelihood = program(model, *arrays, chunk_size=prepared.chunk_size)
    return OnlineState(params, stats, n_steps + 1), np.asarray(log_likelihood)


# -- mini-batch k-means ----------------------------------------------------------------------
@_program()
def _minibatch_fit_program(model, fit, x, indices, active, key, options):
    """``indices.shape[0]`` steps of ``model.minibatch_fit_step`` in one ``lax.scan``;
    steps past ``active`` or after the fit stopped change nothing (``lax.cond`` skips
    their work) and record zeros."""
    keys = jax.random.split(key, indices.shape[0])
    record = jax.eval_shape(model.minibatch_fit_step, fit, x[indices[0]], keys[0], options)[1]

    def skip(fit, index, step_key):
        del index, step_key
        return fit, jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), record)

    def run(fit, index, step_key):
        return model.minibatch_fit_step(fit, x[index], step_key, options)

    def body(fit, inputs):
        index, on, step_key = inputs
        return jax.lax.cond(on & ~fit.stopped, run, skip, fit, index, step_key)

    return jax.lax.scan(body, fit, (indices, active, keys))


def minibatch_fit(model, x, fit, blocks):
    """Run a mini-batch fit over blocks of pre-drawn batches until it stops.

    The rows go to the device once (padded to a row bucket, so data sets of nearby
    sizes share the program); each block of steps is one program call, a
    ``lax.scan`` over its batches' row indices, so there is no host round-trip per
    step. The next block is drawn on the host while the device runs the current
    one; the host reads the ``stopped`` flag once per block.

    Parameters
    ----------
    model : a model with ``minibatch_fit_step`` (:class:`jaxem.KMeansModel`).
    x : (n, D) rows.
    fit : the starting state (:class:`jaxem.models.kmeans.MiniBatchFitState`).
    blocks : iterable of ``(indices, active, key, options)``: (S, B) int32 row
        indices of S batches, (S,) bool which of them to run (the last block is
        padded), a PRNG key, and the step options; every block has the same S.

    Returns
    -------
    fit : the final state (on the device).
    records : the per-step records of the steps run, as numpy arrays.
    """
    n_rows = x.shape[0]
    n_padded = model.padded_rows(n_rows) if _nbytes(x) <= _PADDED_BYTES else n_rows
    x, _ = _pad_rows(x, np.ones((n_rows,), np.float32), n_padded)
    x = jnp.asarray(x)
    records = []
    blocks = iter(blocks)
    block = next(blocks, None)
    while block is not None:
        indices, active, key, options = block
        fit, record = _minibatch_fit_program(model, fit, x, indices, active, key, options)
        records.append(record)
        block = next(blocks, None)  # drawn while the device runs this one
        if block is not None and bool(fit.stopped):
            break
    records = jax.tree.map(lambda *leaves: np.concatenate(leaves), *jax.device_get(records))
    n_steps = int(fit.step)
    return fit, jax.tree.map(lambda leaf: leaf[:n_steps], records)


@_program()
def _minibatch_step_program(model, state, x, weights, n_rows, increment, key, ratio):
    return model.minibatch_step(state, x, weights, n_rows, increment, key, ratio)


def minibatch_step(model, state, x, weights, *, increment, key, ratio):
    """One ``model.minibatch_step`` on the batch ``x`` with ``weights``, its rows padded
    to a bucket (zero weight) so batches of nearby sizes share one program.

    Returns ``(state, inertia, n_reassigned, shift)`` as the model's hook does.
    """
    n_rows = x.shape[0]
    x, weights = _pad_rows(x, weights, model.padded_rows(n_rows))
    return _minibatch_step_program(
        model,
        state,
        x,
        weights,
        np.int32(n_rows),
        np.int32(increment),
        key,
        np.asarray(ratio, x.dtype),
    )


# -- several devices --------------------------------------------------------------------------
#: Mesh axis names the engine understands: rows split over ``"rows"``, restarts over
#: ``"restarts"``.
ROWS, RESTARTS = "rows", "restarts"


def _axis_size(mesh, name) -> int:
    return int(mesh.shape[name]) if name in mesh.axis_names else 1


def _restart_padding(n_restarts: int, mesh) -> int:
    """Restarts run: ``n_restarts`` rounded up to a multiple of the restart shards."""
    shards = _axis_size(mesh, RESTARTS)
    return -(-n_restarts // shards) * shards


def _fit_sharded_body(
    model,
    x,
    weights,
    key,
    hyper,
    init_params,
    max_iter,
    tol,
    first_restart,
    *,
    n_restarts,
    chunk_size,
    n_trace,
    mesh,
    accelerate=None,
):
    """:func:`fit_traced` with the rows and/or the restarts split over ``mesh``.

    Inside one ``shard_map`` every device initialises and iterates its slice of the
    restarts over its block of the rows: each E-step sums its own chunks, and the
    shards' statistics are merged by one collective per iteration
    (:func:`jaxem._iterate.across_shards`); the data never moves. Devices holding
    different restarts run their own loops (a slice whose restarts all stopped stops).
    The best restart is chosen after, over all of them.
    """
    rows = ROWS if ROWS in mesh.axis_names else None
    restarts = RESTARTS if RESTARTS in mesh.axis_names else None
    n_run = _restart_padding(n_restarts, mesh)
    row_spec = jax.sharding.PartitionSpec(rows)
    restart_spec = jax.sharding.PartitionSpec(restarts)
    replicated = jax.sharding.PartitionSpec()
    weights = _normalised_weights(weights)

    def local(x, weights, start, keys, hyper, max_iter, tol):
        with _iterate.rows_sharded(rows):
            chunks = _iterate.make_chunks(x, weights, chunk_size)
            params = (
                start if init_params is not None else _initial_params(model, start, chunks, hyper)
            )
            return _iterate.run_em(
                model,
                params,
                chunks,
                hyper,
                max_iter=max_iter,
                tol=tol,
                n_trace=n_trace,
                keys=keys,
                accelerate=accelerate,
            )

    if init_params is None:
        start = restart_keys(key, n_run, first_restart)
    else:  # extra restarts (to fill the last shard) repeat the last one and are dropped
        index = jnp.minimum(jnp.arange(n_run), n_restarts - 1)
        start = jax.tree.map(lambda leaf: leaf[index], init_params)
    # Computed on every device; each then keeps its slice.
    start = jax.tree.map(lambda leaf: _laid_out(leaf, mesh, restart_spec), start)
    keys = loop_keys(model, key, n_run, first_restart)
    if keys is not None:
        keys = _laid_out(keys, mesh, restart_spec)
    state = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(
            jax.tree.map(lambda _: row_spec, x),
            row_spec,
            jax.tree.map(lambda _: restart_spec, start),
            jax.tree.map(lambda _: restart_spec, keys),
            jax.tree.map(lambda _: replicated, hyper),
            replicated,
            replicated,
        ),
        out_specs=restart_spec,
        check_vma=False,
    )(x, weights, start, keys, hyper, max_iter, tol)
    # Every restart's results on every device, then the best one chosen.
    return _select_best(
        jax.tree.map(lambda leaf: _laid_out(leaf, mesh, replicated)[:n_restarts], state)
    )


def _laid_out(leaf, mesh, spec):
    """``leaf`` laid out by ``spec`` over ``mesh`` inside a traced program: moved
    explicitly on a mesh of explicit axes (``jax.make_mesh``'s default), constrained
    on one of automatic axes (``jax.sharding.Mesh``'s)."""
    sharding = jax.sharding.NamedSharding(mesh, spec)
    explicit = all(kind == jax.sharding.AxisType.Explicit for kind in mesh.axis_types)
    if explicit:
        return jax.reshard(leaf, sharding)
    return jax.lax.with_sharding_constraint(leaf, sharding)


#: Not through :func:`_program`: the program store keeps one-device programs only (a
#: sharded program is bound to its mesh and its inputs' shardings).
_sharded_fit_program = jax.jit(
    _fit_sharded_body,
    static_argnames=("model", "n_restarts", "chunk_size", "n_trace", "mesh", "accelerate"),
    compiler_options=_COMPILER_OPTIONS,
)


def resolve_mesh(mesh, x=None):
    """The ``jax.sharding.Mesh`` a fit runs on, or None for one device.

    ``mesh`` is None (one device, unless ``x`` is a ``jax.Array`` already sharded by
    a ``NamedSharding``: its mesh), an int (the rows split over the first that many
    devices), or a ``Mesh`` whose axes are among ``"rows"`` and ``"restarts"``.
    """
    if mesh is None:
        sharding = getattr(x, "sharding", None)
        if isinstance(sharding, jax.sharding.NamedSharding) and sharding.mesh.size > 1:
            mesh = sharding.mesh
        else:
            return None
    if isinstance(mesh, (int, np.integer)) and not isinstance(mesh, bool):
        devices = jax.devices()
        if not 1 <= mesh <= len(devices):
            raise ValueError(
                f"mesh={mesh} asks for {mesh} devices but {len(devices)} are visible; "
                "pass at most jax.device_count(), or a jax.sharding.Mesh."
            )
        if mesh == 1:
            return None
        return jax.sharding.Mesh(np.asarray(devices[:mesh]), (ROWS,))
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(
            f"mesh must be None, a device count (int) or a jax.sharding.Mesh, got {mesh!r}."
        )
    unknown = set(mesh.axis_names) - {ROWS, RESTARTS}
    if unknown:
        raise ValueError(
            f"mesh axes must be named {ROWS!r} (rows split over devices) and/or "
            f"{RESTARTS!r} (restarts split over devices); got {mesh.axis_names}. Build it "
            f"with e.g. jax.make_mesh((n,), ({ROWS!r},))."
        )
    return mesh


def _put_rows(x, weights, mesh):
    """``x`` and ``weights`` placed with their rows split over the mesh's row axis (and
    copied over its restart axis); arrays already laid out so are left as they are."""
    rows = ROWS if ROWS in mesh.axis_names else None
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(rows))

    def put(leaf):
        if isinstance(leaf, jax.Array) and leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
            return leaf
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            raise ValueError(
                "x spans several processes but is not split by rows over the mesh "
                f"({leaf.sharding}); build it with jaxem.rows_across_processes."
            )
        return jax.device_put(leaf, sharding)

    return jax.tree.map(put, x), put(weights)


def rows_across_processes(x, weights=None, *, mesh=None):
    """Global arrays of every process's own rows, to fit them together.

    Call it in every process (after ``jax.distributed.initialize``) with that
    process's rows; pass the result to :func:`fit` (or ``fit(..., mesh=...)`` of the
    estimators' functional core). Rows are placed on the process's own devices only:
    no process ever holds another's rows. Processes with fewer rows are padded with
    rows of weight 0, so counts may differ.

    Parameters
    ----------
    x : array (n_local, ...) or pytree of arrays: this process's rows.
    weights : (n_local,) sample weights of those rows; default ones.
    mesh : ``jax.sharding.Mesh`` with a ``"rows"`` axis over the devices of every
        process, in process order; default all of ``jax.devices()``.

    Returns
    -------
    x, weights
        ``jax.Array`` of ``n_processes x n_per_process`` rows split over ``"rows"``:
        process ``p``'s rows come ``p``-th, as if the processes' rows were stacked
        in order.
    """
    from jax.experimental import multihost_utils

    if mesh is None:
        mesh = jax.sharding.Mesh(np.asarray(jax.devices()), (ROWS,))
    mesh = resolve_mesh(mesh)
    if mesh is None or ROWS not in mesh.axis_names:
        raise ValueError(f"mesh needs a {ROWS!r} axis over several devices.")
    x = jax.tree.map(np.asarray, x)
    leaves = jax.tree.leaves(x)
    n_local = leaves[0].shape[0]
    dtype = _float_dtype(leaves)
    weights = np.ones((n_local,), dtype) if weights is None else np.asarray(weights, dtype)
    if weights.shape != (n_local,) or any(leaf.shape[:1] != (n_local,) for leaf in leaves):
        raise ValueError("Every array in x, and weights, must have the same number of rows.")
    counts = np.asarray(multihost_utils.process_allgather(np.asarray([n_local]))).reshape(-1)
    local_devices = jax.local_device_count()
    per_process = -(-int(counts.max()) // local_devices) * local_devices
    x, weights = _pad_rows(x, weights, per_process)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(ROWS))

    def globalise(leaf):
        return jax.make_array_from_process_local_data(sharding, leaf)

    return jax.tree.map(globalise, x), globalise(weights)


# -- host-side API -----------------------------------------------------------------------------
class _Prepared(NamedTuple):
    x: Any
    weights: Any
    n_rows: int
    dtype: Any
    hyper: Any
    chunk_size: int


def _prepare(model, x, weights, hyper, n_restarts, chunk_size, mesh=None) -> _Prepared:
    """Checks and row padding shared by the host-side entry points.

    With a ``mesh`` the rows are padded so every shard holds whole chunks of equal size
    (the chunks of a one-device fit with the same ``chunk_size``, plus empty ones at
    the end) and placed on the devices; rows that span several processes are used as
    they are (each process padded its own, see :func:`rows_across_processes`).
    """
    if not isinstance(n_restarts, (int, np.integer)) or n_restarts < 1:
        raise ValueError(f"n_restarts must be a positive int, got {n_restarts!r}.")
    leaves = jax.tree.leaves(x)
    if not leaves:
        raise ValueError("x holds no arrays.")
    n_rows = leaves[0].shape[0]
    if n_rows == 0:
        raise ValueError("x has 0 rows; at least one is required.")
    if any(leaf.shape[:1] != (n_rows,) for leaf in leaves):
        raise ValueError("Every array in x must have the same number of rows.")
    dtype = _float_dtype(leaves)
    if mesh is not None and not all(_addressable(leaf) for leaf in leaves):
        return _prepare_across_processes(model, x, weights, hyper, n_restarts, chunk_size, mesh)
    if weights is None:
        weights = np.ones((n_rows,), dtype)
    else:
        weights = np.asarray(weights, dtype)
        if weights.shape != (n_rows,):
            raise ValueError(f"weights must have shape ({n_rows},), got {weights.shape}.")
        if not (np.all(np.isfinite(weights)) and np.all(weights >= 0) and np.any(weights > 0)):
            raise ValueError(
                "weights must be finite, non-negative and not all zero; drop the rows you "
                "want to ignore or give them weight 0."
            )
    if hyper is None:
        hyper = model.hyper(dtype)
    _check_chunk_size(chunk_size)
    n_padded = model.padded_rows(n_rows) if _nbytes(x) <= _PADDED_BYTES else n_rows
    if mesh is None:
        x, weights = _pad_rows(x, weights, n_padded)
        if chunk_size is None:
            chunk_size = default_chunk_size(n_padded, int(n_restarts), model.row_width(x))
        return _Prepared(x, weights, n_rows, dtype, hyper, int(min(chunk_size, n_padded)))
    n_shards = _axis_size(mesh, ROWS)
    per_shard = -(-n_padded // n_shards)
    chunk_size = _sharded_chunk_size(model, x, per_shard, n_restarts, chunk_size, mesh)
    per_shard = -(-per_shard // chunk_size) * chunk_size
    x, weights = _put_rows(*_pad_rows(x, weights, n_shards * per_shard), mesh)
    return _Prepared(x, weights, n_rows, dtype, hyper, chunk_size)


def _check_chunk_size(chunk_size):
    if chunk_size is not None and (not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}.")


def _sharded_chunk_size(model, x, per_shard, n_restarts, chunk_size, mesh) -> int:
    """Rows per chunk on each device: at most its rows; by default sized, as
    :func:`default_chunk_size`, for the restarts each device runs."""
    if chunk_size is None:
        local_restarts = _restart_padding(int(n_restarts), mesh) // _axis_size(mesh, RESTARTS)
        chunk_size = default_chunk_size(per_shard, local_restarts, model.row_width(x))
    return int(min(chunk_size, per_shard))


def _addressable(leaf) -> bool:
    return not isinstance(leaf, jax.Array) or leaf.is_fully_addressable


def _prepare_across_processes(model, x, weights, hyper, n_restarts, chunk_size, mesh):
    """:func:`_prepare` for rows that span processes: no padding or copy (each process
    holds its block, whole on its devices); weights default to ones laid out alike."""
    leaves = jax.tree.leaves(x)
    n_rows = leaves[0].shape[0]
    dtype = _float_dtype(leaves)
    if ROWS not in mesh.axis_names:
        raise ValueError(
            f"Rows spread over processes need a mesh with a {ROWS!r} axis; got {mesh.axis_names}."
        )
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(ROWS))
    if weights is None:
        weights = jax.make_array_from_callback(
            (n_rows,), sharding, lambda index: np.ones((n_rows,), dtype)[index]
        )
    elif not (isinstance(weights, jax.Array) and weights.shape == (n_rows,)):
        raise ValueError(
            "With rows spread over processes, weights must be None or a jax.Array of "
            f"shape ({n_rows},) laid out as x (see jaxem.rows_across_processes)."
        )
    if hyper is None:
        hyper = model.hyper(dtype)
    _check_chunk_size(chunk_size)
    per_shard = n_rows // _axis_size(mesh, ROWS)
    chunk_size = _sharded_chunk_size(model, x, per_shard, n_restarts, chunk_size, mesh)
    return _Prepared(x, weights, n_rows, dtype, hyper, chunk_size)


def fit(
    model,
    x,
    *,
    key,
    n_restarts: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    weights=None,
    init_params=None,
    chunk_size: int | None = None,
    hyper=None,
    first_restart: int = 0,
    mesh=None,
    accelerate=None,
) -> FitResult:
    """Fit ``model`` to ``x`` with ``n_restarts`` batched EM restarts.

    Parameters
    ----------
    model : a :class:`~jaxem.contract.Model`, e.g. ``jaxem.mixture(jaxem.gaussian(), 3)``.
    x : array (n_samples, ...) or pytree of arrays sharing the first axis
        The data; its floating dtype is kept (JAX's conventions: float64 needs 64-bit
        mode, e.g. ``with jax.enable_x64(True):``).
    key : PRNG key (``jax.random.key``); restart ``r`` draws from
        ``restart_keys(key, n_restarts)[r]``, which does not depend on ``n_restarts``.
    n_restarts : number of restarts, all run in one compiled program.
    max_iter : iteration cap per restart (an input of the program: changing it within
        its bucket of :func:`jaxem._iterate.trace_length` does not recompile).
    tol : stop a restart when ``|Δ mean per-sample log-likelihood| < tol``
        (or the model's own criterion).
    weights : (n_samples,) non-negative sample weights; default all ones. Only their
        ratios matter.
    init_params : initial parameters instead of ``model.init``: one set (broadcast
        to every restart) or a pytree with a leading axis of ``n_restarts``.
    chunk_size : rows per chunk of the E-step; default :func:`default_chunk_size`.
    hyper : override ``model.hyper(dtype)`` (numeric hyperparameters).
    first_restart : run restarts ``first_restart, ...`` of :func:`restart_keys`
        (an input of the program: changing it does not recompile). With
        ``n_restarts=1`` it runs one restart of a batch again on its own.
    mesh : None, int or ``jax.sharding.Mesh``
        Devices to spread the fit over (see :func:`resolve_mesh`): an int splits the
        rows over that many devices; a ``Mesh`` with axes ``"rows"`` and/or
        ``"restarts"`` splits the rows, the restarts, or both (restarts are rounded up
        to fill the restart axis; the extra ones are dropped). None uses one device,
        unless ``x`` is a ``jax.Array`` already split by a ``NamedSharding`` (its mesh
        is used), such as :func:`jaxem.rows_across_processes` builds for several
        processes. The result equals the one-device fit with the same ``chunk_size``,
        up to the rounding of sums (statistics merge across devices in another order).
        Each E-step merges the devices' statistics with one collective; the rows never
        move.
    accelerate : None or "squarem"
        None (default): plain EM. ``"squarem"``: SQUAREM (Varadhan and Roland 2008,
        scheme S3), each restart on its own inside the same loop: two EM steps, a
        squared extrapolation in the model's unconstrained parameterisation
        (:meth:`~jaxem.contract.Model.unconstrain`) and one stabilising EM step,
        the extrapolated point refused (the restart goes on from the plain double
        EM step) when its objective is lower than before it or not finite, so the
        monitored objective never decreases. Every iteration is one E-step (EM-map
        evaluation): ``n_iter``, ``max_iter`` and the trace count E-steps, and ``tol``
        is tested on consecutive E-steps' objectives as in plain EM. Raises
        ``ValueError`` for models without an unconstrained parameterisation and for
        stochastic EM. Not offered by the streamed, online and differentiable fits.

    Returns
    -------
    FitResult
        The best restart (highest final log-likelihood among finite restarts, ties
        within rounding to the lowest index) and a summary of all restarts.

    Raises
    ------
    ValueError
        If every restart ended with non-finite values, or for invalid arguments.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import jaxem
    >>> X = jax.random.normal(jax.random.key(0), (200, 2))
    >>> model = jaxem.mixture(jaxem.gaussian("full"), n_components=1)
    >>> result = jaxem.fit(model, X, key=jax.random.key(1), n_restarts=8)
    >>> result.restarts.n_iter.shape, bool(result.converged)
    ((8,), True)
    """
    if not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative int, got {max_iter!r}.")
    check_accelerate(accelerate)
    mesh = resolve_mesh(mesh, jax.tree.leaves(x)[0] if jax.tree.leaves(x) else None)
    prepared = _prepare(model, x, weights, hyper, n_restarts, chunk_size, mesh)
    if init_params is not None:
        init_params = _broadcast_restarts(init_params, model, prepared, int(n_restarts))
    if mesh is not None:
        program = functools.partial(_sharded_fit_program, mesh=mesh)
        extra = ()
    else:
        program = _sized(_fit_program, _work(model, prepared.x, n_restarts))
        seeds = None
        if init_params is None:  # seeded in a program of its own, shared where it can be
            seeds = _host_seeds(model, prepared, key, first_restart, n_restarts)
        extra = (seeds,)
    traced = program(
        model,
        prepared.x,
        prepared.weights,
        key,
        prepared.hyper,
        init_params,
        *extra,
        np.asarray(max_iter, np.int32),
        np.asarray(tol, prepared.dtype),
        _check_first_restart(first_restart),
        n_restarts=int(n_restarts),
        chunk_size=prepared.chunk_size,
        n_trace=_iterate.trace_length(max_iter),
        accelerate=accelerate,
    )
    return finish(model, traced)


class SweepResult(NamedTuple):
    """Result of :func:`fit_sweep`: numpy arrays with a leading sweep axis ``S``.

    Attributes
    ----------
    fits : :class:`TracedFit` of every hyperparameter set (untrimmed: padded
        components included; ``any_usable`` False where every restart failed)
    outputs : one ``(S, n_rows)`` array per name in ``outputs``: the per-row values of
        each set's best parameters on the rows that were fitted (a final E-step)
    """

    fits: TracedFit
    outputs: tuple


def _sweep_body(
    model,
    x,
    weights,
    key,
    sweep,
    max_iter,
    tol,
    *,
    n_restarts,
    chunk_size,
    n_trace,
    outputs,
    accelerate=None,
):
    if jnp.issubdtype(key.dtype, jnp.integer):  # a seed: the key is made here, not eagerly
        key = jax.random.key(key)
    # The hyperparameters are made inside the program too: made eagerly, their dtype
    # conversions would each compile a small program of their own.
    base = model.hyper(weights.dtype)

    def one(values):
        fields = {
            name: jax.tree.map(
                lambda b, v: jnp.asarray(v, jnp.result_type(b)), base[i], values[name]
            )
            for i, name in enumerate(base._fields)
            if name in values
        }
        traced = fit_traced(
            model,
            x,
            weights,
            key,
            n_restarts=n_restarts,
            max_iter=max_iter,
            tol=tol,
            hyper=base._replace(**fields),
            chunk_size=chunk_size,
            n_trace=n_trace,
            accelerate=accelerate,
        )
        values = _per_row_outputs(model, traced.params, x, outputs, chunk_size, False)
        return traced, values

    # The while_loop under vmap runs until the slowest set stops; a set that stopped
    # keeps its state (batched loops select), so every set ends as it would alone.
    return jax.vmap(one)(sweep)


_sweep_program = _program(_sweep_body, static=_FIT_STATIC + ("outputs",))


def fit_sweep(
    model,
    x,
    sweep,
    *,
    key,
    n_restarts: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    weights=None,
    chunk_size: int | None = None,
    outputs: tuple = (),
    accelerate=None,
) -> SweepResult:
    """Fit ``model`` once per set of hyperparameter values, all in one program.

    ``sweep`` maps fields of ``model.hyper(dtype)`` to values with a leading axis
    ``S``: set ``s`` fits with those fields replaced by their ``s``-th values. A sweep
    over a mixture's ``n_components`` is ``{"n_active": [1, 2, ..., K]}`` with the
    model padded to ``max_components >= K``. Every set runs :func:`fit_traced` with
    the same ``key``, so set ``s`` starts its restarts as :func:`fit` with that hyper
    does and ends where that fit ends, up to rounding; after the fit, the best
    parameters' per-row ``outputs`` (names in ``model.outputs``) are computed on the
    rows in the same program (a final E-step).

    Parameters
    ----------
    model : a :class:`~jaxem.contract.Model` (static).
    x : array (n_samples, ...) or pytree of arrays sharing the first axis.
    sweep : dict of hyper field name -> array (or pytree, like the field) with a
        leading axis ``S``, the same for every entry.
    key : PRNG key of every set's restarts (as :func:`fit`'s), or an int seed, for
        which the key ``jax.random.key(seed)`` is made inside the program.
    n_restarts, max_iter, tol, weights, chunk_size, accelerate : as :func:`fit`.
    outputs : names of per-row outputs of the best parameters, e.g. ``("log_prob",)``.

    Returns
    -------
    SweepResult
        Host (numpy) arrays; nothing is trimmed and nothing raises when a set's
        restarts all failed (its ``fits.any_usable`` is False): the caller decides.

    Examples
    --------
    >>> import jax, numpy as np
    >>> import jaxem
    >>> X = np.concatenate([np.zeros((40, 1)), np.full((40, 1), 6.0)])
    >>> X = X + np.random.default_rng(0).normal(size=X.shape)
    >>> model = jaxem.mixture(jaxem.gaussian("diag"), 1, max_components=4)
    >>> sweep = fit_sweep(model, X.astype(np.float32), {"n_active": np.arange(1, 5)},
    ...                   key=0, n_restarts=4, outputs=("log_prob",))
    >>> sweep.outputs[0].shape, bool(sweep.fits.any_usable.all())
    ((4, 80), True)
    >>> sweep.fits.log_likelihood.argmax() > 0  # one component fits worst
    np.True_
    """
    names = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    unknown = [name for name in names if name not in model.outputs]
    if unknown:
        raise ValueError(
            f"{type(model).__name__} has no output {unknown[0]!r}; it has {model.outputs}."
        )
    if not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative int, got {max_iter!r}.")
    check_accelerate(accelerate)
    if not isinstance(sweep, dict) or not sweep:
        raise ValueError(
            "sweep must be a non-empty dict of hyper field names to values with a "
            "leading axis, e.g. {'n_active': [1, 2, 3]}."
        )
    sweep = {name: jax.tree.map(np.asarray, value) for name, value in sweep.items()}
    leaves = jax.tree.leaves(sweep)
    if any(np.ndim(leaf) < 1 for leaf in leaves):
        raise ValueError("Every value in sweep needs a leading sweep axis.")
    if len({np.shape(leaf)[0] for leaf in leaves}) != 1 or np.shape(leaves[0])[0] < 1:
        raise ValueError("Every value in sweep must have the same, non-zero leading axis.")
    if isinstance(key, (int, np.integer)):
        if not 0 <= key < 2**31:
            raise ValueError(f"An int key is a seed in [0, 2**31), got {key}.")
        key = np.asarray(key, np.int32)
    # hyper=() skips _prepare's eager model.hyper: the program makes its own.
    prepared = _prepare(model, x, weights, (), n_restarts, chunk_size)
    fields = jax.eval_shape(lambda: model.hyper(prepared.dtype))._fields  # traced, not run
    unknown = [name for name in sweep if name not in fields]
    if unknown:
        raise ValueError(
            f"sweep names {unknown[0]!r}, which is not a hyperparameter of "
            f"{type(model).__name__}; its hyper has {fields}."
        )
    n_sets = np.shape(leaves[0])[0]
    program = _sized(_sweep_program, _work(model, prepared.x, n_restarts) * n_sets)
    fits, values = program(
        model,
        prepared.x,
        prepared.weights,
        key,
        sweep,
        np.asarray(max_iter, np.int32),
        np.asarray(tol, prepared.dtype),
        n_restarts=int(n_restarts),
        chunk_size=prepared.chunk_size,
        n_trace=_iterate.trace_length(max_iter),
        outputs=names,
        accelerate=accelerate,
    )
    fits, values = jax.device_get((fits, values))
    # Sliced on the host: a device slice would compile once per row count.
    return SweepResult(fits, tuple(np.asarray(v)[:, : prepared.n_rows] for v in values))


def finish(model, traced: TracedFit) -> FitResult:
    """Host-side result of a :class:`TracedFit`: raise if every restart failed, trim
    padded components, convert the scalars to Python numbers."""
    if not bool(traced.any_usable):
        restarts = jax.device_get(traced.restarts)
        raise AllRestartsFailed(_ALL_FAILED.format(n=restarts.status.shape[0]), restarts)
    params, restarts = traced.params, traced.restarts
    if model.has_padding():  # on the host: trimmed shapes would mean new programs
        params = model.trim(jax.device_get(params))
        restarts = restarts._replace(params=per_restart(model.trim, restarts.params))
    return FitResult(
        params=params,
        log_likelihood=float(traced.log_likelihood),
        best_restart=int(traced.best_restart),
        converged=int(traced.status) == CONVERGED,  # on the host: no program for ==
        n_iter=int(traced.n_iter),
        restarts=restarts,
    )


def per_restart(function, params):
    """``function`` (a host-side model hook such as ``trim`` or ``pad``) applied to every
    restart of ``params`` (leading restart axis), restacked as numpy arrays."""
    params = jax.device_get(params)
    n_restarts = jax.tree.leaves(params)[0].shape[0]
    results = [function(jax.tree.map(lambda leaf, r=r: leaf[r], params)) for r in range(n_restarts)]
    return jax.tree.map(lambda *leaves: np.stack(leaves), *results)


def _check_first_restart(first_restart) -> np.ndarray:
    if not isinstance(first_restart, (int, np.integer)) or not 0 <= first_restart < 2**31:
        raise ValueError(f"first_restart must be an int in [0, 2**31), got {first_restart!r}.")
    return np.asarray(first_restart, np.int32)


def initialise(
    model,
    x,
    *,
    key,
    n_restarts: int = 1,
    weights=None,
    hyper=None,
    chunk_size=None,
    first_restart: int = 0,
    mesh=None,
):
    """Every restart's initial parameters, exactly as :func:`fit` with ``key`` (and
    ``first_restart``, ``mesh``) starts.

    Returns a pytree with a leading axis of ``n_restarts`` (untrimmed: padded
    components included), ready for ``fit(..., init_params=...)``.
    """
    mesh = resolve_mesh(mesh, jax.tree.leaves(x)[0] if jax.tree.leaves(x) else None)
    prepared = _prepare(model, x, weights, hyper, n_restarts, chunk_size, mesh)
    if mesh is not None:  # a sharded fit of 0 iterations ends where it starts
        traced = _sharded_fit_program(
            model,
            prepared.x,
            prepared.weights,
            key,
            prepared.hyper,
            None,
            np.asarray(0, np.int32),
            np.asarray(0, prepared.dtype),
            _check_first_restart(first_restart),
            n_restarts=int(n_restarts),
            chunk_size=prepared.chunk_size,
            n_trace=_iterate.trace_length(0),
            mesh=mesh,
        )
        return traced.restarts.params
    return _sized(_init_program, _work(model, prepared.x, n_restarts))(
        model,
        prepared.x,
        prepared.weights,
        key,
        prepared.hyper,
        _host_seeds(model, prepared, key, first_restart, n_restarts),
        _check_first_restart(first_restart),
        n_restarts=int(n_restarts),
        chunk_size=prepared.chunk_size,
    )


def initial_shapes(model, x, *, n_restarts: int = 1, hyper=None):
    """Shapes and dtypes of :func:`initialise`'s result, without compiling or running
    the model's init (``jax.ShapeDtypeStruct`` leaves with a leading restart axis)."""
    prepared = _prepare(model, x, None, hyper, n_restarts, None)
    one = _expected_init(model, _spec(prepared.x), _spec(prepared.weights), _spec(prepared.hyper))
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct((n_restarts,) + s.shape, s.dtype), one)


@_program(static=("outputs", "chunk_size", "restarts"))
def _evaluate_program(model, params, x, hyper, *, outputs, chunk_size, restarts):
    return _per_row_outputs(model, params, x, outputs, chunk_size, restarts, hyper)


def _per_row_outputs(model, params, x, outputs, chunk_size, restarts, hyper=None):
    """Per-row ``outputs`` of ``params`` on ``x``, chunk by chunk (traceable).
    ``hyper``, when given, is passed on to every output as a third argument."""
    n_rows = jax.tree.leaves(x)[0].shape[0]
    chunks = _iterate.make_chunks(x, jnp.ones((n_rows,), jnp.float32), chunk_size)
    extra = () if hyper is None else (hyper,)

    def one_chunk(x_chunk):
        def run(one_params):
            return tuple(getattr(model, name)(one_params, x_chunk, *extra) for name in outputs)

        # Every restart reads the chunk once (vmap over the parameters only).
        return jax.vmap(run)(params) if restarts else run(params)

    values = jax.lax.map(one_chunk, chunks.x)
    if restarts:  # (n_chunks, R, chunk, ...) -> (R, n_chunks, chunk, ...)
        values = jax.tree.map(lambda leaf: jnp.moveaxis(leaf, 1, 0), values)
    axis = 1 if restarts else 0

    def merge(leaf):
        shape = leaf.shape[:axis] + (-1,) + leaf.shape[axis + 2 :]
        return leaf.reshape(shape)

    return jax.tree.map(merge, values)


def evaluate(
    model,
    params,
    x,
    outputs,
    *,
    chunk_size: int | None = None,
    restarts: bool = False,
    hyper=None,
):
    """Per-row outputs of fitted ``params`` on ``x``, chunk by chunk, in one program.

    Parameters
    ----------
    model : the model; ``outputs`` must be listed in its ``outputs``.
    params : one set of parameters (as :func:`fit` returns them, or untrimmed).
    x : array or pytree with a leading row axis.
    outputs : a name (``"log_prob"``, ``"predict"``, ...) or a tuple of names; every
        one is computed in the same pass.
    chunk_size : rows per chunk; default :func:`default_chunk_size`.
    restarts : True when ``params`` have a leading restart axis: every restart is
        evaluated in the same pass and each output gains that leading axis.
    hyper : None, or numeric hyperparameters (traced) passed to every output as
        ``f(params, x, hyper)`` (for outputs that iterate, such as LDA's topic
        distributions).

    Returns
    -------
    The output (or a tuple of outputs, when ``outputs`` is a tuple), each with a
    leading axis of ``x``'s rows (after the restart axis), as numpy arrays.
    """
    names = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    unknown = [name for name in names if name not in model.outputs]
    if unknown:
        raise ValueError(
            f"{type(model).__name__} has no output {unknown[0]!r}; it has {model.outputs}."
        )
    n_rows = jax.tree.leaves(x)[0].shape[0]
    n_padded = model.padded_rows(n_rows) if _nbytes(x) <= _PADDED_BYTES else n_rows
    x, _ = _pad_rows(x, np.ones((n_rows,), np.float32), n_padded)
    n_restarts = jax.tree.leaves(params)[0].shape[0] if restarts else 1
    if chunk_size is None:
        chunk_size = default_chunk_size(n_padded, n_restarts, model.row_width(x))
    values = _sized(_evaluate_program, _work(model, x, n_restarts))(
        model,
        params,
        x,
        hyper,
        outputs=names,
        chunk_size=int(min(chunk_size, n_padded)),
        restarts=bool(restarts),
    )
    # Sliced on the host: a device slice would compile once per row count.
    values = jax.tree.map(
        lambda leaf: np.asarray(leaf)[:, :n_rows] if restarts else np.asarray(leaf)[:n_rows],
        jax.device_get(values),
    )
    return values[0] if isinstance(outputs, str) else values


@_program(static=("chunk_size", "restarts"))
def _statistics_program(model, params, x, weights, hyper, *, chunk_size, restarts=False):
    chunks = _iterate.make_chunks(x, weights, chunk_size)
    if restarts:
        return _iterate.batched_statistics(model, params, chunks, hyper)
    return _iterate.chunked_sum(
        lambda x_chunk, w_chunk: model.e_step(params, x_chunk, w_chunk, hyper),
        chunks,
        lambda a, b: (model.combine_stats(a[0], b[0]), a[1] + b[1]),
    )


def _statistics_sharded_body(model, params, x, weights, hyper, *, chunk_size, restarts, mesh):
    """:func:`_statistics_program` with the rows split over ``mesh``'s row axis: each
    device sums its own chunks, the sums merged by one collective."""
    row_spec = jax.sharding.PartitionSpec(ROWS)
    replicated = jax.sharding.PartitionSpec()

    def local(params, x, weights, hyper):
        with _iterate.rows_sharded(ROWS):
            return _statistics_program.__wrapped__(
                model, params, x, weights, hyper, chunk_size=chunk_size, restarts=restarts
            )

    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(
            jax.tree.map(lambda _: replicated, params),
            jax.tree.map(lambda _: row_spec, x),
            row_spec,
            jax.tree.map(lambda _: replicated, hyper),
        ),
        out_specs=replicated,
        check_vma=False,
    )(params, x, weights, hyper)


_sharded_online_step_program = jax.jit(
    _online_step_program.__wrapped__,
    static_argnames=("model", "chunk_size", "mesh"),
    compiler_options=_COMPILER_OPTIONS,
)


def _rows_mesh(mesh, x, what: str):
    """:func:`resolve_mesh` for entry points that split rows only."""
    mesh = resolve_mesh(mesh, x)
    if mesh is not None and RESTARTS in mesh.axis_names:
        raise ValueError(
            f"{what} splits rows only; build the mesh with a {ROWS!r} axis alone, "
            f"e.g. jax.make_mesh((n,), ({ROWS!r},))."
        )
    return mesh


_sharded_statistics_program = jax.jit(
    _statistics_sharded_body,
    static_argnames=("model", "chunk_size", "restarts", "mesh"),
    compiler_options=_COMPILER_OPTIONS,
)


def statistics(
    model,
    params,
    x,
    *,
    weights=None,
    hyper=None,
    chunk_size=None,
    restarts: bool = False,
    mesh=None,
):
    """The E-step of one set of ``params`` over all of ``x``: ``(stats, log_likelihood)``,
    both sums over rows weighted by ``weights`` (not rescaled), chunk by chunk.
    With ``restarts``, ``params`` have a leading restart axis and so do the results:
    every restart's E-step in one pass, each chunk read once. ``mesh`` (as
    :func:`fit`'s, rows only) splits the rows over devices, each summing its own."""
    n_restarts = jax.tree.leaves(params)[0].shape[0] if restarts else 1
    mesh = _rows_mesh(mesh, x, "statistics")
    prepared = _prepare(model, x, weights, hyper, n_restarts, chunk_size, mesh)
    arrays = (params, prepared.x, prepared.weights, prepared.hyper)
    statics = dict(chunk_size=prepared.chunk_size, restarts=bool(restarts))
    if mesh is None:
        program = _sized(_statistics_program, _work(model, prepared.x, n_restarts))
        return program(model, *arrays, **statics)
    return _sharded_statistics_program(model, *arrays, **statics, mesh=mesh)


@_program(static=("outputs",))
def _parameter_program(model, params, hyper, *, outputs):
    def run(one_params):
        return tuple(getattr(model, name)(one_params, hyper) for name in outputs)

    return jax.vmap(run)(params)


def parameter_outputs(model, params, outputs, *, hyper=None):
    """Outputs of the parameters alone (no data) for every restart, in one program.

    Run on the host instead, op by op, each primitive compiles on its own in a new
    process: LDA's topics' part of the bound compiled about 40 of them (1.1 s, against
    0.1 s for this program, 100 topics x 30 words, the 2-core CPU).

    Parameters
    ----------
    model : the model; ``outputs`` must be listed in its ``parameter_outputs``.
    params : parameters with a leading restart axis.
    outputs : a name or a tuple of names, each a method ``f(params, hyper)``.
    hyper : numeric hyperparameters; default ``model.hyper`` in the parameters' dtype.

    Returns
    -------
    The output (or a tuple of outputs, when ``outputs`` is a tuple), each with the
    leading restart axis, as (writable) numpy arrays.

    Examples
    --------
    >>> import jax.numpy as jnp, jaxem
    >>> topics = jaxem.LDAParams(jnp.ones((4, 2, 3)))  # 4 restarts, 2 topics, 3 words
    >>> parameter_outputs(jaxem.lda(2, 3), topics, "exp_topic_word").shape
    (4, 2, 3)
    """
    names = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    unknown = [name for name in names if name not in model.parameter_outputs]
    if unknown:
        raise ValueError(
            f"{type(model).__name__} has no parameter output {unknown[0]!r}; it has "
            f"{model.parameter_outputs}."
        )
    if hyper is None:
        hyper = model.hyper(jax.tree.leaves(params)[0].dtype)
    size = sum(int(np.size(leaf)) for leaf in jax.tree.leaves(params))
    values = jax.device_get(_sized(_parameter_program, size)(model, params, hyper, outputs=names))
    values = tuple(np.array(value) for value in values)  # writable, as numpy users expect
    return values[0] if isinstance(outputs, str) else values


@_program(static=("n_samples",))
def _sample_program(model, key, params, *, n_samples):
    return model.sample(key, params, n_samples)


def sample(model, key, params, n_samples: int):
    """``model.sample(key, params, n_samples)`` as one compiled program."""
    return _sample_program(model, key, params, n_samples=int(n_samples))


def _spec(tree):
    """Hashable shapes and dtypes of a pytree: its structure and ShapeDtypeStructs."""
    leaves, structure = jax.tree.flatten(tree)
    specs = tuple(
        jax.ShapeDtypeStruct(
            np.shape(leaf), leaf.dtype if hasattr(leaf, "dtype") else np.result_type(leaf)
        )
        for leaf in leaves
    )
    return structure, specs


@functools.lru_cache(maxsize=256)
def _expected_init(model, x_spec, weights_spec, hyper_spec):
    """Shapes of one restart's ``model.init`` for data of these shapes, traced once per
    signature (tracing a model's init costs a tenth of a second, every call), and kept
    on disk by the program store when it is on."""

    def chunked(spec):  # one chunk holding every row
        return jax.ShapeDtypeStruct((1,) + spec.shape, spec.dtype)

    x = jax.tree.unflatten(x_spec[0], [chunked(spec) for spec in x_spec[1]])
    weights = chunked(weights_spec[1][0])
    hyper = jax.tree.unflatten(*hyper_spec)
    return _program_store.shapes(
        "expected_init",
        model,
        (Chunks(x, weights), hyper),
        lambda: jax.eval_shape(
            lambda chunks, hyper: model.init(jax.random.key(0), chunks, hyper),
            Chunks(x, weights),
            hyper,
        ),
    )


def _broadcast_restarts(init_params, model, prepared: _Prepared, n_restarts):
    """Give user-supplied parameters a leading restart axis, checking their shapes."""
    expected = _expected_init(
        model, _spec(prepared.x), _spec(prepared.weights), _spec(prepared.hyper)
    )
    init_params = jax.tree.map(jnp.asarray, init_params)
    expected_leaves, expected_tree = jax.tree.flatten(expected)
    leaves, tree = jax.tree.flatten(init_params)
    if tree != expected_tree:
        raise ValueError(f"init_params must have the structure {expected_tree}, got {tree}.")
    shapes = [leaf.shape for leaf in leaves]
    single = [e.shape for e in expected_leaves]
    if shapes == single:
        return jax.tree.map(
            lambda leaf, e: jnp.broadcast_to(leaf.astype(e.dtype), (n_restarts,) + leaf.shape),
            init_params,
            expected,
        )
    if shapes == [(n_restarts,) + s for s in single]:
        return jax.tree.map(lambda leaf, e: leaf.astype(e.dtype), init_params, expected)
    raise ValueError(
        f"init_params leaves must have shapes {single} (one set) or with a leading "
        f"axis of n_restarts={n_restarts}; got {shapes}."
    )


# -- persistent compilation cache ------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$JAXEM_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxem/xla`` (``~/.cache/jaxem/xla``)."""
    explicit = os.environ.get("JAXEM_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxem" / "xla"


def enable_compilation_cache(path=None, *, store_programs: bool = False) -> Path:
    """Keep compiled programs on disk, so a new process reuses them instead of compiling.

    A one-line opt-in for applications (the ``jaxem`` command turns it on by default);
    the library never turns it on by itself. It sets JAX's persistent compilation
    cache for the whole process (``jax_compilation_cache_dir``), caching every
    program however quick its compile. With ``store_programs``, jaxem's own programs
    are also kept traced and lowered (as :mod:`jax.export` artifacts, in the
    ``programs`` subfolder), so that a new process skips tracing and lowering too:
    with both, a warm process spends no time on its first fit beyond loading and
    running (2-3x faster first fits, ``benchmarks/RESULTS.md``). The ``jaxem``
    command turns it on (one process, a few programs). It is off by default in
    the library: one long test process that compiled about 70 HMM programs with it
    on crashed inside XLA while writing an executable to the persistent cache
    (reproduced, cause not yet found; not seen with it off).

    Parameters
    ----------
    path : folder for the cache; default :func:`default_cache_dir`.
    store_programs : also keep jaxem's traced programs (default False).

    Returns
    -------
    The folder used.

    Examples
    --------
    >>> import tempfile, jaxem
    >>> folder = jaxem.enable_compilation_cache(tempfile.mkdtemp())  # doctest: +SKIP
    """
    folder = Path(path).expanduser() if path is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    _program_store.use_folder(folder / "programs" if store_programs else None)
    return folder

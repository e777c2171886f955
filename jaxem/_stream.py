"""Exact EM over data streamed from the host: data larger than memory.

:func:`fit_stream` runs the same EM as :func:`jaxem.fit`, but the rows come from a
source read chunk by chunk at every iteration: a ``.npy`` file (opened with
``mmap_mode="r"``), an array or memory map, a list of them, a scipy.sparse matrix,
or a callable returning an iterable of row blocks. Each iteration reads every chunk
once, for all restarts at once; a background thread reads the next chunks and puts
them on the device while the current one is computed. Host and device memory hold a
few chunks, whatever the size of the data. The programs are the engine's
(``jaxem.engine._stream_*``); this module compiles nothing.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import jax
import numpy as np

from jaxem import _iterate, engine

__all__ = ["fit_stream", "open_source", "Source"]

#: Host chunk size, in bytes of rows, when ``chunk_size`` is not given.
_HOST_CHUNK_BYTES = 1 << 26
#: Rows the default initialisation sees (spread over the whole source when it can).
_INIT_ROWS = 1 << 16


class Source:
    """Rows read block by block: what :func:`fit_stream` iterates over.

    Build one with :func:`open_source`. ``blocks()`` returns a fresh iterator of
    ``(x, weights)`` numpy blocks (``weights`` may be None: all ones) at every call;
    ``n_rows`` is known for arrays, files and sparse matrices, None for callables.
    """

    def __init__(
        self, blocks: Callable[[int], Iterable], n_rows, sample: Callable[[int], np.ndarray]
    ):
        self._blocks, self.n_rows, self._sample = blocks, n_rows, sample

    def blocks(self, size: int) -> Iterator:
        """Blocks of about ``size`` rows (arrays are sliced exactly; callables yield
        what they yield)."""
        for block in self._blocks(size):
            x, weights = block if isinstance(block, tuple) else (block, None)
            yield np.asarray(x), None if weights is None else np.asarray(weights)

    def sample(self, n_rows: int) -> np.ndarray:
        """Up to ``n_rows`` rows spread over the source (the first ones for callables)."""
        return self._sample(n_rows)


def _array_source(arrays, to_dense=np.asarray) -> Source:
    lengths = [array.shape[0] for array in arrays]
    offsets = np.cumsum([0] + lengths)

    def blocks(size):
        for array in arrays:
            for start in range(0, array.shape[0], size):
                yield to_dense(array[start : start + size])

    def sample(n_rows):
        index = np.unique(np.linspace(0, offsets[-1] - 1, min(n_rows, offsets[-1])).astype(int))
        parts = []
        for array, first, last in zip(arrays, offsets[:-1], offsets[1:]):
            mine = index[(index >= first) & (index < last)] - first
            if mine.size:
                parts.append(to_dense(array[mine]))
        return np.concatenate(parts)

    return Source(blocks, int(offsets[-1]), sample)


def _dense(block):
    return np.asarray(block.toarray() if hasattr(block, "toarray") else block)


def open_source(source) -> Source:
    """A :class:`Source` of ``source``.

    Parameters
    ----------
    source : one of
        - a path to a ``.npy`` file (opened with ``mmap_mode="r"``: never read whole);
        - an array, including a ``numpy.memmap``;
        - a scipy.sparse matrix (rows densified one block at a time);
        - a list or tuple of the above (their rows one after the other);
        - a callable taking no argument and returning an iterable of row blocks
          (arrays, or ``(x, weights)`` pairs), called once per pass over the data.
    """
    if isinstance(source, Source):
        return source
    if callable(source) and not hasattr(source, "shape"):

        def blocks(size):
            del size
            return source()

        def sample(n_rows):
            taken, count = [], 0
            for x, _ in Source(blocks, None, None).blocks(0):
                taken.append(x[: n_rows - count])
                count += taken[-1].shape[0]
                if count >= n_rows:
                    break
            return np.concatenate(taken)

        return Source(blocks, None, sample)
    parts = list(source) if isinstance(source, (list, tuple)) else [source]
    if not parts:
        raise ValueError("The source holds no arrays or files.")
    arrays = []
    for part in parts:
        if isinstance(part, (str, os.PathLike)):
            path = Path(part)
            if path.suffix != ".npy":
                raise ValueError(f"{path}: only .npy files can be streamed (np.save writes them).")
            part = np.load(path, mmap_mode="r", allow_pickle=False)
        if not hasattr(part, "shape") or len(part.shape) != 2:
            raise ValueError(
                "Every part of the source must be a 2-D array, .npy file or sparse matrix; "
                f"got {type(part).__name__} of shape {getattr(part, 'shape', None)}."
            )
        arrays.append(part)
    if len({array.shape[1] for array in arrays}) != 1:
        raise ValueError("Every part of the source must have the same number of columns.")
    return _array_source(arrays, _dense)


def _fixed_chunks(source: Source, chunk_size: int, dtype, scale: float) -> Iterator:
    """``(x, weights)`` numpy chunks of exactly ``chunk_size`` rows (the last padded
    with rows of weight 0), weights multiplied by ``scale``."""
    pending_x, pending_w, count = [], [], 0
    for x, weights in source.blocks(chunk_size):
        x = x.astype(dtype, copy=False)
        weights = np.ones(x.shape[0], dtype) if weights is None else weights.astype(dtype)
        pending_x.append(x)
        pending_w.append(weights * dtype.type(scale))
        count += x.shape[0]
        while count >= chunk_size:
            x_all, w_all = np.concatenate(pending_x), np.concatenate(pending_w)
            yield x_all[:chunk_size], w_all[:chunk_size]
            pending_x, pending_w = [x_all[chunk_size:]], [w_all[chunk_size:]]
            count -= chunk_size
    if count:
        x_all, w_all = np.concatenate(pending_x), np.concatenate(pending_w)
        padding = chunk_size - count
        yield (
            np.pad(x_all, [(0, padding)] + [(0, 0)] * (x_all.ndim - 1)),
            np.pad(w_all, (0, padding)),
        )


def _with_weights(source: Source, weights) -> Source:
    """``source`` whose blocks carry their slice of ``weights`` (one per row)."""
    weights = np.asarray(weights)
    if source.n_rows is None or weights.shape != (source.n_rows,):
        raise ValueError(
            f"weights must have shape ({source.n_rows},), one per row of the source, got "
            f"{weights.shape}; a callable source yields (x, weights) blocks instead."
        )

    def blocks(size):
        offset = 0
        for x, _ in source.blocks(size):
            yield x, weights[offset : offset + x.shape[0]]
            offset += x.shape[0]

    return Source(blocks, source.n_rows, source.sample)


def _prefetched(chunks: Iterator, depth: int) -> Iterator:
    """``(x, weights, weight sum)``: ``chunks`` read and put on the device by a
    background thread, ``depth`` ahead (the sum of the weights from the host copy)."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def read():
        try:
            for x, weights in chunks:
                if stop.is_set():
                    return
                total = float(np.sum(weights, dtype=np.float64))
                ready.put((jax.device_put(x), jax.device_put(weights), total))
            ready.put(done)
        except BaseException as error:  # handed to the consumer, raised there
            ready.put(error)

    # 64-bit mode is per thread (jax.enable_x64 is thread-local): the reader must put
    # the chunks on the device in the caller's precision.
    x64 = bool(jax.config.jax_enable_x64)

    def read_in_callers_mode():
        with jax.enable_x64(x64):
            read()

    thread = threading.Thread(target=read_in_callers_mode, daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a reader waiting on a full queue
            try:
                ready.get(timeout=0.1)
            except queue.Empty:
                pass


def _weight_scale(source: Source, dtype) -> float:
    """Weights times this sum to the number of rows of positive weight, as
    :func:`jaxem.fit` normalises them (one pass over the weights)."""
    total, kept = 0.0, 0
    for x, weights in source.blocks(1 << 20):
        if weights is None:
            total += x.shape[0]
            kept += x.shape[0]
        else:
            if not (np.all(np.isfinite(weights)) and np.all(weights >= 0)):
                raise ValueError("weights must be finite and non-negative.")
            total += float(np.sum(weights, dtype=np.float64))
            kept += int(np.sum(weights > 0))
    if kept == 0:
        raise ValueError("The source holds no rows of positive weight.")
    return kept / total


def fit_stream(
    model,
    source,
    *,
    key,
    n_restarts: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    init_params=None,
    hyper=None,
    weights=None,
    dtype=None,
    chunk_size: int | None = None,
    prefetch: int = 2,
    init_rows: int = _INIT_ROWS,
) -> engine.FitResult:
    """Fit ``model`` to rows streamed from ``source``: exact EM, chunk by chunk.

    Every iteration reads the whole source once, for all restarts, and merges the
    chunks' statistics exactly as :func:`jaxem.fit` merges its chunks, so from the
    same starting point the result is :func:`jaxem.fit`'s up to the rounding of sums.
    Host memory holds ``prefetch + 1`` chunks or so, the device one chunk and its
    E-step work.

    Parameters
    ----------
    model : a :class:`~jaxem.contract.Model` whose data is one array of rows.
    source : see :func:`open_source` (a ``.npy`` path, an array or memory map, a
        scipy.sparse matrix, a list of them, or a callable returning row blocks).
    key, n_restarts, max_iter, tol, hyper : as :func:`jaxem.fit`.
    init_params : starting parameters (one set, or a leading axis of
        ``n_restarts``), e.g. from :func:`jaxem.engine.initialise`. By default the
        model's own init runs on ``init_rows`` rows spread evenly over the source
        (the first ones for a callable), so it reads a sample, not the whole data.
    chunk_size : rows per host chunk; default about 64 MiB of rows.
    weights : (n_rows,) sample weights of an array, file or sparse source (a callable
        source yields ``(x, weights)`` blocks instead). Weights are normalised as
        :func:`jaxem.fit` does, which takes one pass over them first.
    dtype : the floating dtype to fit in; each chunk is converted as it is read.
        Default: the source's own floating dtype (JAX's conventions; integers give
        JAX's default float).
    prefetch : chunks read ahead by the background thread.
    init_rows : rows the default initialisation sees.

    Returns
    -------
    FitResult
        As :func:`jaxem.fit`.

    Examples
    --------
    >>> import jax, numpy as np, jaxem
    >>> rows = np.random.default_rng(0).normal(size=(1000, 2)).astype(np.float32)
    >>> rows[:500] += 6
    >>> model = jaxem.mixture(jaxem.gaussian("diag"), n_components=2)
    >>> result = jaxem.fit_stream(model, rows, key=jax.random.key(0), chunk_size=256)
    >>> bool(result.converged), sorted(np.round(result.params.components.means[:, 0]).tolist())
    (True, [0.0, 6.0])
    """
    engine.refuse_stochastic(model, "fit_stream")
    if not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative int, got {max_iter!r}.")
    if not isinstance(n_restarts, (int, np.integer)) or n_restarts < 1:
        raise ValueError(f"n_restarts must be a positive int, got {n_restarts!r}.")
    if not isinstance(prefetch, (int, np.integer)) or prefetch < 1:
        raise ValueError(f"prefetch must be a positive int, got {prefetch!r}.")
    source = open_source(source)
    if weights is not None:
        source = _with_weights(source, weights)
    first = next(iter(source.blocks(1)), None)
    if first is None or first[0].shape[0] == 0:
        raise ValueError("The source yielded no rows.")
    first_x, first_weights = first
    if first_x.ndim != 2:
        raise ValueError(f"Blocks of rows must be 2-D, got shape {first_x.shape}.")
    dtype = np.dtype(engine._float_dtype([first_x if dtype is None else np.zeros(0, dtype)]))
    scale = _weight_scale(source, dtype) if first_weights is not None else 1.0
    if chunk_size is None:
        chunk_size = max(256, _HOST_CHUNK_BYTES // max(1, first_x[:1].nbytes) // 256 * 256)
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}.")
    chunk_size = int(chunk_size)
    if source.n_rows is not None:
        chunk_size = min(chunk_size, source.n_rows)
    if hyper is None:
        hyper = model.hyper(dtype)
    sample = source.sample(init_rows).astype(dtype, copy=False)
    if init_params is None:
        init_params = engine.initialise(
            model, sample, key=key, n_restarts=int(n_restarts), hyper=hyper
        )
    else:
        prepared = engine._prepare(model, sample, None, hyper, n_restarts, None)
        init_params = engine._broadcast_restarts(init_params, model, prepared, int(n_restarts))
    device_chunk = engine.default_chunk_size(
        chunk_size, int(n_restarts), model.row_width(sample[:chunk_size])
    )
    n_trace = _iterate.trace_length(max_iter)
    max_iter_array = np.asarray(max_iter, np.int32)
    state = engine._stream_start_program(
        model, init_params, max_iter_array, n_trace=n_trace, dtype=dtype.name
    )
    for iteration in range(min(int(max_iter), n_trace)):
        total, total_weight, pending = None, 0.0, collections.deque()
        chunks = _fixed_chunks(source, chunk_size, dtype, scale)
        for x, chunk_weights, chunk_weight in _prefetched(chunks, prefetch):
            total = engine._stream_statistics_program(
                model,
                state.params,
                total,
                x,
                chunk_weights,
                hyper,
                chunk_size=device_chunk,
                first=total is None,
            )
            total_weight += chunk_weight
            # Bound the work dispatched ahead of the device (and the chunks it holds).
            pending.append(total)
            if len(pending) > prefetch:
                jax.block_until_ready(pending.popleft())
        if total is None:
            raise ValueError("The source yielded no rows.")
        state = engine._stream_update_program(
            model,
            state,
            np.asarray(iteration, np.int32),
            total,
            np.asarray(total_weight, dtype),
            hyper,
            max_iter_array,
            np.asarray(tol, dtype),
        )
        if not bool(np.any(np.asarray(state.status) == _iterate.RUNNING)):
            break
    return engine.finish(model, engine._select_program(model, state))

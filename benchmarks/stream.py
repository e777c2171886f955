"""Exact EM streamed from a file larger than memory, against the in-memory fit.

Writes a float32 ``.npy`` of ``--gigabytes`` GB (D=32, blocks of well-separated
Gaussian clusters), then fits a diagonal Gaussian mixture (K=64, 4 restarts, exactly
``--iterations`` EM iterations from the same starting point) twice in one run:

- in memory: ``jaxem.fit`` on the first ``--memory-gigabytes`` GB of the rows, loaded;
- streamed: ``jaxem.fit_stream`` over the whole file, opened with ``mmap_mode="r"``.

Both are compiled first (on a few chunks of the same shapes, reported apart); the
figures are rows per second per EM iteration, and the peak anonymous memory of the
process (``RssAnon`` sampled every 20 ms: resident memory that is not page cache,
so the memory-mapped file does not count) during each fit. The final mean
log-likelihood of both sides is printed.

Reproduce (repository root; the file goes to ``--folder``, default the system's
temporary folder, and is removed after)::

    python -m benchmarks.stream --gigabytes 32 --memory-gigabytes 1
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

D, K, RESTARTS = 32, 64, 4


def _anonymous_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


class PeakAnonymous:
    """Peak ``RssAnon`` while the ``with`` block runs (sampled every 20 ms)."""

    def __enter__(self):
        self.peak, self._stop = _anonymous_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _anonymous_bytes())

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _anonymous_bytes())


def write_rows(path: Path, n_rows: int, block: int = 1 << 20) -> None:
    """``n_rows`` x D float32 rows from K clusters, written block by block."""
    centres = np.random.default_rng(0).normal(size=(K, D)).astype(np.float32) * 6
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_rows, D))
    rng = np.random.default_rng(1)
    for start in range(0, n_rows, block):
        size = min(block, n_rows - start)
        rows = rng.standard_normal((size, D), dtype=np.float32)
        rows += centres[rng.integers(0, K, size)]
        array[start : start + size] = rows
    array.flush()
    del array


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=32.0)
    parser.add_argument("--memory-gigabytes", type=float, default=1.0)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--chunk-rows", type=int, default=1 << 19)
    parser.add_argument("--folder", default=tempfile.gettempdir())
    parser.add_argument("--keep", action="store_true", help="keep the file for another run")
    args = parser.parse_args(argv)

    import jax

    import jaxem
    from jaxem import engine

    n_rows = int(args.gigabytes * 1e9) // (4 * D)
    n_memory = int(args.memory_gigabytes * 1e9) // (4 * D)
    path = Path(args.folder) / f"jaxem-stream-{n_rows}x{D}.npy"
    started = time.perf_counter()
    if not path.exists():
        write_rows(path, n_rows)
    print(
        f"file: {path.stat().st_size / 1e9:.1f} GB, {n_rows:,} rows x {D} float32 "
        f"(written in {time.perf_counter() - started:.0f} s)"
    )
    rows = np.load(path, mmap_mode="r")
    model = jaxem.mixture(jaxem.gaussian("diag"), n_components=K, init="random_from_data")
    key = jax.random.key(0)
    start = engine.initialise(model, np.asarray(rows[: 1 << 16]), key=key, n_restarts=RESTARTS)
    settings = dict(key=key, n_restarts=RESTARTS, init_params=start, tol=-1.0)
    chunk = args.chunk_rows

    # Compile both sides on data of the same shapes (two chunks; the in-memory rows).
    in_memory = np.ascontiguousarray(rows[:n_memory])
    warm = time.perf_counter()
    jaxem.fit(model, in_memory, max_iter=1, **settings)
    compile_memory = time.perf_counter() - warm
    warm = time.perf_counter()
    jaxem.fit_stream(model, rows[: 2 * chunk], max_iter=1, chunk_size=chunk, **settings)
    compile_stream = time.perf_counter() - warm

    with PeakAnonymous() as memory_peak:
        begin = time.perf_counter()
        memory_fit = jaxem.fit(model, in_memory, max_iter=args.iterations, **settings)
        memory_seconds = time.perf_counter() - begin
    del in_memory
    with PeakAnonymous() as stream_peak:
        begin = time.perf_counter()
        stream_fit = jaxem.fit_stream(
            model, path, max_iter=args.iterations, chunk_size=chunk, **settings
        )
        stream_seconds = time.perf_counter() - begin

    memory_rate = n_memory * args.iterations / memory_seconds
    stream_rate = n_rows * args.iterations / stream_seconds
    print(
        f"diagonal GMM K={K}, {RESTARTS} restarts, {args.iterations} iterations, "
        f"host chunks of {chunk:,} rows, {jax.devices()[0].platform}"
    )
    print(
        "side      | rows        | first call s | fit s   | rows/s per iteration | "
        "peak RssAnon GB | log-likelihood"
    )
    print(
        f"in memory | {n_memory:11,} | {compile_memory:12.1f} | {memory_seconds:7.1f} | "
        f"{memory_rate:20,.0f} | {memory_peak.peak / 1e9:15.2f} | {memory_fit.log_likelihood:.6f}"
    )
    print(
        f"streamed  | {n_rows:11,} | {compile_stream:12.1f} | {stream_seconds:7.1f} | "
        f"{stream_rate:20,.0f} | {stream_peak.peak / 1e9:15.2f} | {stream_fit.log_likelihood:.6f}"
    )
    print(f"streamed / in memory throughput: {stream_rate / memory_rate:.2f}")
    if not args.keep:
        os.unlink(path)


if __name__ == "__main__":
    main()

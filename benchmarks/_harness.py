"""Shared benchmark utilities: timing, memory, matmul ceiling, flop counts, tables.

Conventions used by every benchmark in this folder
--------------------------------------------------
* A timed function must *block* until its result exists: call
  ``.block_until_ready()`` on JAX outputs (or ``jax.block_until_ready(tree)``),
  or return numpy / Python values.  JAX dispatch is asynchronous, so timing an
  unblocked call only measures dispatch.
* Compile time is measured apart from run time (:func:`aot_compile`,
  :func:`first_call_seconds`) and never included in the steady-state seconds.
* Steady-state seconds are the median of several runs after warm-up
  (:func:`timeit`).
* Flop counts (:func:`flops_gmm_full_iter` and friends) count a multiply-add as
  2 flops and count arithmetic only: the ``exp``/``log`` calls are named in the
  formulas but not included in the totals.  They describe the standard dense
  algorithm, so "GFLOP/s achieved" is *useful* work per second, comparable
  across libraries whatever each one actually executes.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MemoryResult",
    "PeerResult",
    "Row",
    "aot_compile",
    "blas_report",
    "ensure_clean_blas_env",
    "first_call_seconds",
    "flops_gmm_diag_iter",
    "flops_gmm_full_iter",
    "flops_hmm_diag_iter",
    "flops_kmeans_iter",
    "format_table",
    "limit_scipy_lapack_threads",
    "matmul_ceiling",
    "others_cpu_share",
    "peak_rss_delta",
    "print_table",
    "timed_runs",
    "timeit",
]

# --------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------

#: Variables that pin OpenBLAS to a slower kernel / cache model on this machine.
#: With ``OPENBLAS_CORETYPE=Haswell`` numpy's and scipy's OpenBLAS use AVX2
#: "Haswell" kernels instead of the AVX-512 "SkylakeX" ones the CPU supports
#: (measured here: numpy float32 4096^2 matmul 122 vs 242 GFLOP/s).  They are read
#: when OpenBLAS is loaded, so they must be removed before numpy is imported.
BLAS_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def ensure_clean_blas_env() -> None:
    """Re-execute the current Python process without :data:`BLAS_ENV_VARS`.

    Call it first thing in a benchmark's ``__main__`` block (before anything
    imports numpy).  It does nothing if none of the variables is set, or if
    ``JAXEM_BENCH_KEEP_BLAS_ENV=1`` asks to keep them.
    """
    if os.environ.get("JAXEM_BENCH_KEEP_BLAS_ENV") == "1":
        return
    if not any(v in os.environ for v in BLAS_ENV_VARS):
        return
    env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV_VARS}
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:  # started as ``python -m package.module``
        cmd = [sys.executable, "-m", spec.name, *sys.argv[1:]]
    else:
        cmd = [sys.executable, *sys.argv]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, cmd, env)


def blas_report() -> list[dict[str, Any]]:
    """threadpoolctl's view of the loaded BLAS / OpenMP libraries (kernel, threads).

    Import the libraries you benchmark before calling it: threadpoolctl only sees
    libraries already loaded into the process.
    """
    from threadpoolctl import threadpool_info

    keys = ("user_api", "internal_api", "prefix", "version", "architecture", "num_threads")
    return [{k: info.get(k) for k in keys} for info in threadpool_info()]


@contextlib.contextmanager
def limit_scipy_lapack_threads(n_threads: int | None = 1) -> Iterator[None]:
    """Limit the OpenBLAS bundled with scipy (``scipy.libs/``) to ``n_threads`` threads.

    Why: on this 2-core VM, scipy 1.17.1's bundled OpenBLAS 0.3.30 took 10-25 ms
    (instead of ~0.01 ms with one thread) for a 2-thread ``?trtrs`` on a 4x4
    matrix, i.e. for every ``scipy.linalg.solve_triangular`` / ``solve`` call,
    whatever its size (measured while other processes shared the machine; the
    cost is thread wake-up latency, which grows with load).  scikit-learn's
    full-covariance ``GaussianMixture`` calls it once per component per
    iteration, so it adds about K x 10 ms to every iteration.  The
    OpenBLAS bundled with numpy (``numpy.libs/``), which does the large matmuls,
    is a separate library and keeps its threads.  ``None`` leaves everything alone.
    """
    if n_threads is None:
        yield
        return
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()
    paths = [
        lib.filepath
        for lib in controller.lib_controllers
        if lib.internal_api == "openblas" and "scipy.libs" in lib.filepath
    ]
    if not paths:
        yield
        return
    with controller.select(filepath=paths).limit(limits=n_threads):
        yield


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


def timeit(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs.

    ``fn`` must block until its work is done (see module docstring).  Uses
    ``time.perf_counter``.  Returns ``(median_seconds, all_times)``.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def _cpu_snapshot() -> tuple[float, float, float]:
    """(all CPUs' non-idle seconds, all CPUs' total seconds, this process's CPU seconds)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    total = sum(fields) / tick
    idle = (fields[3] + fields[4]) / tick  # idle + iowait
    own = os.times()
    return total - idle, total, own.user + own.system


def others_cpu_share(
    before: tuple[float, float, float], after: tuple[float, float, float]
) -> float:
    """Share of the machine's CPU capacity used by *other* processes between two snapshots.

    ``(all busy CPU time - this process's CPU time) / (all CPU time)``, from
    ``/proc/stat`` and ``os.times()``; 0 means the run had the machine to itself,
    0.5 on 2 cores means another process kept one core busy throughout.
    """
    busy = after[0] - before[0]
    total = after[1] - before[1]
    own = after[2] - before[2]
    return max(busy - own, 0.0) / total if total > 0 else math.nan


#: Share of CPU capacity used by other processes during each run of the most
#: recent :func:`timed_runs` call (see :func:`others_cpu_share`).
LAST_OTHERS_CPU: list[float] = []


def timed_runs(fn: Callable[[], Any], repeats: int = 1) -> tuple[float, list[float], Any]:
    """Run ``fn()`` ``repeats`` times (no warm-up); return median seconds, all times, last output.

    For expensive blocking calls whose output is needed (peer fits); the caller
    does its own warm-up.  Also records, in :data:`LAST_OTHERS_CPU`, how much CPU
    other processes used during each run, so contaminated timings can be spotted.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    times, out = [], None
    LAST_OTHERS_CPU.clear()
    for _ in range(repeats):
        snap = _cpu_snapshot()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        LAST_OTHERS_CPU.append(others_cpu_share(snap, _cpu_snapshot()))
    return statistics.median(times), times, out


def seconds_per_iteration(
    fit: Callable[[int], Any], iters: int, iters_short: int, repeats: int = 1, compiles=True
) -> tuple[float, float, Any, list[float]]:
    """``(first call s, s per iteration, model, others' CPU shares)`` of ``fit(n_iter)``.

    The time per iteration is the difference of the median fit times with ``iters`` and
    ``iters_short`` iterations over the difference of the counts, so initialisation,
    the final E-step and attribute computation cancel. ``compiles`` (jaxem): each
    length is fitted once untimed first, and the first call (compile + fit) is
    reported; False (peers): no warm-up, the first call is the first timed fit.
    Warnings are silenced (a fixed iteration count never converges).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if compiles:
            first, _, _ = timed_runs(lambda: fit(iters))
        long_s, times, model = timed_runs(lambda: fit(iters), repeats=repeats)
        first = first if compiles else times[0]
        others = list(LAST_OTHERS_CPU)
        if compiles:
            fit(iters_short)  # warm-up of the short fit
        short_s, _, _ = timed_runs(lambda: fit(iters_short), repeats=repeats)
        others += LAST_OTHERS_CPU
    return first, (long_s - short_s) / (iters - iters_short), model, others


def first_call_seconds(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds of a single call of ``fn`` and its result.

    Call it on the *first* call of a freshly jitted function to get compile +
    first run; subtract the :func:`timeit` median to estimate compile time alone
    (or use :func:`aot_compile`, which compiles without running).
    """
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def aot_compile(
    fn: Callable[..., Any], *args: Any, **kwargs: Any
) -> tuple[Callable[..., Any], float]:
    """Ahead-of-time compile ``jax.jit(fn)`` for these arguments, without running it.

    Returns ``(compiled, seconds)`` where ``seconds`` covers tracing, lowering and
    XLA compilation; calling ``compiled(*args, **kwargs)`` then never compiles.
    """
    import jax

    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    t0 = time.perf_counter()
    compiled = jitted.lower(*args, **kwargs).compile()
    return compiled, time.perf_counter() - t0


def program_bytes(compiled: Any) -> int:
    """The memory a compiled program can reach, by XLA's buffer assignment: arguments +
    outputs + temporaries, less what outputs alias (no timing, no run needed)."""
    analysis = compiled.memory_analysis()
    return int(
        analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        + analysis.temp_size_in_bytes
        - analysis.alias_size_in_bytes
    )


def matmul_ceiling(n: int = 4096, dtype: Any = None, repeats: int = 5) -> float:
    """GFLOP/s of an ``n x n @ n x n`` matmul through ``jax.jit`` (median of ``repeats``).

    This is the machine's practical dense-arithmetic ceiling for JAX on this
    backend (``2 n^3`` flops per product); "fraction of ceiling" in the tables is
    measured against it.  ``dtype`` defaults to float32.
    """
    import jax
    import jax.numpy as jnp

    dtype = jnp.float32 if dtype is None else dtype
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), dtype)
    b = jax.random.normal(kb, (n, n), dtype)
    mm = jax.jit(jnp.matmul)
    median, _ = timeit(lambda: mm(a, b).block_until_ready(), repeats=repeats, warmup=2)
    return 2.0 * n**3 / median / 1e9


# --------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------


@dataclass
class MemoryResult:
    """Peak resident memory of the process while a function ran.

    ``peak_delta_bytes = peak_bytes - baseline_bytes``: how far the resident set
    rose above what it was just before the call.  It counts everything the
    process touched meanwhile (library buffers, JIT compilation, allocator
    growth), and it does not count memory that was already resident and reused
    (e.g. a buffer freed earlier but kept by the allocator).  For an isolated
    number run the measurement in a fresh process.
    """

    peak_delta_bytes: int
    baseline_bytes: int
    peak_bytes: int
    method: str
    result: Any = field(default=None, repr=False)

    @property
    def peak_delta_mib(self) -> float:
        return self.peak_delta_bytes / 2**20


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter VmHWM (Linux >= 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_delta(fn: Callable[[], Any], sample_interval: float = 0.001) -> MemoryResult:
    """Peak resident set size of this process above its baseline while ``fn()`` runs.

    Method (reported in ``MemoryResult.method``):

    * ``"VmHWM"`` (preferred, exact): write ``5`` to ``/proc/self/clear_refs`` to
      reset the kernel's high-water mark to the current RSS, read ``VmRSS`` as
      the baseline, run ``fn``, read ``VmHWM``.  The kernel updates VmHWM on every
      page fault, so no short peak is missed.
    * ``"VmRSS-sampling"`` (fallback when clear_refs is not writable): a thread
      reads ``VmRSS`` every ``sample_interval`` seconds; peaks shorter than the
      interval can be missed, so the value is a lower bound.
    """
    if _reset_hwm():
        baseline = _status_kib("VmRSS")
        result = fn()
        peak = _status_kib("VmHWM")
        method = "VmHWM"
    else:
        baseline = _status_kib("VmRSS")
        peak_holder = [baseline]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak_holder[0] = max(peak_holder[0], _status_kib("VmRSS"))
                time.sleep(sample_interval)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            result = fn()
        finally:
            stop.set()
            thread.join()
        peak = max(peak_holder[0], _status_kib("VmRSS"))
        method = "VmRSS-sampling"
    return MemoryResult(
        peak_delta_bytes=max(peak - baseline, 0) * 1024,
        baseline_bytes=baseline * 1024,
        peak_bytes=peak * 1024,
        method=method,
        result=result,
    )


# --------------------------------------------------------------------------------------
# Flop counts (multiply-add = 2 flops; N samples, K components/states, D features)
# --------------------------------------------------------------------------------------


def flops_gmm_full_iter(n: int, k: int, d: int) -> float:
    """Flops of one EM iteration of a full-covariance GMM (standard dense algorithm).

    E-step, per component k (as in scikit-learn, gmmx):
      y = (X - mu_k) @ L_k  with L_k the D x D precision Cholesky factor
                                              2 N D^2   (matmul)   + N D (subtract)
      maha = sum_d y^2                        2 N D
      log p = const_k - maha / 2              2 N
    over all components                       2 N K D^2 + 3 N K D + 2 N K
    log-sum-exp over K and responsibilities   ~4 N K (max, subtract, sum, normalise;
                                              plus N K exp and N log, not counted)
    M-step:
      N_k = sum_i r_ik                        N K
      means = R^T X                           2 N K D
      Sigma_k = (r_k * (X - mu_k))^T (X - mu_k)
                                              2 N K D^2 (matmul) + 2 N K D (centre, weight)
      Cholesky / inverse of K D x D matrices  K D^3 (lower-order, included)
    Total: 4 N K D^2 + 7 N K D + 7 N K + K D^3.
    The matmul terms (4 N K D^2) dominate; exploiting symmetry of Sigma_k could
    save up to N K D^2, which we do not assume.
    """
    return 4.0 * n * k * d * d + 7.0 * n * k * d + 7.0 * n * k + k * d**3


def flops_gmm_diag_iter(n: int, k: int, d: int) -> float:
    """Flops of one EM iteration of a diagonal-covariance GMM.

    E-step, expanded quadratic (as in scikit-learn):
      maha = X^2 @ P^T - 2 X @ (M * P)^T + sum_d M^2 P
                                              2 N K D + 2 N K D (two N x D x K matmuls)
                                              + N D (X^2) + 2 N K (adds)
      log p = const - maha / 2 + log w        2 N K
      log-sum-exp / responsibilities          ~4 N K (+ N K exp, not counted)
    M-step:
      N_k = sum_i r_ik                        N K
      R^T X and R^T X^2                       2 N K D + 2 N K D
    Total: 8 N K D + 9 N K + N D.
    """
    return 8.0 * n * k * d + 9.0 * n * k + 1.0 * n * d


def flops_kmeans_iter(n: int, k: int, d: int) -> float:
    """Flops of one Lloyd iteration.

    Assignment: |x|^2 - 2 X C^T + |c|^2       2 N K D (matmul) + 2 N K (adds)
                argmin over K                 N K (compares)
    Update:     per-cluster sums of points    N D (adds) + K D (divide)
    Total: 2 N K D + 3 N K + N D.
    """
    return 2.0 * n * k * d + 3.0 * n * k + 1.0 * n * d


def flops_hmm_diag_iter(t: int, k: int, d: int) -> float:
    """Flops of one Baum-Welch iteration, diagonal Gaussian emissions, T observations in total.

    (T is the total over all sequences.)  Scaled (probability-space) algorithm:
      emission log-densities (expanded quadratic, as for the diagonal GMM)
                                              4 T K D + T D + 4 T K (+ T K exp)
      forward   alpha_t = (alpha_{t-1} A) * b_t, normalise
                                              2 T K^2 + 3 T K
      backward  beta_t = A (b_{t+1} * beta_{t+1}), normalise
                                              2 T K^2 + 3 T K
      posteriors gamma_t = alpha_t * beta_t, normalise
                                              3 T K
      expected transitions sum_t alpha_t[i] A[i,j] b_{t+1}[j] beta_{t+1}[j]
                                              3 T K^2
      M-step: gamma^T X and gamma^T X^2       4 T K D
    Total: 8 T K D + 7 T K^2 + 13 T K + T D.
    Log-space implementations (logsumexp instead of products) do the same
    useful work with many more transcendental ops; those are not counted.
    """
    return 8.0 * t * k * d + 7.0 * t * k * k + 13.0 * t * k + 1.0 * t * d


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of a results table.

    ``seconds`` is the steady-state time of the whole fit (all restarts, all
    iterations, no compilation).  ``restart_iters`` is the number of
    (restart, iteration) pairs actually run; when a library stopped early it is
    smaller than ``restarts * n_iter`` and the per-iteration columns use it.
    ``flops_per_iter`` is the flop count of one iteration of one restart (see
    the ``flops_*`` helpers).  ``score`` is the final mean log-likelihood per
    sample (or mean inertia for k-means), computed by ``benchmarks._scoring``.
    """

    library: str
    seconds: float
    restart_iters: int
    score: float = math.nan
    flops_per_iter: float | None = None
    compile_seconds: float | None = None
    peak_rss_mib: float | None = None
    note: str = ""

    @property
    def iters_per_second(self) -> float:
        return self.restart_iters / self.seconds if self.seconds > 0 else math.nan

    @property
    def seconds_per_iter(self) -> float:
        return self.seconds / self.restart_iters if self.restart_iters else math.nan

    @property
    def gflops(self) -> float | None:
        if self.flops_per_iter is None or self.seconds <= 0:
            return None
        return self.flops_per_iter * self.restart_iters / self.seconds / 1e9


def _fmt(value: float | None, spec: str) -> str:
    """Format ``value`` with ``spec`` (e.g. "9.3f"); "-" right-aligned to the same width."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        width = int(spec.split(".")[0]) if spec[0].isdigit() else 0
        return "-".rjust(width)
    return format(value, spec)


def format_table(
    rows: Iterable[Row],
    reference: str = "jaxem",
    ceiling_gflops: float | None = None,
    score_name: str = "loglik/n",
    title: str | None = None,
) -> str:
    """Render rows as a fixed-width text table.

    Columns: library; seconds (steady state); restart-iterations per second;
    ``x ref`` = this row's seconds per restart-iteration divided by the
    reference row's (>1 means slower than ``reference``; blank if there is no
    reference row); GFLOP/s achieved and its fraction of ``ceiling_gflops``
    (when a flop count is given); compile seconds; peak RSS above baseline in
    MiB (see :func:`peak_rss_delta`); final score; note.
    """
    rows = list(rows)
    ref = next((r for r in rows if r.library == reference), None)
    header = (
        f"{'library':<24} {'seconds':>9} {'iters/s':>9} {'x ' + reference:>9} "
        f"{'GFLOP/s':>8} {'%ceil':>6} {'compile':>8} {'peakMiB':>8} {score_name:>12}  note"
    )
    lines = []
    if title:
        lines.append(title)
    if ceiling_gflops:
        lines.append(f"matmul ceiling: {ceiling_gflops:.1f} GFLOP/s")
    lines += [header, "-" * len(header)]
    for r in rows:
        ratio = r.seconds_per_iter / ref.seconds_per_iter if ref else None
        gf = r.gflops
        frac = 100.0 * gf / ceiling_gflops if (gf is not None and ceiling_gflops) else None
        lines.append(
            f"{r.library:<24} {_fmt(r.seconds, '9.3f')} {_fmt(r.iters_per_second, '9.1f')} "
            f"{_fmt(ratio, '9.2f')} {_fmt(gf, '8.2f')} {_fmt(frac, '6.1f')} "
            f"{_fmt(r.compile_seconds, '8.2f')} {_fmt(r.peak_rss_mib, '8.0f')} "
            f"{_fmt(r.score, '12.5f')}  {r.note}"
        )
    return "\n".join(lines)


def print_table(rows: Iterable[Row], **kwargs: Any) -> None:
    """Print :func:`format_table` (same arguments)."""
    print(format_table(rows, **kwargs), flush=True)


# --------------------------------------------------------------------------------------
# Peer results
# --------------------------------------------------------------------------------------


@dataclass
class PeerResult:
    """What every peer runner returns.

    Unpacks as ``seconds, score, n_iter = result`` (the three headline numbers):

    * ``seconds`` -- steady-state wall time of the whole fit (all restarts),
      median over ``repeats``; excludes compilation and warm-up.
    * ``score`` -- best final score over restarts, computed by
      ``benchmarks._scoring`` from the returned parameters: mean log-likelihood
      per sample (GMM), per observation (HMM), or mean inertia per sample
      (k-means; lower is better).
    * ``n_iter`` -- iterations actually run per restart (the maximum over
      restarts; see ``restart_iters`` for the total).

    ``peak_rss_mib`` and ``others_cpu`` are filled in by the command line
    (``_cli``): the process's peak RSS above its level before the runner was
    called, over the whole call (warm-up, compilation, conversions and all
    restarts included); and, per timed repeat, the share of the machine's CPU
    capacity used by other processes (:func:`others_cpu_share`).
    """

    library: str
    seconds: float
    score: float
    n_iter: int
    restarts: int
    restart_iters: int
    compile_seconds: float | None = None
    all_seconds: list[float] = field(default_factory=list)
    own_score: float | None = None
    peak_rss_mib: float | None = None
    others_cpu: list[float] = field(default_factory=list)
    note: str = ""

    def __iter__(self) -> Iterator[Any]:
        return iter((self.seconds, self.score, self.n_iter))

    def to_row(self, flops_per_iter: float | None = None) -> Row:
        """A table :class:`Row` for this result."""
        return Row(
            library=self.library,
            seconds=self.seconds,
            restart_iters=self.restart_iters,
            score=self.score,
            flops_per_iter=flops_per_iter,
            compile_seconds=self.compile_seconds,
            peak_rss_mib=self.peak_rss_mib,
            note=self.note,
        )

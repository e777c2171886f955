"""The ``jaxem`` command line: ``jaxem demo`` and ``jaxem fit FILE``.

Both fit a Gaussian mixture with many batched restarts through :func:`jaxem.fit`
(the functional API) and print the fitted parameters, how the restarts fared
and where the time went: compiling the fit program apart from running it.

The whole fit is one compiled program, so progress is reported honestly from
outside it: a spinner with the elapsed time and the current stage
("compiling…" while JAX traces, lowers and compiles, "fitting…" after), driven by
a background thread and :mod:`jax.monitoring` events. Nothing is added to the EM
loop.

Exit status: 0 on success, 2 for a bad command line or bad data (one line
``jaxem: error: ...`` on stderr), 1 when every restart of the fit failed,
130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxem
from jaxem import _io
from jaxem.families.gaussian import COVARIANCE_TYPES
from jaxem.models.mixture import INIT_METHODS

__all__ = ["main", "build_parser", "FitOptions", "FitRun", "run_fit", "format_summary"]

#: Restarts whose final mean log-likelihood per sample is within this of the best
#: count as having reached the best optimum (and as one optimum among themselves).
OPTIMUM_TOLERANCE = 1e-3

#: Status names by code, as written to output files.
STATUS_NAMES = ("running", "converged", "max_iter", "non_finite")

_FAITHFUL_ABOUT = (
    "Old Faithful geyser, Yellowstone (Azzalini & Bowman 1990; R's datasets::faithful)",
    "eruptions: eruption time (min); waiting: time to the next eruption (min)",
)

#: Covariance matrices are printed in full up to this many features.
_MAX_MATRIX_FEATURES = 6
#: Histogram rows of distinct optima.
_MAX_OPTIMA_SHOWN = 6


class UsageError(Exception):
    """A bad command line or output path: reported as ``jaxem: error: ...``, exit 2."""


# -- fitting -------------------------------------------------------------------------------


class FitOptions(NamedTuple):
    """What to fit: the mixture and the engine settings (the CLI's options)."""

    n_components: int = 2
    covariance_type: str = "full"
    n_restarts: int = 256
    max_iter: int = 100
    tol: float = 1e-3
    seed: int = 0
    chunk_size: int | None = None
    init: str = "kmeans"
    reg_covar: float = 1e-6
    float64: bool = False


class Timing(NamedTuple):
    """Seconds spent in the :func:`jaxem.fit` call.

    Attributes
    ----------
    compile : JAX tracing, lowering and XLA compilation inside the call, summed
        from :mod:`jax.monitoring` events (0 when every program was cached).
    total : wall clock of the whole call, from entry until the results are on
        the host.
    """

    compile: float
    total: float

    @property
    def run(self) -> float:
        """Wall clock not spent compiling: running the restarts and host work."""
        return max(self.total - self.compile, 0.0)


class FitRun(NamedTuple):
    """A finished fit with everything the summary and the output file need.

    Means are in the data's original coordinates (the fit ran on centred data).
    """

    data: _io.Dataset
    options: FitOptions
    model: Any
    result: jaxem.FitResult
    timing: Timing
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray
    labels: np.ndarray
    total_log_likelihood: float
    n_parameters: int
    dtype: str

    @property
    def bic(self) -> float:
        """Bayesian information criterion of the returned parameters (lower is better)."""
        n_samples = self.data.x.shape[0]
        return -2.0 * self.total_log_likelihood + self.n_parameters * np.log(n_samples)

    @property
    def aic(self) -> float:
        """Akaike information criterion of the returned parameters (lower is better)."""
        return -2.0 * self.total_log_likelihood + 2.0 * self.n_parameters


def build_model(options: FitOptions):
    """The functional mixture model for ``options``."""
    family = jaxem.gaussian(options.covariance_type, reg_covar=options.reg_covar)
    return jaxem.mixture(family, n_components=options.n_components, init=options.init)


def run_fit(data: _io.Dataset, options: FitOptions, progress: _Progress | None = None) -> FitRun:
    """Fit a Gaussian mixture to ``data`` with batched restarts.

    The data are centred on their column means (in float64) before they are cast
    to the working precision, as the natural-parameter Gaussian form needs in
    float32; the means are shifted back afterwards (weights, covariances and
    precisions do not change under a shift).

    Parameters
    ----------
    data : the table to fit.
    options : model and engine settings.
    progress : optional display to report stages to.

    Returns
    -------
    FitRun

    Raises
    ------
    UsageError
        If there are fewer rows than components.
    ValueError
        From :func:`jaxem.fit` when every restart ended non-finite.

    Examples
    --------
    >>> data = _io.Dataset(np.array([[0.0], [0.1], [5.0], [5.1]]), ("a",), "example")
    >>> run = run_fit(data, FitOptions(n_components=2, n_restarts=2, reg_covar=1e-3))
    >>> np.sort(run.means[:, 0]).round(2), run.labels.shape
    (array([0.05, 5.05]), (4,))
    """
    n_samples = data.x.shape[0]
    if n_samples < options.n_components:
        raise UsageError(
            f"{data.source}: {n_samples} row(s) is too few for "
            f"{options.n_components} components (need at least one row per component)."
        )
    context = jax.enable_x64(True) if options.float64 else contextlib.nullcontext()
    with context:
        dtype = np.float64 if options.float64 else np.float32
        offset = data.x.mean(axis=0)
        x = jnp.asarray(data.x - offset, dtype)
        model = build_model(options)
        key = jax.random.key(options.seed)
        if progress is not None:
            progress.stage(f"fitting {options.n_restarts} restarts")
        result, timing = timed_fit(model, x, key, options)
        if progress is not None:
            progress.stage("evaluating the best restart")
        log_prob, labels = _evaluate(model, result.params, x, min(n_samples, 4096))
        params = result.params
        family = model.family
        return FitRun(
            data=data,
            options=options,
            model=model,
            result=result,
            timing=timing,
            weights=np.exp(np.asarray(params.log_weights, np.float64)),
            means=np.asarray(params.components.means, np.float64) + offset,
            covariances=np.asarray(family.covariances(params.components)),
            precisions_cholesky=np.asarray(params.components.precisions_cholesky),
            labels=np.asarray(labels),
            total_log_likelihood=float(np.sum(np.asarray(log_prob, np.float64))),
            n_parameters=int(model.n_parameters(data.x.shape[1])),
            dtype=np.dtype(dtype).name,
        )


def timed_fit(model, x, key, options: FitOptions):
    """``(jaxem.fit(...), Timing)``: the fit, its compile time and its wall time."""
    with _CompileMeter() as meter:
        start = time.perf_counter()
        result = jaxem.fit(
            model,
            x,
            key=key,
            n_restarts=options.n_restarts,
            max_iter=options.max_iter,
            tol=options.tol,
            chunk_size=options.chunk_size,
        )
        jax.block_until_ready(result)
        total = time.perf_counter() - start
    return result, Timing(compile=meter.seconds, total=total)


@functools.partial(jax.jit, static_argnames=("model", "batch_size"))
def _evaluate(model, params, x, batch_size):
    """Per-row log-likelihood and most probable component, ``batch_size`` rows at a time."""

    def row(x_row):
        log_joint = model.log_joint(params, x_row[None])[0]
        return jax.nn.logsumexp(log_joint), jnp.argmax(log_joint)

    return jax.lax.map(row, x, batch_size=batch_size)


# -- compile time and progress ---------------------------------------------------------------

_COMPILE_EVENTS = frozenset(
    {
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    }
)
_active_meters: list[_CompileMeter] = []
_listeners_registered = False


def _on_duration(event: str, duration: float, **kwargs) -> None:
    if event in _COMPILE_EVENTS:
        for meter in list(_active_meters):
            meter.seconds += duration
            meter.finished += 1
            meter.in_progress = max(meter.in_progress - 1, 0)


def _on_scalar(event: str, value: float, **kwargs) -> None:
    # JAX records the start time of each compile stage as a scalar of the same name.
    if event in _COMPILE_EVENTS:
        for meter in list(_active_meters):
            meter.started += 1
            meter.in_progress += 1


class _CompileMeter:
    """Time JAX spends tracing, lowering and compiling while the meter is active.

    Listeners are registered with :mod:`jax.monitoring` once per process and
    forward to the active meters; ``in_progress`` tells a progress display whether
    a compilation is running right now (when this JAX version reports starts).
    """

    def __init__(self):
        self.seconds = 0.0
        self.started = 0
        self.finished = 0
        self.in_progress = 0

    def __enter__(self) -> _CompileMeter:
        global _listeners_registered
        if not _listeners_registered:
            jax.monitoring.register_event_duration_secs_listener(_on_duration)
            jax.monitoring.register_scalar_listener(_on_scalar)
            _listeners_registered = True
        _active_meters.append(self)
        _Progress.notify_meter(self)
        return self

    def __exit__(self, *exc_info) -> None:
        _active_meters.remove(self)
        _Progress.notify_meter(None)

    @property
    def compiling(self) -> bool | None:
        """Whether a compilation is running; None if this JAX does not report starts."""
        if self.finished and not self.started:
            return None
        return self.in_progress > 0


class _Progress:
    """Elapsed time and stage on stderr, from a background thread.

    ``mode`` is ``"tty"`` (a spinner line rewritten in place), ``"lines"`` (one
    line per stage change, plus one every ``heartbeat`` seconds) or ``None`` (off).
    The display appears only after ``delay`` seconds, so quick runs stay quiet.
    """

    _current: _Progress | None = None
    _FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, stream, mode: str | None, delay: float = 0.5, heartbeat: float = 10.0):
        self.stream = stream
        self.mode = mode
        self.delay = delay
        self.heartbeat = heartbeat
        self._stage = "starting"
        self._meter: _CompileMeter | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0.0
        self._shown = False

    @classmethod
    def notify_meter(cls, meter: _CompileMeter | None) -> None:
        if cls._current is not None:
            cls._current._meter = meter

    def stage(self, text: str) -> None:
        """Set what the program is doing (shown unless a compilation is running)."""
        self._stage = text

    def label(self) -> str:
        meter = self._meter
        if meter is None:
            return self._stage
        compiling = meter.compiling
        if compiling is None:
            return f"compiling and {self._stage}"
        return "compiling" if compiling else self._stage

    def __enter__(self) -> _Progress:
        if self.mode is not None:
            _Progress._current = self
            self._start = time.perf_counter()
            self._thread = threading.Thread(target=self._loop, name="jaxem-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        _Progress._current = None
        if self._shown:
            elapsed = time.perf_counter() - self._start
            if self.mode == "tty":
                self._write("\r\x1b[K")
            else:
                self._write(f"jaxem: done in {elapsed:.1f} s\n")

    def _loop(self) -> None:
        frames = itertools.cycle(self._FRAMES)
        last_label, last_line = None, 0.0
        while not self._stop.wait(0.1):
            elapsed = time.perf_counter() - self._start
            if elapsed < self.delay:
                continue
            self._shown = True
            label = self.label()
            if self.mode == "tty":
                self._write(f"\r\x1b[K{next(frames)} {label}… {elapsed:.1f} s")
            elif label != last_label or elapsed - last_line >= self.heartbeat:
                self._write(f"jaxem: {label}… ({elapsed:.1f} s)\n")
                last_label, last_line = label, elapsed

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # closed or broken stream
            self.stream.write(text)
            self.stream.flush()


def _progress_mode(requested: bool | None, stream) -> str | None:
    is_tty = bool(getattr(stream, "isatty", lambda: False)())
    if requested is False or (requested is None and not is_tty):
        return None
    return "tty" if is_tty else "lines"


# -- summary -------------------------------------------------------------------------------


def format_summary(run: FitRun, about: tuple[str, ...] = (), extra_timing=()) -> str:
    """The human-readable report of a fit.

    Parameters
    ----------
    run : the fit.
    about : extra lines describing the data.
    extra_timing : ``(label, seconds, explanation)`` rows added to the timing table.
    """
    options, result, data = run.options, run.result, run.data
    n_samples, n_features = data.x.shape
    lines = [
        f"jaxem {jaxem.__version__}: Gaussian mixture by batched EM "
        f"(jax {jax.__version__}, {jax.default_backend()})",
        "",
        "Data",
        f"  source      {data.source}",
        *(f"              {line}" for line in about),
        f"  rows        {n_samples}",
        f"  features    {n_features}: {_names_list(data.feature_names)}",
        f"  precision   {run.dtype}, centred on the column means for fitting "
        "(means below are uncentred)",
        "",
        "Model",
        f"  {_plural(options.n_components, 'component')}, "
        f"{options.covariance_type} covariance, reg_covar {options.reg_covar:g}",
        f"  {options.n_restarts} restarts (init {options.init}, seed {options.seed}), "
        f"max_iter {options.max_iter}, tol {options.tol:g}",
        "",
        f"Best restart (#{result.best_restart})",
        f"  mean log-likelihood per sample  {result.log_likelihood:.4f}",
        f"  {'converged' if result.converged else 'NOT converged'} after "
        f"{_plural(result.n_iter, 'iteration')}",
        f"  BIC {run.bic:.2f}, AIC {run.aic:.2f} "
        f"({run.n_parameters} free parameters; lower is better)",
    ]
    if not result.converged:
        lines.append(
            f"  note: the best restart stopped at max_iter={options.max_iter}; "
            "raise --max-iter or --tol."
        )
    lines += ["", "Components", *_component_lines(run)]
    lines += ["", f"Restarts ({options.n_restarts})", *_restart_lines(run)]
    timing = run.timing
    rows = [
        (
            "compile",
            timing.compile,
            "JAX trace + lower + XLA compile inside the call (jax.monitoring)",
        ),
        ("run", timing.run, "the rest of the call: all restarts running, results to host"),
        ("total", timing.total, "wall clock of the jaxem.fit call"),
        *extra_timing,
    ]
    lines += ["", "Timing"]
    lines += [f"  {label:<11}{_seconds(seconds):>9}   {what}" for label, seconds, what in rows]
    return "\n".join(lines)


def _component_lines(run: FitRun) -> list[str]:
    names = [_short(name) for name in run.data.feature_names]
    covariance_type = run.options.covariance_type
    counts = np.bincount(run.labels, minlength=run.options.n_components)
    full_matrix = len(names) <= _MAX_MATRIX_FEATURES
    lines = []
    for k in range(run.options.n_components):
        lines.append(
            f"  component {k + 1}  weight {run.weights[k]:.4f}  "
            f"({_plural(int(counts[k]), 'row')} assigned)"
        )
        rows = [("mean", run.means[k])]
        if covariance_type == "full":
            covariance = run.covariances[k]
            if full_matrix:
                rows += [("covariance" if i == 0 else "", covariance[i]) for i in range(len(names))]
            else:
                rows.append(("variance", np.diagonal(covariance)))
        elif covariance_type == "diag":
            rows.append(("variance", run.covariances[k]))
        elif covariance_type == "spherical":
            rows.append(("variance", np.full(len(names), run.covariances[k])))
        lines += _table(names, rows)
        lines.append("")
    if covariance_type == "tied":
        lines.append("  covariance shared by all components")
        if full_matrix:
            rows = [("covariance" if i == 0 else "", run.covariances[i]) for i in range(len(names))]
        else:
            rows = [("variance", np.diagonal(run.covariances))]
        lines += _table(names, rows)
        lines.append("")
    if covariance_type in ("full", "tied") and not full_matrix:
        lines.append(
            f"  (diagonals shown: {len(names)} features; --output saves the full matrices)"
        )
    elif covariance_type == "spherical":
        lines.append("  (spherical: one variance shared by all features of a component)")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _table(names, rows, per_block: int = _MAX_MATRIX_FEATURES) -> list[str]:
    """Labelled numeric rows under feature-name columns, wrapped every ``per_block``."""
    lines = []
    for start in range(0, len(names), per_block):
        block = names[start : start + per_block]
        widths = [max(11, len(name) + 2) for name in block]
        lines.append(" " * 16 + "".join(f"{name:>{w}}" for name, w in zip(block, widths)))
        for label, values in rows:
            cells = "".join(
                f"{_number(v):>{w}}" for v, w in zip(values[start : start + per_block], widths)
            )
            lines.append(f"    {label:<12}{cells}")
    return lines


def _restart_lines(run: FitRun) -> list[str]:
    restarts = run.result.restarts
    log_likelihood = np.asarray(restarts.log_likelihood, np.float64)
    status = np.asarray(restarts.status)
    n_iter = np.asarray(restarts.n_iter)
    n_restarts = len(status)
    counts = np.bincount(status, minlength=len(STATUS_NAMES))
    lines = [
        f"  status      {counts[jaxem.CONVERGED]} converged, "
        f"{counts[jaxem.MAX_ITER]} reached max_iter, {counts[jaxem.NON_FINITE]} non-finite"
        + (f", {counts[jaxem.RUNNING]} still running" if counts[jaxem.RUNNING] else ""),
        f"  iterations  min {n_iter.min()}, median {np.median(n_iter):g}, max {n_iter.max()} "
        f"(best restart: {run.result.n_iter})",
    ]
    usable = (status != jaxem.NON_FINITE) & np.isfinite(log_likelihood)
    optima = distinct_optima(log_likelihood[usable])
    best_count = optima[0][1]
    elsewhere = n_restarts - best_count
    lines.append(
        f"  optima      {best_count} of {n_restarts} restarts reached the best "
        f"(within {OPTIMUM_TOLERANCE:g} per sample); {elsewhere} landed elsewhere"
        + (f" ({n_restarts - int(usable.sum())} non-finite)" if not usable.all() else "")
    )
    largest = max(count for _, count in optima)
    for i, (value, count) in enumerate(optima[:_MAX_OPTIMA_SHOWN]):
        bar = "█" * max(1, round(24 * count / largest))
        tag = "  best" if i == 0 else ""
        lines.append(f"    {value:>11.4f}  {count:>6}  {bar}{tag}")
    if len(optima) > _MAX_OPTIMA_SHOWN:
        rest = optima[_MAX_OPTIMA_SHOWN:]
        lines.append(
            f"    … {len(rest)} more optima, {sum(c for _, c in rest)} restarts, "
            f"down to {rest[-1][0]:.4f}"
        )
    return lines


def distinct_optima(log_likelihood, tolerance: float = OPTIMUM_TOLERANCE):
    """Group final log-likelihoods into optima, best first.

    Each group starts at the highest value not yet grouped and takes every value
    within ``tolerance`` below it.

    Returns
    -------
    list of (float, int)
        The top value of each group and how many restarts fell in it.

    Examples
    --------
    >>> distinct_optima([-1.0, -1.0004, -2.0, -1.5])
    [(-1.0, 2), (-1.5, 1), (-2.0, 1)]
    """
    values = np.sort(np.asarray(log_likelihood, np.float64))[::-1]
    optima = []
    i = 0
    while i < len(values):
        top = values[i]
        j = i + int(np.sum(values[i:] >= top - tolerance))
        optima.append((float(top), j - i))
        i = j
    return optima


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _number(value: float) -> str:
    value = float(value)
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        return f"{value:.4f}"
    return f"{value:.3e}"


def _seconds(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.1f} s"


def _short(name: str, width: int = 14) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _names_list(names, limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


# -- output files -------------------------------------------------------------------------


def output_arrays(run: FitRun, with_labels: bool) -> dict[str, Any]:
    """Everything written by ``--output``, as numpy arrays and scalars."""
    restarts = run.result.restarts
    arrays = {
        "weights": run.weights,
        "means": run.means,
        "covariances": run.covariances,
        "precisions_cholesky": run.precisions_cholesky,
        "covariance_type": np.str_(run.options.covariance_type),
        "log_likelihood": np.float64(run.result.log_likelihood),
        "n_iter": np.int64(run.result.n_iter),
        "converged": np.bool_(run.result.converged),
        "best_restart": np.int64(run.result.best_restart),
        "bic": np.float64(run.bic),
        "aic": np.float64(run.aic),
        "n_samples": np.int64(run.data.x.shape[0]),
        "feature_names": np.array(run.data.feature_names, dtype=np.str_),
        "restart_log_likelihood": np.asarray(restarts.log_likelihood, np.float64),
        "restart_n_iter": np.asarray(restarts.n_iter, np.int64),
        "restart_status": np.asarray(restarts.status, np.int64),
        "status_names": np.array(STATUS_NAMES, dtype=np.str_),
        "jaxem_version": np.str_(jaxem.__version__),
    }
    if with_labels:
        arrays["labels"] = run.labels.astype(np.int64)
    return arrays


def write_output(path: Path, run: FitRun, with_labels: bool) -> None:
    """Write the fit to ``path`` (``.npz`` or ``.json``, chosen by the extension)."""
    arrays = output_arrays(run, with_labels)
    try:
        if path.suffix.lower() == ".npz":
            with open(path, "wb") as file:  # a file object: numpy adds no extension
                np.savez(file, **arrays)
        else:
            # One key per line, each value compact: readable and diff-friendly.
            body = ",\n".join(
                f" {json.dumps(name)}: {json.dumps(_json_value(value))}"
                for name, value in arrays.items()
            )
            path.write_text("{\n" + body + "\n}\n", encoding="utf-8")
    except OSError as error:
        raise UsageError(f"{path}: cannot write: {error.strerror or error}.") from error


def _json_value(value):
    """numpy → JSON: lists and Python scalars, non-finite floats as null."""
    value = np.asarray(value)
    if value.dtype.kind == "f":
        value = np.where(np.isfinite(value), value, np.nan).astype(object)
        value[value != value] = None  # NaN is not valid JSON
    return value.tolist()


def _check_output_path(path: Path | None) -> None:
    if path is None:
        return
    if path.suffix.lower() not in (".npz", ".json"):
        raise UsageError(
            f"--output {path}: unknown file type {path.suffix or '(no extension)'!r}; "
            "use .npz or .json."
        )
    if not path.parent.is_dir():
        raise UsageError(f"--output {path}: directory {str(path.parent)!r} does not exist.")
    if path.is_dir():
        raise UsageError(f"--output {path}: is a directory.")


# -- commands ------------------------------------------------------------------------------


def _command_demo(args) -> int:
    data = _io.load_faithful()
    options = FitOptions(n_components=args.components, n_restarts=args.restarts, seed=args.seed)
    with _Progress(sys.stderr, _progress_mode(args.progress, sys.stderr)) as progress:
        run = run_fit(data, options, progress)
        progress.stage("timing repeat calls")
        repeats = [_repeat_fit(run, options) for _ in range(3)]
    run_times = [timing.total for timing in repeats]
    recompiled = sum(timing.compile for timing in repeats)
    note = "no recompilation" if recompiled == 0 else f"{recompiled:.3f} s recompiling"
    extra = [
        (
            "repeat",
            statistics.median(run_times),
            f"median of 3 identical calls after the first ({note}): the fit alone",
        )
    ]
    print(format_summary(run, about=_FAITHFUL_ABOUT, extra_timing=extra))
    return 0


def _repeat_fit(run: FitRun, options: FitOptions) -> Timing:
    x = jnp.asarray(run.data.x - run.data.x.mean(axis=0), np.float32)
    _, timing = timed_fit(run.model, x, jax.random.key(options.seed), options)
    return timing


def _command_fit(args) -> int:
    output = Path(args.output) if args.output is not None else None
    if args.labels and output is None:
        raise UsageError("--labels needs --output FILE to write the labels to.")
    _check_output_path(output)
    delimiter = {"\\t": "\t", "tab": "\t"}.get(args.delimiter, args.delimiter)
    data = _io.load(args.file, key=args.key, delimiter=delimiter, header=args.header)
    options = FitOptions(
        n_components=args.components,
        covariance_type=args.covariance_type,
        n_restarts=args.restarts,
        max_iter=args.max_iter,
        tol=args.tol,
        seed=args.seed,
        chunk_size=args.chunk_size,
        init=args.init,
        reg_covar=args.reg_covar,
        float64=args.float64,
    )
    with _Progress(sys.stderr, _progress_mode(args.progress, sys.stderr)) as progress:
        try:
            run = run_fit(data, options, progress)
        except ValueError as error:
            if "non-finite" not in str(error):  # only the engine's "all restarts failed"
                raise
            print(
                f"jaxem: error: fit failed: {error} "
                "(options: --reg-covar, --components, --float64)",
                file=sys.stderr,
            )
            return 1
    print(format_summary(run))
    if output is not None:
        write_output(output, run, args.labels)
        print(f"\nwrote {output}")
    return 0


# -- argument parsing ----------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line: ``jaxem: error: ...``."""

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _integer(minimum: int, maximum: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (np.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


_SEED = _integer(0, 2**32 - 1)


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxem`` argument parser with its ``demo`` and ``fit`` subcommands."""
    parser = _Parser(
        prog="jaxem",
        description="Batched Expectation-Maximization in JAX: Gaussian mixtures fitted with "
        "many random restarts at once, in one compiled program.",
        epilog="Run 'jaxem demo' for a first look, 'jaxem fit --help' for your own data.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"jaxem {jaxem.__version__} (jax {jax.__version__})",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    progress = argparse.ArgumentParser(add_help=False)
    progress.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show elapsed time and stage (compiling, fitting) on stderr; "
        "default: only when stderr is a terminal",
    )

    demo = commands.add_parser(
        "demo",
        parents=[progress],
        help="fit the Old Faithful eruptions shipped with jaxem",
        description="Fit a full-covariance Gaussian mixture to the Old Faithful eruptions "
        "(272 rows, shipped with jaxem) with many batched restarts, and report the fit, "
        "how the restarts fared, and compile and fit times apart. Two components is the "
        "classic answer and the lowest BIC among 1 to 4.",
    )
    demo.add_argument("--restarts", type=_integer(1), default=256, help="default: 256")
    demo.add_argument("--components", "-k", type=_integer(1), default=2, help="default: 2")
    demo.add_argument("--seed", type=_SEED, default=0, help="random seed; default: 0")
    demo.set_defaults(handler=_command_demo)

    fit = commands.add_parser(
        "fit",
        parents=[progress],
        help="fit a Gaussian mixture to a CSV, .npy or .npz file",
        description="Fit a Gaussian mixture to FILE with batched restarts and print a "
        "summary. FILE is a CSV with a header row and numeric columns, a .npy array "
        "(n_samples, n_features), or a .npz archive (array 'X' or its only array; see "
        "--key). A 1-D array is one feature.",
    )
    fit.add_argument("file", metavar="FILE", help="data file: .csv, .npy or .npz")
    data = fit.add_argument_group("data")
    data.add_argument("--key", help="array to read from an .npz file (default: X or the only one)")
    data.add_argument(
        "--delimiter",
        default=",",
        help="CSV field separator ('\\t' or 'tab' for tabs); default: ','",
    )
    data.add_argument(
        "--no-header",
        dest="header",
        action="store_false",
        help="the CSV has no header row (columns are named x0, x1, ...)",
    )
    model = fit.add_argument_group("model")
    model.add_argument(
        "--components", "-k", type=_integer(1), default=1, help="number of components; default: 1"
    )
    model.add_argument(
        "--covariance-type", choices=COVARIANCE_TYPES, default="full", help="default: full"
    )
    model.add_argument(
        "--reg-covar",
        type=_non_negative_float,
        default=1e-6,
        help="added to covariance diagonals; default: 1e-6",
    )
    model.add_argument(
        "--init", choices=INIT_METHODS, default="kmeans", help="initialisation; default: kmeans"
    )
    engine = fit.add_argument_group("engine")
    engine.add_argument(
        "--restarts",
        type=_integer(1),
        default=64,
        help="random restarts, run batched in one program; default: 64",
    )
    engine.add_argument(
        "--max-iter", type=_integer(1), default=100, help="EM iterations cap; default: 100"
    )
    engine.add_argument(
        "--tol",
        type=_non_negative_float,
        default=1e-3,
        help="stop when the mean log-likelihood per sample changes by less; default: 1e-3",
    )
    engine.add_argument("--seed", type=_SEED, default=0, help="random seed; default: 0")
    engine.add_argument(
        "--chunk-size",
        type=_integer(1),
        default=None,
        help="rows per E-step chunk (bounds memory); default: chosen from the data size",
    )
    engine.add_argument(
        "--float64",
        action="store_true",
        help="compute in float64 (turns on JAX's x64 mode for this run); default: float32",
    )
    output = fit.add_argument_group("output")
    output.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write the fit to FILE (.npz or .json): weights, means, covariances, "
        "precisions_cholesky, log_likelihood, n_iter, converged, per-restart "
        "log-likelihoods, n_iter and statuses",
    )
    output.add_argument(
        "--labels", action="store_true", help="also write each row's most probable component"
    )
    fit.set_defaults(handler=_command_fit)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``jaxem`` command line and return its exit status.

    Parameters
    ----------
    argv : arguments without the program name; default ``sys.argv[1:]``.

    Examples
    --------
    >>> main(["--version"])  # doctest: +ELLIPSIS
    jaxem ...
    0
    """
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exit_:  # --help and --version
            return exit_.code if isinstance(exit_.code, int) else 0
        if args.command is None:
            raise UsageError("choose a command: demo or fit (see 'jaxem --help')")
        return args.handler(args)
    except (UsageError, _io.DataError) as error:
        print(f"jaxem: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxem: interrupted", file=sys.stderr)
        return 130

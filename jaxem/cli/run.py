"""The commands: fit a :class:`jaxem.GaussianMixture` and report it.

The command line compiles nothing of its own: the estimator runs every program
(the batched fit, the final E-step, scoring), and this module only times it,
turns on the persistent compilation cache and hands the results to
:mod:`jaxem.cli.report`.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from jaxem import _io, engine
from jaxem._stream import fit_stream
from jaxem.cli import report
from jaxem.cli.parsing import UsageError
from jaxem.cli.progress import CompileMeter, Progress, progress_mode
from jaxem.estimators import GaussianMixture, _validation
from jaxem.estimators._persist import estimator_arrays

__all__ = [
    "FitError",
    "FitOptions",
    "Timing",
    "Cache",
    "FitRun",
    "setup_cache",
    "run_fit",
    "command_demo",
    "command_fit",
]

_FAITHFUL_ABOUT = (
    "Old Faithful geyser, Yellowstone (Azzalini & Bowman 1990; R's datasets::faithful)",
    "eruptions: eruption time (min); waiting: time to the next eruption (min)",
)

#: Values of JAXEM_NO_CACHE that leave the cache on.
_FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})


class FitError(Exception):
    """Every restart of the fit failed: reported as ``jaxem: error: ...``, exit 2."""


class FitOptions(NamedTuple):
    """What to fit: the estimator's settings, named as the command line names them."""

    n_components: int = 2
    covariance_type: str = "full"
    n_restarts: int = 256
    max_iter: int = 100
    tol: float = 1e-3
    seed: int = 0
    init: str = "kmeans"
    reg_covar: float = 1e-6
    float64: bool = False

    def estimator(self) -> GaussianMixture:
        """The unfitted :class:`jaxem.GaussianMixture` these options describe."""
        return GaussianMixture(
            n_components=self.n_components,
            covariance_type=self.covariance_type,
            tol=self.tol,
            reg_covar=self.reg_covar,
            max_iter=self.max_iter,
            n_init=self.n_restarts,
            init_params=self.init,
            random_state=self.seed,
        )

    def table(self, x: np.ndarray) -> np.ndarray:
        """``x`` in the precision to fit in: float64 with ``--float64``, else float32
        (the estimators compute in the precision of their input)."""
        return np.asarray(x, np.float64 if self.float64 else np.float32)


class Timing(NamedTuple):
    """Seconds spent in one fit, and the persistent cache's part in it.

    Attributes
    ----------
    compile : JAX tracing, lowering and XLA compilation (or loading a compiled
        program from the persistent cache) inside the fit, summed from
        :mod:`jax.monitoring` events; 0 when every program was already in memory.
    total : wall clock of the fit, until the labels are on the host.
    cache_loaded, cache_saved : programs loaded from and written to the persistent
        compilation cache.
    """

    compile: float
    total: float
    cache_loaded: int = 0
    cache_saved: int = 0

    @property
    def run(self) -> float:
        """Wall clock not spent compiling: running the restarts and host work."""
        return max(self.total - self.compile, 0.0)


class Cache(NamedTuple):
    """The persistent compilation cache: its folder, or None and why it is off."""

    folder: Path | None
    reason: str = ""


class FitRun(NamedTuple):
    """A finished fit with everything the summary and the output file need."""

    data: _io.Dataset
    options: FitOptions
    estimator: GaussianMixture
    labels: np.ndarray
    timing: Timing
    bic: float
    aic: float
    n_parameters: int
    dtype: str
    cache: Cache


# -- the persistent compilation cache ------------------------------------------------------


def setup_cache(no_cache: bool, cache_dir: str | None, environ=os.environ) -> Cache:
    """Turn on JAX's persistent compilation cache unless ``--no-cache`` or JAXEM_NO_CACHE.

    The command owns its process, so it opts in for the whole process through
    :func:`jaxem.engine.enable_compilation_cache`, in ``cache_dir`` or by default
    in $JAXEM_CACHE_DIR or ``~/.cache/jaxem/xla``. A folder that cannot be created
    costs only speed: a one-line warning, and the run goes on without the cache.

    Returns
    -------
    Cache
    """
    if no_cache:
        return Cache(None, "--no-cache")
    if environ.get("JAXEM_NO_CACHE", "").strip().lower() not in _FALSE_WORDS:
        return Cache(None, "JAXEM_NO_CACHE is set")
    try:
        return Cache(engine.enable_compilation_cache(cache_dir, store_programs=True))
    except OSError as error:
        where = error.filename or cache_dir
        reason = f"cannot create {where}: {error.strerror or error}"
        print(f"jaxem: warning: persistent compilation cache off: {reason}", file=sys.stderr)
        return Cache(None, reason)


# -- fitting -------------------------------------------------------------------------------


def run_fit(
    data: _io.Dataset, options: FitOptions, cache: Cache, progress: Progress | None = None
) -> FitRun:
    """Fit :class:`jaxem.GaussianMixture` to ``data`` and score it.

    Parameters
    ----------
    data : the table to fit (float64).
    options : the estimator's settings; ``float64`` fits the data in float64, else
        it is fitted in float32.
    cache : the persistent compilation cache in use, for the report.
    progress : optional display to report stages to.

    Returns
    -------
    FitRun

    Raises
    ------
    UsageError
        If there are too few rows for the components.
    FitError
        If every restart ended non-finite (the estimator's ValueError).

    Examples
    --------
    >>> data = _io.Dataset(np.array([[0.0], [0.1], [5.0], [5.1]]), ("a",), "example")
    >>> run = run_fit(data, FitOptions(n_restarts=2, reg_covar=1e-3), Cache(None, "off"))
    >>> np.sort(run.estimator.means_[:, 0]).round(2), run.labels.shape
    (array([0.05, 5.05], dtype=float32), (4,))
    """
    _check_rows(data, options.n_components)
    estimator = options.estimator()
    if isinstance(data.x, np.memmap):  # too large to read: streamed from the file
        if progress is not None:
            progress.stage(f"fitting {options.n_restarts} restarts, streamed from disk")
        labels, timing, bic, aic = _streamed_fit(estimator, data.x, options)
    else:
        x = options.table(data.x)
        if progress is not None:
            progress.stage(f"fitting {options.n_restarts} restarts")
        labels, timing = _timed_fit(estimator, x)
        if progress is not None:
            progress.stage("scoring the best restart")
        bic, aic = estimator.bic(x), estimator.aic(x)
    return FitRun(
        data=data,
        options=options,
        estimator=estimator,
        labels=labels,
        timing=timing,
        bic=float(bic),
        aic=float(aic),
        n_parameters=int(estimator._n_parameters()),
        dtype=np.dtype(estimator.means_.dtype).name,
        cache=cache,
    )


def _check_rows(data: _io.Dataset, n_components: int) -> None:
    # The estimator needs a row per component, and two rows for any fit.
    n_samples = data.x.shape[0]
    needed = max(n_components, 2)
    if n_samples < needed:
        raise UsageError(
            f"{data.source}: {n_samples} row(s) is too few for {n_components} "
            f"component{'' if n_components == 1 else 's'} (need at least {needed} rows: "
            "one per component, and two for any fit)."
        )


def _timed_fit(estimator: GaussianMixture, x: np.ndarray) -> tuple[np.ndarray, Timing]:
    """``estimator.fit_predict(x)`` with its compile and wall time.

    Raises
    ------
    FitError
        From the estimator's ValueError: once the command line has checked its
        options and data, that is every restart failing.
    """
    with CompileMeter() as meter, warnings.catch_warnings():
        # The summary reports a best restart that did not converge, with what to do.
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        try:
            labels = estimator.fit_predict(x)
        except ValueError as error:
            raise FitError(f"fit failed: {_first_line(error)}") from error
        total = time.perf_counter() - start
    return labels, Timing(meter.seconds, total, meter.cache_loaded, meter.cache_saved)


#: Rows evaluated at a time after a streamed fit (labels and the log-likelihood).
_EVALUATION_ROWS = 1 << 18


def _streamed_fit(estimator: GaussianMixture, rows: np.memmap, options: FitOptions):
    """Fit ``estimator``'s model to a memory-mapped table by :func:`jaxem.fit_stream`
    (exact EM, the file read chunk by chunk), set the estimator's attributes, then
    label and score the rows block by block.

    Returns
    -------
    labels, timing, bic, aic
    """
    dtype = np.float64 if options.float64 else np.float32
    n_samples, n_features = rows.shape
    with CompileMeter() as meter:
        start = time.perf_counter()
        with _validation.precision(dtype):
            model = estimator._build_model(options.n_components, options.n_components)
            try:
                result = fit_stream(
                    model,
                    rows,
                    key=_validation.random_key(options.seed),
                    n_restarts=options.n_restarts,
                    max_iter=options.max_iter,
                    tol=options.tol,
                    dtype=dtype,
                )
            except engine.AllRestartsFailed as error:
                raise FitError(f"fit failed: {_first_line(error)}") from error
        estimator.n_features_in_ = n_features
        estimator._set_fitted(result.params, np.zeros(n_features), dtype)
        estimator.converged_, estimator.n_iter_ = result.converged, result.n_iter
        estimator.lower_bound_ = result.log_likelihood
        estimator.restarts_ = jax.device_get(result.restarts)
        estimator.best_restart_ = result.best_restart
        labels = np.empty(n_samples, np.int64)
        total = 0.0
        for first in range(0, n_samples, _EVALUATION_ROWS):
            block = np.asarray(rows[first : first + _EVALUATION_ROWS], dtype)
            labels[first : first + block.shape[0]] = estimator.predict(block)
            total += float(np.sum(estimator.score_samples(block), dtype=np.float64))
        elapsed = time.perf_counter() - start
    n_parameters = estimator._n_parameters()
    bic = -2 * total + n_parameters * np.log(n_samples)
    aic = -2 * total + 2 * n_parameters
    timing = Timing(meter.seconds, elapsed, meter.cache_loaded, meter.cache_saved)
    return labels, timing, float(bic), float(aic)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


# -- commands ------------------------------------------------------------------------------


def command_demo(args, cache: Cache) -> int:
    """``jaxem demo``: the Old Faithful fit, then ``--repeats`` timed refits."""
    data = _io.load_faithful()
    options = FitOptions(n_components=args.components, n_restarts=args.restarts, seed=args.seed)
    with Progress(sys.stderr, progress_mode(args.progress, sys.stderr)) as progress:
        run = run_fit(data, options, cache, progress)
        progress.stage("timing repeat calls")
        x = options.table(data.x)
        repeats = [_timed_fit(options.estimator(), x)[1] for _ in range(args.repeats)]
    print(report.format_summary(run, about=_FAITHFUL_ABOUT, extra_timing=_repeat_rows(repeats)))
    return 0


def _repeat_rows(repeats: list[Timing]) -> list[tuple[str, float, str]]:
    """The summary's timing row for the repeated fits (none without repeats)."""
    if not repeats:
        return []
    recompiled = sum(timing.compile for timing in repeats)
    note = "no recompilation" if recompiled == 0 else f"{recompiled:.3f} s recompiling"
    what = (
        "a second identical fit"
        if len(repeats) == 1
        else f"median of {len(repeats)} identical fits after the first"
    )
    return [("repeat", statistics.median(t.total for t in repeats), f"{what} ({note})")]


def command_fit(args, cache: Cache) -> int:
    """``jaxem fit FILE``: fit, print the summary, optionally write ``--output``."""
    output = Path(args.output) if args.output is not None else None
    if args.labels and output is None:
        raise UsageError("--labels needs --output FILE to write the labels to.")
    if output is not None:
        _io.check_output_path(output)
    delimiter = {"\\t": "\t", "tab": "\t"}.get(args.delimiter, args.delimiter)
    data = _io.load(args.file, key=args.key, delimiter=delimiter, header=args.header)
    options = FitOptions(
        n_components=args.components,
        covariance_type=args.covariance_type,
        n_restarts=args.restarts,
        max_iter=args.max_iter,
        tol=args.tol,
        seed=args.seed,
        init=args.init,
        reg_covar=args.reg_covar,
        float64=args.float64,
    )
    with Progress(sys.stderr, progress_mode(args.progress, sys.stderr)) as progress:
        try:
            run = run_fit(data, options, cache, progress)
        except FitError as error:
            raise FitError(f"{error} (options: --reg-covar, --components, --float64)") from error
    print(report.format_summary(run))
    if output is not None:
        arrays = report.output_arrays(run, args.labels)
        if output.suffix.lower() == ".npz":  # also the estimator's file: jaxem.load reads it
            arrays.update(estimator_arrays(run.estimator))
        _io.save(output, arrays)
        print(f"\nwrote {output}")
    return 0


#: The handler of each subcommand.
COMMANDS = {"demo": command_demo, "fit": command_fit}

"""What the command line prints and writes about a fit.

Everything comes from the fitted :class:`jaxem.GaussianMixture`: its
scikit-learn attributes (``weights_``, ``means_``, ``covariances_``, ...) and its
jaxem ones (``restarts_``, ``best_restart_``), plus the timings the command
measured around it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

import jaxem
from jaxem.engine import Status

if TYPE_CHECKING:
    from jaxem.cli.run import FitRun

__all__ = [
    "OPTIMUM_TOLERANCE",
    "STATUS_NAMES",
    "format_summary",
    "distinct_optima",
    "output_arrays",
]

#: Restarts whose final mean log-likelihood per sample is within this of the best
#: count as having reached the best optimum (and as one optimum among themselves).
OPTIMUM_TOLERANCE = 1e-3

#: Status names by code, as written to output files.
STATUS_NAMES = tuple(status.name.lower() for status in Status)

#: Covariance matrices are printed in full up to this many features.
_MAX_MATRIX_FEATURES = 6
#: Histogram rows of distinct optima.
_MAX_OPTIMA_SHOWN = 6


# -- the summary ---------------------------------------------------------------------------


def format_summary(run: FitRun, about: tuple[str, ...] = (), extra_timing=()) -> str:
    """The human-readable report of a fit.

    Parameters
    ----------
    run : the fit.
    about : extra lines describing the data.
    extra_timing : ``(label, seconds, explanation)`` rows added to the timing table.

    Returns
    -------
    str
        Data, model, best restart, components, restarts and timing sections.
    """
    return "\n".join(
        [
            *_header_lines(run, about),
            "",
            *_best_lines(run),
            "",
            "Components",
            *_component_lines(run),
            "",
            f"Restarts ({run.options.n_restarts})",
            *_restart_lines(run),
            "",
            "Timing",
            *_timing_lines(run, extra_timing),
        ]
    )


def _header_lines(run: FitRun, about) -> list[str]:
    options, data = run.options, run.data
    n_samples, n_features = data.x.shape
    return [
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
    ]


def _best_lines(run: FitRun) -> list[str]:
    estimator = run.estimator
    lines = [
        f"Best restart (#{estimator.best_restart_})",
        f"  mean log-likelihood per sample  {estimator.lower_bound_:.4f}",
        f"  {'converged' if estimator.converged_ else 'NOT converged'} after "
        f"{_plural(estimator.n_iter_, 'iteration')}",
        f"  BIC {run.bic:.2f}, AIC {run.aic:.2f} "
        f"({run.n_parameters} free parameters; lower is better)",
    ]
    if not estimator.converged_:
        lines.append(
            f"  note: the best restart stopped at max_iter={run.options.max_iter}; "
            "raise --max-iter or --tol."
        )
    return lines


def _component_lines(run: FitRun) -> list[str]:
    estimator = run.estimator
    names = [_short(name) for name in run.data.feature_names]
    full_matrix = len(names) <= _MAX_MATRIX_FEATURES
    # The family knows its layout: per-component matrices or variances, or one shared matrix.
    view = jaxem.gaussian(run.options.covariance_type).covariance_view(
        estimator.covariances_, len(names)
    )
    counts = np.bincount(run.labels, minlength=run.options.n_components)
    lines = []
    for k, (weight, mean) in enumerate(zip(estimator.weights_, estimator.means_)):
        lines.append(
            f"  component {k + 1}  weight {weight:.4f}  ({_plural(int(counts[k]), 'row')} assigned)"
        )
        rows = [("mean", mean)]
        if view.per_component is not None:
            rows += _covariance_rows(view.per_component[k], full_matrix)
        lines += [*_table(names, rows), ""]
    if view.shared is not None:
        lines.append("  covariance shared by all components")
        lines += [*_table(names, _covariance_rows(view.shared, full_matrix)), ""]
    matrices = view.shared is not None or np.ndim(view.per_component) == 3
    if matrices and not full_matrix:
        lines.append(
            f"  (diagonals shown: {len(names)} features; --output saves the full matrices)"
        )
    elif view.note:
        lines.append(f"  {view.note}")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _covariance_rows(covariance: np.ndarray, full_matrix: bool) -> list[tuple[str, np.ndarray]]:
    """Table rows of one component's covariance: per-feature variances as they are; a
    matrix in full, or its diagonal when wide."""
    if covariance.ndim == 1:
        return [("variance", covariance)]
    if not full_matrix:
        return [("variance", np.diagonal(covariance))]
    return [("covariance" if i == 0 else "", row) for i, row in enumerate(covariance)]


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
    restarts = run.estimator.restarts_
    log_likelihood = np.asarray(restarts.log_likelihood, np.float64)
    status = np.asarray(restarts.status)
    n_iter = np.asarray(restarts.n_iter)
    counts = np.bincount(status, minlength=len(Status))
    lines = [
        f"  status      {counts[Status.CONVERGED]} converged, "
        f"{counts[Status.MAX_ITER]} reached max_iter, {counts[Status.NON_FINITE]} non-finite"
        + (f", {counts[Status.RUNNING]} still running" if counts[Status.RUNNING] else ""),
        f"  iterations  min {n_iter.min()}, median {np.median(n_iter):g}, max {n_iter.max()} "
        f"(best restart: {run.estimator.n_iter_})",
    ]
    # A failed restart's log-likelihood is not an optimum, whatever its value.
    usable = (status != Status.NON_FINITE) & np.isfinite(log_likelihood)
    return lines + _optima_lines(log_likelihood[usable], n_failed=int((~usable).sum()))


def _optima_lines(log_likelihood: np.ndarray, n_failed: int) -> list[str]:
    """How many restarts reached the best optimum, and a histogram of the optima."""
    optima = distinct_optima(log_likelihood)
    n_restarts = len(log_likelihood) + n_failed
    best_count = optima[0][1]
    lines = [
        f"  optima      {best_count} of {n_restarts} restarts reached the best "
        f"(within {OPTIMUM_TOLERANCE:g} per sample); {n_restarts - best_count} landed elsewhere"
        + (f" ({n_failed} non-finite)" if n_failed else "")
    ]
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


def _timing_lines(run: FitRun, extra_timing) -> list[str]:
    timing = run.timing
    rows = [
        (
            "compile",
            timing.compile,
            "JAX trace + lower + XLA compile or cache load (jax.monitoring)",
        ),
        ("run", timing.run, "the rest: all restarts running, final E-step, results to host"),
        ("total", timing.total, "wall clock of GaussianMixture.fit_predict"),
        *extra_timing,
    ]
    lines = [f"  {label:<11}{_seconds(seconds):>9}   {what}" for label, seconds, what in rows]
    return lines + [f"  {'cache':<11}{'':>9}   {_cache_text(run)}"]


def _cache_text(run: FitRun) -> str:
    """The persistent compilation cache's part in the compile time."""
    folder, timing = run.cache.folder, run.timing
    if folder is None:
        return f"persistent cache off ({run.cache.reason})"
    return (
        f"persistent cache {_home_relative(folder)}: "
        f"{_plural(timing.cache_loaded, 'program')} loaded, {timing.cache_saved} compiled and saved"
    )


def _home_relative(path: Path) -> str:
    """``path`` with the home folder written as ``~``."""
    try:
        return str(Path("~") / path.resolve().relative_to(Path.home().resolve()))
    except (ValueError, RuntimeError):  # outside home, or no home
        return str(path)


# -- formatting helpers --------------------------------------------------------------------


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


# -- output files --------------------------------------------------------------------------


def output_arrays(run: FitRun, with_labels: bool) -> dict[str, Any]:
    """Everything ``--output`` writes, as numpy arrays and scalars.

    Parameters are the estimator's, in scikit-learn's layout for the covariance
    type, in float64; per-restart arrays come from its ``restarts_``.
    """
    estimator = run.estimator
    restarts = estimator.restarts_

    def floats(value):
        return np.asarray(value, np.float64)

    arrays = {
        "weights": floats(estimator.weights_),
        "means": floats(estimator.means_),
        "covariances": floats(estimator.covariances_),
        "precisions_cholesky": floats(estimator.precisions_cholesky_),
        "covariance_type": np.str_(run.options.covariance_type),
        "log_likelihood": np.float64(estimator.lower_bound_),
        "n_iter": np.int64(estimator.n_iter_),
        "converged": np.bool_(estimator.converged_),
        "best_restart": np.int64(estimator.best_restart_),
        "bic": np.float64(run.bic),
        "aic": np.float64(run.aic),
        "n_samples": np.int64(run.data.x.shape[0]),
        "feature_names": np.array(run.data.feature_names, dtype=np.str_),
        "restart_log_likelihood": floats(restarts.log_likelihood),
        "restart_n_iter": np.asarray(restarts.n_iter, np.int64),
        "restart_status": np.asarray(restarts.status, np.int64),
        "status_names": np.array(STATUS_NAMES, dtype=np.str_),
        "dtype": np.str_(run.dtype),
        "jaxem_version": np.str_(jaxem.__version__),
    }
    if with_labels:
        arrays["labels"] = np.asarray(run.labels, np.int64)
    return arrays

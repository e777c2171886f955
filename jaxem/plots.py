"""Plots of fitted models, restarts and model selection (matplotlib, optional).

Every function takes what it draws (an estimator, a fit result or a
:class:`jaxem.Selection`) and an optional ``ax``; it draws on ``ax`` (default: a new
figure's axes) and returns it. matplotlib is imported only when a function is called:
install it with ``pip install jaxem[plots]``.

- :func:`plot_mixture`: a 2-D projection of the data coloured by component, with each
  component's covariance ellipse (any covariance type) and mean.
- :func:`plot_restart_log_likelihoods`: how many restarts ended in each optimum.
- :func:`plot_traces`: every restart's log-likelihood per iteration.
- :func:`plot_selection`: a criterion against the number of components, one curve per
  covariance type, as mclust's BIC plot.
- :func:`plot_hmm_states`: a sequence and its decoded states.
"""

from __future__ import annotations

import numpy as np

from jaxem.engine import FitResult, RestartSummary, TracedFit

__all__ = [
    "plot_mixture",
    "plot_restart_log_likelihoods",
    "plot_traces",
    "plot_selection",
    "plot_hmm_states",
]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:  # an optional dependency
        raise ImportError(
            "jaxem.plots needs matplotlib; install it with `pip install jaxem[plots]` "
            "(or `pip install matplotlib`)."
        ) from error
    return plt


def _axes(ax):
    return _pyplot().subplots()[1] if ax is None else ax


#: Full (K, F, F) covariances from each of scikit-learn's covariance layouts.
_TO_FULL = {
    "full": lambda cov, k, f: np.asarray(cov),
    "tied": lambda cov, k, f: np.broadcast_to(cov, (k, f, f)),
    "diag": lambda cov, k, f: np.asarray(cov)[:, :, None] * np.eye(f),
    "spherical": lambda cov, k, f: np.asarray(cov)[:, None, None] * np.eye(f),
}


def _full_covariances(estimator) -> np.ndarray:
    means = np.asarray(estimator.means_, np.float64)
    k, f = means.shape
    if hasattr(estimator, "covariances_"):  # GaussianMixture: its covariance layout
        return np.asarray(_TO_FULL[estimator.covariance_type](estimator.covariances_, k, f))
    if hasattr(estimator, "covars_"):  # GaussianHMM: covars_ is always (K, F, F)
        return np.asarray(estimator.covars_, np.float64)
    raise TypeError(
        f"plot_mixture needs a fitted Gaussian model (means_ and covariances_ or covars_); "
        f"got {type(estimator).__name__}."
    )


def plot_mixture(estimator, X, ax=None, dims=(0, 1), n_std: float = 2.0):
    """The data in two of its dimensions, coloured by component, with ellipses.

    Parameters
    ----------
    estimator : fitted :class:`jaxem.GaussianMixture` (any covariance type) or
        :class:`jaxem.GaussianHMM`.
    X : array of shape (n_samples, n_features)
        Rows to draw, coloured by ``estimator.predict(X)``.
    ax : matplotlib Axes, optional
    dims : pair of int
        The two features to project on.
    n_std : float
        Each ellipse is the set of points ``n_std`` standard deviations (Mahalanobis
        distance) from its mean, in the projected 2-D marginal.

    Returns
    -------
    ax : matplotlib Axes
        With one scatter of the rows, one of the means, and one ellipse per component.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np, jaxem
    >>> from jaxem.plots import plot_mixture
    >>> X = np.concatenate([np.zeros((20, 2)), np.full((20, 2), 5.0)])
    >>> X = X + np.random.default_rng(0).normal(size=X.shape)
    >>> gm = jaxem.GaussianMixture(2, covariance_type="diag", random_state=0).fit(X)
    >>> len(plot_mixture(gm, X).patches)
    2
    """
    from matplotlib.patches import Ellipse

    ax = _axes(ax)
    X = np.asarray(X)
    i, j = (int(d) for d in dims)
    if X.ndim != 2 or not (0 <= i < X.shape[1] and 0 <= j < X.shape[1]) or i == j:
        raise ValueError(
            f"dims must be two different feature indices of X (shape {X.shape}); got {dims}."
        )
    labels = np.asarray(estimator.predict(X))
    means = np.asarray(estimator.means_, np.float64)
    covariances = _full_covariances(estimator)
    colours = _pyplot().get_cmap("tab10")
    ax.scatter(X[:, i], X[:, j], c=[colours(label % 10) for label in labels], s=8, alpha=0.6)
    ax.scatter(means[:, i], means[:, j], c="black", marker="x", s=40)
    for k, (mean, covariance) in enumerate(zip(means, covariances)):
        block = covariance[np.ix_([i, j], [i, j])]
        values, vectors = np.linalg.eigh(block)
        angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
        width, height = 2 * n_std * np.sqrt(np.maximum(values[::-1], 0.0))
        ax.add_patch(
            Ellipse(
                (mean[i], mean[j]),
                width,
                height,
                angle=angle,
                fill=False,
                edgecolor=colours(k % 10),
                linewidth=1.5,
            )
        )
    ax.set_xlabel(f"feature {i}")
    ax.set_ylabel(f"feature {j}")
    return ax


def _restarts(source) -> RestartSummary:
    """The :class:`RestartSummary` inside an estimator, fit result or summary."""
    if isinstance(source, RestartSummary):
        return source
    if isinstance(source, (FitResult, TracedFit)):
        return source.restarts
    summary = getattr(source, "restarts_", None)
    if isinstance(summary, RestartSummary):
        return summary
    raise TypeError(
        "Expected a fitted jaxem estimator (restarts_), a jaxem.FitResult, a TracedFit or "
        f"a RestartSummary; got {type(source).__name__}."
    )


def optima(final_log_likelihoods, tol: float = 1e-3):
    """Group final log-likelihoods into optima: ``(values, counts)``, best first.

    Values within ``tol`` of the previous (sorted) one belong to the same optimum; the
    non-finite values of failed restarts are left out.

    >>> optima([-1.0, -1.0004, -2.0, np.nan, -1.0002])
    (array([-1., -2.]), array([3, 1]))
    """
    values = np.asarray(final_log_likelihoods, np.float64)
    values = np.sort(values[np.isfinite(values)])[::-1]
    if values.size == 0:
        return np.empty(0), np.empty(0, np.int64)
    starts = np.concatenate([[True], np.diff(values) < -tol])
    groups = np.cumsum(starts) - 1
    return values[starts], np.bincount(groups)


def plot_restart_log_likelihoods(result_or_estimator, ax=None, tol: float = 1e-3):
    """How often EM landed in each optimum: one bar per distinct final log-likelihood.

    Parameters
    ----------
    result_or_estimator : fitted jaxem estimator, FitResult, TracedFit or RestartSummary
        Its restarts' final mean per-sample log-likelihoods are used (failed restarts
        are left out).
    ax : matplotlib Axes, optional
    tol : float
        Final values within ``tol`` of each other count as one optimum.

    Returns
    -------
    ax : matplotlib Axes
        One bar per optimum (best left), its height the number of restarts.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np, jaxem
    >>> from jaxem.plots import plot_restart_log_likelihoods
    >>> X = np.random.default_rng(0).normal(size=(60, 2))
    >>> gm = jaxem.GaussianMixture(2, n_init=4, random_state=0).fit(X)
    >>> ax = plot_restart_log_likelihoods(gm)
    >>> int(sum(bar.get_height() for bar in ax.patches))  # every restart, in its optimum
    4
    """
    ax = _axes(ax)
    values, counts = optima(_restarts(result_or_estimator).log_likelihood, tol)
    positions = np.arange(values.size)
    ax.bar(positions, counts)
    ax.set_xticks(positions, [f"{value:.4f}" for value in values])
    ax.set_xlabel("final log-likelihood per sample")
    ax.set_ylabel("restarts")
    return ax


def plot_traces(result, ax=None):
    """Every restart's mean per-sample log-likelihood per iteration.

    Parameters
    ----------
    result : fitted jaxem estimator, FitResult, TracedFit or RestartSummary
    ax : matplotlib Axes, optional

    Returns
    -------
    ax : matplotlib Axes
        One line per restart that ran at least one iteration (the best restart, when
        known, drawn in black on top).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np, jaxem
    >>> from jaxem.plots import plot_traces
    >>> X = np.random.default_rng(0).normal(size=(60, 2))
    >>> gm = jaxem.GaussianMixture(2, n_init=3, random_state=0).fit(X)
    >>> len(plot_traces(gm).lines)
    3
    """
    ax = _axes(ax)
    summary = _restarts(result)
    best = getattr(result, "best_restart_", getattr(result, "best_restart", None))
    trace = np.asarray(summary.trace, np.float64)
    n_iter = np.asarray(summary.n_iter)
    for restart in range(trace.shape[0]):
        if n_iter[restart] < 1:
            continue
        steps = np.arange(1, int(n_iter[restart]) + 1)
        is_best = best is not None and restart == int(best)
        ax.plot(
            steps,
            trace[restart, : steps.size],
            color="black" if is_best else None,
            linewidth=2.0 if is_best else 0.8,
            alpha=1.0 if is_best else 0.6,
            zorder=3 if is_best else 2,
        )
    ax.set_xlabel("iteration")
    ax.set_ylabel("log-likelihood per sample")
    return ax


def plot_selection(selection, ax=None, criterion=None):
    """A criterion against the number of components, one curve per covariance type.

    Parameters
    ----------
    selection : :class:`jaxem.Selection`
    ax : matplotlib Axes, optional
    criterion : {'bic', 'aic', 'icl'}, optional
        Default: the one the selection chose by. Lower is better.

    Returns
    -------
    ax : matplotlib Axes
        One line per covariance type, a legend, and the chosen model circled (when
        ``criterion`` is the selection's).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np, jaxem
    >>> from jaxem.plots import plot_selection
    >>> X = np.random.default_rng(0).normal(size=(60, 2))
    >>> found = jaxem.select(X, [1, 2], ["full", "diag"], random_state=0)
    >>> len(plot_selection(found).lines)
    2
    """
    ax = _axes(ax)
    chosen = criterion is None or criterion == selection.criterion
    criterion = criterion or selection.criterion
    for covariance_type, (counts, values) in selection.criterion_values(criterion).items():
        ax.plot(counts, values, marker="o", label=covariance_type)
    if chosen:
        k, covariance_type = selection.best_
        counts, values = selection.criterion_values(criterion)[covariance_type]
        value = values[list(counts).index(k)]
        ax.scatter([k], [value], s=200, facecolors="none", edgecolors="red", zorder=4)
    ax.set_xlabel("number of components")
    ax.set_ylabel(f"{criterion.upper()} (lower is better)")
    ax.legend(title="covariance")
    return ax


def plot_hmm_states(hmm, X, ax=None, lengths=None, dim: int = 0):
    """A sequence's values over time with its decoded (Viterbi) states behind them.

    Parameters
    ----------
    hmm : fitted jaxem HMM (``GaussianHMM``, ``CategoricalHMM``, ``PoissonHMM``)
    X : array of shape (n_samples, n_features)
    ax : matplotlib Axes, optional
    lengths : sequence lengths, as ``hmm.predict``
    dim : int
        The feature drawn.

    Returns
    -------
    ax : matplotlib Axes
        The feature as a line, each run of one decoded state as a shaded span in that
        state's colour, and (for Gaussian emissions) the decoded state's mean as a step
        line.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np, jaxem
    >>> from jaxem.plots import plot_hmm_states
    >>> X = np.repeat([0.0, 5.0, 0.0], 30)[:, None]
    >>> X = X + np.random.default_rng(0).normal(scale=0.3, size=X.shape)
    >>> hmm = jaxem.GaussianHMM(2, random_state=0).fit(X)
    >>> ax = plot_hmm_states(hmm, X)
    >>> len(ax.lines), len(ax.patches)
    (2, 3)
    """
    ax = _axes(ax)
    X = np.asarray(X)
    if X.ndim != 2 or not 0 <= int(dim) < X.shape[1]:
        raise ValueError(f"dim must be a feature index of X (shape {X.shape}); got {dim}.")
    states = np.asarray(hmm.predict(X, lengths))
    colours = _pyplot().get_cmap("tab10")
    time = np.arange(X.shape[0])
    ax.plot(time, X[:, dim], color="black", linewidth=0.8)
    starts = np.flatnonzero(np.concatenate([[True], np.diff(states) != 0]))
    ends = np.concatenate([starts[1:], [states.size]])
    for start, end in zip(starts, ends):
        ax.axvspan(start - 0.5, end - 0.5, color=colours(states[start] % 10), alpha=0.2, lw=0)
    means = getattr(hmm, "means_", None)
    if means is not None:
        ax.step(time, np.asarray(means)[states, dim], where="mid", color="red", linewidth=1.2)
    ax.set_xlabel("time")
    ax.set_ylabel(f"feature {dim}")
    return ax

"""jaxem.plots with the Agg backend: each function draws the expected artists."""

import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

import jaxem  # noqa: E402
from jaxem import engine, plots  # noqa: E402
from jaxem.families.gaussian import COVARIANCE_TYPES  # noqa: E402
from jaxem.selection import TABLE_DTYPE, Selection  # noqa: E402
from tests.conftest import make_blobs  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_plot_mixture_draws_one_ellipse_per_component(covariance_type):
    X, _ = make_blobs(n_samples=90, n_features=3, n_clusters=3, seed=2, spread=6.0)
    gm = jaxem.GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    fig, ax = plt.subplots()
    assert plots.plot_mixture(gm, X, ax=ax, dims=(2, 0), n_std=1.5) is ax
    ellipses = [patch for patch in ax.patches if isinstance(patch, Ellipse)]
    assert len(ellipses) == 3 and len(ax.collections) == 2  # rows, means
    full = plots._full_covariances(gm)
    for ellipse, mean, covariance in zip(ellipses, gm.means_, full):
        np.testing.assert_allclose(ellipse.center, (mean[2], mean[0]))
        block = covariance[np.ix_([2, 0], [2, 0])]
        axes = sorted([ellipse.width, ellipse.height])
        np.testing.assert_allclose(axes, 3.0 * np.sqrt(np.linalg.eigvalsh(block)), rtol=1e-6)
    if covariance_type == "spherical":
        assert all(np.isclose(e.width, e.height) for e in ellipses)
    if covariance_type == "tied":  # one shared shape
        assert len({(round(e.width, 9), round(e.height, 9)) for e in ellipses}) == 1
    with pytest.raises(ValueError, match="dims must be two different feature indices"):
        plots.plot_mixture(gm, X, dims=(0, 0))


def _summary():
    trace = np.full((4, 128), np.nan)
    trace[0, :3] = [-3.0, -2.0, -1.0]
    trace[1, :5] = [-4.0, -3.0, -2.5, -2.1, -2.0]
    trace[3, :2] = [-5.0, -1.0004]
    return engine.RestartSummary(
        log_likelihood=np.array([-1.0, -2.0, np.nan, -1.0004]),
        n_iter=np.array([3, 5, 0, 2]),
        status=np.array([engine.CONVERGED, engine.CONVERGED, engine.NON_FINITE, 1]),
        trace=trace,
        params=None,
    )


def test_plot_restart_log_likelihoods_one_bar_per_optimum():
    ax = plots.plot_restart_log_likelihoods(_summary())
    assert [bar.get_height() for bar in ax.patches] == [2, 1]  # -1 (twice), -2; NaN out
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["-1.0000", "-2.0000"]
    assert len(plots.plot_restart_log_likelihoods(_summary(), tol=1e-5).patches) == 3


def test_plot_traces_one_line_per_restart_best_in_black():
    result = engine.FitResult(None, -1.0, 0, True, 3, _summary())
    ax = plots.plot_traces(result)
    assert len(ax.lines) == 3  # restart 2 never iterated
    assert [len(line.get_xdata()) for line in ax.lines] == [3, 5, 2]
    assert ax.lines[0].get_color() == "black"
    assert ax.lines[1].get_color() != "black"
    with pytest.raises(TypeError, match="Expected a fitted jaxem estimator"):
        plots.plot_traces(object())


def test_plot_selection_one_curve_per_covariance_type():
    records = [
        (k, c, bic, bic, bic + 1, -bic / 2, 3 * k, 1, 2, True, 5)
        for c, shift in (("full", 0.0), ("diag", 5.0), ("spherical", 9.0))
        for k, bic in zip((1, 2, 3), np.array([30.0, 10.0, 20.0]) + shift)
    ]
    selection = Selection(np.array(records, TABLE_DTYPE), "bic", (2, "full"), None, {}, 100)
    ax = plots.plot_selection(selection)
    assert [line.get_label() for line in ax.lines] == ["full", "diag", "spherical"]
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), [35.0, 15.0, 25.0])
    assert len(ax.collections) == 1  # the chosen model circled
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), [[2, 10.0]])
    assert len(plots.plot_selection(selection, criterion="icl").collections) == 0


class _DecodedHMM:
    """An HMM whose decoding is given (the real GaussianHMM is in the doctest)."""

    means_ = np.array([[0.0], [5.0]])

    def __init__(self, states):
        self.states = np.asarray(states)

    def predict(self, X, lengths=None):
        return self.states


def test_plot_hmm_states_one_span_per_run():
    states = [0, 0, 1, 1, 1, 0, 1]
    X = np.array(states, float)[:, None] * 5.0
    ax = plots.plot_hmm_states(_DecodedHMM(states), X)
    assert len(ax.lines) == 2  # the data, the decoded means
    assert len(ax.patches) == 4  # runs 00, 111, 0, 1
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), X[:, 0])
    with pytest.raises(ValueError, match="dim must be a feature index"):
        plots.plot_hmm_states(_DecodedHMM(states), X, dim=1)


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install jaxem\[plots\]"):
        plots.plot_traces(_summary())

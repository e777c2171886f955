"""The scripts in ``examples/`` run at a small size and show what they claim.

``examples/learned_projection.py``: a linear map learned through
:func:`jaxem.fit_differentiable` makes a diagonal Gaussian mixture beat the same
mixture on the raw and on PCA-whitened rows by a clear margin on held-out rows, and
reach a full-covariance mixture; a failed implicit gradient makes its optimiser step
back, and is raised when stepping back does not help.
"""

import importlib.util
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import jaxem

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: Small enough for a few seconds of run time (compilation dominates), large enough
#: that every fit is well determined.
SMALL = ["--n-train", "200", "--n-validation", "200", "--n-test", "1000", "--n-steps", "100"]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def learned_projection():
    return _load("learned_projection")


def test_learned_map_beats_fixed_maps_and_reaches_full_covariance(learned_projection, capsys):
    comparison = learned_projection.main(SMALL)
    printed = capsys.readouterr().out
    scores = comparison.scores
    identity = scores["identity, diagonal"]
    pca = scores["PCA whitening, diagonal"]
    learned = scores["learned W, diagonal"]
    full = scores["identity, full (ceiling)"]

    for name, value in scores.items():
        assert np.isfinite(value), name
        assert f"{value:.4f}" in printed, name
    assert np.all(np.isfinite(comparison.learned_map))
    assert np.all(np.isfinite(comparison.validation_history))
    # Measured at this size: identity -4.894, PCA -4.916, learned -3.518, full -3.521
    # (mean log-likelihood per test row).
    assert learned > max(identity, pca) + 1.0, scores
    assert learned > full - 0.05, scores
    assert comparison.validation_history[-1] > comparison.validation_history[0] + 1.0

    # What the learned map does: the clusters, tilted in the raw coordinates, are
    # axis-aligned after it (within-cluster correlation of the two coordinates).
    split = comparison.split

    def correlations(rows):
        return [
            np.corrcoef(rows[split.test_labels == label], rowvar=False)[0, 1]
            for label in np.unique(split.test_labels)
        ]

    assert min(np.abs(correlations(split.test))) > 0.8
    assert max(np.abs(correlations(split.test @ comparison.learned_map))) < 0.3


def _quadratic(failing, error=None):
    """``(loss, gradient)`` of ``|w - 3|²``, raising ``error`` (default
    :class:`jaxem.AdjointNotConverged`) where ``failing(w)``."""

    def loss_and_gradient(w):
        if failing(w):
            raise error or jaxem.AdjointNotConverged("adjoint solve did not converge")
        return np.sum((w - 3.0) ** 2), 2.0 * (w - 3.0)

    return loss_and_gradient


def _descend(learned_projection, loss_and_gradient, n_steps, learning_rate=1.0):
    optimiser = optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)

    def update(gradient, state, w):
        updates, state = optimiser.update(gradient, state, w)
        return optax.apply_updates(w, updates), state

    w = np.zeros(1)
    return learned_projection.descend(
        loss_and_gradient, update, w, optimiser.init(w), n_steps, max_halvings=3
    )


def test_descend_steps_back_from_a_failed_adjoint(learned_projection):
    # SGD with learning rate 1 jumps from 0 to 6; 6 fails, so the step is retaken
    # with 0.5 (to 3, the minimum), and the halved rate is kept.
    w, losses, halvings = _descend(learned_projection, _quadratic(lambda w: w[0] > 5), 3)
    assert halvings == 1
    np.testing.assert_allclose(losses, [9.0, 0.0, 0.0])
    np.testing.assert_allclose(w, [3.0])


def test_descend_raises_what_stepping_back_does_not_fix(learned_projection):
    # Failing everywhere but the start: after max_halvings retries, the error.
    with pytest.raises(jaxem.AdjointNotConverged):
        _descend(learned_projection, _quadratic(lambda w: w[0] != 0), 2)
    # Under jax.jit the error arrives wrapped in a runtime error: recognised as well.
    wrapped = jax.errors.JaxRuntimeError("INTERNAL: CpuCallback error: AdjointNotConverged: ...")
    assert learned_projection.is_adjoint_failure(wrapped)
    # Any other error is raised at once, never retried.
    out_of_memory = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: out of memory")
    with pytest.raises(jax.errors.JaxRuntimeError, match="RESOURCE_EXHAUSTED"):
        _descend(learned_projection, _quadratic(lambda w: w[0] != 0, out_of_memory), 2)
    # A failure at the first step has nothing to step back to.
    with pytest.raises(jaxem.AdjointNotConverged):
        _descend(learned_projection, _quadratic(lambda w: True), 1)

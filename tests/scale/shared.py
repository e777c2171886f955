"""Data and settings shared by the sharded tests and their subprocesses."""

import jax
import numpy as np

import jaxem


def hmm_frames():
    """Frames of 24 sequences and their lengths (hmmlearn's layout)."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(10, 30, size=24)
    frames = rng.normal(size=(lengths.sum(), 2)) + rng.integers(0, 2, (lengths.sum(), 1)) * 3.0
    return frames, lengths


def data_sets():
    """``{name: (model, x)}``: a Gaussian mixture, k-means and a Gaussian HMM, each
    small, float64 (64-bit mode on), with clusters that EM separates."""
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(900, 3)) + rng.integers(0, 3, size=(900, 1)) * 3.0
    frames, lengths = hmm_frames()
    return {
        "gmm": (jaxem.mixture(jaxem.gaussian("full"), n_components=3), rows),
        "kmeans": (jaxem.kmeans(3), rows),
        # Stochastic EM: its draws are per row, so they do not depend on the split.
        "sem": (jaxem.mixture(jaxem.gaussian("full"), 3, assignment="stochastic"), rows),
        "hmm": (
            jaxem.hmm(jaxem.gaussian("diag"), n_states=2),
            jaxem.pad_sequences(frames, lengths),
        ),
    }


#: Models the fit across processes runs (k-means shares the mixture's row layout).
MULTIPROCESS_MODELS = ("gmm", "hmm")


def fit_settings():
    return dict(key=jax.random.key(0), n_restarts=3, max_iter=40, tol=1e-10, chunk_size=40)

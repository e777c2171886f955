"""Synthetic benchmark data and shared initialisations, all from numpy with fixed seeds.

Every generator is deterministic given its ``seed`` so that jaxem and every peer
library see bit-identical inputs.  Arrays are float32 by default (the precision
jaxem and the JAX/PyTorch peers compute in); cast them if a library needs float64.

The ``*_init`` helpers produce one starting point per restart, so that jaxem and
each peer can start restart ``r`` from the *same* parameters and the final
log-likelihoods are comparable.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "gmm_init",
    "hmm_init",
    "kmeans_init",
    "make_blobs",
    "make_hmm_sequences",
]


def _random_rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    """A Haar-random orthogonal ``(d, d)`` matrix (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _component_params(
    rng: np.random.Generator, d: int, k: int, covariance: str, separation: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Centres ``(k, d)``, per-axis standard deviations ``(k, d)``, rotations or None.

    Centres are N(0, s^2 I) with ``s = separation / sqrt(2 d)``, so two random
    centres are about ``separation`` apart while each cluster has a standard
    deviation between 0.5 and 1.5 along every axis: ``separation=4`` gives
    clusters that overlap with their nearest neighbours (EM and Lloyd keep moving
    for many iterations), ``separation=10`` gives well separated blobs.
    """
    centers = rng.standard_normal((k, d)) * (separation / np.sqrt(2.0 * d))
    if covariance == "spherical":
        scales = np.repeat(rng.uniform(0.5, 1.5, size=(k, 1)), d, axis=1)
    else:
        scales = rng.uniform(0.5, 1.5, size=(k, d))
    if covariance == "full":
        rotations = np.stack([_random_rotation(rng, d) for _ in range(k)])
    elif covariance in ("diag", "spherical"):
        rotations = None
    else:
        raise ValueError(f"unknown covariance {covariance!r}")
    return centers, scales, rotations


def make_blobs(
    n: int,
    d: int,
    k: int,
    seed: int,
    *,
    covariance: str = "full",
    separation: float = 4.0,
    dtype: type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``n`` points in ``d`` dimensions from a ``k``-component Gaussian mixture.

    Parameters
    ----------
    n, d, k : int
        Number of samples, dimensions and mixture components.
    seed : int
        Seed of ``numpy.random.default_rng``.
    covariance : {"full", "diag", "spherical"}
        Shape of the generating covariances: "full" uses a random rotation per
        component (so a full-covariance model is the right model), "diag"
        axis-aligned ellipsoids, "spherical" one variance per component.
    separation : float
        Typical distance between two centres in units of cluster standard deviation.
    dtype : numpy dtype
        dtype of the returned samples.

    Returns
    -------
    X : ndarray, shape (n, d), ``dtype``
    labels : ndarray, shape (n,), int64 -- generating component of each sample.
    """
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(k, 10.0))
    centers, scales, rotations = _component_params(rng, d, k, covariance, separation)
    labels = rng.choice(k, size=n, p=weights)
    x = np.empty((n, d), dtype=dtype)
    for j in range(k):
        idx = np.flatnonzero(labels == j)
        z = rng.standard_normal((idx.size, d)) * scales[j]
        if rotations is not None:
            z = z @ rotations[j].T
        x[idx] = z + centers[j]
    return x, labels


def make_hmm_sequences(
    n_seq: int,
    t: int,
    d: int,
    k: int,
    seed: int,
    *,
    stickiness: float = 0.9,
    separation: float = 4.0,
    dtype: type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``n_seq`` sequences of length ``t`` from a ``k``-state HMM with diagonal
    Gaussian emissions in ``d`` dimensions.

    The transition matrix has ``stickiness`` on its diagonal and the rest of each
    row drawn from a Dirichlet; the initial distribution is uniform; emission means
    and standard deviations are drawn as in :func:`make_blobs` (``covariance="diag"``).

    Returns
    -------
    X : ndarray, shape (n_seq, t, d), ``dtype``
    states : ndarray, shape (n_seq, t), int64
    """
    rng = np.random.default_rng(seed)
    off = rng.dirichlet(np.ones(k - 1), size=k) * (1.0 - stickiness)
    transmat = np.empty((k, k))
    for i in range(k):
        transmat[i, i] = stickiness
        transmat[i, np.arange(k) != i] = off[i]
    means, scales, _ = _component_params(rng, d, k, "diag", separation)
    cum = np.cumsum(transmat, axis=1)
    cum[:, -1] = 1.0
    states = np.empty((n_seq, t), dtype=np.int64)
    states[:, 0] = rng.integers(k, size=n_seq)
    u = rng.random((t, n_seq))
    for step in range(1, t):
        prev = states[:, step - 1]
        states[:, step] = (u[step][:, None] > cum[prev]).sum(axis=1)
    noise = rng.standard_normal((n_seq, t, d)).astype(dtype)
    x = (noise * scales[states] + means[states]).astype(dtype)
    return x, states


def _distinct_rows(x2d: np.ndarray, k: int, restarts: int, seed: int) -> np.ndarray:
    """``(restarts, k, d)`` copies of rows of ``x2d``, distinct within each restart."""
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.choice(x2d.shape[0], size=k, replace=False) for _ in range(restarts)])
    return np.ascontiguousarray(x2d[idx])


def kmeans_init(x: np.ndarray, k: int, restarts: int, seed: int) -> np.ndarray:
    """Initial centroids, ``(restarts, k, d)``: ``k`` distinct random data points per restart."""
    return _distinct_rows(x, k, restarts, seed)


def gmm_init(
    x: np.ndarray, k: int, restarts: int, seed: int, covariance: str = "full"
) -> dict[str, np.ndarray]:
    """Initial GMM parameters per restart.

    Means are ``k`` distinct random data points, weights uniform, and every
    component's covariance is the diagonal matrix of the per-feature variances of
    the data (for ``covariance="diag"`` just those variances).

    Returns
    -------
    dict with ``weights`` (R, K), ``means`` (R, K, D) and ``covariances``
    (R, K, D, D) for "full" or (R, K, D) for "diag"; all in ``x.dtype``.
    """
    d = x.shape[1]
    means = _distinct_rows(x, k, restarts, seed)
    var = x.var(axis=0, dtype=np.float64)
    if covariance == "full":
        cov = np.broadcast_to(np.diag(var), (restarts, k, d, d))
    elif covariance == "diag":
        cov = np.broadcast_to(var, (restarts, k, d))
    else:
        raise ValueError(f"unsupported covariance {covariance!r}")
    return {
        "weights": np.full((restarts, k), 1.0 / k, dtype=x.dtype),
        "means": means,
        "covariances": np.ascontiguousarray(cov, dtype=x.dtype),
    }


def hmm_init(
    x: np.ndarray, k: int, restarts: int, seed: int, self_transition: float = 0.5
) -> dict[str, np.ndarray]:
    """Initial diagonal-Gaussian HMM parameters per restart.

    ``x`` is ``(n_seq, t, d)`` or ``(t, d)``.  Means are ``k`` distinct random
    observations, variances the per-feature variances of all observations, the
    start distribution uniform and the transition matrix
    ``self_transition * I + (1 - self_transition) / k``.

    Returns
    -------
    dict with ``startprob`` (R, K), ``transmat`` (R, K, K), ``means`` (R, K, D)
    and ``variances`` (R, K, D); all in ``x.dtype``.
    """
    flat = x.reshape(-1, x.shape[-1])
    d = flat.shape[1]
    trans = self_transition * np.eye(k) + (1.0 - self_transition) / k
    return {
        "startprob": np.full((restarts, k), 1.0 / k, dtype=x.dtype),
        "transmat": np.broadcast_to(trans, (restarts, k, k)).astype(x.dtype),
        "means": _distinct_rows(flat, k, restarts, seed),
        "variances": np.broadcast_to(flat.var(axis=0, dtype=np.float64), (restarts, k, d)).astype(
            x.dtype
        ),
    }

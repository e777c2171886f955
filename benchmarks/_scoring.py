"""Library-independent scores of fitted parameters, computed in float64 numpy.

Every benchmark row (jaxem and each peer) is scored with these functions on the
parameters the library returned, so the "final log-likelihood" column means the
same thing in every row whatever each library reports internally (some report
the value from the last E-step, i.e. *before* the last M-step, some a sum, some
include a log prior).  Scoring is never inside a timed region.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular
from scipy.special import logsumexp

__all__ = ["gmm_mean_loglik", "hmm_mean_loglik", "kmeans_inertia"]

_LOG_2PI = np.log(2.0 * np.pi)


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def gmm_log_prob(
    x: np.ndarray,
    weights: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    covariance_type: str,
) -> np.ndarray:
    """``log(w_k) + log N(x_i | mu_k, Sigma_k)``, shape ``(n, K)``, float64."""
    x = np.asarray(x, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    covariances = np.asarray(covariances, dtype=np.float64)
    n, d = x.shape
    k = means.shape[0]
    out = np.empty((n, k))
    if covariance_type == "full":
        for j in range(k):
            chol = np.linalg.cholesky(covariances[j])
            # Mahalanobis distance through the Cholesky factor: |L^-1 (x - mu)|^2.
            y = solve_triangular(chol, (x - means[j]).T, lower=True)
            logdet = 2.0 * np.log(np.diag(chol)).sum()
            out[:, j] = -0.5 * (d * _LOG_2PI + logdet + np.einsum("ij,ij->j", y, y))
    elif covariance_type == "diag":
        prec = 1.0 / covariances
        maha = (x**2) @ prec.T - 2.0 * x @ (means * prec).T + (means**2 * prec).sum(axis=1)
        out[:] = -0.5 * (d * _LOG_2PI + np.log(covariances).sum(axis=1) + maha)
    else:
        raise ValueError(f"unsupported covariance_type {covariance_type!r}")
    return out + np.log(np.asarray(weights, dtype=np.float64))


def gmm_mean_loglik(
    x: np.ndarray,
    weights: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    covariance_type: str,
    chunk: int = 65536,
) -> float:
    """Mean over samples of ``log p(x_i)`` under a GMM (float64, chunked over samples).

    ``covariances`` is ``(K, D, D)`` for "full" and ``(K, D)`` (variances) for "diag".
    """
    total = 0.0
    for sl in _chunks(x.shape[0], chunk):
        lp = gmm_log_prob(x[sl], weights, means, covariances, covariance_type)
        total += logsumexp(lp, axis=1).sum()
    return float(total / x.shape[0])


def kmeans_inertia(x: np.ndarray, centers: np.ndarray, chunk: int = 65536) -> float:
    """Mean over samples of the squared distance to the nearest centre (float64).

    Note: scikit-learn's ``inertia_`` is the *sum*; this is that sum divided by n.
    """
    c = np.asarray(centers, dtype=np.float64)
    cc = (c**2).sum(axis=1)
    total = 0.0
    for sl in _chunks(x.shape[0], chunk):
        xs = np.asarray(x[sl], dtype=np.float64)
        d2 = (xs**2).sum(axis=1)[:, None] - 2.0 * xs @ c.T + cc
        total += np.maximum(d2.min(axis=1), 0.0).sum()
    return float(total / x.shape[0])


def hmm_mean_loglik(
    x: np.ndarray,
    startprob: np.ndarray,
    transmat: np.ndarray,
    means: np.ndarray,
    variances: np.ndarray,
) -> float:
    """Mean per observation of ``log p(sequences)`` under a diagonal-Gaussian HMM.

    ``x`` is ``(n_seq, t, d)`` (equal-length sequences) or ``(t, d)``.  Uses the
    scaled forward algorithm in float64, vectorised over sequences; returns the
    total log-likelihood of all sequences divided by ``n_seq * t``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    n_seq, t, d = x.shape
    var = np.asarray(variances, dtype=np.float64)
    mu = np.asarray(means, dtype=np.float64)
    a = np.asarray(transmat, dtype=np.float64)
    prec = 1.0 / var
    const = -0.5 * (d * _LOG_2PI + np.log(var).sum(axis=1) + (mu**2 * prec).sum(axis=1))
    flat = x.reshape(-1, d)
    log_b = (const - 0.5 * ((flat**2) @ prec.T) + flat @ (mu * prec).T).reshape(n_seq, t, -1)
    shift = log_b.max(axis=2, keepdims=True)
    b = np.exp(log_b - shift)
    total = shift.sum()
    alpha = np.asarray(startprob, dtype=np.float64) * b[:, 0]
    for step in range(t):
        if step:
            alpha = (alpha @ a) * b[:, step]
        scale = alpha.sum(axis=1, keepdims=True)
        total += np.log(scale).sum()
        alpha /= scale
    return float(total / (n_seq * t))

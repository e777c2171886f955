"""Log-space, Cholesky and pytree helpers shared by every layer.

Nothing here knows about models: these are the numerical building blocks that
families, models and the engine import.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

__all__ = [
    "LOG_2PI",
    "tiny",
    "tree_add",
    "tree_where",
    "tree_all_finite",
    "precision_cholesky_from_covariance",
    "covariance_from_precision_cholesky",
    "log_det_from_cholesky",
    "triu_indices",
    "vech",
    "unvech",
    "softmax_and_logsumexp",
    "centred_logs",
    "normalised_logs",
    "log_diagonal",
    "exp_diagonal",
]

LOG_2PI = 1.8378770664093453


def tiny(dtype) -> float:
    """Ten machine epsilons of ``dtype``: the floor scikit-learn adds to counts."""
    return 10.0 * jnp.finfo(dtype).eps


def tree_add(a, b):
    """Leafwise sum of two pytrees of equal structure."""
    return jax.tree.map(jnp.add, a, b)


def tree_where(condition, on_true, on_false):
    """Select whole pytrees per leading index: ``condition`` has shape ``(R,)``."""

    def select(x, y):
        shaped = jnp.reshape(condition, condition.shape + (1,) * (x.ndim - condition.ndim))
        return jnp.where(shaped, x, y)

    return jax.tree.map(select, on_true, on_false)


def tree_all_finite(tree):
    """True where every leaf of ``tree`` is finite (vmap it for a batch of trees)."""
    flags = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
    out = flags[0]
    for flag in flags[1:]:
        out = out & flag
    return out


def precision_cholesky_from_covariance(covariance):
    """Upper-triangular ``U`` with ``U Uᵀ = Σ⁻¹``, as scikit-learn's ``precisions_cholesky_``.

    A non-positive-definite ``covariance`` yields NaN entries, which the engine
    turns into a non-finite restart status instead of an exception.
    """
    lower = jnp.linalg.cholesky(covariance)
    eye = jnp.broadcast_to(jnp.eye(covariance.shape[-1], dtype=covariance.dtype), covariance.shape)
    return jnp.swapaxes(solve_triangular(lower, eye, lower=True), -1, -2)


def covariance_from_precision_cholesky(precision_cholesky):
    """Inverse of :func:`precision_cholesky_from_covariance`."""
    eye = jnp.broadcast_to(
        jnp.eye(precision_cholesky.shape[-1], dtype=precision_cholesky.dtype),
        precision_cholesky.shape,
    )
    # Σ = (U Uᵀ)⁻¹ = U⁻ᵀ U⁻¹ with U upper triangular.
    inverse = solve_triangular(precision_cholesky, eye, lower=False)
    return jnp.swapaxes(inverse, -1, -2) @ inverse


def log_det_from_cholesky(cholesky_factor):
    """``log det`` of ``U`` for a triangular factor (so half the log-det of ``U Uᵀ``)."""
    return jnp.sum(jnp.log(jnp.diagonal(cholesky_factor, axis1=-2, axis2=-1)), axis=-1)


def triu_indices(n_features: int):
    """Row and column indices of the upper triangle, diagonal included."""
    return jnp.triu_indices(n_features)


def vech(matrix):
    """Upper triangle (with diagonal) of the last two axes, flattened."""
    rows, cols = triu_indices(matrix.shape[-1])
    return matrix[..., rows, cols]


def unvech(vector, n_features: int):
    """Symmetric matrix from its :func:`vech`."""
    rows, cols = triu_indices(n_features)
    upper = jnp.zeros(vector.shape[:-1] + (n_features, n_features), vector.dtype)
    upper = upper.at[..., rows, cols].set(vector)
    diagonal = jnp.diagonal(upper, axis1=-2, axis2=-1)
    return (
        upper
        + jnp.swapaxes(upper, -1, -2)
        - jnp.eye(n_features, dtype=vector.dtype) * diagonal[..., None, :]
    )


def softmax_and_logsumexp(log_values, axis: int = -1, scale=None):
    """``(scale · softmax(log_values), logsumexp(log_values))`` with one ``exp`` pass.

    The E-step needs both; computing them separately costs two exponentials per
    entry, a large share of a mixture E-step on a CPU. ``scale`` (shaped like the
    normaliser, e.g. per-row weights) multiplies the probabilities in the same
    pass. Rows that are all ``-inf`` give zero probabilities and a ``-inf``
    normaliser, not NaN.
    """
    peak = jnp.max(log_values, axis=axis, keepdims=True)
    peak = jax.lax.stop_gradient(jnp.where(jnp.isfinite(peak), peak, 0.0))
    unnormalised = jnp.exp(log_values - peak)
    total = jnp.sum(unnormalised, axis=axis, keepdims=True)
    factor = 1.0 / jnp.where(total > 0, total, 1.0)
    if scale is not None:
        factor = factor * jnp.expand_dims(scale, axis)
    return unnormalised * factor, jnp.squeeze(jnp.log(total) + peak, axis=axis)


# Batched factorisations of small matrices written in JAX. On the CPU, jax's Cholesky
# and triangular solves call LAPACK from scipy's multithreaded OpenBLAS; two such calls
# that XLA runs at once from its own threads (the missing-data E-step has independent
# ones) hung the process in float64 (measured, jax 0.10.2). These loops over the
# columns are batched products instead: O(D³) per matrix as LAPACK, any device.
def small_cholesky(matrix):
    """Lower Cholesky factors ``L`` (``L Lᵀ = A``) of a batch ``(..., D, D)`` of
    symmetric positive-definite matrices; NaN where ``A`` is not positive-definite.

    >>> import jax.numpy as jnp
    >>> small_cholesky(jnp.array([[4.0, 2.0], [2.0, 5.0]]))
    Array([[2., 0.],
           [1., 2.]], dtype=float32)
    """
    size = matrix.shape[-1]
    rows = jnp.arange(size)

    def column(j, factor):  # columns >= j of ``factor`` are still 0
        rest = matrix[..., :, j] - jnp.einsum("...il,...l->...i", factor, factor[..., j, :])
        pivot = jnp.sqrt(rest[..., j])
        return factor.at[..., :, j].set(jnp.where(rows >= j, rest / pivot[..., None], 0))

    return jax.lax.fori_loop(0, size, column, jnp.zeros_like(matrix))


def small_cho_solve(factor, rhs):
    """``A⁻¹ B`` from the lower factor ``L`` of ``A`` (:func:`small_cholesky`) for
    right-hand sides ``rhs`` ``(..., D, R)``: a forward then a backward substitution.

    >>> import jax.numpy as jnp
    >>> a = jnp.array([[4.0, 2.0], [2.0, 5.0]])
    >>> small_cho_solve(small_cholesky(a), jnp.array([[6.0], [7.0]]))
    Array([[1.],
           [1.]], dtype=float32)
    """
    size = factor.shape[-1]

    def forward(j, y):  # L y = b; rows >= j of y are still 0
        value = rhs[..., j, :] - jnp.einsum("...l,...lr->...r", factor[..., j, :], y)
        return y.at[..., j, :].set(value / factor[..., j, j][..., None])

    def backward(i, x):  # Lᵀ x = y; rows <= j of x are still 0
        j = size - 1 - i
        value = y[..., j, :] - jnp.einsum("...l,...lr->...r", factor[..., :, j], x)
        return x.at[..., j, :].set(value / factor[..., j, j][..., None])

    shape = jnp.broadcast_shapes(factor.shape[:-2], rhs.shape[:-2]) + rhs.shape[-2:]
    start = jnp.zeros(shape, jnp.result_type(factor, rhs))
    y = jax.lax.fori_loop(0, size, forward, start)
    return jax.lax.fori_loop(0, size, backward, start)


# -- unconstrained parameterisations (SQUAREM extrapolates in them) ------------------------------
def centred_logs(log_values, axis: int = -1):
    """Log-probabilities (or log-weights) ``log_values`` made free of their sum-to-one
    constraint: minus their mean over ``axis``, taken over the finite entries.
    ``-inf`` entries (probabilities fixed at 0) stay ``-inf``; :func:`normalised_logs`
    is the inverse.

    >>> import jax.numpy as jnp
    >>> print(centred_logs(jnp.log(jnp.array([0.25, 0.25, 0.5, 0.0]))).round(3))
    [-0.231 -0.231  0.462   -inf]
    """
    finite = jnp.isfinite(log_values)
    count = jnp.maximum(jnp.sum(finite, axis=axis, keepdims=True), 1)
    mean = jnp.sum(jnp.where(finite, log_values, 0), axis=axis, keepdims=True) / count
    return log_values - mean


def normalised_logs(values, axis: int = -1):
    """Log-probabilities from unconstrained ``values``: ``log softmax`` over ``axis``;
    ``-inf`` entries stay ``-inf`` and a slice that is ``-inf`` throughout stays so
    (no NaN)."""
    top = jnp.max(values, axis=axis, keepdims=True)
    shift = jnp.where(jnp.isfinite(top), top, 0)
    total = jnp.sum(jnp.exp(values - shift), axis=axis, keepdims=True)
    return values - shift - jnp.log(jnp.where(total > 0, total, 1))


def log_diagonal(factors):
    """Cholesky factors ``(..., D, D)`` with their (positive) diagonal replaced by its
    log: free of the positivity constraint. :func:`exp_diagonal` is the inverse."""
    eye = jnp.eye(factors.shape[-1], dtype=bool)
    return jnp.where(eye, jnp.log(jnp.where(eye, factors, 1)), factors)


def exp_diagonal(values):
    """Inverse of :func:`log_diagonal`."""
    eye = jnp.eye(values.shape[-1], dtype=bool)
    return jnp.where(eye, jnp.exp(jnp.where(eye, values, 0)), values)

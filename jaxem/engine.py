"""The engine: ``fit(model, X)`` runs all restarts of EM in one compiled program.

The model contract
------------------
A model is a frozen (hashable) dataclass whose numeric hyperparameters are excluded
from equality and handed to compiled code by ``hyper``. It provides

``hyper(dtype) -> pytree``
    Numeric hyperparameters as arrays (traced: changing them does not recompile).
``init(key, chunks, hyper) -> params``
    Initial parameters of ONE restart from the chunked data (:class:`jaxem.Chunks`).
``e_step(params, x, weights, hyper) -> (stats, log_likelihood)``
    Expected sufficient statistics and log-likelihood of one chunk, both SUMS over
    rows weighted by ``weights``; rows of weight 0 change nothing. Statistics are
    additive: ``e_step(A ∪ B) == e_step(A) + e_step(B)``.
``m_step(stats, params, hyper) -> params``
    New parameters from summed statistics; never sees data.
``log_prob(params, x) -> (n,)``
    Per-row log-likelihood.
``n_parameters(n_features) -> int``
    Free parameters, for BIC and AIC.

Optional: ``row_width(x) -> int``, the per-row, per-restart size of the E-step's
work (a mixture's ``n_components``; an HMM's ``T_max × n_states``), used to size
chunks; ``combine_stats(a, b)`` when statistics merge by something other than
addition (it must be associative and commutative); and
``converged(old_params, new_params, log_likelihood, previous, tol) -> bool``
when convergence is not ``|Δ mean log-likelihood| < tol``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxem import _iterate
from jaxem._iterate import CONVERGED, MAX_ITER, NON_FINITE, RUNNING, STATUS_MESSAGES, Chunks

__all__ = [
    "fit",
    "FitResult",
    "RestartSummary",
    "Chunks",
    "default_chunk_size",
    "RUNNING",
    "CONVERGED",
    "MAX_ITER",
    "NON_FINITE",
    "STATUS_MESSAGES",
]

#: Rows per chunk are chosen so one chunk's per-row work stays near this many elements.
_CHUNK_ELEMENTS = 1 << 21


class RestartSummary(NamedTuple):
    """What every restart did; arrays have a leading restart axis ``R``.

    Attributes
    ----------
    log_likelihood : (R,) final mean per-sample log-likelihood (NaN or -inf if failed)
    n_iter : (R,) iterations run
    status : (R,) one of ``RUNNING`` (never left), ``CONVERGED``, ``MAX_ITER``, ``NON_FINITE``
    trace : (R, max_iter) mean per-sample log-likelihood per iteration, NaN-padded
    params : every restart's final parameters (leading axis ``R``)
    """

    log_likelihood: jax.Array
    n_iter: jax.Array
    status: jax.Array
    trace: jax.Array
    params: Any


class FitResult(NamedTuple):
    """Result of :func:`fit`.

    Attributes
    ----------
    params : parameters of the best restart
    log_likelihood : its mean per-sample log-likelihood (scikit-learn's ``lower_bound_``)
    best_restart : its index
    converged : whether it converged within ``max_iter``
    n_iter : its iteration count
    restarts : :class:`RestartSummary` of all restarts
    """

    params: Any
    log_likelihood: float
    best_restart: int
    converged: bool
    n_iter: int
    restarts: RestartSummary


def default_chunk_size(n_rows: int, n_restarts: int, row_width: int) -> int:
    """Rows per chunk: all rows when small, else about 2M elements of E-step work.

    ``row_width`` is the per-row, per-restart work of one E-step (see the model's
    optional ``row_width``); above 256 rows the result is a multiple of 256 so
    shapes repeat across data sets of similar size.
    """
    rows = _CHUNK_ELEMENTS // max(1, n_restarts * row_width)
    if rows >= 256:
        rows = (rows // 256) * 256
    return max(1, min(n_rows, rows))


@functools.partial(jax.jit, static_argnames=("model", "max_iter", "chunk_size"))
def _fit_program(model, keys, x, weights, hyper, init_params, tol, *, max_iter, chunk_size):
    chunks = _iterate.make_chunks(x, weights, chunk_size)
    if init_params is None:
        init_params = jax.vmap(model.init, in_axes=(0, None, None))(keys, chunks, hyper)
    return _iterate.run_em(model, init_params, chunks, hyper, max_iter=max_iter, tol=tol)


def fit(
    model,
    x,
    *,
    key,
    n_restarts: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    weights=None,
    init_params=None,
    chunk_size: int | None = None,
    hyper=None,
) -> FitResult:
    """Fit ``model`` to ``x`` with ``n_restarts`` batched EM restarts.

    Parameters
    ----------
    model : a model obeying the contract in this module's docstring.
    x : array (n_samples, ...) or pytree of arrays sharing the first axis
        The data; its dtype is kept (float64 needs ``jax_enable_x64``).
    key : PRNG key (``jax.random.key``), split into one key per restart.
    n_restarts : number of restarts, all run in one compiled program.
    max_iter : iteration cap per restart (static: changing it recompiles).
    tol : stop a restart when ``|Δ mean per-sample log-likelihood| < tol``
        (or the model's own criterion).
    weights : (n_samples,) non-negative sample weights; default all ones.
    init_params : initial parameters instead of ``model.init``: one set (broadcast
        to every restart) or a pytree with a leading axis of ``n_restarts``.
    chunk_size : rows per chunk of the E-step; default :func:`default_chunk_size`.
    hyper : override ``model.hyper(dtype)`` (numeric hyperparameters).

    Returns
    -------
    FitResult
        The best restart (highest final log-likelihood among finite restarts, ties
        to the lowest index) and a summary of all restarts.

    Raises
    ------
    ValueError
        If every restart ended with non-finite values.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import jaxem
    >>> X = jax.random.normal(jax.random.key(0), (200, 2))
    >>> model = jaxem.mixture(jaxem.gaussian("full"), n_components=1)
    >>> result = jaxem.fit(model, X, key=jax.random.key(1), n_restarts=8)
    >>> result.restarts.n_iter.shape, bool(result.converged)
    ((8,), True)
    """
    if n_restarts < 1:
        raise ValueError(f"n_restarts must be at least 1, got {n_restarts}.")
    if max_iter < 0:
        raise ValueError(f"max_iter must be non-negative, got {max_iter}.")
    leaves = jax.tree.leaves(x)
    if not leaves:
        raise ValueError("x holds no arrays.")
    n_rows = leaves[0].shape[0]
    if n_rows == 0:
        raise ValueError("x has 0 rows; at least one is required.")
    dtype = _float_dtype(leaves)
    if weights is None:
        weights = jnp.ones((n_rows,), dtype)
    else:
        weights = jnp.asarray(weights, dtype)
        if weights.shape != (n_rows,):
            raise ValueError(f"weights must have shape ({n_rows},), got {weights.shape}.")
        if not bool(jnp.all(jnp.isfinite(weights) & (weights >= 0))) or not bool(
            jnp.any(weights > 0)
        ):
            raise ValueError("weights must be finite, non-negative and not all zero.")
    if hyper is None:
        hyper = model.hyper(dtype)
    if init_params is not None:
        init_params = _broadcast_restarts(init_params, model, x, weights, hyper, n_restarts)
    if chunk_size is None:
        row_width = model.row_width(x) if hasattr(model, "row_width") else 1
        chunk_size = default_chunk_size(n_rows, n_restarts, row_width)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size}.")
    keys = jax.random.split(key, n_restarts)
    state = _fit_program(
        model,
        keys,
        x,
        weights,
        hyper,
        init_params,
        jnp.asarray(tol, dtype),
        max_iter=int(max_iter),
        chunk_size=int(min(chunk_size, n_rows)),
    )
    return select_best(state)


def select_best(state: _iterate.LoopState) -> FitResult:
    """Pick the restart with the highest finite log-likelihood (ties to the lowest index)."""
    log_likelihood = np.asarray(state.log_likelihood)
    status = np.asarray(state.status)
    # A restart that never iterated (max_iter=0) keeps its initial parameters and a
    # log-likelihood of -inf; it is usable, not failed.
    never_iterated = np.asarray(state.n_iter) == 0
    usable = (status != NON_FINITE) & (np.isfinite(log_likelihood) | never_iterated)
    if not usable.any():
        raise ValueError(
            f"All {len(status)} restarts ended with non-finite log-likelihood or parameters. "
            "Try a larger reg_covar, fewer components, scaling the features, or float64 "
            "(jax.config.update('jax_enable_x64', True))."
        )
    best = int(np.argmax(np.where(usable, log_likelihood, -np.inf)))
    params = jax.tree.map(lambda leaf: leaf[best], state.params)
    return FitResult(
        params=params,
        log_likelihood=float(log_likelihood[best]),
        best_restart=best,
        converged=bool(status[best] == CONVERGED),
        n_iter=int(state.n_iter[best]),
        restarts=RestartSummary(
            log_likelihood=state.log_likelihood,
            n_iter=state.n_iter,
            status=state.status,
            trace=state.trace,
            params=state.params,
        ),
    )


def _float_dtype(leaves):
    for leaf in leaves:
        dtype = jnp.asarray(leaf).dtype
        if jnp.issubdtype(dtype, jnp.floating):
            return dtype
    return jnp.result_type(float)


def _broadcast_restarts(init_params, model, x, weights, hyper, n_restarts):
    """Give user-supplied parameters a leading restart axis, checking their shapes."""
    chunks = _iterate.make_chunks(x, weights, 1 if weights.shape[0] == 0 else weights.shape[0])
    expected = jax.eval_shape(model.init, jax.random.key(0), chunks, hyper)
    init_params = jax.tree.map(jnp.asarray, init_params)
    expected_leaves, expected_tree = jax.tree.flatten(expected)
    leaves, tree = jax.tree.flatten(init_params)
    if tree != expected_tree:
        raise ValueError(f"init_params must have the structure {expected_tree}, got {tree}.")
    shapes = [leaf.shape for leaf in leaves]
    single = [e.shape for e in expected_leaves]
    if shapes == single:
        return jax.tree.map(
            lambda leaf, e: jnp.broadcast_to(leaf.astype(e.dtype), (n_restarts,) + leaf.shape),
            init_params,
            expected,
        )
    if shapes == [(n_restarts,) + s for s in single]:
        return jax.tree.map(lambda leaf, e: leaf.astype(e.dtype), init_params, expected)
    raise ValueError(
        f"init_params leaves must have shapes {single} (one set) or with a leading "
        f"axis of n_restarts={n_restarts}; got {shapes}."
    )

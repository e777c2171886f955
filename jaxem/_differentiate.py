"""Gradients through an EM fit: the fitted parameters as a function of the data.

The fitted parameters ``θ*`` are a fixed point of the EM map ``T`` (one E-step
over all rows, then the M-step): ``θ* = T(θ*; x, w, h)``. Two ways to
differentiate them with respect to the data ``x``, the sample weights ``w`` and
the numeric hyperparameters ``h`` (``reg_covar``, priors):

- **implicit** (the implicit function theorem): ``dθ*/d(x, w, h) = (I - ∂T/∂θ)⁻¹
  ∂T/∂(x, w, h)``. The backward pass solves the adjoint system ``v = ḡ +
  (∂T/∂θ)ᵀ v`` by fixed-point iteration, which converges at EM's own rate (the
  spectral radius of ``∂T/∂θ`` is the fraction of missing information), then
  returns ``(∂T/∂(x, w, h))ᵀ v``. Its memory does not depend on how many EM
  iterations the fit ran; every vector-Jacobian product recomputes one chunk at a
  time (``jax.checkpoint``), so it needs the memory of one EM step.
- **unrolled**: exactly ``max_iter`` EM steps in a ``lax.scan``, differentiated by
  reverse mode: the gradient of the truncated procedure. Its memory grows with
  ``max_iter`` (one set of parameters and one pass of residuals per step).

Choosing the best restart is piecewise constant: it passes no gradient, and the
initial parameters (k-means seeding, random draws) are treated as constants.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxem import _iterate, engine

__all__ = ["DifferentiableFit", "AdjointNotConverged", "fit_differentiable", "em_step"]

ADJOINTS = ("implicit", "unrolled")


class AdjointNotConverged(FloatingPointError):
    """The implicit gradient's adjoint solve did not converge (or the fit it
    differentiates had not), so the gradient would be wrong: raised, never NaN."""


class DifferentiableFit(NamedTuple):
    """Result of :func:`fit_differentiable`; every field is an array.

    Attributes
    ----------
    params : the best restart's fitted parameters (differentiable)
    log_likelihood : their mean per-sample log-likelihood on ``x`` (differentiable)
    best_restart : index of the restart kept
    status : its :class:`~jaxem.contract.Status` code
    n_iter : EM iterations it ran (``max_iter`` for ``adjoint="unrolled"``)
    """

    params: Any
    log_likelihood: jax.Array
    best_restart: jax.Array
    status: jax.Array
    n_iter: jax.Array


def em_step(model, params, chunks, hyper):
    """``(T(params), summed log-likelihood)``: one EM step over every chunk.

    Each chunk's E-step is rematerialised in reverse mode (``jax.checkpoint``), so a
    vector-Jacobian product keeps one chunk's intermediates alive, not all rows'.
    """

    @jax.checkpoint
    def chunk_statistics(one_params, x, weights):
        return model.e_step(one_params, x, weights, hyper)

    stats, log_likelihood_sum = _iterate.chunked_sum(
        lambda x, weights: chunk_statistics(params, x, weights),
        chunks,
        lambda a, b: (model.combine_stats(a[0], b[0]), a[1] + b[1]),
    )
    return model.m_step(stats, params, hyper), log_likelihood_sum


def _chunks(x, weights, chunk_size):
    """Chunks with the weights normalised as :func:`jaxem.fit` normalises them."""
    return _iterate.make_chunks(x, engine._normalised_weights(weights), chunk_size)


def _zeros_like_cotangent(leaf):
    """A zero cotangent for ``leaf``: ``float0`` for integer and boolean inputs."""
    if jnp.issubdtype(leaf.dtype, jnp.inexact):
        return jnp.zeros_like(leaf)
    return np.zeros(np.shape(leaf), jax.dtypes.float0)


class _FloatLeaves(NamedTuple):
    """The floating leaves of a data pytree apart from the others (integer symbols,
    boolean masks), which carry no gradient."""

    leaves: list
    keep: list
    treedef: Any

    @classmethod
    def of(cls, tree):
        leaves, treedef = jax.tree.flatten(tree)
        return cls(leaves, [jnp.issubdtype(leaf.dtype, jnp.inexact) for leaf in leaves], treedef)

    def floats(self):
        return [leaf for leaf, keep in zip(self.leaves, self.keep) if keep]

    def merge(self, floats, other=lambda leaf: leaf):
        """The tree with ``floats`` in the floating places, ``other(leaf)`` elsewhere."""
        floats = iter(floats)
        merged = [
            next(floats) if keep else other(leaf) for leaf, keep in zip(self.leaves, self.keep)
        ]
        return jax.tree.unflatten(self.treedef, merged)


def _raise_unless_solved(fit_status, solved, n_steps, residual):
    """Host check of the backward pass (a callback: runs only when gradients do)."""
    fit_status, solved = np.asarray(fit_status), np.asarray(solved)
    if np.any(fit_status != int(_iterate.CONVERGED)):
        raise AdjointNotConverged(
            "adjoint='implicit' differentiates the fixed point of EM, but the fit had not "
            f"converged (status {fit_status.tolist()}; 1 is converged). Raise max_iter, "
            "lower tol, or use adjoint='unrolled' for the gradient of the iterations run."
        )
    if not np.all(solved):
        raise AdjointNotConverged(
            "The implicit gradient's adjoint solve did not converge within "
            f"{np.asarray(n_steps).max()} steps (relative error "
            f"{np.asarray(residual).max():.3g}): EM is barely contracting at this fit (a "
            "near-degenerate component, or a flat likelihood). Raise adjoint_max_iter, "
            "fit fewer components or regularise more (reg_covar), or use "
            "adjoint='unrolled'."
        )


def _tree_vdot(a, b):
    return sum(jnp.vdot(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _solve_by_iteration(transpose, cotangent, tol, max_steps):
    """``v = ḡ + Aᵀ v`` by fixed-point iteration; ``(v, solved, steps, error)``.

    Converges when the spectral radius ``ρ`` of ``A`` is below 1, as at a stable EM
    fixed point. The error left after a step is about ``|update| / (1 - ρ)``, with
    ``ρ`` estimated from the ratio of successive updates: the solve stops when that
    bound, relative to ``|v|``, is below ``tol`` (a small update alone would stop
    too early where EM contracts slowly).
    """
    norm = lambda tree: jnp.sqrt(_tree_vdot(tree, tree))  # noqa: E731
    dtype = jnp.result_type(*jax.tree.leaves(cotangent))

    def cond(carry):
        _, steps, _, error = carry
        return (steps < max_steps) & ~(error <= tol)

    def body(carry):
        v, steps, previous_change, _ = carry
        new = jax.tree.map(jnp.add, cotangent, transpose(v))
        change = norm(jax.tree.map(jnp.subtract, new, v))
        rate = jnp.clip(change / jnp.maximum(previous_change, jnp.finfo(dtype).tiny), 0.0, 0.999)
        error = change / (1.0 - rate) / jnp.maximum(norm(new), jnp.finfo(dtype).tiny)
        return new, steps + 1, change, jnp.where(jnp.isfinite(error), error, jnp.inf)

    infinity = jnp.asarray(jnp.inf, dtype)
    start = (cotangent, jnp.asarray(0, jnp.int32), infinity, infinity)
    v, steps, _, error = jax.lax.while_loop(cond, body, start)
    return v, error <= tol, steps, error


def _solve_by_gmres(transpose, cotangent, tol, max_steps):
    """``(I - Aᵀ) v = ḡ`` by restarted GMRES; ``(v, solved, steps, residual)``.

    Where EM contracts slowly (``ρ`` near 1), fixed-point iteration needs about
    ``log(tol) / log(ρ)`` products (hundreds at ρ = 0.96); a Krylov solver needs far
    fewer, and converges even where ``ρ`` is 1 or more in some direction.
    ``residual`` is the relative residual ``|ḡ - (I - Aᵀ) v| / |ḡ|``, checked after
    the solve; ``steps`` is the cap on products (GMRES does not report its count).
    """
    norm = lambda tree: jnp.sqrt(_tree_vdot(tree, tree))  # noqa: E731

    def operator(v):
        return jax.tree.map(jnp.subtract, v, transpose(v))

    restart = min(_GMRES_RESTART, max_steps)
    v, _ = jax.scipy.sparse.linalg.gmres(
        operator,
        cotangent,
        x0=cotangent,
        tol=tol,
        restart=restart,
        maxiter=max(1, max_steps // restart),
        solve_method="incremental",
    )
    scale = jnp.maximum(norm(cotangent), jnp.finfo(jnp.result_type(tol)).tiny)
    residual = norm(jax.tree.map(jnp.subtract, cotangent, operator(v))) / scale
    residual = jnp.where(jnp.isfinite(residual), residual, jnp.inf)
    # The solve may stop at its tolerance with a residual a little above it in floating
    # point; accept up to twice.
    return v, residual <= 2 * tol, jnp.asarray(max_steps, jnp.int32), residual


#: The backward passes cut the forward's chunks into this many. On
#: benchmarks/gradients.py (N=100k, D=K=16, full, float64) the implicit gradient's XLA
#: memory was 728 / 646 / 599 MB at 4 / 8 / 16 against the fit's 462 MB; 8 keeps it
#: within 1.5x the fit with chunks of at least an eighth of the fit's.
_BACKWARD_CHUNK_DIVISOR = 8
#: On the CPU, the backward's chunks hold at most this many rows. Each adjoint product
#: recomputes a chunk's E-step before its reverse pass, and a chunk whose per-row
#: features stay in cache costs less: on benchmarks/gradients.py (N=100k, D=K=16,
#: full, float64, AMD EPYC) a product took 48 / 43 / 52 / 54 / 79 ms at 1,024 / 2,048
#: / 4,096 / 6,250 / 12,500 rows. (The fit itself is fastest with all rows in one
#: chunk: XLA hoists the features out of its loop.) Elsewhere larger chunks keep the
#: device busy.
_BACKWARD_CHUNK_ROWS = 2048
#: Krylov vectors kept between GMRES restarts (each a copy of the parameters). 100: on
#: benchmarks/gradients.py (N=100k, D=K=16, full, float64) restarting every 30 steps
#: cost about a third more products than every 100 (gradient 2.75x -> 2.34x the fit);
#: 1000 was slower again (incremental GMRES work grows with the basis).
_GMRES_RESTART = 100
SOLVERS = {"gmres": _solve_by_gmres, "iteration": _solve_by_iteration}


class _Adjoint(NamedTuple):
    """How the adjoint system is solved (static: hashable)."""

    solver: str
    tol: float
    max_iter: int


def _backward_chunk(chunk_size: int, repeated: bool = False) -> int:
    """Rows per chunk of a program that is differentiated in reverse mode: an eighth
    of the fit's; for the adjoint's ``repeated`` products, on the CPU, at most
    :data:`_BACKWARD_CHUNK_ROWS`."""
    rows = max(1, -(-chunk_size // _BACKWARD_CHUNK_DIVISOR))
    if repeated and jax.default_backend() == "cpu":
        rows = min(rows, _BACKWARD_CHUNK_ROWS)
    return rows


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _fixed_point(model, chunk_size, adjoint, fitted, status, x, weights, hyper):
    """``fitted`` (a fixed point of EM on ``x``), with implicit gradients."""
    del model, chunk_size, adjoint, status, x, weights, hyper
    return fitted


def _fixed_point_forward(model, chunk_size, adjoint, fitted, status, x, weights, hyper):
    return fitted, (fitted, status, x, weights, hyper)


def _fixed_point_backward(model, chunk_size, adjoint, residuals, cotangent):
    fitted, status, x, weights, hyper = residuals
    # A vector-Jacobian product keeps several arrays of a chunk's E-step alive where the
    # forward keeps one or two: smaller chunks keep the backward's peak near the fit's.
    data = _FloatLeaves.of(x)

    def step(params, float_leaves, weights, hyper):
        rows = _backward_chunk(chunk_size, repeated=True)
        chunks = _chunks(data.merge(float_leaves), weights, rows)
        return em_step(model, params, chunks, hyper)[0]

    float_x = data.floats()
    _, transpose_params = jax.vjp(lambda p: step(p, float_x, weights, hyper), fitted)
    # A padded component's log-weight is -inf, and a cotangent reaching it (0 · inf) is
    # NaN that means nothing: zero it so that it cannot spread through the solve.
    cotangent = jax.tree.map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), cotangent)
    v, solved, steps, residual = SOLVERS[adjoint.solver](
        lambda v: transpose_params(v)[0], cotangent, adjoint.tol, adjoint.max_iter
    )
    jax.debug.callback(_raise_unless_solved, status, solved, steps, residual)
    _, transpose_inputs = jax.vjp(
        lambda leaves, w, h: step(fitted, leaves, w, h), float_x, weights, hyper
    )
    x_float_bar, weights_bar, hyper_bar = transpose_inputs(v)
    x_bar = data.merge(x_float_bar, _zeros_like_cotangent)
    fitted_bar = jax.tree.map(jnp.zeros_like, fitted)  # θ* does not move with its start
    status_bar = _zeros_like_cotangent(status)
    return fitted_bar, status_bar, x_bar, weights_bar, hyper_bar


_fixed_point.defvjp(_fixed_point_forward, _fixed_point_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _log_likelihood_sum(model, chunk_size, backward_rows, params, x, weights, hyper):
    """The weighted log-likelihood sum at ``params``, over chunks of ``chunk_size``
    rows; its reverse pass runs over chunks of ``backward_rows`` (below). For the
    implicit gradient, which has no forward mode anyway: the unrolled one computes it
    in plain JAX over its backward chunks, so that ``jax.jvp`` goes through."""
    return em_step(model, params, _chunks(x, weights, chunk_size), hyper)[1]


def _log_likelihood_sum_forward(model, chunk_size, backward_rows, params, x, weights, hyper):
    value = _log_likelihood_sum(model, chunk_size, backward_rows, params, x, weights, hyper)
    return value, (params, x, weights, hyper)


def _log_likelihood_sum_backward(model, chunk_size, backward_rows, residuals, cotangent):
    # Reverse mode keeps several arrays of a chunk's E-step alive: forward-sized chunks
    # took 210 MB more than the adjoint at N=100k, D=K=16, full covariances. The
    # implicit gradient passes its products' chunks: both then share one chunked copy
    # of the data (28 MB less there; the unrolled one's 107 MB more with those chunks).
    del chunk_size
    params, x, weights, hyper = residuals
    data = _FloatLeaves.of(x)

    def value(params, float_leaves, weights, hyper):
        chunks = _chunks(data.merge(float_leaves), weights, backward_rows)
        return em_step(model, params, chunks, hyper)[1]

    _, transpose = jax.vjp(value, params, data.floats(), weights, hyper)
    params_bar, x_float_bar, weights_bar, hyper_bar = transpose(cotangent)
    return params_bar, data.merge(x_float_bar, _zeros_like_cotangent), weights_bar, hyper_bar


_log_likelihood_sum.defvjp(_log_likelihood_sum_forward, _log_likelihood_sum_backward)


def fit_differentiable(
    model,
    x,
    *,
    key=None,
    weights=None,
    hyper=None,
    n_restarts: int = 1,
    max_iter: int = 100,
    tol=1e-3,
    init_params=None,
    adjoint: str = "implicit",
    adjoint_tol: float | None = None,
    adjoint_max_iter: int = 1000,
    adjoint_solver: str = "gmres",
    chunk_size: int | None = None,
) -> DifferentiableFit:
    """Fit ``model`` to ``x`` so that ``jax.grad`` flows from the fit to ``x``, the
    sample weights and the numeric hyperparameters.

    Pure and traceable: it composes with ``jax.jit``, ``jax.vmap`` and ``jax.grad``
    (the data's shape, ``n_restarts``, ``max_iter`` for ``"unrolled"`` and the
    static options below decide the compiled program; values never do).

    Parameters
    ----------
    model : a :class:`~jaxem.contract.Model` (static), e.g.
        ``jaxem.mixture(jaxem.gaussian("full"), 3)``.
    x : array or pytree of arrays with a leading row axis. Integer leaves (a
        categorical's symbols, an HMM's mask) are data without a gradient.
    key : PRNG key of the restarts' initialisation (as :func:`jaxem.fit`); not
        needed with ``init_params``.
    weights : (n_rows,) non-negative sample weights (default ones); only their ratios
        matter, and gradients with respect to them are taken.
    hyper : numeric hyperparameters (default ``model.hyper(dtype)``); gradients with
        respect to their floating leaves (``reg_covar``, prior strengths) are taken.
    n_restarts : restarts run by the forward fit; the best is kept (no gradient
        flows through that choice, nor through the initialisation).
    max_iter, tol : the forward fit's cap and tolerance. ``"implicit"`` assumes
        the fit converged: a fit that stopped at ``max_iter`` raises
        :class:`AdjointNotConverged` when differentiated. Implicit gradients are
        as accurate as the fixed point: use a small ``tol`` (1e-8 in float64).
        ``"unrolled"`` runs exactly ``max_iter`` steps from the kept restart's start.
    init_params : initial parameters (one set, or a leading axis of
        ``n_restarts``) instead of ``model.init``.
    adjoint : ``"implicit"`` (default; memory independent of the iterations; reverse
        mode only: ``jax.jvp`` raises) or ``"unrolled"`` (the gradient of ``max_iter``
        steps; memory grows with them; forward mode too).
    adjoint_tol, adjoint_max_iter : the adjoint solve's relative tolerance (default
        ``sqrt(eps)`` of the dtype: 1.5e-8 in float64, 3.5e-4 in float32) and its cap on
        vector-Jacobian products of one EM step. When it does not reach them,
        differentiating raises :class:`AdjointNotConverged` (under ``jax.jit``, a
        ``jax.errors.JaxRuntimeError`` carrying its message: it is raised from a
        host callback).
    adjoint_solver : ``"gmres"`` (default: restarted GMRES on ``(I - Aᵀ) v = ḡ``,
        robust where EM contracts slowly) or ``"iteration"`` (``v ← ḡ + Aᵀ v``, EM's
        own rate; no Krylov vectors kept).
    chunk_size : rows per chunk (default :func:`jaxem.engine.default_chunk_size`).

    Returns
    -------
    DifferentiableFit

    Examples
    --------
    The gradient of the fitted means with respect to the data: each mean moves with
    the rows it owns.

    >>> import jax, jax.numpy as jnp
    >>> import jaxem
    >>> model = jaxem.mixture(jaxem.gaussian("diag"), n_components=2)
    >>> x = jnp.concatenate([jnp.zeros((50, 1)), jnp.full((50, 1), 5.0)])
    >>> x = x + 0.3 * jax.random.normal(jax.random.key(0), x.shape)
    >>> def upper_mean(x):
    ...     fit = jaxem.fit_differentiable(model, x, key=jax.random.key(1), tol=1e-6)
    ...     return fit.params.components.means.max()
    >>> g = jax.jit(jax.grad(upper_mean))(x)
    >>> print(g[:50].sum().round(3), g[50:].sum().round(3))
    0.0 1.0
    """
    engine.refuse_stochastic(model, "fit_differentiable")
    if adjoint not in ADJOINTS:
        raise ValueError(f"adjoint must be one of {ADJOINTS}, got {adjoint!r}.")
    smallest = 1 if adjoint == "unrolled" else 0
    if not isinstance(max_iter, (int, np.integer)) or max_iter < smallest:
        kind = "a positive" if smallest else "a non-negative"
        raise ValueError(f"max_iter must be {kind} int for adjoint={adjoint!r}, got {max_iter!r}.")
    if adjoint_solver not in SOLVERS:
        raise ValueError(f"adjoint_solver must be one of {tuple(SOLVERS)}, got {adjoint_solver!r}.")
    if not isinstance(adjoint_max_iter, (int, np.integer)) or adjoint_max_iter < 1:
        raise ValueError(f"adjoint_max_iter must be a positive int, got {adjoint_max_iter!r}.")
    if key is None and init_params is None:
        raise ValueError("Pass key= (random initialisation) or init_params=.")
    leaves = jax.tree.leaves(x)
    n_rows = leaves[0].shape[0]
    dtype = next(
        (leaf.dtype for leaf in leaves if jnp.issubdtype(leaf.dtype, jnp.floating)),
        jnp.result_type(float),
    )
    weights = jnp.ones((n_rows,), dtype) if weights is None else jnp.asarray(weights, dtype)
    hyper = model.hyper(dtype) if hyper is None else hyper
    if chunk_size is None:
        chunk_size = engine.default_chunk_size(n_rows, int(n_restarts), model.row_width(x))
    chunk_size = int(min(chunk_size, n_rows))
    if adjoint_tol is None:
        adjoint_tol = float(np.sqrt(np.finfo(dtype).eps))

    # The forward fit and the choice of restart pass no gradient.
    constant = jax.lax.stop_gradient
    initial = _initial_params(
        model,
        constant(x),
        constant(weights),
        constant(hyper),
        key,
        None if init_params is None else constant(init_params),
        int(n_restarts),
        chunk_size,
    )
    forward = engine.fit_traced(
        model,
        constant(x),
        constant(weights),
        key,
        n_restarts=int(n_restarts),
        max_iter=int(max_iter),
        tol=tol,
        hyper=constant(hyper),
        init_params=initial,
        chunk_size=chunk_size,
    )
    chunks = _chunks(x, weights, chunk_size)
    if adjoint == "implicit":
        params = _fixed_point(
            model,
            chunk_size,
            _Adjoint(adjoint_solver, float(adjoint_tol), int(adjoint_max_iter)),
            forward.params,
            forward.status,
            x,
            weights,
            hyper,
        )
        n_iter = forward.n_iter
    else:
        start = jax.tree.map(lambda leaf: leaf[forward.best_restart], initial)

        def one_step(params, _):
            return em_step(model, params, chunks, hyper)[0], None

        params, _ = jax.lax.scan(one_step, start, None, length=int(max_iter))
        n_iter = jnp.asarray(max_iter, jnp.int32)
    if adjoint == "implicit":
        backward_rows = _backward_chunk(chunk_size, repeated=True)
        log_likelihood_sum = _log_likelihood_sum(
            model, chunk_size, backward_rows, params, x, weights, hyper
        )
    else:
        backward_chunks = _chunks(x, weights, _backward_chunk(chunk_size))
        log_likelihood_sum = em_step(model, params, backward_chunks, hyper)[1]
    return DifferentiableFit(
        params,
        log_likelihood_sum / jnp.sum(chunks.weights),
        forward.best_restart,
        forward.status,
        n_iter,
    )


def _initial_params(model, x, weights, hyper, key, init_params, n_restarts, chunk_size):
    """Every restart's start, ``(n_restarts, ...)``: ``model.init`` with the restart
    keys of :func:`jaxem.fit`, or ``init_params`` (one set is broadcast)."""
    if init_params is None:
        keys = engine.restart_keys(key, n_restarts)
        return engine._initial_params(model, keys, _chunks(x, weights, chunk_size), hyper)
    one = jax.eval_shape(
        lambda: model.init(jax.random.key(0), _chunks(x, weights, chunk_size), hyper)
    )
    if jax.tree.leaves(init_params)[0].ndim == jax.tree.leaves(one)[0].ndim:
        return jax.tree.map(
            lambda leaf: jnp.broadcast_to(leaf, (n_restarts,) + jnp.shape(leaf)), init_params
        )
    return init_params

"""Gaussian-HMM (diagonal emissions) Baum-Welch peers: hmmlearn, dynamax.

Each ``run_*`` function fits ``R`` restarts of exactly ``n_iter`` EM iterations on
``x`` of shape ``(n_seq, t, d)`` (equal-length sequences; ``n_seq=1`` for one long
sequence) from the starting points in ``init`` (see
:func:`benchmarks.data.hmm_init`), and returns a
:class:`benchmarks._harness.PeerResult` whose score is the mean log-likelihood
per observation (``benchmarks._scoring.hmm_mean_loglik``).

Run from the repository root, in the peer virtualenv::

    python -m benchmarks.peers_hmm --preset small-long

How a fixed iteration count is enforced, per library
----------------------------------------------------
* hmmlearn: ``tol=-inf``.  ``ConvergenceMonitor.converged`` is
  ``iter == n_iter or history[-1] - history[-2] < tol``; the second test is
  never true for -inf, so exactly ``n_iter`` iterations run (``monitor_.iter``
  confirms).
* dynamax: ``fit_em`` is a ``lax.scan`` of length ``num_iters`` with no
  convergence test at all.

Both libraries keep their default priors: hmmlearn's ``covars_prior=1e-2``,
``min_covar=1e-3``; dynamax's weak conjugate priors (MAP-EM).  They barely
change the result on this data but are part of what each library computes.
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Callable

import numpy as np

from benchmarks._common import best
from benchmarks._harness import PeerResult, timed_runs
from benchmarks._scoring import hmm_mean_loglik

__all__ = ["PEERS", "run_dynamax", "run_hmmlearn"]


def _finish(
    library: str,
    x: np.ndarray,
    fits: list[dict],
    seconds: float,
    times: list[float],
    compile_seconds: float | None = None,
    note: str = "",
) -> PeerResult:
    scores = [
        hmm_mean_loglik(x, f["startprob"], f["transmat"], f["means"], f["variances"]) for f in fits
    ]
    n_iters = [int(f["n_iter"]) for f in fits]
    return PeerResult(
        library=library,
        seconds=seconds,
        score=best(scores),
        n_iter=max(n_iters),
        restarts=len(fits),
        restart_iters=sum(n_iters),
        compile_seconds=compile_seconds,
        all_seconds=times,
        note=note,
    )


def run_hmmlearn(
    x: np.ndarray,
    init: dict[str, np.ndarray],
    n_iter: int,
    *,
    implementation: str = "scaling",
    repeats: int = 1,
) -> PeerResult:
    """hmmlearn ``GaussianHMM(covariance_type="diag")``, one ``fit`` per restart.

    Parameters are set from ``init`` and ``init_params=""`` keeps ``fit`` from
    re-initialising them.  The sequences are passed concatenated with
    ``lengths``.  hmmlearn computes in float64 (its C++ forward-backward takes
    doubles).  ``implementation="scaling"`` is hmmlearn's faster option (the
    default is "log").
    """
    from hmmlearn.hmm import GaussianHMM

    x3 = x if x.ndim == 3 else x[None]
    n_seq, t, d = x3.shape
    flat = np.ascontiguousarray(x3.reshape(-1, d), dtype=np.float64)
    lengths = np.full(n_seq, t)
    restarts = init["means"].shape[0]

    def fit_one(xx: np.ndarray, lens: np.ndarray, r: int, iters: int) -> dict:
        model = GaussianHMM(
            n_components=init["means"].shape[1],
            covariance_type="diag",
            n_iter=iters,
            tol=-math.inf,
            init_params="",
            params="stmc",
            implementation=implementation,
        )
        model.startprob_ = init["startprob"][r].astype(np.float64)
        model.transmat_ = init["transmat"][r].astype(np.float64)
        model.means_ = init["means"][r].astype(np.float64)
        model.covars_ = init["variances"][r].astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(xx, lens)
        return {
            "startprob": model.startprob_,
            "transmat": model.transmat_,
            "means": model.means_,
            "variances": np.diagonal(model.covars_, axis1=1, axis2=2),
            "n_iter": model.monitor_.iter,
        }

    warm_t = min(t, 500)
    fit_one(
        np.ascontiguousarray(x3[:1, :warm_t].reshape(-1, d), dtype=np.float64),
        np.array([warm_t]),
        0,
        2,
    )
    seconds, times, fits = timed_runs(
        lambda: [fit_one(flat, lengths, r, n_iter) for r in range(restarts)], repeats
    )
    return _finish(f"hmmlearn-{implementation}", x3, fits, seconds, times)


def run_dynamax(
    x: np.ndarray,
    init: dict[str, np.ndarray],
    n_iter: int,
    *,
    repeats: int = 1,
    batch_restarts: bool = False,
) -> PeerResult:
    """dynamax ``DiagonalGaussianHMM.fit_em`` (``verbose=False``), float32.

    ``fit_em`` jits its own inner loop on every call (a fresh closure, so it
    would recompile each time); we wrap the whole call in ``jax.jit`` and
    compile it ahead of time, so the compile time is reported apart and the
    timed calls never compile.  Default: one compiled fit called once per
    restart; ``batch_restarts=True``: ``jax.vmap`` over the restarts (the usage
    dynamax documents for multiple initialisations).
    """
    import jax
    import jax.numpy as jnp
    from dynamax.hidden_markov_model import DiagonalGaussianHMM

    from benchmarks._harness import aot_compile

    x3 = x if x.ndim == 3 else x[None]
    k = init["means"].shape[1]
    model = DiagonalGaussianHMM(k, x3.shape[2])
    xj = jnp.asarray(x3, jnp.float32)

    def one(em, p0, a, m, v):
        params, props = model.initialize(
            initial_probs=p0,
            transition_matrix=a,
            emission_means=m,
            emission_scale_diags=jnp.sqrt(v),
        )
        params, _ = model.fit_em(params, props, em, num_iters=n_iter, verbose=False)
        return (
            params.initial.probs,
            params.transitions.transition_matrix,
            params.emissions.means,
            params.emissions.scale_diags**2,
        )

    args = [jnp.asarray(init[key], jnp.float32) for key in ("startprob", "transmat", "means")]
    args.append(jnp.asarray(init["variances"], jnp.float32))
    restarts = args[0].shape[0]
    if batch_restarts:
        compiled, compile_s = aot_compile(jax.vmap(one, in_axes=(None, 0, 0, 0, 0)), xj, *args)

        def fit_all():
            return [jax.block_until_ready(compiled(xj, *args))]
    else:
        compiled, compile_s = aot_compile(one, xj, *(a[0] for a in args))

        def fit_all():
            return [
                jax.block_until_ready(compiled(xj, *(a[r] for a in args))) for r in range(restarts)
            ]

    seconds, times, outs = timed_runs(fit_all, repeats)
    fits = []
    for out in outs:
        arrays = [np.asarray(a) for a in out]
        if not batch_restarts:
            arrays = [a[None] for a in arrays]
        for r in range(arrays[0].shape[0]):
            p0, a, m, v = (arr[r] for arr in arrays)
            fits.append(
                {"startprob": p0, "transmat": a, "means": m, "variances": v, "n_iter": n_iter}
            )
    name = "dynamax" + ("-vmap" if batch_restarts else "")
    note = "vmap over restarts" if batch_restarts else "loop over restarts"
    return _finish(name, x3, fits, seconds, times, compile_s, note)


def _jaxem():
    """jaxem's side (imported lazily so the peers run without jaxem installed)."""
    from benchmarks import jaxem_side

    return jaxem_side


PEERS: dict[str, Callable[..., PeerResult]] = {
    "jaxem": lambda *a, **kw: _jaxem().run_hmm(*a, **kw),
    "jaxem-scan": lambda *a, **kw: _jaxem().run_hmm(*a, algorithm="scan", **kw),
    "jaxem-blocked": lambda *a, **kw: _jaxem().run_hmm(*a, algorithm="blocked", **kw),
    "hmmlearn": run_hmmlearn,
    "hmmlearn-log": lambda *a, **kw: run_hmmlearn(*a, implementation="log", **kw),
    "dynamax": run_dynamax,
    "dynamax-vmap": lambda *a, **kw: run_dynamax(*a, batch_restarts=True, **kw),
}

#: name -> (n_seq, t, d, k, n_iter, restarts, label)
PRESETS = {
    "small-long": (1, 2_000, 8, 16, 10, 2, "one sequence"),
    "small-many": (10, 200, 8, 16, 10, 2, "many sequences"),
    "medium-long": (1, 100_000, 8, 16, 5, 1, "one sequence"),
    "medium-many": (100, 1_000, 8, 16, 5, 1, "many sequences"),
    "full-long": (1, 100_000, 8, 16, 100, 8, "one sequence"),
    "full-many": (100, 1_000, 8, 16, 100, 8, "many sequences"),
}


def main(argv: list[str] | None = None) -> None:
    from benchmarks import _cli
    from benchmarks._harness import flops_hmm_diag_iter
    from benchmarks.data import hmm_init, make_hmm_sequences

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _cli.add_common_args(parser, PEERS, PRESETS)
    args = parser.parse_args(argv)
    n_seq, t, d, k, n_iter, restarts = _cli.resolve_sizes(args, PRESETS)

    x, _ = make_hmm_sequences(n_seq, t, d, k, seed=args.seed)
    init = hmm_init(x, k, restarts, seed=args.seed + 1)
    title = f"HMM diag: {n_seq} x T={t} D={d} K={k} iters={n_iter} restarts={restarts}"
    _cli.run_and_print(
        args,
        PEERS,
        title,
        flops_hmm_diag_iter(n_seq * t, k, d),
        lambda fn: fn(x, init, n_iter, repeats=args.repeats),
        score_name="loglik/obs",
        module="benchmarks.peers_hmm",
    )


if __name__ == "__main__":
    from benchmarks._harness import ensure_clean_blas_env

    ensure_clean_blas_env()
    main()

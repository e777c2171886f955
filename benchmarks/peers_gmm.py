"""Gaussian-mixture EM peers: scikit-learn, gmmx, pomegranate, torchgmm.

Each ``run_*`` function fits ``R`` restarts of exactly ``n_iter`` EM iterations
from the starting points in ``init`` (see :func:`benchmarks.data.gmm_init`) and
returns a :class:`benchmarks._harness.PeerResult`.  The data is used in its own
dtype (float32 from :mod:`benchmarks.data`), so every peer computes in float32.

Run from the repository root, in the peer virtualenv::

    python -m benchmarks.peers_gmm --preset small-full

How a fixed iteration count is enforced, per library
----------------------------------------------------
* scikit-learn: ``tol=0``.  The stopping test is ``abs(change) < tol``, never
  true for tol=0, so exactly ``max_iter`` iterations run (``n_iter_`` confirms).
* gmmx: ``EMFitter(tol=-inf)``.  Its while-loop continues while
  ``n_iter < max_iter and |change| >= tol``; ``|change| >= -inf`` always holds.
* pomegranate: ``tol=-inf``.  ``fit`` breaks when ``improvement < tol``, never
  true for -inf; a counting subclass records the M-steps actually done.
* torchgmm: ``convergence_tolerance=0`` removes its EarlyStopping callback, and
  ``trainer_params={"max_epochs": n_iter}``; ``num_iter_`` confirms.
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Callable

import numpy as np

from benchmarks._common import WARMUP_N, best, quiet_lightning
from benchmarks._harness import PeerResult, timed_runs
from benchmarks._scoring import gmm_mean_loglik

__all__ = ["PEERS", "run_gmmx", "run_pomegranate", "run_sklearn", "run_torchgmm"]


def _finish(
    library: str,
    x: np.ndarray,
    cov: str,
    fits: list[dict],
    seconds: float,
    times: list[float],
    compile_seconds: float | None = None,
    note: str = "",
) -> PeerResult:
    """Score every restart's parameters (outside the timed region) and build the result."""
    scores = [gmm_mean_loglik(x, f["weights"], f["means"], f["covariances"], cov) for f in fits]
    n_iters = [int(f["n_iter"]) for f in fits]
    own = [f.get("own_score") for f in fits if f.get("own_score") is not None]
    return PeerResult(
        library=library,
        seconds=seconds,
        score=best(scores),
        n_iter=max(n_iters),
        restarts=len(fits),
        restart_iters=sum(n_iters),
        compile_seconds=compile_seconds,
        all_seconds=times,
        own_score=max(own) if own else None,
        note=note,
    )


# --------------------------------------------------------------------------------------
# scikit-learn
# --------------------------------------------------------------------------------------


def run_sklearn(
    x: np.ndarray,
    init: dict[str, np.ndarray],
    n_iter: int,
    covariance_type: str = "full",
    *,
    reg_covar: float = 1e-6,
    repeats: int = 1,
    scipy_lapack_threads: int | None = 1,
) -> PeerResult:
    """scikit-learn ``GaussianMixture``, one ``fit`` per restart.

    ``n_init=R`` cannot take R different starting points (``means_init`` is one
    array shared by every init), so the R restarts are R fits with ``n_init=1``
    and ``weights_init``/``means_init``/``precisions_init`` set to restart r's
    parameters.  ``n_init=R`` is itself a Python loop over the same per-init
    work, so the time is the same.  Each ``fit`` also does one
    parameter estimate from ``init_params`` responsibilities before overriding
    them with the given parameters (cheapest option ``random_from_data`` used);
    that cost, under one M-step per restart, is part of the timed fit.

    ``scipy_lapack_threads=1`` (default) runs the fit inside
    :func:`benchmarks._harness.limit_scipy_lapack_threads`, which sidesteps a
    ~12 ms-per-call OpenBLAS threading pathology in ``solve_triangular`` on this
    machine; ``None`` measures scikit-learn untouched.
    """
    from sklearn.mixture import GaussianMixture

    from benchmarks._harness import limit_scipy_lapack_threads

    restarts = init["means"].shape[0]

    def precisions(r: int) -> np.ndarray:
        cov = init["covariances"][r].astype(np.float64)
        return np.linalg.inv(cov) if covariance_type == "full" else 1.0 / cov

    prec = [precisions(r) for r in range(restarts)]

    def fit_one(xx: np.ndarray, r: int, iters: int) -> dict:
        gm = GaussianMixture(
            n_components=init["means"].shape[1],
            covariance_type=covariance_type,
            tol=0.0,
            reg_covar=reg_covar,
            max_iter=iters,
            n_init=1,
            init_params="random_from_data",
            weights_init=init["weights"][r],
            means_init=init["means"][r],
            precisions_init=prec[r],
            random_state=r,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: expected with tol=0
            gm.fit(xx)
        return {
            "weights": gm.weights_,
            "means": gm.means_,
            "covariances": gm.covariances_,
            "n_iter": gm.n_iter_,
            "own_score": float(gm.lower_bound_),
        }

    with limit_scipy_lapack_threads(scipy_lapack_threads):
        fit_one(x[:WARMUP_N], 0, 2)  # warm-up: imports, BLAS/OpenMP thread pools
        seconds, times, fits = timed_runs(
            lambda: [fit_one(x, r, n_iter) for r in range(restarts)], repeats
        )
    name = f"sklearn-{covariance_type}" + ("" if scipy_lapack_threads else "-untuned")
    note = "scipy LAPACK 1 thread" if scipy_lapack_threads else "as installed"
    return _finish(name, x, covariance_type, fits, seconds, times, note=note)


# --------------------------------------------------------------------------------------
# gmmx (JAX)
# --------------------------------------------------------------------------------------


def run_gmmx(
    x: np.ndarray,
    init: dict[str, np.ndarray],
    n_iter: int,
    covariance_type: str = "full",
    *,
    reg_covar: float = 1e-6,
    repeats: int = 1,
    batch_restarts: bool = False,
) -> PeerResult:
    """gmmx ``EMFitter.fit`` (a ``lax.while_loop`` under ``jax.jit``).

    gmmx has no restarts of its own (``GaussianMixtureSKLearn`` rejects
    ``n_init > 1``).  Default: one compiled fit, called once per restart.
    ``batch_restarts=True``: ``jax.vmap`` over the restarts, one call (a use
    gmmx does not advertise, but JAX allows it).  The fit is compiled ahead of
    time; the compile time is reported apart.  gmmx requires float32.
    """
    import jax
    import jax.numpy as jnp
    from gmmx import EMFitter, GaussianMixtureModelJax

    from benchmarks._harness import aot_compile

    fitter = EMFitter(max_iter=n_iter, tol=-math.inf, reg_covar=reg_covar)
    xj = jnp.asarray(x, dtype=jnp.float32)

    def one(xx, w, m, c):
        gmm = GaussianMixtureModelJax.from_squeezed(
            means=m, covariances=c, weights=w, covariance_type=covariance_type
        )
        res = fitter.fit(xx, gmm)
        return (
            res.gmm.weights,
            res.gmm.means,
            res.gmm.covariances.values,
            res.n_iter,
            res.log_likelihood,
        )

    w = jnp.asarray(init["weights"], jnp.float32)
    m = jnp.asarray(init["means"], jnp.float32)
    c = jnp.asarray(init["covariances"], jnp.float32)
    restarts = w.shape[0]
    if batch_restarts:
        compiled, compile_s = aot_compile(jax.vmap(one, in_axes=(None, 0, 0, 0)), xj, w, m, c)

        def fit_all():
            return [jax.block_until_ready(compiled(xj, w, m, c))]
    else:
        compiled, compile_s = aot_compile(one, xj, w[0], m[0], c[0])

        def fit_all():
            return [jax.block_until_ready(compiled(xj, w[r], m[r], c[r])) for r in range(restarts)]

    seconds, times, outs = timed_runs(fit_all, repeats)

    fits = []
    for out in outs:
        ws, ms, cs, its, lls = (np.asarray(a) for a in out)
        if not batch_restarts:
            ws, ms, cs, its, lls = ws[None], ms[None], cs[None], its[None], lls[None]
        for r in range(ws.shape[0]):
            # gmmx keeps everything 4-D: (batch=1, K, D, D|1); squeeze back.
            fits.append(
                {
                    "weights": ws[r].reshape(-1),
                    "means": ms[r].reshape(ms.shape[2], ms.shape[3]),
                    "covariances": cs[r][0] if covariance_type == "full" else cs[r][0, :, :, 0],
                    "n_iter": int(its[r]),
                    "own_score": float(lls[r]),
                }
            )
    name = f"gmmx-{covariance_type}" + ("-vmap" if batch_restarts else "")
    note = "vmap over restarts" if batch_restarts else "loop over restarts"
    return _finish(name, x, covariance_type, fits, seconds, times, compile_s, note)


# --------------------------------------------------------------------------------------
# pomegranate (PyTorch)
# --------------------------------------------------------------------------------------


def run_pomegranate(
    x: np.ndarray,
    init: dict[str, np.ndarray],
    n_iter: int,
    covariance_type: str = "full",
    *,
    repeats: int = 1,
) -> PeerResult:
    """pomegranate 1.x ``GeneralMixtureModel`` of ``Normal`` distributions.

    Each component is a ``Normal(means, covs, covariance_type)`` built from
    restart r's parameters, with ``priors`` = restart r's weights, so the start is
    identical to the other peers'.  pomegranate adds no covariance regularisation
    (its ``min_cov`` is unset by default).  One ``fit`` per restart.
    """
    import torch
    from pomegranate.distributions import Normal
    from pomegranate.gmm import GeneralMixtureModel

    class CountingGMM(GeneralMixtureModel):
        """Counts M-steps, i.e. EM iterations actually completed."""

        n_mstep = 0

        def from_summaries(self):
            self.n_mstep += 1
            return super().from_summaries()

    xt = torch.from_numpy(np.ascontiguousarray(x))
    restarts = init["means"].shape[0]

    def fit_one(xx, r: int, iters: int) -> dict:
        comps = [
            Normal(
                means=torch.from_numpy(init["means"][r, j].copy()),
                covs=torch.from_numpy(init["covariances"][r, j].copy()),
                covariance_type=covariance_type,
            )
            for j in range(init["means"].shape[1])
        ]
        model = CountingGMM(
            comps,
            priors=torch.from_numpy(init["weights"][r].copy()),
            max_iter=iters,
            tol=-math.inf,
        )
        model.fit(xx)
        return {
            "weights": model.priors.detach().numpy().copy(),
            "means": np.stack([d.means.detach().numpy() for d in model.distributions]),
            "covariances": np.stack([d.covs.detach().numpy() for d in model.distributions]),
            "n_iter": model.n_mstep,
        }

    fit_one(xt[:WARMUP_N], 0, 2)
    seconds, times, fits = timed_runs(
        lambda: [fit_one(xt, r, n_iter) for r in range(restarts)], repeats
    )
    return _finish(f"pomegranate-{covariance_type}", x, covariance_type, fits, seconds, times)


# --------------------------------------------------------------------------------------
# torchgmm (PyTorch Lightning)
# --------------------------------------------------------------------------------------


def run_torchgmm(
    x: np.ndarray,
    init: dict[str, np.ndarray],
    n_iter: int,
    covariance_type: str = "full",
    *,
    reg_covar: float = 1e-6,
    repeats: int = 1,
) -> PeerResult:
    """torchgmm ``bayes.GaussianMixture`` (EM as a PyTorch Lightning training loop).

    torchgmm accepts ``init_means`` only: its initial weights and covariances come
    from a hard assignment of every point to the nearest given mean (two extra
    passes over the data inside ``fit``, included in the time), so its starting
    point differs from the other peers' (same means, different covariances).
    Note: in torchgmm 0.1.4, a fit on the whole data as one batch takes the
    "mini-batch" path (``is_batch_training = num_batches == 1``), which runs two
    epochs -- two E-step passes -- per EM iteration; that is the library's
    behaviour and is what is timed.
    """
    import torch
    from torchgmm.bayes import GaussianMixture

    quiet_lightning()
    xt = torch.from_numpy(np.ascontiguousarray(x))
    restarts = init["means"].shape[0]

    def fit_one(xx, r: int, iters: int) -> dict:
        est = GaussianMixture(
            num_components=init["means"].shape[1],
            covariance_type=covariance_type,
            init_means=torch.from_numpy(init["means"][r].copy()),
            convergence_tolerance=0,
            covariance_regularization=reg_covar,
            trainer_params={
                "max_epochs": iters,
                "accelerator": "cpu",
                "devices": 1,
                "enable_progress_bar": False,
                "enable_model_summary": False,
            },
        )
        est.fit(xx)
        model = est.model_
        return {
            "weights": model.component_probs.detach().numpy().copy(),
            "means": model.means.detach().numpy().copy(),
            "covariances": model.covariances.detach().numpy().copy(),
            "n_iter": est.num_iter_,
            "own_score": -float(est.nll_),
        }

    fit_one(xt[:WARMUP_N], 0, 2)
    seconds, times, fits = timed_runs(
        lambda: [fit_one(xt, r, n_iter) for r in range(restarts)], repeats
    )
    return _finish(
        f"torchgmm-{covariance_type}",
        x,
        covariance_type,
        fits,
        seconds,
        times,
        note="init: given means only; 2 passes/iter",
    )


def _jaxem():
    """jaxem's side (imported lazily so the peers run without jaxem installed)."""
    from benchmarks import jaxem_side

    return jaxem_side


PEERS: dict[str, Callable[..., PeerResult]] = {
    "jaxem": lambda *a, **kw: _jaxem().run_gmm(*a, **kw),
    "sklearn": run_sklearn,
    "sklearn-untuned": lambda *a, **kw: run_sklearn(*a, scipy_lapack_threads=None, **kw),
    "gmmx": run_gmmx,
    "gmmx-vmap": lambda *a, **kw: run_gmmx(*a, batch_restarts=True, **kw),
    "pomegranate": run_pomegranate,
    "torchgmm": run_torchgmm,
}

#: name -> (n, d, k, n_iter, restarts, covariance)
PRESETS = {
    "small-full": (2_000, 4, 3, 10, 2, "full"),
    "small-diag": (2_000, 4, 3, 10, 2, "diag"),
    "medium-full": (100_000, 16, 16, 10, 2, "full"),
    "medium-diag": (1_000_000, 32, 64, 5, 1, "diag"),
    "full-full": (100_000, 16, 16, 100, 32, "full"),
    "full-diag": (1_000_000, 32, 64, 100, 8, "diag"),
}


def main(argv: list[str] | None = None) -> None:
    from benchmarks import _cli
    from benchmarks._harness import flops_gmm_diag_iter, flops_gmm_full_iter
    from benchmarks.data import gmm_init, make_blobs

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _cli.add_common_args(parser, PEERS, PRESETS)
    parser.add_argument("--cov", choices=["full", "diag"], default=None)
    args = parser.parse_args(argv)
    n, d, k, n_iter, restarts, cov = _cli.resolve_sizes(args, PRESETS)

    x, _ = make_blobs(n, d, k, seed=args.seed, covariance=cov)
    init = gmm_init(x, k, restarts, seed=args.seed + 1, covariance=cov)
    flops = (flops_gmm_full_iter if cov == "full" else flops_gmm_diag_iter)(n, k, d)
    title = f"GMM {cov}: N={n} D={d} K={k} iters={n_iter} restarts={restarts}"
    _cli.run_and_print(
        args,
        PEERS,
        title,
        flops,
        lambda fn: fn(x, init, n_iter, cov, repeats=args.repeats),
        module="benchmarks.peers_gmm",
    )


if __name__ == "__main__":
    from benchmarks._harness import ensure_clean_blas_env

    ensure_clean_blas_env()
    main()

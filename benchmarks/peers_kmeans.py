"""k-means (Lloyd) peers: scikit-learn, torchgmm, pomegranate.

Each ``run_*`` function runs ``R`` restarts of at most ``n_iter`` Lloyd iterations
and returns a :class:`benchmarks._harness.PeerResult` whose score is the mean
squared distance to the nearest centre (``benchmarks._scoring.kmeans_inertia``;
lower is better).

Run from the repository root, in the peer virtualenv::

    python -m benchmarks.peers_kmeans --preset small

How a fixed iteration count is enforced, per library
----------------------------------------------------
* scikit-learn: ``tol=0`` disables the centre-shift test, but ``_kmeans_single_lloyd``
  *always* stops when no label changed ("strict convergence"), and that cannot
  be turned off.  So sklearn may run fewer than ``n_iter`` iterations; the
  actual count (``n_iter_``) is reported and the per-iteration columns use it.
  Without strict convergence it also does one extra assignment pass at the end.
* torchgmm: ``convergence_tolerance=0`` removes its EarlyStopping callback and
  ``max_epochs=n_iter`` fixes the count (``num_iter_`` confirms).
* pomegranate: ``fit`` breaks when ``improvement < tol`` and the constructor
  rejects ``tol < 0``; we set ``model.tol = -inf`` after construction (the
  attribute is only read by that comparison) and count M-steps in a subclass.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import numpy as np

from benchmarks._common import WARMUP_N, best, quiet_lightning
from benchmarks._harness import PeerResult, timed_runs
from benchmarks._scoring import kmeans_inertia

__all__ = ["PEERS", "run_pomegranate", "run_sklearn", "run_torchgmm"]


def _finish(
    library: str,
    x: np.ndarray,
    fits: list[dict],
    seconds: float,
    times: list[float],
    note: str = "",
) -> PeerResult:
    scores = [kmeans_inertia(x, f["centers"]) for f in fits]
    n_iters = [int(f["n_iter"]) for f in fits]
    return PeerResult(
        library=library,
        seconds=seconds,
        score=best(scores, higher_is_better=False),
        n_iter=max(n_iters),
        restarts=len(fits),
        restart_iters=sum(n_iters),
        all_seconds=times,
        note=note,
    )


def run_sklearn(
    x: np.ndarray, init_centers: np.ndarray, n_iter: int, *, repeats: int = 1
) -> PeerResult:
    """scikit-learn ``KMeans(algorithm="lloyd", tol=0)``, one ``fit`` per restart.

    An explicit ``init`` array forces ``n_init=1`` in scikit-learn, so the R
    restarts are R fits, each from ``init_centers[r]``; ``n_init=R`` would run
    the same per-init work in its own Python loop.
    """
    from sklearn.cluster import KMeans

    restarts = init_centers.shape[0]

    def fit_one(xx: np.ndarray, r: int, iters: int) -> dict:
        km = KMeans(
            n_clusters=init_centers.shape[1],
            init=init_centers[r],
            n_init=1,
            max_iter=iters,
            tol=0.0,
            algorithm="lloyd",
        ).fit(xx)
        return {"centers": km.cluster_centers_, "n_iter": km.n_iter_}

    fit_one(x[:WARMUP_N], 0, 2)
    seconds, times, fits = timed_runs(
        lambda: [fit_one(x, r, n_iter) for r in range(restarts)], repeats
    )
    stopped = any(f["n_iter"] < n_iter for f in fits)
    note = "stopped early (labels stable)" if stopped else ""
    return _finish("sklearn", x, fits, seconds, times, note)


def run_torchgmm(
    x: np.ndarray, init_centers: np.ndarray, n_iter: int, *, repeats: int = 1
) -> PeerResult:
    """torchgmm ``clustering.KMeans`` (Lloyd as a PyTorch Lightning training loop).

    torchgmm cannot start from given centroids; ``init_strategy="random"`` picks
    K random data points (one extra pass, inside the timed ``fit``), seeded with
    ``torch.manual_seed(r)`` for restart r.  Only ``init_centers``' shape is used.
    """
    import torch
    from torchgmm.clustering import KMeans

    quiet_lightning()
    xt = torch.from_numpy(np.ascontiguousarray(x))
    restarts = init_centers.shape[0]

    def fit_one(xx, r: int, iters: int) -> dict:
        torch.manual_seed(r)
        est = KMeans(
            num_clusters=init_centers.shape[1],
            init_strategy="random",
            convergence_tolerance=0,
            trainer_params={
                "max_epochs": iters,
                "accelerator": "cpu",
                "devices": 1,
                "enable_progress_bar": False,
                "enable_model_summary": False,
            },
        ).fit(xx)
        return {"centers": est.model_.centroids.detach().numpy().copy(), "n_iter": est.num_iter_}

    fit_one(xt[:WARMUP_N], 0, 2)
    seconds, times, fits = timed_runs(
        lambda: [fit_one(xt, r, n_iter) for r in range(restarts)], repeats
    )
    return _finish("torchgmm", x, fits, seconds, times, "init: random points (own)")


def run_pomegranate(
    x: np.ndarray, init_centers: np.ndarray, n_iter: int, *, repeats: int = 1
) -> PeerResult:
    """pomegranate 1.x ``KMeans(centroids=init_centers[r])``, one ``fit`` per restart."""
    import torch
    from pomegranate.kmeans import KMeans

    class CountingKMeans(KMeans):
        """Counts M-steps, i.e. Lloyd iterations actually completed."""

        n_mstep = 0

        def from_summaries(self):
            self.n_mstep += 1
            return super().from_summaries()

    xt = torch.from_numpy(np.ascontiguousarray(x))
    restarts = init_centers.shape[0]

    def fit_one(xx, r: int, iters: int) -> dict:
        model = CountingKMeans(centroids=torch.from_numpy(init_centers[r].copy()), max_iter=iters)
        model.tol = -math.inf  # see module docstring
        model.fit(xx)
        return {"centers": model.centroids.detach().numpy().copy(), "n_iter": model.n_mstep}

    fit_one(xt[:WARMUP_N], 0, 2)
    seconds, times, fits = timed_runs(
        lambda: [fit_one(xt, r, n_iter) for r in range(restarts)], repeats
    )
    return _finish("pomegranate", x, fits, seconds, times)


def _jaxem():
    """jaxem's side (imported lazily so the peers run without jaxem installed)."""
    from benchmarks import jaxem_side

    return jaxem_side


PEERS: dict[str, Callable[..., PeerResult]] = {
    "jaxem": lambda *a, **kw: _jaxem().run_kmeans(*a, **kw),
    "sklearn": run_sklearn,
    "torchgmm": run_torchgmm,
    "pomegranate": run_pomegranate,
}

#: name -> (n, d, k, n_iter, restarts)
PRESETS = {
    "small": (2_000, 4, 3, 10, 2),
    "medium": (1_000_000, 32, 64, 10, 1),
    "full": (1_000_000, 32, 64, 100, 8),
}


def main(argv: list[str] | None = None) -> None:
    from benchmarks import _cli
    from benchmarks._harness import flops_kmeans_iter
    from benchmarks.data import kmeans_init, make_blobs

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _cli.add_common_args(parser, PEERS, PRESETS)
    args = parser.parse_args(argv)
    n, d, k, n_iter, restarts = _cli.resolve_sizes(args, PRESETS)

    x, _ = make_blobs(n, d, k, seed=args.seed, covariance="diag")
    init = kmeans_init(x, k, restarts, seed=args.seed + 1)
    title = f"k-means: N={n} D={d} K={k} iters={n_iter} restarts={restarts}"
    _cli.run_and_print(
        args,
        PEERS,
        title,
        flops_kmeans_iter(n, k, d),
        lambda fn: fn(x, init, n_iter, repeats=args.repeats),
        score_name="inertia/n",
        module="benchmarks.peers_kmeans",
    )


if __name__ == "__main__":
    from benchmarks._harness import ensure_clean_blas_env

    ensure_clean_blas_env()
    main()

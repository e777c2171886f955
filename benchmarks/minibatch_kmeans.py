"""jaxem's MiniBatchKMeans against scikit-learn's, side by side in one run.

Same data (Gaussian blobs, default N=1,000,000, D=16, K=16), same initial centres
(an array: scikit-learn's k-means++ on 3 x batch_size rows), same batch size, same
number of steps (``max_iter`` passes, ``tol=0`` and ``max_no_improvement=None``, so
both run ``max_iter * N // batch_size`` steps), same ``random_state`` and the
default ``reassignment_ratio=0.01``; ``compute_labels=True`` on both (a final
assignment of all rows is part of both fits). For every dtype and batch size it
prints, per library: the first fit in the process (time to first answer, compile
included), the warm fit (median of ``--repeats``), their difference (compile and
first-call overhead), the steps run, and the inertia of the final centres on all
rows computed by the same float64 numpy code for both; then the speed-up and the
inertia ratio jaxem / scikit-learn (target <= 1.01).

Reproduce (repository root)::

    python -m benchmarks.minibatch_kmeans            # N=1e6, D=16, K=16
    python -m benchmarks.minibatch_kmeans --n 100000 --repeats 1   # quick
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np


def _data(n, d, k, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3.0
    labels = rng.integers(0, k, n)
    return centres[labels] + rng.normal(size=(n, d))


def _inertia(x, centers, chunk=65536):
    """Sum of squared distances of the rows to their nearest centre, float64 numpy."""
    centers = np.asarray(centers, np.float64)
    total = 0.0
    for start in range(0, len(x), chunk):
        rows = np.asarray(x[start : start + chunk], np.float64)
        squared = (
            (rows * rows).sum(1)[:, None] - 2 * rows @ centers.T + (centers * centers).sum(1)[None]
        )
        total += float(np.maximum(squared.min(axis=1), 0).sum())
    return total


def _timed(make, x, repeats):
    """(first-call seconds, median warm seconds, fitted estimator)."""
    start = time.perf_counter()
    fitted = make().fit(x)
    first = time.perf_counter() - start
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        fitted = make().fit(x)
        warm.append(time.perf_counter() - start)
    return first, statistics.median(warm), fitted


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--max-iter", type=int, default=1, help="passes over the data")
    parser.add_argument("--batch", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    import jax
    import sklearn
    from sklearn.cluster import MiniBatchKMeans as SklearnMiniBatchKMeans
    from sklearn.cluster import kmeans_plusplus

    import jaxem

    print(
        f"jaxem MiniBatchKMeans vs scikit-learn {sklearn.__version__}; jax {jax.__version__} "
        f"({jax.devices()[0].platform}), numpy {np.__version__}, {platform.processor() or '?'}"
    )
    print(
        f"N={args.n:,} D={args.d} K={args.k}, {args.max_iter} pass(es), tol=0, "
        "max_no_improvement=None, reassignment_ratio=0.01, compute_labels=True"
    )
    print(
        "dtype   | batch | library | first fit s | warm fit s | compile+first s | steps | "
        "inertia (all rows) | speed-up | inertia ratio"
    )
    base = _data(args.n, args.d, args.k)
    for dtype in args.dtype:
        x = base.astype(dtype)
        for batch in args.batch:
            init_rows = x[np.random.default_rng(1).choice(args.n, 3 * batch, replace=False)]
            init, _ = kmeans_plusplus(init_rows, args.k, random_state=0)
            settings = dict(
                init=init,
                n_init=1,
                batch_size=batch,
                max_iter=args.max_iter,
                tol=0.0,
                max_no_improvement=None,
                random_state=0,
            )
            results = {}
            for name, cls in (
                ("jaxem", jaxem.MiniBatchKMeans),
                ("sklearn", SklearnMiniBatchKMeans),
            ):
                first, warm, fitted = _timed(
                    lambda cls=cls, settings=settings: cls(args.k, **settings), x, args.repeats
                )
                results[name] = (first, warm, fitted.n_steps_, _inertia(x, fitted.cluster_centers_))
            ours, theirs = results["jaxem"], results["sklearn"]
            for name, (first, warm, steps, inertia) in results.items():
                extra = (
                    f" | {theirs[1] / ours[1]:7.2f}x | {ours[3] / theirs[3]:.5f}"
                    if name == "jaxem"
                    else " |          |"
                )
                print(
                    f"{dtype:7} | {batch:5} | {name:7} | {first:11.2f} | {warm:10.2f} | "
                    f"{first - warm:15.2f} | {steps:5} | {inertia:18.6e}{extra}"
                )


if __name__ == "__main__":
    main()

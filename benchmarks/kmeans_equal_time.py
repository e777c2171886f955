"""Quality at equal wall time: best inertia jaxem.KMeans finds in the time
scikit-learn's KMeans(n_init=10) takes, on the k-means benchmark data.

Both start from their own k-means++ seeding with default tol and max_iter; jaxem
runs its restarts batched (n_init=R). Usage (repository root, peer venv)::

    python -m benchmarks.kmeans_equal_time --n 1000000 --restarts 8
"""

from __future__ import annotations

import argparse
import time
import warnings


def main(argv=None) -> None:
    from sklearn.cluster import KMeans as SklearnKMeans

    import jaxem
    from benchmarks._scoring import kmeans_inertia
    from benchmarks.data import make_blobs

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=32)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--restarts", type=int, default=8, help="jaxem n_init")
    args = parser.parse_args(argv)
    x, _ = make_blobs(args.n, args.d, args.k, seed=0)

    # Warm-up (compile) on the same shapes, so the timed call is steady state.
    jaxem.KMeans(args.k, n_init=args.restarts, random_state=1, max_iter=2).fit(x)
    start = time.perf_counter()
    ours = jaxem.KMeans(args.k, n_init=args.restarts, random_state=0).fit(x)
    ours_seconds = time.perf_counter() - start

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = SklearnKMeans(args.k, n_init=10, random_state=0).fit(x)
    theirs_seconds = time.perf_counter() - start

    print(f"k-means++ restarts, N={args.n} D={args.d} K={args.k}")
    print(
        f"  jaxem   n_init={args.restarts:3d}: {ours_seconds:8.2f} s  "
        f"inertia/n {kmeans_inertia(x, ours.cluster_centers_):.5f}  n_iter {ours.n_iter_}"
    )
    print(
        f"  sklearn n_init= 10: {theirs_seconds:8.2f} s  "
        f"inertia/n {kmeans_inertia(x, theirs.cluster_centers_):.5f}  n_iter {theirs.n_iter_}"
    )


if __name__ == "__main__":
    from benchmarks._harness import ensure_clean_blas_env

    ensure_clean_blas_env()
    main()

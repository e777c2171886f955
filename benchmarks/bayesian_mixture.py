"""Variational Bayesian Gaussian mixture: ``jaxem.BayesianGaussianMixture`` against
scikit-learn's, side by side in one run.

Same data (``K`` well-separated full-covariance blobs, more components allowed
than there are blobs, as users run it), same parameters, a fixed number of
iterations (``tol=0``) so both sides do the same work, ``n_init`` initialisations
(batched restarts in jaxem, a serial loop in scikit-learn). jaxem is timed twice:
the first call (compile + fit) and, after that warm-up, the median of
``--repeats`` fits (compile time = first - median). Printed for both: seconds,
seconds per iteration and restart, the final lower bound (each library's
``lower_bound_``: the best restart's, a total over the rows) and the mean
per-sample ``score(X)``; for jaxem the achieved GFLOP/s of its iterations (the
full-covariance E-step and M-step count of ``flops_gmm_full_iter``) against a
float32 matmul measured in the same run.

Run from the repository root::

    python -m benchmarks.bayesian_mixture                         # N=50,000 D=8 K=16
    python -m benchmarks.bayesian_mixture --n 5000 --repeats 1    # a quick check
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np

from benchmarks._harness import LAST_OTHERS_CPU, flops_gmm_full_iter, matmul_ceiling, timed_runs


def make_data(n: int, d: int, blobs: int, seed: int = 0) -> np.ndarray:
    """``blobs`` Gaussian clusters with random covariances, offset from the origin."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(blobs, d))
    labels = rng.integers(blobs, size=n)
    mixing = rng.normal(size=(blobs, d, d)) / np.sqrt(d) + np.eye(d)
    noise = rng.normal(size=(n, d))
    return centres[labels] + np.einsum("nd,nde->ne", noise, mixing[labels]) + 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--k", type=int, default=16, help="n_components")
    parser.add_argument("--blobs", type=int, default=6)
    parser.add_argument("--n-init", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--covariance-type", default="full")
    parser.add_argument("--prior-type", default="dirichlet_process")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import jax
    import sklearn
    from sklearn.mixture import BayesianGaussianMixture as SklearnBGM

    import jaxem

    x64 = make_data(args.n, args.d, args.blobs)
    options = dict(
        n_components=args.k,
        covariance_type=args.covariance_type,
        weight_concentration_prior_type=args.prior_type,
        n_init=args.n_init,
        max_iter=args.iterations,
        tol=0.0,
        random_state=0,
    )
    print(
        f"N={args.n} D={args.d} K={args.k} ({args.blobs} blobs) {args.covariance_type} "
        f"{args.prior_type} n_init={args.n_init} iterations={args.iterations}; "
        f"jax {jax.__version__}, scikit-learn {sklearn.__version__}, numpy {np.__version__}, "
        f"{platform.processor() or platform.machine()}"
    )
    ceiling = matmul_ceiling(2048)
    print(f"float32 matmul ceiling (2048^3 through jax.jit): {ceiling:.1f} GFLOP/s")
    work = flops_gmm_full_iter(args.n, args.k, args.d) * args.iterations * args.n_init
    rows = []

    def record(side, seconds, first, model, x):
        rows.append(
            dict(
                side=side,
                seconds=seconds,
                first=first,
                n_iter=model.n_iter_,
                bound=float(np.squeeze(model.lower_bound_)),
                score=float(model.score(x)),
                others=list(LAST_OTHERS_CPU),
            )
        )
        print(f"  {rows[-1]}", flush=True)  # partial results as they come

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0 never converges: the warning is expected
        for dtype in (np.float64, np.float32):
            x = x64.astype(dtype)

            def fit(x=x):
                return jaxem.BayesianGaussianMixture(**options).fit(x)

            start = time.perf_counter()
            fit()
            first = time.perf_counter() - start
            median, _, model = timed_runs(fit, repeats=args.repeats)
            record(f"jaxem {np.dtype(dtype).name}", median, first, model, x)

        median, times, peer = timed_runs(lambda: SklearnBGM(**options).fit(x64), args.repeats)
        record("scikit-learn float64", median, times[0], peer, x64)

    reference = rows[-1]
    per = args.iterations * args.n_init
    print()
    print(
        "| side | fit s (median) | first call s | compile s | ms / iteration / restart | "
        "lower bound (best restart) | score / sample | speed-up vs sklearn | "
        "GFLOP/s (% of matmul) | others' CPU share |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        jaxem_side = row["side"].startswith("jaxem")
        compile_s = row["first"] - row["seconds"] if jaxem_side else 0.0
        gflops = work / row["seconds"] / 1e9
        print(
            f"| {row['side']} | {row['seconds']:.2f} | {row['first']:.2f} | {compile_s:.2f} | "
            f"{1e3 * row['seconds'] / per:.2f} | {row['bound']:.4f} | {row['score']:.6f} | "
            f"{reference['seconds'] / row['seconds']:.2f}x | "
            f"{gflops:.1f} ({100 * gflops / ceiling:.0f} %) | "
            f"{', '.join(f'{o:.2f}' for o in row['others'])} |"
        )


if __name__ == "__main__":
    main()

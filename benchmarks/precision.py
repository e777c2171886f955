"""What float64 costs: jaxem's estimators on float32 and on float64 input, side by side.

The estimators follow scikit-learn's precision rule (float64 input is computed in
float64, float32 input in float32, whatever JAX's global flag), so the same call
with ``X`` and ``X.astype(np.float32)`` measures the two precisions. Each case runs
a fixed number of iterations (``tol=0``) from random-row starts, after a warm-up fit
that compiles (its wall time minus a timed fit is reported as compile seconds);
times are medians of ``--repeats`` fits, per restart-iteration. GFLOP/s use the
conventional flop counts of ``benchmarks._harness`` against a float32 matmul
measured in the same run; ``loglik/n`` is each fit's final mean log-likelihood per
sample (k-means: minus the inertia per sample).

Reproduce (repository root)::

    python -m benchmarks.precision            # all cases, 3 timed fits each
    python -m benchmarks.precision --cases gmm_full --repeats 5
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from benchmarks import _harness

CASES = ("gmm_full", "gmm_diag", "kmeans", "hmm_diag")


def _blobs(n, d, k, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 4
    return centres[rng.integers(0, k, n)] + rng.normal(size=(n, d))


def _case(name):
    """``(make_estimator, X, fit_kwargs, restarts, iterations, flops_per_restart_iter,
    loglik_of_fitted, description)``."""
    import jaxem

    iterations = 20
    if name in ("gmm_full", "gmm_diag"):
        n, d, k, restarts = (100_000, 16, 16, 8) if name == "gmm_full" else (200_000, 32, 32, 4)
        covariance = name.split("_")[1]
        flops = (
            _harness.flops_gmm_full_iter if covariance == "full" else _harness.flops_gmm_diag_iter
        )(n, k, d)

        def make():
            return jaxem.GaussianMixture(
                k,
                covariance_type=covariance,
                max_iter=iterations,
                tol=0.0,
                n_init=restarts,
                init_params="random_from_data",
                random_state=0,
            )

        return (
            make,
            _blobs(n, d, k),
            {},
            restarts,
            iterations,
            flops,
            lambda est, X: est.lower_bound_,
            f"GaussianMixture {covariance}, "
            f"N={n:,} D={d} K={k}, {restarts} restarts x {iterations} it.",
        )
    if name == "kmeans":
        n, d, k, restarts = 200_000, 32, 32, 4

        def make():
            return jaxem.KMeans(
                k, init="random", n_init=restarts, max_iter=iterations, tol=0.0, random_state=0
            )

        return (
            make,
            _blobs(n, d, k),
            {},
            restarts,
            iterations,
            _harness.flops_kmeans_iter(n, k, d),
            lambda est, X: -est.inertia_ / len(X),
            f"KMeans, N={n:,} D={d} K={k}, {restarts} restarts x {iterations} it.",
        )
    if name == "hmm_diag":
        t, d, k = 50_000, 8, 8

        def make():
            return jaxem.GaussianHMM(
                k, covariance_type="diag", n_iter=iterations, tol=0.0, random_state=0
            )

        return (
            make,
            _blobs(t, d, k),
            {},
            1,
            iterations,
            _harness.flops_hmm_diag_iter(t, k, d),
            lambda est, X: est.score(X) / len(X),
            f"GaussianHMM diag, one sequence T={t:,} D={d} K={k}, {iterations} it.",
        )
    raise ValueError(f"unknown case {name!r}; choose from {CASES}")


def measure(name, repeats):
    make, X, kwargs, restarts, iterations, flops, loglik, about = _case(name)
    rows = []
    for dtype in (np.float32, np.float64):
        x = X.astype(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tol=0: every fit "does not converge"
            start = time.perf_counter()
            make().fit(x, **kwargs)
            first = time.perf_counter() - start
            median, _, fitted = _harness.timed_runs(lambda x=x: make().fit(x, **kwargs), repeats)
        per = median / (restarts * iterations)
        rows.append(
            {
                "precision": np.dtype(dtype).name,
                "ms / restart-iter": 1e3 * per,
                "compile s": max(first - median, 0.0),
                "GFLOP/s": flops / per / 1e9,
                "loglik/n": float(loglik(fitted, x)),
                "others' CPU": max(_harness.LAST_OTHERS_CPU or [0.0]),
            }
        )
    return about, rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    ceiling = _harness.matmul_ceiling()
    print(f"float32 matmul ceiling measured in this run: {ceiling:.1f} GFLOP/s")
    for name in args.cases.split(","):
        about, rows = measure(name, args.repeats)
        slow = rows[1]["ms / restart-iter"] / rows[0]["ms / restart-iter"]
        print(f"\n{about}: float64 takes {slow:.2f}x the float32 time")
        print(
            "| precision | ms / restart-iter | compile s | GFLOP/s | % of f32 matmul "
            "| loglik/n | others' CPU |"
        )
        print("|---|---|---|---|---|---|---|")
        for row in rows:
            share = 100 * row["others' CPU"]
            print(
                f"| {row['precision']} | {row['ms / restart-iter']:.2f} | "
                f"{row['compile s']:.2f} | {row['GFLOP/s']:.1f} | "
                f"{100 * row['GFLOP/s'] / ceiling:.0f} % | {row['loglik/n']:.6f} | "
                f"{share:.0f} % |"
            )


if __name__ == "__main__":
    main()

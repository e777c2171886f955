"""Mixture of linear regressions: ``jaxem.RegressionMixture`` against a vectorised
numpy EM (no Python peer implements the model; R's flexmix is its reference).

Same data, same starting lines (``coef_init`` / ``intercept_init``), the same fixed
number of iterations (``tol=0``), float64 on both sides and float32 for jaxem. jaxem
is timed on its first call (compile + fit) and, after that warm-up, as the median of
``--repeats`` fits; numpy as the median of ``--repeats`` runs. Printed for every
side: seconds, iterations, final mean per-row log-likelihood ``log p(y | x)``, the
ratio to numpy, and for jaxem the achieved GFLOP/s against a float32 matmul
measured in the same run. A last row times ``--restarts`` batched jaxem restarts
(random partitions), to set against one; like every jaxem estimator with
``n_init > 1`` it also reruns the kept restart alone, so that row holds two fits
(and two compiles).

Run from the repository root::

    python -m benchmarks.regression_mixture                    # N=200,000, D=16, K=8
    python -m benchmarks.regression_mixture --n 5000 --repeats 1 --iters 5

FLOPs of one EM iteration (counted, multiply-adds as 2): the fitted values
``X̃ β̃ᵀ`` (2 N K P, P = D + 1), the statistics ``Σ r x̃ x̃ᵀ`` (2 N K P²) and
``Σ r x̃ e`` (2 N K P), and about 12 N K elementwise (densities, softmax).
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np
from scipy.special import logsumexp

from benchmarks._harness import LAST_OTHERS_CPU, matmul_ceiling, timed_runs


def flops_iter(n: int, d: int, k: int) -> float:
    """Floating-point operations of one EM iteration (see the module docstring)."""
    p = d + 1
    return 2.0 * n * k * p * p + 4.0 * n * k * p + 12.0 * n * k


def make_data(n: int, d: int, k: int, seed: int = 0):
    """``k`` random lines, labels uniform, noise standard deviations in [0.1, 0.5]."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    coef = rng.normal(scale=2.0, size=(k, d))
    intercept = rng.normal(scale=2.0, size=k)
    scale = rng.uniform(0.1, 0.5, size=k)
    labels = rng.integers(k, size=n)
    y = np.sum(x * coef[labels], axis=1) + intercept[labels] + scale[labels] * rng.normal(size=n)
    return x, y


def start_lines(x, y, k: int, seed: int = 1):
    """Lines fitted to ``k`` random disjoint subsets of 4 (D + 1) rows: distinct starts."""
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    index = rng.permutation(len(y))[: k * 4 * (d + 1)].reshape(k, -1)
    design = np.concatenate([x, np.ones((len(y), 1))], axis=1)
    lines = np.array([np.linalg.lstsq(design[i], y[i], rcond=None)[0] for i in index])
    return lines[:, :-1], lines[:, -1]


def numpy_em(x, y, coef, intercept, n_iter: int, reg: float = 1e-6):
    """EM in vectorised numpy (float64): the reference side. Returns the mean per-row
    log-likelihood of the final parameters."""
    n, d = x.shape
    k = len(intercept)
    design = np.concatenate([x, np.ones((n, 1))], axis=1)
    beta = np.concatenate([coef, intercept[:, None]], axis=1)
    variances = np.full(k, np.var(y))
    log_weights = np.full(k, -np.log(k))
    eps = 10 * np.finfo(np.float64).eps

    def log_joint():
        residual = y[:, None] - design @ beta.T
        return log_weights - 0.5 * (np.log(2 * np.pi * variances) + residual**2 / variances)

    for _ in range(n_iter):
        joint = log_joint()
        resp = np.exp(joint - logsumexp(joint, axis=1, keepdims=True))
        counts = resp.sum(0) + eps
        gram = np.einsum("nk,ni,nj->kij", resp, design, design, optimize=True)
        rhs = np.einsum("nk,ni,n->ki", resp, design, y, optimize=True)
        beta = np.linalg.solve(gram + reg * np.eye(d + 1), rhs[:, :, None])[:, :, 0]
        residual = y[:, None] - design @ beta.T
        variances = np.sum(resp * residual**2, axis=0) / counts + reg
        log_weights = np.log(counts / counts.sum())
    return float(np.mean(logsumexp(log_joint(), axis=1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--restarts", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import jax

    import jaxem

    x64, y64 = make_data(args.n, args.d, args.k)
    coef, intercept = start_lines(x64, y64, args.k)
    print(
        f"N={args.n} D={args.d} K={args.k} iterations={args.iters}; jax {jax.__version__}, "
        f"numpy {np.__version__}, {jax.default_backend()}, "
        f"{platform.processor() or platform.machine()}"
    )
    ceiling = matmul_ceiling(2048)
    print(f"float32 matmul ceiling (2048^3 through jax.jit): {ceiling:.1f} GFLOP/s")
    work = flops_iter(args.n, args.d, args.k) * args.iters
    rows = []

    def jaxem_row(side, make, x, y, restarts=1):
        def fit():
            return make().fit(x, y)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            fit()
            first = time.perf_counter() - start
            median, _, model = timed_runs(fit, repeats=args.repeats)
        rows.append(
            dict(
                side=side,
                seconds=median,
                first=first,
                n_iter=model.n_iter_,
                score=model.score(x, y),
                gflops=work * restarts / median / 1e9,
                others=list(LAST_OTHERS_CPU),
            )
        )
        print(f"  {rows[-1]}", flush=True)

    for dtype in (np.float64, np.float32):
        x, y = x64.astype(dtype), y64.astype(dtype)

        def make():
            return jaxem.RegressionMixture(
                args.k, tol=0.0, max_iter=args.iters, coef_init=coef, intercept_init=intercept
            )

        jaxem_row(f"jaxem {np.dtype(dtype).name}", make, x, y)

    x, y = x64.astype(np.float32), y64.astype(np.float32)

    def make_restarts():
        return jaxem.RegressionMixture(
            args.k, tol=0.0, max_iter=args.iters, n_init=args.restarts, random_state=0
        )

    jaxem_row(f"jaxem float32, {args.restarts} restarts", make_restarts, x, y, args.restarts)

    median, times, score = timed_runs(
        lambda: numpy_em(x64, y64, coef, intercept, args.iters), repeats=args.repeats
    )
    rows.append(
        dict(
            side="numpy float64",
            seconds=median,
            first=times[0],
            n_iter=args.iters,
            score=score,
            gflops=work / median / 1e9,
            others=list(LAST_OTHERS_CPU),
        )
    )
    print(f"  {rows[-1]}", flush=True)

    reference = rows[-1]
    print()
    print(
        "| side | fit s (median) | first call s | compile s | iterations | "
        "log-lik / row | Δ vs numpy | speed-up vs numpy | GFLOP/s (% of matmul) | "
        "others' CPU share |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        compile_s = row["first"] - row["seconds"] if row["side"].startswith("jaxem") else 0.0
        print(
            f"| {row['side']} | {row['seconds']:.3f} | {row['first']:.3f} | {compile_s:.3f} | "
            f"{row['n_iter']} | {row['score']:.6f} | {row['score'] - reference['score']:+.2e} | "
            f"{reference['seconds'] / row['seconds']:.2f}x | "
            f"{row['gflops']:.1f} ({100 * row['gflops'] / ceiling:.0f} %) | "
            f"{', '.join(f'{o:.2f}' for o in row['others'])} |"
        )


if __name__ == "__main__":
    main()

"""Factor analysis: ``jaxem.FactorAnalysis`` (EM) against scikit-learn's (SVD iteration).

Same data, same ``tol`` and ``max_iter`` (scikit-learn's defaults: ``tol=1e-2`` on
the summed log-likelihood, ``max_iter=1000``), one restart. jaxem is timed twice:
the first call (compile + fit: the time to a first answer) and, after that warm-up,
the median of ``--repeats`` fits (compile time = first - median). scikit-learn runs
once per repeat. Printed for both: wall seconds, iterations, final mean per-sample
log-likelihood (``score(X)``, computed by each library on its own fit), and the
ratio; for jaxem the achieved GFLOP/s of its EM iterations against a float32
matmul measured in the same run.

Run from the repository root::

    python -m benchmarks.factor_analysis                      # N=100,000, D=256, q=16
    python -m benchmarks.factor_analysis --n 20000 --repeats 1

FLOPs of one EM iteration (counted, multiply-adds as 2): the projection
``(x - μ) Ψ⁻¹ Wᵀ`` (2 N D q), the products with ``L⁻¹`` (4 N q²), the statistics
``Σ d E[z]ᵀ`` (2 N D q) and ``Σ E[z] E[z]ᵀ`` (2 N q²), and about 8 N D elementwise.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np

from benchmarks._harness import LAST_OTHERS_CPU, matmul_ceiling, timed_runs


def flops_fa_iter(n: int, d: int, q: int) -> float:
    """Floating-point operations of one EM iteration (see the module docstring)."""
    return 4.0 * n * d * q + 6.0 * n * q * q + 8.0 * n * d


def make_data(n: int, d: int, q: int, seed: int = 0) -> np.ndarray:
    """``q`` factors of decreasing strength plus per-feature noise, a non-zero mean."""
    rng = np.random.default_rng(seed)
    loadings = rng.normal(size=(q, d)) * np.linspace(3.0, 0.5, q)[:, None]
    noise = rng.uniform(0.5, 2.0, size=d)
    x = rng.normal(size=(n, q)) @ loadings + rng.normal(size=(n, d)) * np.sqrt(noise)
    return x + rng.normal(size=d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--q", type=int, default=16)
    parser.add_argument("--tol", type=float, default=1e-2)
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import jax
    import sklearn
    from sklearn.decomposition import FactorAnalysis as SklearnFactorAnalysis

    import jaxem

    x64 = make_data(args.n, args.d, args.q)
    print(
        f"N={args.n} D={args.d} q={args.q} tol={args.tol} max_iter={args.max_iter}; "
        f"jax {jax.__version__}, scikit-learn {sklearn.__version__}, "
        f"numpy {np.__version__}, {platform.processor() or platform.machine()}"
    )
    ceiling = matmul_ceiling(2048)
    print(f"float32 matmul ceiling (2048^3 through jax.jit): {ceiling:.1f} GFLOP/s")
    rows = []

    for dtype in (np.float64, np.float32):
        x = x64.astype(dtype)

        def fit(x=x):
            return jaxem.FactorAnalysis(args.q, tol=args.tol, max_iter=args.max_iter).fit(x)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            first = fit()
            first_seconds = time.perf_counter() - start
            median, times, model = timed_runs(fit, repeats=args.repeats)
        others = list(LAST_OTHERS_CPU)
        score = model.score(x)
        gflops = flops_fa_iter(args.n, args.d, args.q) * model.n_iter_ / median / 1e9
        rows.append(
            dict(
                side=f"jaxem {np.dtype(dtype).name}",
                seconds=median,
                first=first_seconds,
                n_iter=model.n_iter_,
                score=score,
                gflops=gflops,
                others=others,
            )
        )
        print(f"  {rows[-1]}", flush=True)  # partial results as they come
        del first

    def sklearn_fit():
        return SklearnFactorAnalysis(args.q, tol=args.tol, max_iter=args.max_iter).fit(x64)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        median, times, peer = timed_runs(sklearn_fit, repeats=args.repeats)
    rows.append(
        dict(
            side="scikit-learn float64",
            seconds=median,
            first=times[0],
            n_iter=peer.n_iter_,
            score=peer.score(x64),
            gflops=float("nan"),
            others=list(LAST_OTHERS_CPU),
        )
    )
    print(f"  {rows[-1]}", flush=True)

    reference = rows[-1]
    print()
    print(
        "| side | fit s (median) | first call s | compile s | iterations | "
        "log-lik / sample | Δ vs sklearn | speed-up vs sklearn | GFLOP/s (% of matmul) | "
        "others' CPU share |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        compile_s = row["first"] - row["seconds"] if row["side"].startswith("jaxem") else 0.0
        share = (
            f"{row['gflops']:.1f} ({100 * row['gflops'] / ceiling:.0f} %)"
            if np.isfinite(row["gflops"])
            else "-"
        )
        print(
            f"| {row['side']} | {row['seconds']:.2f} | {row['first']:.2f} | {compile_s:.2f} | "
            f"{row['n_iter']} | {row['score']:.6f} | {row['score'] - reference['score']:+.2e} | "
            f"{reference['seconds'] / row['seconds']:.2f}x | {share} | "
            f"{', '.join(f'{o:.2f}' for o in row['others'])} |"
        )


if __name__ == "__main__":
    main()

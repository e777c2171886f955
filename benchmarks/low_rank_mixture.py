"""Mixtures of factor analysers: ``GaussianMixture(covariance_type="lowrank")`` against
jaxem's 'diag' and 'full' mixtures and scikit-learn's 'full' GaussianMixture.

Data: a synthetic mixture of factor analysers (K clusters, each ``x = μ_k + W_k z +
ε``, ``z ~ N(0, I_q)``, ``ε ~ N(0, Ψ_k)``), split into a training set and a held-out
set of ``--n-test`` rows. Every side fits the training set with the same number of
EM iterations (``tol=0``, so none stops early), one initialisation (its own k-means
init), in ``--dtype``.

Time per iteration, compile apart: every side is fitted warm (after a first,
compiling fit; scikit-learn, which compiles nothing, without one) with ``--iters`` and
with ``--iters-short`` iterations, and the time
per iteration is the difference of the two median fit times over the difference of
the iteration counts, which takes the init, the final E-step and the attribute
computation out. Also printed: the first call (compile + fit) and the held-out log-
likelihood per sample (``score(X_test)``, each library on its own fit) after
``--iters`` iterations. Target: 'lowrank' above 'diag' on held-out log-likelihood
and faster than 'full' per iteration.

Run from the repository root::

    python -m benchmarks.low_rank_mixture                 # N=200,000 D=256 K=32 q=16
    python -m benchmarks.low_rank_mixture --n 20000 --d 64 --k 8 --q 8 --iters 6 --iters-short 2

FLOPs of one 'lowrank' E-step plus statistics (multiply-adds as 2): the projection of
the rows onto every component's loadings ``2 N K D q``, the cross moments ``Σ r x
E[z]ᵀ`` ``2 N K D q``, the q x q products ``≈ 4 N K q²``, and ``≈ 8 N K D`` elementwise
(offsets, squares, sums); against ``≈ 2 N K D²`` (whitening) plus ``N K D²``
(scatter) for 'full'.
"""

from __future__ import annotations

import argparse
import platform

import numpy as np

from benchmarks._harness import seconds_per_iteration


def make_data(n: int, d: int, k: int, q: int, seed: int = 0):
    """``n`` rows of a mixture of ``k`` factor analysers of rank ``q`` in ``d`` dimensions,
    and their component labels."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=2.0, size=(k, d))
    strengths = np.linspace(2.0, 0.5, q)
    loadings = rng.normal(size=(k, d, q)) * strengths
    noise = rng.uniform(0.3, 1.0, size=(k, d))
    weights = rng.dirichlet(np.full(k, 5.0))
    labels = rng.choice(k, size=n, p=weights)
    z = rng.normal(size=(n, q))
    x = means[labels] + np.einsum("nq,ndq->nd", z, loadings[labels])
    x += rng.normal(size=(n, d)) * np.sqrt(noise[labels])
    return x, labels


def flops_lowrank_iter(n: int, k: int, d: int, q: int) -> float:
    """Floating-point operations of one 'lowrank' iteration (see the module docstring)."""
    return 4.0 * n * k * d * q + 4.0 * n * k * q * q + 8.0 * n * k * d


def _time_side(make, x_train, x_test, iters, iters_short, repeats, compiles=True):
    """``(first call s, s per iteration, held-out score, n_iter, others' CPU shares)``."""
    first, per_iter, model, others = seconds_per_iteration(
        lambda it: make(it).fit(x_train), iters, iters_short, repeats, compiles
    )
    return first, per_iter, float(model.score(x_test)), int(model.n_iter_), others


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="training rows")
    parser.add_argument("--n-test", type=int, default=20_000, help="held-out rows")
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--q", type=int, default=16)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--iters-short", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--reg-covar", type=float, default=1e-4)
    parser.add_argument(
        "--sides",
        default="lowrank,diag,full,sklearn-full",
        help="comma-separated subset of lowrank,diag,full,sklearn-full",
    )
    args = parser.parse_args()
    if not 0 < args.iters_short < args.iters:
        parser.error("need 0 < --iters-short < --iters")

    import jax
    import sklearn
    from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

    import jaxem

    x, _ = make_data(args.n + args.n_test, args.d, args.k, args.q)
    x = x.astype(args.dtype)
    x_train, x_test = x[: args.n], x[args.n :]
    print(
        f"N={args.n} (+{args.n_test} held out) D={args.d} K={args.k} q={args.q} "
        f"iters={args.iters} (short {args.iters_short}) {args.dtype}; jax {jax.__version__} "
        f"on {jax.devices()[0].platform}, scikit-learn {sklearn.__version__}, "
        f"{platform.processor() or platform.machine()}",
        flush=True,
    )
    common = dict(n_components=args.k, tol=0.0, reg_covar=args.reg_covar, random_state=0)
    makers = {
        "lowrank": lambda it: jaxem.GaussianMixture(
            covariance_type="lowrank", covariance_rank=args.q, max_iter=it, **common
        ),
        "diag": lambda it: jaxem.GaussianMixture(covariance_type="diag", max_iter=it, **common),
        "full": lambda it: jaxem.GaussianMixture(covariance_type="full", max_iter=it, **common),
        "sklearn-full": lambda it: SklearnGaussianMixture(
            covariance_type="full", max_iter=it, **common
        ),
    }
    rows = []
    for side in args.sides.split(","):
        first, per_iter, score, n_iter, others = _time_side(
            makers[side],
            x_train,
            x_test,
            args.iters,
            args.iters_short,
            args.repeats,
            compiles=not side.startswith("sklearn"),
        )
        rows.append(dict(side=side, first=first, per_iter=per_iter, score=score, n_iter=n_iter))
        rows[-1]["others"] = others
        print(f"  {rows[-1]}", flush=True)  # partial results as they come

    by_side = {row["side"]: row for row in rows}
    print()
    print(
        "| side | s / iteration (warm) | first call s | iterations | held-out log-lik / "
        "sample | others' CPU share |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['side']} | {row['per_iter']:.4f} | {row['first']:.2f} | {row['n_iter']} | "
            f"{row['score']:.4f} | {', '.join(f'{o:.2f}' for o in row['others'])} |"
        )
    if "lowrank" in by_side:
        low = by_side["lowrank"]
        gflops = flops_lowrank_iter(args.n, args.k, args.d, args.q) / low["per_iter"] / 1e9
        print(f"\nlowrank: {gflops:.1f} GFLOP/s (E-step and statistics, counted)")
        if "diag" in by_side:
            gain = low["score"] - by_side["diag"]["score"]
            print(f"held-out log-lik, lowrank - diag: {gain:+.4f} per sample (target > 0)")
        for side in ("full", "sklearn-full"):
            if side in by_side:
                ratio = by_side[side]["per_iter"] / low["per_iter"]
                print(f"time per iteration, {side} / lowrank: {ratio:.2f}x (target > 1)")


if __name__ == "__main__":
    main()

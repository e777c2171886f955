"""Hidden Markov factor analysers: ``GaussianHMM(covariance_type="lowrank")`` against
jaxem's 'diag' and 'full' GaussianHMM and hmmlearn's 'full' GaussianHMM.

Data: ``--sequences`` sequences of ``--length`` steps from a sticky ``K``-state HMM
whose states emit from factor analysers (``x = μ_k + W_k z + ε``, ``z ~ N(0, I_q)``,
``ε ~ N(0, Ψ_k)``), plus one held-out sequence of the same length. Every side fits
with the same number of Baum-Welch iterations (``tol=-inf``: none stops early), its
own initialisation, in float64 (hmmlearn computes in float64; ``--dtype float32``
runs jaxem's sides in float32).

Time per iteration, compile apart: every side is fitted warm (after a first,
compiling fit; hmmlearn, which compiles nothing, without one) with ``--iters`` and
``--iters-short`` iterations; the time per iteration is the difference of the two
median fit times over the difference of the iteration counts (init and attributes
cancel). Also printed: the first call (compile + fit), the final training
log-likelihood per step (``monitor_.history[-1]``) and the held-out log-likelihood
per step (``score``), each side on its own fit.

Run from the repository root::

    python -m benchmarks.low_rank_hmm                                  # D=64 K=8 q=4
    python -m benchmarks.low_rank_hmm --sequences 4 --length 500 --d 16 --iters 4 --iters-short 2
"""

from __future__ import annotations

import argparse
import logging
import platform

import numpy as np

from benchmarks._harness import seconds_per_iteration


def make_data(n_sequences: int, length: int, d: int, k: int, q: int, seed: int = 0):
    """``n_sequences + 1`` sequences of ``length`` steps concatenated (the last one held
    out) from a sticky ``k``-state HMM with factor-analyser emissions of rank ``q``."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=2.0, size=(k, d))
    loadings = rng.normal(size=(k, d, q)) * np.linspace(2.0, 0.5, q)
    noise = rng.uniform(0.3, 1.0, size=(k, d))
    transmat = np.full((k, k), 0.1 / (k - 1)) + np.eye(k) * (0.9 - 0.1 / (k - 1))
    n = (n_sequences + 1) * length
    states = np.empty(n, np.int64)
    states[0] = 0
    jumps = rng.random(n)
    cumulative = np.cumsum(transmat, axis=1)
    for t in range(1, n):
        states[t] = min(np.searchsorted(cumulative[states[t - 1]], jumps[t]), k - 1)
    z = rng.normal(size=(n, q))
    x = means[states] + np.einsum("nq,ndq->nd", z, loadings[states])
    x += rng.normal(size=(n, d)) * np.sqrt(noise[states])
    return x[: n_sequences * length], x[n_sequences * length :]


def _time_side(make, x_train, lengths, x_test, iters, iters_short, repeats, compiles=True):
    """``(first call s, s per iteration, final train log-lik, held-out score, others' CPU)``."""
    first, per_iter, model, others = seconds_per_iteration(
        lambda it: make(it).fit(x_train, lengths), iters, iters_short, repeats, compiles
    )
    return first, per_iter, float(model.monitor_.history[-1]), float(model.score(x_test)), others


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=20)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--q", type=int, default=4)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--iters-short", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument(
        "--sides",
        default="lowrank,diag,full,hmmlearn-full",
        help="comma-separated subset of lowrank,diag,full,hmmlearn-full",
    )
    args = parser.parse_args()
    if not 0 < args.iters_short < args.iters:
        parser.error("need 0 < --iters-short < --iters")

    import hmmlearn
    import jax
    from hmmlearn.hmm import GaussianHMM as HmmlearnGaussianHMM

    import jaxem

    logging.getLogger("hmmlearn").setLevel(logging.ERROR)
    x_train, x_test = make_data(args.sequences, args.length, args.d, args.k, args.q)
    lengths = [args.length] * args.sequences
    n_train = x_train.shape[0]
    print(
        f"{args.sequences} x {args.length} steps (+{args.length} held out) D={args.d} "
        f"K={args.k} q={args.q} iters={args.iters} (short {args.iters_short}) {args.dtype}; "
        f"jax {jax.__version__} on {jax.devices()[0].platform}, hmmlearn "
        f"{hmmlearn.__version__}, {platform.processor() or platform.machine()}",
        flush=True,
    )
    common = dict(n_components=args.k, tol=-np.inf, random_state=0)
    makers = {
        "lowrank": lambda it: jaxem.GaussianHMM(
            covariance_type="lowrank", covariance_rank=args.q, n_iter=it, **common
        ),
        "diag": lambda it: jaxem.GaussianHMM(covariance_type="diag", n_iter=it, **common),
        "full": lambda it: jaxem.GaussianHMM(covariance_type="full", n_iter=it, **common),
        "hmmlearn-full": lambda it: HmmlearnGaussianHMM(
            covariance_type="full", n_iter=it, **common
        ),
    }
    rows = []
    for side in args.sides.split(","):
        jaxem_side = not side.startswith("hmmlearn")
        train = x_train.astype(args.dtype) if jaxem_side else x_train
        test = x_test.astype(args.dtype) if jaxem_side else x_test
        first, per_iter, final, score, others = _time_side(
            makers[side],
            train,
            lengths,
            test,
            args.iters,
            args.iters_short,
            args.repeats,
            compiles=jaxem_side,
        )
        rows.append(dict(side=side, first=first, per_iter=per_iter, final=final, score=score))
        rows[-1]["others"] = others
        print(f"  {rows[-1]}", flush=True)  # partial results as they come

    by_side = {row["side"]: row for row in rows}
    print()
    print(
        "| side | s / iteration (warm) | first call s | train log-lik / step | held-out "
        "log-lik / step | others' CPU share |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['side']} | {row['per_iter']:.4f} | {row['first']:.2f} | "
            f"{row['final'] / n_train:.4f} | {row['score'] / args.length:.4f} | "
            f"{', '.join(f'{o:.2f}' for o in row['others'])} |"
        )
    if "lowrank" in by_side:
        low = by_side["lowrank"]
        for side in ("full", "hmmlearn-full"):
            if side in by_side:
                ratio = by_side[side]["per_iter"] / low["per_iter"]
                print(f"time per iteration, {side} / lowrank: {ratio:.2f}x")
        if "diag" in by_side:
            gain = (low["score"] - by_side["diag"]["score"]) / args.length
            print(f"held-out log-lik per step, lowrank - diag: {gain:+.4f}")


if __name__ == "__main__":
    main()

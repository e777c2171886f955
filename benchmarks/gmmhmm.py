"""GMMHMM (Gaussian-mixture emissions): ``jaxem.GMMHMM`` against hmmlearn's, side by side.

Same data (sequences from a ``K``-state GMMHMM with ``M`` Gaussians per state),
same starting parameters set by hand on both sides (``init_params=""``), the same
fixed number of Baum-Welch iterations (``tol=-inf``), float64 on both sides
(hmmlearn computes in float64). Each side is run once as a warm-up (jaxem's first
call compiles: reported apart as first - median), then ``--repeats`` timed fits;
printed: median seconds, seconds per iteration, the ratio hmmlearn / jaxem, the
final log-likelihood of each side (``monitor_.history[-1]``) and their difference
(both follow the same iterates, so it is rounding). ``--covariance-type`` picks the
type; hmmlearn's ``implementation`` is ``"log"`` (its default) unless
``--scaling``.

Run from the repository root::

    python -m benchmarks.gmmhmm                                       # the default size
    python -m benchmarks.gmmhmm --sequences 4 --length 200 --repeats 1  # a quick check
"""

from __future__ import annotations

import argparse
import logging
import math
import platform
import time
import warnings

import numpy as np

from benchmarks._harness import LAST_OTHERS_CPU, timed_runs


def make_problem(k: int, m: int, d: int, covariance_type: str, seed: int = 0):
    """True parameters and a perturbed start for a ``k``-state, ``m``-mixture model."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(k, 1, d))
    means = centres + rng.normal(scale=1.5, size=(k, m, d))
    weights = rng.dirichlet(np.full(m, 5.0), size=k)
    transmat = np.full((k, k), 0.1 / (k - 1)) + np.eye(k) * (0.9 - 0.1 / (k - 1))
    startprob = np.full(k, 1.0 / k)
    variances = rng.uniform(0.5, 1.5, size=(k, m, d))
    covars = {
        "diag": variances,
        "spherical": variances.mean(-1),
        "full": np.einsum("kmd,de->kmde", variances, np.eye(d)),
        "tied": np.broadcast_to(np.eye(d), (k, d, d)).copy(),
    }[covariance_type]
    truth = dict(startprob=startprob, transmat=transmat, weights=weights, means=means)
    truth["covars"] = covars
    start = dict(truth)
    start["means"] = means + rng.normal(scale=1.0, size=means.shape)
    start["weights"] = np.full((k, m), 1.0 / m)
    start["transmat"] = np.full((k, k), 1.0 / k)
    return truth, start


def sample(truth, covariance_type, n_sequences, length, seed=0):
    """Sequences drawn by hmmlearn's sampler from the true parameters."""
    from hmmlearn.hmm import GMMHMM

    k, m = truth["weights"].shape
    model = GMMHMM(k, n_mix=m, covariance_type=covariance_type)
    for name, value in truth.items():
        setattr(model, f"{name}_", value)
    model.n_features = truth["means"].shape[-1]
    rng = np.random.RandomState(seed)
    x = [model.sample(length, random_state=rng)[0] for _ in range(n_sequences)]
    return np.concatenate(x), [length] * n_sequences


def fitter(cls, start, covariance_type, n_iter, **kwargs):
    k, m = start["weights"].shape

    def fit(x, lengths):
        model = cls(
            k,
            n_mix=m,
            covariance_type=covariance_type,
            n_iter=n_iter,
            tol=-math.inf,
            init_params="",
            **kwargs,
        )
        for name, value in start.items():
            setattr(model, f"{name}_", value)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return model.fit(x, lengths)

    return fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=4)
    parser.add_argument("--mix", type=int, default=3)
    parser.add_argument("--features", type=int, default=4)
    parser.add_argument("--sequences", type=int, default=20)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--covariance-type", default="diag")
    parser.add_argument("--scaling", action="store_true", help="hmmlearn's 'scaling'")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import hmmlearn
    import jax
    from hmmlearn.hmm import GMMHMM as HmmlearnGMMHMM

    import jaxem

    logging.getLogger("hmmlearn").setLevel(logging.ERROR)
    kind = args.covariance_type
    truth, start = make_problem(args.states, args.mix, args.features, kind)
    x, lengths = sample(truth, kind, args.sequences, args.length)
    print(
        f"jaxem {jaxem.__version__}, jax "
        f"{jax.__version__} ({jax.default_backend()}), hmmlearn {hmmlearn.__version__}, "
        f"{platform.processor() or platform.machine()}"
    )
    print(
        f"GMMHMM {kind}: K={args.states} states x M={args.mix} Gaussians, D={args.features}, "
        f"{args.sequences} sequences x {args.length} steps = {len(x)} samples, "
        f"{args.iterations} iterations, float64"
    )
    implementation = "scaling" if args.scaling else "log"
    sides = {
        "jaxem": fitter(jaxem.GMMHMM, start, kind, args.iterations),
        f"hmmlearn-{implementation}": fitter(
            HmmlearnGMMHMM, start, kind, args.iterations, implementation=implementation
        ),
    }
    rows = {}
    for side, fit in sides.items():
        began = time.perf_counter()
        fit(x, lengths)  # warm-up (jaxem: compiles)
        first = time.perf_counter() - began
        seconds, times, model = timed_runs(lambda fit=fit: fit(x, lengths), args.repeats)
        history = list(model.monitor_.history)
        if len(history) != args.iterations:
            raise RuntimeError(f"{side} ran {len(history)} iterations, not {args.iterations}")
        rows[side] = (first, seconds, history[-1])
        others = max(LAST_OTHERS_CPU) if LAST_OTHERS_CPU else float("nan")
        print(
            f"  {side}: first call {first:.2f} s, median {seconds:.3f} s "
            f"({1e3 * seconds / args.iterations:.2f} ms/iteration), "
            f"final log-likelihood {history[-1]:.6f}; other processes' CPU share up to "
            f"{others:.0%}",
            flush=True,
        )
    ours, theirs = rows["jaxem"], rows[f"hmmlearn-{implementation}"]
    print()
    print("| side | first call s | compile s | median s | ms / iteration | final log-lik |")
    print("|---|---|---|---|---|---|")
    for side, (first, seconds, final) in rows.items():
        compile_s = f"{first - seconds:.2f}" if side == "jaxem" else "-"
        print(
            f"| {side} | {first:.2f} | {compile_s} | {seconds:.3f} | "
            f"{1e3 * seconds / args.iterations:.2f} | {final:.6f} |"
        )
    print(
        f"\nhmmlearn / jaxem time (warm): {theirs[1] / ours[1]:.2f}x; final log-likelihood "
        f"difference {ours[2] - theirs[2]:+.3e}"
    )


if __name__ == "__main__":
    main()

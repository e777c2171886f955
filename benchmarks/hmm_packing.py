"""HMM sequence packing (issue 10, item 6): one sequence of 10,000 steps plus 500 of one
step, against the same 10,500 steps as one sequence, and against hmmlearn.

Data: ``--long + --short`` steps of one sticky ``K``-state diagonal-Gaussian HMM
(``benchmarks.data.make_hmm_sequences``), cut as ``1 x --long + --short x 1``. Sides:

- ``packed``: ``jaxem.GaussianHMM`` on the cut input (sequences packed several to a
  row, the default: here one row of 10,500);
- ``one``: the same estimator on the same steps as one sequence (the target: packing
  within 1.5x of it in time and memory);
- ``hmmlearn``: hmmlearn's ``GaussianHMM`` on the cut input;
- ``padded`` (opt in, ``--sides``): jaxem with packing off, one sequence per row
  padded to the longest (``501 x 10,000`` steps: what padding costs).

Every side starts from the same parameters (``benchmarks.data.hmm_init``,
``init_params=""``), in float64, with ``tol=-inf`` so that each runs every iteration.
Time per iteration, compile apart: the difference of two warm fits of ``--iters`` and
``--iters-short`` iterations over the difference of the counts
(``benchmarks._harness.seconds_per_iteration``; hmmlearn compiles nothing and gets no
warm-up fit). Memory: XLA's buffer assignment (arguments + outputs + temporaries -
aliases) of one compiled Baum-Welch E-step of each jaxem side's data layout, as
``benchmarks/gradients.py`` measures programs, and every side's peak resident set
above its baseline during one fit (``VmHWM``; noisy, as it counts whatever the process
touches). Final log-likelihoods (``monitor_.history[-1]``, the total over sequences)
for all sides: ``packed`` and ``hmmlearn`` fit the same sequences from the same start,
so they must agree; ``one`` differs by the 500 boundaries it joins.

Run from the repository root::

    python -m benchmarks.hmm_packing                           # D=4 K=8, 20 iterations
    python -m benchmarks.hmm_packing --sides packed,one,hmmlearn,padded
    python -m benchmarks.hmm_packing --long 1000 --short 50 --iters 4 --iters-short 2
"""

from __future__ import annotations

import argparse
import logging
import platform

import numpy as np

from benchmarks import _harness
from benchmarks.data import hmm_init, make_hmm_sequences

SIDES = ("packed", "one", "hmmlearn", "padded")


def _e_step_bytes(model, params, data) -> int:
    """XLA's buffer assignment of one compiled Baum-Welch E-step on ``data``."""
    import jax.numpy as jnp

    weights = jnp.ones(data[1].shape[0], params.transmat.dtype)
    hyper = model.hyper(params.transmat.dtype)
    compiled, _ = _harness.aot_compile(
        lambda params, data, weights: model.e_step(params, data, weights, hyper),
        params,
        data,
        weights,
    )
    return _harness.program_bytes(compiled)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", type=int, default=10_000, help="steps of the long sequence")
    parser.add_argument("--short", type=int, default=500, help="number of 1-step sequences")
    parser.add_argument("--d", type=int, default=4)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--iters-short", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--sides", default="packed,one,hmmlearn", help=f"comma-separated subset of {SIDES}"
    )
    args = parser.parse_args(argv)
    sides = args.sides.split(",")
    if not set(sides) <= set(SIDES):
        parser.error(f"--sides must be a subset of {SIDES}")
    if not 0 < args.iters_short < args.iters:
        parser.error("need 0 < --iters-short < --iters")
    _harness.ensure_clean_blas_env()

    import hmmlearn
    import jax
    import jax.numpy as jnp
    from hmmlearn.hmm import GaussianHMM as HmmlearnGaussianHMM

    import jaxem
    from jaxem.families.gaussian import GaussianParams
    from jaxem.models.hmm import HMMParams

    logging.getLogger("hmmlearn").setLevel(logging.ERROR)
    n_steps = args.long + args.short
    x = make_hmm_sequences(1, n_steps, args.d, args.k, seed=0, dtype=np.float64)[0][0]
    cut = [args.long] + [1] * args.short
    start = {name: value[0] for name, value in hmm_init(x, args.k, 1, seed=0).items()}
    inputs = {"packed": cut, "one": None, "hmmlearn": cut, "padded": cut}
    print(
        f"1 x {args.long} + {args.short} x 1 steps (one sequence: {n_steps}) D={args.d} "
        f"K={args.k} float64, iters={args.iters} (short {args.iters_short}); jax "
        f"{jax.__version__} on {jax.devices()[0].platform}, hmmlearn {hmmlearn.__version__}, "
        f"{platform.processor() or platform.machine()}",
        flush=True,
    )

    def make(side, n_iter):
        cls = HmmlearnGaussianHMM if side == "hmmlearn" else jaxem.GaussianHMM
        model = cls(args.k, covariance_type="diag", n_iter=n_iter, tol=-np.inf, init_params="")
        model.startprob_ = start["startprob"]
        model.transmat_ = start["transmat"]
        model.means_ = start["means"]
        model.covars_ = start["variances"]
        if side == "padded":
            model._pack_sequences = False  # private switch: one sequence per padded row
        return model

    # Memory of one E-step program on each jaxem side's data layout.
    layouts = {}
    with jax.enable_x64(True):
        estimator = make("packed", args.iters)
        hmm = estimator._model(estimator.params)  # the estimator's own model
        params = HMMParams(
            jnp.asarray(start["startprob"]),
            jnp.asarray(start["transmat"]),
            GaussianParams(jnp.asarray(start["means"]), 1 / jnp.sqrt(start["variances"])),
        )
        for side in sides:
            if side == "hmmlearn":
                continue
            if side == "padded":
                observations, mask = jaxem.pad_sequences(x, inputs[side])
            else:
                observations, mask, _ = jaxem.pack_sequences(x, inputs[side])
            data = (jnp.asarray(observations), jnp.asarray(mask))
            layouts[side] = (mask.shape, _e_step_bytes(hmm, params, data))

    rows = {}
    for side in sides:
        compiles = side != "hmmlearn"
        first, per_iter, model, others = _harness.seconds_per_iteration(
            lambda n_iter, side=side: make(side, n_iter).fit(x, inputs[side]),
            args.iters,
            args.iters_short,
            args.repeats,
            compiles=compiles,
        )
        rss = _harness.peak_rss_delta(lambda side=side: make(side, args.iters).fit(x, inputs[side]))
        shape, program = layouts.get(side, (None, None))
        rows[side] = dict(
            first=first,
            per_iter=per_iter,
            final=float(model.monitor_.history[-1]),
            rss=rss.peak_delta_bytes,
            program=program,
            shape=shape,
            others=max(others),
        )
        print(f"  {side}: {rows[side]}", flush=True)  # partial results as they come

    print()
    print(
        "| side | rows x steps | s / iteration (warm) | first call s | E-step program MB "
        "(XLA) | fit peak RSS MB | final log-lik (total) | others' CPU share (max) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for side, row in rows.items():
        shape = "-" if row["shape"] is None else f"{row['shape'][0]} x {row['shape'][1]}"
        program = "-" if row["program"] is None else f"{row['program'] / 1e6:.2f}"
        print(
            f"| {side} | {shape} | {row['per_iter']:.5f} | {row['first']:.2f} | {program} | "
            f"{row['rss'] / 1e6:.1f} | {row['final']:.6f} | {row['others']:.2f} |"
        )
    if "packed" in rows and "one" in rows:
        packed, one = rows["packed"], rows["one"]
        print(
            f"packed / one sequence: time per iteration {packed['per_iter'] / one['per_iter']:.2f}x"
            f", E-step program memory {packed['program'] / one['program']:.2f}x (target: both "
            "within 1.5x)"
        )
    for side in ("hmmlearn", "padded"):
        if "packed" in rows and side in rows:
            ratio = rows[side]["per_iter"] / rows["packed"]["per_iter"]
            print(f"{side} / packed: time per iteration {ratio:.2f}x")
    if "packed" in rows and "hmmlearn" in rows:
        gap = rows["packed"]["final"] - rows["hmmlearn"]["final"]
        print(f"final log-likelihood, packed - hmmlearn: {gap:+.3e}")


if __name__ == "__main__":
    main()

"""von Mises-Fisher mixtures of embedding-like directions: jaxem against numpy.

The benchmarks' peer libraries (benchmarks/README.md) have no von Mises-Fisher mixture,
so the peer is a vectorised numpy / scipy EM written here: scipy's ``ive`` for the
normaliser, Banerjee et al.'s approximation plus Newton steps for the concentrations,
one BLAS product for the log-densities and one for the statistics (jaxem takes the
scatter about each component's mean instead, an (N, K, D) pass, so that float32 keeps
``1 - r̄``). Both run exactly ``--iters`` iterations per initialisation (``tol=0``) from the
same ``--n-init`` initial parameters (``jaxem.engine.initialise`` of a
``random_from_data`` mixture): jaxem's ``jaxem.fit`` as batched restarts, numpy one
after another, in float64. A second jaxem row times the estimator,
``VonMisesFisherMixture``, from its own starts (validation and final E-step included).
The hard limit (``assignment="hard"`` with a fixed shared concentration of 1e6) runs
against numpy spherical k-means from the same initial directions. Steady-state seconds
are the median of ``--repeats`` runs, jaxem's after its first call (compile included),
which is reported apart; the score is the final mean log-likelihood per row (for the
hard limit, the mean cosine to the assigned direction) of each side, so the rows compare
like for like. The matmul ceiling is measured in the same run; the flop count of one
iteration is the useful work of the plain algorithm, ``4 N K D`` (two products).

Reproduce (repository root)::

    python -m benchmarks.von_mises_fisher --n 100000 --d 64 --k 16 --iters 30 --n-init 4
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from scipy import special

from benchmarks._harness import Row, first_call_seconds, matmul_ceiling, print_table, timeit


def _data(n, d, k, dtype, seed=0):
    """``k`` clusters of unit vectors: centres plus noise of norm about 1, normalised."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, k, n)] + rng.normal(size=(n, d)) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def _log_normaliser(kappa, d):
    nu = d / 2 - 1
    return nu * np.log(kappa) - d / 2 * np.log(2 * np.pi) - np.log(special.ive(nu, kappa)) - kappa


def _concentration(r, d, steps=4):
    kappa = r * (d - r**2) / (1 - r**2)
    for _ in range(steps):
        a = special.ive(d / 2, kappa) / special.ive(d / 2 - 1, kappa)
        kappa = kappa - (a - r) / (1 - a**2 - (d - 1) / kappa * a)
    return kappa


def numpy_em(x, weights, means, kappas, iters):
    """Soft EM; returns the final mean log-likelihood."""
    d = x.shape[1]
    for _ in range(iters):
        log_joint = x @ (kappas[:, None] * means).T + _log_normaliser(kappas, d) + np.log(weights)
        log_norm = special.logsumexp(log_joint, axis=1, keepdims=True)
        resp = np.exp(log_joint - log_norm)
        counts = resp.sum(0)
        weights = counts / counts.sum()
        sums = resp.T @ x
        lengths = np.linalg.norm(sums, axis=1)
        means = sums / lengths[:, None]
        kappas = _concentration(lengths / counts, d)
    log_joint = x @ (kappas[:, None] * means).T + _log_normaliser(kappas, d) + np.log(weights)
    return float(special.logsumexp(log_joint, axis=1).mean())


def numpy_spherical_kmeans(x, means, iters):
    """Spherical k-means; returns the mean cosine of the rows to their directions."""
    for _ in range(iters):
        labels = np.argmax(x @ means.T, axis=1)
        sums = np.zeros_like(means)
        np.add.at(sums, labels, x)
        lengths = np.linalg.norm(sums, axis=1, keepdims=True)
        means = np.where(lengths > 0, sums / np.where(lengths > 0, lengths, 1), means)
    return float(np.max(x @ means.T, axis=1).mean())


def _best_numpy(x, starts, hard, iters):
    """The best final score of the numpy runs from every start (numpy parameters)."""
    if hard:
        return max(numpy_spherical_kmeans(x, start.components.means, iters) for start in starts)
    return max(
        numpy_em(
            x,
            np.exp(start.log_weights),
            start.components.means,
            start.components.concentrations,
            iters,
        )
        for start in starts
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--n-init", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # tol=0: every fit ends at max_iter

    import jax

    import jaxem
    from jaxem import engine

    x = _data(args.n, args.d, args.k, np.dtype(args.dtype))
    x64 = x.astype(np.float64)
    flops = 4.0 * args.n * args.k * args.d
    restart_iters = args.n_init * args.iters
    ceiling = matmul_ceiling()
    key = jax.random.key(0)
    for hard in (False, True):
        options = dict(assignment="hard", concentration=1e6) if hard else {}
        family = jaxem.von_mises_fisher(concentration=options.get("concentration"))
        model = jaxem.mixture(
            family, args.k, init="random_from_data", assignment=options.get("assignment", "soft")
        )
        with jax.enable_x64(args.dtype == "float64"):
            inits = engine.initialise(model, x, key=key, n_restarts=args.n_init)

            def functional(model=model, inits=inits):
                result = jaxem.fit(
                    model,
                    x,
                    key=key,
                    n_restarts=args.n_init,
                    init_params=inits,
                    max_iter=args.iters,
                    tol=0.0,
                )
                return jax.block_until_ready(result)

            first, result = first_call_seconds(functional)
            seconds, _ = timeit(functional, repeats=args.repeats, warmup=0)
            per_row = engine.evaluate(model, result.params, x, ("log_prob",))[0]
        means = np.asarray(result.params.components.means, np.float64)
        score = float(np.max(x64 @ means.T, axis=1).mean()) if hard else float(np.mean(per_row))
        rows = [
            Row(
                library="jaxem",
                seconds=seconds,
                restart_iters=int(np.sum(result.restarts.n_iter)),
                score=score,
                flops_per_iter=flops,
                compile_seconds=max(first - seconds, 0.0),
                note=f"jaxem.fit, batched; n_iter {np.asarray(result.restarts.n_iter).tolist()}",
            )
        ]

        def estimator(options=options):
            common = dict(n_init=args.n_init, tol=0.0, random_state=0)
            return jaxem.VonMisesFisherMixture(
                args.k, max_iter=args.iters, init_params="random_from_data", **common, **options
            ).fit(x)

        first, fitted = first_call_seconds(estimator)
        seconds, _ = timeit(estimator, repeats=args.repeats, warmup=0)
        score = (
            float(np.max(x64 @ fitted.means_.astype(np.float64).T, axis=1).mean())
            if hard
            else float(fitted.score(x))
        )
        rows.append(
            Row(
                library="jaxem estimator",
                seconds=seconds,
                restart_iters=restart_iters,
                score=score,
                flops_per_iter=flops,
                compile_seconds=max(first - seconds, 0.0),
                note="VonMisesFisherMixture, its own starts",
            )
        )
        starts = [
            jax.tree.map(lambda leaf, r=r: np.asarray(leaf[r], np.float64), inits)
            for r in range(args.n_init)
        ]

        def numpy_fits(starts=starts, hard=hard):
            return _best_numpy(x64, starts, hard, args.iters)

        seconds, _ = timeit(numpy_fits, repeats=args.repeats, warmup=0)
        rows.append(
            Row(
                library="numpy spherical k-means" if hard else "numpy EM (scipy ive)",
                seconds=seconds,
                restart_iters=restart_iters,
                score=numpy_fits(),
                flops_per_iter=flops,
                note="float64, jaxem.fit's starts, one after another",
            )
        )
        kind = "hard limit (spherical k-means)" if hard else "soft EM"
        print_table(
            rows,
            ceiling_gflops=ceiling,
            score_name="mean cosine" if hard else "loglik/n",
            title=(
                f"von Mises-Fisher mixture, {kind}: N={args.n} D={args.d} K={args.k} "
                f"{args.dtype}, {args.n_init} x {args.iters} iterations"
            ),
        )


if __name__ == "__main__":
    main()

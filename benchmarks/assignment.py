"""Cost of hard and stochastic EM against EM, and against scikit-learn's EM.

A full-covariance Gaussian mixture (default N=100,000, D=8, K=8, float64), fitted
with exactly ``--iters`` iterations per initialisation (``tol=0``; stochastic EM
always runs ``max_iter``) and ``--n-init`` initialisations: jaxem's
``GaussianMixture`` with ``assignment`` "soft", "hard" and "stochastic", and
scikit-learn's ``GaussianMixture`` (EM, its serial restarts) side by side in one
process. Steady-state seconds are the median of ``--repeats`` runs after a warm-up;
the first call (compile included) is reported apart. The score is the mean
log-likelihood per sample of the data under each fitted model (``score``), so the
rows are compared like for like (hard EM maximises another objective, the
classification likelihood, and scores below EM by design).

Reproduce (repository root)::

    python -m benchmarks.assignment --n 100000 --iters 50 --n-init 4
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks._harness import Row, first_call_seconds, print_table, timeit


def _data(n, d, k, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 2.5
    labels = rng.integers(0, k, n)
    return centres[labels] + rng.normal(size=(n, d))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--n-init", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

    import jaxem

    x = _data(args.n, args.d, args.k)
    options = dict(n_init=args.n_init, max_iter=args.iters, tol=0.0, random_state=0)
    rows = []
    for name, make in [
        ("jaxem", lambda: jaxem.GaussianMixture(args.k, **options)),
        ("jaxem hard", lambda: jaxem.GaussianMixture(args.k, assignment="hard", **options)),
        (
            "jaxem stochastic",
            lambda: jaxem.GaussianMixture(args.k, assignment="stochastic", **options),
        ),
        ("scikit-learn", lambda: SklearnGaussianMixture(args.k, **options)),
    ]:
        first, model = first_call_seconds(lambda make=make: make().fit(x))
        seconds, _ = timeit(lambda make=make: make().fit(x), repeats=args.repeats, warmup=0)
        rows.append(
            Row(
                library=name,
                seconds=seconds,
                restart_iters=args.n_init * args.iters,
                score=float(model.score(x)),
                compile_seconds=max(first - seconds, 0.0),
                note=f"n_iter_={model.n_iter_}",
            )
        )
    print_table(
        rows,
        title=f"N={args.n} D={args.d} K={args.k} full, {args.n_init} x {args.iters} iterations",
    )


if __name__ == "__main__":
    main()

"""Online EM (``partial_fit``) against batch EM on a 1M-row Gaussian mixture.

A full-covariance mixture (default N=1,000,000, D=8, K=8, float64), fitted twice
from the same seed: batch EM (``GaussianMixture.fit``, ``tol=1e-6``) and one or more
passes of ``partial_fit`` over shuffled batches. Prints the mean log-likelihood per
sample of all rows under each fit, their difference (the target is within 1e-2),
and the wall time of each (compile included for both: first calls in a fresh
process; a second, warm run of each is reported too).

Reproduce (repository root)::

    python -m benchmarks.online --passes 1 --batch 10000
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _data(n, d, k, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 2.5
    scales = rng.uniform(0.5, 1.5, size=(k, d))
    labels = rng.integers(0, k, n)
    return centres[labels] + rng.normal(size=(n, d)) * scales[labels]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--n-init", type=int, default=4)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--passes", type=int, default=1)
    args = parser.parse_args(argv)

    import jaxem

    x = _data(args.n, args.d, args.k)
    rng = np.random.default_rng(1)

    def batch_fit():
        start = time.perf_counter()
        model = jaxem.GaussianMixture(
            args.k, n_init=args.n_init, random_state=0, tol=1e-6, max_iter=1000
        ).fit(x)
        return model, time.perf_counter() - start

    def online_fit():
        start = time.perf_counter()
        model = jaxem.GaussianMixture(args.k, n_init=args.n_init, random_state=0)
        for _ in range(args.passes):
            order = rng.permutation(args.n)
            for first in range(0, args.n, args.batch):
                model.partial_fit(x[order[first : first + args.batch]])
        return model, time.perf_counter() - start

    batch, batch_first = batch_fit()
    online, online_first = online_fit()
    _, batch_warm = batch_fit()
    _, online_warm = online_fit()
    batch_score, online_score = batch.score(x), online.score(x)
    print(
        f"N={args.n:,} D={args.d} K={args.k} full, float64, n_init={args.n_init}; "
        f"online: {args.passes} pass(es) of {args.batch:,}-row batches "
        f"({online.n_iter_} steps, step_decay={online.step_decay})"
    )
    print("fit     | first call s | warm s | mean log-likelihood | iterations")
    print(
        f"batch   | {batch_first:12.2f} | {batch_warm:6.2f} | {batch_score:19.6f} | {batch.n_iter_}"
    )
    print(
        f"online  | {online_first:12.2f} | {online_warm:6.2f} | {online_score:19.6f} | "
        f"{online.n_iter_}"
    )
    print(f"batch - online per sample: {batch_score - online_score:.2e} (target < 1e-2)")


if __name__ == "__main__":
    main()

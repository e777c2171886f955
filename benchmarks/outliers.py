"""Robustness to gross outliers: Student-t mixture against Gaussian mixtures.

Three well-separated 2-D Gaussian clusters (unit covariance) plus a share of gross
outliers drawn uniformly over a box ten times wider (and higher) than the
inliers' bounding box. Fitted: ``jaxem.StudentTMixture``, ``jaxem.GaussianMixture``
and ``sklearn.mixture.GaussianMixture``, all with 3 components, the same
``init_params`` and ``n_init``. Printed per data seed and method: the error of the
means (fitted means matched to the true means by the Hungarian algorithm; the
largest and the mean distance), the fit's mean log-likelihood per sample
(``score(X)``: each under its own model), and wall times: a warm-up fit first (for
jaxem, its compile time is the warm-up minus the median timed fit), then the median
of ``--repeats`` timed fits. ``oracle`` is the error of the inliers' own sample means
per cluster, the best any estimator can do on average.

Reproduce (repository root)::

    python -m benchmarks.outliers                      # 5 data seeds, 3 timed fits each
    python -m benchmarks.outliers --seeds 1 --share 0.1
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment

CENTERS = np.array([[-6.0, 0.0], [6.0, 0.0], [0.0, 9.0]])


def make_data(seed: int, n_inliers: int, share: float):
    """``(X, labels)``: inliers labelled 0..2, outliers -1, shuffled."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_inliers) % len(CENTERS)
    inliers = CENTERS[labels] + rng.normal(size=(n_inliers, 2))
    low, high = inliers.min(0), inliers.max(0)
    centre, half_width = (low + high) / 2, (high - low) / 2
    n_outliers = int(round(share * n_inliers / (1 - share)))  # share of all rows
    outliers = centre + rng.uniform(-10, 10, (n_outliers, 2)) * half_width
    X = np.concatenate([inliers, outliers])
    y = np.concatenate([labels, -np.ones(n_outliers, int)])
    order = rng.permutation(len(X))
    return X[order], y[order]


def mean_errors(means) -> tuple[float, float]:
    """(largest, mean) distance of the true means to their matched fitted means."""
    distances = np.linalg.norm(CENTERS[:, None] - np.asarray(means)[None], axis=-1)
    rows, cols = linear_sum_assignment(distances)
    matched = distances[rows, cols]
    return float(matched.max()), float(matched.mean())


def _estimators(init_params: str, n_init: int):
    import sklearn.mixture

    import jaxem

    options = dict(n_init=n_init, init_params=init_params, random_state=0)
    return {
        "jaxem StudentTMixture": lambda: jaxem.StudentTMixture(3, **options),
        "jaxem GaussianMixture": lambda: jaxem.GaussianMixture(3, **options),
        "sklearn GaussianMixture": lambda: sklearn.mixture.GaussianMixture(3, **options),
    }


def run(seeds, n_inliers, share, init_params, n_init, repeats):
    print(
        f"3 clusters x {n_inliers // 3} rows (unit covariance) + {share:.0%} uniform outliers "
        f"over a box 10x wider; init_params={init_params!r}, n_init={n_init}; "
        f"{repeats} timed fits after one warm-up"
    )
    header = (
        f"{'seed':>4}  {'method':<24} {'max err':>8} {'mean err':>8} {'loglik/n':>9} "
        f"{'iters':>5} {'fit s':>7} {'compile s':>9}"
    )
    print(header)
    summary: dict[str, list] = {}
    for seed in seeds:
        X, y = make_data(seed, n_inliers, share)
        oracle = [X[y == k].mean(0) for k in range(len(CENTERS))]
        error = mean_errors(oracle)
        print(f"{seed:>4}  {'oracle (inlier means)':<24} {error[0]:>8.3f} {error[1]:>8.3f}")
        summary.setdefault("oracle (inlier means)", []).append((*error, np.nan, np.nan))
        for name, make in _estimators(init_params, n_init).items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence warnings are reported as iters
                start = time.perf_counter()
                make().fit(X)
                warm_up = time.perf_counter() - start
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    fitted = make().fit(X)
                    times.append(time.perf_counter() - start)
            fit_time = statistics.median(times)
            compile_time = max(warm_up - fit_time, 0.0) if name.startswith("jaxem") else 0.0
            error = mean_errors(fitted.means_)
            score = fitted.score(X)
            print(
                f"{seed:>4}  {name:<24} {error[0]:>8.3f} {error[1]:>8.3f} {score:>9.4f} "
                f"{fitted.n_iter_:>5} {fit_time:>7.3f} {compile_time:>9.2f}"
            )
            summary.setdefault(name, []).append((*error, fit_time, score))
    print("\nOver the seeds (mean of each column):")
    print(f"{'method':<24} {'max err':>8} {'mean err':>8} {'fit s':>7} {'loglik/n':>9}")
    for name, rows in summary.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the oracle has no time
            values = np.nanmean(np.array(rows, dtype=float), axis=0)
        print(f"{name:<24} {values[0]:>8.3f} {values[1]:>8.3f} {values[2]:>7.3f} {values[3]:>9.4f}")
    sklearn_time = np.mean([row[2] for row in summary["sklearn GaussianMixture"]])
    for name in ("jaxem StudentTMixture", "jaxem GaussianMixture"):
        ratio = np.mean([row[2] for row in summary[name]]) / sklearn_time
        print(f"time {name} / sklearn GaussianMixture: {ratio:.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of data seeds")
    parser.add_argument("--n-inliers", type=int, default=3000)
    parser.add_argument("--share", type=float, default=0.05, help="share of outliers")
    parser.add_argument("--init-params", default="random_from_data")
    parser.add_argument("--n-init", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    run(
        range(args.seeds),
        args.n_inliers,
        args.share,
        args.init_params,
        args.n_init,
        args.repeats,
    )


if __name__ == "__main__":
    main()

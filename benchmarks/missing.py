"""Missing data inside EM: quality against mean imputation, and the E-step's cost.

(a) Quality. A synthetic mixture (default N = 5,000 training and 2,000 held-out
rows, D = 8, K = 4, full covariances with correlated features); 30% of the entries
of both sets are deleted at random (MCAR). Fitted, with the same ``n_init`` and
``random_state``:

- ``in-EM``: ``jaxem.GaussianMixture(missing="em")`` on the incomplete rows (exact
  EM for the observed data);
- ``mean-imputed``: every NaN replaced by its feature's observed training mean,
  then a complete-data ``jaxem.GaussianMixture`` fit.

Printed per data seed: the held-out log-likelihood per row of the observed entries,
computed here in numpy (float64) with each fit's parameters and the observed
marginal ``N(x_o; μ_o, Σ_oo)`` for both fits; the parameter errors against the true
mixture (true and fitted components matched by the Hungarian algorithm on the
means' distances: largest and mean distance of the means, mean relative Frobenius
error of the covariances); and the error (RMSE) of the held-out missing entries
filled by each fit's ``impute`` (conditional means), beside the column means'.
``oracle`` scores the true parameters.

(d) Cost. One E-step (the statistics over all rows: ``jaxem.engine.statistics``) at
N = 100,000, D = 16, K = 16, full covariances, warm (median of ``--repeats``;
compile time apart: first call minus the median), for the complete-data family the
estimators use (``exact=True``), jaxem's fastest complete-data form
(``exact=False``), and the missing-data family on the rows with 30% missing.

Reproduce (repository root)::

    python -m benchmarks.missing                     # (a) 3 data seeds, (d) float32 + float64
    python -m benchmarks.missing --seeds 1 --cost-rows 20000 --repeats 2   # a quick check
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment

N_FEATURES, N_COMPONENTS = 8, 4


def make_mixture(seed: int, n_features: int = N_FEATURES, n_components: int = N_COMPONENTS):
    """True ``(weights, means, covariances)``: unit-scale correlated components whose
    means are about 3.5 standard deviations apart."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(n_components, 4.0))
    means = rng.normal(scale=2.5, size=(n_components, n_features))
    covariances = []
    for _ in range(n_components):
        a = rng.normal(size=(n_features, n_features)) / np.sqrt(n_features)
        covariance = a @ a.T + 0.3 * np.eye(n_features)
        scale = np.sqrt(np.diag(covariance))
        covariances.append(covariance / np.outer(scale, scale))  # unit variances, correlated
    return weights, means, np.stack(covariances)


def sample(rng, weights, means, covariances, n_rows: int):
    labels = rng.choice(len(weights), size=n_rows, p=weights)
    factors = np.linalg.cholesky(covariances)
    noise = rng.normal(size=(n_rows, means.shape[1]))
    return means[labels] + np.einsum("nkd,nd->nk", factors[labels], noise)


def delete(rng, x, share: float):
    """``x`` with ``share`` of its entries set to NaN at random; no row left empty."""
    x = x.copy()
    gone = rng.uniform(size=x.shape) < share
    empty = gone.all(axis=1)
    gone[empty, rng.integers(x.shape[1], size=int(empty.sum()))] = False
    x[gone] = np.nan
    return x


def observed_log_likelihood(x, weights, means, covariances) -> float:
    """Mean over rows of ``log Σ_k π_k N(x_o; μ_ko, Σ_k,oo)`` (float64 numpy), rows
    grouped by their pattern of observed entries."""
    observed = ~np.isnan(x)
    patterns, inverse = np.unique(observed, axis=0, return_inverse=True)
    total = 0.0
    for index, pattern in enumerate(patterns):
        rows = x[inverse.ravel() == index][:, pattern]
        log_joint = np.empty((rows.shape[0], len(weights)))
        for k in range(len(weights)):
            block = covariances[k][np.ix_(pattern, pattern)]
            factor = np.linalg.cholesky(block)
            offsets = np.linalg.solve(factor, (rows - means[k, pattern]).T)
            log_det = 2 * np.log(np.diag(factor)).sum()
            log_joint[:, k] = np.log(weights[k]) - 0.5 * (
                (offsets**2).sum(0) + log_det + pattern.sum() * np.log(2 * np.pi)
            )
        top = log_joint.max(axis=1, keepdims=True)
        total += float((top[:, 0] + np.log(np.exp(log_joint - top).sum(axis=1))).sum())
    return total / x.shape[0]


def parameter_errors(truth, means, covariances) -> tuple[float, float, float]:
    """(largest, mean) distance of the matched means; mean relative Frobenius error of
    the matched covariances."""
    _, true_means, true_covariances = truth
    distances = np.linalg.norm(true_means[:, None] - np.asarray(means)[None], axis=-1)
    rows, cols = linear_sum_assignment(distances)
    matched = distances[rows, cols]
    covariance_error = np.mean(
        [
            np.linalg.norm(covariances[j] - true_covariances[i])
            / np.linalg.norm(true_covariances[i])
            for i, j in zip(rows, cols)
        ]
    )
    return float(matched.max()), float(matched.mean()), float(covariance_error)


def quality(seeds, n_train, n_test, share, n_init):
    import jaxem

    print(
        f"(a) {N_COMPONENTS} full-covariance components, D={N_FEATURES}, {n_train} training + "
        f"{n_test} held-out rows, {share:.0%} of entries missing at random; n_init={n_init}"
    )
    header = (
        f"{'seed':>4}  {'method':<14} {'heldout ll/n':>12} {'max mean err':>12} "
        f"{'mean mean err':>13} {'cov rel err':>11} {'impute RMSE':>11} {'fit s':>7}"
    )
    print(header)
    summary: dict[str, list] = {}
    for seed in seeds:
        rng = np.random.default_rng(1000 + seed)
        truth = make_mixture(seed)
        complete_train = sample(rng, *truth, n_train)
        complete_test = sample(rng, *truth, n_test)
        train, test = delete(rng, complete_train, share), delete(rng, complete_test, share)
        missing = np.isnan(test)
        column_means = np.nanmean(train, axis=0)

        def rmse(filled, missing=missing, complete=complete_test):
            return float(np.sqrt(np.mean((filled[missing] - complete[missing]) ** 2)))

        rows = {
            "oracle": (
                observed_log_likelihood(test, *truth),
                (0.0, 0.0, 0.0),
                np.nan,
                np.nan,
            )
        }
        fits = {
            "in-EM": (jaxem.GaussianMixture(N_COMPONENTS, missing="em", **_options(n_init)), train),
            "mean-imputed": (
                jaxem.GaussianMixture(N_COMPONENTS, **_options(n_init)),
                np.where(np.isnan(train), column_means, train),
            ),
        }
        for name, (estimator, data) in fits.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence is not what is measured
                start = time.perf_counter()
                estimator.fit(data)
                seconds = time.perf_counter() - start
            parameters = (estimator.weights_, estimator.means_, estimator.covariances_)
            rows[name] = (
                observed_log_likelihood(test, *parameters),
                parameter_errors(truth, estimator.means_, estimator.covariances_),
                rmse(estimator.impute(test)),
                seconds,
            )
        rows["column means"] = (
            np.nan,
            (np.nan,) * 3,
            rmse(np.where(missing, column_means, test)),
            np.nan,
        )
        for name, (score, errors, error, seconds) in rows.items():
            print(
                f"{seed:>4}  {name:<14} {score:>12.4f} {errors[0]:>12.4f} {errors[1]:>13.4f} "
                f"{errors[2]:>11.4f} {error:>11.4f} {seconds:>7.2f}"
            )
            summary.setdefault(name, []).append((score, *errors, error))
    print("Mean over the seeds:")
    print(
        f"{'method':<14} {'heldout ll/n':>12} {'max mean err':>12} {'mean mean err':>13} "
        f"{'cov rel err':>11} {'impute RMSE':>11}"
    )
    for name, values in summary.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(np.array(values, dtype=float), axis=0)
        print(
            f"{name:<14} {mean[0]:>12.4f} {mean[1]:>12.4f} {mean[2]:>13.4f} {mean[3]:>11.4f} "
            f"{mean[4]:>11.4f}"
        )
    print("(first fit of each kind includes its compile time)")


def _options(n_init):
    return dict(n_init=n_init, random_state=0, max_iter=200)


def cost(n_rows, n_features, n_components, share, dtypes, repeats):
    import jax
    import jax.numpy as jnp

    import jaxem
    from jaxem import engine

    print(
        f"\n(d) one E-step, N={n_rows}, D={n_features}, K={n_components}, full; "
        f"{share:.0%} missing for the missing-data rows; median of {repeats} after warm-up"
    )
    print(
        f"{'dtype':<8} {'family':<34} {'E-step s':>9} {'x exact':>8} {'compile s':>9} "
        f"{'loglik/n':>11}"
    )
    rng = np.random.default_rng(0)
    truth = make_mixture(0, n_features, n_components)
    complete = sample(rng, *truth, n_rows)
    incomplete = delete(rng, complete, share)
    cases = {
        "complete, exact=True (estimators)": (jaxem.gaussian("full", exact=True), complete),
        "complete, exact=False (one GEMM)": (jaxem.gaussian("full"), complete),
        "missing=True, 30% missing": (jaxem.gaussian("full", missing=True), incomplete),
        "missing=True, nothing missing": (jaxem.gaussian("full", missing=True), complete),
    }
    for dtype in dtypes:
        with jax.enable_x64(dtype == "float64"):
            reference = None
            for name, (family, data) in cases.items():
                model = jaxem.mixture(family, n_components)
                x = jnp.asarray(data, dtype)
                params = jaxem.MixtureParams(
                    jnp.log(jnp.asarray(truth[0], dtype)),
                    family.params_from_covariances(
                        jnp.asarray(truth[1], dtype), jnp.asarray(truth[2], dtype)
                    ),
                )

                def step(model=model, params=params, x=x):
                    stats, log_likelihood = engine.statistics(model, params, x)
                    return jax.block_until_ready((stats, log_likelihood))

                start = time.perf_counter()
                step()
                first = time.perf_counter() - start
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    _, log_likelihood = step()
                    times.append(time.perf_counter() - start)
                seconds = statistics.median(times)
                reference = reference or seconds
                print(
                    f"{dtype:<8} {name:<34} {seconds:>9.3f} {seconds / reference:>8.2f} "
                    f"{max(first - seconds, 0.0):>9.2f} {float(log_likelihood) / n_rows:>11.4f}"
                )
    print(f"(devices: {jax.devices()})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="data seeds of (a)")
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--share", type=float, default=0.3, help="share of missing entries")
    parser.add_argument("--n-init", type=int, default=4)
    parser.add_argument("--cost-rows", type=int, default=100_000)
    parser.add_argument("--cost-features", type=int, default=16)
    parser.add_argument("--cost-components", type=int, default=16)
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", choices=("quality", "cost"), default=None)
    args = parser.parse_args(argv)
    if args.skip != "quality":
        quality(range(args.seeds), args.n_train, args.n_test, args.share, args.n_init)
    if args.skip != "cost":
        cost(
            args.cost_rows,
            args.cost_features,
            args.cost_components,
            args.share,
            args.dtypes.split(","),
            args.repeats,
        )


if __name__ == "__main__":
    main()

"""Semi-supervised EM and MAP EM: what labels and priors buy (issue 12, 3(b) and 3(c)).

(b) Semi-supervised against unsupervised EM. A moderately overlapping synthetic
mixture (300 rows from 3 full-covariance Gaussian components in 2-D, means 1.5 from
the origin at 120 degrees, elongated covariances, weights 0.5 / 0.3 / 0.2) and iris
(150 rows, 4 features, 3 species; bundled with scikit-learn). Per seed, a random 5 %
of the rows are labelled (at least one);
``jaxem.GaussianMixture(semi_supervised=True).fit_predict(X, y)`` and the same
estimator unsupervised (and scikit-learn's GaussianMixture, the peer) are
scored by the adjusted Rand index against the true classes on every row. Same
``n_init``, ``init_params`` and ``random_state`` on every side.

(c) Collapse of restarts on a hard problem: K = 10 components, N = 40 rows, D = 5
features (standard normal), ``reg_covar = 0``. Per data seed, ``n_init`` restarts
of ``jaxem.GaussianMixture`` with and without ``prior="mclust"`` (Fraley and
Raftery's default conjugate prior); a restart collapses when its parameters or
log-likelihood become non-finite (status NON_FINITE: discarded). scikit-learn's
GaussianMixture is run ``n_init`` times with ``n_init=1`` and seeds ``0..n_init-1``;
a fit that raises (ill-defined covariance) counts as collapsed.

Wall times are printed for context only (a warm-up fit first: jaxem compiles there).

Reproduce (repository root)::

    python -m benchmarks.map_semi_supervised                  # 10 seeds, n_init 4 / 64
    python -m benchmarks.map_semi_supervised --seeds 3 --restarts 16
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

SHARE_LABELLED = 0.05


def overlapping_mixture(seed: int, n_samples: int = 300):
    """``(X, labels)``: three overlapping 2-D Gaussians, weights 0.5 / 0.3 / 0.2, means
    1.5 apart from the origin at 120 degrees, elongated covariances turned apart."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=n_samples, p=[0.5, 0.3, 0.2])
    angles = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
    means = 1.5 * np.stack([np.cos(angles), np.sin(angles)], 1)
    factors = np.stack(
        [[[1.6, 0.0], [0.0, 0.5]], [[0.5, 0.6], [0.0, 1.4]], [[1.0, -0.8], [0.0, 0.6]]]
    )
    noise = rng.normal(size=(n_samples, 2))
    return means[labels] + np.einsum("nd,nde->ne", noise, factors[labels]), labels


def iris():
    from sklearn.datasets import load_iris

    data = load_iris()
    return data.data.astype(np.float64), data.target


def labelled_subset(labels, seed: int):
    """``y``: the true label on a random 5 % of the rows (at least one), -1 elsewhere."""
    rng = np.random.default_rng(1000 + seed)
    n_labelled = max(1, int(round(SHARE_LABELLED * len(labels))))
    y = np.full(len(labels), -1)
    chosen = rng.choice(len(labels), size=n_labelled, replace=False)
    y[chosen] = labels[chosen]
    return y


def semi_supervised(seeds: int, n_init: int):
    import sklearn.mixture
    from sklearn.metrics import adjusted_rand_score

    import jaxem

    print(
        f"(b) adjusted Rand index, {SHARE_LABELLED:.0%} of rows labelled, n_init={n_init}, "
        "init_params='kmeans', covariance 'full'"
    )
    print(
        f"{'data':<12} {'seed':>4} {'labelled':>8} {'semi':>7} {'unsup':>7} {'sklearn':>7} "
        f"{'semi s':>7} {'unsup s':>7}"
    )
    for name in ("overlapping", "iris"):
        semi_scores, plain_scores, peer_scores = [], [], []
        for seed in range(seeds):
            X, labels = overlapping_mixture(seed) if name == "overlapping" else iris()
            y = labelled_subset(labels, seed)
            options = dict(n_components=3, n_init=n_init, random_state=seed)
            semi = jaxem.GaussianMixture(semi_supervised=True, **options)
            plain = jaxem.GaussianMixture(**options)
            if seed == 0:  # warm-up: compile both programs
                semi.fit_predict(X, y), plain.fit_predict(X)
            start = time.perf_counter()
            semi_labels = semi.fit_predict(X, y)
            semi_seconds = time.perf_counter() - start
            start = time.perf_counter()
            plain_labels = plain.fit_predict(X)
            plain_seconds = time.perf_counter() - start
            peer_labels = sklearn.mixture.GaussianMixture(**options).fit_predict(X)
            scores = [
                adjusted_rand_score(labels, found)
                for found in (semi_labels, plain_labels, peer_labels)
            ]
            semi_scores.append(scores[0])
            plain_scores.append(scores[1])
            peer_scores.append(scores[2])
            print(
                f"{name:<12} {seed:>4} {int(np.sum(y >= 0)):>8} {scores[0]:>7.3f} "
                f"{scores[1]:>7.3f} {scores[2]:>7.3f} {semi_seconds:>7.3f} {plain_seconds:>7.3f}"
            )
        wins = int(np.sum(np.array(semi_scores) > np.array(plain_scores)))
        ties = int(np.sum(np.isclose(semi_scores, plain_scores)))
        print(
            f"{name:<12} mean {'':>8} {np.mean(semi_scores):>7.3f} {np.mean(plain_scores):>7.3f} "
            f"{np.mean(peer_scores):>7.3f}   semi > unsup on {wins}/{seeds} seeds "
            f"({ties} ties)"
        )


def collapse(seeds: int, n_init: int):
    import sklearn.mixture

    import jaxem

    print(
        f"\n(c) share of restarts that collapse: K=10, N=40, D=5, reg_covar=0, "
        f"n_init={n_init}, init_params='kmeans'"
    )
    print(f"{'seed':>4} {'jaxem ML':>9} {'jaxem mclust':>13} {'sklearn ML':>11}")
    totals = np.zeros(3)
    for seed in range(seeds):
        X = np.random.default_rng(seed).normal(size=(40, 5))
        shares = []
        for prior in (None, "mclust"):
            gm = jaxem.GaussianMixture(
                10, reg_covar=0.0, n_init=n_init, random_state=seed, prior=prior
            )
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    gm.fit(X)
                status = gm.restarts_.status
            except ValueError as error:  # every restart failed
                status = np.asarray(error.__cause__.restarts.status)
            shares.append(float(np.mean(status == jaxem.Status.NON_FINITE)))
        failed = 0
        for restart in range(n_init):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sklearn.mixture.GaussianMixture(10, reg_covar=0.0, random_state=restart).fit(X)
            except ValueError:
                failed += 1
        shares.append(failed / n_init)
        totals += shares
        print(f"{seed:>4} {shares[0]:>9.0%} {shares[1]:>13.0%} {shares[2]:>11.0%}")
    mean = totals / seeds
    print(f"mean {mean[0]:>9.0%} {mean[1]:>13.0%} {mean[2]:>11.0%}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--n-init", type=int, default=4, help="restarts for (b)")
    parser.add_argument("--restarts", type=int, default=64, help="restarts per seed for (c)")
    args = parser.parse_args(argv)
    semi_supervised(args.seeds, args.n_init)
    collapse(args.seeds, args.restarts)


if __name__ == "__main__":
    main()

"""MAP EM: conjugate priors on the components and a Dirichlet prior on the weights.

References in float64 numpy, written here from the normal-inverse-Wishart (and
normal-inverse-gamma) posterior modes of Fraley and Raftery (2007), never from
jaxem's own conversion to its MAP fields. All fits share 120 rows of 3 features.
"""

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.utils._param_validation import InvalidParameterError

import jaxem
from jaxem import GaussianMixture

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
N_FEATURES = 3


def _data(seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0, 0.0], [4.0, 1.0, -2.0], [-3.0, 4.0, 1.0]])
    labels = np.repeat(np.arange(3), [50, 40, 30])
    mixing = np.array([[1.0, 0.3, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 0.6]])
    return centers[labels] + rng.normal(size=(120, N_FEATURES)) @ mixing, labels


def _prior(covariance_type):
    """An explicit prior, away from mclust's defaults."""
    scale = np.array([[1.5, 0.2, 0.0], [0.2, 0.7, 0.1], [0.0, 0.1, 0.9]])
    if covariance_type == "diag":
        scale = np.array([1.5, 0.7, 0.9])
    elif covariance_type == "spherical":
        scale = 1.1
    return {"shrinkage": 0.7, "mean": np.array([1.0, -1.0, 0.5]), "degrees_of_freedom": 5.0,
            "scale": scale}  # fmt: skip


def _mode(covariance_type, X, labels, n_components, prior, reg_covar):
    """Posterior modes of the means and covariances (sklearn layout) given labels."""
    kappa, mu0, nu, scale = (
        prior["shrinkage"], prior["mean"], prior["degrees_of_freedom"], prior["scale"]
    )  # fmt: skip
    n_features = X.shape[1]
    means, numerators, counts = [], [], []
    for k in range(n_components):
        rows = X[labels == k]
        n = len(rows)
        mean = rows.mean(0)
        offset = mean - mu0
        scatter = (rows - mean).T @ (rows - mean) + kappa * n / (kappa + n) * np.outer(
            offset, offset
        )
        means.append((n * mean + kappa * mu0) / (n + kappa))
        numerators.append(scatter)
        counts.append(n)
    eye = np.eye(n_features)
    if covariance_type == "full":
        covariances = np.array(
            [(scale + s) / (nu + n + n_features + 2) + reg_covar * eye
             for s, n in zip(numerators, counts)]
        )  # fmt: skip
    elif covariance_type == "tied":
        covariances = (scale + sum(numerators)) / (
            nu + sum(counts) + n_features + n_components + 1
        ) + reg_covar * eye
    elif covariance_type == "diag":
        covariances = np.array(
            [(scale + np.diag(s)) / (nu + n + 3) + reg_covar for s, n in zip(numerators, counts)]
        )
    else:
        covariances = np.array(
            [(scale + np.trace(s)) / (nu + (n + 1) * n_features + 2) + reg_covar
             for s, n in zip(numerators, counts)]
        )  # fmt: skip
    return np.array(means), covariances


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_one_component_is_the_posterior_mode(covariance_type):
    X, _ = _data()
    prior = _prior(covariance_type)
    gm = GaussianMixture(1, covariance_type=covariance_type, prior=prior, reg_covar=1e-3).fit(X)
    means, covariances = _mode(covariance_type, X, np.zeros(len(X), int), 1, prior, 1e-3)
    np.testing.assert_allclose(gm.weights_, [1.0])
    np.testing.assert_allclose(gm.means_, means, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gm.covariances_, covariances, rtol=1e-10, atol=1e-12)
    assert gm.means_.dtype == np.float64


@pytest.mark.parametrize("covariance_type", ("full", "spherical"))
def test_mclust_default_prior(covariance_type):
    """prior='mclust' is defaultPrior: κ=0.01, data mean, ν=D+2, cov / K^(2/D)."""
    X, _ = _data()
    n_components = 1
    factor = n_components ** (-2 / N_FEATURES)
    covariance = np.cov(X, rowvar=False)
    scale = factor * covariance
    if covariance_type == "spherical":
        scale = factor * np.trace(covariance) / N_FEATURES
    prior = {"shrinkage": 0.01, "mean": X.mean(0), "degrees_of_freedom": N_FEATURES + 2.0,
             "scale": scale}  # fmt: skip
    gm = GaussianMixture(1, covariance_type=covariance_type, prior="mclust", reg_covar=1e-3).fit(X)
    means, covariances = _mode(covariance_type, X, np.zeros(len(X), int), 1, prior, 1e-3)
    np.testing.assert_allclose(gm.means_, means, rtol=1e-10)
    np.testing.assert_allclose(gm.covariances_, covariances, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_labelled_map_fit_is_the_dirichlet_and_conjugate_mode(covariance_type):
    """Every row labelled: one M-step gives the Dirichlet mode of the weights and the
    posterior modes of every component (tied: one covariance, K mean priors)."""
    X, labels = _data()
    prior, alpha = _prior(covariance_type), 3.0
    gm = GaussianMixture(
        3, covariance_type=covariance_type, prior=prior, weights_prior=alpha, reg_covar=1e-3,
        semi_supervised=True, max_iter=1,
    ).fit(X, labels)  # fmt: skip
    counts = np.bincount(labels)
    np.testing.assert_allclose(
        gm.weights_, (counts + alpha - 1) / (len(X) + 3 * (alpha - 1)), rtol=1e-12
    )
    means, covariances = _mode(covariance_type, X, labels, 3, prior, 1e-3)
    np.testing.assert_allclose(gm.means_, means, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gm.covariances_, covariances, rtol=1e-10, atol=1e-12)


def _log_prior(covariance_type, weights, means, covariances, prior, alpha):
    """Log density of the priors up to a constant, written from their definitions."""
    kappa, mu0, nu, scale = (
        prior["shrinkage"], prior["mean"], prior["degrees_of_freedom"], prior["scale"]
    )  # fmt: skip
    n_components, n_features = means.shape
    total = (alpha - 1) * np.sum(np.log(weights))
    offsets = means - mu0
    if covariance_type in ("full", "tied"):
        matrices = covariances if covariance_type == "full" else [covariances]
        exponent = nu + n_features + 2 if covariance_type == "full" else (
            nu + n_features + 1 + n_components
        )  # fmt: skip
        for matrix in matrices:
            total += -0.5 * exponent * np.linalg.slogdet(matrix)[1]
            total += -0.5 * np.trace(np.linalg.solve(matrix, scale))
        for k in range(n_components):
            matrix = covariances[k] if covariance_type == "full" else covariances
            total += -0.5 * kappa * offsets[k] @ np.linalg.solve(matrix, offsets[k])
    elif covariance_type == "diag":
        total += np.sum(-0.5 * (nu + 3) * np.log(covariances))
        total += np.sum(-(scale + kappa * offsets**2) / (2 * covariances))
    else:
        total += np.sum(-0.5 * (nu + n_features + 2) * np.log(covariances))
        total += np.sum(-(scale + kappa * np.sum(offsets**2, 1)) / (2 * covariances))
    return total


def _full_covariances(covariance_type, covariances, n_components):
    return jaxem.gaussian(covariance_type).full_covariances(covariances, n_components, N_FEATURES)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_lower_bound_is_the_log_posterior(covariance_type):
    """The monitored value is (log-likelihood + log prior) / n, up to a constant: the
    difference between two starting points matches the reference's."""
    X, _ = _data()
    prior, alpha = _prior(covariance_type), 2.5
    layout = jaxem.gaussian(covariance_type)
    starts = []
    for shift in (0.0, 0.7):
        weights = np.array([0.5, 0.3, 0.2]) if shift == 0 else np.array([0.2, 0.3, 0.5])
        means = np.array([[0.0, 0.0, 0.0], [4.0, 1.0, -2.0], [-3.0, 4.0, 1.0]]) + shift
        covariances = {
            "full": np.stack([np.eye(3) * (1 + shift), np.eye(3) * 2, np.eye(3) * 0.5]),
            "tied": np.eye(3) * (1.2 + shift),
            "diag": np.array([[1.0, 2.0, 0.5], [0.7, 0.9, 1.1], [1.5, 1.0, 1.0 + shift]]),
            "spherical": np.array([1.0 + shift, 2.0, 0.6]),
        }[covariance_type]
        precisions = layout.layout_from_cholesky(
            layout.cholesky_from_precisions(
                np.linalg.inv(covariances) if covariance_type in ("full", "tied")
                else 1 / covariances
            )
        )["precisions"]  # fmt: skip
        gm = GaussianMixture(
            3, covariance_type=covariance_type, prior=prior, weights_prior=alpha, max_iter=1,
            weights_init=weights, means_init=means, precisions_init=precisions, reg_covar=0.0,
        ).fit(X)  # fmt: skip
        full = _full_covariances(covariance_type, covariances, 3)
        log_likelihood = np.sum(
            np.log(
                sum(w * multivariate_normal(m, c).pdf(X) for w, m, c in zip(weights, means, full))
            )
        )
        reference = log_likelihood + _log_prior(
            covariance_type, weights, means, covariances, prior, alpha
        )
        starts.append((gm.lower_bound_ * len(X), reference))
    (first, first_reference), (second, second_reference) = starts
    np.testing.assert_allclose(first - second, first_reference - second_reference, rtol=1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_log_posterior_never_decreases(covariance_type):
    X, _ = _data(seed=1)
    gm = GaussianMixture(
        3, covariance_type=covariance_type, prior="mclust", weights_prior=2.0, reg_covar=0.0,
        n_init=4, init_params="random", tol=1e-10, max_iter=60, random_state=0,
    ).fit(X)  # fmt: skip
    trace = np.asarray(gm.restarts_.trace, np.float64)
    for row, n_iter in zip(trace, gm.restarts_.n_iter):
        steps = np.diff(row[:n_iter])
        assert np.all(steps >= -1e-9 * np.abs(row[:n_iter][1:])), steps.min()
    assert gm.n_iter_ > 3


def test_prior_rescues_collapsing_restarts():
    """Many components on few rows with reg_covar=0: maximum likelihood loses restarts
    to singular covariances; mclust's prior keeps every one finite."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5))
    common = dict(n_components=10, reg_covar=0.0, n_init=16, init_params="random_from_data",
                  random_state=0, max_iter=50)  # fmt: skip
    plain = GaussianMixture(**common)
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        plain.fit(X)
    regularised = GaussianMixture(**common, prior="mclust").fit(X)
    assert np.all(regularised.restarts_.status != jaxem.Status.NON_FINITE)
    assert np.all(np.isfinite(regularised.covariances_))


def test_prior_float32_matches_float64():
    X, _ = _data()
    fits = [
        GaussianMixture(3, prior="mclust", weights_prior=2.0, random_state=0).fit(X.astype(dtype))
        for dtype in (np.float64, np.float32)
    ]
    assert fits[1].means_.dtype == np.float32
    order = [np.argsort(fit.means_[:, 0]) for fit in fits]
    np.testing.assert_allclose(fits[1].means_[order[1]], fits[0].means_[order[0]], rtol=1e-4,
                               atol=1e-4)  # fmt: skip
    np.testing.assert_allclose(fits[1].lower_bound_, fits[0].lower_bound_, rtol=1e-5)


@pytest.mark.parametrize(
    ("prior", "match"),
    [
        ({"shrinkage": -1.0}, "shrinkage must be a non-negative number"),
        ({"degrees_of_freedom": -2.0}, "degrees_of_freedom must be a non-negative number"),
        ({"scale": -np.eye(N_FEATURES)}, "symmetric positive definite"),
        ({"scale": np.eye(2)}, r"must be a \(3, 3\) matrix"),
        ({"mean": np.zeros((2, 3))}, "prior mean must be a vector"),
        ({"strength": 1.0}, "unknown keys"),
    ],
)
def test_bad_priors_are_refused(prior, match):
    X, _ = _data()
    with pytest.raises(ValueError, match=match):
        GaussianMixture(1, prior=prior).fit(X)


def test_bad_variance_prior_and_weights_prior_are_refused():
    X, _ = _data()
    with pytest.raises(ValueError, match="'spherical' variances must be a positive number"):
        GaussianMixture(1, covariance_type="spherical", prior={"scale": -1.0}).fit(X)
    with pytest.raises(InvalidParameterError, match="weights_prior"):
        GaussianMixture(1, weights_prior=-1.0).fit(X)
    with pytest.raises(InvalidParameterError, match="prior"):
        GaussianMixture(1, prior="jeffreys").fit(X)
    with pytest.raises(ValueError, match="weights_prior"):
        jaxem.mixture(jaxem.gaussian(), 2, weights_prior=0.5)


def test_partial_fit_refuses_priors():
    X, _ = _data()
    with pytest.raises(ValueError, match="MAP priors"):
        GaussianMixture(2, prior="mclust").partial_fit(X)

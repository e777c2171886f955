"""Semi-supervised EM: labels ``y`` (-1 unlabelled) and per-row component priors.

References in float64 numpy: the supervised estimate (class frequencies, means and
covariances + reg_covar) and one EM step with row priors written out by hand. All
fits share 120 rows of 3 features.
"""

import jax
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import jaxem
from jaxem import GaussianMixture, PoissonMixture, engine
from jaxem.models.mixture import LabelledRows

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def _data(seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0, 0.0], [2.5, 1.0, -1.0], [-2.0, 2.5, 1.0]])
    labels = np.repeat(np.arange(3), [50, 40, 30])
    mixing = np.array([[1.0, 0.3, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 0.6]])
    return centers[labels] + rng.normal(size=(120, 3)) @ mixing, labels


def _supervised(covariance_type, X, labels, reg_covar):
    """Class frequencies, means and maximum-likelihood covariances + reg_covar."""
    n_components = labels.max() + 1
    weights = np.bincount(labels) / len(labels)
    means = np.array([X[labels == k].mean(0) for k in range(n_components)])
    scatters = [(X[labels == k] - means[k]).T @ (X[labels == k] - means[k]) for k in range(3)]
    counts = np.bincount(labels)
    eye = np.eye(X.shape[1])
    covariances = {
        "full": np.array([s / n + reg_covar * eye for s, n in zip(scatters, counts)]),
        "tied": sum(scatters) / len(X) + reg_covar * eye,
        "diag": np.array([np.diag(s) / n + reg_covar for s, n in zip(scatters, counts)]),
        "spherical": np.array(
            [np.trace(s) / (n * X.shape[1]) + reg_covar for s, n in zip(scatters, counts)]
        ),
    }[covariance_type]
    return weights, means, covariances


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_all_labelled_is_the_supervised_estimate(covariance_type):
    X, labels = _data()
    gm = GaussianMixture(
        3, covariance_type=covariance_type, reg_covar=1e-3, semi_supervised=True, max_iter=1
    )
    predicted = gm.fit_predict(X, labels)
    weights, means, covariances = _supervised(covariance_type, X, labels, 1e-3)
    np.testing.assert_allclose(gm.weights_, weights, rtol=1e-12)
    np.testing.assert_allclose(gm.means_, means, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gm.covariances_, covariances, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(predicted, labels)
    # Run to convergence it stays there: nothing moves after the first step.
    converged = GaussianMixture(
        3, covariance_type=covariance_type, reg_covar=1e-3, semi_supervised=True
    ).fit(X, labels)
    assert converged.converged_ and converged.n_iter_ <= 2
    np.testing.assert_allclose(converged.means_, means, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("covariance_type", ("full", "spherical"))
def test_labelled_rows_keep_their_labels(covariance_type):
    X, labels = _data()
    y = np.full(len(X), -1)
    labelled = np.arange(0, len(X), 4)
    # Some labels deliberately against the data: they must still hold.
    y[labelled] = np.roll(labels[labelled], 1)
    gm = GaussianMixture(
        3, covariance_type=covariance_type, semi_supervised=True, n_init=3, random_state=0
    )
    predicted = gm.fit_predict(X, y)
    np.testing.assert_array_equal(predicted[labelled], y[labelled])
    # The responsibilities of the final E-step: exactly one-hot on labelled rows.
    model = jaxem.mixture(gm._family(), 3)
    params = gm._fitted_params(np.zeros(3), np.float64)
    log_prior = np.where(np.arange(3) == y[:, None], 0.0, -np.inf)
    log_prior[y < 0] = 0.0
    with jax.enable_x64(True):
        proba = engine.evaluate(model, params, LabelledRows(X, log_prior), "predict_proba")
    np.testing.assert_array_equal(proba[labelled], np.eye(3)[y[labelled]])


def test_component_prior_is_one_em_step_with_row_priors():
    """From given parameters, one step with soft row priors q: responsibilities
    ∝ q π p, then the weighted M-step; the lower bound is Σ log Σ q π p / n."""
    X, labels = _data()
    rng = np.random.default_rng(1)
    q = rng.dirichlet(np.ones(3), size=len(X))
    weights = np.array([0.5, 0.3, 0.2])
    means = np.array([[0.0, 0.0, 0.0], [2.0, 1.0, -1.0], [-2.0, 2.0, 1.0]])
    covariances = np.stack([np.eye(3), np.eye(3) * 1.5, np.eye(3) * 0.8])
    gm = GaussianMixture(
        3, reg_covar=0.0, max_iter=1, weights_init=weights, means_init=means,
        precisions_init=np.linalg.inv(covariances),
    ).fit(X, component_prior=q)  # fmt: skip
    joint = q * np.stack(
        [w * multivariate_normal(m, c).pdf(X) for w, m, c in zip(weights, means, covariances)], 1
    )
    resp = joint / joint.sum(1, keepdims=True)
    counts = resp.sum(0)
    expected_means = resp.T @ X / counts[:, None]
    expected_covariances = np.array(
        [(resp[:, k, None] * (X - expected_means[k])).T @ (X - expected_means[k]) / counts[k]
         for k in range(3)]
    )  # fmt: skip
    np.testing.assert_allclose(gm.weights_, counts / len(X), rtol=1e-10)
    np.testing.assert_allclose(gm.means_, expected_means, rtol=1e-9)
    np.testing.assert_allclose(gm.covariances_, expected_covariances, rtol=1e-9)
    np.testing.assert_allclose(gm.lower_bound_, np.mean(np.log(joint.sum(1))), rtol=1e-10)


def test_y_is_ignored_unless_semi_supervised():
    """scikit-learn's fit(X, y) is unsupervised: plain fits stay bit for bit."""
    X, labels = _data()
    plain = GaussianMixture(3, random_state=0).fit(X)
    with_y = GaussianMixture(3, random_state=0).fit(X, labels)
    np.testing.assert_array_equal(plain.means_, with_y.means_)
    assert plain.lower_bound_ == with_y.lower_bound_
    unlabelled = GaussianMixture(3, random_state=0, semi_supervised=True).fit(X, None)
    np.testing.assert_array_equal(plain.means_, unlabelled.means_)


def test_few_labels_help_and_float32_follows():
    """5 % of the rows labelled: the fit recovers the classes at least as well as
    without labels, in either precision."""
    from sklearn.metrics import adjusted_rand_score

    X, labels = _data(seed=3)
    y = np.full(len(X), -1)
    y[::20] = labels[::20]
    scores = {}
    for dtype in (np.float64, np.float32):
        gm = GaussianMixture(3, semi_supervised=True, random_state=0)
        predicted = gm.fit_predict(X.astype(dtype), y)
        assert gm.means_.dtype == dtype
        scores[dtype] = adjusted_rand_score(labels, predicted)
    assert scores[np.float64] > 0.7
    assert abs(scores[np.float32] - scores[np.float64]) < 0.05


def test_other_mixtures_take_component_priors():
    """The shared base: a Poisson mixture keeps labelled rows' components too."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.poisson(2, (40, 2)), rng.poisson(9, (40, 2))]).astype(float)
    q = np.full((80, 2), 0.5)
    q[:5] = [0.0, 1.0]  # rows of the low cluster put in component 1
    q[40:45] = [1.0, 0.0]
    predicted = PoissonMixture(2, random_state=0).fit_predict(X, component_prior=q)
    np.testing.assert_array_equal(predicted[:5], 1)
    np.testing.assert_array_equal(predicted[40:45], 0)
    assert np.mean(predicted[:40] == 1) > 0.9


@pytest.mark.parametrize(
    ("y", "prior", "match"),
    [
        (np.zeros(119, int), None, r"one label per row of X \(120\)"),
        (np.full(120, 3), None, r"labels outside \[-1, 3\)"),
        (np.full(120, -2), None, r"labels outside \[-1, 3\)"),
        (np.full(120, 0.5), None, "integer labels"),
        (None, np.full((120, 2), 0.5), r"shape \(n_samples, n_components\) = \(120, 3\)"),
        (None, np.full((120, 3), 0.5), "row 0 sums to 1.5"),
        (None, np.tile([-0.5, 1.0, 0.5], (120, 1)), "non-negative"),
        (np.zeros(120, int), np.full((120, 3), 1 / 3), "not both"),
    ],
)
def test_bad_labels_are_refused(y, prior, match):
    X, _ = _data()
    gm = GaussianMixture(3, semi_supervised=True)
    with pytest.raises(ValueError, match=match):
        gm.fit(X, y, component_prior=prior)


def test_other_mixtures_take_labels_and_weights_prior():
    """Every mixture estimator has semi_supervised and weights_prior: all rows
    labelled with α = 3, the weights are the Dirichlet mode and the rates the class
    means."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.poisson(2, (50, 2)), rng.poisson(9, (30, 2))]).astype(float)
    y = np.repeat([0, 1], [50, 30])
    pm = PoissonMixture(2, semi_supervised=True, weights_prior=3.0, max_iter=1).fit(X, y)
    np.testing.assert_allclose(pm.weights_, np.array([52.0, 32.0]) / 84.0, rtol=1e-12)
    np.testing.assert_allclose(pm.rates_, [X[:50].mean(0), X[50:].mean(0)], rtol=1e-6)

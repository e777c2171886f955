"""StudentTMixture: robustness to outliers, the estimator interface, bad input.

Its EM is checked against a naive numpy EM in tests/families/test_student_t.py; here
the estimator around it.
"""

import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from jaxem import GaussianMixture, StudentTMixture

CENTERS = np.array([[-4.0, 0.0], [4.0, 0.0], [0.0, 6.0]])


def _with_outliers(seed=0, n_rows=300, share=0.05):
    rng = np.random.default_rng(seed)
    x = CENTERS[np.arange(n_rows) % 3] + rng.normal(size=(n_rows, 2))
    n_outliers = int(share * n_rows)
    x[rng.choice(n_rows, n_outliers, replace=False)] = rng.uniform(-60, 60, (n_outliers, 2))
    return x


def _mean_error(means):
    """Largest distance of a true centre to the nearest fitted mean."""
    return np.max(np.min(np.linalg.norm(CENTERS[:, None] - means[None], axis=-1), axis=1))


def test_outliers_move_the_gaussian_means_not_the_t_means():
    """5 % gross outliers: the t mixture's means stay within the sampling error of the
    inliers' means; the Gaussian mixture's do not. Both start from random rows (k-means
    seeds land on outliers; see the estimator's Notes)."""
    X = _with_outliers()
    options = dict(n_init=5, init_params="random_from_data", random_state=0)
    t = StudentTMixture(3, **options).fit(X)
    gaussian = GaussianMixture(3, **options).fit(X)
    assert _mean_error(t.means_) < 0.3
    assert _mean_error(gaussian.means_) > 2.0


def test_attributes_dtypes_and_density(x64):
    X = _with_outliers(n_rows=150)
    fitted = StudentTMixture(3, covariance_type="full", random_state=0).fit(X)
    for name in ("weights_", "means_", "covariances_", "precisions_", "degrees_of_freedom_"):
        assert getattr(fitted, name).dtype == np.float64, name
    np.testing.assert_allclose(
        fitted.covariances_ @ fitted.precisions_, np.broadcast_to(np.eye(2), (3, 2, 2)), atol=1e-9
    )
    # score_samples is the mixture of scipy's multivariate t densities.
    densities = np.stack(
        [
            stats.multivariate_t.pdf(X, m, c, df=d)
            for m, c, d in zip(fitted.means_, fitted.covariances_, fitted.degrees_of_freedom_)
        ],
        1,
    )
    np.testing.assert_allclose(fitted.score_samples(X), np.log(densities @ fitted.weights_))
    float32 = StudentTMixture(3, random_state=0).fit(X.astype(np.float32))
    assert float32.means_.dtype == np.float32
    assert float32.score_samples(X.astype(np.float32)).dtype == np.float32


def test_fixed_dof_bic_and_sample():
    X = _with_outliers(n_rows=150)
    fixed = StudentTMixture(3, covariance_type="diag", fix_dof=True, dof=4.0, random_state=0)
    fixed.fit(X)
    np.testing.assert_array_equal(fixed.degrees_of_freedom_, 4.0)
    free = StudentTMixture(3, covariance_type="diag", random_state=0).fit(X)
    # diag: 3 * 2 means, 3 * 2 variances, 2 weights; and 3 degrees of freedom when free.
    n_rows = X.shape[0]
    for estimator, n_parameters in ((fixed, 14), (free, 17)):
        expected = -2 * estimator.score(X) * n_rows + n_parameters * np.log(n_rows)
        np.testing.assert_allclose(estimator.bic(X), expected)
    sample, labels = free.sample(40)
    assert sample.shape == (40, 2) and labels.shape == (40,)
    assert np.all(np.isfinite(sample))


def test_warm_start_continues():
    X = _with_outliers(n_rows=150)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        short = StudentTMixture(3, max_iter=3, tol=0.0, random_state=0).fit(X)
        whole = StudentTMixture(3, max_iter=6, tol=0.0, random_state=0).fit(X)
        short.set_params(warm_start=True).fit(X)
    np.testing.assert_allclose(short.means_, whole.means_, rtol=1e-5)
    np.testing.assert_allclose(short.degrees_of_freedom_, whole.degrees_of_freedom_, rtol=1e-5)


def test_bad_input():
    X = _with_outliers(n_rows=60)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        StudentTMixture(2).predict(X)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        StudentTMixture(2).fit(np.where(np.arange(60)[:, None] == 3, np.nan, X))
    fitted = StudentTMixture(2, max_iter=3, random_state=0).fit(X)
    with pytest.raises(ValueError, match="X has 3 features, but StudentTMixture is expecting 2"):
        fitted.predict(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="0 < dof_min <= dof <= dof_max"):
        StudentTMixture(2, dof=300.0).fit(X)
    with pytest.raises(
        ValueError, match="'n_components' parameter of StudentTMixture must be an int in the range"
    ):
        StudentTMixture(0).fit(X)


@parametrize_with_checks([StudentTMixture(init_params="random_from_data")])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)

"""``GaussianMixture(covariance_type="lowrank", covariance_rank=q)``: attributes against
float64 numpy/scipy references, BIC's parameter count, persistence, and bad input."""

import numpy as np
import pytest
from scipy import stats
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.decomposition import FactorAnalysis

import jaxem

K, D, Q = 3, 6, 2


@pytest.fixture(scope="module")
def data():
    x, _ = make_blobs(n_samples=300, n_features=D, centers=K, random_state=0)
    rng = np.random.default_rng(0)
    return x + rng.normal(size=(300, 1)) * np.linspace(-1, 1, D)


def _fit(x, **options):
    options = {"covariance_type": "lowrank", "covariance_rank": Q, "random_state": 0, **options}
    return jaxem.GaussianMixture(K, **options).fit(x)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_attributes_are_consistent_and_in_the_input_precision(data, dtype):
    x = data.astype(dtype)
    gm = _fit(x)
    rtol = 1e-10 if dtype == np.float64 else 1e-4
    for name in ("weights_", "means_", "loadings_", "noise_variances_", "covariances_"):
        assert getattr(gm, name).dtype == dtype, name
    assert gm.loadings_.shape == (K, D, Q) and gm.noise_variances_.shape == (K, D)
    w, psi = gm.loadings_.astype(np.float64), gm.noise_variances_.astype(np.float64)
    covariances = w @ np.swapaxes(w, 1, 2) + np.stack([np.diag(p) for p in psi])
    np.testing.assert_allclose(gm.covariances_, covariances, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(
        gm.precisions_ @ covariances, np.broadcast_to(np.eye(D), (K, D, D)), atol=100 * rtol
    )
    u = gm.precisions_cholesky_.astype(np.float64)
    np.testing.assert_allclose(u @ np.swapaxes(u, 1, 2), gm.precisions_, rtol=100 * rtol)
    # score_samples: log Σ_k π_k N(x | μ_k, W Wᵀ + Ψ) with scipy's densities.
    log_joint = np.stack(
        [
            stats.multivariate_normal(gm.means_[k].astype(np.float64), covariances[k]).logpdf(data)
            + np.log(gm.weights_[k].astype(np.float64))
            for k in range(K)
        ],
        1,
    )
    expected = np.logaddexp.reduce(log_joint, axis=1)
    np.testing.assert_allclose(gm.score_samples(x), expected, rtol=rtol)
    np.testing.assert_array_equal(gm.predict(x), np.argmax(log_joint, axis=1))
    n_parameters = K * (D + D * Q - Q * (Q - 1) // 2 + D) + K - 1
    np.testing.assert_allclose(
        gm.bic(x), -2 * expected.sum() + n_parameters * np.log(x.shape[0]), rtol=rtol
    )
    samples, labels = gm.sample(50)
    assert samples.shape == (50, D) and samples.dtype == dtype and labels.shape == (50,)


def test_one_component_matches_scikit_learn_factor_analysis():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(500, 1)) @ (2 * rng.normal(size=(1, 5)))
    x = x + rng.normal(size=(500, 5)) * rng.uniform(0.5, 1.0, 5) + 2.0
    gm = jaxem.GaussianMixture(
        1, covariance_type="lowrank", covariance_rank=1, reg_covar=0, tol=1e-13, max_iter=5000
    ).fit(x)
    reference = FactorAnalysis(1, tol=1e-13, max_iter=100000).fit(x)
    np.testing.assert_allclose(gm.score(x), reference.score(x), rtol=1e-10)
    np.testing.assert_allclose(gm.covariances_[0], reference.get_covariance(), rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_save_load_clone_and_warm_start(data, tmp_path):
    gm = _fit(data)
    path = tmp_path / "lowrank.npz"
    gm.save(path)
    loaded = jaxem.GaussianMixture.load(path)
    np.testing.assert_array_equal(loaded.loadings_, gm.loadings_)
    np.testing.assert_array_equal(loaded.score_samples(data), gm.score_samples(data))
    assert clone(gm).get_params() == gm.get_params()
    warm = clone(gm).set_params(warm_start=True, max_iter=5)
    warm.fit(data)
    first = warm.lower_bound_
    warm.fit(data)
    assert warm.lower_bound_ >= first - 1e-12


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_squarem_runs_and_ends_no_worse(data):
    plain = _fit(data, tol=1e-8, max_iter=500)
    fast = _fit(data, tol=1e-8, max_iter=500, accelerate="squarem")
    assert fast.lower_bound_ >= plain.lower_bound_ - 1e-4


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"covariance_rank": None}, ValueError, "needs covariance_rank"),
        ({"covariance_rank": 0}, ValueError, "covariance_rank"),
        ({"covariance_rank": 1.5}, ValueError, "covariance_rank"),
        ({"covariance_rank": D}, ValueError, "must be < n_features=6"),
        ({"covariance_rank": D + 3}, ValueError, "must be < n_features=6"),
        ({"covariance_type": "full"}, ValueError, "only for covariance_type='lowrank'"),
        ({"means_init": np.zeros((K, D))}, ValueError, "not available with"),
        ({"prior": "mclust"}, ValueError, "not available with"),
        ({"missing": "em"}, ValueError, "not available with"),
    ],
)
def test_bad_input_is_refused(data, options, error, match):
    with pytest.raises(error, match=match):
        _fit(data, **options)


def test_partial_fit_is_refused(data):
    gm = jaxem.GaussianMixture(K, covariance_type="lowrank", covariance_rank=Q)
    with pytest.raises(ValueError, match="partial_fit"):
        gm.partial_fit(data)

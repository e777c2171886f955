"""``jaxem.FactorAnalysis`` and ``jaxem.ProbabilisticPCA``: against scikit-learn and
the closed form, precision, bad input, and scikit-learn's estimator checks.

scikit-learn's own ``test_factor_analysis.py`` runs against ``jaxem.FactorAnalysis``
in tests/test_dropin.py.
"""

import warnings

import jax
import numpy as np
import pytest
from sklearn.decomposition import FactorAnalysis as SklearnFactorAnalysis
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

import jaxem
from jaxem import FactorAnalysis, ProbabilisticPCA
from jaxem.estimators.factor_analysis import orthomax


def _data(n_rows=200, n_features=5, seed=2):
    rng = np.random.default_rng(seed)
    loadings = rng.normal(scale=2.0, size=(2, n_features))
    noise = rng.uniform(0.5, 1.5, size=n_features)
    x = rng.normal(size=(n_rows, 2)) @ loadings + rng.normal(size=(n_rows, n_features)) * noise
    return x + 5.0


def test_matches_scikit_learn_and_its_loglike_history():
    x = _data()
    fa = FactorAnalysis(2, tol=1e-8, max_iter=5000).fit(x)
    peer = SklearnFactorAnalysis(2, tol=1e-8, max_iter=5000, svd_method="lapack").fit(x)
    np.testing.assert_allclose(fa.score(x), peer.score(x), rtol=1e-9)
    covariance = peer.get_covariance()
    np.testing.assert_allclose(
        fa.get_covariance(), covariance, rtol=1e-5, atol=1e-5 * np.abs(covariance).max()
    )
    np.testing.assert_allclose(fa.mean_, x.mean(0), rtol=1e-12)
    # scikit-learn's invariants: the last loglike_ is the fitted model's summed score,
    # the history rises, the precision inverts the covariance.
    assert len(fa.loglike_) == fa.n_iter_
    np.testing.assert_allclose(fa.loglike_[-1], fa.score_samples(x).sum(), rtol=1e-12)
    assert np.all(np.diff(fa.loglike_) >= 0)
    np.testing.assert_allclose(fa.get_covariance() @ fa.get_precision(), np.eye(5), atol=1e-10)
    # transform is E[z|x]: the D x D formula.
    w = fa.components_
    expected = (x - fa.mean_) @ np.linalg.solve(fa.get_covariance(), w.T)
    np.testing.assert_allclose(fa.transform(x), expected, rtol=1e-8, atol=1e-10)


def test_n_init_restarts_keep_the_best():
    x = _data()
    fa = FactorAnalysis(2, n_init=3, tol=1e-6, random_state=1).fit(x)
    assert fa.restarts_.log_likelihood.shape == (3,)
    assert fa.best_restart_ == int(np.nanargmax(fa.restarts_.log_likelihood))


@pytest.mark.parametrize("rotation", ["varimax", "quartimax"])
def test_rotation_keeps_the_covariance_and_maximises_the_criterion(rotation):
    x = _data()
    plain = FactorAnalysis(2, tol=1e-6).fit(x)
    rotated = FactorAnalysis(2, tol=1e-6, rotation=rotation).fit(x)
    np.testing.assert_allclose(rotated.get_covariance(), plain.get_covariance(), rtol=1e-10)
    # Against scikit-learn's own rotation of the same loadings (signs aside).
    from sklearn.decomposition._factor_analysis import _ortho_rotation

    expected = _ortho_rotation(plain.components_.T, method=rotation)
    np.testing.assert_allclose(np.abs(rotated.components_), np.abs(expected), atol=1e-6)
    np.testing.assert_allclose(np.abs(orthomax(plain.components_, rotation)), np.abs(expected))


def test_ppca_noise_is_the_mean_discarded_eigenvalue():
    x = _data()
    ppca = ProbabilisticPCA(2, tol=1e-10, max_iter=5000).fit(x)
    eigenvalues = np.linalg.eigvalsh(np.cov(x, rowvar=False, bias=True))
    assert isinstance(ppca.noise_variance_, np.float64)
    np.testing.assert_allclose(ppca.noise_variance_, eigenvalues[:3].mean(), rtol=1e-6)
    np.testing.assert_allclose(ppca.loglike_[-1], ppca.score_samples(x).sum(), rtol=1e-12)
    assert ppca.transform(x).shape == (200, 2)
    np.testing.assert_allclose(ppca.get_covariance() @ ppca.get_precision(), np.eye(5), atol=1e-9)


@pytest.mark.parametrize("global_x64", [False, True])
def test_precision_follows_the_input(global_x64):
    x = _data()
    with jax.enable_x64(global_x64):
        for dtype in (np.float64, np.float32):
            for estimator in (FactorAnalysis(2, max_iter=20), ProbabilisticPCA(2, max_iter=20)):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    estimator.fit(x.astype(dtype))
                assert estimator.components_.dtype == dtype
                assert estimator.mean_.dtype == dtype
                assert estimator.transform(x).dtype == dtype
                assert estimator.score_samples(x).dtype == dtype
                assert estimator.get_covariance().dtype == dtype
            assert jax.config.read("jax_enable_x64") is global_x64


def test_float32_close_to_float64():
    x = _data()
    single = FactorAnalysis(2, tol=1e-4).fit(x.astype(np.float32))
    double = FactorAnalysis(2, tol=1e-4).fit(x)
    np.testing.assert_allclose(single.score(x), double.score(x), rtol=1e-5)


def test_not_converged_warns():
    with pytest.warns(ConvergenceWarning, match="FactorAnalysis did not converge"):
        FactorAnalysis(2, max_iter=1).fit(_data())


@pytest.mark.parametrize(
    "estimator, message",
    [
        (FactorAnalysis(6), "n_components=6 must be <= n_features=5 for factor analysis"),
        (ProbabilisticPCA(5), "n_components=5 must be < n_features=5 for probabilistic PCA"),
        (FactorAnalysis(4), "n_components=4 must be <= n_samples=3: more latent dimensions"),
        (
            FactorAnalysis(2, noise_variance_init=np.ones(3)),
            "noise_variance_init dimension does not with number of features : 3 != 5",
        ),
        (
            FactorAnalysis(2, noise_variance_init=[1, 1, 0, 1, 1]),
            "noise_variance_init must hold finite, positive variances",
        ),
    ],
)
def test_bad_parameters_raise(estimator, message):
    x = _data(n_rows=3) if "n_samples" in message else _data()
    with pytest.raises(ValueError, match=message):
        estimator.fit(x)


@pytest.mark.parametrize("cls", [FactorAnalysis, ProbabilisticPCA])
def test_bad_data_raises(cls):
    x = _data()
    with pytest.raises(NotFittedError):
        cls(2).transform(x)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        cls(2).fit(bad)
    fitted = cls(2, max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted.fit(x)
    with pytest.raises(ValueError, match="X has 3 features, but .* is expecting 5 features"):
        fitted.transform(x[:, :3])
    with pytest.raises(ValueError, match="Input X contains NaN"):
        fitted.score_samples(bad)


def test_noise_variance_init_is_the_start():
    x = _data()
    fa = FactorAnalysis(2, max_iter=1, noise_variance_init=np.full(5, 3.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fa.fit(x)
    start = fa.restarts_.trace[0, 0]
    other = FactorAnalysis(2, max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        other.fit(x)
    assert start != other.restarts_.trace[0, 0]


@parametrize_with_checks([FactorAnalysis(max_iter=50), ProbabilisticPCA(max_iter=50)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_functional_model_is_exported():
    assert jaxem.factor_analysis(2) == jaxem.LatentLinear(2, "diagonal")
    assert jaxem.ppca(2) == jaxem.LatentLinear(2, "isotropic")

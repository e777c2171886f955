"""BayesianGaussianMixture against scikit-learn's from the same initial
responsibilities (float64), its lower bound, float32 and bad input."""

import jax
import numpy as np
import pytest
from sklearn.mixture import BayesianGaussianMixture as SklearnBGM
from sklearn.utils.estimator_checks import parametrize_with_checks

import jaxem
from jaxem.models.mixture import MixtureStats
from tests.estimators.test_persistence import assert_identical

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")
N_COMPONENTS = 3


def _data(dtype=np.float64):
    rng = np.random.RandomState(0)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, 1.0, -2.0], [-3.0, 5.0, 1.0]])
    scales = np.array([0.5, 1.0, 1.5])
    X = np.concatenate([c + s * rng.randn(30, 3) for c, s in zip(centres, scales)])
    return X.astype(dtype)


def _responsibilities(n_samples):
    rng = np.random.RandomState(1)
    resp = rng.uniform(size=(n_samples, N_COMPONENTS))
    return resp / resp.sum(axis=1, keepdims=True)


class _FromResponsibilities(SklearnBGM):
    """scikit-learn's class started from given responsibilities."""

    def _initialize_parameters(self, X, random_state, xp=None):
        self._initialize(X, _responsibilities(X.shape[0]))


def _jaxem_start(estimator, X, resp):
    """jaxem's model for ``estimator``'s priors and its initial posterior from ``resp``
    (the same M-step scikit-learn's ``_initialize`` runs)."""
    estimator._fit_support(X)
    estimator.n_features_in_ = X.shape[1]
    model = estimator._build_model(N_COMPONENTS, N_COMPONENTS)
    hyper = model.hyper(X.dtype)
    stats = MixtureStats(resp.sum(0), model.family.statistics(None, X, resp))
    return model, model.m_step(stats, None, hyper)


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_matches_scikit_learn_from_the_same_start(x64, covariance_type, prior_type):
    X = _data()
    options = dict(
        n_components=N_COMPONENTS,
        covariance_type=covariance_type,
        weight_concentration_prior_type=prior_type,
        max_iter=30,
        tol=0.0,
    )
    reference = _FromResponsibilities(**options).fit(X)
    estimator = jaxem.BayesianGaussianMixture(**options)
    model, start = _jaxem_start(estimator, X, _responsibilities(X.shape[0]))
    result = jaxem.fit(model, X, key=jax.random.key(0), init_params=start, max_iter=30, tol=0.0)
    estimator._set_fitted(result.params, np.zeros(3), np.float64)
    assert result.n_iter == reference.n_iter_ == 30
    for name in (
        "weights_",
        "means_",
        "covariances_",
        "precisions_cholesky_",
        "mean_precision_",
        "degrees_of_freedom_",
    ):
        np.testing.assert_allclose(
            getattr(estimator, name),
            getattr(reference, name),
            rtol=1e-8,
            atol=1e-10,
            err_msg=name,
        )
    np.testing.assert_allclose(
        np.asarray(estimator.weight_concentration_),
        np.asarray(reference.weight_concentration_),
        rtol=1e-8,
    )
    # The bound is scikit-learn's total over the rows.
    bound = float(result.log_likelihood)
    np.testing.assert_allclose(bound, float(np.squeeze(reference.lower_bound_)), rtol=1e-8)
    # Same expected log-probabilities afterwards: score_samples and predict_proba.
    estimator._fit_offset = np.zeros(3)
    np.testing.assert_allclose(estimator.score_samples(X), reference.score_samples(X), rtol=1e-8)
    np.testing.assert_allclose(
        estimator.predict_proba(X), reference.predict_proba(X), rtol=1e-7, atol=1e-10
    )


@pytest.mark.parametrize("covariance_type", ("full", "tied"))
def test_padded_components_change_nothing(x64, covariance_type):
    """The estimator pads components to a bucket (8 here): masked components must
    leave the stick-breaking weights, the tied pool and the bound unchanged."""
    X = _data()
    options = dict(n_components=N_COMPONENTS, covariance_type=covariance_type, max_iter=30, tol=0.0)
    reference = _FromResponsibilities(**options).fit(X)
    estimator = jaxem.BayesianGaussianMixture(**options)
    model, start = _jaxem_start(estimator, X, _responsibilities(X.shape[0]))
    padded = estimator._build_model(N_COMPONENTS, 8)
    assert padded.has_padding()
    result = jaxem.fit(
        padded, X, key=jax.random.key(0), init_params=padded.pad(start), max_iter=30, tol=0.0
    )
    estimator._set_fitted(result.params, np.zeros(3), np.float64)
    for name in ("weights_", "means_", "covariances_", "degrees_of_freedom_"):
        np.testing.assert_allclose(
            getattr(estimator, name), getattr(reference, name), rtol=1e-8, err_msg=name
        )
    bound = float(np.squeeze(reference.lower_bound_))
    np.testing.assert_allclose(float(result.log_likelihood), bound, rtol=1e-8)


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
def test_lower_bound_never_decreases(prior_type):
    X = _data()
    estimator = jaxem.BayesianGaussianMixture(
        n_components=4,
        weight_concentration_prior_type=prior_type,
        n_init=3,
        max_iter=60,
        tol=1e-9,
        init_params="random",
        random_state=0,
    )
    estimator.fit(X)
    trace = np.asarray(estimator.restarts_.trace)
    for row, n_iter in zip(trace, estimator.restarts_.n_iter):
        values = row[: int(n_iter)]
        assert len(values) > 5
        assert np.all(np.diff(values) >= -1e-12 * np.abs(values[1:])), values
    # lower_bound_ and lower_bounds_ are totals over the rows, as scikit-learn's.
    assert estimator.lower_bound_ == pytest.approx(estimator.lower_bounds_[-1], rel=1e-12)
    assert estimator.lower_bound_ == float(
        estimator.restarts_.log_likelihood[estimator.best_restart_]
    )


@pytest.mark.parametrize("covariance_type", ("full", "spherical"))
def test_float32_is_accurate_to_float32(covariance_type):
    X = _data()
    options = dict(n_components=N_COMPONENTS, covariance_type=covariance_type, random_state=0)
    single = jaxem.BayesianGaussianMixture(**options).fit(X.astype(np.float32))
    double = jaxem.BayesianGaussianMixture(**options).fit(X)
    assert single.means_.dtype == np.float32 and single.covariances_.dtype == np.float32
    assert double.means_.dtype == np.float64
    order = np.argsort(single.means_[:, 0]), np.argsort(double.means_[:, 0])
    np.testing.assert_allclose(single.weights_[order[0]], double.weights_[order[1]], rtol=1e-4)
    np.testing.assert_allclose(
        single.means_[order[0]], double.means_[order[1]], rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(
        single.covariances_[order[0]], double.covariances_[order[1]], rtol=1e-4, atol=1e-5
    )
    assert single.lower_bound_ == pytest.approx(double.lower_bound_, rel=1e-5)
    assert single.score(X.astype(np.float32)) == pytest.approx(double.score(X), rel=1e-5)


def test_a_collapsed_restart_is_discarded(x64):
    """A restart that starts from a NaN posterior is marked non-finite and never kept."""
    X = _data()
    estimator = jaxem.BayesianGaussianMixture(n_components=N_COMPONENTS, max_iter=20)
    model, start = _jaxem_start(estimator, X, _responsibilities(X.shape[0]))
    broken = start._replace(
        components=start.components._replace(means=start.components.means * np.nan)
    )
    both = jax.tree.map(lambda a, b: np.stack([np.asarray(a), np.asarray(b)]), broken, start)
    result = jaxem.fit(model, X, key=jax.random.key(0), n_restarts=2, init_params=both, max_iter=20)
    assert int(result.restarts.status[0]) == jaxem.NON_FINITE
    assert int(result.best_restart) == 1
    assert np.isfinite(float(result.log_likelihood))


def test_n_init_keeps_the_best_restart():
    X = _data()
    options = dict(n_components=N_COMPONENTS, init_params="random", max_iter=50, random_state=3)
    many = jaxem.BayesianGaussianMixture(n_init=4, **options).fit(X)
    bounds = np.asarray(many.restarts_.log_likelihood)
    assert int(many.best_restart_) == int(np.nanargmax(bounds))
    one = jaxem.BayesianGaussianMixture(n_init=1, **options).fit(X)
    assert many.lower_bound_ >= one.lower_bound_ - 1e-9 * abs(one.lower_bound_)


def test_attributes_and_methods():
    X = _data()
    estimator = jaxem.BayesianGaussianMixture(
        n_components=N_COMPONENTS, covariance_type="tied", random_state=0
    )
    labels = estimator.fit_predict(X)
    np.testing.assert_array_equal(labels, estimator.predict(X))
    assert np.shape(estimator.degrees_of_freedom_) == ()  # tied: one Wishart
    assert estimator.mean_precision_.shape == (N_COMPONENTS,)
    assert estimator.weight_concentration_[0].shape == (N_COMPONENTS,)
    np.testing.assert_allclose(estimator.mean_prior_, X.mean(0))
    np.testing.assert_allclose(estimator.covariance_prior_, np.cov(X.T))
    assert estimator.weight_concentration_prior_ == pytest.approx(1 / N_COMPONENTS)
    assert estimator.degrees_of_freedom_prior_ == 3 and estimator.mean_precision_prior_ == 1.0
    np.testing.assert_allclose(estimator.weights_.sum(), 1.0)
    samples, components = estimator.sample(50)
    assert samples.shape == (50, 3) and components.shape == (50,)
    np.testing.assert_allclose(estimator.score(X), estimator.score_samples(X).mean())


def test_data_far_from_the_origin_is_centred_with_its_priors():
    """An offset of 1e6 moves the means and the prior mean and changes nothing else."""
    X = _data()
    options = dict(n_components=N_COMPONENTS, covariance_type="diag", random_state=0)
    near = jaxem.BayesianGaussianMixture(**options).fit(X)
    far = jaxem.BayesianGaussianMixture(**options).fit(X + 1e6)
    np.testing.assert_allclose(far.means_ - 1e6, near.means_, atol=1e-6)
    np.testing.assert_allclose(far.covariances_, near.covariances_, rtol=1e-6)
    assert far.lower_bound_ == pytest.approx(near.lower_bound_, rel=1e-8)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(weight_concentration_prior=-1.0), "weight_concentration_prior"),
        (dict(mean_precision_prior=0.0), "mean_precision_prior"),
        (dict(weight_concentration_prior_type="uniform"), "weight_concentration_prior_type"),
        (
            dict(degrees_of_freedom_prior=1.5),
            r"The parameter 'degrees_of_freedom_prior' should be greater than 2, but got 1.500",
        ),
        (
            dict(mean_prior=np.zeros(2)),
            r"The parameter 'means' should have the shape of \(3,\), but got \(2,\)",
        ),
        (
            dict(covariance_prior=np.eye(2)),
            r"The parameter 'full covariance_prior' should have the shape of \(3, 3\)",
        ),
        (
            dict(covariance_prior=-np.eye(3)),
            r"'full precision' should be symmetric, positive-definite",
        ),
        (
            dict(covariance_type="diag", covariance_prior=np.array([1.0, -1.0, 1.0])),
            r"'diag precision' should be positive",
        ),
        (
            dict(covariance_type="tied", covariance_prior=np.ones((3, 2))),
            r"The parameter 'tied covariance_prior' should have the shape of \(3, 3\)",
        ),
        (dict(covariance_type="spherical", covariance_prior=-1.0), "covariance_prior"),
    ],
)
def test_bad_priors_are_refused_with_scikit_learns_messages(options, message):
    with pytest.raises(ValueError, match=message):
        jaxem.BayesianGaussianMixture(n_components=2, **options).fit(_data())


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
def test_tied_fit_saves_and_loads(prior_type, tmp_path):
    """A scalar degrees_of_freedom_ (tied) and the Beta pair (Dirichlet process)."""
    X = _data(np.float32)
    estimator = jaxem.BayesianGaussianMixture(
        n_components=2,
        covariance_type="tied",
        weight_concentration_prior_type=prior_type,
        random_state=0,
    ).fit(X)
    estimator.save(tmp_path / "bgm.npz")
    loaded = jaxem.load(tmp_path / "bgm.npz")
    assert type(loaded) is jaxem.BayesianGaussianMixture
    for name, value in vars(estimator).items():
        assert_identical(getattr(loaded, name), value, name)
    np.testing.assert_array_equal(loaded.score_samples(X), estimator.score_samples(X))


@parametrize_with_checks([jaxem.BayesianGaussianMixture()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)

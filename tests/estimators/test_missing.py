"""Missing data inside EM: NaN entries missing at random in the Gaussian family.

One EM iteration against a naive per-row numpy implementation of the conditional
Gaussian formulas (float64), the complete-data fit recovered when nothing is missing,
the observed-data log-likelihood never decreasing, float32 against float64, impute,
and the bad-input messages.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

import jaxem
from jaxem import engine

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
N_ROWS, N_FEATURES, N_COMPONENTS = 240, 4, 3


def _data(seed=0, share=0.3):
    """Three correlated blobs with ``share`` of the entries missing at random; one row
    keeps only one observed entry and one row has nothing missing."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(N_COMPONENTS, N_FEATURES))
    mixing = rng.normal(size=(N_COMPONENTS, N_FEATURES, N_FEATURES)) * 0.6
    labels = rng.integers(N_COMPONENTS, size=N_ROWS)
    noise = rng.normal(size=(N_ROWS, N_FEATURES))
    complete = centres[labels] + np.einsum("nd,nde->ne", noise, mixing[labels] + np.eye(N_FEATURES))
    x = complete.copy()
    x[rng.uniform(size=x.shape) < share] = np.nan
    empty = np.isnan(x).all(axis=1)
    x[empty, 0] = complete[empty, 0]  # every row keeps an observed entry
    x[1] = np.nan
    x[1, 2] = complete[1, 2]
    x[2] = complete[2]
    return x, complete


def _full_covariances(covariance_type, layout):
    if covariance_type == "full":
        return layout
    if covariance_type == "tied":
        return np.broadcast_to(layout, (N_COMPONENTS, N_FEATURES, N_FEATURES))
    if covariance_type == "diag":
        return np.stack([np.diag(row) for row in layout])
    return layout[:, None, None] * np.eye(N_FEATURES)


def _parameters(covariance_type, seed=1):
    """Weights, means and covariances (scikit-learn's layout) to start the step from."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(N_COMPONENTS) * 5)
    means = rng.normal(scale=3.0, size=(N_COMPONENTS, N_FEATURES))

    def spd():
        a = rng.normal(size=(N_FEATURES, N_FEATURES))
        return a @ a.T + N_FEATURES * np.eye(N_FEATURES)

    layout = {
        "full": lambda: np.stack([spd() for _ in range(N_COMPONENTS)]),
        "tied": spd,
        "diag": lambda: rng.uniform(0.5, 3.0, (N_COMPONENTS, N_FEATURES)),
        "spherical": lambda: rng.uniform(0.5, 3.0, N_COMPONENTS),
    }[covariance_type]()
    return weights, means, layout


def _log_normal(x, mean, covariance):
    offset = x - mean
    _, log_det = np.linalg.slogdet(covariance)
    maha = offset @ np.linalg.solve(covariance, offset)
    return -0.5 * (maha + log_det + len(x) * np.log(2 * np.pi))


def _reference_step(x, weights, means, covariances, covariance_type, reg_covar):
    """One EM iteration, row by row: the observed marginal for the E-step, the
    conditional mean and covariance of the missing block for the statistics."""
    n_rows, n_features = x.shape
    log_joint = np.zeros((n_rows, N_COMPONENTS))
    completed = np.zeros((n_rows, N_COMPONENTS, n_features))
    conditional = np.zeros((n_rows, N_COMPONENTS, n_features, n_features))
    for i, row in enumerate(x):
        o, m = ~np.isnan(row), np.isnan(row)
        for k in range(N_COMPONENTS):
            mean, sigma = means[k], covariances[k]
            s_oo, s_mo = sigma[np.ix_(o, o)], sigma[np.ix_(m, o)]
            log_joint[i, k] = np.log(weights[k]) + _log_normal(row[o], mean[o], s_oo)
            completed[i, k] = row
            completed[i, k, m] = mean[m] + s_mo @ np.linalg.solve(s_oo, row[o] - mean[o])
            block = sigma[np.ix_(m, m)] - s_mo @ np.linalg.solve(s_oo, s_mo.T)
            conditional[i, k][np.ix_(m, m)] = block
    top = log_joint.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(log_joint - top).sum(axis=1))
    resp = np.exp(log_joint - log_norm[:, None])

    counts = resp.sum(0) + 10 * np.finfo(np.float64).eps
    new_means = np.einsum("nk,nkd->kd", resp, completed) / counts[:, None]
    offsets = completed - new_means[None]
    scatter = np.einsum("nk,nkd,nke->kde", resp, offsets, offsets)
    scatter += np.einsum("nk,nkde->kde", resp, conditional)
    eye = np.eye(n_features)
    if covariance_type == "full":
        layout = scatter / counts[:, None, None] + reg_covar * eye
    elif covariance_type == "tied":
        layout = scatter.sum(0) / counts.sum() + reg_covar * eye
    elif covariance_type == "diag":
        layout = np.diagonal(scatter, axis1=1, axis2=2) / counts[:, None] + reg_covar
    else:
        layout = np.trace(scatter, axis1=1, axis2=2) / (n_features * counts) + reg_covar
    return log_norm.sum(), resp, counts / counts.sum(), new_means, layout


def _model(covariance_type, missing=True, **options):
    family = jaxem.gaussian(covariance_type, reg_covar=1e-3, missing=missing, **options)
    return jaxem.mixture(family, N_COMPONENTS)


def _params(model, weights, means, layout, dtype=jnp.float64):
    components = model.family.params_from_covariances(
        jnp.asarray(means, dtype), jnp.asarray(layout, dtype)
    )
    return jaxem.MixtureParams(jnp.log(jnp.asarray(weights, dtype)), components)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_one_iteration_equals_naive_conditional_gaussian_formulas(covariance_type, x64):
    x, _ = _data()
    weights, means, layout = _parameters(covariance_type)
    model = _model(covariance_type)
    params = _params(model, weights, means, layout)
    expected = _reference_step(
        x, weights, means, _full_covariances(covariance_type, layout), covariance_type, 1e-3
    )
    log_likelihood, resp, new_weights, new_means, new_layout = expected

    stats, got_log_likelihood = engine.statistics(model, params, jnp.asarray(x))
    got_resp = engine.evaluate(model, params, jnp.asarray(x), "predict_proba")
    updated = model.m_step(stats, params, model.hyper(jnp.float64))
    got_layout = model.family.to_layout(updated.components)

    np.testing.assert_allclose(float(got_log_likelihood), log_likelihood, rtol=1e-10)
    np.testing.assert_allclose(got_resp, resp, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.exp(updated.log_weights), new_weights, rtol=1e-10)
    np.testing.assert_allclose(got_layout["means"], new_means, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got_layout["covariances"], new_layout, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_log_prob_and_impute_are_the_observed_marginal_and_conditional_mean(covariance_type, x64):
    x, _ = _data()
    weights, means, layout = _parameters(covariance_type)
    model = _model(covariance_type)
    params = _params(model, weights, means, layout)
    full = _full_covariances(covariance_type, layout)
    log_prob, imputed = engine.evaluate(model, params, jnp.asarray(x), ("log_prob", "impute"))
    for i in (0, 1, 2, 7):
        row = x[i]
        o, m = ~np.isnan(row), np.isnan(row)
        log_joint = np.array(
            [
                np.log(weights[k]) + _log_normal(row[o], means[k, o], full[k][np.ix_(o, o)])
                for k in range(N_COMPONENTS)
            ]
        )
        np.testing.assert_allclose(log_prob[i], np.logaddexp.reduce(log_joint), rtol=1e-12)
        resp = np.exp(log_joint - np.logaddexp.reduce(log_joint))
        fill = sum(
            resp[k]
            * (
                means[k, m]
                + full[k][np.ix_(m, o)]
                @ np.linalg.solve(full[k][np.ix_(o, o)], row[o] - means[k, o])
            )
            for k in range(N_COMPONENTS)
        )
        np.testing.assert_array_equal(imputed[i, o], row[o])
        np.testing.assert_allclose(imputed[i, m], fill, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_no_missing_entries_fit_equals_complete_data_fit(covariance_type, x64):
    _, complete = _data()
    options = dict(key=jax.random.key(3), n_restarts=2, max_iter=25, tol=0.0)
    with_missing = jaxem.fit(_model(covariance_type), jnp.asarray(complete), **options)
    without = jaxem.fit(
        _model(covariance_type, missing=False, exact=True), jnp.asarray(complete), **options
    )
    for got, want in zip(
        jax.tree.leaves(with_missing.restarts.params), jax.tree.leaves(without.restarts.params)
    ):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        with_missing.restarts.trace, without.restarts.trace, rtol=1e-12, equal_nan=True
    )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_observed_log_likelihood_never_decreases(covariance_type, x64):
    x, _ = _data(seed=2)
    result = jaxem.fit(
        _model(covariance_type),
        jnp.asarray(x),
        key=jax.random.key(0),
        n_restarts=3,
        max_iter=40,
        tol=0.0,
    )
    np.testing.assert_array_equal(result.restarts.n_iter, 40)
    for row in np.asarray(result.restarts.trace)[:, :40]:
        assert np.isfinite(row).all()
        assert np.all(np.diff(row) >= -1e-12 * np.abs(row).max()), np.diff(row)


def test_padding_rows_holding_nan_change_nothing(x64):
    x, _ = _data()
    model = _model("full")
    params = _params(model, *_parameters("full"))
    extended = np.concatenate([x, np.full((3, N_FEATURES), np.nan)])
    weights = jnp.concatenate([jnp.ones(N_ROWS), jnp.zeros(3)])
    hyper = model.hyper(jnp.float64)
    clean = model.e_step(params, jnp.asarray(x), jnp.ones(N_ROWS), hyper)
    dirty = model.e_step(params, jnp.asarray(extended), weights, hyper)
    for got, want in zip(jax.tree.leaves(dirty), jax.tree.leaves(clean)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-12)


# -- the estimator ----------------------------------------------------------------------------
def _fitted_inits(covariance_type):
    weights, means, layout = _parameters(covariance_type)
    precisions = np.linalg.inv(layout) if covariance_type in ("full", "tied") else 1.0 / layout
    return dict(weights_init=weights, means_init=means, precisions_init=precisions)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter=15
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_is_accurate_to_float32(covariance_type):
    x, _ = _data()
    options = dict(
        n_components=N_COMPONENTS,
        covariance_type=covariance_type,
        missing="em",
        max_iter=15,
        tol=0.0,
        reg_covar=1e-3,
        **_fitted_inits(covariance_type),
    )
    double = jaxem.GaussianMixture(**options).fit(x)
    single = jaxem.GaussianMixture(**options).fit(x.astype(np.float32))
    assert single.means_.dtype == np.float32 and double.means_.dtype == np.float64
    scale = np.abs(double.means_).max()
    np.testing.assert_allclose(single.means_, double.means_, rtol=0, atol=2e-5 * scale)
    np.testing.assert_allclose(single.covariances_, double.covariances_, rtol=5e-5, atol=5e-5)
    np.testing.assert_allclose(single.weights_, double.weights_, rtol=0, atol=2e-5)
    np.testing.assert_allclose(single.lower_bound_, double.lower_bound_, rtol=1e-5)
    imputed = single.impute(x.astype(np.float32))
    assert imputed.dtype == np.float32
    np.testing.assert_allclose(imputed, double.impute(x), rtol=0, atol=5e-5 * scale)


def test_estimator_without_missing_entries_equals_its_complete_data_fit():
    _, complete = _data()
    options = dict(n_components=N_COMPONENTS, random_state=0, tol=1e-8, max_iter=50)
    with_missing = jaxem.GaussianMixture(missing="em", **options).fit(complete)
    without = jaxem.GaussianMixture(**options).fit(complete)
    # Equal up to rounding: 'em' centres the data on its mean, the default does not here.
    np.testing.assert_allclose(with_missing.means_, without.means_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(with_missing.covariances_, without.covariances_, rtol=1e-8)
    np.testing.assert_allclose(with_missing.lower_bound_, without.lower_bound_, rtol=1e-10)


def test_estimator_methods_take_nan_and_use_the_observed_marginal():
    x, _ = _data()
    gm = jaxem.GaussianMixture(n_components=N_COMPONENTS, missing="em", random_state=0).fit(x)
    assert np.all(np.isfinite(gm.means_)) and gm.converged_
    assert np.all(np.diff(gm.lower_bounds_) >= -1e-12)
    model = _model("full")
    with jax.enable_x64(True):
        params = jaxem.MixtureParams(
            jnp.log(jnp.asarray(gm.weights_)),
            jaxem.GaussianParams(jnp.asarray(gm.means_), jnp.asarray(gm.precisions_cholesky_)),
        )
        log_prob, proba = engine.evaluate(
            model, params, jnp.asarray(x), ("log_prob", "predict_proba")
        )
    np.testing.assert_allclose(gm.score_samples(x), log_prob, rtol=1e-9)
    np.testing.assert_allclose(gm.predict_proba(x), proba, rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(gm.predict(x), np.argmax(proba, axis=1))
    np.testing.assert_allclose(gm.score(x), gm.lower_bound_, rtol=1e-3)
    imputed = gm.impute(x)
    assert not np.isnan(imputed).any()
    np.testing.assert_array_equal(imputed[~np.isnan(x)], x[~np.isnan(x)])


def test_impute_after_a_complete_data_fit():
    x, complete = _data()
    gm = jaxem.GaussianMixture(n_components=N_COMPONENTS, random_state=0).fit(complete)
    imputed = gm.impute(x)
    missing = np.isnan(x)
    # Conditional means are better guesses than the column means.
    column_means = np.nanmean(x, axis=0)
    error = np.abs(imputed - complete)[missing].mean()
    baseline = np.abs(np.where(missing, column_means, x) - complete)[missing].mean()
    assert error < 0.6 * baseline, (error, baseline)


def test_nan_without_opt_in_keeps_scikit_learns_message():
    x, complete = _data()
    with pytest.raises(ValueError, match="Input X contains NaN"):
        jaxem.GaussianMixture(n_components=2).fit(x)
    gm = jaxem.GaussianMixture(n_components=2, random_state=0).fit(complete)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        gm.predict(x)
    with pytest.raises(InvalidParameterError, match="'missing' parameter"):
        jaxem.GaussianMixture(missing="impute").fit(complete)


def test_bad_input_with_missing_entries():
    x, _ = _data()
    gm = jaxem.GaussianMixture(n_components=2, missing="em", random_state=0)
    row = x.copy()
    row[5] = np.nan
    with pytest.raises(ValueError, match=re.escape("Row 5 has no observed entry")):
        gm.fit(row)
    column = x.copy()
    column[:, 3] = np.nan
    with pytest.raises(ValueError, match=re.escape("Feature 3 has no observed entry")):
        gm.fit(column)
    infinite = x.copy()
    infinite[4, 0] = np.inf
    with pytest.raises(ValueError, match="Input X contains infinity"):
        gm.fit(infinite)
    gm.fit(x)
    with pytest.raises(ValueError, match=re.escape("Row 0 has no observed entry")):
        gm.predict(np.full((1, N_FEATURES), np.nan))
    with pytest.raises(ValueError, match="Input X contains infinity"):
        gm.score_samples(infinite)
    # An evaluation batch may leave a whole feature unobserved.
    assert gm.predict(column[:10]).shape == (10,)


def test_family_check_data_messages():
    family = jaxem.gaussian("diag", missing=True)
    with pytest.raises(ValueError, match="only NaN marks a missing entry"):
        family.check_data(np.array([[np.inf, 1.0]]))
    with pytest.raises(ValueError, match=re.escape("Row 1 has no observed entry (all missing; 1")):
        family.check_data(np.array([[0.0, 1.0], [np.nan, np.nan]]))
    jaxem.gaussian("diag").check_data(np.array([[np.inf, 1.0]]))  # not its concern

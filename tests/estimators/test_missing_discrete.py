"""Missing entries in the Bernoulli and categorical families: skipped, not imputed.

One EM iteration against a naive per-row numpy implementation (float64): a row's
log-likelihood is the product over its observed entries only, and the M-step counts
every feature over its observed entries. With nothing missing the fit equals the
complete-data fit; the log-likelihood never decreases; the estimators' ``missing``
parameter, ``impute`` and the bad-input messages.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

import jaxem
from jaxem import engine

N_ROWS, N_FEATURES, N_COMPONENTS, N_SYMBOLS = 200, 5, 3, 4


def _bernoulli_data(seed=0, share=0.3):
    """Binary rows from three profiles, ``share`` of the entries NaN; every row keeps
    an observed entry, row 1 only one and row 2 all of them."""
    rng = np.random.default_rng(seed)
    profiles = rng.uniform(0.05, 0.95, (N_COMPONENTS, N_FEATURES))
    labels = rng.integers(N_COMPONENTS, size=N_ROWS)
    complete = (rng.random((N_ROWS, N_FEATURES)) < profiles[labels]).astype(np.float64)
    return _with_missing(rng, complete, share), complete


def _categorical_data(seed=0, share=0.3):
    """Codes in [0, N_SYMBOLS) from three profiles, ``share`` of them NaN."""
    rng = np.random.default_rng(seed)
    profiles = rng.dirichlet(np.ones(N_SYMBOLS), (N_COMPONENTS, N_FEATURES))
    labels = rng.integers(N_COMPONENTS, size=N_ROWS)
    cumulative = np.cumsum(profiles[labels], axis=-1)
    complete = np.minimum((rng.random((N_ROWS, N_FEATURES, 1)) > cumulative).sum(-1), 3)
    return _with_missing(rng, complete.astype(np.float64), share), complete.astype(np.float64)


def _with_missing(rng, complete, share):
    x = complete.copy()
    x[rng.random(x.shape) < share] = np.nan
    empty = np.isnan(x).all(axis=1)
    x[empty, 0] = complete[empty, 0]
    x[1] = np.nan
    x[1, 3] = complete[1, 3]
    x[2] = complete[2]
    return x


def _start(seed=1):
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(N_COMPONENTS) * 5)
    probs = rng.uniform(0.1, 0.9, (N_COMPONENTS, N_FEATURES))
    symbols = rng.dirichlet(np.ones(N_SYMBOLS) * 2, (N_COMPONENTS, N_FEATURES))
    return weights, probs, symbols


def _log_table(x, family_name, probs, symbols):
    """``(n, K)`` naive log-densities over the observed entries, row by row."""
    table = np.zeros((x.shape[0], N_COMPONENTS))
    for n, row in enumerate(x):
        for k in range(N_COMPONENTS):
            for d in np.flatnonzero(~np.isnan(row)):
                if family_name == "bernoulli":
                    p = probs[k, d]
                    table[n, k] += np.log(p) if row[d] == 1 else np.log1p(-p)
                else:  # a fitted probability may be 0: log 0 = -inf
                    with np.errstate(divide="ignore"):
                        table[n, k] += np.log(symbols[k, d, int(row[d])])
    return table


def _reference_step(x, family_name, weights, probs, symbols):
    """One EM iteration, naive: the observed-marginal E-step, observed-entry counts."""
    log_joint = np.log(weights) + _log_table(x, family_name, probs, symbols)
    log_norm = np.logaddexp.reduce(log_joint, axis=1)
    resp = np.exp(log_joint - log_norm[:, None])
    observed = ~np.isnan(x)
    seen = resp.T @ observed  # (K, D): observed weight of every feature
    if family_name == "bernoulli":
        new = (resp.T @ np.where(observed, x, 0)) / seen
    else:
        one_hot = np.stack([(x == s) for s in range(N_SYMBOLS)], axis=-1).astype(float)
        new = np.einsum("nk,nds->kds", resp, one_hot) / seen[..., None]
    return log_norm.sum(), resp, resp.sum(0) / x.shape[0], new


def _family(family_name, missing=True):
    if family_name == "bernoulli":
        return jaxem.bernoulli(missing=missing)
    return jaxem.categorical(N_SYMBOLS, missing=missing)


def _data(family_name, **options):
    maker = _bernoulli_data if family_name == "bernoulli" else _categorical_data
    return maker(**options)


def _params(family, weights, probs, symbols, dtype=jnp.float64):
    table = probs if isinstance(family, jaxem.Bernoulli) else symbols
    components = family.params_from_probabilities(jnp.asarray(table, dtype))
    return jaxem.MixtureParams(jnp.log(jnp.asarray(weights, dtype)), components)


def _probabilities(family, components):
    return family.to_layout(components)["probabilities"]


@pytest.mark.parametrize(
    "family_name, encoding",
    [("bernoulli", "nan"), ("categorical", "nan"), ("categorical", "negative")],
)
def test_one_iteration_equals_naive_numpy(family_name, encoding, x64):
    x, _ = _data(family_name)
    weights, probs, symbols = _start()
    log_likelihood, resp, new_weights, new = _reference_step(
        x, family_name, weights, probs, symbols
    )
    data = jnp.asarray(x)
    if encoding == "negative":  # integer codes, -1 missing
        data = jnp.asarray(np.where(np.isnan(x), -1, x).astype(np.int32))
    model = jaxem.mixture(_family(family_name), N_COMPONENTS)
    params = _params(model.family, weights, probs, symbols)

    stats, got_log_likelihood = engine.statistics(model, params, data)
    got_resp = engine.evaluate(model, params, data, "predict_proba")
    updated = model.m_step(stats, params, model.hyper(jnp.float64))

    np.testing.assert_allclose(float(got_log_likelihood), log_likelihood, rtol=1e-12)
    np.testing.assert_allclose(got_resp, resp, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(np.exp(updated.log_weights), new_weights, rtol=1e-10)
    got = _probabilities(model.family, updated.components)
    np.testing.assert_allclose(got, new, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("family_name", ["bernoulli", "categorical"])
def test_log_prob_and_impute_use_the_observed_entries(family_name, x64):
    x, _ = _data(family_name)
    weights, probs, symbols = _start()
    model = jaxem.mixture(_family(family_name), N_COMPONENTS)
    params = _params(model.family, weights, probs, symbols)
    log_prob = engine.evaluate(model, params, jnp.asarray(x), "log_prob")
    log_joint = np.log(weights) + _log_table(x, family_name, probs, symbols)
    np.testing.assert_allclose(log_prob, np.logaddexp.reduce(log_joint, axis=1), rtol=1e-12)
    if family_name == "bernoulli":  # the functional impute: posterior probability of a 1
        imputed = engine.evaluate(model, params, jnp.asarray(x), "impute")
        resp = np.exp(log_joint - np.logaddexp.reduce(log_joint, axis=1)[:, None])
        np.testing.assert_allclose(
            imputed, np.where(np.isnan(x), resp @ probs, x), rtol=1e-10, atol=1e-13
        )


@pytest.mark.parametrize("family_name", ["bernoulli", "categorical"])
def test_no_missing_entries_fit_equals_complete_data_fit(family_name, x64):
    _, complete = _data(family_name)
    options = dict(key=jax.random.key(3), n_restarts=2, max_iter=20, tol=0.0)
    with_missing = jaxem.fit(
        jaxem.mixture(_family(family_name), N_COMPONENTS), jnp.asarray(complete), **options
    )
    without = jaxem.fit(
        jaxem.mixture(_family(family_name, missing=False), N_COMPONENTS),
        jnp.asarray(complete),
        **options,
    )
    # On the probability scale: a probability that EM drives to 1 is clipped at
    # 1 - eps, where its logit moves by whole units with the last bit of the division.
    got, want = with_missing.restarts.params, without.restarts.params
    np.testing.assert_allclose(got.log_weights, want.log_weights, rtol=1e-10, atol=1e-12)
    family = _family(family_name)
    np.testing.assert_allclose(
        _probabilities(family, got.components),
        _probabilities(family, want.components),
        rtol=1e-10,
        atol=1e-13,
    )
    np.testing.assert_allclose(
        with_missing.restarts.trace, without.restarts.trace, rtol=1e-12, equal_nan=True
    )


@pytest.mark.parametrize("family_name", ["bernoulli", "categorical"])
def test_observed_log_likelihood_never_decreases(family_name, x64):
    x, _ = _data(family_name, seed=2)
    result = jaxem.fit(
        jaxem.mixture(_family(family_name), N_COMPONENTS),
        jnp.asarray(x),
        key=jax.random.key(0),
        n_restarts=3,
        max_iter=30,
        tol=0.0,
    )
    np.testing.assert_array_equal(result.restarts.n_iter, 30)
    for row in np.asarray(result.restarts.trace)[:, :30]:
        assert np.isfinite(row).all()
        assert np.all(np.diff(row) >= -1e-12 * np.abs(row).max()), np.diff(row)


# -- the estimators ---------------------------------------------------------------------------
def _estimator(family_name, **options):
    if family_name == "bernoulli":
        return jaxem.BernoulliMixture(N_COMPONENTS, **options)
    return jaxem.CategoricalMixture(N_COMPONENTS, n_categories=N_SYMBOLS, **options)


def _estimator_probabilities(estimator):
    return np.asarray(estimator.probabilities_, np.float64)


@pytest.mark.parametrize("family_name", ["bernoulli", "categorical"])
def test_estimator_methods_use_the_observed_entries(family_name):
    x, _ = _data(family_name)
    fitted = _estimator(family_name, missing="em", random_state=0, max_iter=30).fit(x)
    assert fitted.lower_bounds_[-1] >= fitted.lower_bounds_[0]
    weights = np.asarray(fitted.weights_, np.float64)
    table = _estimator_probabilities(fitted)
    log_joint = np.log(weights) + _log_table(x, family_name, table, table)
    log_norm = np.logaddexp.reduce(log_joint, axis=1)
    resp = np.exp(log_joint - log_norm[:, None])
    np.testing.assert_allclose(fitted.score_samples(x), log_norm, rtol=1e-10)
    np.testing.assert_allclose(fitted.predict_proba(x), resp, rtol=1e-9, atol=1e-12)
    if family_name == "bernoulli":
        fill = resp @ table  # posterior probability of a 1
    else:  # most probable category under the posterior
        fill = np.argmax(np.einsum("nk,kds->nds", resp, table), axis=-1)
    np.testing.assert_allclose(fitted.impute(x), np.where(np.isnan(x), fill, x), rtol=1e-9)


@pytest.mark.parametrize("family_name", ["bernoulli", "categorical"])
def test_estimator_without_missing_entries_equals_its_complete_data_fit(family_name):
    _, complete = _data(family_name)
    options = dict(random_state=0, max_iter=20)
    with_missing = _estimator(family_name, missing="em", **options).fit(complete)
    without = _estimator(family_name, **options).fit(complete)
    # The same EM through other programs: equal up to float64 rounding.
    np.testing.assert_allclose(with_missing.weights_, without.weights_, rtol=1e-10)
    np.testing.assert_allclose(
        with_missing.probabilities_, without.probabilities_, rtol=1e-10, atol=1e-13
    )


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter=10
def test_categorical_estimator_takes_negative_codes_as_missing():
    x, _ = _categorical_data()
    coded = np.where(np.isnan(x), -1, x).astype(np.int64)
    options = dict(missing="em", random_state=0, max_iter=10)
    with_nan = _estimator("categorical", **options).fit(x)
    with_codes = _estimator("categorical", **options).fit(coded)
    np.testing.assert_array_equal(with_nan.probabilities_, with_codes.probabilities_)
    np.testing.assert_array_equal(with_nan.predict(x), with_codes.predict(coded))


@pytest.mark.parametrize("family_name", ["bernoulli", "categorical"])
def test_nan_without_opt_in_keeps_scikit_learns_message(family_name):
    x, _ = _data(family_name)
    with pytest.raises(ValueError, match="Input X contains NaN") as error:
        _estimator(family_name).fit(x)
    assert "missing='em'" in str(error.value)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter=5
@pytest.mark.parametrize("family_name", ["bernoulli", "categorical"])
def test_bad_input_with_missing_entries(family_name):
    x, _ = _data(family_name)
    estimator = _estimator(family_name, missing="em", max_iter=5)
    empty_row = x.copy()
    empty_row[4] = np.nan
    with pytest.raises(ValueError, match=re.escape("Row 4 has no observed entry")):
        estimator.fit(empty_row)
    empty_column = x.copy()
    empty_column[:, 2] = np.nan
    with pytest.raises(ValueError, match=re.escape("Feature 2 has no observed entry")):
        estimator.fit(empty_column)
    infinite = x.copy()
    infinite[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        estimator.fit(infinite)
    with pytest.raises(InvalidParameterError, match="missing"):
        _estimator(family_name, missing="drop").fit(x)
    fitted = _estimator(family_name, missing="em", max_iter=5, random_state=0).fit(x)
    with pytest.raises(ValueError, match=re.escape("Row 0 has no observed entry")):
        fitted.predict(np.full((1, N_FEATURES), np.nan))


def test_categorical_all_negative_column_and_family_messages():
    x, _ = _categorical_data()
    coded = np.where(np.isnan(x), -1, x).astype(np.int64)
    coded[:, 1] = -1
    with pytest.raises(ValueError, match=re.escape("Feature 1 has no observed entry")):
        _estimator("categorical", missing="em").fit(coded)
    family = jaxem.categorical(N_SYMBOLS, missing=True)
    with pytest.raises(ValueError, match=re.escape("Row 0 has no observed entry")):
        family.check_data(np.array([[-1, -1], [0, 1]]))
    with pytest.raises(ValueError, match=re.escape("must lie in [0, 3]")):
        family.check_data(np.array([[-1, 4], [0, 1]]))
    with pytest.raises(ValueError, match="missing=True takes -1"):
        jaxem.categorical(N_SYMBOLS).check_data(np.array([[-1, 2]]))
    with pytest.raises(ValueError, match="mark them NaN with missing=True"):
        jaxem.bernoulli().check_data(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        jaxem.bernoulli(missing=True).check_data(np.array([[np.nan, 2.0]]))

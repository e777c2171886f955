"""jaxem.select: the table equals a loop of separate GaussianMixture fits, the chosen
model is the true one, one program per covariance type, and bad input is refused."""

import math

import numpy as np
import pytest

import jaxem
from jaxem import engine
from jaxem.families.gaussian import COVARIANCE_TYPES
from jaxem.selection import TABLE_DTYPE
from tests.conftest import make_blobs

SETTINGS = dict(n_init=3, random_state=0, tol=1e-4)


def _entropy(resp):
    return float(-np.sum(np.where(resp > 0, resp * np.log(np.where(resp > 0, resp, 1.0)), 0.0)))


@pytest.mark.slow  # 16 separate fits to compare with: about 2 minutes on 2 shared cores
def test_table_equals_a_loop_of_separate_fits(x64):
    X, _ = make_blobs(n_samples=150, n_features=2, n_clusters=3, seed=1)
    n = X.shape[0]
    found = jaxem.select(X, n_components=[1, 2, 3, 4], **SETTINGS)
    assert found.table.dtype == TABLE_DTYPE and len(found.table) == 16
    for record in found.table:
        k, covariance_type = int(record["n_components"]), str(record["covariance_type"])
        direct = jaxem.GaussianMixture(k, covariance_type=covariance_type, **SETTINGS).fit(X)
        # 1e-6 per sample: the direct fit reruns its best restart alone (last bits).
        assert abs(record["bic"] - direct.bic(X)) / n < 1e-6
        assert abs(record["aic"] - direct.aic(X)) / n < 1e-6
        assert abs(record["log_likelihood"] - direct.score(X) * n) / n < 1e-6
        icl = direct.bic(X) + 2 * _entropy(direct.predict_proba(X))
        assert abs(record["icl"] - icl) / n < 1e-6
        assert record["icl"] >= record["bic"] - 1e-9
        assert record["n_parameters"] == direct._n_parameters()
        assert record["converged"] == direct.converged_
        finals = direct.restarts_.log_likelihood
        assert record["n_reached_best"] == np.sum(finals >= direct.lower_bound_ - 1e-4)
        assert record["n_init"] == 3
    best = found.table[np.argmin(found.table["bic"])]
    assert found.best_ == (int(best["n_components"]), str(best["covariance_type"]))
    # The chosen estimator is the direct fit of that model, and works as one.
    k, covariance_type = found.best_
    direct = jaxem.GaussianMixture(k, covariance_type=covariance_type, **SETTINGS).fit(X)
    chosen = found.estimator_
    assert chosen.get_params() == direct.get_params()
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(
            getattr(chosen, name), getattr(direct, name), rtol=1e-6, atol=1e-9
        )
    assert chosen.n_iter_ == direct.n_iter_ and chosen.best_restart_ == direct.best_restart_
    np.testing.assert_allclose(chosen.lower_bounds_, direct.lower_bounds_, rtol=1e-9)
    np.testing.assert_allclose(chosen.bic(X), direct.bic(X), rtol=1e-9)
    np.testing.assert_array_equal(chosen.predict(X), direct.predict(X))
    summary = found.restarts_[found.best_]
    assert summary.log_likelihood.shape == (3,) and summary.params.log_weights.shape == (3, k)


# Three sets with a known number of clusters: same shapes, so one program serves all.
KNOWN = [(2, 3), (3, 4), (4, 5)]


@pytest.mark.parametrize(("n_clusters", "seed"), KNOWN, ids=lambda v: str(v))
def test_chooses_the_true_number_of_components(n_clusters, seed, x64):
    X, _ = make_blobs(n_samples=240, n_features=2, n_clusters=n_clusters, seed=seed, spread=8.0)
    found = jaxem.select(
        X, n_components=range(1, 7), covariance_type="full", n_init=4, random_state=0
    )
    assert found.best_ == (n_clusters, "full"), found
    icl = jaxem.select(X, range(1, 7), "full", criterion="icl", n_init=4, random_state=0)
    assert icl.best_ == (n_clusters, "full") and icl.criterion == "icl"


@pytest.mark.slow  # four programs compiled from scratch: about 45 s on 2 shared cores
def test_old_faithful_one_program_per_covariance_type(faithful, count_compiles):
    """scikit-learn's loop (n_init=32, random_state=0) picks 2 full components among
    the full models and 3 tied among all (BIC 2322.19 and 2314.99)."""
    with count_compiles() as counter:
        found = jaxem.select(faithful, range(1, 6), COVARIANCE_TYPES, n_init=8, random_state=0)
    assert counter.count <= len(COVARIANCE_TYPES)
    assert found.best_ == (3, "tied")
    full = found.table[found.table["covariance_type"] == "full"]
    assert full["n_components"][np.argmin(full["bic"])] == 2
    np.testing.assert_allclose(full["bic"][1], 2322.19, atol=0.01)
    text = str(found)
    assert "BIC" in text and "Chosen: n_components=3, covariance_type='tied'" in text
    assert text.count("\n") == 20 + 2
    records = found.as_records()
    assert records[1]["n_components"] == 2 and records[1]["covariance_type"] == "full"
    assert isinstance(records[1]["bic"], float) and isinstance(records[1]["converged"], bool)
    curves = found.criterion_values("aic")
    assert list(curves) == list(COVARIANCE_TYPES)
    np.testing.assert_array_equal(curves["diag"][0], [1, 2, 3, 4, 5])


def test_float32_input_gives_a_float32_estimator():
    X, _ = make_blobs(n_samples=100, n_features=2, n_clusters=2, seed=0, spread=8.0)
    found = jaxem.select(X.astype(np.float32), [1, 2, 3], "diag", n_init=2, random_state=0)
    assert found.best_ == (2, "diag")
    assert found.estimator_.means_.dtype == np.float32
    assert np.all(np.isfinite(found.table["bic"]))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_components": []}, ValueError, "n_components is empty"),
        ({"n_components": [0, 1]}, ValueError, "positive ints; got 0"),
        ({"n_components": [1, True]}, ValueError, "positive ints; got True"),
        ({"n_components": 2.5}, TypeError, "an int or an iterable of ints"),
        ({"n_components": [1, 50]}, ValueError, "up to 50 needs at least that many samples"),
        ({"covariance_type": "ful"}, ValueError, "Unknown covariance_type 'ful'"),
        ({"covariance_type": []}, ValueError, "covariance_type is empty"),
        ({"criterion": "mdl"}, ValueError, "Unknown criterion 'mdl'"),
        ({"n_init": 0}, ValueError, "'n_init' parameter"),
        ({"tol": -1.0}, ValueError, "'tol' parameter"),
    ],
)
def test_bad_input_is_refused(kwargs, error, match):
    X = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(error, match=match):
        jaxem.select(X, **kwargs)


def test_non_finite_data_is_refused():
    X = np.random.default_rng(0).normal(size=(20, 2))
    X[3, 1] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        jaxem.select(X, [1, 2])


def test_fit_sweep_refuses_what_it_cannot_run():
    model = jaxem.mixture(jaxem.gaussian("diag"), 1, max_components=2)
    X = np.zeros((10, 2), np.float32)
    sweep = {"n_active": np.array([1, 2])}
    with pytest.raises(ValueError, match="Mixture has no output 'density'"):
        engine.fit_sweep(model, X, sweep, key=0, outputs=("density",))
    with pytest.raises(ValueError, match="sweep must be a non-empty dict"):
        engine.fit_sweep(model, X, {}, key=0)
    with pytest.raises(ValueError, match="needs a leading sweep axis"):
        engine.fit_sweep(model, X, {"n_active": 2}, key=0)
    uneven = {**sweep, "kmeans_tol": np.array([1e-4, 1e-4, 1e-4])}
    with pytest.raises(ValueError, match="same, non-zero leading axis"):
        engine.fit_sweep(model, X, uneven, key=0)
    with pytest.raises(ValueError, match="'n_states', which is not a hyperparameter"):
        engine.fit_sweep(model, X, {"n_states": np.array([1, 2])}, key=0)
    with pytest.raises(ValueError, match=r"seed in \[0, 2\*\*31\)"):
        engine.fit_sweep(model, X, sweep, key=-1)
    with pytest.raises(ValueError, match="max_iter must be a non-negative int"):
        engine.fit_sweep(model, X, sweep, key=0, max_iter=-1)


# -- HMMs: select_states -------------------------------------------------------------------------
def _hmm_data():
    """Two sequences from a 3-state, 1-D Gaussian HMM with well-separated states."""
    truth = jaxem.GaussianHMM(n_components=3, init_params="")
    truth.startprob_ = np.array([0.6, 0.3, 0.1])
    truth.transmat_ = np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]])
    truth.means_ = np.array([[-5.0], [0.0], [5.0]])
    truth.covars_ = np.ones((3, 1))
    X1, _ = truth.sample(200, random_state=0)
    X2, _ = truth.sample(100, random_state=1)
    return np.concatenate([X1, X2]), [200, 100]


HMM_SETTINGS = dict(n_init=2, n_iter=30, tol=1e-3, random_state=0)


def test_select_states_table_equals_separate_fits_and_finds_the_true_count(x64):
    X, lengths = _hmm_data()
    found = jaxem.select_states(
        jaxem.GaussianHMM(**HMM_SETTINGS), X, lengths, n_components=[1, 2, 3, 4]
    )
    assert found.table.dtype == TABLE_DTYPE and len(found.table) == 4
    assert found.best_ == (3, "diag")
    assert isinstance(found.estimator_, jaxem.GaussianHMM)
    for record in found.table:
        k = int(record["n_components"])
        direct = jaxem.GaussianHMM(n_components=k, **HMM_SETTINGS).fit(X, lengths)
        assert record["bic"] == pytest.approx(direct.bic(X, lengths), rel=1e-12)
        assert record["aic"] == pytest.approx(direct.aic(X, lengths), rel=1e-12)
        assert record["log_likelihood"] == pytest.approx(direct.score(X, lengths), rel=1e-12)
        assert record["n_parameters"] == sum(direct._n_fit_scalars_per_param().values())
        assert record["n_iter"] == direct.monitor_.iter and record["n_init"] == 2
        assert 1 <= record["n_reached_best"] <= 2 and math.isnan(record["icl"])
    # Every state count adds parameters; the chosen model's estimator is that fit.
    assert np.all(np.diff(found.table["n_parameters"]) > 0)
    assert found.estimator_.n_components == 3
    np.testing.assert_allclose(
        found.estimator_.score(X, lengths), found.table["log_likelihood"][2], rtol=1e-12
    )
    assert "GaussianHMM selection by BIC" in found.to_string()


def test_select_states_over_covariance_types_and_other_emissions():
    X, lengths = _hmm_data()
    found = jaxem.select_states(
        jaxem.GaussianHMM(**HMM_SETTINGS), X.astype(np.float32), lengths,
        n_components=[2, 3], covariance_type=["spherical", "full"], criterion="aic",
    )  # fmt: skip
    assert [(int(r["n_components"]), str(r["covariance_type"])) for r in found.table] == [
        (2, "spherical"), (3, "spherical"), (2, "full"), (3, "full"),
    ]  # fmt: skip
    assert found.best_[0] == 3 and found.criterion == "aic"
    assert found.estimator_.means_.dtype == np.float64  # hmmlearn's attributes, whatever the input
    # Emissions without a covariance type: the column says '-'.
    symbols = np.digitize(X[:, 0], [-2.5, 2.5])[:, None]
    counted = jaxem.select_states(
        jaxem.CategoricalHMM(**HMM_SETTINGS), symbols, lengths, n_components=[1, 3]
    )
    assert counted.table["covariance_type"].tolist() == ["-", "-"]
    assert counted.best_ == (3, "-")


@pytest.mark.parametrize(
    "estimator, kwargs, error, match",
    [
        (jaxem.GaussianMixture(), {}, TypeError, "HMM estimator"),
        (jaxem.GaussianHMM(), {"criterion": "icl"}, ValueError, "'icl'"),
        (jaxem.GaussianHMM(), {"n_components": []}, ValueError, "empty"),
        (jaxem.GaussianHMM(), {"n_components": [0, 2]}, ValueError, "positive"),
        (jaxem.GaussianHMM(), {"n_components": [400]}, ValueError, "at least that many"),
        (jaxem.GaussianHMM(), {"covariance_type": "round"}, ValueError, "covariance_type"),
        (jaxem.PoissonHMM(), {"covariance_type": "diag"}, ValueError, "no covariance_type"),
    ],
)
def test_select_states_refuses_bad_input(estimator, kwargs, error, match):
    X, lengths = _hmm_data()
    with pytest.raises(error, match=match):
        jaxem.select_states(estimator, X, lengths, **kwargs)

"""hmmlearn drop-ins, checked against hmmlearn from identical initial parameters."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

import jaxem

hmm = pytest.importorskip("hmmlearn.hmm")

LENGTHS = [40, 25, 33]
K = 3
RNG = np.random.default_rng(0)
STARTPROB = RNG.dirichlet(np.ones(K))
TRANSMAT = RNG.dirichlet(np.ones(K) * 3, size=K)
COVARS = {
    "diag": RNG.uniform(0.5, 2, (K, 2)),
    "full": np.stack([np.eye(2) * (1.0 + k) + 0.3 for k in range(K)]),
    "spherical": RNG.uniform(0.5, 2, K),
    "tied": np.eye(2) * 1.2 + 0.2,
}
MEANS = RNG.normal(size=(K, 2)) * 2


def _gaussian_X(seed=0):
    rng = np.random.default_rng(seed)
    n = sum(LENGTHS)
    return rng.normal(size=(n, 2)) + 3.0 * rng.integers(0, 3, size=(n, 1))


def _set(model, **attributes):
    model.startprob_ = STARTPROB
    model.transmat_ = TRANSMAT
    for name, value in attributes.items():
        setattr(model, name, value)
    return model


def _compare(ours, ref, names, rtol=1e-8, atol=1e-10):
    np.testing.assert_allclose(list(ours.monitor_.history), list(ref.monitor_.history), rtol=1e-10)
    assert ours.monitor_.iter == ref.monitor_.iter
    assert ours.monitor_.converged == ref.monitor_.converged
    for name in ["startprob_", "transmat_", *names]:
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=rtol, atol=atol)


@pytest.mark.parametrize("covariance_type", ["diag", "full", "spherical", "tied"])
def test_gaussian_matches_hmmlearn(covariance_type, x64):
    X = _gaussian_X()
    kwargs = dict(
        n_components=K, covariance_type=covariance_type, n_iter=12, init_params="",
        means_weight=0.5, means_prior=0.1, covars_weight=3.0,
    )  # fmt: skip
    attributes = dict(means_=MEANS, covars_=COVARS[covariance_type])
    ref = _set(hmm.GaussianHMM(**kwargs), **attributes).fit(X, LENGTHS)
    ours = _set(jaxem.GaussianHMM(**kwargs), **attributes).fit(X, LENGTHS)
    _compare(ours, ref, ["means_"])
    expected = ref._covars_[:, 0] if covariance_type == "spherical" else ref._covars_
    np.testing.assert_allclose(ours._covars_, expected, rtol=1e-8)
    np.testing.assert_allclose(ours.covars_, ref.covars_ if covariance_type != "spherical"
                               else expected[:, None, None] * np.eye(2), rtol=1e-8)  # fmt: skip
    if covariance_type == "diag":
        np.testing.assert_allclose(ours.score(X, LENGTHS), ref.score(X, LENGTHS), rtol=1e-10)
        ours_ll, ours_post = ours.score_samples(X, LENGTHS)
        ref_ll, ref_post = ref.score_samples(X, LENGTHS)
        np.testing.assert_allclose(ours_ll, ref_ll, rtol=1e-10)
        np.testing.assert_allclose(ours_post, ref_post, atol=1e-10)
        for algorithm in ["viterbi", "map"]:
            ours_lp, ours_states = ours.decode(X, LENGTHS, algorithm=algorithm)
            ref_lp, ref_states = ref.decode(X, LENGTHS, algorithm=algorithm)
            np.testing.assert_allclose(ours_lp, ref_lp, rtol=1e-10)
            np.testing.assert_array_equal(ours_states, ref_states)
        np.testing.assert_array_equal(ours.predict(X, LENGTHS), ref.predict(X, LENGTHS))


def test_gaussian_params_letters_keep_unlisted_parameters(x64):
    X = _gaussian_X(1)
    attributes = dict(means_=MEANS, covars_=COVARS["diag"])
    kwargs = dict(n_components=K, n_iter=5, init_params="", params="sm")
    ref = _set(hmm.GaussianHMM(**kwargs), **attributes).fit(X, LENGTHS)
    ours = _set(jaxem.GaussianHMM(**kwargs), **attributes).fit(X, LENGTHS)
    _compare(ours, ref, ["means_", "_covars_"])
    np.testing.assert_array_equal(ours.transmat_, TRANSMAT)
    np.testing.assert_allclose(ours._covars_, COVARS["diag"], rtol=1e-14)
    # Covariances around fixed means. (hmmlearn 0.3.3 skips the Σγx statistics
    # without "m" and gets these covariances wrong, so only ours is checked.)
    kwargs["params"] = "tc"
    ours = _set(jaxem.GaussianHMM(**kwargs), **attributes).fit(X, LENGTHS)
    np.testing.assert_array_equal(ours.means_, MEANS)
    np.testing.assert_array_equal(ours.startprob_, STARTPROB)
    assert np.all(np.diff(list(ours.monitor_.history)) > 0)


def test_categorical_matches_hmmlearn(x64):
    X = np.random.default_rng(2).integers(0, 4, size=(sum(LENGTHS), 1))
    emissionprob = np.random.default_rng(3).dirichlet(np.ones(4), size=K)
    kwargs = dict(n_components=K, n_iter=15, init_params="", emissionprob_prior=1.2)
    ref = _set(hmm.CategoricalHMM(**kwargs), emissionprob_=emissionprob).fit(X, LENGTHS)
    ours = _set(jaxem.CategoricalHMM(**kwargs), emissionprob_=emissionprob).fit(X, LENGTHS)
    _compare(ours, ref, ["emissionprob_"])
    assert ours.n_features == 4
    np.testing.assert_array_equal(ours.predict(X, LENGTHS), ref.predict(X, LENGTHS))


def test_poisson_matches_hmmlearn(x64):
    rng = np.random.default_rng(4)
    X = rng.poisson(rng.choice([1.0, 5.0, 12.0], size=(sum(LENGTHS), 1)), size=(sum(LENGTHS), 2))
    lambdas = rng.uniform(1, 10, (K, 2))
    kwargs = dict(n_components=K, n_iter=15, init_params="")
    ref = _set(hmm.PoissonHMM(**kwargs), lambdas_=lambdas).fit(X, LENGTHS)
    ours = _set(jaxem.PoissonHMM(**kwargs), lambdas_=lambdas).fit(X, LENGTHS)
    _compare(ours, ref, ["lambdas_"])


def test_fit_from_own_init_float32_and_restarts():
    X = _gaussian_X(5).astype(np.float32)
    model = jaxem.GaussianHMM(K, n_iter=30, random_state=0, n_init=4).fit(X, LENGTHS)
    assert model.means_.shape == (K, 2) and model.covars_.shape == (K, 2, 2)
    history = np.array(model.monitor_.history)
    assert np.all(np.diff(history) > -1e-3 * np.abs(history[1:]))
    finals = np.asarray(model.n_init_results_.log_likelihood) * len(LENGTHS)
    assert finals.shape == (4,)
    np.testing.assert_allclose(history[-1], finals[model.best_restart_], rtol=1e-6)
    # The kept restart is the best one, ties within the engine's 64 ulps going to the
    # lowest index.
    top = np.nanmax(finals)
    assert finals[model.best_restart_] >= top - 64 * np.finfo(np.float32).eps * abs(top)
    x, states = model.sample(7, random_state=1)
    assert x.shape == (7, 2) and states.shape == (7,)


@pytest.mark.parametrize(
    "X, lengths, error, message",
    [
        (np.zeros((5, 2)), [3, 3], ValueError, r"lengths sum to 6 but X has 5 samples"),
        (np.zeros((5, 2)), [5, 0], ValueError, r"lengths must be positive integers"),
        (np.full((5, 2), np.nan), None, ValueError, "Input X contains NaN"),
        (np.array([[0.0, np.inf]] * 5), None, ValueError, "Input X contains infinity"),
        (np.zeros(5), None, ValueError, "Expected 2D array, got 1D array instead"),
    ],
)
def test_gaussian_bad_input(X, lengths, error, message):
    with pytest.raises(error, match=message):
        jaxem.GaussianHMM(2).fit(X, lengths)


def test_other_bad_input():
    with pytest.raises(ValueError, match=r"Categorical symbols must lie in \[0, 2\]"):
        jaxem.CategoricalHMM(2, n_features=3).fit(np.array([[0], [1], [3]]))
    with pytest.raises(ValueError, match="CategoricalHMM expects X of shape"):
        jaxem.CategoricalHMM(2).fit(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="Poisson counts must be non-negative"):
        jaxem.PoissonHMM(2).fit(np.array([[1], [-2], [3]]))
    with pytest.raises(ValueError, match="Poisson counts must be integers"):
        jaxem.PoissonHMM(2).fit(np.array([[1.0], [2.5], [3.0]]))
    with pytest.raises(ValueError, match="implementation must be one of"):
        jaxem.GaussianHMM(2, implementation="fast").fit(np.zeros((4, 1)))
    for estimator in [jaxem.GaussianHMM(2), jaxem.CategoricalHMM(2), jaxem.PoissonHMM(2)]:
        with pytest.raises(NotFittedError, match="is not fitted yet"):
            estimator.predict(np.zeros((3, 1), int))


@pytest.mark.parametrize(
    "covariance_type, covars, message",
    [
        ("full", [[[1.0, 2.0], [2.0, 1.0]]] * 2, "'full' covars_ must be symmetric, positive-def"),
        ("full", [np.eye(2), [[1.0, 0.5], [0.0, 1.0]]], "positive-definite; component 1 is not"),
        ("tied", [[1.0, 2.0], [2.0, 1.0]], "'tied' covars_ must be .* the matrix is not"),
        ("diag", [[1.0, 1.0], [1.0, -1.0]], "'diag' covars_ must be positive and finite; comp"),
        ("spherical", [1.0, np.nan], "positive and finite; component 1 is not"),
    ],
)
def test_covariances_set_by_hand_are_checked(covariance_type, covars, message):
    # Not a NaN score: a clear error naming the attribute and the component.
    model = jaxem.GaussianHMM(2, covariance_type=covariance_type, random_state=0)
    model.fit(_gaussian_X())
    model.covars_ = np.asarray(covars)
    with pytest.raises(ValueError, match=message):
        model.score(_gaussian_X())


# -- model selection: aic, bic --------------------------------------------------------------
def _hmmlearn_twin(ours, ref):
    """``ref`` (an hmmlearn model) with every fitted parameter of ``ours``."""
    for name in ["startprob_", "transmat_", *ours._emission_letters.values()]:
        value = ours._covars_ if name == "covars_" else getattr(ours, name)
        setattr(ref, name, np.array(value))
    ref.n_features = ours.n_features
    return ref


def _model_pair(kind, **kwargs):
    """(jaxem, hmmlearn) models of one kind: a covariance type, "categorical" or "poisson"."""
    if kind == "categorical":
        return jaxem.CategoricalHMM(K, **kwargs), hmm.CategoricalHMM(K, **kwargs)
    if kind == "poisson":
        return jaxem.PoissonHMM(K, **kwargs), hmm.PoissonHMM(K, **kwargs)
    kwargs["covariance_type"] = kind
    return jaxem.GaussianHMM(K, **kwargs), hmm.GaussianHMM(K, **kwargs)


@pytest.mark.parametrize("kind", ["diag", "full", "spherical", "tied", "categorical", "poisson"])
@pytest.mark.parametrize("params", [None, "st"])
def test_aic_bic_match_hmmlearn(kind, params):
    """float32 fits; hmmlearn evaluates the same parameters in float64."""
    rng = np.random.default_rng(6)
    n = sum(LENGTHS)
    if kind == "categorical":
        X = rng.integers(0, 4, size=(n, 1))
    elif kind == "poisson":
        X = rng.poisson(rng.choice([1.0, 8.0], size=(n, 1)), size=(n, 2))
    else:
        X = _gaussian_X(6).astype(np.float32)
    ours, ref = _model_pair(kind, **({} if params is None else {"params": params}))
    ours.set_params(n_iter=5, random_state=0).fit(X, LENGTHS)
    ref = _hmmlearn_twin(ours, ref)
    # hmmlearn counts every parameter group whatever ``params`` says; so does jaxem.
    assert ours._n_fit_scalars_per_param() == ref._get_n_fit_scalars_per_param()
    for criterion in ["aic", "bic"]:
        for lengths in [LENGTHS, None]:
            expected = getattr(ref, criterion)(X, lengths)
            np.testing.assert_allclose(getattr(ours, criterion)(X, lengths), expected, rtol=1e-5)
    # The penalty itself, exactly: the two criteria differ by n_parameters * (log n - 2).
    n_parameters = sum(ref._get_n_fit_scalars_per_param().values())
    np.testing.assert_allclose(
        ours.bic(X, LENGTHS) - ours.aic(X, LENGTHS), n_parameters * (np.log(n) - 2), rtol=1e-12
    )


def test_aic_bic_need_a_fitted_model():
    with pytest.raises(NotFittedError, match="is not fitted yet"):
        jaxem.GaussianHMM(2).aic(np.zeros((4, 1)))
    with pytest.raises(NotFittedError, match="is not fitted yet"):
        jaxem.PoissonHMM(2).bic(np.zeros((4, 1), int))


# -- initialisation notices, too few samples ------------------------------------------------
OVERWRITTEN = (
    "Even though the {!r} attribute is set, it will be overwritten during initialization "
    "because 'init_params' contains {!r}"
)


def _notices(caplog, logger):
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelname == "WARNING"]


def test_init_params_overwriting_set_attributes_is_logged_as_hmmlearn(caplog):
    X = _gaussian_X(7)
    kwargs = dict(n_components=K, n_iter=1, random_state=0, init_params="tm", params="st")
    caplog.set_level("WARNING")
    _set(hmm.GaussianHMM(**kwargs), means_=MEANS, covars_=COVARS["diag"]).fit(X, LENGTHS)
    ours = _set(jaxem.GaussianHMM(**kwargs), means_=MEANS, covars_=COVARS["diag"])
    ours.fit(X, LENGTHS)
    expected = [OVERWRITTEN.format("transmat_", "t"), OVERWRITTEN.format("means_", "m")]
    assert _notices(caplog, "hmmlearn.base") == expected
    assert _notices(caplog, "jaxem.estimators.hmm") == expected
    # Not overwritten (nor updated: not in params): the user's values, in float32.
    np.testing.assert_allclose(ours._covars_, COVARS["diag"], rtol=1e-6)

    # Nothing is logged when init_params leaves the set attributes alone, or for a first fit.
    caplog.clear()
    _set(jaxem.GaussianHMM(K, n_iter=1, init_params="c")).fit(X, LENGTHS)
    jaxem.PoissonHMM(K, n_iter=1).fit(np.ones((20, 1), int))
    assert _notices(caplog, "jaxem.estimators.hmm") == []
    # A refit overwrites the previous fit's attributes: hmmlearn says so each time.
    symbols = np.array([[0], [1], [1], [0]] * 2)
    model = jaxem.CategoricalHMM(2, n_iter=1).fit(symbols)
    model.fit(symbols)
    names = [("startprob_", "s"), ("transmat_", "t"), ("emissionprob_", "e")]
    assert _notices(caplog, "jaxem.estimators.hmm") == [OVERWRITTEN.format(*n) for n in names]


def test_degenerate_model_is_logged_as_hmmlearn(caplog):
    X = np.random.default_rng(8).normal(size=(6, 2))
    caplog.set_level("WARNING")
    hmm.GaussianHMM(4, n_iter=1, random_state=0).fit(X)
    jaxem.GaussianHMM(4, n_iter=1, random_state=0).fit(X)
    expected = [
        "Fitting a model with 31 free scalar parameters with only 12 data points will "
        "result in a degenerate solution."
    ]
    assert _notices(caplog, "hmmlearn.base") == expected
    assert _notices(caplog, "jaxem.estimators.hmm") == expected


@pytest.mark.parametrize(
    "estimator, X",
    [
        (jaxem.GaussianHMM(4), np.zeros((3, 2))),
        (jaxem.CategoricalHMM(4), np.array([[0], [1], [1]])),
        (jaxem.PoissonHMM(4), np.ones((3, 1), int)),
    ],
)
def test_more_states_than_samples_is_refused(estimator, X):
    message = "Expected n_samples >= n_components but got n_components = 4, n_samples = 3"
    with pytest.raises(ValueError, match=message):
        estimator.fit(X, [2, 1])


def _left_right_jump(module, implementation):
    """A left-right chain 0 -> 1 -> 2 on data that jumps from state 0's mean to state
    2's: the only path runs through state 1, whose emissions lie 1250 nats behind."""
    model = module.GaussianHMM(
        3, covariance_type="spherical", implementation=implementation, init_params="", n_iter=3
    )
    model.startprob_ = np.array([1.0, 0.0, 0.0])
    model.transmat_ = np.array([[0.9, 0.1, 0.0], [0.0, 0.9, 0.1], [0.0, 0.0, 1.0]])
    model.means_, model.covars_ = np.array([[0.0], [50.0], [100.0]]), np.ones(3)
    return model


def test_log_fits_what_the_scaled_recursions_refuse_as_hmmlearn_does():
    rng = np.random.default_rng(1)
    data = np.concatenate([rng.normal(0, 1, 30), rng.normal(100, 1, 30)])[:, None]
    # No emission underflows in every state, so "scaling" raising here shows the
    # default scaled recursions refused the data, as hmmlearn's scaled pass does.
    for module in (jaxem, hmm):
        with pytest.raises(ValueError, match="forward pass failed with underflow"):
            _left_right_jump(module, "scaling").fit(data)
    # "log" then fits in log space, as hmmlearn's "log" does.
    ours = _left_right_jump(jaxem, "log").fit(data)
    ref = _left_right_jump(hmm, "log").fit(data)
    _compare(ours, ref, ["startprob_", "transmat_", "means_", "covars_"])
    np.testing.assert_allclose(ours.score(data), ref.score(data), rtol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(data), ref.predict_proba(data), atol=1e-10)


@pytest.mark.parametrize("implementation", ["scaling", "log"])
def test_scaling_fails_where_hmmlearns_scaled_pass_underflows(implementation):
    """An outlier 1e4 away from both unit-variance states underflows every emission
    probability in float64: hmmlearn's "scaling" raises, "log" fits; jaxem the same."""
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(0, 1, 100), rng.normal(5, 1, 100)])[:, None]
    data[40] = 10_000
    model = jaxem.GaussianHMM(
        2, covariance_type="spherical", implementation=implementation, init_params=""
    )
    model.startprob_, model.transmat_ = [0.0, 1.0], [[0.4, 0.6], [0.6, 0.4]]
    model.means_, model.covars_ = [[0.0], [5.0]], [1.0, 1.0]
    if implementation == "scaling":
        with pytest.raises(ValueError, match="forward pass failed with underflow"):
            model.fit(data)
    else:
        assert np.isfinite(model.fit(data).score(data))

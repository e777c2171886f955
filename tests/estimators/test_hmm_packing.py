"""HMM estimators on sequences of very unequal lengths: packed several to a row (the
default) they give what one sequence per padded row gives, in float64."""

import numpy as np
import pytest

import jaxem

#: One long sequence and many short ones: padding would be 10 x 60 slots for 80 steps.
LENGTHS = [60, 3, 1, 2, 1, 5, 1, 1, 2, 4]
N_STATES = 3


def _gaussian(seed=0):
    rng = np.random.default_rng(seed)
    states = rng.integers(0, N_STATES, sum(LENGTHS))
    X = rng.normal(size=(sum(LENGTHS), 2)) + 3.0 * states[:, None]
    model = jaxem.GaussianHMM(N_STATES, covariance_type="diag", n_iter=15, init_params="")
    model.startprob_ = np.array([0.5, 0.3, 0.2])
    model.transmat_ = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    model.means_ = np.array([[0.5, 0.0], [2.5, 3.5], [6.5, 5.5]])
    model.covars_ = np.ones((N_STATES, 2))
    return model, X


def _categorical(seed=1):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 4, size=(sum(LENGTHS), 1))
    model = jaxem.CategoricalHMM(N_STATES, n_features=4, n_iter=15, init_params="")
    model.startprob_ = np.array([0.5, 0.3, 0.2])
    model.transmat_ = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    model.emissionprob_ = rng.dirichlet(np.ones(4), size=N_STATES)
    return model, X


def _fitted(make, pack):
    model, X = make()
    model._pack_sequences = pack
    return model.fit(X, LENGTHS), X


def _copy_parameters(source, target):
    """The fitted parameters of ``source`` into ``target`` (covariances in their layout)."""
    for name in ["startprob_", "transmat_", *type(source)._emission_letters.values()]:
        name = "_covars_" if name == "covars_" else name
        setattr(target, name, getattr(source, name))


@pytest.mark.parametrize("make", [_gaussian, _categorical], ids=["gaussian", "categorical"])
def test_packed_fit_and_inference_equal_padded(make):
    packed, X = _fitted(make, True)
    padded, _ = _fitted(make, False)
    assert jaxem.pack_sequences(X, LENGTHS)[1].shape[0] < len(LENGTHS)  # really packed
    # restarts_ reports the mean per sequence either way.
    np.testing.assert_allclose(
        packed.restarts_.log_likelihood, padded.restarts_.log_likelihood, rtol=1e-10
    )
    # Same EM path: the monitor holds the total log-likelihood, whatever the rows.
    assert packed.monitor_.iter == padded.monitor_.iter
    np.testing.assert_allclose(packed.monitor_.history, padded.monitor_.history, rtol=1e-10)
    names = ["startprob_", "transmat_", *type(packed)._emission_letters.values()]
    for name in names:
        np.testing.assert_allclose(
            getattr(packed, name), getattr(padded, name), rtol=1e-9, atol=1e-12, err_msg=name
        )
    # Inference with the same (padded fit's) parameters, packed and padded.
    _copy_parameters(padded, packed)
    np.testing.assert_allclose(packed.score(X, LENGTHS), padded.score(X, LENGTHS), rtol=1e-12)
    np.testing.assert_allclose(
        packed.predict_proba(X, LENGTHS), padded.predict_proba(X, LENGTHS), rtol=0, atol=1e-12
    )
    for algorithm in ("viterbi", "map"):
        packed_log_prob, packed_states = packed.decode(X, LENGTHS, algorithm=algorithm)
        padded_log_prob, padded_states = padded.decode(X, LENGTHS, algorithm=algorithm)
        np.testing.assert_allclose(packed_log_prob, padded_log_prob, rtol=1e-12)
        np.testing.assert_array_equal(packed_states, padded_states)
    np.testing.assert_array_equal(packed.predict(X, LENGTHS), padded.predict(X, LENGTHS))


def test_packed_known_states_equal_padded():
    # Known states travel packed like the observations.
    packed, X = _fitted(_gaussian, True)
    padded, _ = _fitted(_gaussian, False)
    _copy_parameters(padded, packed)
    y = np.full(len(X), -1)
    y[::7] = 2
    packed_score, packed_posterior = packed.score_samples(X, LENGTHS, y=y)
    padded_score, padded_posterior = padded.score_samples(X, LENGTHS, y=y)
    np.testing.assert_allclose(packed_score, padded_score, rtol=1e-12)
    np.testing.assert_allclose(packed_posterior, padded_posterior, rtol=0, atol=1e-12)
    np.testing.assert_allclose(packed_posterior[::7, 2], 1.0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(packed.predict(X, LENGTHS, y=y), padded.predict(X, LENGTHS, y=y))

"""HMMs with states known at some time steps, and HMMs over families with missing entries.

Per-step log prior weights over the states (0 / -inf at a known state, 0 at an
unknown step) are added to the emission log-densities in forward-backward and
Viterbi. References in float64: one Baum-Welch step against a numpy forward-backward
with the same masking (and missing emission entries skipped), every step known
against the supervised closed form (counts along the known path), known steps kept
by predict and the posteriors, and the bad-label messages.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from jaxem import engine
from tests.references import forward_backward

N_STATES, N_SYMBOLS, N_FEATURES = 3, 4, 2
LENGTHS = [30, 20]


def _path(seed=0):
    """A state path over all sequences concatenated, every state entered and left."""
    rng = np.random.default_rng(seed)
    transmat = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.15, 0.15, 0.7]])
    states = [0]
    for _ in range(sum(LENGTHS) - 1):
        states.append(rng.choice(N_STATES, p=transmat[states[-1]]))
    return np.array(states)


def _emissions(states, family_name, seed=1):
    """Symbols (categorical) or binary values (Bernoulli) given the states."""
    rng = np.random.default_rng(seed)
    if family_name == "categorical":
        probs = rng.dirichlet(np.ones(N_SYMBOLS), (N_STATES, N_FEATURES))
        cumulative = np.cumsum(probs[states], axis=-1)
        draws = (rng.random((len(states), N_FEATURES, 1)) > cumulative).sum(-1)
        return np.minimum(draws, N_SYMBOLS - 1).astype(np.float64)
    probs = rng.uniform(0.1, 0.9, (N_STATES, N_FEATURES))
    return (rng.random((len(states), N_FEATURES)) < probs[states]).astype(np.float64)


def _labels(states, seed=2, share=0.3):
    """``states`` known at ``share`` of the steps, -1 elsewhere."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(len(states)) < share, states, -1)


def _log_emission_table(x, family_name, table):
    """``(n, K)`` log-densities over the observed (non-NaN) entries, naively."""
    out = np.zeros((x.shape[0], N_STATES))
    for n, row in enumerate(x):
        for k in range(N_STATES):
            for d in np.flatnonzero(~np.isnan(row)):
                if family_name == "categorical":
                    out[n, k] += np.log(table[k, d, int(row[d])])
                else:
                    p = table[k, d]
                    out[n, k] += np.log(p) if row[d] == 1 else np.log1p(-p)
    return out


def _family(family_name):
    if family_name == "categorical":
        return jaxem.categorical(N_SYMBOLS, missing=True)
    return jaxem.bernoulli(missing=True)


def _start_params(family, family_name, seed=3):
    rng = np.random.default_rng(seed)
    startprob = rng.dirichlet(np.ones(N_STATES) * 3)
    transmat = rng.dirichlet(np.ones(N_STATES) * 3, N_STATES)
    if family_name == "categorical":
        table = rng.dirichlet(np.ones(N_SYMBOLS) * 2, (N_STATES, N_FEATURES))
    else:
        table = rng.uniform(0.1, 0.9, (N_STATES, N_FEATURES))
    params = jaxem.HMMParams(
        jnp.asarray(startprob),
        jnp.asarray(transmat),
        family.params_from_probabilities(jnp.asarray(table)),
    )
    return params, startprob, transmat, table


@pytest.mark.parametrize("family_name", ["categorical", "bernoulli"])
def test_one_baum_welch_step_equals_numpy_forward_backward_with_masking(family_name, x64):
    states = _path()
    x = _emissions(states, family_name)
    x[np.random.default_rng(4).random(x.shape) < 0.25] = np.nan  # missing entries
    x[np.isnan(x).all(axis=1), 0] = 0.0
    labels = _labels(states)
    family = _family(family_name)
    model = jaxem.hmm(family, N_STATES)
    params, startprob, transmat, table = _start_params(family, family_name)

    # numpy: emissions over the observed entries, plus the known states' log prior.
    log_prior = np.where(
        labels[:, None] < 0, 0.0, np.where(np.arange(N_STATES) == labels[:, None], 0.0, -np.inf)
    )
    log_b = _log_emission_table(x, family_name, table) + log_prior
    starts = np.cumsum([0] + LENGTHS)
    total, gammas, xi_sum, first = 0.0, [], np.zeros((N_STATES, N_STATES)), 0
    for a, b in zip(starts[:-1], starts[1:]):
        log_p, gamma, xi = forward_backward(np.log(startprob), np.log(transmat), log_b[a:b])
        total += log_p
        gammas.append(gamma)
        xi_sum += xi
        first = first + gamma[0]
    gamma = np.concatenate(gammas)
    observed = ~np.isnan(x)
    if family_name == "categorical":
        one_hot = np.stack([x == s for s in range(N_SYMBOLS)], axis=-1).astype(float)
        new_table = np.einsum("nk,nds->kds", gamma, one_hot)
        new_table /= np.einsum("nk,nd->kd", gamma, observed)[..., None]
    else:
        new_table = (gamma.T @ np.where(observed, x, 0)) / (gamma.T @ observed)

    obs, mask = jaxem.pad_sequences(x, LENGTHS)
    known = jaxem.known_states(jaxem.pad_sequences(labels, LENGTHS)[0], N_STATES, np.float64)
    data = (jnp.asarray(obs), jnp.asarray(mask), jnp.asarray(known))
    stats, log_likelihood = engine.statistics(model, params, data)
    updated = model.m_step(stats, params, model.hyper(jnp.float64))

    np.testing.assert_allclose(float(log_likelihood), total, rtol=1e-12)
    posterior = model.posteriors(params, *data)
    np.testing.assert_allclose(
        np.asarray(posterior.smoothed)[np.asarray(mask) > 0], gamma, rtol=1e-9, atol=1e-12
    )
    np.testing.assert_allclose(updated.startprob, first / first.sum(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(
        updated.transmat, xi_sum / xi_sum.sum(1, keepdims=True), rtol=1e-10, atol=1e-13
    )
    got_table = family.to_layout(updated.emissions)["probabilities"]
    np.testing.assert_allclose(got_table, new_table, rtol=1e-10, atol=1e-13)
    # Known steps have posterior 0 (exactly) at every other state.
    smoothed = np.asarray(posterior.smoothed)[np.asarray(mask) > 0]
    known_rows = labels >= 0
    others = np.arange(N_STATES) != labels[known_rows][:, None]
    np.testing.assert_array_equal(smoothed[known_rows][others], 0.0)
    np.testing.assert_allclose(smoothed[known_rows, labels[known_rows]], 1.0, rtol=1e-12)


def _supervised(states, x):
    """The closed-form supervised estimate: counts along the known path."""
    starts = np.cumsum([0] + LENGTHS[:-1])
    startprob = np.bincount(states[starts], minlength=N_STATES) / len(LENGTHS)
    transitions = np.zeros((N_STATES, N_STATES))
    for a, b in zip(starts, np.cumsum(LENGTHS)):
        np.add.at(transitions, (states[a : b - 1], states[a + 1 : b]), 1)
    emissions = np.zeros((N_STATES, N_SYMBOLS))
    np.add.at(emissions, (states, x[:, 0].astype(int)), 1)
    return (
        startprob,
        transitions / transitions.sum(1, keepdims=True),
        emissions / emissions.sum(1, keepdims=True),
    )


def test_every_step_known_gives_the_supervised_estimate():
    states = _path()
    x = _emissions(states, "categorical")[:, :1].astype(np.int64)
    hmm = jaxem.CategoricalHMM(N_STATES, n_iter=3, random_state=0).fit(x, LENGTHS, y=states)
    startprob, transmat, emissionprob = _supervised(states, x)
    assert hmm.startprob_.dtype == np.float64
    np.testing.assert_allclose(hmm.startprob_, startprob, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(hmm.transmat_, transmat, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(hmm.emissionprob_, emissionprob, rtol=1e-12, atol=1e-15)
    # The same through state_prior, one-hot probabilities.
    one_hot = np.eye(N_STATES)[states]
    again = jaxem.CategoricalHMM(N_STATES, n_iter=3, random_state=0).fit(
        x, LENGTHS, state_prior=one_hot
    )
    np.testing.assert_allclose(again.transmat_, transmat, rtol=1e-12, atol=1e-15)


def test_known_steps_keep_their_state_in_predict_and_posteriors():
    states = _path()
    rng = np.random.default_rng(5)
    X = rng.normal(size=(len(states), N_FEATURES)) + 3.0 * states[:, None]
    hmm = jaxem.GaussianHMM(N_STATES, "diag", n_iter=10, random_state=0).fit(X, LENGTHS)
    free = hmm.predict(X, LENGTHS)
    # Known steps at states the free decoding does not choose.
    labels = np.full(len(states), -1)
    chosen = np.arange(0, len(states), 7)
    labels[chosen] = (free[chosen] + 1) % N_STATES
    for algorithm in ("viterbi", "map"):
        _, decoded = hmm.decode(X, LENGTHS, algorithm=algorithm, y=labels)
        np.testing.assert_array_equal(decoded[chosen], labels[chosen])
    posteriors = hmm.predict_proba(X, LENGTHS, y=labels)
    others = np.arange(N_STATES) != labels[chosen][:, None]
    np.testing.assert_array_equal(posteriors[chosen][others], 0.0)
    np.testing.assert_allclose(posteriors[chosen, labels[chosen]], 1.0, rtol=1e-12)
    # Unknown everywhere is the plain model.
    nothing = np.full(len(states), -1)
    np.testing.assert_array_equal(hmm.predict(X, LENGTHS, y=nothing), free)
    np.testing.assert_allclose(
        hmm.predict_proba(X, LENGTHS, y=nothing), hmm.predict_proba(X, LENGTHS), rtol=1e-12
    )


def test_fit_with_nothing_known_equals_the_plain_fit():
    states = _path()
    x = _emissions(states, "categorical")[:, :1].astype(np.int64)
    plain = jaxem.CategoricalHMM(N_STATES, n_iter=5, random_state=0).fit(x, LENGTHS)
    unknown = jaxem.CategoricalHMM(N_STATES, n_iter=5, random_state=0).fit(
        x, LENGTHS, y=np.full(len(states), -1)
    )
    np.testing.assert_allclose(unknown.transmat_, plain.transmat_, rtol=1e-12)
    np.testing.assert_allclose(unknown.emissionprob_, plain.emissionprob_, rtol=1e-12)
    np.testing.assert_allclose(unknown.monitor_.history, plain.monitor_.history, rtol=1e-12)


@pytest.mark.parametrize(
    "y, state_prior, message",
    [
        (np.full(50, 3), None, r"y holds labels outside \[-1, 3\)"),
        (np.full(50, -2), None, r"y holds labels outside \[-1, 3\)"),
        (np.zeros(49, int), None, r"one label per row of X \(50\)"),
        (np.array(["a"] * 50), None, "integer labels"),
        (np.full(50, 0.5), None, "integer labels"),
        (None, np.full((50, 2), 0.5), r"state_prior must have shape"),
        (None, np.full((50, 3), 0.5), "Every row of state_prior must sum to 1"),
        (np.zeros(50, int), np.full((50, 3), 1 / 3), "either labels y or state_prior"),
    ],
)
def test_bad_labels(y, state_prior, message):
    x = _emissions(_path(), "categorical")[:, :1].astype(np.int64)
    hmm = jaxem.CategoricalHMM(N_STATES, n_iter=2, random_state=0)
    with pytest.raises(ValueError, match=message):
        hmm.fit(x, LENGTHS, y=y, state_prior=state_prior)


def test_known_states_helper_messages():
    with pytest.raises(ValueError, match=re.escape("must lie in [-1, 3)")):
        jaxem.known_states([0, 3], 3)
    with pytest.raises(ValueError, match="integer state indices"):
        jaxem.known_states([0.5], 3)
    with pytest.raises(ValueError, match="integer state indices"):
        jaxem.known_states(["a"], 3)


def test_functional_hard_em_decodes_with_known_states(x64):
    """Viterbi training: the decoded paths keep the known states."""
    states = _path()
    x = _emissions(states, "categorical")
    labels = _labels(states, share=0.5)
    obs, mask = jaxem.pad_sequences(x, LENGTHS)
    known = jaxem.known_states(jaxem.pad_sequences(labels, LENGTHS)[0], N_STATES, np.float64)
    model = jaxem.hmm(jaxem.categorical(N_SYMBOLS), N_STATES, assignment="hard")
    data = (jnp.asarray(obs), jnp.asarray(mask), jnp.asarray(known))
    result = jaxem.fit(model, data, key=jax.random.key(0), max_iter=10)
    paths, _ = model.decode(result.params, *data)
    paths = np.asarray(paths)[np.asarray(mask) > 0]
    np.testing.assert_array_equal(paths[labels >= 0], labels[labels >= 0])


# -- CategoricalHMM(missing="em"): a missing symbol is a gap ----------------------------------
def _gapped_symbols():
    states = _path()
    x = _emissions(states, "categorical")[:, :1]
    x[np.random.default_rng(6).random(len(x)) < 0.2] = np.nan
    return states, x


def test_categorical_hmm_with_gaps_one_step_equals_numpy(x64):
    _, x = _gapped_symbols()
    rng = np.random.default_rng(7)
    startprob = rng.dirichlet(np.ones(N_STATES) * 3)
    transmat = rng.dirichlet(np.ones(N_STATES) * 3, N_STATES)
    emissionprob = rng.dirichlet(np.ones(N_SYMBOLS) * 2, N_STATES)
    hmm = jaxem.CategoricalHMM(
        N_STATES, n_features=N_SYMBOLS, n_iter=1, init_params="", missing="em"
    )
    hmm.startprob_, hmm.transmat_, hmm.emissionprob_ = startprob, transmat, emissionprob
    hmm.fit(x, LENGTHS)

    log_b = _log_emission_table(x, "categorical", emissionprob[:, None, :])  # gaps: 0
    starts = np.cumsum([0] + LENGTHS)
    first, xi_sum, gammas = 0.0, 0.0, []
    for a, b in zip(starts[:-1], starts[1:]):
        _, gamma, xi = forward_backward(np.log(startprob), np.log(transmat), log_b[a:b])
        first, xi_sum = first + gamma[0], xi_sum + xi
        gammas.append(gamma)
    gamma = np.concatenate(gammas)
    counts = np.stack([gamma.T @ (x[:, 0] == s) for s in range(N_SYMBOLS)], axis=1)
    np.testing.assert_allclose(hmm.startprob_, first / first.sum(), rtol=1e-10)
    np.testing.assert_allclose(hmm.transmat_, xi_sum / xi_sum.sum(1, keepdims=True), rtol=1e-10)
    np.testing.assert_allclose(
        hmm.emissionprob_, counts / counts.sum(1, keepdims=True), rtol=1e-10, atol=1e-14
    )
    # predict takes the gaps too; -1 codes are the same gaps.
    coded = np.where(np.isnan(x), -1, x).astype(np.int64)
    np.testing.assert_array_equal(hmm.predict(x, LENGTHS), hmm.predict(coded, LENGTHS))


def test_categorical_hmm_without_gaps_equals_the_plain_fit():
    _, x = _gapped_symbols()
    complete = np.where(np.isnan(x), 0, x).astype(np.int64)
    plain = jaxem.CategoricalHMM(N_STATES, n_iter=5, random_state=0).fit(complete, LENGTHS)
    em = jaxem.CategoricalHMM(N_STATES, n_iter=5, random_state=0, missing="em")
    em.fit(complete, LENGTHS)
    np.testing.assert_allclose(em.transmat_, plain.transmat_, rtol=1e-10)
    np.testing.assert_allclose(em.emissionprob_, plain.emissionprob_, rtol=1e-10, atol=1e-14)


def test_categorical_hmm_missing_bad_input():
    _, x = _gapped_symbols()
    with pytest.raises(ValueError, match=re.escape("missing='em') takes NaN")):
        jaxem.CategoricalHMM(N_STATES).fit(x, LENGTHS)
    em = jaxem.CategoricalHMM(N_STATES, missing="em")
    with pytest.raises(ValueError, match="no observed symbol"):
        em.fit(np.full((50, 1), np.nan), LENGTHS)
    with pytest.raises(ValueError, match="infinity"):
        em.fit(np.where(np.isnan(x), np.inf, x), LENGTHS)
    with pytest.raises(ValueError, match="missing must be 'error' or 'em'"):
        jaxem.CategoricalHMM(N_STATES, missing="drop").fit(x, LENGTHS)

"""HMM Viterbi training (``assignment="hard"``) and stochastic EM by forward-filtering
backward-sampling (``assignment="stochastic"``), against numpy references."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

import jaxem
from jaxem.families.gaussian import GaussianParams
from jaxem.models import hmm_inference
from jaxem.models.hmm import HMMParams

LENGTHS = [30, 17, 24]
K = 3


def _data(seed=0, separation=2.5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, size=sum(LENGTHS))
    return rng.normal(size=(sum(LENGTHS), 2)) + separation * labels[:, None]


def _start(x, seed=1):
    rng = np.random.default_rng(seed)
    startprob = rng.dirichlet(np.ones(K))
    transmat = rng.dirichlet(np.ones(K) * 2, size=K)
    means = x[rng.choice(len(x), K, replace=False)]
    return startprob, transmat, means, np.ones((K, 2))


def _numpy_viterbi(log_start, log_trans, log_emission):
    delta = log_start + log_emission[0]
    pointers = []
    for log_e in log_emission[1:]:
        scores = delta[:, None] + log_trans
        pointers.append(scores.argmax(0))
        delta = scores.max(0) + log_e
    path = [int(delta.argmax())]
    for back in reversed(pointers):
        path.append(int(back[path[-1]]))
    return np.array(path[::-1]), delta.max()


def _numpy_viterbi_training(x, start, n_iter, reg_covar):
    """Viterbi training of a diagonal Gaussian HMM: paths, then maximum-likelihood
    counts; returns the parameters and the objective at each iteration."""
    startprob, transmat, means, variances = start
    sequences = np.split(x, np.cumsum(LENGTHS)[:-1])
    objective = []
    for _ in range(n_iter):
        paths, total = [], 0.0
        for seq in sequences:
            log_emission = np.stack(
                [stats.norm(means[k], np.sqrt(variances[k])).logpdf(seq).sum(1) for k in range(K)],
                axis=1,
            )
            with np.errstate(divide="ignore"):  # log 0 = -inf: a transition never seen
                path, score = _numpy_viterbi(np.log(startprob), np.log(transmat), log_emission)
            paths.append(path)
            total += score
        objective.append(total / len(sequences))
        startprob = np.bincount([p[0] for p in paths], minlength=K) / len(sequences)
        pairs = np.zeros((K, K))
        for p in paths:
            np.add.at(pairs, (p[:-1], p[1:]), 1)
        transmat = pairs / pairs.sum(1, keepdims=True)
        states = np.concatenate(paths)
        means = np.stack([x[states == k].mean(0) for k in range(K)])
        variances = np.stack([x[states == k].var(0) + reg_covar for k in range(K)])
    return (startprob, transmat, means, variances), np.array(objective)


def test_hard_hmm_is_viterbi_training(x64):
    x = _data()
    start = _start(x)
    expected, objective = _numpy_viterbi_training(x, start, n_iter=6, reg_covar=1e-6)
    family = jaxem.gaussian("diag")
    model = jaxem.hmm(family, K, assignment="hard")
    init = HMMParams(
        jnp.asarray(start[0]),
        jnp.asarray(start[1]),
        GaussianParams(jnp.asarray(start[2]), jnp.asarray(1 / np.sqrt(start[3]))),
    )
    obs, mask = jaxem.pad_sequences(x, LENGTHS)
    data = (jnp.asarray(obs), jnp.asarray(mask))
    result = jaxem.fit(model, data, key=jax.random.key(0), init_params=init, max_iter=6, tol=0.0)
    np.testing.assert_allclose(result.params.startprob, expected[0], atol=1e-12)
    np.testing.assert_allclose(result.params.transmat, expected[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result.params.emissions.means, expected[2], rtol=1e-10)
    variances = 1 / np.asarray(result.params.emissions.precisions_cholesky) ** 2
    np.testing.assert_allclose(variances, expected[3], rtol=1e-9)
    # The monitored objective: the mean Viterbi path log-probability, never decreasing.
    trace = np.asarray(result.restarts.trace[0][:6])
    np.testing.assert_allclose(trace, objective, rtol=1e-10)
    assert np.all(np.diff(trace) >= -1e-12 * np.abs(trace).max()) and trace[-1] > trace[0] + 1


def test_sampled_paths_follow_the_posterior_over_all_paths(x64):
    """Forward-filtering backward-sampling against the exact posterior of every one of
    the K^T paths (K = 2, T = 4 valid steps and one padded)."""
    rng = np.random.default_rng(0)
    log_start = np.log([0.6, 0.4])
    log_trans = np.log([[0.7, 0.3], [0.25, 0.75]])
    log_emission = rng.normal(size=(5, 2))
    mask = np.array([True] * 4 + [False])
    posterior = hmm_inference.forward_backward(log_start, log_trans, log_emission, mask)
    n_draws = 40_000
    keys = jax.random.split(jax.random.key(0), n_draws)
    paths = jax.vmap(hmm_inference.sample_path, in_axes=(0, None, None, None))(
        keys, jnp.asarray(log_trans), posterior.log_alpha, jnp.asarray(mask)
    )
    paths = np.asarray(paths)
    assert np.all(paths[:, 4] == 0)  # padding
    codes = paths[:, :4] @ (2 ** np.arange(4))
    frequency = np.bincount(codes, minlength=16) / n_draws
    for path in itertools.product(range(2), repeat=4):
        path = np.array(path)
        log_joint = (
            log_start[path[0]]
            + log_trans[path[:-1], path[1:]].sum()
            + log_emission[np.arange(4), path].sum()
        )
        exact = np.exp(log_joint - float(posterior.log_likelihood))
        observed = frequency[path @ (2 ** np.arange(4))]
        # Four standard errors of a frequency from n_draws independent draws.
        assert abs(observed - exact) < 4 * np.sqrt(exact * (1 - exact) / n_draws) + 1e-12


def test_stochastic_hmm_average_is_near_baum_welch(x64):
    x = _data(separation=4.0)  # well separated: label switching is no concern
    obs, mask = jaxem.pad_sequences(x, LENGTHS)
    data = (jnp.asarray(obs), jnp.asarray(mask))
    family = jaxem.gaussian("diag")
    em = jaxem.fit(jaxem.hmm(family, K), data, key=jax.random.key(0), n_restarts=4, tol=1e-10)
    model = jaxem.hmm(family, K, assignment="stochastic")
    sem = jaxem.fit(model, data, key=jax.random.key(1), init_params=em.params, max_iter=200)
    assert sem.n_iter == 200
    order = np.argsort(np.asarray(em.params.emissions.means[:, 0]))
    sem_order = np.argsort(np.asarray(sem.params.emissions.means[:, 0]))
    sd = 1 / np.asarray(em.params.emissions.precisions_cholesky)[order]
    # Expected frames per state, from the EM posterior: the standard error of a mean.
    posterior = model.posteriors(em.params, *data)
    counts = np.asarray(posterior.smoothed).sum((0, 1))[order]
    np.testing.assert_array_less(
        np.abs(
            np.asarray(sem.params.emissions.means)[sem_order]
            - np.asarray(em.params.emissions.means)[order]
        ),
        sd / np.sqrt(counts)[:, None],
    )

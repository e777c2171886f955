"""Hard (classification) EM and stochastic EM: ``assignment="hard"`` / ``"stochastic"``.

References in float64: a numpy Lloyd for hard EM with equal spherical covariances and
equal weights, scipy densities for the classification log-likelihood, and EM's own
solution for stochastic EM's average.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jaxem
from jaxem import engine
from jaxem.families.gaussian import Gaussian, GaussianParams
from jaxem.models.mixture import Mixture
from tests.conftest import make_blobs

X, _ = make_blobs(n_samples=300, n_features=2, n_clusters=3, seed=4, spread=3.0)


@dataclasses.dataclass(frozen=True)
class _SharedSpherical(Gaussian):
    """Spherical components sharing one pooled variance (Celeux and Govaert's [λI])."""

    covariance_type: str = "spherical"

    def m_step(self, stats_, counts, hyper):
        means = super().m_step(stats_, counts, hyper).means
        variance = jnp.sum(stats_.scatter) / (means.shape[-1] * jnp.sum(counts))
        return GaussianParams(means, jnp.full(counts.shape, jax.lax.rsqrt(variance)))


@dataclasses.dataclass(frozen=True)
class _EqualWeights(Mixture):
    """A mixture whose proportions stay 1/K."""

    def m_step(self, stats_, params, hyper):
        new = super().m_step(stats_, params, hyper)
        return new._replace(log_weights=jnp.full_like(new.log_weights, -np.log(self.n_components)))


def _lloyd(x, centers, max_iter=100):
    """Plain numpy Lloyd: labels and centres at the fixed point, and its iterations."""
    labels = None
    for iteration in range(1, max_iter + 1):
        distances = ((x[:, None, :] - centers[None]) ** 2).sum(-1)
        new_labels = distances.argmin(1)
        if labels is not None and np.array_equal(new_labels, labels):
            return labels, centers, iteration
        labels = new_labels
        centers = np.stack([x[labels == k].mean(0) for k in range(len(centers))])
    raise AssertionError("Lloyd did not converge")


def test_hard_em_with_equal_spherical_covariances_and_weights_is_kmeans(x64):
    start = X[[0, 1, 2]]  # three rows: a poor start, so Lloyd needs several iterations
    labels, centers, n_lloyd = _lloyd(X, start)
    assert n_lloyd > 3
    model = _EqualWeights(_SharedSpherical(reg_covar=0.0), 3, assignment="hard")
    init = jaxem.MixtureParams(
        jnp.full((3,), -np.log(3.0)), GaussianParams(jnp.asarray(start), jnp.ones(3))
    )
    result = jaxem.fit(model, X, key=jax.random.key(0), init_params=init, tol=0.0, max_iter=50)
    np.testing.assert_allclose(result.params.components.means, centers, rtol=1e-12, atol=1e-12)
    predicted = engine.evaluate(model, result.params, X, ("predict",))[0]
    np.testing.assert_array_equal(predicted, labels)
    # The classification log-likelihood stopped changing once the labels did.
    trace = np.asarray(result.restarts.trace[0])
    trace = trace[np.isfinite(trace)]
    np.testing.assert_allclose(trace[-1], trace[n_lloyd - 1], rtol=1e-13)


def _classification_log_likelihood(params, x):
    """Mean over rows of max_k log(π_k N(x | μ_k, Σ_k)), by scipy."""
    means = np.asarray(params.components.means)
    chol = np.asarray(params.components.precisions_cholesky)
    log_joint = np.stack(
        [
            np.log(np.exp(params.log_weights[k]))
            + stats.multivariate_normal(means[k], np.linalg.inv(chol[k] @ chol[k].T)).logpdf(x)
            for k in range(len(means))
        ],
        axis=1,
    )
    return log_joint.max(1).mean()


def test_hard_em_classification_log_likelihood_never_decreases(x64):
    # Starts on random rows with unit covariances; no regularisation, so the M-step is
    # the exact maximiser of the classification log-likelihood for the labels.
    model = jaxem.mixture(jaxem.gaussian("full", reg_covar=0.0), 4, assignment="hard")
    rows = np.random.default_rng(3).choice(len(X), size=(4, 4), replace=False)
    init = jaxem.MixtureParams(
        jnp.full((4, 4), -np.log(4.0)),
        GaussianParams(jnp.asarray(X[rows]), jnp.broadcast_to(jnp.eye(2), (4, 4, 2, 2))),
    )
    result = jaxem.fit(model, X, key=jax.random.key(2), init_params=init, n_restarts=4, tol=0.0)
    moved = 0
    for r, row in enumerate(np.asarray(result.restarts.trace)):
        values = row[np.isfinite(row)]
        assert np.all(np.diff(values) >= -1e-12 * np.abs(values).max()), np.diff(values)
        moved += values[-1] > values[0] + 1e-3
        # The objective is the classification log-likelihood of the E-step's parameters.
        first = _classification_log_likelihood(jax.tree.map(lambda leaf, r=r: leaf[r], init), X)
        np.testing.assert_allclose(values[0], first, rtol=1e-12)
    assert moved >= 2  # the check saw restarts that improved
    assert np.all(np.asarray(result.restarts.status) == int(jaxem.Status.MAX_ITER))


def _separated(n_rows=400, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.random(n_rows) < 0.4
    return np.where(labels[:, None], [4.0, 0.0], [0.0, 0.0]) + rng.normal(size=(n_rows, 2))


def test_stochastic_em_average_is_near_the_em_solution(x64):
    x = _separated()
    em = jaxem.fit(
        jaxem.mixture(jaxem.gaussian("diag"), 2), x, key=jax.random.key(0), tol=1e-12, n_restarts=4
    )
    model = jaxem.mixture(jaxem.gaussian("diag"), 2, assignment="stochastic")
    sem = jaxem.fit(model, x, key=jax.random.key(1), max_iter=200, init_params=em.params)
    assert sem.n_iter == 200 and not sem.converged  # no tolerance test: it ran max_iter
    order = np.argsort(np.asarray(sem.params.components.means[:, 0]))
    em_order = np.argsort(np.asarray(em.params.components.means[:, 0]))
    em_means = np.asarray(em.params.components.means)[em_order]
    em_weights = np.exp(np.asarray(em.params.log_weights))[em_order]
    em_sd = 1 / np.asarray(em.params.components.precisions_cholesky)[em_order]
    # Standard errors of the maximum-likelihood means and weights: the iterates of
    # stochastic EM spread about EM's solution by less than these (only the labels'
    # share of the information is random), and the average of 100 of them by less still.
    counts = em_weights * len(x)
    mean_se = em_sd / np.sqrt(counts)[:, None]
    weight_se = np.sqrt(em_weights * (1 - em_weights) / len(x))
    means = np.asarray(sem.params.components.means)[order]
    weights = np.exp(np.asarray(sem.params.log_weights))[order]
    assert np.all(np.abs(means - em_means) < mean_se), (means - em_means) / mean_se
    assert np.all(np.abs(weights - em_weights) < weight_se), (weights - em_weights) / weight_se
    # The reported log-likelihood is that of the returned (averaged) parameters.
    log_prob = engine.evaluate(model, sem.params, x, ("log_prob",))[0]
    np.testing.assert_allclose(sem.log_likelihood, np.mean(log_prob), rtol=1e-12)
    assert sem.log_likelihood <= em.log_likelihood + 1e-12
    # It did draw: the monitored log-likelihood moves from iteration to iteration.
    trace = np.asarray(sem.restarts.trace[0][:200])
    assert np.all(np.isfinite(trace)) and np.unique(trace).size > 10


def test_stochastic_em_is_reproducible_from_the_key_and_independent_of_chunks(x64):
    model = jaxem.mixture(jaxem.gaussian("full"), 3, assignment="stochastic")
    options = dict(n_restarts=2, max_iter=20)
    first = jaxem.fit(model, X, key=jax.random.key(5), **options)
    again = jaxem.fit(model, X, key=jax.random.key(5), **options)
    chunked = jaxem.fit(model, X, key=jax.random.key(5), chunk_size=37, **options)
    other = jaxem.fit(model, X, key=jax.random.key(6), **options)
    for a, b in zip(jax.tree.leaves(first.restarts), jax.tree.leaves(again.restarts)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(first.restarts), jax.tree.leaves(chunked.restarts)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    assert not np.allclose(first.restarts.trace[:, :20], other.restarts.trace[:, :20])
    # A restart's draws depend on its index only: restart 1 alone draws the same.
    alone = jaxem.fit(model, X, key=jax.random.key(5), max_iter=20, first_restart=1)
    np.testing.assert_allclose(alone.restarts.trace[0], first.restarts.trace[1], rtol=1e-10)


def test_stochastic_restarts_draw_differently_from_the_same_start(x64):
    model = jaxem.mixture(jaxem.gaussian("full"), 3, assignment="stochastic")
    x = X + np.random.default_rng(0).normal(scale=2.0, size=X.shape)  # overlapping blobs
    init = engine.initialise(model, x, key=jax.random.key(0))
    init = jax.tree.map(lambda leaf: leaf[0], init)
    result = jaxem.fit(model, x, key=jax.random.key(0), n_restarts=2, init_params=init, max_iter=5)
    trace = np.asarray(result.restarts.trace[:, :5])
    np.testing.assert_array_equal(trace[0, 0], trace[1, 0])  # same start
    assert not np.allclose(trace[0, 1:], trace[1, 1:])  # different draws


@pytest.mark.parametrize("assignment", ["hard", "stochastic"])
def test_a_discrete_family_recovers_its_components(assignment):
    rng = np.random.default_rng(0)
    rates = np.where(rng.random(200) < 0.5, 1.0, 8.0)
    counts = rng.poisson(rates[:, None], size=(200, 2)).astype(np.int64)
    model = jaxem.mixture(jaxem.poisson(), 2, assignment=assignment)
    result = jaxem.fit(model, counts, key=jax.random.key(0), n_restarts=2, max_iter=30)
    rates = np.sort(np.exp(np.asarray(result.params.components.log_rates)).mean(1))
    np.testing.assert_allclose(rates, [1.0, 8.0], rtol=0.25)


def test_unknown_assignment_raises():
    with pytest.raises(ValueError, match=r"assignment must be one of \('soft', 'hard'"):
        jaxem.mixture(jaxem.gaussian("diag"), 2, assignment="fuzzy")


def test_entry_points_without_keys_refuse_stochastic_em():
    model = jaxem.mixture(jaxem.gaussian("diag"), 2, assignment="stochastic")
    x = np.asarray(X, np.float32)
    init = engine.initialise(model, x, key=jax.random.key(0))
    with pytest.raises(ValueError, match="online_step does not run stochastic EM"):
        engine.online_step(model, None, x, init_params=init)
    with pytest.raises(ValueError, match="fit_stream does not run stochastic EM"):
        jaxem.fit_stream(model, x, key=jax.random.key(0))

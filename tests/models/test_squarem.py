"""SQUAREM (``accelerate="squarem"``): the unconstrained parameterisations, the
extrapolation, the monotone safeguard, and the optimum it reaches against plain EM."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import jaxem
from jaxem import _iterate, engine
from jaxem.contract import Family
from jaxem.families.bernoulli import BernoulliParams
from jaxem.families.categorical import CategoricalParams
from jaxem.families.gaussian import GaussianParams
from jaxem.families.multinomial import MultinomialParams
from jaxem.families.poisson import PoissonParams
from jaxem.families.student_t import StudentTParams
from jaxem.models.hmm import HMMParams
from jaxem.models.mixture import MixtureParams

K, D = 3, 2
TOL = 1e-10
MAX_ITER = 1500


def _overlapping(seed=0):
    """Three overlapping Gaussian clusters (EM crawls there): (600, 2) float64."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [1.5, 0.5], [0.0, 2.5]])
    labels = rng.integers(K, size=600)
    return centres[labels] + rng.normal(size=(600, D))


def _triangular(rng, shape):
    factor = np.triu(rng.normal(size=shape + (D, D)))
    index = np.arange(D)
    factor[..., index, index] = rng.uniform(0.5, 2.0, size=shape + (D,))
    return factor


def _family_params(rng):
    """(family, params) for every family and covariance type, float64."""
    probs = rng.dirichlet(np.ones(4), size=(K, D))
    probs[0, 0, 3] = 0.0  # a symbol never seen: floored, as the family's M-step does
    probs /= probs.sum(-1, keepdims=True)
    floored = np.log(np.maximum(probs, np.finfo(np.float64).tiny))
    means = rng.normal(size=(K, D))
    return [
        (jaxem.gaussian("full"), GaussianParams(means, _triangular(rng, (K,)))),
        (jaxem.gaussian("tied"), GaussianParams(means, _triangular(rng, ()))),
        (jaxem.gaussian("diag"), GaussianParams(means, rng.uniform(0.5, 2, (K, D)))),
        (jaxem.gaussian("spherical"), GaussianParams(means, rng.uniform(0.5, 2, (K,)))),
        (
            jaxem.student_t("diag"),
            StudentTParams(means, rng.uniform(0.5, 2, (K, D)), rng.uniform(2, 30, (K,))),
        ),
        (jaxem.categorical(4), CategoricalParams(floored)),
        (jaxem.multinomial(), MultinomialParams(np.log(rng.dirichlet(np.ones(D), size=K)))),
        (jaxem.bernoulli(), BernoulliParams(rng.normal(size=(K, D)))),
        (jaxem.poisson(), PoissonParams(rng.normal(size=(K, D)))),
    ]


def _check_valid(family, params):
    """Parameters in their space: positive factor diagonals and dof, normalised
    probabilities."""
    if isinstance(params, (GaussianParams, StudentTParams)):
        factor = np.asarray(params.precisions_cholesky)
        if family.covariance_type in ("full", "tied"):
            factor = np.diagonal(factor, axis1=-2, axis2=-1)
        assert np.all(factor > 0)
    if isinstance(params, StudentTParams):
        assert np.all(np.asarray(params.degrees_of_freedom) > 0)
    if isinstance(params, (CategoricalParams, MultinomialParams)):
        np.testing.assert_allclose(np.exp(params.log_probs).sum(-1), 1.0, rtol=1e-12)


def test_every_family_round_trips_and_stays_valid_off_the_line(x64):
    rng = np.random.default_rng(0)
    for family, params in _family_params(rng):
        params = jax.tree.map(jnp.asarray, params)
        free = family.unconstrain(params)
        back = family.constrain(free)
        for got, want in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300, err_msg=repr(family))
        # Far along a line through two points of the free space: still valid parameters.
        other = family.unconstrain(jax.tree.map(lambda leaf: leaf * 1.3, params))
        far = jax.tree.map(lambda a, b: a + 7.0 * (b - a), free, other)
        _check_valid(family, family.constrain(far))


def test_gaussian_free_form_is_log_diagonal(x64):
    rng = np.random.default_rng(1)
    factor = jnp.asarray(_triangular(rng, (K,)))
    free = jaxem.gaussian("full").unconstrain(GaussianParams(jnp.zeros((K, D)), factor))
    index = np.arange(D)
    np.testing.assert_allclose(
        free.precisions_cholesky[:, index, index], np.log(factor[:, index, index]), rtol=1e-14
    )
    np.testing.assert_array_equal(free.precisions_cholesky[:, 0, 1], factor[:, 0, 1])


def test_models_keep_zero_probabilities(x64):
    family = jaxem.gaussian("diag")
    means, factors = jnp.zeros((K, D)), jnp.ones((K, D))
    mixture = jaxem.mixture(family, 2, max_components=K)
    params = MixtureParams(jnp.log(jnp.array([0.3, 0.7, 0.0])), GaussianParams(means, factors))
    free = mixture.unconstrain(params)
    assert np.isneginf(free.log_weights[2]) and abs(float(free.log_weights[:2].sum())) < 1e-14
    np.testing.assert_allclose(np.exp(mixture.constrain(free).log_weights), [0.3, 0.7, 0.0])
    hmm = jaxem.hmm(family, K)
    transmat = jnp.array([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8], [0.1, 0.0, 0.9]])
    params = HMMParams(jnp.array([1.0, 0.0, 0.0]), transmat, GaussianParams(means, factors))
    back = hmm.constrain(hmm.unconstrain(params))
    np.testing.assert_allclose(back.transmat, transmat, rtol=1e-14, atol=0)
    np.testing.assert_allclose(back.startprob, [1.0, 0.0, 0.0], rtol=1e-14, atol=0)


def test_extrapolation_of_a_linear_map_lands_on_its_fixed_point(x64):
    # For u_{t+1} = u* + c (u_t - u*), S3's step s = 1 / (1 - c) gives u* exactly;
    # a step cap of 1 gives θ2 (the plain double EM step), of 4 the point at s = 4.
    family = jaxem.poisson()
    rng = np.random.default_rng(2)
    fixed, start = rng.normal(size=(K, D)), rng.normal(size=(K, D))
    c = 0.9
    points = [PoissonParams(jnp.asarray(fixed + c**t * (start - fixed))) for t in range(3)]
    point, step = _iterate.squarem_point(family, *points, jnp.asarray(1e6))
    np.testing.assert_allclose(point.log_rates, fixed, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(step, 1 / (1 - c), rtol=1e-12)
    point, step = _iterate.squarem_point(family, *points, jnp.asarray(1.0))
    np.testing.assert_allclose(point.log_rates, points[2].log_rates, rtol=1e-14, atol=1e-15)
    point, step = _iterate.squarem_point(family, *points, jnp.asarray(4.0))
    r, v = (c - 1) * (start - fixed), (c - 1) ** 2 * (start - fixed)
    np.testing.assert_allclose(point.log_rates, start + 8 * r + 16 * v, rtol=1e-12)
    assert float(step) == 4.0


def test_safeguard_refuses_a_worse_extrapolated_point_and_keeps_a_better_one(x64):
    model = jaxem.mixture(jaxem.poisson(), 2)

    def params(value):
        return MixtureParams(
            jnp.log(jnp.full((2, 2), 0.5)), PoissonParams(jnp.full((2, 2, D), value))
        )

    start = _iterate.start_state(params(0.0), 8, jnp.float64, 100)
    accelerator = _iterate.Squarem(
        phase=jnp.full((2,), 2, jnp.int32),  # both restarts' E-step was at θ'
        start=params(0.0),
        fallback=params(2.0),  # θ2
        step_max=jnp.full((2,), 4.0),
        step=jnp.full((2,), 4.0),
        growth=jnp.full((2,), 4.0),
    )
    before = start._replace(
        params=params(1.0),
        log_likelihood=jnp.array([-1.0, -1.0]),  # objective at θ1
        previous_log_likelihood=jnp.array([-1.5, -1.5]),
        n_iter=jnp.array([5, 5], jnp.int32),
        accelerator=accelerator,
    )
    after = before._replace(
        params=params(3.0),  # M(θ')
        log_likelihood=jnp.array([-2.0, -0.5]),  # objective at θ': worse, better
        previous_log_likelihood=jnp.array([-1.0, -1.0]),
        n_iter=jnp.array([6, 6], jnp.int32),
        status=jnp.array([_iterate.CONVERGED, _iterate.RUNNING], jnp.int32),
        trace=before.trace.at[:, 5].set(jnp.array([-2.0, -0.5])),
    )
    state = _iterate.squarem_update(model, before, after, 5, 100)
    rates = np.asarray(state.params.components.log_rates[:, 0, 0])
    np.testing.assert_array_equal(rates, [2.0, 3.0])  # θ2 for the refused one, M(θ')
    np.testing.assert_array_equal(state.log_likelihood, [-1.0, -0.5])
    np.testing.assert_array_equal(state.trace[:, 5], [-1.0, -0.5])
    # The refused E-step neither converges nor stops the restart.
    np.testing.assert_array_equal(state.status, [_iterate.RUNNING, _iterate.RUNNING])
    np.testing.assert_array_equal(state.accelerator.phase, [0, 0])
    # The step cap shrinks after a refused step at the cap, grows after a taken one;
    # a refusal slows the cap's regrowth.
    np.testing.assert_array_equal(state.accelerator.step_max, [1.0, 16.0])
    np.testing.assert_array_equal(state.accelerator.growth, [2.0, 4.0])
    # A refused step below the cap caps the next ones at that step / growth.
    below = before._replace(
        accelerator=accelerator._replace(step=jnp.full((2,), 12.0), step_max=jnp.full((2,), 16.0))
    )
    state = _iterate.squarem_update(model, below, after, 5, 100)
    np.testing.assert_array_equal(state.accelerator.step_max, [3.0, 16.0])
    np.testing.assert_array_equal(state.accelerator.growth, [2.0, 4.0])


def _fit_both(model, data, n_restarts=2):
    results = [
        engine.fit(
            model,
            data,
            key=jax.random.key(0),
            n_restarts=n_restarts,
            max_iter=MAX_ITER,
            tol=TOL,
            accelerate=accelerate,
        )
        for accelerate in (None, "squarem")
    ]
    return results


def _assert_monotone(result, rounding=1e-12):
    """Every restart's trace never decreases (up to ``rounding`` relative)."""
    trace = np.asarray(result.restarts.trace)
    for row, n_iter in zip(trace, result.restarts.n_iter):
        values = row[:n_iter]
        assert np.all(np.isfinite(values))
        steps = np.diff(values)
        assert steps.min() >= -rounding * np.abs(values).max(), steps.min()


def _gmm_mean_log_likelihood(params, x):
    """float64 reference: mean log-likelihood with scipy's densities."""
    weights = np.exp(np.asarray(params.log_weights))
    means = np.asarray(params.components.means)
    covariances = np.asarray(jaxem.gaussian("full").covariances(params.components))
    log_densities = np.stack(
        [
            np.log(w) + multivariate_normal(m, c).logpdf(x)
            for w, m, c in zip(weights, means, covariances)
        ],
        axis=1,
    )
    return float(logsumexp(log_densities, axis=1).mean())


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_gmm_reaches_plain_em_optimum_monotonically_in_fewer_e_steps(x64, covariance_type):
    x = _overlapping()
    family = jaxem.gaussian(covariance_type)
    plain, squarem = _fit_both(jaxem.mixture(family, K), x)
    assert np.all(plain.restarts.status == _iterate.CONVERGED)
    assert np.all(squarem.restarts.status == _iterate.CONVERGED)
    np.testing.assert_allclose(
        squarem.restarts.log_likelihood, plain.restarts.log_likelihood, rtol=0, atol=1e-6
    )
    _assert_monotone(squarem)
    # Against scipy: SQUAREM's parameters are plain EM's optimum.
    reference = _gmm_mean_log_likelihood(_as_full(family, squarem.params), x)
    assert abs(reference - plain.log_likelihood) < 1e-6
    np.testing.assert_allclose(
        np.sort(squarem.params.components.means, axis=0),
        np.sort(plain.params.components.means, axis=0),
        atol=1e-3,
    )
    assert squarem.restarts.n_iter.sum() * 3 < plain.restarts.n_iter.sum()


def _as_full(family, params):
    """Mixture params with full precision factors, for the scipy reference."""
    if family.covariance_type == "full":
        return params
    covariances = np.asarray(family.covariances(params.components))
    full = jaxem.gaussian("full").params_from_covariances(
        params.components.means, jnp.asarray(np.stack([np.diag(c) for c in covariances]))
    )
    return params._replace(components=full)


def test_hmm_reaches_plain_em_optimum_monotonically(x64):
    rng = np.random.default_rng(3)
    states = np.zeros(600, int)
    for t in range(1, 600):
        states[t] = states[t - 1] if rng.random() < 0.9 else rng.integers(K)
    x = rng.normal(np.array([0.0, 1.0, 2.0])[states], 1.0)[:, None]
    obs, mask = jaxem.pad_sequences(x, [200, 200, 200])
    model = jaxem.hmm(jaxem.gaussian("diag"), n_states=K)
    plain, squarem = _fit_both(model, (jnp.asarray(obs), jnp.asarray(mask)))
    # Per sequence: 200 samples each, so 1e-6 per sample is 2e-4 per sequence.
    np.testing.assert_allclose(
        squarem.restarts.log_likelihood, plain.restarts.log_likelihood, rtol=0, atol=2e-4
    )
    _assert_monotone(squarem)
    assert squarem.restarts.n_iter.sum() * 2 < plain.restarts.n_iter.sum()


def test_categorical_mixture_reaches_plain_em_optimum_monotonically(x64):
    rng = np.random.default_rng(4)
    x = np.concatenate(
        [
            rng.choice(4, (300, 3), p=[0.4, 0.3, 0.2, 0.1]),
            rng.choice(4, (300, 3), p=[0.1, 0.2, 0.3, 0.4]),
        ]
    )
    plain, squarem = _fit_both(jaxem.mixture(jaxem.categorical(4), 2), x)
    np.testing.assert_allclose(
        squarem.restarts.log_likelihood, plain.restarts.log_likelihood, rtol=0, atol=1e-6
    )
    _assert_monotone(squarem)
    probabilities = np.exp(np.asarray(squarem.params.components.log_probs))
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-12)
    assert squarem.restarts.n_iter.sum() < plain.restarts.n_iter.sum()


@dataclasses.dataclass(frozen=True)
class _OpaqueGaussian(type(jaxem.gaussian("diag"))):
    """A family that does not declare an unconstrained parameterisation."""

    unconstrain = Family.unconstrain
    constrain = Family.constrain


@pytest.mark.parametrize("value", ["SQUAREM", "anderson", 1, True])
def test_bad_accelerate_values_raise(value):
    x = _overlapping()[:50].astype(np.float32)
    with pytest.raises(ValueError, match="accelerate must be one of"):
        engine.fit(
            jaxem.mixture(jaxem.gaussian("diag"), 2), x, key=jax.random.key(0), accelerate=value
        )
    with pytest.raises(ValueError, match="accelerate"):
        jaxem.GaussianMixture(2, accelerate=value).fit(x)


@pytest.mark.parametrize(
    "model, name",
    [
        (jaxem.mixture(jaxem.gaussian("diag"), 2, assignment="stochastic"), "stochastic EM"),
        (
            jaxem.bayesian_mixture(
                jaxem.gaussian("diag"), 2, mean_prior=np.zeros(D), covariance_prior=np.ones(D)
            ),
            "BayesianMixture",
        ),
        (jaxem.kmeans(2), "KMeans"),
        (jaxem.factor_analysis(1), "LatentLinear"),
        (jaxem.mixture(_OpaqueGaussian(), 2), "_OpaqueGaussian"),
    ],
)
def test_models_it_does_not_apply_to_are_refused_by_name(model, name):
    x = _overlapping()[:50].astype(np.float32)
    with pytest.raises(ValueError, match=name):
        engine.fit(model, x, key=jax.random.key(0), accelerate="squarem")


def test_estimator_option_matches_plain_em_and_online_refuses(x64):
    x = _overlapping()
    options = dict(n_init=1, tol=TOL, max_iter=MAX_ITER, random_state=0)
    plain = jaxem.GaussianMixture(K, **options).fit(x)
    fast = jaxem.GaussianMixture(K, accelerate="squarem", **options).fit(x)
    assert abs(fast.lower_bound_ - plain.lower_bound_) < 1e-6
    assert fast.n_iter_ * 2 < plain.n_iter_
    assert np.all(np.diff(fast.lower_bounds_) >= -1e-12)
    with pytest.raises(ValueError, match="online EM"):
        jaxem.GaussianMixture(K, accelerate="squarem").partial_fit(x)
    with pytest.raises(ValueError, match="online EM"):
        jaxem.GaussianHMM(K, accelerate="squarem").partial_fit(x)


def test_float32_fit_is_accurate_to_float32():
    x = _overlapping()
    model = jaxem.mixture(jaxem.gaussian("diag"), K)
    # The same fit in float64 (same tol: on these overlapping clusters 1e-5 stops well
    # short of the optimum, in either precision).
    with jax.enable_x64(True):
        reference = engine.fit(
            model, x, key=jax.random.key(0), max_iter=MAX_ITER, tol=1e-5, accelerate="squarem"
        )
    single = engine.fit(
        model,
        x.astype(np.float32),
        key=jax.random.key(0),
        max_iter=MAX_ITER,
        tol=1e-5,
        accelerate="squarem",
    )
    assert single.params.components.means.dtype == np.float32
    assert single.converged
    # The same path (E-steps) and objective; the means are not compared: the likelihood
    # is so flat here that float32's rounding of it moves them by ~1e-4.
    assert single.n_iter == reference.n_iter
    assert abs(float(single.log_likelihood) - float(reference.log_likelihood)) < 1e-5
    _assert_monotone(single, rounding=1e-6)


def test_every_hmm_estimator_takes_accelerate_and_gmm_emissions_refuse_it():
    """The HMM estimators share the parameter; a family without an unconstrained
    parameterisation (GMMHMM's mixtures of Gaussians) is refused by name."""
    for estimator in (jaxem.GMMHMM(), jaxem.MultinomialHMM(), jaxem.PoissonHMM()):
        assert estimator.get_params()["accelerate"] is None
    X = np.random.default_rng(0).normal(size=(60, 2))
    with pytest.raises(ValueError, match="GMM has no unconstrained parameterisation"):
        jaxem.GMMHMM(2, n_mix=2, accelerate="squarem").fit(X)

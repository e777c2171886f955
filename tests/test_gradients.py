"""Gradients through an EM fit (:func:`jaxem.fit_differentiable`), in float64.

Implicit gradients of the fitted parameters and log-likelihood with respect to the
data, the sample weights and a numeric hyperparameter match central finite
differences of the fit itself (relative 1e-5) for every Gaussian covariance type, a
Bayesian Gaussian mixture (variational EM), a Poisson and a categorical mixture, a
Gaussian HMM and a mixture of linear regressions; implicit and unrolled
gradients agree at convergence; gradients compose with ``jax.jit`` and ``jax.vmap``
and compile nothing the second time; a failed adjoint solve raises.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from tests.conftest import jit_small

pytestmark = pytest.mark.usefixtures("x64")

#: The fixed point for finite differences: EM run to machine precision (tol 0).
_TIGHT = dict(tol=0.0, max_iter=400)
#: The fit whose implicit gradient is taken: converged (status CONVERGED).
_CONVERGED = dict(tol=1e-14, max_iter=400)


def _two_clusters(n=90, seed=0):
    rng = np.random.RandomState(seed)
    half = n // 2
    first = rng.randn(half, 2) @ np.array([[1.0, 0.3], [0.0, 0.8]])
    second = rng.randn(n - half, 2) * 0.7 + [4.0, 3.0]
    return np.concatenate([first, second]), rng.uniform(0.5, 1.5, n)


def _start(model, x, seed, **options):
    """Fitted parameters to start from, in one compiled program (run op by op, the
    model's k-means initialisation alone takes about 10 s)."""
    fit = jit_small(
        lambda x: jaxem.fit_differentiable(model, x, key=jax.random.key(seed), **options)
    )
    return fit(x).params


def _projection(params, seed):
    """A fixed random linear functional of the parameters (-inf entries skipped)."""
    rng = np.random.RandomState(seed)
    weights = [jnp.asarray(rng.randn(*np.shape(leaf))) for leaf in jax.tree.leaves(params)]

    def project(params):
        return sum(
            jnp.vdot(jnp.where(jnp.isfinite(leaf), leaf, 0.0), weight)
            for leaf, weight in zip(jax.tree.leaves(params), weights)
        )

    return project


def _fit_loss(model, start, *, seed, hyper_field, make_data=lambda data: data, scale=1.0):
    """``loss(data, weights, value, **fit_options)``: a random projection of the fitted
    parameters plus ``scale`` × the log-likelihood, fitted from ``start`` with the
    family hyperparameter ``hyper_field`` set to ``value``."""
    project = _projection(start, seed)
    hyper = model.hyper(jnp.float64)

    def loss(data, weights, value, **options):
        default = getattr(hyper.family, hyper_field)
        family = hyper.family._replace(**{hyper_field: jnp.full_like(default, value)})
        fit = jaxem.fit_differentiable(
            model,
            make_data(data),
            weights=weights,
            hyper=hyper._replace(family=family),
            init_params=start,
            **options,
        )
        return project(fit.params) + scale * fit.log_likelihood

    return loss


def _largest(gradient, count):
    flat = np.abs(np.asarray(gradient)).reshape(-1)
    return np.argsort(flat)[::-1][:count]


def _check_against_finite_differences(loss, arguments, which, step=1e-5, count=3):
    """``jax.grad(loss)`` (implicit) against central differences of ``loss`` run with
    ``_TIGHT`` fits, on the ``count`` largest entries of each argument in ``which``."""
    gradients = jit_small(jax.grad(lambda *a: loss(*a, **_CONVERGED), argnums=which))(*arguments)
    tight = jit_small(lambda *a: loss(*a, **_TIGHT))
    errors = {}
    for position, gradient in zip(which, gradients):
        for index in _largest(gradient, count):
            values = []
            for sign in (1, -1):
                moved = [np.array(a, dtype=np.float64, copy=True) for a in arguments]
                flat = moved[position].reshape(-1)
                flat[index] += sign * step
                values.append(float(tight(*moved)))
            numeric = (values[0] - values[1]) / (2 * step)
            analytic = float(np.asarray(gradient).reshape(-1)[index])
            errors[(position, int(index))] = abs(numeric - analytic) / abs(numeric)
    worst = max(errors.values())
    assert worst < 1e-5, errors
    return gradients


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
def test_gaussian_mixture_gradients_match_finite_differences(covariance_type):
    x, weights = _two_clusters()
    model = jaxem.mixture(jaxem.gaussian(covariance_type), 2)
    start = _start(model, x, 0, **_CONVERGED)
    loss = _fit_loss(model, start, seed=1, hyper_field="reg_covar", scale=3.0)
    _check_against_finite_differences(loss, (x, weights, np.float64(1e-2)), which=(0, 1, 2))


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_bayesian_mixture_gradients_match_finite_differences(covariance_type):
    """Variational EM's fixed point: the posterior and its lower bound."""
    x, weights = _two_clusters()
    family = jaxem.gaussian(covariance_type)
    prior = family.default_covariance_prior(x)
    model = jaxem.bayesian_mixture(family, 2, mean_prior=x.mean(0), covariance_prior=prior)
    start = _start(model, x, 0, **_CONVERGED)
    loss = _fit_loss(model, start, seed=4, hyper_field="reg_covar", scale=0.1)
    _check_against_finite_differences(loss, (x, weights, np.float64(1e-2)), which=(0, 1, 2))


def test_poisson_mixture_gradients_match_finite_differences():
    rng = np.random.RandomState(3)
    x = np.concatenate([rng.poisson(2.0, (60, 3)), rng.poisson(9.0, (60, 3))]).astype(float)
    weights = rng.uniform(0.5, 1.5, len(x))
    model = jaxem.mixture(jaxem.poisson(rates_prior=1.0, rates_weight=2.0), 2)
    start = _start(model, x, 0, **_CONVERGED)
    loss = _fit_loss(model, start, seed=2, hyper_field="rates_prior")
    _check_against_finite_differences(loss, (x, weights, np.float64(1.0)), which=(0, 1, 2))


def test_categorical_mixture_gradients_match_finite_differences():
    """Symbols are integers (no gradient); the weights and the prior have one."""
    rng = np.random.RandomState(4)
    x = np.concatenate(
        [
            rng.choice(4, (60, 2), p=[0.7, 0.1, 0.1, 0.1]),
            rng.choice(4, (60, 2), p=[0.1, 0.1, 0.2, 0.6]),
        ]
    )
    weights = rng.uniform(0.5, 1.5, len(x))
    model = jaxem.mixture(jaxem.categorical(4, prior=1.5), 2, init="random_from_data")
    start = _start(model, x, 2, **_CONVERGED)
    loss = _fit_loss(model, start, seed=3, hyper_field="prior")
    symbols_fixed = lambda weights, prior, **options: loss(x, weights, prior, **options)  # noqa: E731
    _check_against_finite_differences(symbols_fixed, (weights, np.float64(1.5)), which=(0, 1))


def test_gaussian_hmm_gradients_match_finite_differences():
    """Through forward-backward: observations, per-sequence weights and reg_covar."""
    rng = np.random.RandomState(5)
    states = np.zeros((4, 30), int)
    for s in range(4):
        for t in range(1, 30):
            states[s, t] = states[s, t - 1] if rng.rand() < 0.85 else 1 - states[s, t - 1]
    observations = np.array([[0.0, 1.0], [4.0, -2.0]])[states] + 0.6 * rng.randn(4, 30, 2)
    mask = np.ones((4, 30), bool)
    weights = np.array([1.0, 0.7, 1.3, 0.9])
    model = jaxem.hmm(jaxem.gaussian("diag"), 2)
    data = (observations, mask)
    start = _start(model, data, 0, **_CONVERGED)
    loss = _fit_loss(
        model,
        start,
        seed=4,
        hyper_field="reg_covar",
        make_data=lambda observations: (observations, mask),
    )

    arguments = (observations, weights, np.float64(1e-2))
    gradients = _check_against_finite_differences(loss, arguments, which=(0, 1, 2))
    assert np.all(np.isfinite(gradients[0]))


def test_implicit_and_unrolled_gradients_agree_at_convergence():
    x, weights = _two_clusters()
    model = jaxem.mixture(jaxem.gaussian("full"), 2)
    start = _start(model, x, 0, max_iter=3)

    def loss(x, weights, adjoint, **options):
        fit = jaxem.fit_differentiable(
            model, x, weights=weights, init_params=start, adjoint=adjoint, **options
        )
        means = fit.params.components.means
        return jnp.sum(means[:, 0] * means[:, 1]) + fit.log_likelihood

    def gradient(adjoint, **options):
        function = functools.partial(loss, adjoint=adjoint, **options)
        return jit_small(jax.grad(function, argnums=(0, 1)))(x, weights)

    implicit = gradient("implicit", **_CONVERGED)
    unrolled = gradient("unrolled", max_iter=150)
    iterated = gradient("implicit", adjoint_solver="iteration", **_CONVERGED)
    for a, b, c in zip(implicit, unrolled, iterated):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9 * np.abs(b).max())
        np.testing.assert_allclose(c, b, rtol=1e-7, atol=1e-9 * np.abs(b).max())
    # Truncated early, the unrolled gradient is that of the iterations run: it differs.
    early = gradient("unrolled", max_iter=2)[0]
    assert np.abs(early - implicit[0]).max() > 1e-3 * np.abs(implicit[0]).max()


def test_unrolled_fit_has_a_forward_mode():
    """``jax.jvp`` goes through ``adjoint="unrolled"`` (plain JAX) and gives the
    directional derivative that reverse mode gives; the implicit gradient has only a
    reverse mode (a custom VJP), and says so."""
    x, weights = _two_clusters()
    model = jaxem.mixture(jaxem.gaussian("full"), 2)
    start = _start(model, x, 0, max_iter=3)

    def loss(x, adjoint="unrolled"):
        fit = jaxem.fit_differentiable(
            model, x, weights=weights, init_params=start, adjoint=adjoint, max_iter=20
        )
        return jnp.sum(fit.params.components.means**2) + fit.log_likelihood

    direction = np.random.RandomState(1).randn(*x.shape)
    _, forward = jit_small(lambda x, t: jax.jvp(loss, (x,), (t,)))(x, direction)
    reverse = jnp.vdot(jit_small(jax.grad(loss))(x), direction)
    np.testing.assert_allclose(forward, reverse, rtol=1e-9)
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda x: loss(x, "implicit"), (x,), (direction,))


def test_gradients_compose_with_jit_and_vmap_and_compile_once(count_compiles):
    """Per data set and per restart under ``vmap``; equal to one-by-one gradients; a
    second call with new values compiles nothing."""
    model = jaxem.mixture(jaxem.gaussian("diag"), 2)
    sets = np.stack([_two_clusters(seed=s)[0] for s in range(3)])

    def mean_spread(x, key):
        fit = jaxem.fit_differentiable(model, x, key=key, n_restarts=2, tol=1e-10)
        means = fit.params.components.means
        return jnp.sum((means[0] - means[1]) ** 2)

    per_set = jit_small(jax.vmap(jax.grad(mean_spread), in_axes=(0, None)))
    batched = per_set(sets, jax.random.key(0))
    single = jit_small(jax.grad(mean_spread))
    for one, x in zip(batched, sets):
        np.testing.assert_allclose(one, single(x, jax.random.key(0)), rtol=1e-9)
    with count_compiles() as counter:
        again = per_set(sets + 0.1, jax.random.key(1))
        jax.block_until_ready(again)
    assert counter.count == 0
    assert np.all(np.isfinite(again))

    # Per restart: each start's own fixed point, differentiated in one program.
    starts = jit_small(
        jax.vmap(lambda k: jaxem.fit_differentiable(model, sets[0], key=k, max_iter=0).params)
    )(jax.random.split(jax.random.key(3), 4))

    def from_start(start, x):
        fit = jaxem.fit_differentiable(model, x, init_params=start, tol=1e-10)
        return fit.log_likelihood

    per_restart = jit_small(jax.vmap(jax.grad(from_start, argnums=1), in_axes=(0, None)))(
        starts, sets[0]
    )
    assert per_restart.shape == (4,) + sets[0].shape
    assert np.all(np.isfinite(per_restart))


def _program_bytes(compiled) -> int:
    """XLA's buffer assignment of a compiled program: the peak it can reach."""
    analysis = compiled.memory_analysis()
    return (
        analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        + analysis.temp_size_in_bytes
        - analysis.alias_size_in_bytes
    )


def test_implicit_gradient_memory_stays_near_the_fits():
    """Every reverse pass (the adjoint's and the log-likelihood's) runs over small
    chunks (an eighth of the fit's, at most 2,048 rows on the CPU), so the gradient
    program needs little more than the fit's. Measured by XLA's buffer assignment (no
    timing): 1.53x the fit here (75 MB), 4.8x with reverse passes over the fit's
    chunks; 1.41x in benchmarks/gradients.py at N=100,000, D=K=16. At D=16, as the
    benchmark: the backward's extra buffers scale with the data (N x D) and the fit's
    with its features (N x D(D+3)/2), so at D=8 the ratio is 2.0x (22 MB against
    11 MB; 39 MB against 26 MB before the features stopped being copied)."""
    rng = np.random.RandomState(0)
    x = jnp.asarray(rng.randn(20_000, 16) + 3.0 * rng.randint(0, 4, (20_000, 1)))
    model = jaxem.mixture(jaxem.gaussian("full"), 8)
    start = jax.tree.map(
        lambda leaf: leaf[0], jaxem.engine.initialise(model, x, key=jax.random.key(0))
    )

    def fit(x):
        return jaxem.fit_differentiable(model, x, init_params=start, tol=1e-6, max_iter=50)

    def loss(x):
        result = fit(x)
        return result.log_likelihood + jnp.sum(result.params.components.means**2)

    # JAX's default options, as users compile: the memory measured is theirs.
    forward = jax.jit(lambda x: fit(x).log_likelihood).lower(x).compile()
    gradient = jax.jit(jax.grad(loss)).lower(x).compile()
    assert _program_bytes(gradient) <= 1.75 * _program_bytes(forward)


def test_failed_adjoint_solve_raises_instead_of_nan():
    x, _ = _two_clusters()
    model = jaxem.mixture(jaxem.gaussian("full"), 2)
    start = _start(model, x, 0, max_iter=0)  # the model's init, compiled once

    def loss(x, **options):
        return jaxem.fit_differentiable(model, x, init_params=start, **options).log_likelihood

    failures = (jaxem.AdjointNotConverged, jax.errors.JaxRuntimeError)
    with pytest.raises(failures, match="adjoint solve did not converge within 1 steps"):
        jit_small(jax.grad(lambda x: loss(x, tol=1e-12, adjoint_max_iter=1, adjoint_tol=1e-14)))(x)
    with pytest.raises(failures, match="adjoint solve did not converge within 1 steps"):
        options = dict(adjoint_solver="iteration", adjoint_max_iter=1, adjoint_tol=1e-14)
        jit_small(jax.grad(lambda x: loss(x, tol=1e-12, **options)))(x)
    with pytest.raises(failures, match="the fit had not converged"):
        jit_small(jax.grad(lambda x: loss(x, tol=0.0, max_iter=3)))(x)
    # The forward pass alone never raises: the status says how the fit ended.
    fit = jaxem.fit_differentiable(model, x, init_params=start, tol=0.0, max_iter=3)
    assert int(fit.status) == int(jaxem.MAX_ITER)


def test_bad_arguments_are_named():
    model = jaxem.mixture(jaxem.gaussian("diag"), 2)
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match="adjoint must be one of"):
        jaxem.fit_differentiable(model, x, key=jax.random.key(0), adjoint="backprop")
    with pytest.raises(ValueError, match="Pass key= .* or init_params="):
        jaxem.fit_differentiable(model, x)
    with pytest.raises(ValueError, match="adjoint_solver must be one of"):
        jaxem.fit_differentiable(model, x, key=jax.random.key(0), adjoint_solver="cg")
    with pytest.raises(ValueError, match="adjoint_max_iter must be a positive int"):
        jaxem.fit_differentiable(model, x, key=jax.random.key(0), adjoint_max_iter=0)


def test_kmeans_gradient_is_that_of_fixed_assignments():
    """k-means centres are weighted means of their rows, piecewise smooth in the data:
    the gradient holds the assignments fixed (d centre / d row = w_row / W_cluster,
    d centre / d w_row = (row - centre) / W_cluster)."""
    rng = np.random.RandomState(6)
    x = np.concatenate([rng.randn(30, 2), rng.randn(30, 2) + 6.0])
    weights = rng.uniform(0.5, 1.5, 60)
    model = jaxem.kmeans(2)

    def first_coordinates(x, weights):
        fit = jaxem.fit_differentiable(
            model, x, weights=weights, key=jax.random.key(0), tol=1e-12, max_iter=50
        )
        return fit.params.centers[:, 0], fit.params.centers

    (grad_x, grad_w), centers = jit_small(
        jax.jacrev(first_coordinates, argnums=(0, 1), has_aux=True)
    )(x, weights)
    labels = np.argmin(((x[:, None] - np.asarray(centers)[None]) ** 2).sum(-1), axis=1)
    for k in range(2):
        owned = labels == k
        total = weights[owned].sum()
        expected_x = np.where(owned, weights / total, 0.0)
        np.testing.assert_allclose(grad_x[k, :, 0], expected_x, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(grad_x[k, :, 1], 0.0, atol=1e-14)
        expected_w = np.where(owned, (x[:, 0] - centers[k, 0]) / total, 0.0)
        np.testing.assert_allclose(grad_w[k], expected_w, rtol=1e-8, atol=1e-12)


def test_regression_mixture_gradients_match_finite_differences():
    """Two crossing lines: inputs, responses, sample weights and the ridge ``reg``."""
    rng = np.random.RandomState(6)
    x = rng.uniform(-2, 2, (90, 1))
    y = np.where(np.arange(90) % 2 == 0, 2 * x[:, 0], 1 - x[:, 0]) + 0.2 * rng.randn(90)
    weights = rng.uniform(0.5, 1.5, 90)
    model = jaxem.regression_mixture(2)
    start = _start(model, jaxem.RegressionRows(x, y), 0, **_CONVERGED)
    project = _projection(start, 5)
    hyper = model.hyper(jnp.float64)

    def loss(x, y, weights, reg, **options):
        fit = jaxem.fit_differentiable(
            model,
            jaxem.RegressionRows(x, y),
            weights=weights,
            hyper=hyper._replace(reg=reg),
            init_params=start,
            **options,
        )
        return project(fit.params) + fit.log_likelihood

    arguments = (x, y, weights, np.float64(1e-2))
    _check_against_finite_differences(loss, arguments, which=(0, 1, 2, 3))

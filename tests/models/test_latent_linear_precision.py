"""Factor analysis's E-step in float32 and float64 against float64 numpy references,
under a restart axis as the engine runs it, and the structure that keeps float32 off
XLA:CPU's slow path (no per-restart ``(rows, D)`` array summed over its rows)."""

import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem

N_ROWS, N_FEATURES, N_LATENT, N_RESTARTS = 40, 7, 2, 3


def _data(seed=0):
    """Strong factors over small noise (Woodbury's Σ d²/Ψ - |L⁻¹ W Ψ⁻¹ d|² cancels
    by ~100x), about a mean far from the origin."""
    rng = np.random.default_rng(seed)
    loadings = rng.normal(scale=4.0, size=(N_LATENT, N_FEATURES))
    noise = rng.uniform(0.05, 0.2, size=N_FEATURES)
    z = rng.normal(size=(N_ROWS, N_LATENT))
    x = z @ loadings + rng.normal(size=(N_ROWS, N_FEATURES)) * np.sqrt(noise) + 30.0
    params = jaxem.LatentLinearParams(
        # Restart means off the rows' mean by up to 3 standard deviations.
        x.mean(0) + rng.normal(scale=3.0, size=(N_RESTARTS, N_FEATURES)),
        loadings * rng.uniform(0.8, 1.2, size=(N_RESTARTS, 1, 1)),
        noise * rng.uniform(0.8, 1.2, size=(N_RESTARTS, N_FEATURES)),
    )
    return x, params


def _reference(params, x, weights):
    """Statistics and summed log-likelihood of one restart, float64 numpy, by the
    D x D covariance."""
    mean, w, psi = (np.asarray(leaf, np.float64) for leaf in params)
    covariance = w.T @ w + np.diag(psi)
    d = x - mean
    latent = d @ np.linalg.solve(covariance, w.T)  # E[z | x] = W C⁻¹ d
    _, log_det = np.linalg.slogdet(covariance)
    quadratic = np.einsum("nd,nd->n", d, np.linalg.solve(covariance, d.T).T)
    log_density = -0.5 * (N_FEATURES * np.log(2 * np.pi) + log_det + quadratic)
    # Each statistic's rows' terms: their sum is the statistic, the sum of their
    # absolute values the scale of its rounding.
    terms = (
        weights,
        weights[:, None] * d,
        weights[:, None] * d * d,
        np.einsum("n,nd,nq->ndq", weights, d, latent),
        weights[:, None] * latent,
        np.einsum("n,nq,np->nqp", weights, latent, latent),
    )
    return terms, weights @ log_density, log_density


def _e_step(model, params, x, weights):
    batched = jax.vmap(model.e_step, in_axes=(0, None, None, None))
    return jax.jit(batched)(params, x, weights, model.hyper(x.dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_e_step_under_a_restart_axis_matches_float64(dtype, x64):
    x, params = _data()
    weights = np.random.default_rng(1).uniform(0.5, 2.0, size=N_ROWS)
    weights[3] = 0.0
    data = x.astype(dtype)
    data[3] = np.inf  # a row of weight 0 may hold anything
    model = jaxem.factor_analysis(N_LATENT)
    cast = jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype), params)
    stats, log_likelihood = _e_step(model, cast, jnp.asarray(data), jnp.asarray(weights, dtype))
    eps = np.finfo(dtype).eps
    for r in range(N_RESTARTS):
        used = weights > 0
        restart = jax.tree.map(lambda leaf, r=r: np.asarray(leaf[r]), cast)
        terms, total, _ = _reference(restart, x[used].astype(dtype), weights[used])
        for name, got, term in zip(stats._fields, stats, terms):
            got = np.asarray(got[r], np.float64)
            # A few hundred rounding steps of the largest sum of absolute terms.
            scale = np.abs(term).sum(0).max()
            np.testing.assert_allclose(
                got, term.sum(0), rtol=0, atol=300 * eps * scale, err_msg=name
            )
        np.testing.assert_allclose(float(log_likelihood[r]), total, rtol=100 * eps)


def test_float32_log_density_is_accurate_to_float32(x64):
    """Rows within 4 ulps of the float64 value, unbiased: Woodbury's difference was
    off by ~100 ulps here (the float32 fit 'above the float64 maximum')."""
    x, params = _data(2)
    model = jaxem.factor_analysis(N_LATENT)
    restart = jax.tree.map(lambda leaf: np.asarray(leaf[0]), params)
    _, _, expected = _reference(restart, x, np.ones(N_ROWS))
    single = jax.tree.map(lambda leaf: jnp.asarray(leaf, jnp.float32), restart)
    got = np.asarray(model.log_prob(single, jnp.asarray(x, jnp.float32)), np.float64)
    # The reference from the float32-rounded inputs: only the computation's error left.
    rounded = jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), single)
    _, _, expected = _reference(rounded, x.astype(np.float32).astype(np.float64), np.ones(N_ROWS))
    ulp = np.spacing(np.abs(expected).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - expected) / ulp) <= 4
    assert abs(np.mean(got - expected)) <= np.mean(ulp)


def _equations(jaxpr):
    for equation in jaxpr.eqns:
        yield equation
        for value in equation.params.values():
            for inner in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(inner, jax_core.ClosedJaxpr):
                    yield from _equations(inner.jaxpr)
                elif isinstance(inner, jax_core.Jaxpr):
                    yield from _equations(inner)


def test_no_per_restart_rows_are_summed_over_rows():
    """XLA:CPU's float32 column sums of per-restart (rows, D) products under vmap
    took 34 ms where the rows' own took 1 ms (8,192 rows, D = 256): every sum over
    the rows of a (restarts, rows, D) array must go through the shared rows."""
    x, params = _data()
    model = jaxem.factor_analysis(N_LATENT)
    cast = jax.tree.map(lambda leaf: jnp.asarray(leaf, jnp.float32), params)
    batched = jax.vmap(model.e_step, in_axes=(0, None, None, None))
    weights = jnp.ones(N_ROWS, jnp.float32)
    jaxpr = jax.make_jaxpr(batched)(
        cast, jnp.asarray(x, jnp.float32), weights, model.hyper(jnp.float32)
    ).jaxpr
    per_restart_rows = (N_RESTARTS, N_ROWS, N_FEATURES)
    found = []
    for equation in _equations(jaxpr):
        name = equation.primitive.name
        for index, operand in enumerate(equation.invars):
            if getattr(operand.aval, "shape", None) != per_restart_rows:
                continue
            if name in ("reduce_sum", "reduce_max") and 1 in equation.params["axes"]:
                found.append(name)
            if name == "dot_general":
                (contracting, _), _ = equation.params["dimension_numbers"]
                if 1 in contracting[index]:
                    found.append(name)
    # Sanity: the structure is visible here (the per-row quadratic sums over D).
    assert any(
        getattr(v.aval, "shape", None) == per_restart_rows
        for e in _equations(jaxpr)
        for v in e.invars
    )
    assert not found

"""The model contract and the engine, checked for every model.

Every model under the engine must pass these: additive statistics, zero-weight
padding that changes nothing, non-decreasing log-likelihood for every restart,
batched restarts equal to independent runs, chunked equal to unchunked, one
compile per structure and shapes, and failed restarts never selected.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from jaxem import _iterate, engine
from tests.conftest import make_blobs

MODELS = {
    "mixture-full": lambda: jaxem.mixture(jaxem.gaussian("full"), 3, init="k-means++"),
    "mixture-tied": lambda: jaxem.mixture(jaxem.gaussian("tied"), 3, init="random_from_data"),
    "mixture-diag": lambda: jaxem.mixture(jaxem.gaussian("diag"), 3, init="kmeans"),
    "mixture-spherical": lambda: jaxem.mixture(jaxem.gaussian("spherical"), 3, init="random"),
    "kmeans": lambda: jaxem.kmeans(3),
}


@pytest.fixture(params=sorted(MODELS))
def model(request):
    return MODELS[request.param]()


@pytest.fixture
def data():
    x, _ = make_blobs(n_samples=150, n_features=3)
    return x  # numpy: converted inside each test, after x64 is (or is not) switched on


def _init(model, x, key=0, n_restarts=1):
    x = jnp.asarray(x)
    weights = jnp.ones(x.shape[0], x.dtype)
    chunks = _iterate.make_chunks(x, weights, x.shape[0])
    keys = jax.random.split(jax.random.key(key), n_restarts)
    return jax.vmap(model.init, in_axes=(0, None, None))(keys, chunks, model.hyper(x.dtype))


def _single(params):
    return jax.tree.map(lambda leaf: leaf[0], params)


def _assert_tree_close(a, b, rtol=1e-10, atol=1e-10):
    for left, right in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(left), np.asarray(right), rtol=rtol, atol=atol)


def test_statistics_are_additive(model, data, x64):
    data = jnp.asarray(data)
    params = _single(_init(model, data))
    hyper = model.hyper(data.dtype)
    weights = jnp.ones(data.shape[0], data.dtype)
    whole = model.e_step(params, data, weights, hyper)
    first = model.e_step(params, data[:70], weights[:70], hyper)
    second = model.e_step(params, data[70:], weights[70:], hyper)
    combine = getattr(model, "combine_stats", None)
    if combine is None:
        joined = jax.tree.map(jnp.add, first, second)
    else:
        joined = (combine(first[0], second[0]), first[1] + second[1])
    _assert_tree_close(whole, joined)


def test_zero_weight_rows_change_nothing(model, data, x64):
    data = jnp.asarray(data)
    params = _single(_init(model, data))
    hyper = model.hyper(data.dtype)
    weights = jnp.ones(data.shape[0], data.dtype)
    padded_x = jnp.concatenate([data, 1e3 * jnp.ones((5, data.shape[1]))])
    padded_w = jnp.concatenate([weights, jnp.zeros(5)])
    _assert_tree_close(
        model.e_step(params, data, weights, hyper),
        model.e_step(params, padded_x, padded_w, hyper),
    )


def test_log_likelihood_never_decreases(model, data, x64):
    result = jaxem.fit(model, data, key=jax.random.key(1), n_restarts=6, tol=1e-12, max_iter=40)
    trace = np.asarray(result.restarts.trace)
    for row in trace:
        steps = np.diff(row[np.isfinite(row)])
        assert np.all(steps >= -1e-9 * np.abs(row[np.isfinite(row)]).max()), steps


def test_batched_restarts_equal_single_runs(model, data, x64):
    init = _init(model, data, n_restarts=3)
    batched = jaxem.fit(model, data, key=jax.random.key(0), n_restarts=3, init_params=init)
    for r in range(3):
        single = jaxem.fit(
            model,
            data,
            key=jax.random.key(0),
            init_params=jax.tree.map(lambda leaf, r=r: leaf[r], init),
        )
        _assert_tree_close(
            jax.tree.map(lambda leaf, r=r: leaf[r], batched.restarts.params), single.params
        )
        assert int(batched.restarts.n_iter[r]) == single.n_iter


def test_chunked_equals_unchunked(model, data, x64):
    init = _init(model, data, n_restarts=2)
    whole = jaxem.fit(model, data, key=jax.random.key(0), n_restarts=2, init_params=init)
    chunked = jaxem.fit(
        model, data, key=jax.random.key(0), n_restarts=2, init_params=init, chunk_size=37
    )
    _assert_tree_close(whole.restarts.params, chunked.restarts.params, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(whole.restarts.n_iter, chunked.restarts.n_iter)


def test_second_fit_of_equal_shapes_does_not_recompile(model, data):
    jaxem.fit(model, data, key=jax.random.key(0), n_restarts=2, max_iter=5)
    before = engine._fit_program._cache_size()
    # A new but equal model object, other data of the same shape, another tol.
    again = MODELS[[k for k, v in MODELS.items() if v() == model][0]]()
    jaxem.fit(again, data + 1.0, key=jax.random.key(3), n_restarts=2, max_iter=5, tol=1e-5)
    assert engine._fit_program._cache_size() == before


def test_float32_by_default_and_dtype_kept(model, data):
    result = jaxem.fit(model, np.asarray(data, np.float32), key=jax.random.key(0), max_iter=3)
    for leaf in jax.tree.leaves(result.params):
        assert leaf.dtype == jnp.float32


def test_float64_when_x64_on(model, data, x64):
    result = jaxem.fit(model, data, key=jax.random.key(0), max_iter=3)
    for leaf in jax.tree.leaves(result.params):
        assert leaf.dtype == jnp.float64


def test_sample_weights_equal_duplicated_rows(x64):
    x, _ = make_blobs(n_samples=60, n_features=2)
    model = jaxem.mixture(jaxem.gaussian("full"), 2)
    init = _single(_init(model, jnp.asarray(x)))
    counts = np.arange(60) % 3 + 1
    weighted = jaxem.fit(model, x, key=jax.random.key(0), weights=counts, init_params=init)
    repeated = jaxem.fit(
        model, np.repeat(x, counts, axis=0), key=jax.random.key(0), init_params=init
    )
    _assert_tree_close(weighted.params, repeated.params, rtol=1e-8, atol=1e-8)
    assert weighted.n_iter == repeated.n_iter


def test_each_restart_stops_on_its_own_tolerance(x64):
    x, _ = make_blobs(n_samples=200, n_features=2, n_clusters=4)
    model = jaxem.mixture(jaxem.gaussian("full"), 4, init="random_from_data")
    result = jaxem.fit(model, x, key=jax.random.key(0), n_restarts=16, tol=1e-6)
    n_iter = np.asarray(result.restarts.n_iter)
    assert len(set(n_iter.tolist())) > 1
    trace = np.asarray(result.restarts.trace)
    for count, row in zip(n_iter, trace):
        assert np.isfinite(row[:count]).all() and np.isnan(row[count:]).all()


def test_non_finite_restart_is_never_selected(x64):
    x, _ = make_blobs(n_samples=100, n_features=2)
    model = jaxem.mixture(jaxem.gaussian("diag", reg_covar=0.0), 2)
    init = _init(model, jnp.asarray(x), n_restarts=3)
    # Restart 1 puts a component of zero width on one data point: its likelihood blows up.
    means = init.components.means.at[1, 0].set(x[0])
    chol = init.components.precisions_cholesky.at[1, 0].set(1e300)
    broken = init._replace(components=jaxem.GaussianParams(means, chol))
    result = jaxem.fit(model, x, key=jax.random.key(0), n_restarts=3, init_params=broken)
    status = np.asarray(result.restarts.status)
    assert status[1] == jaxem.NON_FINITE
    assert result.best_restart != 1
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(result.params))


def test_all_restarts_non_finite_raises_with_fixes(x64):
    x, _ = make_blobs(n_samples=50, n_features=2)
    model = jaxem.mixture(jaxem.gaussian("diag", reg_covar=0.0), 1)
    init = _single(_init(model, jnp.asarray(x)))
    broken = init._replace(
        components=jaxem.GaussianParams(
            init.components.means, jnp.full_like(init.components.precisions_cholesky, jnp.nan)
        )
    )
    with pytest.raises(ValueError, match="reg_covar.*fewer components.*float64"):
        jaxem.fit(model, x, key=jax.random.key(0), n_restarts=2, init_params=broken)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_restarts": 0}, "n_restarts must be a positive int"),
        ({"max_iter": -1}, "max_iter must be a non-negative int"),
        ({"chunk_size": 0}, "chunk_size must be a positive int"),
        ({"weights": np.ones(3)}, r"weights must have shape \(20,\)"),
        ({"weights": -np.ones(20)}, "weights must be finite, non-negative"),
        ({"init_params": (1.0,)}, "init_params must have the structure"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    x = np.random.default_rng(0).normal(size=(20, 2)).astype(np.float32)
    model = jaxem.mixture(jaxem.gaussian("diag"), 2)
    with pytest.raises(ValueError, match=message):
        jaxem.fit(model, x, key=jax.random.key(0), **kwargs)


def test_empty_data_raises():
    model = jaxem.mixture(jaxem.gaussian("diag"), 2)
    with pytest.raises(ValueError, match="x has 0 rows"):
        jaxem.fit(model, np.zeros((0, 2), np.float32), key=jax.random.key(0))


def test_one_set_of_init_params_is_broadcast(x64):
    x, _ = make_blobs(n_samples=80, n_features=2)
    model = jaxem.mixture(jaxem.gaussian("spherical"), 2)
    init = _single(_init(model, jnp.asarray(x)))
    result = jaxem.fit(model, x, key=jax.random.key(0), n_restarts=4, init_params=init)
    restarts = np.asarray(result.restarts.log_likelihood)
    assert np.allclose(restarts, restarts[0])
    assert result.best_restart == 0  # ties go to the lowest index


def test_status_messages_cover_every_status():
    assert set(jaxem.STATUS_MESSAGES) == {
        jaxem.RUNNING,
        jaxem.CONVERGED,
        jaxem.MAX_ITER,
        jaxem.NON_FINITE,
    }

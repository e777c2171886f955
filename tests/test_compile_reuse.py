"""Compile once, reuse everywhere: what must not recompile, counted.

A second fit that differs only in n_components within its bucket, max_iter, tol,
reg_covar or the number of rows within its row bucket compiles nothing, through
the functional API and through the estimators; the traceable fit runs under
``jax.jit`` and ``jax.vmap`` and agrees with the host fit.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from jaxem import engine
from tests.conftest import make_blobs


def _data(n_samples=200, seed=0):
    x, _ = make_blobs(n_samples=n_samples, n_features=2, n_clusters=3, seed=seed)
    return x.astype(np.float32)


def _fit(x, n_components=3, *, reg_covar=1e-6, **kwargs):
    family = jaxem.gaussian("full", reg_covar=reg_covar)
    model = jaxem.mixture(family, n_components, max_components=8)
    options = dict(key=jax.random.key(0), n_restarts=4, max_iter=50, tol=1e-3)
    return jaxem.fit(model, x, **{**options, **kwargs})


@pytest.mark.parametrize(
    "change",
    [
        {"n_components": 5},
        {"max_iter": 80},
        {"tol": 1e-6},
        {"reg_covar": 1e-2},
        {"n_rows": 230},  # 200 and 230 rows share the 1024-row bucket
        {"key": 7},
    ],
    ids=lambda change: next(iter(change)),
)
def test_second_functional_fit_compiles_nothing(change, count_compiles):
    x = _data(260)
    first = _fit(x[:200])
    assert first.params.log_weights.shape == (3,)
    name, value = next(iter(change.items()))
    rows = value if name == "n_rows" else 200
    kwargs = {} if name == "n_rows" else {name: jax.random.key(value) if name == "key" else value}
    with count_compiles() as counter:
        second = _fit(x[:rows], **kwargs)
        jax.block_until_ready(second.params)
    assert counter.count == 0, f"changing {name} compiled {counter.count} programs"
    expected = kwargs.get("n_components", 3)
    assert second.params.log_weights.shape == (expected,)
    assert np.isfinite(second.log_likelihood)


def test_covariance_types_share_one_seeding_program(count_compiles):
    # The k-means init depends on the data, not on the covariance type: a sweep over
    # covariance types compiles it once, then one fit program per type.
    x = _data(200)
    models = [jaxem.mixture(jaxem.gaussian(kind), 3) for kind in ("full", "tied", "diag")]
    assert len({model.seeding() for model in models}) == 1
    options = dict(key=jax.random.key(0), n_restarts=2, max_iter=5)
    prepared = engine._prepare(models[0], x, None, None, 2, None)
    seeding = engine._sized(engine._seed_program, engine._work(models[0], prepared.x, 2))
    seedings_before = seeding.jitted._cache_size()
    jaxem.fit(models[0], x, **options)
    with count_compiles() as counter:
        fits = [jaxem.fit(model, x, **options) for model in models[1:]]
    # One seeding program for the three types (not none: the fits do seed apart) ...
    assert seeding.jitted._cache_size() == seedings_before + 1
    # ... and after the first type, only each type's own fit program compiles.
    assert counter.count == 2, f"{counter.count} programs for two covariance types"
    assert all(np.isfinite(fit.log_likelihood) for fit in fits)


@pytest.mark.parametrize("x64_on", [False, True])
def test_estimator_keys_are_jax_keys_made_without_compiling(x64_on, count_compiles):
    # Estimators build jax.random.key(seed) on the host: jax.random.key compiles two
    # small programs in each new process.
    from jaxem.estimators import _validation

    seeds = [0, 1, 12345, 2**31 - 1]
    jax.clear_caches()  # so that jax.random.key would compile here, were it used
    with jax.enable_x64(x64_on):
        with count_compiles() as counter:
            keys = [_validation.key_from_seed(seed) for seed in seeds]
            _validation.random_key(np.random.RandomState(0))
        assert counter.count == 0
        for seed, key in zip(seeds, keys):
            assert jax.random.key_impl(key) == jax.random.key_impl(jax.random.key(seed))
            np.testing.assert_array_equal(
                jax.random.key_data(key), jax.random.key_data(jax.random.key(seed))
            )


def test_padded_components_fit_like_exact_ones(x64):
    """Masked components win no data: from the same start, a mixture padded to 8
    components follows the unpadded one exactly."""
    x, _ = make_blobs(n_samples=150, n_features=2, n_clusters=3)
    exact = jaxem.mixture(jaxem.gaussian("full"), 3, init="k-means++")
    padded = jaxem.mixture(jaxem.gaussian("full"), 3, init="k-means++", max_components=8)
    start = engine.initialise(exact, x, key=jax.random.key(2), n_restarts=3)
    options = dict(key=jax.random.key(0), n_restarts=3, tol=1e-8)
    a = jaxem.fit(exact, x, init_params=start, **options)
    b = jaxem.fit(padded, x, init_params=engine.per_restart(padded.pad, start), **options)
    chex.assert_trees_all_close(a.restarts.params, b.restarts.params, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(a.restarts.n_iter, b.restarts.n_iter)
    np.testing.assert_allclose(a.restarts.trace, b.restarts.trace, rtol=1e-12)


def test_padded_kmeans_fits_like_exact_kmeans(x64):
    x, _ = make_blobs(n_samples=150, n_features=2, n_clusters=4)
    exact = jaxem.kmeans(4)
    padded = jaxem.kmeans(4, max_clusters=8)
    start = engine.initialise(exact, x, key=jax.random.key(1), n_restarts=3)
    options = dict(key=jax.random.key(0), n_restarts=3, tol=0.0)
    a = jaxem.fit(exact, x, init_params=start, **options)
    b = jaxem.fit(padded, x, init_params=padded.pad(start), **options)
    chex.assert_trees_all_close(a.restarts.params, b.restarts.params, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(a.restarts.n_iter, b.restarts.n_iter)


def test_estimator_refits_compile_nothing(count_compiles, faithful):
    """A BIC loop and a refit on another fold reuse the first fit's programs."""
    X = faithful.astype(np.float32)
    jaxem.GaussianMixture(n_components=2, random_state=0).fit(X).bic(X)
    with count_compiles() as counter:
        bics = [
            jaxem.GaussianMixture(n_components=k, random_state=0).fit(X).bic(X) for k in range(1, 9)
        ]
        # Another fold of the same row bucket (260 and 272 rows both pad to 512).
        jaxem.GaussianMixture(n_components=3, max_iter=20, tol=1e-4, reg_covar=1e-3).fit(
            X[:260]
        ).score(X[12:])
    assert counter.count == 0
    assert np.argmin(bics) + 1 in (2, 3, 4)  # Old Faithful has two or three clusters


def test_kmeans_refits_compile_nothing(count_compiles):
    X = _data(300)
    jaxem.KMeans(n_clusters=2, n_init=2, random_state=0).fit(X).predict(X)
    with count_compiles() as counter:
        for k in (3, 5, 8):
            # max_iter 300 (the default) and 260 share a trace-length bucket (512).
            model = jaxem.KMeans(n_clusters=k, n_init=2, random_state=0, max_iter=260)
            model.fit(X[:280]).predict(X)
    assert counter.count == 0


def test_traced_fit_under_jit_equals_host_fit(x64):
    x, _ = make_blobs(n_samples=120, n_features=2, n_clusters=2)
    model = jaxem.mixture(jaxem.gaussian("diag"), 2)
    host = jaxem.fit(model, x, key=jax.random.key(3), n_restarts=5, max_iter=60, tol=1e-6)
    padded_x, padded_w = engine._pad_rows(x, np.ones(x.shape[0]), engine.padded_rows(len(x)))
    traced = jax.jit(
        lambda x, w, max_iter, tol: jaxem.fit_traced(
            model, x, w, jax.random.key(3), n_restarts=5, max_iter=max_iter, tol=tol, n_trace=128
        )
    )(jnp.asarray(padded_x), jnp.asarray(padded_w), 60, 1e-6)
    assert bool(traced.any_usable) and int(traced.best_restart) == host.best_restart
    chex.assert_trees_all_close(traced.params, host.params, rtol=1e-12)
    np.testing.assert_allclose(float(traced.log_likelihood), host.log_likelihood, rtol=1e-12)


def test_traced_fit_vmaps_over_data_sets_and_component_counts(x64):
    """Several data sets, and several n_components, in one program each."""
    sets = np.stack([make_blobs(n_samples=128, n_features=2, seed=s)[0] for s in range(3)])
    model = jaxem.mixture(jaxem.gaussian("full"), 3, max_components=4)

    # Traced once per batching pattern: once vmapped over data, once over n_active.
    @jax.jit
    @chex.assert_max_traces(n=2)
    def fit_one(x, n_active):
        hyper = model.hyper(x.dtype)._replace(n_active=n_active)
        return jaxem.fit_traced(
            model, x, jnp.ones(x.shape[0]), jax.random.key(0), n_restarts=4, hyper=hyper
        )

    over_data = jax.vmap(fit_one, in_axes=(0, None))(jnp.asarray(sets), 3)
    for index in range(3):
        host = jaxem.fit(model, sets[index], key=jax.random.key(0), n_restarts=4)
        np.testing.assert_allclose(
            float(over_data.log_likelihood[index]), host.log_likelihood, rtol=1e-10
        )
    sweep = jax.vmap(fit_one, in_axes=(None, 0))(jnp.asarray(sets[0]), jnp.arange(1, 5))
    weights = np.exp(np.asarray(sweep.params.log_weights))
    assert [int((row > 0).sum()) for row in weights] == [1, 2, 3, 4]
    # More components never fit worse here (nested models, best of 4 restarts).
    assert np.all(np.diff(np.asarray(sweep.log_likelihood)) > -1e-6)


# -- weights: the contract's promises ----------------------------------------------------
def _weighted_fit(x, weights, init):
    model = jaxem.mixture(jaxem.gaussian("full"), 3)
    return jaxem.fit(model, x, key=jax.random.key(0), weights=weights, init_params=init, tol=1e-8)


def test_zero_weight_rows_change_nothing_whatever_their_values(x64):
    x, _ = make_blobs(n_samples=150, n_features=2, n_clusters=3)
    model = jaxem.mixture(jaxem.gaussian("full"), 3)
    init = jax.tree.map(lambda leaf: leaf[0], engine.initialise(model, x, key=jax.random.key(1)))
    clean = _weighted_fit(x, None, init)
    for garbage in (1e30, -1e30, np.nan, np.inf):
        extended = np.concatenate([x, np.full((10, 2), garbage)])
        weights = np.concatenate([np.ones(150), np.zeros(10)])
        dirty = _weighted_fit(extended, weights, init)
        chex.assert_trees_all_close(dirty.params, clean.params, rtol=1e-12, atol=1e-12)
        assert dirty.n_iter == clean.n_iter


@pytest.mark.parametrize("scale", [1e-12, 1e12])
def test_em_is_invariant_to_the_scale_of_the_weights(scale, x64):
    x, _ = make_blobs(n_samples=150, n_features=2, n_clusters=3)
    model = jaxem.mixture(jaxem.gaussian("full"), 3)
    init = jax.tree.map(lambda leaf: leaf[0], engine.initialise(model, x, key=jax.random.key(1)))
    weights = np.random.default_rng(0).uniform(0.5, 2.0, 150)
    reference = _weighted_fit(x, weights, init)
    scaled = _weighted_fit(x, weights * scale, init)
    chex.assert_trees_all_close(scaled.params, reference.params, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(scaled.log_likelihood, reference.log_likelihood, rtol=1e-12)
    assert scaled.n_iter == reference.n_iter


@pytest.mark.parametrize("scale", [1e-12, 1e12])
def test_weight_scale_invariance_in_float32(scale):
    """The failure that motivated it: uniform weights of 1e-12 in float32."""
    x = _data(200)
    model = jaxem.mixture(jaxem.gaussian("full"), 3)
    ones = jaxem.fit(model, x, key=jax.random.key(0), n_restarts=2)
    scaled = jaxem.fit(model, x, key=jax.random.key(0), n_restarts=2, weights=np.full(200, scale))
    np.testing.assert_allclose(scaled.log_likelihood, ones.log_likelihood, rtol=1e-6)
    chex.assert_trees_all_close(scaled.params, ones.params, rtol=1e-5, atol=1e-5)


def test_compiled_programs_are_dropped_near_the_memory_map_limit(monkeypatch):
    """Each XLA:CPU program holds hundreds of memory mappings; past three quarters of
    Linux's vm.max_map_count jaxem drops its compiled programs rather than let the next
    compile crash in LLVM."""
    if engine._max_map_count() is None:
        pytest.skip("no vm.max_map_count to watch (not Linux)")
    x = np.random.default_rng(0).normal(size=(37, 3))
    model = jaxem.mixture(jaxem.gaussian("spherical"), n_components=2)
    jaxem.fit(model, x, key=jax.random.key(0))
    grown = engine._map_count()
    # A new shape compiles a new program: with the real limit the mappings stay.
    jaxem.fit(model, x[:, :2], key=jax.random.key(0))
    kept = engine._map_count()
    assert kept > grown + 100
    monkeypatch.setattr(engine, "_max_map_count", lambda: grown)  # three quarters passed
    jaxem.fit(model, x[:, :1], key=jax.random.key(0))
    assert engine._map_count() < grown

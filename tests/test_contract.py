"""The model contract and the engine, checked for every model x every family.

Every model under the engine must pass these: additive statistics, zero-weight
padding that changes nothing whatever it holds, non-decreasing log-likelihood for
every restart, batched restarts equal to independent runs, chunked equal to
unchunked, no recompile on a second fit, the dtypes, every init; and failed
restarts are never selected.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from jaxem import engine
from tests.conftest import jit_small, make_blobs

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
MIXTURE_INITS = ("kmeans", "k-means++", "random", "random_from_data")
LENGTHS = [30, 25, 40, 20, 35]  # five sequences, 150 frames

FAMILIES = {
    **{f"gaussian-{kind}": (lambda kind=kind: jaxem.gaussian(kind)) for kind in COVARIANCE_TYPES},
    "categorical": lambda: jaxem.categorical(4),
    "poisson": lambda: jaxem.poisson(),
    "bernoulli": lambda: jaxem.bernoulli(),
    "student_t": lambda: jaxem.student_t("full"),
    "multinomial": lambda: jaxem.multinomial(),
    "von_mises_fisher": lambda: jaxem.von_mises_fisher(),
    # Components that are mixtures of two Gaussians (GMMHMM's emissions).
    "gaussian_mixture": lambda: jaxem.gmm(2, "diag"),
    # NaN entries missing at random (exact EM on the observed data).
    "gaussian-missing": lambda: jaxem.gaussian("full", missing=True),
    # NaN entries missing in a categorical family: skipped (zero one-hot features).
    "categorical-missing": lambda: jaxem.categorical(4, missing=True),
    # Covariances W Wᵀ + Ψ of rank 2 plus diagonal (mixtures of factor analysers).
    "gaussian-lowrank": lambda: jaxem.low_rank_gaussian(2),
}


def _rows(name, n_rows=150, seed=0):
    """Data in the family's support, as numpy (converted after x64 is set)."""
    rng = np.random.default_rng(seed)
    if name == "gaussian-missing":  # a fifth of the entries missing, none of a row's all
        x = make_blobs(n_samples=n_rows, n_features=3, seed=seed)[0]
        gone = rng.uniform(size=x.shape) < 0.2
        gone[:, 0] &= ~gone[:, 1:].all(axis=1)
        x = np.where(gone, np.nan, x)
        # Centred on the observed means, as the estimators do: the inits count a
        # missing entry as 0.
        return x - np.nanmean(x, axis=0)
    if name.startswith("gaussian") or name == "student_t":
        return make_blobs(n_samples=n_rows, n_features=3, seed=seed)[0]
    labels = rng.integers(3, size=n_rows)
    if name == "categorical-missing":  # symbols as floats, a fifth NaN, every row observed
        x = _rows("categorical", n_rows, seed).astype(np.float64)
        gone = rng.uniform(size=x.shape) < 0.2
        gone[:, 0] &= ~gone[:, 1]
        return np.where(gone, np.nan, x)
    if name == "categorical":  # two columns of symbols, integer data
        probs = rng.dirichlet(np.ones(4) * 0.3, size=(3, 2))
        draws = [[rng.choice(4, p=probs[k, d]) for d in range(2)] for k in labels]
        return np.asarray(draws, np.int64)
    if name == "multinomial":  # word counts of documents of 5 to 30 words
        probs = rng.dirichlet(np.ones(6) * 0.5, size=3)
        return np.stack([rng.multinomial(rng.integers(5, 31), probs[k]) for k in labels])
    if name == "von_mises_fisher":  # three clusters of directions on the sphere S^2
        x = make_blobs(n_samples=n_rows, n_features=3, seed=seed)[0]
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    if name == "poisson":
        return rng.poisson(np.array([1.0, 5.0, 15.0])[labels, None] * np.ones(3)).astype(np.int64)
    p = rng.uniform(0.05, 0.95, size=(3, 6))
    return (rng.uniform(size=(n_rows, 6)) < p[labels]).astype(np.int64)


def _mixture(name):
    init = MIXTURE_INITS[sorted(FAMILIES).index(name) % len(MIXTURE_INITS)]
    return jaxem.mixture(FAMILIES[name](), 3, init=init)


def _hmm(name):
    return jaxem.hmm(FAMILIES[name](), 3)


def _map_mixture():
    """MAP EM: a conjugate prior on tied Gaussian components (no reg_covar: the prior
    alone keeps them finite) and a Dirichlet prior on the weights."""
    family = jaxem.gaussian("tied", 0.0)
    fields = family.conjugate_prior(
        mean=np.zeros(3), shrinkage=0.1, degrees_of_freedom=5.0, scale=np.eye(3), n_components=3
    )
    return jaxem.mixture(
        jaxem.gaussian("tied", 0.0, map_prior=True, **fields), 3, weights_prior=2.0
    )


def _assigned(kind, name, assignment):
    model = _mixture(name) if kind == "mixture" else _hmm(name)
    return dataclasses.replace(model, assignment=assignment)


#: Hard and stochastic EM (``assignment``) on a few families: ``kind-family+assignment``.
ASSIGNED = {
    ("mixture", "gaussian-spherical"): "hard",
    ("mixture", "bernoulli"): "hard",
    ("mixture", "von_mises_fisher"): "hard",
    ("mixture", "gaussian-diag"): "stochastic",
    ("mixture", "categorical"): "stochastic",
    ("hmm", "gaussian-diag"): "hard",
    ("hmm", "poisson"): "stochastic",
}


MODELS = {
    **{f"mixture-{name}": (lambda name=name: _mixture(name)) for name in FAMILIES},
    **{
        f"{kind}-{name}+{how}": (lambda kind=kind, name=name, how=how: _assigned(kind, name, how))
        for (kind, name), how in ASSIGNED.items()
    },
    **{f"hmm-{name}": (lambda name=name: _hmm(name)) for name in FAMILIES},
    "kmeans": lambda: jaxem.kmeans(3),
    "factor-analysis": lambda: jaxem.factor_analysis(2),
    "ppca": lambda: jaxem.ppca(1),
    "mixture-map-gaussian": _map_mixture,
    # Semi-supervised EM: the data are LabelledRows (see _data).
    "mixture-labelled-gaussian": lambda: jaxem.mixture(jaxem.gaussian("diag"), 3),
    # States known at every fifth step: the data are (obs, mask, log_prior).
    "hmm-known-categorical": lambda: jaxem.hmm(jaxem.categorical(4), 3),
    "bayesian-mixture": lambda: jaxem.bayesian_mixture(
        jaxem.gaussian("full"), 3, mean_prior=np.zeros(3), covariance_prior=4.0 * np.eye(3)
    ),
    # y given x: the data are RegressionRows (see _data).
    "regression-mixture": lambda: jaxem.regression_mixture(3, "random"),
    "mixture-of-experts": lambda: jaxem.mixture_of_experts(3, "kmeans", gate_reg=0.5),
}
#: Models of a response given inputs: RegressionRows of the Gaussian family's rows.
_REGRESSION = ("regression-mixture", "mixture-of-experts")
#: Models of real-valued rows with no family: fitted to the Gaussian family's data.
_GAUSSIAN_DATA = ("kmeans", "factor-analysis", "ppca", "bayesian-mixture")
#: Models that are options of another model, and their family's data.
_OPTION_DATA = {
    "mixture-map-gaussian": "gaussian-tied",
    "mixture-labelled-gaussian": "gaussian-diag",
    "hmm-known-categorical": "categorical",
}


def _family_name(model_name):
    if model_name in _OPTION_DATA:
        return _OPTION_DATA[model_name]
    if model_name in _GAUSSIAN_DATA:
        return "gaussian-full"
    return model_name.split("-", 1)[1].split("+")[0]


def _data(model_name, dtype=None):
    """The model's data (rows, or padded sequences for an HMM) as device arrays."""
    if model_name in _REGRESSION:  # three lines through the blobs' first two features
        x, labels = make_blobs(n_samples=150, n_features=2, seed=0)
        coef = np.array([[1.0, -1.0], [-2.0, 0.5], [0.0, 2.0]])[labels]
        y = np.sum(x * coef, axis=1) + 0.3 * np.random.default_rng(0).normal(size=150)
        float_dtype = dtype or jnp.result_type(float)
        return jaxem.RegressionRows(jnp.asarray(x, float_dtype), jnp.asarray(y, float_dtype))
    family = FAMILIES[_family_name(model_name)]()
    x = _rows(_family_name(model_name))
    float_dtype = dtype or jnp.result_type(float)
    x = x.astype(float_dtype) if x.dtype.kind == "f" else x
    x = jnp.asarray(x, family.data_dtype(float_dtype) if x.dtype.kind != "f" else None)
    if model_name.startswith("hmm"):
        obs, mask = jaxem.pad_sequences(np.asarray(x), LENGTHS, dtype=float_dtype)
        if model_name == "hmm-known-categorical":
            states = np.random.default_rng(1).integers(3, size=x.shape[0])
            states[np.arange(x.shape[0]) % 5 != 0] = -1
            padded = jaxem.pad_sequences(states, LENGTHS)[0]
            log_prior = jaxem.known_states(padded, 3, float_dtype)
            return jnp.asarray(obs), jnp.asarray(mask), jnp.asarray(log_prior)
        return jnp.asarray(obs), jnp.asarray(mask)
    if model_name == "mixture-labelled-gaussian":  # every fifth row labelled
        labels = make_blobs(n_samples=x.shape[0], n_features=3, seed=0)[1]
        log_prior = np.where(np.arange(3) == labels[:, None], 0.0, -np.inf)
        log_prior[np.arange(x.shape[0]) % 5 != 0] = 0.0
        return jaxem.LabelledRows(x, jnp.asarray(log_prior, x.dtype))
    return x


@pytest.fixture(params=sorted(MODELS))
def model_name(request):
    return request.param


def _n_rows(data):
    return jax.tree.leaves(data)[0].shape[0]


def _take(data, rows):
    return jax.tree.map(lambda leaf: leaf[rows], data)


def _init(model, data, key=0, n_restarts=1):
    return engine.initialise(model, data, key=jax.random.key(key), n_restarts=n_restarts)


def _single(params):
    return jax.tree.map(lambda leaf: leaf[0], params)


def _assert_tree_close(a, b, rtol=1e-10, atol=1e-10):
    for left, right in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(left), np.asarray(right), rtol=rtol, atol=atol)


def _as_users_see_them(model, params):
    """Parameters in the layout users see (probabilities, not logits): a logit of
    -34.5 or -36.0 is the same probability of zero up to rounding."""
    if isinstance(params, jaxem.MixtureParams):
        return jnp.exp(params.log_weights), model.family.to_layout(params.components)
    if isinstance(params, jaxem.HMMParams):
        return params.startprob, params.transmat, model.family.to_layout(params.emissions)
    return params


@jit_small(static_argnums=0)
def _e_step(model, params, data, weights):
    # One program per model and shape: run op by op, the tests below compiled 1,372
    # primitives (a tenth of this module's time; with this, those tests took 45 % less).
    return model.e_step(params, data, weights, model.hyper(weights.dtype))


def test_statistics_are_additive(model_name, x64):
    model, data = MODELS[model_name](), _data(model_name)
    params = _single(_init(model, data))
    n = _n_rows(data)
    weights = jnp.ones(n)
    split = n // 2
    whole = _e_step(model, params, data, weights)
    first = _e_step(model, params, _take(data, slice(None, split)), weights[:split])
    second = _e_step(model, params, _take(data, slice(split, None)), weights[split:])
    joined = (model.combine_stats(first[0], second[0]), first[1] + second[1])
    _assert_tree_close(whole, joined)


@pytest.mark.parametrize("garbage", [1e30, np.nan])
def test_zero_weight_rows_change_nothing_whatever_they_hold(model_name, garbage, x64):
    """Through the engine (which zeroes rows of weight 0): a fit is unchanged by extra
    rows of weight 0 holding anything, and e_step itself ignores such rows where
    they are finite."""
    model, data = MODELS[model_name](), _data(model_name)
    n = _n_rows(data)
    init = _init(model, data, n_restarts=2)

    def garbage_rows(leaf):
        fill = garbage if jnp.issubdtype(leaf.dtype, jnp.floating) else 10**6
        return jnp.concatenate([leaf, jnp.full((3,) + leaf.shape[1:], fill, leaf.dtype)])

    extended = jax.tree.map(garbage_rows, data)
    weights = jnp.concatenate([jnp.ones(n), jnp.zeros(3)])
    options = dict(key=jax.random.key(0), n_restarts=2, init_params=init, max_iter=15)
    clean = jaxem.fit(model, data, **options)
    dirty = jaxem.fit(model, extended, weights=weights, **options)
    _assert_tree_close(
        _as_users_see_them(model, clean.restarts.params),
        _as_users_see_them(model, dirty.restarts.params),
        rtol=1e-9,
        atol=1e-9,
    )
    np.testing.assert_array_equal(clean.restarts.n_iter, dirty.restarts.n_iter)
    if np.isfinite(garbage) and not model_name.startswith("hmm"):
        # Only the extra rows are made finite: real rows may hold -inf (a row's log
        # prior) or NaN (missing entries).
        finite = jax.tree.map(
            lambda leaf: leaf.at[n:].set(jnp.where(jnp.isfinite(leaf[n:]), leaf[n:], 0)), extended
        )
        if all(jnp.issubdtype(leaf.dtype, jnp.floating) for leaf in jax.tree.leaves(data)):
            finite = jax.tree.map(lambda leaf: leaf.at[n:].set(1e3), finite)
        _assert_tree_close(
            _e_step(model, _single(init), data, jnp.ones(n)),
            _e_step(model, _single(init), finite, weights),
        )


def test_log_likelihood_never_decreases(model_name, x64):
    """The monitored objective: the log-likelihood, for hard EM the classification
    log-likelihood; stochastic EM's is noisy by design (tests/models/test_assignment.py)."""
    if model_name.endswith("+stochastic"):
        pytest.skip("stochastic EM's log-likelihood is not monotone")
    model, data = MODELS[model_name](), _data(model_name)
    init = _init(model, data, n_restarts=2)
    result = jaxem.fit(
        model, data, key=jax.random.key(1), n_restarts=2, init_params=init, tol=1e-12, max_iter=30
    )
    trace = np.asarray(result.restarts.trace)
    for row in trace:
        values = row[np.isfinite(row)]
        assert np.all(np.diff(values) >= -1e-9 * np.abs(values).max()), np.diff(values)


def test_batched_restarts_equal_single_runs(model_name, x64):
    model, data = MODELS[model_name](), _data(model_name)
    init = _init(model, data, n_restarts=2)
    options = dict(key=jax.random.key(0), max_iter=20)
    batched = jaxem.fit(model, data, n_restarts=2, init_params=init, **options)
    for r in range(2):
        # first_restart=r: a stochastic restart draws from the keys of its index.
        single = jaxem.fit(
            model,
            data,
            init_params=jax.tree.map(lambda leaf, r=r: leaf[r], init),
            first_restart=r,
            **options,
        )
        _assert_tree_close(
            _as_users_see_them(
                model, jax.tree.map(lambda leaf, r=r: leaf[r], batched.restarts.params)
            ),
            _as_users_see_them(model, single.params),
        )
        assert int(batched.restarts.n_iter[r]) == single.n_iter


def test_a_restart_initialised_alone_starts_where_it_starts_among_others(model_name, x64):
    # One restart's initialisation runs without vmap (its loops trace faster so); it
    # must still start where the same restart starts in a batch.
    model, data = MODELS[model_name](), _data(model_name)
    batched = _init(model, data, n_restarts=2)
    for r in range(2):
        alone = engine.initialise(model, data, key=jax.random.key(0), first_restart=r)
        _assert_tree_close(
            _as_users_see_them(model, jax.tree.map(lambda leaf, r=r: leaf[r], batched)),
            _as_users_see_them(model, _single(alone)),
            rtol=1e-9,
            atol=1e-9,
        )


#: Models whose init starts with a seeding the engine compiles as a program of its own.
SEEDED = sorted(name for name, make in MODELS.items() if make().seeding() is not None)


@pytest.mark.parametrize("seeded_name", SEEDED)
def test_seeding_in_its_own_program_starts_where_init_does(seeded_name, x64):
    # The host-side fit seeds in a program of its own (shared by models with equal
    # seedings) and starts from init_from_seeds; fit_traced runs model.init whole.
    # Both must start at the same place.
    model, data = MODELS[seeded_name](), _data(seeded_name)
    prepared = engine._prepare(model, data, None, None, 2, None)
    keys = engine.restart_keys(jax.random.key(0), 2)

    def whole(x, weights, hyper):
        chunks = engine._iterate.make_chunks(
            x, engine._normalised_weights(weights), prepared.chunk_size
        )
        return jax.vmap(model.init, in_axes=(0, None, None))(keys, chunks, hyper)

    # jit_small: at JAX's default options this program took 1.1 s to compile, per model.
    expected = jit_small(whole)(prepared.x, prepared.weights, prepared.hyper)
    _assert_tree_close(
        _as_users_see_them(model, expected),
        _as_users_see_them(model, _init(model, data, n_restarts=2)),
        rtol=1e-9,
        atol=1e-9,
    )


def test_chunked_equals_unchunked(model_name, x64):
    model, data = MODELS[model_name](), _data(model_name)
    init = _init(model, data, n_restarts=2)
    options = dict(key=jax.random.key(0), n_restarts=2, init_params=init, max_iter=20)
    whole = jaxem.fit(model, data, **options)
    chunk_size = 2 if model_name.startswith("hmm") else 37
    chunked = jaxem.fit(model, data, chunk_size=chunk_size, **options)
    _assert_tree_close(
        _as_users_see_them(model, whole.restarts.params),
        _as_users_see_them(model, chunked.restarts.params),
        rtol=1e-9,
        atol=1e-9,
    )
    np.testing.assert_array_equal(whole.restarts.n_iter, chunked.restarts.n_iter)


def test_second_fit_compiles_nothing(model_name, count_compiles):
    """A new but equal model, other data of the same padded shape, another key, tol and
    max_iter: nothing compiles."""
    data = _data(model_name, jnp.float32)
    jaxem.fit(MODELS[model_name](), data, key=jax.random.key(0), n_restarts=2, max_iter=5)
    other = _data(model_name, jnp.float32)
    other = jax.tree.map(lambda leaf: leaf[::-1] if leaf.ndim < 3 else leaf, other)
    with count_compiles() as counter:
        result = jaxem.fit(
            MODELS[model_name](), other, key=jax.random.key(3), n_restarts=2, max_iter=9, tol=1e-5
        )
        jax.block_until_ready(result.restarts.log_likelihood)
    assert counter.count == 0


def test_float32_by_default_and_dtype_kept(model_name):
    # n_restarts=2 and no init_params: the program of the compile test above.
    data = _data(model_name, jnp.float32)
    result = jaxem.fit(MODELS[model_name](), data, key=jax.random.key(0), n_restarts=2)
    for leaf in jax.tree.leaves(result.params):
        assert leaf.dtype == jnp.float32


def test_float64_when_x64_on(model_name, x64):
    model, data = MODELS[model_name](), _data(model_name)
    init = _init(model, data, n_restarts=2)
    result = jaxem.fit(
        model, data, key=jax.random.key(0), n_restarts=2, init_params=init, max_iter=3
    )
    for leaf in jax.tree.leaves(result.params):
        assert leaf.dtype == jnp.float64


@pytest.mark.parametrize("init", MIXTURE_INITS)
@pytest.mark.parametrize("family_name", sorted(FAMILIES))
def test_every_mixture_init_gives_finite_parameters(family_name, init):
    """Every init of the mixture, on every family's own data (integers included):
    finite parameters and a finite first E-step."""
    data = _data(f"mixture-{family_name}", jnp.float32)
    model = jaxem.mixture(FAMILIES[family_name](), 3, init=init)
    params = _single(_init(model, data, n_restarts=2))
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(params))
    stats, log_likelihood = _e_step(model, params, data, jnp.ones(_n_rows(data)))
    assert np.isfinite(float(log_likelihood))
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(stats))


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

"""Every family under the contract: densities against scipy, M-steps against naive numpy,
the optional hooks, and fits of the mixture and the HMM that need no model change."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import adjusted_rand_score

import jaxem
from jaxem.contract import Chunks, Family
from jaxem.families import log_densities

INITS = ["kmeans", "k-means++", "random", "random_from_data"]


def _spd(rng, n_features):
    a = rng.normal(size=(n_features, n_features))
    return a @ a.T + n_features * np.eye(n_features)


def _gaussian_layout(covariance_type, rng, n_components, n_features):
    """Covariances in scikit-learn's layout and as full matrices per component."""
    if covariance_type == "full":
        layout = np.stack([_spd(rng, n_features) for _ in range(n_components)])
        full = layout
    elif covariance_type == "tied":
        layout = _spd(rng, n_features)
        full = np.broadcast_to(layout, (n_components, n_features, n_features))
    elif covariance_type == "diag":
        layout = rng.uniform(0.5, 2.0, (n_components, n_features))
        full = np.stack([np.diag(row) for row in layout])
    else:
        layout = rng.uniform(0.5, 2.0, n_components)
        full = layout[:, None, None] * np.eye(n_features)
    return layout, full


def _responsibilities(rng, n_rows, n_components):
    return rng.dirichlet(np.ones(n_components), n_rows)


# -- log-densities against scipy ------------------------------------------------------------


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gaussian_log_densities_match_scipy(covariance_type, exact, x64):
    rng = np.random.default_rng(0)
    n_components, n_features = 3, 4
    family = jaxem.gaussian(covariance_type, exact=exact)
    means = rng.normal(size=(n_components, n_features)) * 3
    layout, full = _gaussian_layout(covariance_type, rng, n_components, n_features)
    params = family.from_layout(jnp.float64, means=means, covariances=layout)
    x = rng.normal(size=(50, n_features)) * 3
    expected = np.stack(
        [stats.multivariate_normal(means[k], full[k]).logpdf(x) for k in range(n_components)],
        axis=1,
    )
    np.testing.assert_allclose(log_densities(family, params, jnp.asarray(x)), expected, rtol=1e-10)
    layout_back = family.to_layout(params)
    np.testing.assert_allclose(layout_back["covariances"], layout, rtol=1e-10)
    np.testing.assert_allclose(layout_back["means"], means)
    inverse = np.linalg.inv(full)
    precisions = layout_back["precisions"]
    if covariance_type == "tied":
        np.testing.assert_allclose(precisions, inverse[0], rtol=1e-10)
    elif covariance_type == "full":
        np.testing.assert_allclose(precisions, inverse, rtol=1e-10)
    else:
        np.testing.assert_allclose(precisions, 1 / layout, rtol=1e-10)
    again = family.from_layout(
        jnp.float64, means=means, precisions_cholesky=layout_back["precisions_cholesky"]
    )
    np.testing.assert_allclose(again.precisions_cholesky, params.precisions_cholesky)


def test_poisson_log_densities_match_scipy(x64):
    rng = np.random.default_rng(1)
    rates = rng.uniform(0.5, 20, (3, 4))
    x = rng.poisson(8, (40, 4))
    family = jaxem.poisson()
    params = family.from_layout(jnp.float64, rates=rates)
    expected = stats.poisson.logpmf(x[:, None, :], rates[None]).sum(-1)
    np.testing.assert_allclose(log_densities(family, params, jnp.asarray(x)), expected, rtol=1e-12)
    np.testing.assert_allclose(family.to_layout(params)["rates"], rates, rtol=1e-12)


def test_bernoulli_log_densities_match_scipy(x64):
    rng = np.random.default_rng(2)
    probs = rng.uniform(0.02, 0.98, (3, 5))
    x = rng.integers(0, 2, (40, 5))
    family = jaxem.bernoulli()
    params = family.from_layout(jnp.float64, probabilities=probs)
    expected = stats.bernoulli.logpmf(x[:, None, :], probs[None]).sum(-1)
    for data in (x, x.astype(bool), x.astype(np.float64)):
        np.testing.assert_allclose(
            log_densities(family, params, jnp.asarray(data)), expected, rtol=1e-12
        )
    np.testing.assert_allclose(family.to_layout(params)["probabilities"], probs, rtol=1e-12)


def test_categorical_log_densities_are_the_product_over_columns(x64):
    rng = np.random.default_rng(3)
    n_components, n_columns, n_symbols = 3, 4, 5
    probs = rng.dirichlet(np.ones(n_symbols), (n_components, n_columns))
    x = rng.integers(0, n_symbols, (40, n_columns))
    family = jaxem.categorical(n_symbols)
    params = family.from_layout(jnp.float64, probabilities=probs)
    # probs[:, d, x_d] for every row and column: (K, n, D), a product over the columns.
    expected = np.log(np.prod(probs[:, np.arange(n_columns), x], axis=-1)).T
    np.testing.assert_allclose(log_densities(family, params, jnp.asarray(x)), expected, rtol=1e-12)
    np.testing.assert_allclose(family.to_layout(params)["probabilities"], probs, rtol=1e-12)
    features = family.features(jnp.asarray(x))
    assert features.shape == (40, n_columns * n_symbols) and features.dtype == jnp.float32
    assert family.n_parameters(n_components, n_columns) == n_components * n_columns * 4


# -- M-steps against naive weighted maximum likelihood -----------------------------------------


def _m_step(family, x, resp):
    resp = jnp.asarray(resp, jnp.float64)
    stats = family.statistics(None, jnp.asarray(x), resp)
    return family.m_step(stats, resp.sum(0), family.hyper(jnp.float64))


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gaussian_m_step_matches_naive_weighted_estimate(covariance_type, exact, x64):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 3)) * [1.0, 2.0, 0.5] + 1.0
    resp = _responsibilities(rng, 60, 3)
    family = jaxem.gaussian(covariance_type, reg_covar=1e-3, exact=exact)
    params = _m_step(family, x, resp)
    counts = resp.sum(0)
    means = resp.T @ x / counts[:, None]
    scatter = np.stack(
        [(resp[:, k, None] * (x - means[k])).T @ (x - means[k]) for k in range(3)]
    )  # (K, D, D)
    full = scatter / counts[:, None, None] + 1e-3 * np.eye(3)
    expected = {
        "full": full,
        "tied": scatter.sum(0) / counts.sum() + 1e-3 * np.eye(3),
        "diag": np.diagonal(full, axis1=1, axis2=2),
        "spherical": np.diagonal(full, axis1=1, axis2=2).mean(1),
    }[covariance_type]
    np.testing.assert_allclose(params.means, means, rtol=1e-10)
    np.testing.assert_allclose(family.covariances(params), expected, rtol=1e-9)


def test_poisson_m_step_matches_naive_weighted_estimate(x64):
    rng = np.random.default_rng(5)
    x = rng.poisson(5, (60, 3))
    resp = _responsibilities(rng, 60, 2)
    params = _m_step(jaxem.poisson(), x, resp)
    np.testing.assert_allclose(
        np.exp(params.log_rates), resp.T @ x / resp.sum(0)[:, None], rtol=1e-12
    )


@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (2.0, 3.0)])
def test_bernoulli_m_step_matches_naive_weighted_estimate(alpha, beta, x64):
    rng = np.random.default_rng(6)
    x = rng.integers(0, 2, (60, 4))
    resp = _responsibilities(rng, 60, 3)
    params = _m_step(jaxem.bernoulli(alpha, beta), x, resp)
    expected = (alpha - 1 + resp.T @ x) / (alpha + beta - 2 + resp.sum(0)[:, None])
    np.testing.assert_allclose(jax.nn.sigmoid(params.logits), expected, rtol=1e-12)


def test_bernoulli_m_step_clips_and_keeps_empty_components_finite(x64):
    family = jaxem.bernoulli()
    sums = jnp.array([[3.0, 0.0], [0.0, 0.0]])  # all ones, all zeros; an empty component
    params = family.m_step(sums, jnp.array([3.0, 0.0]), family.hyper(jnp.float64))
    assert bool(jnp.all(jnp.isfinite(params.logits)))
    eps = np.finfo(np.float64).eps
    np.testing.assert_allclose(
        family.to_layout(params)["probabilities"], [[1 - eps, eps], [0.5, 0.5]], rtol=1e-12
    )
    for dtype in (jnp.float32, jnp.float64):
        clipped = family.m_step(
            sums.astype(dtype), jnp.array([3.0, 0.0], dtype), family.hyper(dtype)
        )
        assert bool(jnp.all(jnp.isfinite(clipped.logits)))


@pytest.mark.parametrize("prior", [1.0, 1.5])
def test_categorical_m_step_matches_naive_counts_per_column(prior, x64):
    rng = np.random.default_rng(7)
    n_columns, n_symbols = 3, 4
    x = rng.integers(0, n_symbols, (60, n_columns))
    resp = _responsibilities(rng, 60, 2)
    params = _m_step(jaxem.categorical(n_symbols, prior=prior), x, resp)
    counts = np.stack(
        [resp.T @ (x[:, d, None] == np.arange(n_symbols)) for d in range(n_columns)], axis=1
    )  # (K, D, S)
    pseudo = np.maximum(prior - 1 + counts, 0)
    expected = pseudo / pseudo.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.exp(params.log_probs), expected, rtol=1e-12)


# -- optional hooks ----------------------------------------------------------------------------


def test_families_subclass_the_contract_and_declare_their_letters():
    letters = {
        jaxem.gaussian(): "mc",
        jaxem.categorical(3): "e",
        jaxem.poisson(): "l",
        jaxem.bernoulli(): "e",
    }
    for family, expected in letters.items():
        assert Family in type(family).__mro__  # explicit subclass: inherits the defaults
        assert family.update_letters == expected
    assert jaxem.categorical(3).data_dtype(jnp.float64) == jnp.int32
    assert jaxem.bernoulli().data_dtype(jnp.float64) == jnp.float64
    # Numeric hyperparameters do not change equality (no recompile).
    assert jaxem.bernoulli(2.0, 3.0) == jaxem.bernoulli()
    assert jaxem.gaussian("diag", init_covar=0.5) == jaxem.gaussian("diag")


def test_seeding_points():
    x = jnp.array([[0, 2], [1, 0]])
    np.testing.assert_array_equal(jaxem.gaussian().seeding_points(x), x)
    assert jnp.issubdtype(jaxem.gaussian().seeding_points(x).dtype, jnp.floating)
    np.testing.assert_array_equal(jaxem.poisson().seeding_points(x), x)
    np.testing.assert_array_equal(
        jaxem.categorical(3).seeding_points(x), [[1, 0, 0, 0, 0, 1], [0, 1, 0, 1, 0, 0]]
    )


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gaussian_initial_params_are_kmeans_centres_and_the_data_covariance(covariance_type, x64):
    rng = np.random.default_rng(8)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = centres[rng.integers(0, 3, 300)] + rng.normal(size=(300, 2))
    weights = jnp.ones(300).at[-10:].set(0.0)
    garbage = jnp.asarray(x).at[-10:].set(jnp.nan)  # zero-weight rows may hold anything
    family = jaxem.gaussian(covariance_type, init_covar=0.25)
    chunks = Chunks(garbage.reshape(3, 100, 2), weights.reshape(3, 100))
    params = family.initial_params(jax.random.key(0), chunks, 3, family.hyper(jnp.float64))
    means = np.asarray(params.means)
    np.testing.assert_allclose(
        means[np.lexsort(np.round(means).T[::-1])], centres[[0, 2, 1]], atol=0.3
    )
    covariance = np.cov(x[:-10].T) + 0.25 * np.eye(2)
    expected = {
        "full": np.broadcast_to(covariance, (3, 2, 2)),
        "tied": covariance,
        "diag": np.broadcast_to(np.diag(covariance), (3, 2)),
        "spherical": np.full(3, covariance.mean()),
    }[covariance_type]
    np.testing.assert_allclose(family.to_layout(params)["covariances"], expected, rtol=1e-10)


def test_other_initial_params_have_the_right_shapes_and_are_finite(x64):
    x = jnp.asarray(np.random.default_rng(9).integers(0, 3, (50, 4)))
    weights = jnp.ones(50)
    for family, shape in [
        (jaxem.categorical(3), (5, 4, 3)),
        (jaxem.poisson(), (5, 4)),
        (jaxem.bernoulli(), (5, 4)),
    ]:
        data = (x > 1).astype(jnp.float64) if isinstance(family, jaxem.Bernoulli) else x
        chunks = Chunks(data.reshape(2, 25, 4), weights.reshape(2, 25))
        params = family.initial_params(jax.random.key(1), chunks, 5, family.hyper(jnp.float64))
        (leaf,) = jax.tree.leaves(params)
        assert leaf.shape == shape and leaf.dtype == jnp.float64
        assert bool(jnp.all(jnp.isfinite(leaf)))
    probs = jaxem.categorical(3).to_layout(
        jaxem.categorical(3).initial_params(
            jax.random.key(1), Chunks(x[None], weights[None]), 5, None
        )
    )["probabilities"]
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-12)


def test_gaussian_keep_fixed_follows_the_letters(x64):
    rng = np.random.default_rng(10)
    family = jaxem.gaussian("diag", reg_covar=0.0, map_prior=True)
    hyper = family.hyper(jnp.float64)
    x = rng.normal(size=(40, 2))
    resp = jnp.asarray(_responsibilities(rng, 40, 2))
    old = family.from_layout(jnp.float64, means=np.ones((2, 2)) * 5, covariances=np.ones((2, 2)))
    sums = family.statistics(old, jnp.asarray(x), resp)
    counts = resp.sum(0)
    new = family.m_step(sums, counts, hyper)
    kept = family.keep_fixed(old, new, "m", sums, counts, hyper)
    np.testing.assert_array_equal(kept.means, new.means)
    np.testing.assert_array_equal(kept.precisions_cholesky, old.precisions_cholesky)
    kept = family.keep_fixed(old, new, "c", sums, counts, hyper)
    np.testing.assert_array_equal(kept.means, old.means)
    around_old = family.map_m_step(sums, counts, hyper, means=old.means)
    np.testing.assert_allclose(kept.precisions_cholesky, around_old.precisions_cholesky)
    # Covariances around the far-away fixed means are larger than around the new means.
    assert np.all(family.covariances(kept) > family.covariances(new))
    kept = family.keep_fixed(old, new, "st", sums, counts, hyper)
    assert all(a is b for a, b in zip(kept, old))
    assert jaxem.poisson().keep_fixed("old", "new", "stl", None, None, None) == "new"
    assert jaxem.bernoulli().keep_fixed("old", "new", "stl", None, None, None) == "old"


def test_gaussian_tied_where_and_take_components(x64):
    family = jaxem.gaussian("tied")
    a = family.from_layout(jnp.float64, means=np.zeros((3, 2)), covariances=np.eye(2))
    b = family.from_layout(jnp.float64, means=np.ones((3, 2)), covariances=2 * np.eye(2))
    mixed = family.where_components(jnp.array([True, False, True]), a, b)
    np.testing.assert_array_equal(mixed.means, [[0, 0], [1, 1], [0, 0]])
    np.testing.assert_array_equal(mixed.precisions_cholesky, a.precisions_cholesky)
    none = family.where_components(jnp.zeros(3, bool), a, b)
    np.testing.assert_array_equal(none.precisions_cholesky, b.precisions_cholesky)
    taken = family.take_components(b, jnp.array([2, 0]))
    assert taken.means.shape == (2, 2)
    np.testing.assert_array_equal(taken.precisions_cholesky, b.precisions_cholesky)
    full = jaxem.gaussian("full")
    c = full.from_layout(jnp.float64, means=np.arange(6.0).reshape(3, 2), covariances=np.stack(
        [np.eye(2) * (k + 1) for k in range(3)]
    ))  # fmt: skip
    taken = full.take_components(c, jnp.array([2, 0]))
    np.testing.assert_array_equal(
        taken.precisions_cholesky, c.precisions_cholesky[np.array([2, 0])]
    )


# -- Gaussian layouts on the host (scikit-learn / hmmlearn attributes) --------------------


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gaussian_layout_from_cholesky_is_float64_and_inverts(covariance_type, x64):
    rng = np.random.default_rng(11)
    family = jaxem.gaussian(covariance_type)
    layout, full = _gaussian_layout(covariance_type, rng, 3, 4)
    assert family.layout_shape(3, 4) == np.shape(layout)
    params = family.from_layout(jnp.float64, means=np.zeros((3, 4)), covariances=layout)
    host = family.layout_from_cholesky(np.asarray(params.precisions_cholesky))
    assert set(host) == {"covariances", "precisions", "precisions_cholesky"}
    for name, value in host.items():
        assert value.dtype == np.float64 and value.shape == np.shape(layout), name
    np.testing.assert_allclose(host["covariances"], layout, rtol=1e-12)
    device = family.to_layout(params)
    for name in host:
        np.testing.assert_allclose(host[name], device[name], rtol=1e-12)
    # The precisions are the inverse covariances, written in the type's layout.
    inverse = np.linalg.inv(full)
    expected = {
        "full": inverse,
        "tied": inverse[0],
        "diag": np.diagonal(inverse, axis1=1, axis2=2),
        "spherical": inverse[:, 0, 0],
    }[covariance_type]
    np.testing.assert_allclose(host["precisions"], expected, rtol=1e-12)
    # A float32 factor is still computed in float64.
    low = family.layout_from_cholesky(host["precisions_cholesky"].astype(np.float32))
    assert low["covariances"].dtype == np.float64


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gaussian_check_precisions_and_cholesky_from_precisions(covariance_type, x64):
    rng = np.random.default_rng(12)
    family = jaxem.gaussian(covariance_type)
    layout, _ = _gaussian_layout(covariance_type, rng, 3, 4)
    params = family.from_layout(jnp.float64, means=np.zeros((3, 4)), covariances=layout)
    precisions = family.layout_from_cholesky(np.asarray(params.precisions_cholesky))["precisions"]
    checked = family.check_precisions(precisions.astype(np.float32), 3, 4)
    assert checked.dtype == np.float64
    np.testing.assert_allclose(checked, precisions, rtol=1e-6)
    chol = family.cholesky_from_precisions(precisions)
    assert chol.dtype == np.float64
    # scikit-learn's factor: upper triangular, the one the family computes from covariances.
    np.testing.assert_allclose(chol, params.precisions_cholesky, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(family.layout_from_cholesky(chol)["covariances"], layout, rtol=1e-10)
    shape = family.layout_shape(3, 4)
    wrong = np.ones((2,) + shape)
    message = (
        f"The parameter '{covariance_type} precision' should have the shape of {shape}, "
        f"but got {wrong.shape}"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        family.check_precisions(wrong, 3, 4)
    bad = -precisions
    if covariance_type in ("diag", "spherical"):
        message = f"'{covariance_type} precision' should be positive"
    else:
        message = f"'{covariance_type} precision' should be symmetric, positive-definite"
    with pytest.raises(ValueError, match=message):
        family.check_precisions(bad, 3, 4)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gaussian_sample_numpy_gives_sklearns_samples(covariance_type):
    from sklearn.mixture import GaussianMixture
    from sklearn.utils import check_random_state

    rng = np.random.default_rng(13)
    family = jaxem.gaussian(covariance_type)
    layout, _ = _gaussian_layout(covariance_type, rng, 3, 2)
    reference = GaussianMixture(3, covariance_type=covariance_type, random_state=7)
    reference.weights_ = np.array([0.2, 0.5, 0.3])
    reference.means_ = rng.normal(size=(3, 2)) * 5
    reference.covariances_ = layout
    expected, labels = reference.sample(50)
    generator = check_random_state(7)
    counts = generator.multinomial(50, reference.weights_)
    ours = family.sample_numpy(generator, reference.means_, layout, counts)
    assert ours.dtype == np.float64
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_array_equal(np.bincount(labels, minlength=3), counts)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gaussian_hmmlearn_covariance_layouts(covariance_type):
    from hmmlearn.utils import fill_covars

    rng = np.random.default_rng(14)
    family = jaxem.gaussian(covariance_type)
    layout, full = _gaussian_layout(covariance_type, rng, 3, 4)
    np.testing.assert_array_equal(family.full_covariances(layout, 3, 4), full)
    np.testing.assert_array_equal(
        family.full_covariances(layout, 3, 4), fill_covars(layout, covariance_type, 3, 4)
    )
    np.testing.assert_array_equal(family.compact_covariances(layout, 3, 4), layout)
    unit = family.unit_covariances(3, 4)
    assert unit.shape == family.layout_shape(3, 4) and unit.dtype == np.float64
    identities = np.tile(np.eye(4), (3, 1, 1))
    np.testing.assert_array_equal(family.full_covariances(unit, 3, 4), identities)
    with pytest.raises(ValueError, match=f"'{covariance_type}' covars_ must have shape"):
        family.compact_covariances(np.ones((5, 5, 5, 5)), 3, 4, name="covars_")


def test_gaussian_spherical_layouts_need_and_accept_n_features():
    family = jaxem.gaussian("spherical")
    # hmmlearn's initialisation tiles the spherical variances over the features.
    tiled = np.array([[1.0, 1.0], [2.0, 4.0]])
    np.testing.assert_array_equal(family.compact_covariances(tiled, 2, 2), [1.0, 3.0])
    with pytest.raises(ValueError, match="need n_features"):
        family.full_covariances(np.ones(2), 2)
    # Other types read n_features off the layout.
    assert jaxem.gaussian("diag").full_covariances(np.ones((2, 3)), 2).shape == (2, 3, 3)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gaussian_covariance_view(covariance_type):
    rng = np.random.default_rng(15)
    family = jaxem.gaussian(covariance_type)
    layout, full = _gaussian_layout(covariance_type, rng, 3, 4)
    view = family.covariance_view(layout, 4)
    if view.shared is not None:
        assert view.per_component is None
        np.testing.assert_array_equal(view.shared, full[0])
    elif view.per_component.ndim == 3:
        np.testing.assert_array_equal(view.per_component, full)
    else:  # per-feature variances: the diagonals
        np.testing.assert_array_equal(view.per_component, np.diagonal(full, axis1=1, axis2=2))
    assert (view.shared is not None) == (covariance_type == "tied")
    assert bool(view.note) == (covariance_type == "spherical")


def test_sampling_draws_every_column(x64):
    labels = jnp.zeros(4000, jnp.int32)
    key = jax.random.key(0)
    categorical = jaxem.categorical(3)
    probs = np.array([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]])
    draws = np.asarray(
        categorical.sample(key, categorical.from_layout(jnp.float64, probabilities=probs), labels)
    )
    assert draws.shape == (4000, 2) and draws.dtype == np.int32
    for column in range(2):
        frequencies = np.bincount(draws[:, column], minlength=3) / 4000
        np.testing.assert_allclose(frequencies, probs[0, column], atol=0.03)
    bernoulli = jaxem.bernoulli()
    p = np.array([[0.2, 0.9, 0.5]])
    draws = np.asarray(
        bernoulli.sample(key, bernoulli.from_layout(jnp.float64, probabilities=p), labels)
    )
    assert draws.shape == (4000, 3) and set(np.unique(draws)) <= {0.0, 1.0}
    np.testing.assert_allclose(draws.mean(0), p[0], atol=0.03)


# -- fits that must need no model change ---------------------------------------------------------


def _planted_bernoulli(rng, n_rows=600, n_features=12, n_clusters=3):
    profiles = np.full((n_clusters, n_features), 0.1)
    block = n_features // n_clusters
    for k in range(n_clusters):
        profiles[k, k * block : (k + 1) * block] = 0.9
    labels = rng.integers(0, n_clusters, n_rows)
    x = (rng.random((n_rows, n_features)) < profiles[labels]).astype(np.int64)
    return x, labels


def _planted_categorical(rng, n_rows=600, n_columns=6, n_symbols=4, n_clusters=3):
    dominant = rng.integers(0, n_symbols, (n_clusters, n_columns))
    dominant[1] = (dominant[0] + 1) % n_symbols  # clusters disagree in every column
    dominant[2] = (dominant[0] + 2) % n_symbols
    labels = rng.integers(0, n_clusters, n_rows)
    noise = rng.integers(0, n_symbols, (n_rows, n_columns))
    keep = rng.random((n_rows, n_columns)) < 0.8
    return np.where(keep, dominant[labels], noise).astype(np.int64), labels


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("name", ["bernoulli", "categorical"])
def test_mixture_fits_integer_data_and_recovers_planted_clusters(name, init, x64):
    rng = np.random.default_rng(11)
    if name == "bernoulli":
        family = jaxem.bernoulli()
        x, labels = _planted_bernoulli(rng)
    else:
        family = jaxem.categorical(4)
        x, labels = _planted_categorical(rng)
    family.check_data(x)
    model = jaxem.mixture(family, 3, init=init)
    result = jaxem.fit(model, x, key=jax.random.key(0), n_restarts=4)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(result.params))
    predicted = np.asarray(model.predict(result.params, jnp.asarray(x)))
    assert adjusted_rand_score(labels, predicted) > 0.9


def test_bernoulli_hmm_fits_padded_sequences_with_non_decreasing_log_likelihood(x64):
    rng = np.random.default_rng(12)
    profiles = np.array([[0.9, 0.9, 0.9, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.9, 0.9, 0.9]])
    transmat = np.array([[0.95, 0.05], [0.05, 0.95]])
    lengths = [80, 55, 120]
    states = []
    for length in lengths:
        state = rng.integers(0, 2)
        for _ in range(length):
            states.append(state)
            state = rng.choice(2, p=transmat[state])
    states = np.array(states)
    x = (rng.random((len(states), 6)) < profiles[states]).astype(np.int64)
    obs, mask = jaxem.pad_sequences(x, lengths, dtype=np.float64)
    model = jaxem.hmm(jaxem.bernoulli(), 2)
    data = (jnp.asarray(obs), jnp.asarray(mask))
    result = jaxem.fit(model, data, key=jax.random.key(0), n_restarts=4, max_iter=50, tol=1e-8)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(result.params))
    for row in np.asarray(result.restarts.trace):
        row = row[np.isfinite(row)]
        assert row.size >= 2
        assert np.all(np.diff(row) >= -1e-10 * np.abs(row[1:]))
    decoded, _ = model.decode(result.params, *data)
    decoded = np.asarray(decoded)[np.asarray(mask) > 0]
    assert adjusted_rand_score(states, decoded) > 0.9
    probs = jaxem.bernoulli().to_layout(result.params.emissions)["probabilities"]
    np.testing.assert_allclose(probs[np.argsort(probs[:, 0])], profiles[::-1], atol=0.08)


# -- support checks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x, message",
    [
        (np.array([0, 1, 1]), r"Bernoulli data must be 2-D \(n_samples, n_features\), got 1-D"),
        (np.array([["a"], ["b"]]), "Bernoulli data must be boolean or numeric 0/1"),
        (np.array([[0.0], [np.nan]]), "Bernoulli data must be finite; got NaN or infinity"),
        (np.array([[0, 1], [2, 1]]), r"Bernoulli data must hold only 0 and 1; got 1 other"),
        (np.array([[0.5, 1.0]]), r"e\.g\. 0\.5\. Binarise the features"),
    ],
)
def test_bernoulli_check_data_messages(x, message):
    with pytest.raises(ValueError, match=message):
        jaxem.bernoulli().check_data(x)


@pytest.mark.parametrize(
    "x, message",
    [
        (np.array([0, 1]), r"Categorical data must have shape \(n_samples, n_columns\)"),
        (np.zeros((3, 0), int), r"Categorical data must have shape \(n_samples, n_columns\)"),
        (np.array([[0.5, 1.0]]), "Categorical symbols must be integers; got non-integer"),
        (np.array([[np.nan, 1.0]]), "Categorical symbols must be integers; got non-integer"),
        (np.array([["a"]]), "Categorical symbols must be integers, got dtype"),
        (np.array([[0, 1], [3, 0]]), r"Categorical symbols must lie in \[0, 2\], got values in"),
        (np.array([[-1, 1]]), r"Categorical symbols must lie in \[0, 2\]"),
    ],
)
def test_categorical_check_data_messages(x, message):
    with pytest.raises(ValueError, match=message):
        jaxem.categorical(3).check_data(x)


def test_check_data_accepts_the_support():
    jaxem.categorical(3).check_data(np.array([[0, 2, 1], [1, 1, 0]]))  # several columns
    jaxem.categorical(3).check_data(np.array([[0.0, 2.0]]))  # whole floats
    jaxem.bernoulli().check_data(np.array([[True, False]]))
    jaxem.bernoulli().check_data(np.array([[0.0, 1.0]]))
    jaxem.poisson().check_data(np.array([[0, 7]]))
    jaxem.gaussian().check_data(np.array([[-1.5, 2.0]]))
    with pytest.raises(ValueError, match="Poisson counts must be finite"):
        jaxem.poisson().check_data(np.array([[np.inf]]))


# -- layering ----------------------------------------------------------------------------------


def test_map_m_step_rescues_a_singular_covariance_as_hmmlearn(x64):
    """hmmlearn evaluates a covariance that is not positive definite as Σ + min_covar I."""
    family = jaxem.gaussian("full", reg_covar=0.0, map_prior=True, covars_prior=0.0)
    hyper = family.hyper(jnp.float64)
    x = jnp.array([[1.0, 2.0], [3.0, 6.0]])  # two points on a line: a singular scatter
    resp = jnp.ones((2, 1), jnp.float64)
    params = family.m_step(family.statistics(None, x, resp), resp.sum(0), hyper)
    scatter = np.cov(np.asarray(x).T, bias=True)
    expected = np.linalg.inv(scatter + 1e-3 * np.eye(2))  # init_covar: hmmlearn's min_covar
    np.testing.assert_allclose(family.precisions(params)[0], expected, rtol=1e-10)


@pytest.mark.parametrize(
    "family, budget, min_rows",
    [
        # (n, K, D) offsets of the exact forms (what the estimators use) and of the
        # elementwise missing-data forms; 16M elements (64 MB in float32) per array.
        (jaxem.gaussian("diag", exact=True), 32 * 256, 256),
        (jaxem.gaussian("full", exact=True), 32 * 256, 256),
        (jaxem.gaussian("spherical", missing=True), 32 * 256, 256),
        (jaxem.student_t("diag"), 32 * 256, 256),
        # a D x D conditional precision per row and component: 2M elements per row
        (jaxem.gaussian("full", missing=True), 32 * 256 * 256, 1),
        # the (n, P) features every component shares, P = D(D+3)/2
        (jaxem.gaussian("full"), 256 * 259 // 2, 256),
    ],
    ids=["diag-exact", "full-exact", "spherical-missing", "student-t", "full-missing", "full"],
)
def test_gaussian_chunks_are_sized_by_the_largest_e_step_temporary(family, budget, min_rows):
    # Sized by K alone, a 'diag' mixture at D = 256, K = 32 held 6 GB of offsets per chunk.
    model = jaxem.mixture(family, 32)
    x = np.zeros((200_000, 256), np.float32)
    rows = jaxem.engine.default_chunk_size(len(x), 1, model.row_width(x))
    assert rows >= min_rows  # row blocks large enough for the products
    assert rows * budget <= 1 << 24


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gaussian_chunks_at_small_d_are_sized_by_the_components(covariance_type):
    # Below D = 8 nothing changes: the (n, K) log-densities set the chunks, as before,
    # except for the D x D conditional precisions of missing full and tied (from D = 3).
    families = [jaxem.gaussian(covariance_type), jaxem.gaussian(covariance_type, exact=True)]
    missing = jaxem.gaussian(covariance_type, missing=True)
    if covariance_type in ("diag", "spherical"):
        families.append(missing)
    else:
        assert jaxem.mixture(missing, 5).row_width(np.zeros((10, 2))) == 5
        assert jaxem.mixture(missing, 5).row_width(np.zeros((10, 7))) == 5 * 49 // 8
    for family in families:
        assert jaxem.mixture(family, 5).row_width(np.zeros((10, 7))) == 5

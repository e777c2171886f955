"""Exact EM over streamed data equals the in-memory fit."""

import jax
import numpy as np
import pytest
import scipy.sparse

import jaxem
from jaxem import engine
from tests.conftest import make_blobs

N_ROWS = 800
X, _ = make_blobs(N_ROWS, n_features=3, n_clusters=3, seed=5)
WEIGHTS = np.random.default_rng(6).uniform(0.5, 2.0, N_ROWS)
MODELS = {
    "gmm": lambda: jaxem.mixture(jaxem.gaussian("full"), n_components=3),
    "kmeans": lambda: jaxem.kmeans(3),
}
SETTINGS = dict(n_restarts=3, max_iter=60, tol=1e-10)


def _close(result, reference):
    for got, want in zip(
        jax.tree.leaves(result.restarts.params), jax.tree.leaves(reference.restarts.params)
    ):
        want = np.asarray(want)
        assert np.max(np.abs(np.asarray(got) - want)) <= 1e-10 * np.max(np.abs(want))
    np.testing.assert_array_equal(result.restarts.n_iter, reference.restarts.n_iter)
    assert result.log_likelihood == pytest.approx(reference.log_likelihood, rel=1e-12)
    assert result.best_restart == reference.best_restart


def _blocks(rows, weights=None, size=97):
    """A callable source: blocks of ``size`` rows (not the chunk size)."""

    def blocks():
        for start in range(0, rows.shape[0], size):
            part = rows[start : start + size]
            yield part if weights is None else (part, weights[start : start + size])

    return blocks


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_streamed_fit_equals_the_in_memory_fit(name, weighted, tmp_path, x64):
    model = MODELS[name]()
    weights = WEIGHTS if weighted else None
    key = jax.random.key(0)
    start = engine.initialise(model, X, key=key, n_restarts=3)
    reference = jaxem.fit(model, X, key=key, init_params=start, weights=weights, **SETTINGS)
    np.save(tmp_path / "rows.npy", X)
    chunk = N_ROWS // 8
    from_file = jaxem.fit_stream(
        model,
        tmp_path / "rows.npy",
        key=key,
        init_params=start,
        weights=weights,
        chunk_size=chunk,
        **SETTINGS,
    )
    _close(from_file, reference)
    from_generator = jaxem.fit_stream(
        model, _blocks(X, weights), key=key, init_params=start, chunk_size=chunk, **SETTINGS
    )
    _close(from_generator, reference)


def test_sparse_matrices_and_lists_of_files_stream_too(tmp_path, x64):
    model = MODELS["gmm"]()
    key = jax.random.key(1)
    start = engine.initialise(model, X, key=key, n_restarts=3)
    reference = jaxem.fit(model, X, key=key, init_params=start, **SETTINGS)
    halves = [tmp_path / "a.npy", tmp_path / "b.npy"]
    np.save(halves[0], X[:300])
    np.save(halves[1], X[300:])
    for source in (scipy.sparse.csr_matrix(X), halves, [X[:500], np.asarray(X[500:])]):
        result = jaxem.fit_stream(
            model, source, key=key, init_params=start, chunk_size=N_ROWS // 8, **SETTINGS
        )
        _close(result, reference)


def test_default_init_reads_a_sample_and_is_deterministic(x64):
    model = MODELS["gmm"]()
    first = jaxem.fit_stream(model, X, key=jax.random.key(2), n_restarts=2, chunk_size=200)
    again = jaxem.fit_stream(model, _blocks(X), key=jax.random.key(2), n_restarts=2, chunk_size=200)
    # Every row fits in the sample: the init is the in-memory fit's.
    reference = jaxem.fit(model, X, key=jax.random.key(2), n_restarts=2)
    assert first.log_likelihood == pytest.approx(reference.log_likelihood, rel=1e-10)
    assert again.log_likelihood == pytest.approx(reference.log_likelihood, rel=1e-10)


@pytest.mark.parametrize(
    "source, options, message",
    [
        ("rows.csv", {}, "only .npy files can be streamed"),
        (np.zeros(5), {}, "must be a 2-D array"),
        ([np.zeros((4, 2)), np.zeros((4, 3))], {}, "same number of columns"),
        (np.zeros((4, 2)), {"weights": np.ones(3)}, r"weights must have shape \(4,\)"),
        (lambda: iter([]), {}, "yielded no rows"),
        (np.zeros((4, 2)), {"weights": -np.ones(4)}, "finite and non-negative"),
        (np.zeros((4, 2)), {"prefetch": 0}, "prefetch must be a positive int"),
    ],
)
def test_bad_sources_are_refused_with_the_fix(source, options, message):
    with pytest.raises(ValueError, match=message):
        jaxem.fit_stream(MODELS["gmm"](), source, key=jax.random.key(0), **options)

"""The engine's program store (:mod:`jaxem._program_store`): traced and lowered programs
kept on disk beside JAX's persistent compilation cache, so a warm process neither traces
nor lowers.

In-process tests turn only the store on (``use_folder``), never JAX's process-wide cache
settings, and turn it off again; the fresh-process test runs two children on a
temporary folder.
"""

import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import jaxem
from jaxem import _program_store, engine
from tests.conftest import make_blobs

X = make_blobs(n_samples=120, n_features=2, n_clusters=2, seed=3)[0].astype(np.float32)


@pytest.fixture
def store(tmp_path):
    """The store on, in a fresh folder, with its counters and memo reset; off after."""
    previous = _program_store.use_folder(tmp_path / "programs")
    saved = dict(_program_store.counts)
    _program_store.counts.update(exported=0, loaded=0)
    yield tmp_path / "programs"
    _program_store.use_folder(previous)
    _program_store.counts.update(saved)


def _model(n_components=2):
    return jaxem.mixture(jaxem.gaussian("diag"), n_components, max_components=4)


def _fit(model=None, **kwargs):
    options = dict(key=jax.random.key(0), n_restarts=3, max_iter=30, tol=1e-4)
    return jaxem.fit(model or _model(), X, **{**options, **kwargs})


def _same(a, b):
    for left, right in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(left), np.asarray(right))


def test_stored_program_gives_the_plain_result(store):
    plain_folder = _program_store.use_folder(None)
    plain = _fit()
    _program_store.use_folder(plain_folder)
    stored = _fit()
    # Two programs: the k-means init's seeding and the fit.
    assert _program_store.counts["exported"] == 2
    assert sorted(path.suffix for path in store.iterdir()) == [".jaxexport"] * 2 + [".json"] * 2
    _same(stored.params, plain.params)
    assert stored.log_likelihood == plain.log_likelihood
    _same(stored.restarts, plain.restarts)


def test_second_process_reads_instead_of_tracing(store, monkeypatch):
    first = _fit()
    assert _program_store.counts == {"exported": 2, "loaded": 0}
    # A new process: nothing in memory. Tracing the fit now would call fit_traced.
    _program_store.use_folder(store)
    traced = []
    monkeypatch.setattr(engine, "fit_traced", lambda *a, **k: traced.append(1))
    second = _fit()
    assert traced == []
    assert _program_store.counts == {"exported": 2, "loaded": 2}
    _same(second.params, first.params)


def test_compare_false_fields_share_one_program(store):
    # n_components within max_components and reg_covar are inputs, not part of the program.
    _fit(_model(2))
    _fit(jaxem.mixture(jaxem.gaussian("diag", reg_covar=1e-3), 3, max_components=4))
    assert _program_store.counts["exported"] == 2  # the seeding and the fit
    # Another covariance type: a fit program of its own; the seeding is the same.
    _fit(jaxem.mixture(jaxem.gaussian("spherical"), 2, max_components=4))
    assert _program_store.counts["exported"] == 3


@pytest.mark.parametrize("damage", ["program", "tree", "foreign class"])
def test_unreadable_entry_is_written_again(store, damage):
    model = jaxem.mixture(jaxem.gaussian("diag"), 2, init="random")  # one program
    first = _fit(model)
    (program,) = store.glob("*.jaxexport")
    tree = program.with_suffix(".json")
    if damage == "program":
        program.write_bytes(program.read_bytes()[:100])
    elif damage == "tree":
        tree.write_text("{not json")
    else:  # a description naming a module not imported is refused, never imported
        tree.write_text(json.dumps({"namedtuple": "this:Thing", "children": []}))
    _program_store.use_folder(store)
    second = _fit(model)
    assert _program_store.counts == {"exported": 2, "loaded": 0}
    _same(second.params, first.params)
    json.loads(tree.read_text())  # rewritten whole


def test_descriptions_name_only_namedtuples_of_imported_modules():
    assert "this" not in sys.modules
    with pytest.raises(ValueError, match="not imported"):
        _program_store._named_tuple_class("this:Thing")
    assert "this" not in sys.modules
    with pytest.raises(ValueError, match="not a NamedTuple"):
        _program_store._named_tuple_class("jaxem.engine:fit")
    with pytest.raises(ValueError, match="not a NamedTuple"):
        _program_store._named_tuple_class("collections:OrderedDict")
    assert _program_store._named_tuple_class("jaxem.engine:FitResult") is engine.FitResult


def test_output_it_cannot_describe_runs_the_plain_program(store, monkeypatch):
    monkeypatch.setattr(_program_store, "_skeleton", lambda tree: None)
    first = _fit()
    second = _fit()
    assert _program_store.counts["exported"] == 0 and not any(store.iterdir())
    _same(second.params, first.params)


def test_inside_a_trace_the_store_is_bypassed(store):
    model = _model()
    params = _fit(model).params
    padded = model.pad(params) if model.has_padding() else params
    draw = jax.jit(lambda key: engine.sample(model, key, padded, 5))
    exported_before = _program_store.counts["exported"]
    samples = draw(jax.random.key(1))
    assert jax.tree.leaves(samples)[0].shape[0] == 5
    assert _program_store.counts["exported"] == exported_before


def test_parameter_shapes_are_read_instead_of_traced(store, monkeypatch):
    model = _model()
    first = engine.initial_shapes(model, X, n_restarts=2)
    (path,) = store.glob("*.shapes.json")
    engine._expected_init.cache_clear()  # a new process
    monkeypatch.setattr(jax, "eval_shape", lambda *a, **k: pytest.fail("traced again"))
    second = engine.initial_shapes(model, X, n_restarts=2)
    assert jax.tree.structure(second) == jax.tree.structure(first)
    assert jax.tree.leaves(second) == jax.tree.leaves(first)
    monkeypatch.undo()
    path.write_text("{damaged")
    engine._expected_init.cache_clear()
    assert jax.tree.leaves(engine.initial_shapes(model, X, n_restarts=2)) == jax.tree.leaves(first)
    json.loads(path.read_text())  # written again
    engine._expected_init.cache_clear()


_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import jaxem
    from jaxem import _program_store, engine
    jaxem.enable_compilation_cache(sys.argv[1], store_programs=True)
    traces = []
    traced = engine.fit_traced
    engine.fit_traced = lambda *a, **k: traces.append(1) or traced(*a, **k)
    X = np.loadtxt(sys.argv[2], delimiter=",", skiprows=1)
    gm = jaxem.GaussianMixture(n_components=2, n_init=3, random_state=0).fit(X)
    print(json.dumps({
        "traces": len(traces), **_program_store.counts,
        "means": gm.means_.tolist(), "score": gm.score(X),
    }))
    """
)


@pytest.mark.slow
def test_fresh_process_neither_traces_nor_lowers(tmp_path):
    faithful = jaxem.__file__.replace("__init__.py", "data/faithful.csv")

    def child():
        completed = subprocess.run(
            [sys.executable, "-c", _CHILD, str(tmp_path / "cache"), faithful],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert completed.returncode == 0, completed.stderr
        return json.loads(completed.stdout.strip().splitlines()[-1])

    first, second = child(), child()
    assert first["traces"] >= 1 and first["exported"] >= 2 and first["loaded"] == 0
    assert second["traces"] == 0 and second["exported"] == 0
    assert second["loaded"] == first["exported"]
    assert second["means"] == first["means"] and second["score"] == first["score"]
    assert (tmp_path / "cache" / "programs").is_dir()

"""The XLA options the engine compiles its programs with."""

import jax
import numpy as np
import pytest

import jaxem
from jaxem import engine


def test_engine_programs_compile_without_ynnpack_fusions():
    # XLA:CPU's YNNPACK fusions ran the reductions of a 'diag' mixture's E-step 40x
    # slower (benchmarks/RESULTS.md): the engine turns them off for its programs.
    model = jaxem.mixture(jaxem.gaussian("diag", exact=True), 4)
    x = np.random.default_rng(0).normal(size=(512, 64)).astype(np.float32)
    params = jaxem.fit(model, x, key=jax.random.key(0), max_iter=1).params
    prepared = engine._prepare(model, x, None, None, 1, None)
    args = (model, params, prepared.x, prepared.weights, prepared.hyper)
    statics = dict(chunk_size=prepared.chunk_size, restarts=False)
    program = engine._statistics_program
    compiled = program.jitted.lower(*args, **statics).compile().as_text()
    assert "__ynn_fusion" not in compiled
    plain = jax.jit(program.__wrapped__, static_argnames=("model", "chunk_size", "restarts"))
    if "__ynn_fusion" not in plain.lower(*args, **statics).compile().as_text():
        pytest.skip("this jaxlib makes no YNNPACK fusion here even with its defaults")


def _options_seen(monkeypatch):
    """The fusion-emitter option of every engine program called, by program name."""
    seen = []
    call = engine._program_store.call

    def spy(name, jitted, function, model, arrays, statics, compiler_options):
        seen.append((name, compiler_options.get("xla_cpu_use_fusion_emitters", True)))
        return call(name, jitted, function, model, arrays, statics, compiler_options)

    monkeypatch.setattr(engine._program_store, "call", spy)
    return seen


def test_small_problems_compile_with_the_cheap_options_and_large_ones_do_not(monkeypatch):
    # Small problems compile with XLA's cheapest optimisation and older fusion
    # emitters (compile time halved); large ones keep the defaults (the older emitters
    # ran a full mixture's EM 20 % slower).
    seen = _options_seen(monkeypatch)
    model = jaxem.mixture(jaxem.gaussian("diag"), 8)
    rng = np.random.default_rng(0)
    small = rng.normal(size=(100, 2)).astype(np.float32)
    key = jax.random.key(0)
    params = jaxem.fit(model, small, key=key, n_restarts=2, max_iter=2).params
    engine.initialise(model, small, key=key, n_restarts=2)
    engine.evaluate(model, params, small, "log_prob")
    engine.statistics(model, params, small)
    engine.fit_sweep(model, small, {"n_active": np.array([1, 2])}, key=key, max_iter=1)
    programs = ["fit_body", "init_program", "evaluate_program", "statistics_program", "sweep_body"]
    assert [name for name, _ in seen] == programs
    assert not any(emitters for _, emitters in seen)

    del seen[:]
    large = rng.normal(size=(40_000, 4)).astype(np.float32)
    params = jaxem.fit(model, large, key=key, n_restarts=2, max_iter=1).params
    engine.initialise(model, large, key=key, n_restarts=2)
    engine.evaluate(model, params, large, "log_prob")
    engine.statistics(model, params, large)
    engine.fit_sweep(model, large, {"n_active": np.array([1, 2])}, key=key, max_iter=1)
    assert [name for name, _ in seen] == programs
    assert all(emitters for _, emitters in seen)
    # Even one restart's evaluation of the large data is large.
    assert engine._work(model, engine._prepare(model, large, None, None, 1, None).x, 1) > (
        engine._SMALL_WORK
    )

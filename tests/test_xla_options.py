"""The XLA options the engine compiles its programs with."""

import subprocess
import sys

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
    """(program name, fusion emitters on, parallel codegen parts, backend optimisation
    level) of every engine program called."""
    seen = []
    call = engine._program_store.call

    def spy(name, jitted, function, model, arrays, statics, compiler_options):
        emitters = compiler_options.get("xla_cpu_use_fusion_emitters", True)
        split = compiler_options.get("xla_cpu_parallel_codegen_split_count")
        level = compiler_options.get("xla_backend_optimization_level")
        seen.append((name, emitters, split, level))
        return call(name, jitted, function, model, arrays, statics, compiler_options)

    monkeypatch.setattr(engine._program_store, "call", spy)
    return seen


# The k-means init's seeding runs in a program of its own before the fit's and the
# initialisation's (models with equal seedings share it).
PROGRAMS = [
    "seed_program",
    "fit_body",
    "seed_program",
    "init_program",
    "evaluate_program",
    "statistics_program",
    "sweep_body",
]


def _call_every_program(model, x):
    key = jax.random.key(0)
    params = jaxem.fit(model, x, key=key, n_restarts=2, max_iter=2).params
    engine.initialise(model, x, key=key, n_restarts=2)
    engine.evaluate(model, params, x, "log_prob")
    engine.statistics(model, params, x)
    engine.fit_sweep(model, x, {"n_active": np.array([1, 2])}, key=key, max_iter=1)


@pytest.mark.parametrize("cached", [False, True])
def test_small_problems_compile_with_the_cheap_options_and_large_ones_do_not(monkeypatch, cached):
    # Small problems compile with XLA's older fusion emitters (faster to compile, as
    # fast to run small problems), and without a persistent cache also at optimisation
    # level 0 as one LLVM module (cheapest to compile, 2.5x slower to run); large ones
    # keep the defaults (the older emitters ran a full mixture's EM 20 % slower).
    monkeypatch.setattr(engine, "_persistent_cache_on", lambda: cached)
    seen = _options_seen(monkeypatch)
    model = jaxem.mixture(jaxem.gaussian("diag"), 8)
    rng = np.random.default_rng(0)
    _call_every_program(model, rng.normal(size=(100, 2)).astype(np.float32))
    split, level = (None, None) if cached else (1, 0)
    assert seen == [(name, False, split, level) for name in PROGRAMS]

    del seen[:]
    large = rng.normal(size=(40_000, 4)).astype(np.float32)
    _call_every_program(model, large)
    assert seen == [(name, True, None, None) for name in PROGRAMS]
    # Even one restart's evaluation of the large data is large.
    assert engine._work(model, engine._prepare(model, large, None, None, 1, None).x, 1) > (
        engine._SMALL_WORK
    )


def test_the_persistent_cache_is_seen_on_only_with_a_folder(tmp_path):
    # In a subprocess: a cache folder set in this process would stay JAX's for good.
    script = (
        "import jax; from jaxem import engine; on = [engine._persistent_cache_on()]; "
        f"jax.config.update('jax_compilation_cache_dir', {str(tmp_path)!r}); "
        "on.append(engine._persistent_cache_on()); print(on)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[False, True]"

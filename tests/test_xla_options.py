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

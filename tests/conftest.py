"""Shared fixtures. x64 is switched on only inside the tests that ask for it."""

import functools
import os
from pathlib import Path

# scikit-learn's array API dispatch (tests/estimators/test_array_api.py and its own array
# API tests in tests/test_dropin.py) needs SciPy's array API support, which this variable
# turns on before scipy is first imported, as in scikit-learn's own test runs.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxem import engine  # noqa: E402

FAITHFUL = Path(__file__).resolve().parents[1] / "jaxem" / "data" / "faithful.csv"


@pytest.fixture
def x64():
    """Run the test with JAX's 64-bit mode on, restoring the previous mode after."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def faithful():
    """Old Faithful eruptions as a float64 numpy array of shape (272, 2)."""
    return np.loadtxt(FAITHFUL, delimiter=",", skiprows=1)


#: XLA options of the engine's programs for small problems where no persistent cache
#: keeps them: the cheapest to compile. For the tests' own ``jax.jit`` programs
#: (:func:`jit_small`), whose compiles at JAX's default options took a third of some
#: modules' time (test_gradients.py).
SMALL_PROGRAM_OPTIONS = {**engine._COMPILER_OPTIONS, **engine._UNCACHED_SMALL_PROGRAM_OPTIONS}


def jit_small(function=None, **jit_kwargs):
    """``jax.jit`` with :data:`SMALL_PROGRAM_OPTIONS`; also as a decorator factory."""
    if function is None:
        return functools.partial(jit_small, **jit_kwargs)
    return jax.jit(function, compiler_options=SMALL_PROGRAM_OPTIONS, **jit_kwargs)


def make_blobs(n_samples=300, n_features=2, n_clusters=3, seed=0, spread=4.0):
    """Small, well-separated Gaussian blobs as float64 numpy data."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(n_clusters, n_features))
    labels = rng.integers(n_clusters, size=n_samples)
    return centers[labels] + rng.normal(size=(n_samples, n_features)), labels


class CompileCounter:
    """Counts XLA compilations (backend compiles) while active."""

    _EVENT = "/jax/core/compile/backend_compile_duration"
    _active: list = []
    _registered = False

    def __init__(self):
        self.count = 0

    @classmethod
    def _listen(cls, event, duration, **kwargs):
        if event == cls._EVENT:
            for counter in cls._active:
                counter.count += 1

    def __enter__(self):
        if not CompileCounter._registered:
            jax.monitoring.register_event_duration_secs_listener(CompileCounter._listen)
            CompileCounter._registered = True
        CompileCounter._active.append(self)
        return self

    def __exit__(self, *exc_info):
        CompileCounter._active.remove(self)


@pytest.fixture
def count_compiles():
    """``with count_compiles() as counter: ...; counter.count`` compilations inside."""
    return CompileCounter


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop compiled programs after each test module. One process compiles hundreds of
    programs over the suite; XLA's CPU executables each hold their own memory
    mappings, and without this the suite's process grew past 4 GB and crashed inside
    XLA's compiler. Programs are shared within a module, where the tests reuse them."""
    yield
    jax.clear_caches()


@pytest.fixture(autouse=True)
def _room_for_programs():
    """Before each test, drop compiled programs once the memory mappings pass half of
    vm.max_map_count: the engine drops them itself at three quarters, and doing it
    here, between tests, keeps that from happening inside a test that counts compiles."""
    if engine.near_map_limit(0.5):
        jax.clear_caches()
        engine.release_compiled_programs()
    yield


def _xdist_worker() -> bool:
    """Whether this process is one of pytest-xdist's workers (``-n N``)."""
    return "PYTEST_XDIST_WORKER" in os.environ


def pytest_collection_modifyitems(session, config, items):
    """Under pytest-xdist (the README's ``-n 2``, files dealt out whole in collection
    order, ``--dist loadfile --no-loadscope-reorder`` in pyproject), the peers' files
    (tests/test_dropin.py, minutes of subprocess) go first, so that the worker that
    waits for them starts at once and the other keeps the rest going."""
    if _xdist_worker():
        items.sort(key=lambda item: getattr(item, "originalname", None) != "test_peer_file_passes")


def pytest_collection_finish(session):
    """Start the peers' test files (tests/test_dropin.py) in the background at once,
    so they run beside the rest of the suite instead of after it. Under pytest-xdist
    every worker collects every test, so a worker starts them only when it reaches
    them (``peer_tree``); the other worker runs the rest meanwhile."""
    if _xdist_worker():
        return
    # The module is found through its items: pytest imports it as "test_dropin" or
    # "tests.test_dropin" depending on the import mode (looking up only the latter
    # started the peers when their tests were reached, 11 minutes late).
    if session.config.option.collectonly:  # nothing runs, so nothing would stop them
        return
    for item in session.items:
        if getattr(item, "originalname", None) == "test_peer_file_passes":
            item.module.start_peer_runs(session.items)
            return

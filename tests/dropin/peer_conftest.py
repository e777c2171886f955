"""conftest.py of the temporary directory that holds the peers' copied test files.

Copied there as ``conftest.py`` by :mod:`tests.dropin.harness`; the pytest that
loads it is a subprocess, never jaxem's own test session. It provides

- scikit-learn's global fixtures: ``global_random_seed`` (42, or
  ``SKLEARN_TESTS_GLOBAL_RANDOM_SEED``) and ``global_dtype``, taken from
  ``sklearn.conftest`` when it imports, else the same definitions here;
- the exclusions: tests whose id matches a pattern of the JSON file named by
  ``JAXEM_DROPIN_EXCLUDE`` are deselected, and logged with the pattern; so are,
  silently, the ids listed in ``JAXEM_DROPIN_DONE`` (run before a crash);
- a check that the copied modules really hold jaxem's classes;
- jaxem's programs for small problems as users get them by default (compiled with
  the options for no persistent cache, although the harness shares one between runs);
- a JSON-lines log, ``JAXEM_DROPIN_LOG``: each test's start, then its outcome, first
  error lines and time, written as it happens so that a crash of the interpreter
  (a segfault in XLA) still tells which test crashed.
"""

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

import jaxem
from jaxem import engine

# The harness gives both runs one persistent compilation cache (JAX_COMPILATION_CACHE_DIR)
# only so that the second run reuses the first one's compiles. jaxem's users have no
# cache unless they opt in, and without one jaxem compiles small problems with its
# cheapest options (engine._sized): these files test that default, and their first run
# takes a third less time so (test_gaussian_mixture.py and test_gmm_hmm_new.py with
# JAX's x64 flag off, one process on the 2-core CPU: 247 -> 155 s). Raises if the
# function is renamed, rather than silently testing the other variant.
pytest.MonkeyPatch().setattr(engine, "_persistent_cache_on", lambda: False)

try:  # scikit-learn's own definitions, so that its environment variables work as there
    from sklearn.conftest import global_dtype, pytest_generate_tests  # noqa: F401
except Exception:  # pragma: no cover - only where sklearn's conftest does not import

    @pytest.fixture(
        params=[
            pytest.param(
                np.float32,
                marks=pytest.mark.skipif(
                    os.environ.get("SKLEARN_RUN_FLOAT32_TESTS", "0") != "1",
                    reason="Set SKLEARN_RUN_FLOAT32_TESTS=1 to run float32 dtype tests",
                ),
            ),
            np.float64,
        ]
    )
    def global_dtype(request):
        yield request.param

    def pytest_generate_tests(metafunc):
        if "global_random_seed" in metafunc.fixturenames:
            seed = os.environ.get("SKLEARN_TESTS_GLOBAL_RANDOM_SEED")
            if seed is None:
                seeds = [42]
            elif seed == "all":
                seeds = list(range(100))
            elif "-" in seed:
                start, stop = seed.split("-")
                seeds = list(range(int(start), int(stop) + 1))
            else:
                seeds = [int(seed)]
            metafunc.parametrize("global_random_seed", seeds)


#: Names a copied module binds -> jaxem's class it must be after the rewrite.
JAXEM_CLASSES = {
    "GaussianMixture": jaxem.GaussianMixture,
    "KMeans": jaxem.KMeans,
    "MiniBatchKMeans": jaxem.MiniBatchKMeans,
}
JAXEM_HMM_CLASSES = {
    "GaussianHMM": jaxem.GaussianHMM,
    "CategoricalHMM": jaxem.CategoricalHMM,
    "PoissonHMM": jaxem.PoissonHMM,
}


@pytest.fixture(autouse=True, scope="module")
def _fresh_jax_caches():
    """Drop compiled programs between modules, as jaxem's own conftest does: hundreds
    of programs in one long process exhaust the memory maps and crash XLA."""
    yield
    import jax

    jax.clear_caches()


_RESULTS: dict = {}  # tests under way, by id
_START = time.perf_counter()


def short_id(nodeid):
    """``dir/test_file.py::Class::test[id]`` -> ``test_file.py::Class::test[id]``."""
    path, _, rest = nodeid.partition("::")
    return f"{Path(path).name}::{rest}" if rest else Path(path).name


def pattern_regex(pattern):
    """A glob where only ``*`` is special (test ids are full of ``[``)."""
    return re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$")


def _check_rewritten(module):
    for name, cls in JAXEM_CLASSES.items():
        if name in vars(module) and vars(module)[name] is not cls:
            raise pytest.UsageError(f"{module.__name__}.{name} is not jaxem's: the rewrite failed")
    hmm = vars(module).get("hmm")
    if hmm is not None:
        for name, cls in JAXEM_HMM_CLASSES.items():
            if getattr(hmm, name) is not cls:
                raise pytest.UsageError(
                    f"{module.__name__}.hmm.{name} is not jaxem's: the rewrite failed"
                )


def _log(**entry):
    """One line of the JSON-lines log, flushed at once: a crash loses nothing before it."""
    path = os.environ.get("JAXEM_DROPIN_LOG")
    if path:
        with open(path, "a") as log:
            log.write(json.dumps(entry) + "\n")


def pytest_collection_modifyitems(config, items):
    exclude_file = os.environ.get("JAXEM_DROPIN_EXCLUDE")
    patterns = json.loads(Path(exclude_file).read_text()) if exclude_file else {}
    compiled = [(pattern, pattern_regex(pattern)) for pattern in patterns]
    done_file = os.environ.get("JAXEM_DROPIN_DONE")  # already run before a crash
    done = set(json.loads(Path(done_file).read_text())) if done_file else set()
    kept, deselected, checked = [], [], set()
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and module.__name__ not in checked:
            _check_rewritten(module)
            checked.add(module.__name__)
        key = short_id(item.nodeid)
        match = next((pattern for pattern, regex in compiled if regex.match(key)), None)
        if match is not None:
            _log(excluded=key, pattern=match)
        if match is None and key not in done:
            kept.append(item)
        else:
            deselected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def pytest_collectreport(report):
    if report.failed:
        _log(collection_error=report.nodeid, message=_first_lines(report))


def _first_lines(report, n_lines=6):
    """The exception line(s) of a failure, or the reason of a skip."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # skip: (path, lineno, reason)
        return str(longrepr[2])
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        lines = crash.message.splitlines()
        where = f"{Path(crash.path).name}:{crash.lineno}"
        return "\n".join(lines[:n_lines]) + f"\n  at {where}"
    return "\n".join(str(longrepr).strip().splitlines()[-n_lines:])


def pytest_runtest_logstart(nodeid, location):
    _log(started=short_id(nodeid))


def pytest_runtest_logreport(report):
    key = short_id(report.nodeid)
    record = _RESULTS.setdefault(key, {"outcome": "passed", "message": "", "duration": 0.0})
    record["duration"] += report.duration
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            record["outcome"] = "xfailed" if report.skipped else "xpassed"
        else:
            record["outcome"] = report.outcome
        if not report.passed:
            record["message"] = _first_lines(report)
    elif report.failed:  # setup or teardown
        record["outcome"] = "error"
        record["message"] = f"({report.when}) " + _first_lines(report)
    elif report.skipped:  # skipif marks and skips in fixtures
        record["outcome"] = "skipped"
        record["message"] = _first_lines(report)
    if report.when == "teardown":
        _log(test=key, **_RESULTS.pop(key))


def pytest_sessionfinish(session, exitstatus):
    _log(finished=int(exitstatus), seconds=time.perf_counter() - _START)

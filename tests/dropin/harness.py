"""Copy the peers' test files, point them at jaxem, run them in a pytest subprocess.

The copies live in a temporary directory for one test session; this repository
holds none of scikit-learn's or hmmlearn's code. The layout of the copy::

    root/
      pytest.ini                  # the subprocess's own settings, not jaxem's
      conftest.py                 # peer_conftest.py: fixtures, exclusions, result log
      jaxem_hmm_shim.py           # hmm_shim.py: hmmlearn.hmm with jaxem's HMMs
      sklearn_mixture/test_gaussian_mixture.py, test_mixture.py, test_bayesian_mixture.py
      sklearn_cluster/test_k_means.py
      hmmlearn_tests/__init__.py, conftest.py, test_*_hmm.py   # a package, as upstream

Imports are rewritten statement by statement from the syntax tree, keeping every
line where it was, so that tracebacks point at upstream's line numbers.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]


@dataclass(frozen=True)
class PeerFile:
    """One upstream test file: where it is installed and where its copy goes."""

    package: str  # installed distribution's top-level package
    path: str  # inside that package
    directory: str  # inside the copy

    @property
    def module_package(self) -> str:
        """The package the file belongs to upstream (relative imports resolve in it)."""
        return ".".join([self.package, *Path(self.path).parent.parts])

    @property
    def source(self) -> Path:
        return package_dir(self.package) / self.path


#: The peers' test files run against jaxem, by file name (file names are unique).
PEER_FILES = {
    "test_gaussian_mixture.py": PeerFile(
        "sklearn", "mixture/tests/test_gaussian_mixture.py", "sklearn_mixture"
    ),
    "test_mixture.py": PeerFile("sklearn", "mixture/tests/test_mixture.py", "sklearn_mixture"),
    "test_bayesian_mixture.py": PeerFile(
        "sklearn", "mixture/tests/test_bayesian_mixture.py", "sklearn_mixture"
    ),
    "test_k_means.py": PeerFile("sklearn", "cluster/tests/test_k_means.py", "sklearn_cluster"),
    "test_gaussian_hmm.py": PeerFile("hmmlearn", "tests/test_gaussian_hmm.py", "hmmlearn_tests"),
    "test_categorical_hmm.py": PeerFile(
        "hmmlearn", "tests/test_categorical_hmm.py", "hmmlearn_tests"
    ),
    "test_poisson_hmm.py": PeerFile("hmmlearn", "tests/test_poisson_hmm.py", "hmmlearn_tests"),
    **{
        f"test_{stem}.py": PeerFile("hmmlearn", f"tests/test_{stem}.py", "hmmlearn_tests")
        for stem in ("multinomial_hmm", "gmm_hmm", "gmm_hmm_new", "gmm_hmm_multisequence")
    },
    "test_factor_analysis.py": PeerFile(
        "sklearn", "decomposition/tests/test_factor_analysis.py", "sklearn_decomposition"
    ),
    "test_online_lda.py": PeerFile(
        "sklearn", "decomposition/tests/test_online_lda.py", "sklearn_decomposition"
    ),
}

#: Helpers the hmmlearn tests import (``from . import make_covar_matrix, ...``) and
#: hmmlearn's conftest (it seeds NumPy from ``HMMLEARN_SEED``), copied as they are.
SUPPORT_FILES = [
    PeerFile("hmmlearn", "tests/__init__.py", "hmmlearn_tests"),
    PeerFile("hmmlearn", "tests/conftest.py", "hmmlearn_tests"),
]

#: Upstream packages copied whole enough that their own relative imports still work.
COPIED_PACKAGES = {"hmmlearn.tests"}

#: (module, name) imported by a test file -> jaxem's drop-in. Other names from the
#: same modules (``_log_wishart_norm``, ``k_means``) stay.
CLASSES = {
    ("sklearn.mixture", "GaussianMixture"): "jaxem",
    ("sklearn.mixture._gaussian_mixture", "GaussianMixture"): "jaxem",
    ("sklearn.mixture", "BayesianGaussianMixture"): "jaxem",
    ("sklearn.mixture._bayesian_mixture", "BayesianGaussianMixture"): "jaxem",
    ("sklearn.cluster", "KMeans"): "jaxem",
    ("sklearn.cluster._kmeans", "KMeans"): "jaxem",
    ("sklearn.cluster", "MiniBatchKMeans"): "jaxem",
    ("sklearn.cluster._kmeans", "MiniBatchKMeans"): "jaxem",
    ("hmmlearn.hmm", "GaussianHMM"): "jaxem",
    ("hmmlearn.hmm", "CategoricalHMM"): "jaxem",
    ("hmmlearn.hmm", "PoissonHMM"): "jaxem",
    ("hmmlearn.hmm", "MultinomialHMM"): "jaxem",
    ("hmmlearn.hmm", "GMMHMM"): "jaxem",
    ("sklearn.decomposition", "FactorAnalysis"): "jaxem",
    ("sklearn.decomposition", "LatentDirichletAllocation"): "jaxem",
}
#: (package, module) imported by a test file -> module imported in its place.
MODULES = {("hmmlearn", "hmm"): "jaxem_hmm_shim"}

#: Dotted paths written out in code or strings (``mock.patch("sklearn.cluster.KMeans.fit")``).
DOTTED = [
    (
        re.compile(r"\bsklearn\.mixture\.(?:_gaussian_mixture\.)?GaussianMixture\b"),
        "jaxem.GaussianMixture",
    ),
    (
        re.compile(r"\bsklearn\.mixture\.(?:_bayesian_mixture\.)?BayesianGaussianMixture\b"),
        "jaxem.BayesianGaussianMixture",
    ),
    (re.compile(r"\bsklearn\.cluster\.(?:_kmeans\.)?KMeans\b"), "jaxem.KMeans"),
    (
        re.compile(r"\bsklearn\.cluster\.(?:_kmeans\.)?MiniBatchKMeans\b"),
        "jaxem.MiniBatchKMeans",
    ),
    (
        re.compile(r"\bsklearn\.decomposition\.(?:_factor_analysis\.)?FactorAnalysis\b"),
        "jaxem.FactorAnalysis",
    ),
    (
        re.compile(r"\bsklearn\.decomposition\.(?:_lda\.)?LatentDirichletAllocation\b"),
        "jaxem.LatentDirichletAllocation",
    ),
    (
        re.compile(
            r"\bhmmlearn\.hmm\.(GaussianHMM|CategoricalHMM|PoissonHMM|MultinomialHMM|GMMHMM)\b"
        ),
        r"jaxem.\1",
    ),
]

#: Calls that patch an object; a test patching the peers' internals tests the peer.
PATCHERS = {"setattr", "delattr", "patch", "object", "dict", "multiple"}

PYTEST_INI = """\
[pytest]
# The peers' test files run under these settings only, not jaxem's pyproject.
addopts = -p no:cacheprovider
"""


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"{package} is not installed: its test files cannot be run")
    return Path(spec.origin).parent


def _absolute_module(node: ast.ImportFrom, module_package: str) -> str:
    if not node.level:
        return node.module
    parts = module_package.split(".")
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _import_statements(node: ast.ImportFrom, module: str) -> tuple[list[str], list[str]]:
    """The statements replacing one ``from module import ...``, and the names redirected."""
    kept, statements, redirected = [], [], []
    for alias in node.names:
        bound = f" as {alias.asname}" if alias.asname else ""
        if alias.name == "*" and any(module == m for m, _ in CLASSES):
            raise ValueError(f"'from {module} import *' would bind the peer's class; not supported")
        if (module, alias.name) in CLASSES:
            statements.append(f"from {CLASSES[module, alias.name]} import {alias.name}{bound}")
            redirected.append(alias.name)
        elif (module, alias.name) in MODULES:
            statements.append(
                f"import {MODULES[module, alias.name]} as {alias.asname or alias.name}"
            )
            redirected.append(f"{module}.{alias.name}")
        else:
            kept.append(f"{alias.name}{bound}")
    if kept:
        statements.insert(0, f"from {module} import {', '.join(kept)}")
    return statements, redirected


def rewrite_source(source: str, module_package: str) -> tuple[str, list[str]]:
    """Point a test file's imports of the peers' classes at jaxem.

    Returns the new source and the names redirected. Relative imports become absolute
    (the copy is not inside the peer's package) unless they stay inside a package
    copied whole (``from . import normalized`` in hmmlearn's tests).
    """
    data = source.encode()
    line_starts = [0]
    for line in data.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    edits, redirected = [], []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        module = _absolute_module(node, module_package)
        inside_copy = any(module == p or module.startswith(p + ".") for p in COPIED_PACKAGES)
        if node.level and module_package in COPIED_PACKAGES and inside_copy:
            continue
        statements, names = _import_statements(node, module)
        if not names and not node.level:
            continue
        redirected += names
        # Same lines as the original statement: tracebacks keep upstream's line numbers.
        text = "; ".join(statements) + "\n" * (node.end_lineno - node.lineno)
        start = line_starts[node.lineno - 1] + node.col_offset
        end = line_starts[node.end_lineno - 1] + node.end_col_offset
        edits.append((start, end, text.encode()))
    for start, end, text in sorted(edits, reverse=True):
        data = data[:start] + text + data[end:]
    source = data.decode()
    for regex, replacement in DOTTED:
        source, count = regex.subn(replacement, source)
        if count:
            redirected.append(replacement)
    if any(name.startswith("jaxem.") for name in redirected):
        source = _with_import_jaxem(source)
    return source, redirected


def _with_import_jaxem(source: str) -> str:
    """``import jaxem`` on the line of the first top-level import (line numbers kept)."""
    tree = ast.parse(source)
    first = next(
        node
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and getattr(node, "module", "") != "__future__"
    )
    lines = source.splitlines(keepends=True)
    lines[first.lineno - 1] = "import jaxem; " + lines[first.lineno - 1]
    return "".join(lines)


def _dotted_name(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted_name(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def patching_tests(source: str) -> set[str]:
    """Test functions that patch something of scikit-learn or hmmlearn.

    Such a test checks the peer's internals (jaxem's class never calls them), so it
    must be on the exclusion list; the harness refuses to run it otherwise.
    """
    found = set()
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test")):
            continue
        for call in ast.walk(node):
            if not isinstance(call, ast.Call) or not call.args:
                continue
            if _dotted_name(call.func).rpartition(".")[2] not in PATCHERS:
                continue
            target = ast.unparse(call.args[0])
            if "sklearn" in target or "hmmlearn" in target:
                found.add(node.name)
    return found


@dataclass
class PeerTree:
    """The prepared copy: where it is, and what the rewrite found in each file."""

    root: Path
    exclusions_file: Path
    redirected: dict  # file name -> names now bound to jaxem
    patching: dict  # file name -> test functions that patch the peers' internals

    def path(self, name: str) -> Path:
        return self.root / PEER_FILES[name].directory / name


def prepare(root: Path, exclusions: dict) -> PeerTree:
    """Copy and rewrite every peer file under ``root``; write the exclusions for the conftest."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text(PYTEST_INI)
    shutil.copyfile(HERE / "peer_conftest.py", root / "conftest.py")
    shutil.copyfile(HERE / "hmm_shim.py", root / "jaxem_hmm_shim.py")
    for support in SUPPORT_FILES:
        (root / support.directory).mkdir(exist_ok=True)
        shutil.copyfile(support.source, root / support.directory / Path(support.path).name)
    redirected, patching = {}, {}
    for name, peer in PEER_FILES.items():
        source, names = rewrite_source(peer.source.read_text(), peer.module_package)
        if not names:
            raise RuntimeError(
                f"{peer.source}: no import of GaussianMixture, KMeans, FactorAnalysis or "
                "hmmlearn.hmm was found to point at jaxem; the upstream file changed, update "
                "tests/dropin/harness.py"
            )
        (root / peer.directory).mkdir(exist_ok=True)
        (root / peer.directory / name).write_text(source)
        redirected[name] = names
        patching[name] = patching_tests(source)
    exclusions_file = root / "exclusions.json"
    exclusions_file.write_text(json.dumps(exclusions, indent=1))
    return PeerTree(root, exclusions_file, redirected, patching)


#: Interpreter crashes (segfaults in XLA, aborts) survived in one run before giving up.
MAX_CRASHES = 10


def run(tree: PeerTree, names: list[str], x64: bool, timeout: float) -> dict:
    """Run the named copied files in a pytest subprocess; returns the report.

    ``x64`` sets ``JAX_ENABLE_X64=1``; otherwise the variable is removed, so JAX's
    flag is off. The subprocess imports this checkout's jaxem (``PYTHONPATH``), runs
    scikit-learn's float32 variants of ``global_dtype`` tests (jaxem computes float32
    input in float32, so they test something) and seeds hmmlearn's conftest with 42
    unless ``SKLEARN_RUN_FLOAT32_TESTS`` / ``HMMLEARN_SEED`` are set.

    If the interpreter dies (a segfault), the test it was running is recorded as
    ``crashed`` with the fatal error's lines, and pytest starts again on the tests not
    yet run. The report: ``tests`` (id -> outcome, message, duration), ``excluded`` (id
    -> pattern), ``collection_errors``, ``finished`` (False after a timeout), timings.
    """
    mode = "x64-on" if x64 else "x64-off"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_XDIST")}
    env.pop("JAX_ENABLE_X64", None)
    if x64:
        env["JAX_ENABLE_X64"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("SKLEARN_RUN_FLOAT32_TESTS", "1")
    env.setdefault("HMMLEARN_SEED", "42")
    env.setdefault("SCIPY_ARRAY_API", "1")  # scikit-learn's array API tests need it
    # One persistent compilation cache for both modes: the peers' files are dominated
    # by compiling, and jaxem computes float64 input in float64 whatever the flag, so the
    # second mode finds most programs compiled (measured: 494 s cold, 156 s warm).
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(tree.root / "compilation-cache"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    env["JAXEM_DROPIN_EXCLUDE"] = str(tree.exclusions_file)
    log_file = env["JAXEM_DROPIN_LOG"] = str(tree.root / f"log-{mode}.jsonl")
    done_file = env["JAXEM_DROPIN_DONE"] = str(tree.root / f"done-{mode}.json")
    command = [
        sys.executable,
        "-m",
        "pytest",
        *(str(tree.path(name)) for name in names),
        "-p",
        "no:cacheprovider",
        "-q",
        "--rootdir",
        str(tree.root),
        "-c",
        str(tree.root / "pytest.ini"),
    ]
    output_file = tree.root / f"output-{mode}.txt"  # `tail -f` it to follow a run
    output_file.write_text("")
    report = {"tests": {}, "excluded": {}, "collection_errors": {}, "crashes": 0}
    report.update(mode=mode, command=command, finished=False)
    start = time.perf_counter()
    while True:
        Path(log_file).write_text("")
        Path(done_file).write_text(json.dumps(sorted(report["tests"])))
        offset = output_file.stat().st_size
        left = timeout - (time.perf_counter() - start)
        with output_file.open("a") as output:
            try:
                subprocess.run(
                    command,
                    cwd=tree.root,
                    env=env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    timeout=max(left, 1),
                    check=False,
                )
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
        started, finished = _read_log(Path(log_file), report)
        crashed = [key for key in started if key not in report["tests"]]
        if finished or timed_out or not crashed:
            break
        tail = output_file.read_bytes()[offset:].decode(errors="replace")
        for key in crashed:
            report["tests"][key] = {
                "outcome": "crashed",
                "message": _fatal_error(tail),
                "duration": 0,
            }
        report["crashes"] += 1
        if report["crashes"] > MAX_CRASHES:
            break
    if timed_out:
        for key in started:
            report["tests"].setdefault(
                key,
                {
                    "outcome": "crashed",
                    "message": f"timed out after {timeout:.0f} s",
                    "duration": 0,
                },
            )
    report["finished"] = finished
    report["wall_seconds"] = time.perf_counter() - start
    if not report["tests"] and not report["collection_errors"]:
        raise RuntimeError(
            "pytest on the peers' files ran nothing:\n" + output_file.read_text()[-4000:]
        )
    return report


def _read_log(path: Path, report: dict) -> tuple[list[str], bool]:
    """Fold one run's JSON-lines log into the report; the ids started, and whether it ended."""
    started, finished = [], False
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        if "started" in entry:
            started.append(entry["started"])
        elif "test" in entry:
            report["tests"][entry.pop("test")] = entry
        elif "excluded" in entry:
            report["excluded"][entry["excluded"]] = entry["pattern"]
        elif "collection_error" in entry:
            report["collection_errors"][entry["collection_error"]] = entry["message"]
        elif "finished" in entry:
            finished = True
            report["exitstatus"] = entry["finished"]
    return started, finished


def _fatal_error(output: str) -> str:
    """The fatal error line and the innermost jaxem / test frames of a crash's output."""
    lines = output.splitlines()
    first = next((i for i, line in enumerate(lines) if "Fatal Python error" in line), None)
    if first is None:
        return "the interpreter died: " + " / ".join(lines[-3:])[-500:]
    frames = [line.strip() for line in lines[first + 1 :] if line.strip().startswith("File")]
    jaxem_frames = [frame for frame in frames if "/jaxem/" in frame][:3]
    test_frames = [frame for frame in frames if "/test_" in frame][:1]
    fatal = lines[first][lines[first].index("Fatal Python error") :]
    return "\n".join([fatal, *jaxem_frames, *test_frames])


#: Outcomes of the report, by how the drop-in test counts them.
PASSED = {"passed", "xpassed"}
SKIPPED = {"skipped", "xfailed"}
FAILED = {"failed", "error", "crashed"}


def file_summary(report: dict, name: str) -> dict:
    """Counts, failures and time of one file in a report."""
    prefix = f"{name}::"
    tests = {key: r for key, r in report["tests"].items() if key.startswith(prefix)}
    return {
        "passed": sum(r["outcome"] in PASSED for r in tests.values()),
        "failed": sum(r["outcome"] in FAILED for r in tests.values()),
        "skipped": sum(r["outcome"] in SKIPPED for r in tests.values()),
        "excluded": sum(key.startswith(prefix) for key in report["excluded"]),
        "seconds": sum(r["duration"] for r in tests.values()),
        "failures": {key: r["message"] for key, r in tests.items() if r["outcome"] in FAILED},
        "collection_errors": {
            key: message
            for key, message in report["collection_errors"].items()
            if Path(key.partition("::")[0]).name == name
        },
        "tests": tests,
    }


def describe_failures(failures: dict) -> str:
    """Failing test ids grouped by their error (first line and place), most frequent first."""
    groups: dict = {}
    for key, message in failures.items():
        lines = message.splitlines() or ["(no message)"]
        where = next((line for line in reversed(lines) if line.startswith("  at ")), "")
        groups.setdefault((lines[0][:200], where), []).append((key, lines[1:]))
    out = []
    for (first, _), members in sorted(groups.items(), key=lambda item: -len(item[1])):
        out.append(f"-- {len(members)} x {first}")
        out += [f"     {line}" for line in members[0][1]]
        out += [f"   {key}" for key, _ in members]
    return "\n".join(out)

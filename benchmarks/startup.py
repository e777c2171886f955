"""Time to first answer: jaxem vs scikit-learn / hmmlearn, each run in a fresh process.

Compile time is the point, so every measurement is one fresh Python process
(``sys.executable -c <child program>``, repository root as working directory):
nothing is warmed up, nothing is compiled beforehand. Cases:

``grid``  ``GridSearchCV(GaussianMixture(random_state=0), {"n_components": 1..6,
          "covariance_type": full/tied/diag/spherical}, cv=3).fit(iris)``: jaxem's
          ``GaussianMixture`` vs scikit-learn's (72 fits + 72 scorings, serial).
``bic``   ``[GaussianMixture(n_components=k, random_state=0).fit(X).bic(X) for k in 1..10]``
          on Old Faithful (``jaxem/data/faithful.csv``, 272 x 2): jaxem vs scikit-learn.
``hmm``   ``GaussianHMM(n_components=3, random_state=0).fit(X)``, X one sequence of 1,000
          observations (D=2) drawn with a fixed seed from a known 3-state Gaussian HMM:
          jaxem vs hmmlearn.
``demo``  ``python -m jaxem demo`` run twice, each whole command timed from outside.

jaxem runs in these cache settings:

* ``off``: persistent compilation cache disabled (``jax_enable_compilation_cache=False``;
  for the demo ``--no-cache``).
* ``cold``: first process on a fresh, empty temporary cache directory (it fills it).
* ``warm``: a second fresh process on that directory (the number the targets use).

The cache is turned on in the child with ``jaxem.enable_compilation_cache(path,
store_programs=True)`` when jaxem has it (without ``store_programs`` before it
existed), else with ``jax.config`` (``jax_compilation_cache_dir`` = path,
``jax_persistent_cache_min_compile_time_secs`` = 0,
``jax_persistent_cache_min_entry_size_bytes`` = -1); the table's notes say which. The
demo gets its cache folder through the ``JAXEM_CACHE_DIR`` environment variable; whether
the CLI supports ``--no-cache`` and ``JAXEM_CACHE_DIR`` is detected and reported.

What each child reports (one JSON line on stdout):

* ``wall_s``: ``time.perf_counter`` around the measured block only: the fit(s) (for
  ``bic`` the fits and the ``bic`` calls), after imports and data loading. For the
  demo, the whole command measured by the parent (interpreter start to exit).
* ``import_s``: the imports the case needs (numpy, jax + jaxem or sklearn / hmmlearn).
* compilations inside the measured block, from :mod:`jax.monitoring`:
  ``/jax/core/compile/backend_compile_duration`` events (count, seconds), split into
  real XLA compilations and persistent-cache loads (an event preceded by
  ``/jax/compilation_cache/cache_hits`` in the same thread: in jax 0.10 the backend
  compile event wraps ``compile_or_get_cached``, so a cache hit still emits it), plus
  tracing (``jaxpr_trace_duration``) and lowering (``jaxpr_to_mlir_module_duration``)
  seconds, which no persistent cache saves.
* a result check, the same for both sides: grid ``best_params_`` / ``best_score_``; the
  BIC list; the HMM's ``score(X)`` and iterations run; the demo's best mean
  log-likelihood per sample.

The parent also measures each child's whole process time and the CPU time *other*
processes used meanwhile (``/proc/stat`` minus the children's own CPU time, as a share
of the machine; a cell whose worst run exceeds 5 % is flagged ``*``), and prints
``os.getloadavg()`` before and after. Cells are medians over ``--repeat`` fresh
processes. Ratios are jaxem's median ``wall_s`` over the peer's.

Targets: cache off, jaxem at most 5x scikit-learn on ``grid`` and ``bic``; cache warm,
no slower than scikit-learn on ``grid`` and ``bic``, at most 2x hmmlearn on ``hmm``, and
the second ``jaxem demo`` under 1.5 s.

Reproduce (repository root, a Python with jax, jaxem, scikit-learn and hmmlearn)::

    python benchmarks/startup.py                       # all cases, 3 processes per cell
    python benchmarks/startup.py --repeat 1 --cases bic --json startup.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as ``python benchmarks/startup.py``
    sys.path.insert(0, str(REPO))

CASES = ("grid", "bic", "hmm", "demo")
PEER = {"grid": "sklearn", "bic": "sklearn", "hmm": "hmmlearn"}
#: (case, jaxem cache setting) -> (largest allowed jaxem/peer ratio, label)
RATIO_TARGETS = {
    ("grid", "off"): (5.0, "<= 5x sklearn"),
    ("bic", "off"): (5.0, "<= 5x sklearn"),
    ("grid", "warm"): (1.0, "<= 1x sklearn"),
    ("bic", "warm"): (1.0, "<= 1x sklearn"),
    ("hmm", "warm"): (2.0, "<= 2x hmmlearn"),
}
DEMO_WARM_TARGET_S = 1.5
#: A cell is flagged when other processes used more than this share of the CPUs.
LOADED_SHARE = 0.05
CHILD_TIMEOUT_S = 900

HMM_DATA_SRC = r"""
def hmm_truth():
    # The generating 3-state Gaussian HMM (D=2, diagonal covariances).
    return dict(
        startprob=np.array([0.6, 0.3, 0.1]),
        transmat=np.array([[0.90, 0.05, 0.05], [0.10, 0.80, 0.10], [0.05, 0.15, 0.80]]),
        means=np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]),
        scales=np.array([[1.0, 0.5], [0.7, 1.2], [0.8, 0.8]]),
    )

def hmm_data():
    # One sequence of 1,000 observations drawn from hmm_truth() with a fixed seed.
    truth = hmm_truth()
    rng = np.random.default_rng(0)
    u = rng.random(1000)
    states = np.empty(1000, dtype=np.int64)
    states[0] = min(np.searchsorted(np.cumsum(truth["startprob"]), u[0]), 2)
    cumulative = np.cumsum(truth["transmat"], axis=1)
    for t in range(1, 1000):
        states[t] = min(np.searchsorted(cumulative[states[t - 1]], u[t]), 2)
    noise = rng.standard_normal((1000, 2))
    return truth["means"][states] + truth["scales"][states] * noise
"""

# The child program. It gets its JSON spec in argv[1], prints one JSON line last.
CHILD = r"""
import json, os, sys, threading, time
spec = json.loads(sys.argv[1])
case, side, cache = spec["case"], spec["side"], spec["cache"]

BACKEND = "/jax/core/compile/backend_compile_duration"
TRACE = "/jax/core/compile/jaxpr_trace_duration"
LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
HIT = "/jax/compilation_cache/cache_hits"
MISS = "/jax/compilation_cache/cache_misses"

def new_counts():
    return dict(compiles=0, compile_s=0.0, cache_hits=0, cache_load_s=0.0,
                cache_misses=0, trace_s=0.0, lower_s=0.0)

phases = {"setup": new_counts(), "block": new_counts(), "after": new_counts()}
phase = ["setup"]
local = threading.local()
hit_listener = [False]

def on_event(event, **kwargs):
    counts = phases[phase[0]]
    if event == HIT:
        counts["cache_hits"] += 1
        local.hit = True
    elif event == MISS:
        counts["cache_misses"] += 1

def on_duration(event, duration, **kwargs):
    counts = phases[phase[0]]
    if event == BACKEND:
        if getattr(local, "hit", False):
            local.hit = False
            counts["cache_load_s"] += duration
        else:
            counts["compiles"] += 1
            counts["compile_s"] += duration
    elif event == TRACE:
        counts["trace_s"] += duration
    elif event == LOWER:
        counts["lower_s"] += duration

def listen(jax):
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    if hasattr(jax.monitoring, "register_event_listener"):
        jax.monitoring.register_event_listener(on_event)
        hit_listener[0] = True

def configure_cache(jax, jaxem):
    if cache == "off":
        jax.config.update("jax_enable_compilation_cache", False)
        return "disabled"
    path = spec["cache_dir"]
    if hasattr(jaxem, "enable_compilation_cache"):
        try:  # with jaxem's program store, as the jaxem command runs
            jaxem.enable_compilation_cache(path, store_programs=True)
            return "jaxem.enable_compilation_cache(store_programs=True)"
        except TypeError:  # before the program store
            jaxem.enable_compilation_cache(path)
            return "jaxem.enable_compilation_cache"
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return "jax.config fallback"

__HMM_DATA__
out = {"case": case, "side": side, "cache": cache}
import warnings
warnings.filterwarnings("ignore")
t0 = time.perf_counter()
import numpy as np
if side == "jaxem":
    import jax
    listen(jax)
    import jaxem
    if case == "grid":
        from sklearn.model_selection import GridSearchCV
        from sklearn.datasets import load_iris
    Model = jaxem.GaussianHMM if case == "hmm" else jaxem.GaussianMixture
else:
    if case == "hmm":
        from hmmlearn.hmm import GaussianHMM as Model
    else:
        from sklearn.mixture import GaussianMixture as Model
    if case == "grid":
        from sklearn.model_selection import GridSearchCV
        from sklearn.datasets import load_iris
out["import_s"] = time.perf_counter() - t0
if side == "jaxem":
    out["cache_method"] = configure_cache(jax, jaxem)
    out["hit_listener"] = hit_listener[0]

if case == "grid":
    X = load_iris().data
    grid = {"n_components": [1, 2, 3, 4, 5, 6],
            "covariance_type": ["full", "tied", "diag", "spherical"]}
    search = GridSearchCV(Model(random_state=0), grid, cv=3)
elif case == "bic":
    X = np.loadtxt(os.path.join("jaxem", "data", "faithful.csv"), delimiter=",", skiprows=1)
else:
    X = hmm_data()

phase[0] = "block"
start = time.perf_counter()
if case == "grid":
    search.fit(X)
elif case == "bic":
    bics = [float(Model(n_components=k, random_state=0).fit(X).bic(X)) for k in range(1, 11)]
else:
    model = Model(n_components=3, random_state=0).fit(X)
out["wall_s"] = time.perf_counter() - start
phase[0] = "after"

if case == "grid":
    out["result"] = {"best_params": search.best_params_, "best_score": float(search.best_score_)}
elif case == "bic":
    out["result"] = {"bic": bics, "best_k": int(np.argmin(bics)) + 1}
else:
    out["result"] = {"score": float(model.score(X)),
                     "n_iter": int(getattr(getattr(model, "monitor_", None), "iter", -1))}
out["phases"] = phases
print(json.dumps(out))
""".replace("__HMM_DATA__", HMM_DATA_SRC)

# ``python -m jaxem demo`` in-process (runpy, exactly what -m does), with the compile
# listeners registered first; the JSON line goes to the file named in argv[1].
DEMO_CHILD = r"""
import json, runpy, sys, threading, time
t0 = time.perf_counter()
import jax
counts = dict(compiles=0, compile_s=0.0, cache_hits=0, cache_load_s=0.0, trace_s=0.0, lower_s=0.0)
local = threading.local()
def on_event(event, **kwargs):
    if event == "/jax/compilation_cache/cache_hits":
        counts["cache_hits"] += 1
        local.hit = True
def on_duration(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        if getattr(local, "hit", False):
            local.hit = False
            counts["cache_load_s"] += duration
        else:
            counts["compiles"] += 1
            counts["compile_s"] += duration
    elif event == "/jax/core/compile/jaxpr_trace_duration":
        counts["trace_s"] += duration
    elif event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
        counts["lower_s"] += duration
jax.monitoring.register_event_duration_secs_listener(on_duration)
if hasattr(jax.monitoring, "register_event_listener"):
    jax.monitoring.register_event_listener(on_event)
out_path = sys.argv[1]
sys.argv = ["jaxem", *sys.argv[2:]]
code = 0
try:
    runpy.run_module("jaxem", run_name="__main__", alter_sys=True)
except SystemExit as exit_:
    code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
with open(out_path, "w") as f:
    json.dump({"rc": code, "in_process_s": time.perf_counter() - t0,
               "phases": {"block": counts}}, f)
sys.exit(code)
"""


# -- machine and load ------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict[str, str]:
    from importlib import metadata

    found = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "numpy", "scikit-learn", "hmmlearn", "jaxem"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def repo_state() -> str:
    """The commit measured, and whether jaxem/ had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "jaxem"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    changed = [line for line in dirty if line.strip()]
    return f"commit {head}" + (
        f" + uncommitted changes in {len(changed)} jaxem file(s)" if changed else ""
    )


def _busy_total() -> tuple[float, float]:
    """(non-idle CPU seconds, total CPU seconds) of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - fields[3] - fields[4]) / tick, sum(fields) / tick


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment without any compilation-cache settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("JAX_COMPILATION_CACHE_DIR", "JAXEM_CACHE_DIR", "JAXEM_NO_CACHE")
    }
    env.update(extra or {})
    return env


def run_process(cmd: list[str], env: dict[str, str]) -> dict:
    """Run ``cmd`` from the repository root; wall time, output and others' CPU share."""
    busy0, total0 = _busy_total()
    own0 = _children_cpu()
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
            check=False,
        )
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, stdout, stderr = -9, exc.stdout or "", f"timed out after {CHILD_TIMEOUT_S} s"
        stdout = stdout if isinstance(stdout, str) else stdout.decode(errors="replace")
    process_s = time.perf_counter() - start
    busy1, total1 = _busy_total()
    own = _children_cpu() - own0
    total = total1 - total0
    others = max(busy1 - busy0 - own, 0.0) / total if total > 0 else math.nan
    return {"rc": rc, "stdout": stdout, "stderr": stderr, "process_s": process_s, "others": others}


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


# -- the cases -------------------------------------------------------------------------------


def run_case_child(case: str, side: str, cache: str, cache_dir: str | None) -> dict:
    spec = {"case": case, "side": side, "cache": cache, "cache_dir": cache_dir}
    proc = run_process([sys.executable, "-c", CHILD, json.dumps(spec)], child_env())
    record = _last_json(proc["stdout"]) if proc["rc"] == 0 else None
    if record is None:
        record = dict(spec, error=f"exit {proc['rc']}: {_tail(proc['stderr'] or proc['stdout'])}")
    record.update(process_s=proc["process_s"], others=proc["others"])
    return record


def demo_support() -> dict:
    """The CLI's cache options: ``--no-cache`` in its help, JAXEM_CACHE_DIR in jaxem's source."""
    proc = run_process([sys.executable, "-m", "jaxem", "demo", "--help"], child_env())
    help_text = proc["stdout"] + proc["stderr"]
    cli_source = "".join(p.read_text(errors="replace") for p in (REPO / "jaxem").rglob("*.py"))
    return {
        "no_cache_flag": "--no-cache" in help_text,
        "cache_dir_env": "JAXEM_CACHE_DIR" in cli_source,  # a hint; the cold run checks
        "help_rc": proc["rc"],
    }


def run_demo_child(setting: str, run_index: int, cache_dir: str, support: dict, tmp: str) -> dict:
    args = ["demo"]
    if setting == "off" and support["no_cache_flag"]:
        args.append("--no-cache")
    out_path = os.path.join(tmp, f"demo-{setting}-{run_index}.json")
    env = child_env({"JAXEM_CACHE_DIR": cache_dir})
    proc = run_process([sys.executable, "-c", DEMO_CHILD, out_path, *args], env)
    cache = {"off": "off", "cache": "cold" if run_index == 1 else "warm"}[setting]
    record = {"case": "demo", "side": "jaxem", "cache": cache, "run": run_index}
    if os.path.exists(out_path):
        with open(out_path) as f:
            record.update(json.load(f))
    record.update(wall_s=proc["process_s"], process_s=proc["process_s"], others=proc["others"])
    if proc["rc"] != 0:
        record["error"] = f"exit {proc['rc']}: {_tail(proc['stderr'] or proc['stdout'])}"
        return record
    loglik = None
    for line in proc["stdout"].splitlines():
        if "mean log-likelihood per sample" in line:
            try:
                loglik = float(line.split()[-1])
            except ValueError:
                pass
            break
    record["result"] = {"mean_loglik": loglik}
    cache_files = sum(len(files) for _, _, files in os.walk(cache_dir))
    record["cache_files_after"] = cache_files
    return record


def true_hmm_score() -> float:
    """log p(X) of the ``hmm`` case's data under the HMM that generated it (forward, float64)."""
    import numpy as np

    namespace = {"np": np}
    exec(HMM_DATA_SRC, namespace)
    truth, x = namespace["hmm_truth"](), namespace["hmm_data"]()
    z = (x[:, None, :] - truth["means"][None]) / truth["scales"][None]
    log_b = -0.5 * (z**2).sum(-1) - np.log(truth["scales"]).sum(-1) - np.log(2 * np.pi)
    alpha = truth["startprob"] * np.exp(log_b[0] - log_b[0].max())
    total = log_b[0].max() + np.log(alpha.sum())
    alpha /= alpha.sum()
    for t in range(1, len(x)):
        alpha = (alpha @ truth["transmat"]) * np.exp(log_b[t] - log_b[t].max())
        total += log_b[t].max() + np.log(alpha.sum())
        alpha /= alpha.sum()
    return float(total)


def _tail(text: str, n: int = 6) -> str:
    return " | ".join(text.strip().splitlines()[-n:])


# -- aggregation and table -------------------------------------------------------------------


def _median(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(values) if values else None


def summarise(records: list[dict]) -> list[dict]:
    """One cell per (case, side, cache[, run]): medians over the repeats."""
    cells: dict[tuple, list[dict]] = {}
    for record in records:
        key = (record["case"], record["side"], record["cache"], record.get("run"))
        cells.setdefault(key, []).append(record)
    out = []
    for (case, side, cache, run), group in cells.items():
        good = [r for r in group if "error" not in r]
        block = [r.get("phases", {}).get("block", {}) for r in good]
        cell = {
            "case": case,
            "side": side,
            "cache": cache,
            "run": run,
            "n": len(good),
            "failed": len(group) - len(good),
            "errors": sorted({r["error"] for r in group if "error" in r}),
            "wall_s": _median([r.get("wall_s") for r in good]),
            "import_s": _median([r.get("import_s") for r in good]),
            "process_s": _median([r.get("process_s") for r in good]),
            "compiles": _median([b.get("compiles") for b in block]),
            "compile_s": _median([b.get("compile_s") for b in block]),
            "cache_hits": _median([b.get("cache_hits") for b in block]),
            "cache_load_s": _median([b.get("cache_load_s") for b in block]),
            "trace_s": _median([b.get("trace_s", 0.0) + b.get("lower_s", 0.0) for b in block]),
            "others_max": max((r.get("others", 0.0) for r in group), default=0.0),
            "cache_method": next((r["cache_method"] for r in good if "cache_method" in r), None),
            "results": [r.get("result") for r in good],
            "cache_files_after": next(
                (r["cache_files_after"] for r in good if "cache_files_after" in r), None
            ),
        }
        out.append(cell)
    peers = {(c["case"]): c for c in out if c["side"] != "jaxem"}
    for cell in out:
        cell["ratio"] = cell["target"] = cell["met"] = None
        if cell["side"] == "jaxem" and cell["case"] in peers:
            peer = peers[cell["case"]]
            if cell["wall_s"] is not None and peer["wall_s"]:
                cell["ratio"] = cell["wall_s"] / peer["wall_s"]
            target = RATIO_TARGETS.get((cell["case"], cell["cache"]))
            if target is not None:
                cell["target"] = target[1]
                cell["met"] = None if cell["ratio"] is None else cell["ratio"] <= target[0]
        if cell["case"] == "demo" and cell["cache"] == "warm" and cell["run"] == 2:
            cell["target"] = f"< {DEMO_WARM_TARGET_S:g} s"
            if cell["wall_s"] is not None:
                cell["met"] = cell["wall_s"] < DEMO_WARM_TARGET_S
    return out


def _f(value, spec: str) -> str:
    if value is None:
        return "-"
    return format(value, spec)


def print_table(cells: list[dict]) -> None:
    header = (
        "case",
        "side",
        "cache",
        "wall s",
        "import s",
        "process s",
        "compiles",
        "compile s",
        "trace s",
        "hits",
        "load s",
        "x peer",
        "target",
        "met",
        "n",
    )
    rows = []
    for c in cells:
        cache = c["cache"] + (f" run{c['run']}" if c["run"] else "")
        met = "-" if c["met"] is None else ("met" if c["met"] else "MISSED")
        loaded = "*" if c["others_max"] > LOADED_SHARE else ""
        rows.append(
            (
                c["case"],
                c["side"],
                cache,
                _f(c["wall_s"], ".3f") + loaded,
                _f(c["import_s"], ".2f"),
                _f(c["process_s"], ".2f"),
                _f(c["compiles"], ".0f") if c["side"] == "jaxem" else "-",
                _f(c["compile_s"], ".2f") if c["side"] == "jaxem" else "-",
                _f(c["trace_s"], ".2f") if c["side"] == "jaxem" else "-",
                _f(c["cache_hits"], ".0f") if c["side"] == "jaxem" else "-",
                _f(c["cache_load_s"], ".2f") if c["side"] == "jaxem" else "-",
                _f(c["ratio"], ".2f"),
                c["target"] or "-",
                met,
                f"{c['n']}" + (f" ({c['failed']} failed)" if c["failed"] else ""),
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def print_results(cells: list[dict]) -> None:
    """The result check: what each side answered (first repeat; '!' if repeats differ)."""
    print("\nResults (first process of each cell; 'differs' if the repeats disagreed)")
    for c in cells:
        results = [r for r in c["results"] if r is not None]
        if not results:
            continue
        same = all(
            json.dumps(r, sort_keys=True) == json.dumps(results[0], sort_keys=True) for r in results
        )
        r = results[0]
        if "bic" in r:
            text = f"best k {r['best_k']}, BIC " + " ".join(f"{b:.2f}" for b in r["bic"])
        elif "best_params" in r:
            text = f"best_params_ {r['best_params']}, best_score_ {r['best_score']:.5f}"
        elif "score" in r:
            text = f"score(X) {r['score']:.4f} after {r['n_iter']} iterations"
        else:
            text = f"mean log-likelihood per sample {r.get('mean_loglik')}"
        cache = c["cache"] + (f" run{c['run']}" if c["run"] else "")
        print(
            f"  {c['case']:<5} {c['side']:<8} {cache:<10} {text}" + ("" if same else "  (differs)")
        )
    by_case: dict[str, dict[str, dict]] = {}
    for c in cells:
        results = [r for r in c["results"] if r is not None]
        if results and c["side"] != "jaxem" or (results and c["cache"] == "off"):
            by_case.setdefault(c["case"], {})[c["side"]] = results[0]
    for case, sides in by_case.items():
        if "jaxem" not in sides or len(sides) < 2:
            continue
        ours = sides["jaxem"]
        peer = next(v for k, v in sides.items() if k != "jaxem")
        if case == "bic":
            diff = max(abs(a - b) for a, b in zip(ours["bic"], peer["bic"]))
            print(
                f"  bic: max |BIC jaxem - sklearn| over k=1..10: {diff:.3f}; best k "
                f"{ours['best_k']} vs {peer['best_k']}"
            )
        elif case == "grid":
            print(
                f"  grid: same best_params_: {ours['best_params'] == peer['best_params']}; "
                f"best_score_ difference {ours['best_score'] - peer['best_score']:+.5f}"
            )
        elif case == "hmm":
            print(
                f"  hmm: score(X) difference jaxem - hmmlearn "
                f"{ours['score'] - peer['score']:+.4f}; log p(X) under the generating "
                f"HMM {true_hmm_score():.4f}"
            )


def print_header(info: dict) -> None:
    print(
        f"machine: {info['cpu']}, {info['cores']} cores; "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    )
    print(f"jaxem: {info['repo']}")
    print(
        "load average before (1/5/15 min): " + " ".join(f"{v:.2f}" for v in info["loadavg_before"])
    )
    if "cases" in info:
        print(f"cases {','.join(info['cases'])}; {info['repeat']} process(es) per cell")
    print(flush=True)


def print_progress(record: dict) -> None:
    what = f"{record['case']} {record['side']} {record['cache']}"
    if record.get("run"):
        what += f" run{record['run']}"
    if "error" in record:
        print(f"  {what}: FAILED {record['error']}", flush=True)
        return
    block = record.get("phases", {}).get("block", {})
    print(
        f"  {what}: wall {record['wall_s']:.3f} s, process {record['process_s']:.2f} s, "
        f"compiles {block.get('compiles', '-')} ({block.get('compile_s', 0.0):.2f} s), "
        f"cache hits {block.get('cache_hits', '-')}, others' CPU {record['others']:.0%}",
        flush=True,
    )


def report(records: list[dict], info: dict) -> list[dict]:
    """Print the table, the result check and the notes; return the cells."""
    cells = summarise(records)
    order = {c: i for i, c in enumerate(CASES)}
    setting = {"none": 0, "off": 1, "cold": 2, "warm": 3}
    cells.sort(
        key=lambda c: (order[c["case"]], c["side"] == "jaxem", setting[c["cache"]], c["run"] or 0)
    )
    print()
    print_table(cells)
    print_results(cells)
    methods = sorted({c["cache_method"] for c in cells if c["cache_method"]})
    print(
        "\nwall s: median of the measured block (fits only; demo: the whole command); "
        "compiles/compile s: real XLA compilations in that block; trace s: tracing + "
        "lowering; hits/load s: programs loaded from the persistent cache and the seconds "
        "that took; x peer: jaxem wall / peer wall."
    )
    print(f"cache turned on with: {', '.join(m for m in methods if m != 'disabled') or '-'}")
    support = info.get("demo_support")
    if support is not None and any(c["case"] == "demo" for c in cells):
        files = [
            c["cache_files_after"] for c in cells if c["case"] == "demo" and c["cache"] == "cold"
        ]
        print(
            f"demo: --no-cache supported: {support['no_cache_flag']}; JAXEM_CACHE_DIR in jaxem's "
            f"source: {support['cache_dir_env']}; files in JAXEM_CACHE_DIR after the "
            f"first cached run: {files[0] if files else '-'}"
        )
    loaded = [c for c in cells if c["others_max"] > LOADED_SHARE]
    print("load average after (1/5/15 min): " + " ".join(f"{v:.2f}" for v in info["loadavg_after"]))
    if loaded:
        print(
            f"* other processes used more than {LOADED_SHARE:.0%} of the CPUs during at least "
            f"one run of {len(loaded)} cell(s): those timings are not clean"
        )
    return cells


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per cell (median)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"subset of {','.join(CASES)}")
    parser.add_argument("--json", metavar="PATH", help="save every process's raw result here")
    parser.add_argument(
        "--from-json",
        metavar="PATH",
        help="print the tables of a run saved with --json; run nothing",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        info = saved["info"]
        print(f"Saved run {args.from_json}")
        print_header(info)
        for record in saved["records"]:
            print_progress(record)
        cells = report(saved["records"], info)
        return 1 if any(c["failed"] for c in cells) else 0
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown or args.repeat < 1:
        parser.error(f"unknown cases {unknown}" if unknown else "--repeat must be >= 1")

    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "versions": versions(),
        "repo": repo_state(),
        "loadavg_before": os.getloadavg(),
    }
    info["cases"], info["repeat"] = cases, args.repeat
    print("Time to first answer, each measurement a fresh Python process")
    print_header(info)

    records: list[dict] = []
    support = None
    if "demo" in cases:
        support = demo_support()
        info["demo_support"] = support
        if not support["no_cache_flag"]:
            print(
                "note: 'jaxem demo --help' lists no --no-cache: the demo's 'off' runs are its "
                "default behaviour"
            )
        if not support["cache_dir_env"]:
            print(
                "note: jaxem's source does not mention JAXEM_CACHE_DIR: its 'cold'/'warm' "
                "runs may not use the temporary cache folder"
            )

    def progress(record: dict) -> None:
        records.append(record)
        print_progress(record)

    with tempfile.TemporaryDirectory(prefix="jaxem-startup-") as tmp:
        for _rep in range(args.repeat):
            for case in cases:
                if case == "demo":
                    off_dir = tempfile.mkdtemp(dir=tmp)
                    for run_index in (1, 2):
                        progress(run_demo_child("off", run_index, off_dir, support, tmp))
                    cache_dir = tempfile.mkdtemp(dir=tmp)
                    for run_index in (1, 2):
                        progress(run_demo_child("cache", run_index, cache_dir, support, tmp))
                    continue
                progress(run_case_child(case, PEER[case], "none", None))
                progress(run_case_child(case, "jaxem", "off", None))
                cache_dir = tempfile.mkdtemp(dir=tmp)
                progress(run_case_child(case, "jaxem", "cold", cache_dir))
                progress(run_case_child(case, "jaxem", "warm", cache_dir))
                shutil.rmtree(cache_dir, ignore_errors=True)

    info["loadavg_after"] = os.getloadavg()
    cells = report(records, info)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "cells": cells, "records": records}, f, indent=2)
        print(f"wrote {args.json}")
    return 1 if any(c["failed"] for c in cells) else 0


if __name__ == "__main__":
    from benchmarks._harness import ensure_clean_blas_env

    ensure_clean_blas_env()
    sys.exit(main())

"""Peak memory of initialisation vs the EM loop, each part in a fresh process.

Problem (defaults): N = 500,000 samples, D = 16 features, float32, K = 8 components,
R = 64 restarts, 10 EM iterations (``tol=0``, so all 10 run), data drawn with
``jax.random.normal(jax.random.key(0), (N, D), float32)``. Models:

* ``k-means++``: ``jaxem.mixture(jaxem.gaussian("diag"), 8, init="k-means++")``
* ``kmeans``:    ``jaxem.mixture(jaxem.gaussian("diag"), 8, init="kmeans")``
  (k-means++ seeding, then Lloyd iterations, then one M-step)
* ``kmeans-model``: ``jaxem.kmeans(8)`` (Lloyd's algorithm; its default k-means++ init)

Parts, each measured in its own fresh Python process:

* ``init``: every restart's initial parameters, ``jaxem.engine.initialise(model, x,
  key=..., n_restarts=R)`` where the engine has it, else ``jaxem.fit(model, x,
  key=..., n_restarts=R, max_iter=0)`` (init and no EM iteration; the output says
  which). The parameters are saved (an ``.npz`` of the leaves) for the next part.
* ``em``: the EM loop only, from those parameters: ``jaxem.fit(model, x, key=...,
  n_restarts=R, init_params=params, max_iter=10, tol=0)``.
* ``fit``: the whole fit, ``jaxem.fit(model, x, key=..., n_restarts=R, max_iter=10, tol=0)``.

How memory is measured: the child creates the data on the device (and, for ``em``,
loads the initial parameters onto it), then resets the kernel's peak-RSS counter
(``/proc/self/clear_refs`` <- 5), reads ``VmRSS`` from ``/proc/self/status`` as the
baseline, runs the part (blocking on its output) and reads ``VmHWM``: ``peak MiB`` is
``VmHWM - baseline``, the exact peak of the whole process above the baseline. Where
clear_refs is not writable the counter is not reset, and the number is ``VmHWM`` minus
the RSS after data creation: an upper bound, marked as such.

Each part runs twice, in two fresh processes sharing a new temporary persistent
compilation cache: ``cold`` (compiles, as a user's first call; it fills the cache)
and ``cached`` (the compiled program is loaded from the cache, so the number is the
part's run-time buffers, without XLA's compile-time memory). The ``init / em`` ratio
is given for both, with the target ``< 2x``. Wall seconds of the part and its XLA
compile seconds (from ``jax.monitoring``) are printed too.

Reproduce (repository root)::

    python benchmarks/init_memory.py                       # the full problem
    python benchmarks/init_memory.py --n-samples 20000     # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as ``python benchmarks/init_memory.py``
    sys.path.insert(0, str(REPO))

from benchmarks._harness import _reset_hwm, _status_kib  # noqa: E402

METHODS = ("k-means++", "kmeans", "kmeans-model")
PARTS = ("init", "em", "fit")
TARGET_RATIO = 2.0
CHILD_TIMEOUT_S = 1800


# -- child -----------------------------------------------------------------------------------


def build_model(jaxem, method: str, n_components: int):
    if method == "kmeans-model":
        return jaxem.kmeans(n_components)
    return jaxem.mixture(jaxem.gaussian("diag"), n_components, init=method)


def child(args: argparse.Namespace) -> None:
    """Run one part in this (fresh) process and print one JSON line."""
    import gc

    import jax

    compile_s, compiles, hits = [0.0], [0], [0]
    hit_pending = [False]

    def on_event(event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            hits[0] += 1
            hit_pending[0] = True

    def on_duration(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            if hit_pending[0]:
                hit_pending[0] = False
            else:
                compiles[0] += 1
                compile_s[0] += duration

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    if hasattr(jax.monitoring, "register_event_listener"):
        jax.monitoring.register_event_listener(on_event)
    # The benchmark's own cache settings (every program cached, however quick).
    jax.config.update("jax_compilation_cache_dir", args.cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)

    import jax.numpy as jnp
    import numpy as np

    import jaxem

    shape = (args.n_samples, args.n_features)
    x = jax.random.normal(jax.random.key(args.seed), shape, jnp.float32)
    x.block_until_ready()
    model = build_model(jaxem, args.method, args.n_components)
    key = jax.random.key(args.seed + 1)
    params = None
    if args.part == "em":
        # The leaves in an .npz (never a pickle); the structure from the model itself.
        with np.load(args.params_file, allow_pickle=False) as saved:
            leaves = [saved[f"arr_{index}"] for index in range(len(saved.files))]
        chunks = jaxem._iterate.make_chunks(x, jnp.ones(shape[0], jnp.float32), shape[0])
        skeleton = jax.eval_shape(model.init, key, chunks, model.hyper(jnp.float32))
        params = jax.device_put(jax.tree.unflatten(jax.tree.structure(skeleton), leaves))
        jax.block_until_ready(params)
    initialise = getattr(getattr(jaxem, "engine", None), "initialise", None)
    init_api = "jaxem.engine.initialise" if initialise is not None else "jaxem.fit(max_iter=0)"

    def run():
        if args.part == "init":
            if initialise is not None:
                out = initialise(model, x, key=key, n_restarts=args.restarts)
            else:
                out = jaxem.fit(model, x, key=key, n_restarts=args.restarts, max_iter=0)
                out = out.restarts.params
            return jax.block_until_ready(out)
        result = jaxem.fit(
            model,
            x,
            key=key,
            n_restarts=args.restarts,
            max_iter=args.max_iter,
            tol=0.0,
            init_params=params,
        )
        return jax.block_until_ready(result)

    gc.collect()
    reset = _reset_hwm()
    baseline = _status_kib("VmRSS")
    start = time.perf_counter()
    out = run()
    wall = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    record = {
        "method": args.method,
        "part": args.part,
        "cache": args.cache_label,
        "peak_mib": (peak - baseline) / 1024,
        "baseline_mib": baseline / 1024,
        "hwm_mib": peak / 1024,
        "memory_method": "VmHWM (reset)" if reset else "VmHWM (not reset: upper bound)",
        "wall_s": wall,
        "compiles": compiles[0],
        "compile_s": compile_s[0],
        "cache_hits": hits[0],
        "backend": jax.default_backend(),
    }
    if args.part == "init":
        record["init_api"] = init_api
        if args.save_params:
            with open(args.save_params, "wb") as f:
                np.savez(f, *(np.asarray(leaf) for leaf in jax.tree.leaves(out)))
    else:
        record["n_iter"] = int(np.max(np.asarray(out.restarts.n_iter)))
        record["log_likelihood"] = float(out.log_likelihood)
    print(json.dumps(record), flush=True)


# -- parent ----------------------------------------------------------------------------------


def run_child(
    args: argparse.Namespace,
    method: str,
    part: str,
    label: str,
    cache_dir: str,
    params_file: str,
    save: bool,
) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        part,
        "--method",
        method,
        "--cache-label",
        label,
        "--cache-dir",
        cache_dir,
        "--params-file",
        params_file,
        "--n-samples",
        str(args.n_samples),
        "--n-features",
        str(args.n_features),
        "--n-components",
        str(args.n_components),
        "--restarts",
        str(args.restarts),
        "--max-iter",
        str(args.max_iter),
        "--seed",
        str(args.seed),
    ]
    if save:
        cmd += ["--save-params", params_file]
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    load0 = os.getloadavg()[0]
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
    except subprocess.TimeoutExpired:
        rc, stdout, stderr = -9, "", f"timed out after {CHILD_TIMEOUT_S} s"
    record = None
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            record = json.loads(line)
            break
    if rc != 0 or record is None:
        tail = " | ".join((stderr or stdout).strip().splitlines()[-6:])
        record = {"method": method, "part": part, "cache": label, "error": f"exit {rc}: {tail}"}
    record["loadavg_1min"] = [load0, os.getloadavg()[0]]
    return record


def _f(value, spec):
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-samples", type=int, default=500_000)
    parser.add_argument("--n-features", type=int, default=16)
    parser.add_argument("--n-components", type=int, default=8)
    parser.add_argument("--restarts", type=int, default=64)
    parser.add_argument("--max-iter", type=int, default=10, help="EM iterations of em and fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"subset of {METHODS}")
    parser.add_argument("--json", metavar="PATH", help="save the raw results here")
    parser.add_argument("--child", choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--cache-label", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    parser.add_argument("--params-file", help=argparse.SUPPRESS)
    parser.add_argument("--save-params", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.part = args.child
        child(args)
        return 0

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}")
    from benchmarks.startup import cpu_model, repo_state, versions

    data_mib = args.n_samples * args.n_features * 4 / 2**20
    print("Peak memory: initialisation vs the EM loop (each part a fresh process)")
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores; python {platform.python_version()}, "
        f"jax {versions()['jax']}"
    )
    print(
        f"N={args.n_samples} D={args.n_features} K={args.n_components} R={args.restarts} "
        f"float32 (data {data_mib:.1f} MiB), EM loop {args.max_iter} iterations, tol=0"
    )
    print(f"jaxem: {repo_state()}")
    print(
        "load average before (1/5/15 min): " + " ".join(f"{v:.2f}" for v in os.getloadavg()),
        flush=True,
    )

    records = []
    with tempfile.TemporaryDirectory(prefix="jaxem-init-memory-") as tmp:
        for method in methods:
            params_file = os.path.join(tmp, f"{method}-params.pkl")
            for part in PARTS:
                cache_dir = tempfile.mkdtemp(dir=tmp)
                for label in ("cold", "cached"):
                    if part == "em" and not os.path.exists(params_file):
                        records.append(
                            {
                                "method": method,
                                "part": part,
                                "cache": label,
                                "error": "no initial parameters (init failed)",
                            }
                        )
                        print(f"  {method} {part} {label}: skipped (init failed)", flush=True)
                        continue
                    record = run_child(
                        args,
                        method,
                        part,
                        label,
                        cache_dir,
                        params_file,
                        save=(part == "init" and label == "cold"),
                    )
                    records.append(record)
                    if "error" in record:
                        print(f"  {method} {part} {label}: FAILED {record['error']}", flush=True)
                    else:
                        print(
                            f"  {method} {part} {label}: peak +{record['peak_mib']:.1f} MiB, "
                            f"{record['wall_s']:.2f} s (compile {record['compile_s']:.2f} s, "
                            f"{record['compiles']} compiles, {record['cache_hits']} cache "
                            f"hits), load {record['loadavg_1min'][0]:.2f}",
                            flush=True,
                        )

    def get(method, part, label):
        for r in records:
            if (r["method"], r["part"], r["cache"]) == (method, part, label) and "error" not in r:
                return r
        return None

    print()
    header = (
        "model",
        "cache",
        "init MiB",
        "EM MiB",
        "fit MiB",
        "init/EM",
        "target",
        "met",
        "init s",
        "EM s",
        "fit s",
    )
    rows = []
    for method in methods:
        for label in ("cached", "cold"):
            init, em, fit = (get(method, p, label) for p in PARTS)
            ratio = (
                init["peak_mib"] / em["peak_mib"] if init and em and em["peak_mib"] > 0 else None
            )
            met = "-" if ratio is None else ("met" if ratio < TARGET_RATIO else "MISSED")
            rows.append(
                (
                    method,
                    label,
                    _f(init and init["peak_mib"], ".1f"),
                    _f(em and em["peak_mib"], ".1f"),
                    _f(fit and fit["peak_mib"], ".1f"),
                    _f(ratio, ".2f"),
                    f"< {TARGET_RATIO:g}x",
                    met,
                    _f(init and init["wall_s"], ".2f"),
                    _f(em and em["wall_s"], ".2f"),
                    _f(fit and fit["wall_s"], ".2f"),
                )
            )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))

    good = [r for r in records if "error" not in r]
    print(
        "\nMiB: peak RSS above the level after the data were on the device; cached: the "
        "compiled program loaded from the persistent cache (run-time buffers only); cold: "
        "first call, XLA compilation included. Seconds: the part's wall time (cold "
        "includes compiling)."
    )
    print("memory method: " + ", ".join(sorted({r["memory_method"] for r in good})))
    print("init via: " + ", ".join(sorted({r["init_api"] for r in good if "init_api" in r})))
    print("backend: " + ", ".join(sorted({r["backend"] for r in good})))
    loads = [v for r in records for v in r.get("loadavg_1min", [])]
    print(
        "load average after (1/5/15 min): "
        + " ".join(f"{v:.2f}" for v in os.getloadavg())
        + (f"; 1-min load seen around the children: max {max(loads):.2f}" if loads else "")
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "records": records}, f, indent=2)
        print(f"wrote {args.json}")
    return 1 if len(good) < len(records) else 0


if __name__ == "__main__":
    from benchmarks._harness import ensure_clean_blas_env

    ensure_clean_blas_env()
    sys.exit(main())

"""Command-line plumbing shared by the ``peers_*`` modules.

By default every peer runs in its own fresh Python process (the same module,
re-invoked with ``--peers NAME --child``), so that no peer inherits another
library's thread pools, spinning OpenMP workers, JIT caches or allocator state;
the parent collects the children's JSON results and prints one table.
``--in-process`` runs them all in the current process instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

from benchmarks import _harness
from benchmarks._harness import (
    PeerResult,
    blas_report,
    matmul_ceiling,
    peak_rss_delta,
    print_table,
)


def add_common_args(
    parser: argparse.ArgumentParser, peers: dict[str, Any], presets: dict[str, tuple]
) -> None:
    parser.add_argument("--preset", choices=list(presets), default=next(iter(presets)))
    parser.add_argument("--n", type=int, help="samples (for HMMs: number of sequences)")
    parser.add_argument("--t", type=int, help="sequence length (HMMs only)")
    parser.add_argument("--d", type=int)
    parser.add_argument("--k", type=int)
    parser.add_argument("--iters", type=int)
    parser.add_argument("--restarts", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per peer (median)")
    parser.add_argument(
        "--peers", default=",".join(peers), help=f"comma-separated subset of {','.join(peers)}"
    )
    parser.add_argument("--ceiling", action="store_true", help="measure the JAX matmul ceiling")
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--in-process", action="store_true", help="run all peers in this process")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each peer, wait up to SECONDS for the CPUs to be idle (<10%% busy)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)


def resolve_sizes(args: argparse.Namespace, presets: dict[str, tuple]) -> tuple:
    """Preset sizes, overridden by any explicit --n/--t/--d/--k/--iters/--restarts."""
    values = list(presets[args.preset])
    if len(values) == 7:  # HMM presets: (n_seq, t, d, k, iters, restarts, label)
        names = ["n", "t", "d", "k", "iters", "restarts"]
        values = values[:6]
    else:
        names = ["n", "d", "k", "iters", "restarts", "cov"][: len(values)]
    for i, name in enumerate(names):
        if getattr(args, name, None) is not None:
            values[i] = getattr(args, name)
    return tuple(values)


def cpu_busy_fraction(interval: float = 1.0) -> float:
    """Fraction of all CPU time spent non-idle over ``interval`` seconds (from /proc/stat)."""

    def snapshot() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle

    total0, idle0 = snapshot()
    time.sleep(interval)
    total1, idle1 = snapshot()
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def wait_until_quiet(max_seconds: float, threshold: float = 0.1) -> float:
    """Wait (up to ``max_seconds``) until the CPUs are < ``threshold`` busy; return last reading."""
    deadline = time.monotonic() + max_seconds
    busy = cpu_busy_fraction()
    while busy >= threshold and time.monotonic() < deadline:
        busy = cpu_busy_fraction(2.0)
    return busy


def _run_child(module: str, name: str) -> PeerResult | None:
    """Run one peer in a fresh interpreter; return its result (None on failure)."""
    argv = sys.argv[1:]
    # Drop --peers/--json/--ceiling (and their values) from our own arguments.
    cleaned, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg in ("--peers", "--json"):
            skip = i + 1 < len(argv)
            continue
        if arg.startswith(("--peers=", "--json=")) or arg == "--ceiling":
            continue
        cleaned.append(arg)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, "-m", module, *cleaned, "--peers", name, "--json", out, "--child"]
        proc = subprocess.run(cmd, check=False)
        if proc.returncode != 0 or not os.path.exists(out):
            print(f"  {name}: FAILED (exit code {proc.returncode})", flush=True)
            return None
        with open(out) as f:
            results = json.load(f)["results"]
    return PeerResult(**results[0]) if results else None


def run_and_print(
    args: argparse.Namespace,
    peers: dict[str, Callable[..., PeerResult]],
    title: str,
    flops_per_iter: float | None,
    call: Callable[[Callable[..., PeerResult]], PeerResult],
    score_name: str = "loglik/n",
    module: str = "",
) -> list[PeerResult]:
    """Run the selected peers one after the other, print progress and a table."""
    names = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in names if p not in peers]
    if unknown:
        raise SystemExit(f"unknown peers {unknown}; choose from {list(peers)}")
    if not args.child:
        print(title, flush=True)
    results: list[PeerResult] = []
    for name in names:
        if args.wait_quiet > 0 and not args.child:
            wait_until_quiet(args.wait_quiet)
        if args.child or args.in_process or not module:
            try:
                mem = peak_rss_delta(lambda name=name: call(peers[name]))
                res = mem.result
                res.peak_rss_mib = mem.peak_delta_mib
                res.others_cpu = list(_harness.LAST_OTHERS_CPU)
            except Exception as exc:  # report and go on with the other peers
                print(f"  {name}: FAILED: {type(exc).__name__}: {exc}", flush=True)
                traceback.print_exc(limit=4, file=sys.stdout)
                continue
        else:
            res = _run_child(module, name)
            if res is None:
                continue
        if args.child:
            results.append(res)
            continue
        worst = max(res.others_cpu, default=0.0)
        if worst > 0.05:
            res.note = (res.note + f" [others used {worst:.0%} of CPU]").strip()
        results.append(res)
        per = res.seconds / res.restart_iters if res.restart_iters else float("nan")
        print(
            f"  {res.library}: {res.seconds:.3f} s, {res.restart_iters} restart-iters "
            f"({per * 1e3:.2f} ms each), score {res.score:.5f}, iters/restart {res.n_iter}"
            + (f", compile {res.compile_seconds:.2f} s" if res.compile_seconds else "")
            + (f", peak RSS +{res.peak_rss_mib:.0f} MiB" if res.peak_rss_mib is not None else "")
            + ", others' CPU share per run "
            + "/".join(f"{c:.0%}" for c in res.others_cpu),
            flush=True,
        )
    ceiling = None
    if not args.child:
        ceiling = matmul_ceiling() if args.ceiling else None
        print()
        print_table(
            [r.to_row(flops_per_iter) for r in results],
            ceiling_gflops=ceiling,
            score_name=score_name,
            title=title,
        )
    if args.json:
        payload = {
            "title": title,
            "python": platform.python_version(),
            "flops_per_iter": flops_per_iter,
            "ceiling_gflops": ceiling,
            "blas": blas_report(),
            "results": [dataclasses.asdict(r) for r in results],
        }
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
    return results

"""Per-device work of a sharded fit: restart-iterations per second on 1, 2, 4 devices.

A diagonal Gaussian mixture (default N=200,000, D=16, K=32, 32 restarts, float32,
exactly ``--iterations`` EM iterations: ``tol=-1`` never converges) fitted with the
rows split over the devices (``--split rows``), the restarts split over them
(``--split restarts``) or both (``--split both``: a 2-D mesh, restarts over the
first axis). Compile time (the first call) is reported apart; the time is the median
of ``--repeats`` warm calls; the final log-likelihood of every run is printed (they
agree to float32 rounding).

On a CPU the devices are forced host devices (``XLA_FLAGS=
--xla_force_host_platform_device_count=N``, one subprocess per count): they share
the same cores, so the figures show the overhead of splitting, not a speed-up.
On a machine with several GPUs run it as is: each count uses the first N GPUs.

Reproduce (repository root)::

    python -m benchmarks.sharded --devices 1 2 4 --split rows
    python -m benchmarks.sharded --devices 1 2 4 --split restarts
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def _measure(args) -> dict:
    import jax
    import numpy as np

    import jaxem

    devices = jax.devices()[: args.count]
    if len(devices) < args.count:
        raise SystemExit(f"{args.count} devices asked, {len(devices)} visible.")
    if args.count == 1:
        mesh = None
    elif args.split == "rows":
        mesh = jax.sharding.Mesh(np.asarray(devices), ("rows",))
    elif args.split == "restarts":
        mesh = jax.sharding.Mesh(np.asarray(devices), ("restarts",))
    else:
        mesh = jax.sharding.Mesh(np.asarray(devices).reshape(-1, 2), ("restarts", "rows"))
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(args.k, args.d)) * 3
    x = (centres[rng.integers(0, args.k, args.n)] + rng.normal(size=(args.n, args.d))).astype(
        np.float32
    )
    model = jaxem.mixture(jaxem.gaussian("diag"), n_components=args.k, init="random")
    settings = dict(
        key=jax.random.key(0), n_restarts=args.restarts, max_iter=args.iterations, tol=-1.0
    )

    def run():
        start = time.perf_counter()
        result = jaxem.fit(model, x, mesh=mesh, **settings)
        return time.perf_counter() - start, result

    first, result = run()
    times = [run()[0] for _ in range(args.repeats)]
    seconds = statistics.median(times)
    work = args.restarts * args.iterations
    return {
        "devices": args.count,
        "platform": devices[0].platform,
        "split": args.split if mesh is not None else "none",
        "first_call_s": first,
        "compile_s": first - seconds,
        "seconds": seconds,
        "restart_iterations_per_s": work / seconds,
        "log_likelihood": result.log_likelihood,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--split", choices=["rows", "restarts", "both"], default="rows")
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--restarts", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)  # one measurement
    args = parser.parse_args(argv)
    if args.count is not None:
        print(json.dumps(_measure(args)))
        return
    rows = []
    for count in args.devices:
        env = dict(os.environ)
        import jax  # only to learn the platform; the measurements run in subprocesses

        if jax.default_backend() == "cpu":
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={max(args.devices)}"
        command = [sys.executable, "-m", "benchmarks.sharded", "--count", str(count)]
        for name in ("split", "n", "d", "k", "restarts", "iterations", "repeats"):
            command += [f"--{name}", str(getattr(args, name))]
        output = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        rows.append(json.loads(output.stdout.strip().splitlines()[-1]))
    base = rows[0]["restart_iterations_per_s"]
    print(
        f"N={args.n} D={args.d} K={args.k} restarts={args.restarts} "
        f"iterations={args.iterations} float32, split={args.split}, {rows[0]['platform']}"
    )
    print("devices | compile s | run s | restart-iterations/s | vs 1 device | log-likelihood")
    for row in rows:
        print(
            f"{row['devices']:7d} | {row['compile_s']:9.2f} | {row['seconds']:5.2f} | "
            f"{row['restart_iterations_per_s']:20.1f} | "
            f"{row['restart_iterations_per_s'] / base:11.2f} | {row['log_likelihood']:.6f}"
        )


if __name__ == "__main__":
    main()

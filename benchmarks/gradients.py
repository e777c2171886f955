"""What a gradient through an EM fit costs: implicit versus unrolled, against the fit.

One full-covariance Gaussian mixture fit (default N=100,000, D=16, K=16, float64,
``tol=1e-6``: about 110 EM iterations), from one fixed k-means start, run to
convergence; then one gradient of
``loss = mean log-likelihood + sum of squared means`` with respect to the data by
:func:`jaxem.fit_differentiable` with ``adjoint="implicit"`` (forward fit plus the
adjoint solve) and ``adjoint="unrolled"`` (as many EM steps as the fit ran, in a
``lax.scan``, differentiated in reverse mode). Every program is compiled ahead of
time (compile seconds reported apart); times are medians of ``--repeats`` runs.

Memory is XLA's buffer assignment for each compiled program (arguments + outputs +
temporaries: the peak the program can reach) and, as a check, the process's peak
resident set above its baseline while it runs (``VmHWM``). The unrolled gradient is
also compiled (not run) at fewer steps to show its memory growing with them.

Reproduce (repository root)::

    python -m benchmarks.gradients --repeats 1            # N=100,000 D=16 K=16
    python -m benchmarks.gradients --repeats 1 --implicit-only --adjoint-tol 1e-6
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks import _harness


def _data(n, d, k, seed=0):
    """Overlapping clusters: EM needs on the order of 100 iterations."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 4.0
    scales = rng.uniform(0.6, 1.4, size=(k, 1, 1)) * np.eye(d)
    labels = rng.integers(0, k, n)
    noise = np.einsum("nd,nde->ne", rng.normal(size=(n, d)), scales[labels])
    return centres[labels] + noise


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--adjoint-tol", type=float, default=None)
    parser.add_argument("--adjoint-solver", choices=("gmres", "iteration"), default="gmres")
    parser.add_argument(
        "--implicit-only", action="store_true", help="skip the unrolled gradient (minutes)"
    )
    args = parser.parse_args(argv)
    _harness.ensure_clean_blas_env()

    import jax
    import jax.numpy as jnp

    import jaxem

    with jax.enable_x64(args.dtype == "float64"):
        ceiling = _harness.matmul_ceiling()
        x = jnp.asarray(_data(args.n, args.d, args.k), args.dtype)
        model = jaxem.mixture(jaxem.gaussian("full"), args.k)
        start = jax.tree.map(
            lambda leaf: leaf[0],
            jaxem.engine.initialise(model, x, key=jax.random.key(0), n_restarts=1),
        )
        options = dict(init_params=start, tol=args.tol, max_iter=args.max_iter)

        def fit(x):
            result = jaxem.fit_differentiable(model, x, **options)
            return result.log_likelihood, result.n_iter, result.status

        def loss(x, adjoint, max_iter):
            result = jaxem.fit_differentiable(
                model,
                x,
                **{**options, "max_iter": max_iter},
                adjoint=adjoint,
                adjoint_tol=args.adjoint_tol,
                adjoint_solver=args.adjoint_solver,
            )
            return result.log_likelihood + jnp.sum(result.params.components.means**2)

        forward, forward_compile = _harness.aot_compile(fit, x)
        first, (log_likelihood, n_iter, status) = _harness.first_call_seconds(
            lambda: jax.block_until_ready(forward(x))
        )
        n_iter, status = int(n_iter), int(status)

        def gradient(adjoint, steps):
            function = jax.jit(jax.grad(lambda x: loss(x, adjoint, steps)))
            return _harness.aot_compile(function, x)

        implicit, implicit_compile = gradient("implicit", args.max_iter)
        cases = [
            ("forward fit", forward, forward_compile, lambda: forward(x)),
            ("implicit gradient", implicit, implicit_compile, lambda: implicit(x)),
        ]
        if not args.implicit_only:
            unrolled, unrolled_compile = gradient("unrolled", n_iter)
            cases.append(("unrolled gradient", unrolled, unrolled_compile, lambda: unrolled(x)))

        rows = []
        figures = {}
        for name, compiled, compile_s, run in cases:
            seconds, _, _ = _harness.timed_runs(
                lambda run=run: jax.block_until_ready(run()), args.repeats
            )
            rss = _harness.peak_rss_delta(lambda run=run: jax.block_until_ready(run()))
            memory = _harness.program_bytes(compiled)
            figures[name] = (seconds, memory, rss.peak_delta_bytes)
            rows.append((name, compile_s, seconds, memory, rss.peak_delta_bytes))

        growth = []
        implicit_value = float(loss(x, "implicit", args.max_iter))
        unrolled_value = float("nan")
        if not args.implicit_only:
            for steps in (max(1, n_iter // 4), max(1, n_iter // 2)):
                compiled, _ = gradient("unrolled", steps)
                growth.append((steps, _harness.program_bytes(compiled)))
            growth.append((n_iter, figures["unrolled gradient"][1]))
            unrolled_value = float(loss(x, "unrolled", n_iter))

    flops = _harness.flops_gmm_full_iter(args.n, args.k, args.d) * n_iter
    forward_s = figures["forward fit"][0]
    print(
        f"Full-covariance GMM, N={args.n:,} D={args.d} K={args.k}, {args.dtype}, "
        f"tol={args.tol:g}: the fit ran {n_iter} iterations (status {status}), "
        f"final mean log-likelihood {float(log_likelihood):.6f}; "
        f"loss at the implicit fit {implicit_value:.6f}, unrolled {unrolled_value:.6f}."
    )
    print(
        f"matmul ceiling {ceiling:.1f} GFLOP/s; the forward fit ran at "
        f"{flops / forward_s / 1e9:.1f} GFLOP/s; its first call (compile included) "
        f"{first + forward_compile:.2f} s."
    )
    print(
        f"{'':20} {'compile s':>10} {'run s':>8} {'x fit':>6} {'XLA MB':>8} {'x fit':>6} "
        f"{'RSS MB':>8}"
    )
    for name, compile_s, seconds, memory, rss in rows:
        print(
            f"{name:20} {compile_s:10.2f} {seconds:8.3f} {seconds / forward_s:6.2f} "
            f"{memory / 1e6:8.1f} {memory / figures['forward fit'][1]:6.2f} {rss / 1e6:8.1f}"
        )
    if growth:
        print(
            "unrolled gradient memory (XLA) by steps: "
            + ", ".join(f"{steps} steps {memory / 1e6:.1f} MB" for steps, memory in growth)
        )


if __name__ == "__main__":
    main()

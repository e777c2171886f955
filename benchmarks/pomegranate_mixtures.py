"""jaxem's discrete mixtures against pomegranate 1.x, side by side in one run.

For every family both libraries fit by EM -- Bernoulli, categorical (several
columns: latent class analysis) and Poisson -- the script draws data from a known
mixture (seeded), builds ``R`` starting points (uniform weights, random component
parameters; seeded) and fits them with

* jaxem: ``jaxem.fit(jaxem.mixture(family, K), X, init_params=<the R starts>,
  n_restarts=R, max_iter=n_iter, tol=-inf)``: all restarts in one compiled
  program;
* pomegranate: ``GeneralMixtureModel`` of the family's distributions constructed
  with restart r's parameters and ``priors`` (so ``fit`` does no initialisation of
  its own), ``max_iter=n_iter, tol=-inf``; one ``fit`` per restart in a Python
  loop (pomegranate has no batched restarts).

Same data, same starts, same number of iterations (``tol=-inf``: neither library's
stopping test ``|improvement| < tol`` / ``improvement < tol`` can be true; the
iterations actually run are read back, from jaxem's ``n_iter`` and from a subclass
of ``GeneralMixtureModel`` that counts its M-steps), float32 on both sides (JAX
with x64 off; torch tensors of float32, or int64 symbols for pomegranate's
``Categorical``, which indexes its table with them).

Timing: both run in this one process, jaxem then pomegranate per row. pomegranate
first runs a small warm-up fit (2,000 rows, 2 iterations); jaxem's first call
compiles, and its compile time is that first call minus the steady-state median
(reported apart). ``seconds`` is the median of ``--repeats`` whole fits (all
restarts; ``--restart-repeats`` for the rows with R > 1, which are long for
pomegranate), ``ratio`` = pomegranate seconds / jaxem seconds. The last column is
the share of the CPUs other processes used during the timed fits (see
``benchmarks._harness.others_cpu_share``); on a loaded machine pomegranate's times
(torch's thread pool) swing by 10-60x between identical fits, so only rows without
load are worth quoting.
Scores: the final mean log-likelihood per row of the best restart of each side,
computed by one float64 numpy scorer in this file from the parameters each library
returned (log-probabilities floored at ``log`` of float64's smallest normal, as
jaxem floors a never-seen symbol).

GFLOP/s: useful work of the dense algorithm per restart-iteration, ``4 N K F + 7 N K``
with ``F`` the width of the features (``D`` for Bernoulli and Poisson, ``D *
n_symbols`` one-hot columns for categorical): the log-density matmul and the
statistics matmul, plus the log-sum-exp; ``%ceil`` is that over a float32
``jax.jit`` matmul ceiling measured in the same run.

pomegranate specifics (1.1.2, read from its source): ``Categorical(probs)`` takes
one ``(D, n_keys)`` table per component (every column the same number of symbols)
and int64 data; its ``summarize`` loops over the symbols and its
``log_probability`` over the columns. ``Poisson`` recomputes ``lgamma(X + 1)`` in
every E-step. Its accumulators (``_w_sum``, ``_xw_sum``) are created with torch's
default float32 whatever the input dtype. ``Bernoulli.from_summaries`` does not clip
the probabilities (a component whose probability reaches exactly 0 or 1 gives
``0 * log 0 = NaN`` in the next E-step; jaxem clips into ``[eps, 1 - eps]``); the
data drawn here keep every probability inside. pomegranate's data checks
(``check_data=True``, the default) stay on, as a user would run it; jaxem's
functional ``fit`` timed here does not check the data (its estimators do, once per
fit, outside the EM loop), so pomegranate pays its checks in every iteration;
``--no-peer-checks`` turns them off.

Student-t: pomegranate 1.1.2's ``StudentT`` takes a fixed integer ``dofs`` and
inherits ``Normal``'s ``summarize``/``from_summaries``, i.e. its "EM" updates the
responsibility-weighted mean and variance of a Gaussian (no latent scales, no
degrees-of-freedom update), and its density is a product of univariate t's (diagonal
only). That is not Student-t EM, so no Student-t row is timed; the script prints
this instead of a comparison.

Reproduce (repository root)::

    python -m benchmarks.pomegranate_mixtures            # N=100,000 D=16 K=8, 50 iters, R=1 and 8
    python -m benchmarks.pomegranate_mixtures --small    # smoke run (seconds)
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np

from benchmarks import _harness
from benchmarks._common import WARMUP_N, best
from benchmarks._harness import timed_runs

FAMILIES = ("bernoulli", "categorical", "poisson")

#: Share of the CPUs used by other processes above which a timing is flagged.
LOAD_LIMIT = 0.05

STUDENT_T_NOTE = (
    "Student-t: not compared. pomegranate 1.1.2's StudentT has a fixed integer `dofs` and "
    "inherits Normal's summarize/from_summaries: its mixture 'EM' is the Gaussian M-step "
    "(weighted means and variances; no latent scales, no degrees-of-freedom update) under a "
    "product of univariate t densities. It fits a different model, so timing it against "
    "jaxem's Student-t EM would not be a like-for-like comparison."
)


# -- data and starts -------------------------------------------------------------------
def make_data(family: str, n: int, d: int, k: int, n_symbols: int, seed: int = 0):
    """(x, generating weights, generating component parameters) of a known mixture."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(k, 5.0))
    labels = rng.choice(k, size=n, p=weights)
    if family == "bernoulli":
        probs = rng.uniform(0.05, 0.95, size=(k, d))
        x = (rng.random((n, d)) < probs[labels]).astype(np.float32)
        return x, weights, probs
    if family == "categorical":
        probs = rng.dirichlet(np.full(n_symbols, 0.5), size=(k, d))
        cdf = probs.cumsum(-1)[labels]  # (n, d, S)
        x = (rng.random((n, d, 1)) > cdf).sum(-1).clip(0, n_symbols - 1).astype(np.int32)
        return x, weights, probs
    if family == "poisson":
        rates = rng.uniform(0.5, 20.0, size=(k, d))
        x = rng.poisson(rates[labels]).astype(np.float32)
        return x, weights, rates
    raise ValueError(f"unknown family {family!r}")


def make_starts(family: str, x, k: int, restarts: int, n_symbols: int, seed: int = 1):
    """``restarts`` starting points: uniform weights (R, K) and component parameters
    (R, K, D) or (R, K, D, S), float32; random, away from the support's edges."""
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    weights = np.full((restarts, k), 1.0 / k, np.float32)
    if family == "bernoulli":
        params = rng.uniform(0.25, 0.75, size=(restarts, k, d))
    elif family == "categorical":
        params = rng.dirichlet(np.full(n_symbols, 5.0), size=(restarts, k, d))
    else:
        params = x.mean(0, dtype=np.float64) * rng.uniform(0.5, 1.5, size=(restarts, k, d))
    return weights, params.astype(np.float32)


# -- the common scorer -----------------------------------------------------------------
def _floored_log(p):
    return np.log(np.maximum(np.asarray(p, np.float64), np.finfo(np.float64).tiny))


def mean_loglik(family: str, x, weights, params, chunk: int = 65536) -> float:
    """Mean per-row log-likelihood of the mixture, float64 numpy, for either library."""
    from scipy.special import gammaln

    log_w = _floored_log(weights)
    if family == "bernoulli":
        log_p, log_q = _floored_log(params), _floored_log(1.0 - np.asarray(params, np.float64))
    elif family == "categorical":
        log_p = _floored_log(params)  # (K, D, S)
    else:
        log_rates, rates = _floored_log(params), np.asarray(params, np.float64)
    total = 0.0
    for start in range(0, len(x), chunk):
        rows = x[start : start + chunk]
        if family == "bernoulli":
            rows = rows.astype(np.float64)
            logd = rows @ log_p.T + (1.0 - rows) @ log_q.T
        elif family == "categorical":
            cols = np.arange(rows.shape[1])
            logd = log_p[:, cols, rows].sum(-1).T  # (n, K)
        else:
            rows = rows.astype(np.float64)
            logd = rows @ log_rates.T - rates.sum(1) - gammaln(rows + 1).sum(1, keepdims=True)
        joint = logd + log_w
        top = joint.max(1, keepdims=True)
        total += float((top[:, 0] + np.log(np.exp(joint - top).sum(1))).sum())
    return total / len(x)


def flops_per_iter(family: str, n: int, d: int, k: int, n_symbols: int) -> float:
    width = d * n_symbols if family == "categorical" else d
    return 4.0 * n * k * width + 7.0 * n * k


# -- jaxem -----------------------------------------------------------------------------
def run_jaxem(family: str, x, weights, params, n_iter: int, n_symbols: int, repeats: int):
    """(steady seconds, compile seconds, max and min iterations over restarts, best score,
    others' CPU share during the timed runs)."""
    import jax
    import jax.numpy as jnp

    import jaxem

    fam = {
        "bernoulli": jaxem.bernoulli,
        "categorical": lambda: jaxem.categorical(n_symbols),
        "poisson": jaxem.poisson,
    }[family]()
    model = jaxem.mixture(fam, weights.shape[1])
    components = {
        "bernoulli": lambda p: fam.params_from_probabilities(p),
        "categorical": lambda p: fam.params_from_probabilities(p),
        "poisson": lambda p: jaxem.PoissonParams(fam.log_rates_from_rates(p)),
    }[family](jnp.asarray(params))
    init = jaxem.MixtureParams(jnp.log(jnp.asarray(weights)), components)
    xj = jnp.asarray(x)
    restarts = weights.shape[0]

    def fit():
        result = jaxem.fit(
            model,
            xj,
            key=jax.random.key(0),
            n_restarts=restarts,
            max_iter=n_iter,
            tol=-math.inf,
            init_params=init,
        )
        jax.block_until_ready(result.restarts.params)
        return result

    start = time.perf_counter()
    fit()
    first = time.perf_counter() - start
    seconds, _, result = timed_runs(fit, repeats)
    load = max(_harness.LAST_OTHERS_CPU)
    out = result.restarts.params
    layout = out.components
    fitted = np.asarray(
        jax.nn.sigmoid(layout.logits)
        if family == "bernoulli"
        else jnp.exp(layout.log_probs if family == "categorical" else layout.log_rates)
    )
    w = np.exp(np.asarray(out.log_weights, np.float64))
    scores = [mean_loglik(family, x, w[r], fitted[r]) for r in range(restarts)]
    n_iters = np.asarray(result.restarts.n_iter)
    return (
        seconds,
        max(first - seconds, 0.0),
        int(n_iters.max()),
        int(n_iters.min()),
        best(scores),
        load,
    )


# -- pomegranate -----------------------------------------------------------------------
def run_pomegranate(
    family: str, x, weights, params, n_iter: int, repeats: int, check_data: bool = True
):
    """(steady seconds, max and min iterations over restarts, best score, others' CPU
    share during the timed runs)."""
    import torch
    from pomegranate.distributions import Bernoulli, Categorical, Poisson
    from pomegranate.gmm import GeneralMixtureModel

    class CountingGMM(GeneralMixtureModel):
        """Counts M-steps, i.e. EM iterations actually completed."""

        n_mstep = 0

        def from_summaries(self):
            self.n_mstep += 1
            return super().from_summaries()

    make = {
        "bernoulli": lambda p: Bernoulli(probs=p, check_data=check_data),
        "categorical": lambda p: Categorical(probs=p, check_data=check_data),
        "poisson": lambda p: Poisson(lambdas=p, check_data=check_data),
    }[family]
    # pomegranate's Categorical indexes its probability table with the symbols.
    xt = torch.from_numpy(
        np.ascontiguousarray(x.astype(np.int64) if family == "categorical" else x)
    )

    def fit_one(xx, r: int, iters: int) -> dict:
        comps = [make(torch.from_numpy(params[r, j].copy())) for j in range(params.shape[1])]
        model = CountingGMM(
            comps,
            priors=torch.from_numpy(weights[r].copy()),
            max_iter=iters,
            tol=-math.inf,
            check_data=check_data,
        )
        model.fit(xx)
        attr = {"bernoulli": "probs", "categorical": "probs", "poisson": "lambdas"}[family]
        return {
            "weights": model.priors.detach().numpy().astype(np.float64),
            "params": np.stack([getattr(c, attr).detach().numpy() for c in model.distributions]),
            "n_iter": model.n_mstep,
        }

    fit_one(xt[:WARMUP_N], 0, 2)
    restarts = weights.shape[0]
    seconds, _, fits = timed_runs(
        lambda: [fit_one(xt, r, n_iter) for r in range(restarts)], repeats
    )
    load = max(_harness.LAST_OTHERS_CPU)
    scores = [mean_loglik(family, x, f["weights"], f["params"]) for f in fits]
    n_iters = [f["n_iter"] for f in fits]
    return seconds, max(n_iters), min(n_iters), best(scores), load


def _percent(share: float) -> str:
    """``share`` in percent; "-" when the run was too short for /proc/stat to tell."""
    return "-" if math.isnan(share) else f"{100 * share:.0f}%"


# -- main ------------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--symbols", type=int, default=8, help="categorical: symbols per column")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--restarts", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3, help="timed fits per row with R=1")
    parser.add_argument(
        "--restart-repeats", type=int, default=1, help="timed fits per row with R>1 (long)"
    )
    parser.add_argument(
        "--no-peer-checks",
        action="store_true",
        help="pomegranate with check_data=False (its per-iteration data checks off)",
    )
    parser.add_argument(
        "--small",
        action="store_true",
        help="smoke run: N=5,000 D=8 K=4 S=4, 10 iters, R=1 and 4, 1 repeat (overrides those)",
    )
    args = parser.parse_args(argv)
    if args.small:
        args.n, args.d, args.k, args.symbols, args.iters = 5000, 8, 4, 4, 10
        args.restarts, args.repeats, args.restart_repeats = [1, 4], 1, 1

    import jax
    import pomegranate
    import torch

    import jaxem
    from benchmarks._harness import matmul_ceiling

    if jax.config.jax_enable_x64:
        raise SystemExit("run with JAX's x64 mode off: the comparison is float32 on both sides")
    ceiling = matmul_ceiling(2048 if args.small else 4096)
    print(
        f"jaxem {getattr(jaxem, '__version__', '?')}, jax {jax.__version__} "
        f"({jax.default_backend()}), pomegranate {pomegranate.__version__}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{platform.processor() or platform.machine()}"
    )
    print(
        f"N={args.n:,} D={args.d} K={args.k} (categorical: {args.symbols} symbols per column), "
        f"{args.iters} EM iterations, tol=-inf, float32 both sides, median of "
        f"{args.repeats} fits (R=1) or {args.restart_repeats} (R>1); pomegranate "
        f"check_data={not args.no_peer_checks}; "
        f"float32 jax matmul ceiling {ceiling:.1f} GFLOP/s"
    )
    print()
    print(
        "| family | R | jaxem s | jaxem compile s | pomegranate s | ratio pom/jaxem "
        "| iters jaxem / pom | loglik/n jaxem | loglik/n pomegranate | jaxem GFLOP/s (%ceil) "
        "| others' CPU jaxem / pom |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    loaded = False
    for family in args.families:
        x, _, _ = make_data(family, args.n, args.d, args.k, args.symbols)
        flops = flops_per_iter(family, args.n, args.d, args.k, args.symbols)
        for restarts in args.restarts:
            weights, params = make_starts(family, x, args.k, restarts, args.symbols)
            repeats = args.repeats if restarts == 1 else args.restart_repeats
            js, jc, jmax, jmin, jscore, jload = run_jaxem(
                family, x, weights, params, args.iters, args.symbols, repeats
            )
            ps, pmax, pmin, pscore, pload = run_pomegranate(
                family, x, weights, params, args.iters, repeats, not args.no_peer_checks
            )
            loaded |= max(jload, pload) > LOAD_LIMIT
            gflops = flops * restarts * jmin / js / 1e9
            iters = f"{jmin}" if jmin == jmax else f"{jmin}-{jmax}"
            piters = f"{pmin}" if pmin == pmax else f"{pmin}-{pmax}"
            print(
                f"| {family} | {restarts} | {js:.3f} | {jc:.2f} | {ps:.3f} | {ps / js:.1f} "
                f"| {iters} / {piters} | {jscore:.5f} | {pscore:.5f} "
                f"| {gflops:.2f} ({100 * gflops / ceiling:.1f}%) "
                f"| {_percent(jload)} / {_percent(pload)} |",
                flush=True,
            )
    print()
    if loaded:
        print(
            f"WARNING: other processes used more than {100 * LOAD_LIMIT:.0f}% of the CPUs during "
            "some timed runs (last column): those timings are not clean. pomegranate (torch's "
            "thread pool) slows down far more than jaxem under load; rerun on a quiet machine."
        )
    print(STUDENT_T_NOTE)


if __name__ == "__main__":
    from benchmarks._harness import ensure_clean_blas_env

    ensure_clean_blas_env()
    main()

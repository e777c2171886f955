"""jaxem's side of the benchmarks: the same runner signatures as the peers.

Each ``run_*`` fits all ``R`` restarts in ONE ``jaxem.fit`` call (one compiled
program, restarts batched) for exactly ``n_iter`` iterations (``tol=-inf``: the
convergence test ``|Δ| < tol`` is never true), from the same starting points as
the peers, and returns a :class:`benchmarks._harness.PeerResult` scored by the
same library-independent float64 functions.

Compile time is reported apart: the first call (trace + compile + run) minus the
median steady-state call. The steady-state calls reuse the compiled program
(same model, shapes and static arguments) and are timed after
``block_until_ready``.
"""

from __future__ import annotations

import math
import time

import numpy as np

from benchmarks._harness import PeerResult, timed_runs

__all__ = ["run_gmm", "run_kmeans", "run_hmm"]


def _timed_fit(fit, repeats: int):
    """(steady seconds, all times, compile seconds, last result) of ``fit()``."""
    import jax

    start = time.perf_counter()
    jax.block_until_ready(fit())
    first = time.perf_counter() - start
    seconds, times, result = timed_runs(lambda: jax.block_until_ready(fit()), repeats)
    return seconds, times, max(first - seconds, 0.0), result


def run_gmm(
    x: np.ndarray,
    init: dict[str, np.ndarray],
    n_iter: int,
    covariance_type: str = "full",
    *,
    reg_covar: float = 1e-6,
    repeats: int = 1,
    chunk_size: int | None = None,
) -> PeerResult:
    """``jaxem.fit(jaxem.mixture(jaxem.gaussian(cov), K), X, n_restarts=R)`` in float32.

    The data are centred first (as jaxem's estimators do for float32; part of
    the timed call is not this host-side subtraction, done once) and the means
    shifted back before scoring.
    """
    import jax
    import jax.numpy as jnp

    import jaxem
    from benchmarks.peers_gmm import _finish

    offset = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    xc = jnp.asarray(x - offset, jnp.float32)
    family = jaxem.gaussian(covariance_type, reg_covar=reg_covar)
    model = jaxem.mixture(family, init["means"].shape[1])
    components = jax.vmap(family.params_from_covariances)(
        jnp.asarray(init["means"] - offset, jnp.float32),
        jnp.asarray(init["covariances"], jnp.float32),
    )
    params = jaxem.MixtureParams(jnp.log(jnp.asarray(init["weights"], jnp.float32)), components)
    restarts = init["means"].shape[0]

    def fit():
        return jaxem.fit(
            model,
            xc,
            key=jax.random.key(0),
            n_restarts=restarts,
            max_iter=n_iter,
            tol=-math.inf,
            init_params=params,
            chunk_size=chunk_size,
        )

    seconds, times, compile_s, result = _timed_fit(fit, repeats)
    all_params = result.restarts.params
    covariances = np.asarray(jax.vmap(family.covariances)(all_params.components))
    fits = [
        {
            "weights": np.exp(np.asarray(all_params.log_weights[r])),
            "means": np.asarray(all_params.components.means[r]) + offset,
            "covariances": covariances[r],
            "n_iter": int(result.restarts.n_iter[r]),
            "own_score": float(result.restarts.log_likelihood[r]),
        }
        for r in range(restarts)
    ]
    note = "one compiled program, restarts batched"
    return _finish("jaxem", x, covariance_type, fits, seconds, times, compile_s, note)


def run_kmeans(
    x: np.ndarray,
    init_centers: np.ndarray,
    n_iter: int,
    *,
    repeats: int = 1,
    chunk_size: int | None = None,
) -> PeerResult:
    """``jaxem.fit(jaxem.kmeans(K), X, n_restarts=R)`` (Lloyd as hard EM) in float32."""
    import jax
    import jax.numpy as jnp

    import jaxem
    from benchmarks._common import best
    from benchmarks._scoring import kmeans_inertia

    restarts, k, _ = init_centers.shape
    model = jaxem.kmeans(k)
    xj = jnp.asarray(x, jnp.float32)
    params = jaxem.KMeansParams(jnp.asarray(init_centers, jnp.float32))

    def fit():
        return jaxem.fit(
            model,
            xj,
            key=jax.random.key(0),
            n_restarts=restarts,
            max_iter=n_iter,
            tol=-math.inf,
            init_params=params,
            chunk_size=chunk_size,
        )

    seconds, times, compile_s, result = _timed_fit(fit, repeats)
    centers = np.asarray(result.restarts.params.centers)
    n_iters = np.asarray(result.restarts.n_iter)
    scores = [kmeans_inertia(x, centers[r]) for r in range(restarts)]
    return PeerResult(
        library="jaxem",
        seconds=seconds,
        score=best(scores, higher_is_better=False),
        n_iter=int(n_iters.max()),
        restarts=restarts,
        restart_iters=int(n_iters.sum()),
        compile_seconds=compile_s,
        all_seconds=times,
        note="one compiled program, restarts batched",
    )


def run_hmm(
    x: np.ndarray,
    init: dict[str, np.ndarray],
    n_iter: int,
    *,
    algorithm: str = "scaled",
    repeats: int = 1,
) -> PeerResult:
    """``jaxem.fit(jaxem.hmm(jaxem.gaussian("diag"), K), (obs, mask), n_restarts=R)``, float32.

    ``algorithm`` is the HMM model's forward-backward ("scaled", the default, and
    "scan" are sequential in time, in probability space with per-step scaling and in
    log space; see :class:`jaxem.HMM` for the others).
    """
    import jax
    import jax.numpy as jnp

    import jaxem
    from benchmarks.peers_hmm import _finish

    x3 = x if x.ndim == 3 else x[None]
    n_seq, t, _ = x3.shape
    restarts, k, _ = init["means"].shape
    model = jaxem.hmm(jaxem.gaussian("diag"), k, algorithm=algorithm)
    data = (jnp.asarray(x3, jnp.float32), jnp.ones((n_seq, t), jnp.float32))
    emissions = jaxem.GaussianParams(
        jnp.asarray(init["means"], jnp.float32),
        jax.lax.rsqrt(jnp.asarray(init["variances"], jnp.float32)),
    )
    params = jaxem.HMMParams(
        jnp.asarray(init["startprob"], jnp.float32),
        jnp.asarray(init["transmat"], jnp.float32),
        emissions,
    )

    def fit():
        return jaxem.fit(
            model,
            data,
            key=jax.random.key(0),
            n_restarts=restarts,
            max_iter=n_iter,
            tol=-math.inf,
            init_params=params,
        )

    seconds, times, compile_s, result = _timed_fit(fit, repeats)
    all_params = result.restarts.params
    fits = [
        {
            "startprob": np.asarray(all_params.startprob[r], np.float64),
            "transmat": np.asarray(all_params.transmat[r], np.float64),
            "means": np.asarray(all_params.emissions.means[r], np.float64),
            "variances": 1.0
            / np.asarray(all_params.emissions.precisions_cholesky[r], np.float64) ** 2,
            "n_iter": int(result.restarts.n_iter[r]),
        }
        for r in range(restarts)
    ]
    note = f"one compiled program, restarts batched, {algorithm} forward-backward"
    name = "jaxem" if algorithm == "scaled" else f"jaxem-{algorithm}"
    return _finish(name, x3, fits, seconds, times, compile_s, note)

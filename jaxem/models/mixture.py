"""Finite mixtures over any component family.

    p(x) = Σ_k π_k p_k(x)

The E-step computes log-responsibilities in log space and returns the
additive statistics ``(Σ r_k, Σ r_k φ(x))``; the M-step sets ``π`` from the
counts and hands the feature sums to the family.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxem import _iterate, ops
from jaxem.families.base import Family, component_log_densities
from jaxem.models.kmeans import KMeansModel, kmeans_plusplus, lloyd, random_rows, squared_distances

__all__ = ["Mixture", "MixtureParams", "MixtureStats", "MixtureHyper", "mixture", "INIT_METHODS"]

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")


class MixtureParams(NamedTuple):
    """Log mixing proportions ``(K,)`` and the family's component parameters."""

    log_weights: jax.Array
    components: Any


class MixtureStats(NamedTuple):
    """Responsibility sums ``(K,)`` and responsibility-weighted feature sums ``(K, F)``."""

    counts: jax.Array
    feature_sums: jax.Array


class MixtureHyper(NamedTuple):
    """Numeric hyperparameters: the family's, plus k-means init settings."""

    family: Any
    kmeans_tol: jax.Array


@dataclasses.dataclass(frozen=True)
class Mixture:
    """Mixture of ``n_components`` components of one family.

    Parameters
    ----------
    family : Family
        Component family, e.g. ``jaxem.gaussian("full")``.
    n_components : int
        Number of components.
    init_method : {"kmeans", "k-means++", "random", "random_from_data"}
        Initialisation, with scikit-learn's meanings: responsibilities from a
        k-means fit (k-means++ seeds then Lloyd), one-hot responsibilities on the
        k-means++ seeds or on random distinct rows, or uniform random
        responsibilities. All run on the device, batched over restarts.
    kmeans_max_iter : int
        Lloyd iterations cap of the "kmeans" init (scikit-learn's KMeans default).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import jaxem
    >>> X = jnp.concatenate([jnp.zeros((50, 1)), jnp.ones((50, 1)) * 5.0])
    >>> X = X + jax.random.normal(jax.random.key(0), X.shape) * 0.1
    >>> model = jaxem.mixture(jaxem.gaussian("diag"), n_components=2)
    >>> result = jaxem.fit(model, X, key=jax.random.key(1), n_restarts=4)
    >>> print(jnp.sort(result.params.components.means[:, 0]).round(1))
    [0. 5.]
    """

    family: Family
    n_components: int
    init_method: str = "kmeans"
    kmeans_max_iter: int = 300

    def __post_init__(self):
        if not isinstance(self.n_components, int) or self.n_components < 1:
            raise ValueError(f"n_components must be a positive int, got {self.n_components!r}.")
        if self.init_method not in INIT_METHODS:
            raise ValueError(f"init must be one of {INIT_METHODS}, got {self.init_method!r}.")

    # -- contract ---------------------------------------------------------------------------
    def hyper(self, dtype) -> MixtureHyper:
        return MixtureHyper(self.family.hyper(dtype), jnp.asarray(1e-4, dtype))

    def e_step(self, params: MixtureParams, x, weights, hyper):
        features = self.family.features(x)
        log_joint = self._log_joint(params, features, self.family.log_base_measure(x))
        resp, log_norm = ops.softmax_and_logsumexp(log_joint, axis=1, scale=weights)
        stats = MixtureStats(resp.sum(0), resp.T @ features)
        # where() keeps 0 * -inf of padding rows from turning the sum into NaN.
        return stats, jnp.sum(jnp.where(weights > 0, weights * log_norm, 0.0))

    def m_step(self, stats: MixtureStats, params: MixtureParams, hyper) -> MixtureParams:
        counts = stats.counts + ops.tiny(stats.counts.dtype)
        return MixtureParams(
            log_weights=jnp.log(counts / counts.sum()),
            components=self.family.m_step(stats.feature_sums, stats.counts, hyper.family),
        )

    def init(self, key, chunks: _iterate.Chunks, hyper) -> MixtureParams:
        x, weights = chunks.flat()
        n_components = self.n_components
        if self.init_method in ("k-means++", "random_from_data"):
            if self.init_method == "k-means++":
                _, index = kmeans_plusplus(key, x, weights, n_components)
            else:
                index = random_rows(key, weights, n_components)
            # One-hot responsibilities on the seed rows only, as scikit-learn.
            counts = jnp.ones((n_components,), x.dtype)
            at_points = getattr(self.family, "params_at_points", None)
            if at_points is not None:  # exact, where moments of one point would cancel
                return MixtureParams(
                    jnp.log(counts / n_components), at_points(x[index], hyper.family)
                )
            return self.m_step(MixtureStats(counts, self.family.features(x[index])), None, hyper)

        if self.init_method == "kmeans":
            seeds, _ = kmeans_plusplus(key, x, weights, n_components)
            centers = lloyd(
                KMeansModel(n_components),
                seeds,
                chunks,
                max_iter=self.kmeans_max_iter,
                tol=hyper.kmeans_tol,
            )

            def responsibilities(x_chunk, index):
                labels = jnp.argmin(squared_distances(x_chunk, centers), axis=1)
                return jax.nn.one_hot(labels, n_components, dtype=x_chunk.dtype)

        else:  # "random": uniform random responsibilities, normalised per row

            def responsibilities(x_chunk, index):
                raw = jax.random.uniform(
                    jax.random.fold_in(key, index), (x_chunk.shape[0], n_components), x_chunk.dtype
                )
                return raw / raw.sum(axis=1, keepdims=True)

        def chunk_stats(chunk, _):
            x_chunk, w_chunk, index = chunk
            resp = responsibilities(x_chunk, index) * w_chunk[:, None]
            return MixtureStats(resp.sum(0), resp.T @ self.family.features(x_chunk))

        indexed = _iterate.Chunks(
            (chunks.x, chunks.weights, jnp.arange(chunks.n_chunks)), chunks.weights
        )
        stats = _iterate.chunked_sum(chunk_stats, indexed)
        return self.m_step(stats, None, hyper)

    def log_prob(self, params: MixtureParams, x):
        """Per-row log-likelihood ``log p(x)``, shape ``(n,)``."""
        return jax.nn.logsumexp(self.log_joint(params, x), axis=1)

    def n_parameters(self, n_features: int) -> int:
        return self.family.n_parameters(self.n_components, n_features) + self.n_components - 1

    def row_width(self, x) -> int:
        return self.n_components

    # -- derived quantities ------------------------------------------------------------------
    def log_joint(self, params: MixtureParams, x):
        """``(n, K)`` log of ``π_k p_k(x)``."""
        return self._log_joint(params, self.family.features(x), self.family.log_base_measure(x))

    def log_responsibilities(self, params: MixtureParams, x):
        """``(n, K)`` log posterior probability of each component."""
        log_joint = self.log_joint(params, x)
        return log_joint - jax.nn.logsumexp(log_joint, axis=1, keepdims=True)

    def predict(self, params: MixtureParams, x):
        """Most probable component of every row."""
        return jnp.argmax(self.log_joint(params, x), axis=1)

    def sample(self, key, params: MixtureParams, n_samples: int):
        """``(x, labels)``: ``n_samples`` draws and the components they came from."""
        label_key, draw_key = jax.random.split(key)
        labels = jax.random.categorical(label_key, params.log_weights, shape=(n_samples,))
        return self.family.sample(draw_key, params.components, labels), labels

    def _log_joint(self, params, features, log_base):
        return component_log_densities(self.family, params.components, features, log_base) + (
            params.log_weights
        )


def mixture(family: Family, n_components: int, init: str = "kmeans") -> Mixture:
    """Mixture model over ``family``; see :class:`Mixture`."""
    return Mixture(family=family, n_components=n_components, init_method=init)

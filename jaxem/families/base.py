"""The contract every component family obeys.

A family describes ``K`` component distributions of an exponential-family form

    log p_k(x) = features(x) · θ_k + bias_k + log_base_measure(x)

so that the log-densities of all components for a chunk of rows are one matrix
product, and the expected sufficient statistics are one more (``respᵀ features``).
Mixtures and hidden Markov models use the same family object: a mixture weights
the component densities by mixing proportions, an HMM by state posteriors.

Families are frozen dataclasses: hashable, so a model that holds one can be a
static argument of ``jax.jit``. Numeric hyperparameters (``reg_covar`` and the
like) are excluded from equality and handed to the traced functions as arrays by
:meth:`Family.hyper`, so changing them does not recompile.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax

Array = jax.Array


class Family(Protocol):
    """Structural type of a component family (see the module docstring)."""

    def hyper(self, dtype) -> Any:
        """Numeric hyperparameters as a pytree of arrays of ``dtype``."""

    def check_data(self, x) -> None:
        """Raise ``ValueError`` naming the problem if ``x`` is outside the support."""

    def features(self, x: Array) -> Array:
        """Sufficient-statistic map ``φ(x)``: ``(n, n_features) -> (n, F)``."""

    def log_base_measure(self, x: Array) -> Array:
        """Part of the log-density free of parameters, shape ``(n,)``."""

    def natural_parameters(self, params) -> tuple[Array, Array]:
        """``(θ, bias)`` of shapes ``(K, F)`` and ``(K,)``."""

    def m_step(self, feature_sums: Array, counts: Array, hyper) -> Any:
        """Parameters from weighted sums of features ``(K, F)`` and weights ``(K,)``."""

    def n_parameters(self, n_components: int, n_features: int) -> int:
        """Number of free parameters of ``n_components`` components."""

    def sample(self, key, params, labels: Array) -> Array:
        """One draw per entry of ``labels`` from the labelled component."""


def log_densities(family: Family, params, x: Array) -> Array:
    """``(n, K)`` log-densities of every row under every component."""
    return component_log_densities(family, params, family.features(x), family.log_base_measure(x))


def component_log_densities(family: Family, params, features: Array, log_base: Array) -> Array:
    """Log-densities from precomputed features: one matrix product."""
    theta, bias = family.natural_parameters(params)
    return features @ theta.T + bias + log_base[:, None]

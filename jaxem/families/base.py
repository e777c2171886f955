"""What every component family shares: the contract and the one-product log-densities.

A family describes ``K`` component distributions of an exponential-family form

    log p_k(x) = features(x) · θ_k + bias_k + log_base_measure(x)

so that the log-densities of all components for a chunk of rows are one matrix
product, and the expected sufficient statistics are one more (``respᵀ features``).
Mixtures and hidden Markov models use the same family object: a mixture weights
the component densities by mixing proportions, an HMM by state posteriors.

The contract itself, required and optional hooks, is :class:`jaxem.contract.Family`;
families subclass it so that the optional hooks come with their defaults.
"""

from __future__ import annotations

import jax

from jaxem.contract import Family

__all__ = ["Family", "log_densities", "component_log_densities"]

Array = jax.Array


def log_densities(family: Family, params, x: Array) -> Array:
    """``(n, K)`` log-densities of every row under every component."""
    return family.log_densities(params, x)


def component_log_densities(family: Family, params, features: Array, log_base: Array) -> Array:
    """Log-densities from precomputed features: the default one matrix product
    (families that override :meth:`Family.log_densities` are exact only there)."""
    theta, bias = family.natural_parameters(params)
    return features @ theta.T + bias + log_base[:, None]

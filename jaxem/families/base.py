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
import jax.numpy as jnp
import numpy as np

from jaxem.contract import Family

__all__ = [
    "Family",
    "log_densities",
    "component_log_densities",
    "check_counts",
    "check_observed_rows",
    "count_features",
]

Array = jax.Array


def log_densities(family: Family, params, x: Array) -> Array:
    """``(n, K)`` log-densities of every row under every component."""
    return family.log_densities(params, x)


def component_log_densities(family: Family, params, features: Array, log_base: Array) -> Array:
    """Log-densities from precomputed features: the default one matrix product
    (families that override :meth:`Family.log_densities` are exact only there)."""
    theta, bias = family.natural_parameters(params)
    return features @ theta.T + bias + log_base[:, None]


def check_counts(x, name: str, columns: str, fix: str) -> None:
    """Raise ``ValueError`` unless ``x`` is 2-D, finite, non-negative whole counts.

    ``name`` names the family in the messages ("Poisson"), ``columns`` the second
    axis ("n_features") and ``fix`` says how to make counts of non-integer data.

    >>> check_counts(np.array([[0, 3], [1, 2]]), "Poisson", "n_features", "Round them.")
    >>> check_counts(np.array([[0.5]]), "Poisson", "n_features", "Round them.")
    Traceback (most recent call last):
    ...
    ValueError: Poisson counts must be integers; got non-integer values. Round them.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} data must be 2-D (n_samples, {columns}), got {x.ndim}-D.")
    if x.dtype.kind not in "iubf":
        raise ValueError(f"{name} counts must be numeric, got dtype {x.dtype}.")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} counts must be finite; got NaN or infinity.")
    if np.any(x < 0):
        raise ValueError(
            f"{name} counts must be non-negative; got negative values. Negative values "
            "in data are not counts: use non-negative integer counts."
        )
    if np.any(x != np.round(x)):
        raise ValueError(f"{name} counts must be integers; got non-integer values. {fix}")


def check_observed_rows(gone) -> None:
    """Raise ``ValueError`` if a row has no observed entry; ``gone`` (numpy, 2-D) is
    True where an entry is missing.

    >>> check_observed_rows(np.array([[False, True], [True, True]]))
    Traceback (most recent call last):
    ...
    ValueError: Row 1 has no observed entry (all missing; 1 such rows). Drop the rows ...
    """
    empty = np.flatnonzero(np.asarray(gone).all(axis=1))
    if empty.size:
        raise ValueError(
            f"Row {int(empty[0])} has no observed entry (all missing; {empty.size} such "
            "rows). Drop the rows with nothing observed."
        )


def count_features(x: Array) -> Array:
    """Counts as floating features: floats as they are, integers in the default float
    (float64 under x64), so that ``log Γ(x + 1)`` keeps its precision (float32 is
    exact for counts only up to 2^24)."""
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x
    return x.astype(jax.dtypes.canonicalize_dtype(jnp.float64))

"""Categorical components over ``n_symbols`` symbols.

Rows are integer symbols ``x`` of shape ``(n, 1)``. In exponential-family form the
features are one-hot vectors and the natural parameters are the log-probabilities,

    log p_k(x) = onehot(x) · log π_k,

so the log-densities of all components are one matrix product and the expected
counts of every symbol are another. Log-probabilities are floored at
``log(smallest normal)`` instead of ``-inf``: a symbol never seen keeps a finite
(negligible) probability, and ``0 · θ`` never becomes ``0 · -inf = NaN``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Categorical", "CategoricalParams", "CategoricalHyper", "categorical"]


class CategoricalParams(NamedTuple):
    """Log-probabilities of the symbols, shape ``(K, n_symbols)``."""

    log_probs: jax.Array


class CategoricalHyper(NamedTuple):
    """Dirichlet prior concentration (hmmlearn's ``emissionprob_prior``); 1 means ML."""

    prior: jax.Array


def _floored_log(p):
    floor = jnp.finfo(p.dtype).tiny
    return jnp.log(jnp.maximum(p, floor))


@dataclasses.dataclass(frozen=True)
class Categorical:
    """Categorical component family.

    Parameters
    ----------
    n_symbols : int
        Number of distinct symbols; data holds integers in ``[0, n_symbols)``.
    prior : float or array (K, n_symbols)
        Dirichlet concentration; the M-step adds ``prior - 1`` pseudo-counts and
        clips at 0, as hmmlearn's ``emissionprob_prior``. Excluded from equality
        (an array input of compiled code), so changing it does not recompile.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import jaxem
    >>> family = jaxem.categorical(3)
    >>> counts = jnp.array([[2.0, 1.0, 1.0]])
    >>> params = family.m_step(counts, counts.sum(1), family.hyper(jnp.float32))
    >>> print(jnp.exp(params.log_probs))
    [[0.5  0.25 0.25]]
    >>> print(jaxem.families.log_densities(family, params, jnp.array([[0], [2]])).ravel())
    [-0.6931472 -1.3862944]
    """

    n_symbols: int
    prior: float = dataclasses.field(default=1.0, compare=False)

    def __post_init__(self):
        if not isinstance(self.n_symbols, (int, np.integer)) or self.n_symbols < 1:
            raise ValueError(f"n_symbols must be a positive int, got {self.n_symbols!r}.")

    # -- contract ---------------------------------------------------------------------------
    def hyper(self, dtype) -> CategoricalHyper:
        return CategoricalHyper(prior=jnp.asarray(self.prior, dtype))

    def check_data(self, x) -> None:
        """Raise ``ValueError`` unless ``x`` is ``(n, 1)`` integers in ``[0, n_symbols)``."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != 1:
            raise ValueError(
                f"Categorical data must have shape (n_samples, 1), got {x.shape}; "
                "reshape a 1-D array of symbols with X.reshape(-1, 1)."
            )
        if x.dtype.kind == "f":
            if not np.all(np.isfinite(x)) or not np.all(x == np.round(x)):
                raise ValueError(
                    "Categorical symbols must be integers; got non-integer values. "
                    "Encode the symbols as 0, 1, ..., n_features - 1."
                )
        elif x.dtype.kind not in "iub":
            raise ValueError(f"Categorical symbols must be integers, got dtype {x.dtype}.")
        if x.size and (x.min() < 0 or x.max() >= self.n_symbols):
            raise ValueError(
                f"Categorical symbols must lie in [0, {self.n_symbols - 1}], got values in "
                f"[{x.min()}, {x.max()}]; increase n_features or re-encode the symbols."
            )

    def features(self, x):
        # float32 one-hot is exact and promotes to float64 against float64 parameters.
        return jax.nn.one_hot(x[:, 0], self.n_symbols, dtype=jnp.float32)

    def log_base_measure(self, x):
        return jnp.zeros(x.shape[:1], jnp.float32)

    def natural_parameters(self, params: CategoricalParams):
        log_probs = params.log_probs
        return log_probs, jnp.zeros(log_probs.shape[:1], log_probs.dtype)

    def m_step(self, feature_sums, counts, hyper: CategoricalHyper) -> CategoricalParams:
        del counts
        # hmmlearn: max(prior - 1 + counts, 0), rows normalised; an all-zero row stays 0.
        pseudo = jnp.maximum(hyper.prior - 1 + feature_sums, 0)
        total = jnp.sum(pseudo, axis=1, keepdims=True)
        probs = pseudo / jnp.where(total == 0, 1, total)
        return CategoricalParams(_floored_log(probs))

    def n_parameters(self, n_components: int, n_features: int) -> int:
        del n_features
        return n_components * (self.n_symbols - 1)

    def sample(self, key, params: CategoricalParams, labels):
        draws = jax.random.categorical(key, params.log_probs[labels], axis=-1)
        return draws[:, None]

    # -- conveniences (not part of the contract) -------------------------------------------
    def params_from_probabilities(self, probs) -> CategoricalParams:
        """Parameters from probabilities ``(K, n_symbols)`` (zeros are floored)."""
        return CategoricalParams(_floored_log(jnp.asarray(probs)))


def categorical(n_symbols: int, prior: float = 1.0) -> Categorical:
    """Categorical component family; see :class:`Categorical`."""
    return Categorical(n_symbols=n_symbols, prior=prior)

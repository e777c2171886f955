"""Multinomial components over ``D`` count features (bag of words).

A row is the counts of ``D`` categories (words) in ``n = Σ_d x_d`` trials
(a document); a component is a probability vector ``p_k`` over the categories:

    log p_k(x) = x · log p_k + log n! - Σ_d log x_d!,

so the features are the counts, the natural parameters the log-probabilities,
and the base measure the multinomial coefficient. Unlike independent Poisson
counts, the row total carries no information about the component. Log-probabilities
are floored at ``log(smallest normal)``: a word never seen in a component keeps a
finite (negligible) probability and ``0 · θ`` never becomes ``0 · -inf = NaN``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxem import ops
from jaxem.contract import Family
from jaxem.families.base import check_counts, count_features

__all__ = ["Multinomial", "MultinomialParams", "MultinomialHyper", "multinomial"]


class MultinomialParams(NamedTuple):
    """Log-probabilities of the categories, shape ``(K, D)``."""

    log_probs: jax.Array


class MultinomialHyper(NamedTuple):
    """Dirichlet concentration ``α`` of every probability (1: maximum likelihood)."""

    prior: jax.Array


def _floored_log(p):
    return jnp.log(jnp.maximum(p, jnp.finfo(p.dtype).tiny))


@dataclasses.dataclass(frozen=True)
class Multinomial(Family):
    """Multinomial component family: counts of ``D`` categories per row.

    Parameters
    ----------
    prior : float or array (K, D)
        Dirichlet concentration; the M-step is the posterior mode
        ``max(α - 1 + Σ r x, 0)`` normalised per component (``α = 1``: maximum
        likelihood; ``α = 2``: add-one (Laplace) smoothing). Excluded from equality:
        changing it does not recompile.
    n_trials : int
        Trials of every row drawn by :meth:`sample` (the log-density takes each
        row's own total). A static field: :meth:`sample` compiles it in, so
        families of different ``n_trials`` must not share a program.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import jaxem
    >>> family = jaxem.multinomial()
    >>> params = family.m_step(jnp.array([[6.0, 2.0]]), jnp.array([2.0]), family.hyper(jnp.float32))
    >>> print(jnp.exp(params.log_probs))
    [[0.75 0.25]]
    >>> # scipy.stats.multinomial.logpmf([3, 1], 4, [0.75, 0.25]) = -0.8630
    >>> print(jaxem.families.log_densities(family, params, jnp.array([[3.0, 1.0]])).round(4))
    [[-0.863]]
    """

    prior: float = dataclasses.field(default=1.0, compare=False)
    n_trials: int = 1

    update_letters: ClassVar[str] = "e"

    # -- contract ---------------------------------------------------------------------------
    def hyper(self, dtype) -> MultinomialHyper:
        return MultinomialHyper(np.asarray(self.prior, dtype))

    def check_data(self, x) -> None:
        """Raise ``ValueError`` unless ``x`` is 2-D, finite, non-negative whole counts."""
        check_counts(x, "Multinomial", "n_categories", "Count the categories (words) of every row.")

    def features(self, x):
        return count_features(x)

    def log_base_measure(self, x):
        x = self.features(x)
        gammaln = jax.scipy.special.gammaln
        return gammaln(jnp.sum(x, axis=-1) + 1) - jnp.sum(gammaln(x + 1), axis=-1)

    def natural_parameters(self, params: MultinomialParams):
        log_probs = params.log_probs
        return log_probs, jnp.zeros(log_probs.shape[:1], log_probs.dtype)

    def m_step(self, feature_sums, counts, hyper: MultinomialHyper) -> MultinomialParams:
        del counts
        pseudo = jnp.maximum(hyper.prior - 1 + feature_sums, 0)
        total = jnp.sum(pseudo, axis=-1, keepdims=True)
        # A component with no counts at all: uniform (finite) probabilities.
        uniform = jnp.full_like(pseudo, 1.0 / pseudo.shape[-1])
        probs = jnp.where(total > 0, pseudo / jnp.where(total > 0, total, 1), uniform)
        return MultinomialParams(_floored_log(probs))

    def n_parameters(self, n_components: int, n_features: int) -> int:
        return n_components * (n_features - 1)

    def sample(self, key, params: MultinomialParams, labels):
        log_probs = params.log_probs[labels]
        draws = jax.random.multinomial(key, self.n_trials, jnp.exp(log_probs))
        return draws.astype(log_probs.dtype)

    # -- optional hooks -----------------------------------------------------------------------
    def unconstrain(self, params: MultinomialParams) -> MultinomialParams:
        """The log-probabilities recentred over the symbols (:func:`jaxem.ops.centred_logs`)."""
        return MultinomialParams(ops.centred_logs(params.log_probs))

    def constrain(self, values: MultinomialParams) -> MultinomialParams:
        """Inverse of :meth:`unconstrain`: log-probabilities again (log softmax)."""
        return MultinomialParams(ops.normalised_logs(values.log_probs))

    def to_layout(self, params: MultinomialParams) -> dict[str, Any]:
        """``probabilities`` ``(K, D)`` (numpy); floored ones come back as exact zeros."""
        log_probs = jax.device_get(params.log_probs)
        probs = np.exp(log_probs)
        return {"probabilities": np.where(probs < 2 * np.finfo(log_probs.dtype).tiny, 0.0, probs)}

    def from_layout(self, dtype, *, probabilities) -> MultinomialParams:
        """Parameters from ``probabilities`` ``(K, D)`` (zeros floored)."""
        return MultinomialParams(_floored_log(jnp.asarray(probabilities, dtype)))


def multinomial(prior: float = 1.0, *, n_trials: int = 1) -> Multinomial:
    """Multinomial component family; see :class:`Multinomial`."""
    return Multinomial(prior=prior, n_trials=n_trials)

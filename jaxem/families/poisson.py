"""Independent Poisson components over ``D`` count features.

In exponential-family form, with ``θ = log λ``,

    log p_k(x) = x · θ_k - Σ_d λ_kd - Σ_d log Γ(x_d + 1),

so the features are the counts themselves. Log-rates are floored at
``log(smallest normal)``: a component with no weight keeps finite parameters and
``0 · θ`` never becomes ``0 · -inf = NaN``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxem import _iterate
from jaxem.contract import Family
from jaxem.families.base import check_counts, count_features

__all__ = ["Poisson", "PoissonParams", "PoissonHyper", "poisson"]


class PoissonParams(NamedTuple):
    """Log-rates ``log λ``, shape ``(K, D)``."""

    log_rates: jax.Array


class PoissonHyper(NamedTuple):
    """Gamma prior: shape ``rates_prior`` (α) and rate ``rates_weight`` (β); 0, 0 is ML."""

    rates_prior: jax.Array
    rates_weight: jax.Array


@dataclasses.dataclass(frozen=True)
class Poisson(Family):
    """Poisson component family.

    Parameters
    ----------
    rates_prior, rates_weight : float or array (K, D)
        Gamma(α, β) prior on every rate; the M-step is the posterior mean
        ``(α + Σ r x) / (β + Σ r)`` (hmmlearn's ``lambdas_prior`` and
        ``lambdas_weight``). Excluded from equality: changing them does not recompile.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import jaxem
    >>> family = jaxem.poisson()
    >>> params = family.m_step(jnp.array([[6.0, 2.0]]), jnp.array([2.0]), family.hyper(jnp.float32))
    >>> print(jnp.exp(params.log_rates))
    [[3. 1.]]
    >>> print(jaxem.families.log_densities(family, params, jnp.array([[3.0, 0.0]])).round(4))
    [[-2.4959]]
    """

    rates_prior: float = dataclasses.field(default=0.0, compare=False)
    rates_weight: float = dataclasses.field(default=0.0, compare=False)

    update_letters: ClassVar[str] = "l"

    # -- contract ---------------------------------------------------------------------------
    def hyper(self, dtype) -> PoissonHyper:
        return PoissonHyper(
            np.asarray(self.rates_prior, dtype), np.asarray(self.rates_weight, dtype)
        )

    def check_data(self, x) -> None:
        """Raise ``ValueError`` unless ``x`` is 2-D, finite, non-negative and integer-valued."""
        check_counts(x, "Poisson", "n_features", "Round or aggregate the data into counts.")

    def features(self, x):
        return count_features(x)

    def log_base_measure(self, x):
        x = self.features(x)
        return -jnp.sum(jax.scipy.special.gammaln(x + 1), axis=-1)

    def natural_parameters(self, params: PoissonParams):
        log_rates = params.log_rates
        return log_rates, -jnp.sum(jnp.exp(log_rates), axis=-1)

    def m_step(self, feature_sums, counts, hyper: PoissonHyper) -> PoissonParams:
        denominator = hyper.rates_weight + counts[:, None]
        rates = (hyper.rates_prior + feature_sums) / jnp.where(denominator > 0, denominator, 1)
        return PoissonParams(self.log_rates_from_rates(rates))

    def n_parameters(self, n_components: int, n_features: int) -> int:
        return n_components * n_features

    def sample(self, key, params: PoissonParams, labels):
        rates = jnp.exp(params.log_rates)[labels]
        return jax.random.poisson(key, rates, rates.shape).astype(rates.dtype)

    # -- optional hooks -----------------------------------------------------------------------
    def initial_params(self, key, chunks, n_components: int, hyper) -> PoissonParams:
        """hmmlearn's init: Gamma draws of the rates whose mean and variance are those
        of all counts (pooled over features); two passes over the chunks."""
        del hyper
        dtype = chunks.weights.dtype

        def values(x):
            return self.features(x).astype(dtype)

        total, sums = _iterate.chunked_sum(lambda x, w: (w.sum(), jnp.sum(w @ values(x))), chunks)
        n_features = jax.eval_shape(values, chunks.x[0]).shape[1]
        mean = sums / (total * n_features)
        squares = _iterate.chunked_sum(lambda x, w: jnp.sum(w @ (values(x) - mean) ** 2), chunks)
        variance = squares / (total * n_features)
        variance = jnp.maximum(variance, jnp.finfo(dtype).eps)
        shape = mean**2 / variance
        draws = jax.random.gamma(key, jnp.maximum(shape, 1e-3), (n_components, n_features), dtype)
        return PoissonParams(self.log_rates_from_rates(draws * variance / jnp.maximum(mean, 1e-12)))

    def unconstrain(self, params: PoissonParams) -> PoissonParams:
        """The log rates, free already."""
        return params

    def constrain(self, values: PoissonParams) -> PoissonParams:
        """Inverse of :meth:`unconstrain` (the identity)."""
        return values

    def to_layout(self, params: PoissonParams) -> dict[str, Any]:
        """``rates`` ``λ`` of shape ``(K, D)`` (numpy)."""
        return {"rates": jax.device_get(jnp.exp(params.log_rates))}

    def from_layout(self, dtype, *, rates) -> PoissonParams:
        """Parameters from ``rates`` ``(K, D)``."""
        return PoissonParams(self.log_rates_from_rates(jnp.asarray(rates, dtype)))

    # -- conveniences (not part of the contract) -------------------------------------------
    @staticmethod
    def log_rates_from_rates(rates):
        """``log λ`` floored at the log of the smallest normal number."""
        rates = jnp.asarray(rates)
        return jnp.log(jnp.maximum(rates, jnp.finfo(rates.dtype).tiny))


def poisson(rates_prior: float = 0.0, rates_weight: float = 0.0) -> Poisson:
    """Poisson component family; see :class:`Poisson`."""
    return Poisson(rates_prior=rates_prior, rates_weight=rates_weight)

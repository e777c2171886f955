"""Independent Bernoulli components over ``D`` binary features.

In exponential-family form, with the logits ``θ = log(p / (1 - p))``,

    log p_k(x) = x · θ_k + Σ_d log(1 - p_kd),

so the features are the binary values themselves and the base measure is 1.
Probabilities are clipped into ``[eps, 1 - eps]`` (``eps`` of the dtype) by the
M-step: the logits stay finite, so ``0 · θ`` never becomes ``0 · ±inf = NaN``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxem.contract import Family
from jaxem.families.base import check_observed_rows

__all__ = ["Bernoulli", "BernoulliParams", "BernoulliHyper", "BernoulliStats", "bernoulli"]


class BernoulliParams(NamedTuple):
    """Logits ``log(p / (1 - p))`` of the probabilities of a 1, shape ``(K, D)``."""

    logits: jax.Array


class BernoulliHyper(NamedTuple):
    """Beta(α, β) prior on every probability; ``α = β = 1`` is maximum likelihood."""

    alpha: jax.Array
    beta: jax.Array


class BernoulliStats(NamedTuple):
    """Statistics with missing entries: ``Σ r x`` over the observed entries and the
    observed weight ``Σ r`` of every feature, both ``(K, D)``."""

    ones: jax.Array
    observed: jax.Array


def _clipped_logits(probs):
    eps = jnp.finfo(probs.dtype).eps
    probs = jnp.clip(probs, eps, 1 - eps)
    return jnp.log(probs) - jnp.log1p(-probs)


@dataclasses.dataclass(frozen=True)
class Bernoulli(Family):
    """Multivariate Bernoulli component family: ``D`` independent binary features.

    Parameters
    ----------
    alpha, beta : float or array (K, D)
        Beta(α, β) prior on every probability; the M-step is the posterior mode
        ``(α - 1 + Σ r x) / (α + β - 2 + Σ r)``, clipped into ``[eps, 1 - eps]``.
        The default ``α = β = 1`` is maximum likelihood; ``α = β = 2`` adds one
        pseudo-observation of each value (Laplace smoothing). A component without
        weight or pseudo-counts gets ``p = 1/2``. Excluded from equality: changing
        them does not recompile.
    missing : bool
        False (default): every entry is 0 or 1. True: NaN entries are missing at
        random. A row's log-density is that of its observed features alone (the
        missing ones are marginalised out, which for independent features drops
        their factors), and the statistics count only observed entries: the
        M-step divides each feature's count of ones by its own observed weight
        (:class:`BernoulliStats`). :meth:`impute` fills a missing entry with the
        component's probability of a 1. A static field: programs with and without
        it differ.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import jaxem
    >>> family = jaxem.bernoulli()
    >>> x = jnp.array([[1, 0, 1], [1, 0, 0]])
    >>> features = family.features(x)
    >>> params = family.m_step(features.sum(0, keepdims=True), jnp.array([2.0]),
    ...                        family.hyper(jnp.float32))
    >>> print(family.to_layout(params)["probabilities"].round(3))
    [[1.  0.  0.5]]
    >>> print(jaxem.families.log_densities(family, params, x).ravel().round(4))
    [-0.6931 -0.6931]

    A mixture of two binary profiles:

    >>> import jax, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> profiles = np.array([[0.9, 0.9, 0.1, 0.1], [0.1, 0.1, 0.9, 0.9]])
    >>> X = (rng.random((1000, 4)) < profiles[np.arange(1000) % 2]).astype(np.float32)
    >>> model = jaxem.mixture(family, n_components=2)  # k-means init
    >>> result = jaxem.fit(model, X, key=jax.random.key(0), n_restarts=4)
    >>> probs = family.to_layout(result.params.components)["probabilities"]
    >>> print(probs[np.argsort(probs[:, 0])].round(1))
    [[0.1 0.1 0.9 0.9]
     [0.9 0.9 0.1 0.1]]
    """

    alpha: float = dataclasses.field(default=1.0, compare=False)
    beta: float = dataclasses.field(default=1.0, compare=False)
    missing: bool = False

    update_letters: ClassVar[str] = "e"

    # -- contract ---------------------------------------------------------------------------
    def hyper(self, dtype) -> BernoulliHyper:
        return BernoulliHyper(np.asarray(self.alpha, dtype), np.asarray(self.beta, dtype))

    def check_data(self, x) -> None:
        """Raise ``ValueError`` unless ``x`` is 2-D, finite and holds only 0 and 1;
        with ``missing``, NaN too, but every row needs an observed entry."""
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(
                f"Bernoulli data must be 2-D (n_samples, n_features), got {x.ndim}-D; "
                "reshape a single feature with X.reshape(-1, 1)."
            )
        if x.dtype.kind not in "iubf":
            raise ValueError(
                f"Bernoulli data must be boolean or numeric 0/1, got dtype {x.dtype}. "
                "Binarise the features, e.g. (X == value).astype(int)."
            )
        if self.missing and x.dtype.kind == "f":
            check_observed_rows(np.isnan(x))
            x = np.where(np.isnan(x), 0, x)
        if not np.all(np.isfinite(x)):
            raise ValueError(
                "Bernoulli data must be finite; got NaN or infinity. "
                "Drop or impute the missing values, or mark them NaN with missing=True."
            )
        outside = (x != 0) & (x != 1)
        if np.any(outside):
            raise ValueError(
                f"Bernoulli data must hold only 0 and 1; got {int(outside.sum())} other "
                f"value(s), e.g. {x[outside].flat[0].item()!r}. Binarise the features, e.g. "
                "X > threshold."
            )

    def features(self, x):
        # float32 holds 0 and 1 exactly and promotes against float64 parameters.
        return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)

    def log_base_measure(self, x):
        return jnp.zeros(x.shape[:1], self.features(x).dtype)

    def log_densities(self, params: BernoulliParams, x):
        """``(n, K)`` log-densities; with ``missing``, of the observed features only:
        ``Σ_d o_d (x_d θ_kd - softplus(θ_kd))`` with ``o`` 1 where observed."""
        if not self.missing:
            return super().log_densities(params, x)
        ones, observed = _split_missing(self.features(x))
        logits = params.logits
        return ones @ logits.T - observed @ jax.nn.softplus(logits).T

    def statistics(self, params, x, resp):
        """``respᵀ x``; with ``missing``, :class:`BernoulliStats` (the ones and the
        observed weight of every feature, missing entries counting in neither)."""
        if not self.missing:
            return super().statistics(params, x, resp)
        ones, observed = _split_missing(self.features(x).astype(resp.dtype))
        return BernoulliStats(resp.T @ ones, resp.T @ observed)

    def impute(self, params: BernoulliParams, x):
        """``(n, K, D)``: missing entries (NaN) replaced by every component's
        probability of a 1, observed entries unchanged."""
        x = self.features(x)
        probs = jax.nn.sigmoid(params.logits).astype(x.dtype)
        return jnp.where(jnp.isnan(x)[:, None, :], probs[None], x[:, None, :])

    def seeding_points(self, x):
        """The rows; with ``missing``, a missing entry counts as 1/2 (no side)."""
        x = self.features(x)
        return jnp.where(jnp.isnan(x), 0.5, x) if self.missing else x

    def natural_parameters(self, params: BernoulliParams):
        logits = params.logits
        # log(1 - p) = -softplus(θ), stable for large |θ|.
        return logits, -jnp.sum(jax.nn.softplus(logits), axis=-1)

    def m_step(self, feature_sums, counts, hyper: BernoulliHyper) -> BernoulliParams:
        if isinstance(feature_sums, BernoulliStats):  # missing: per-feature weights
            feature_sums, weights = feature_sums
        else:
            weights = counts[:, None]
        numerator = hyper.alpha - 1 + feature_sums
        denominator = hyper.alpha + hyper.beta - 2 + weights
        # No weight and no pseudo-counts: nothing is known, p = 1/2 (finite logits).
        probs = jnp.where(
            denominator > 0, numerator / jnp.where(denominator > 0, denominator, 1), 0.5
        )
        return BernoulliParams(_clipped_logits(probs))

    def n_parameters(self, n_components: int, n_features: int) -> int:
        return n_components * n_features

    def sample(self, key, params: BernoulliParams, labels):
        logits = params.logits[labels]
        return jax.random.bernoulli(key, jax.nn.sigmoid(logits)).astype(logits.dtype)

    # -- optional hooks -----------------------------------------------------------------------
    def unconstrain(self, params: BernoulliParams) -> BernoulliParams:
        """The logits, free already."""
        return params

    def constrain(self, values: BernoulliParams) -> BernoulliParams:
        """Inverse of :meth:`unconstrain` (the identity)."""
        return values

    def to_layout(self, params: BernoulliParams) -> dict[str, Any]:
        """``probabilities`` of a 1, shape ``(K, D)`` (numpy)."""
        return {"probabilities": jax.device_get(jax.nn.sigmoid(params.logits))}

    def from_layout(self, dtype, *, probabilities) -> BernoulliParams:
        """Parameters from ``probabilities`` ``(K, D)``, clipped into ``[eps, 1 - eps]``."""
        return self.params_from_probabilities(jnp.asarray(probabilities, dtype))

    # -- conveniences (not part of the contract) -------------------------------------------
    @staticmethod
    def params_from_probabilities(probs) -> BernoulliParams:
        """Parameters from probabilities ``(K, D)``, clipped into ``[eps, 1 - eps]``."""
        probs = jnp.asarray(probs)
        if not jnp.issubdtype(probs.dtype, jnp.floating):
            probs = probs.astype(jnp.float32)
        return BernoulliParams(_clipped_logits(probs))


def _split_missing(x):
    """``(x with NaN as 0, 1 where observed)`` of floating rows with NaN missing."""
    observed = ~jnp.isnan(x)
    return jnp.where(observed, x, 0), observed.astype(x.dtype)


def bernoulli(alpha: float = 1.0, beta: float = 1.0, *, missing: bool = False) -> Bernoulli:
    """Multivariate Bernoulli component family; see :class:`Bernoulli`."""
    return Bernoulli(alpha=alpha, beta=beta, missing=missing)

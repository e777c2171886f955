"""Categorical components over ``D`` columns of ``n_symbols`` symbols each.

Rows are integer symbols ``x`` of shape ``(n, D)``; within a component the columns
are independent, each a categorical over ``n_symbols`` symbols (with ``D > 1`` a
mixture of them is latent class analysis). In exponential-family form the features
are the one-hot vectors of all columns side by side and the natural parameters the
log-probabilities,

    log p_k(x) = Σ_d onehot(x_d) · log π_kd,

so the log-densities of all components are one matrix product and the expected
counts of every symbol in every column are another. Log-probabilities are floored
at ``log(smallest normal)`` instead of ``-inf``: a symbol never seen keeps a finite
(negligible) probability, and ``0 · θ`` never becomes ``0 · -inf = NaN``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxem import ops
from jaxem.contract import Family
from jaxem.families.base import check_observed_rows

__all__ = ["Categorical", "CategoricalParams", "CategoricalHyper", "categorical"]


class CategoricalParams(NamedTuple):
    """Log-probabilities of the symbols, shape ``(K, D, n_symbols)``."""

    log_probs: jax.Array


class CategoricalHyper(NamedTuple):
    """Dirichlet prior concentration (hmmlearn's ``emissionprob_prior``); 1 means ML.

    Broadcasts against ``(K, D, n_symbols)``."""

    prior: jax.Array


def _floored_log(p):
    floor = jnp.finfo(p.dtype).tiny
    return jnp.log(jnp.maximum(p, floor))


@dataclasses.dataclass(frozen=True)
class Categorical(Family):
    """Categorical component family over one or more columns of symbols.

    Parameters
    ----------
    n_symbols : int
        Number of distinct symbols of every column; data holds integers in
        ``[0, n_symbols)``.
    prior : float or array
        Dirichlet concentration; the M-step adds ``prior - 1`` pseudo-counts and
        clips at 0, as hmmlearn's ``emissionprob_prior``. An array broadcasts
        against ``(K, D, n_symbols)``; one of shape ``(K, n_symbols)`` (hmmlearn's)
        applies to every column. Excluded from equality (an array input of compiled
        code), so changing it does not recompile.
    n_categories : tuple of int, optional
        Number of categories of every column when they differ (latent class
        analysis), each at most ``n_symbols``: column ``d`` holds integers in
        ``[0, n_categories[d])``, its probabilities past that are 0 and not counted
        by :meth:`n_parameters`. Default: ``n_symbols`` for every column.
    missing : bool
        False (default): every entry is a symbol. True: a negative code (-1) marks a
        missing entry, and so does NaN in floating data. A missing entry's one-hot
        features are all 0, so it adds nothing to the row's log-density (the
        observed columns' marginal: the columns are independent given the
        component) and nothing to the counts; the M-step normalises every column's
        counts, i.e. divides by that column's observed weight. A static field:
        programs with and without it differ.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import jaxem
    >>> family = jaxem.categorical(3)
    >>> counts = jnp.array([[2.0, 1.0, 1.0]])
    >>> params = family.m_step(counts, counts.sum(1), family.hyper(jnp.float32))
    >>> print(jnp.exp(params.log_probs))
    [[[0.5  0.25 0.25]]]
    >>> print(jaxem.families.log_densities(family, params, jnp.array([[0], [2]])).ravel())
    [-0.6931472 -1.3862944]

    Two columns, each with its own probabilities (here the same component):

    >>> x = jnp.array([[0, 1], [0, 2]])
    >>> features = family.features(x)
    >>> features.shape
    (2, 6)
    >>> params = family.m_step(features.sum(0, keepdims=True), jnp.array([2.0]),
    ...                        family.hyper(jnp.float32))
    >>> print(jnp.exp(params.log_probs))
    [[[1.  0.  0. ]
      [0.  0.5 0.5]]]
    """

    n_symbols: int
    prior: float = dataclasses.field(default=1.0, compare=False)
    n_categories: tuple[int, ...] | None = None
    missing: bool = False

    update_letters: ClassVar[str] = "e"

    def __post_init__(self):
        if not isinstance(self.n_symbols, (int, np.integer)) or self.n_symbols < 1:
            raise ValueError(f"n_symbols must be a positive int, got {self.n_symbols!r}.")
        if self.n_categories is not None:
            categories = tuple(int(count) for count in self.n_categories)
            if not categories or min(categories) < 1 or max(categories) > self.n_symbols:
                raise ValueError(
                    f"n_categories must be positive ints of at most n_symbols={self.n_symbols}, "
                    f"one per column; got {self.n_categories!r}."
                )
            object.__setattr__(self, "n_categories", categories)

    def _column_categories(self, n_columns: int) -> np.ndarray:
        """Number of categories of each of ``n_columns`` columns."""
        if self.n_categories is None:
            return np.full(n_columns, self.n_symbols)
        if len(self.n_categories) != n_columns:
            raise ValueError(
                f"Categorical data has {n_columns} column(s), but n_categories gives "
                f"{len(self.n_categories)}: pass one number of categories per column."
            )
        return np.asarray(self.n_categories)

    # -- contract ---------------------------------------------------------------------------
    def hyper(self, dtype) -> CategoricalHyper:
        prior = np.asarray(self.prior, dtype)
        if prior.ndim == 2:  # hmmlearn's (K, n_symbols): the same for every column
            prior = prior[:, None, :]
        return CategoricalHyper(prior=prior)

    def check_data(self, x) -> None:
        """Raise ``ValueError`` unless ``x`` is ``(n, D)`` integers in ``[0, n_symbols)``.

        Floating input is accepted when every value is a whole number. With
        ``missing``, negative codes and NaN mark missing entries, and every row needs
        an observed entry.
        """
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] == 0:
            raise ValueError(
                f"Categorical data must have shape (n_samples, n_columns), got {x.shape}; "
                "reshape a 1-D array of symbols with X.reshape(-1, 1)."
            )
        if self.missing and x.dtype.kind in "iuf":
            gone = (np.isnan(x) | (x < 0)) if x.dtype.kind == "f" else x < 0
            check_observed_rows(gone)
            x = np.where(gone, 0, x)  # what is observed must be symbols
        if x.dtype.kind == "f":
            if not np.all(np.isfinite(x)) or not np.all(x == np.round(x)):
                raise ValueError(
                    "Categorical symbols must be integers; got non-integer values. "
                    "Encode the symbols as 0, 1, ..., n_symbols - 1."
                )
        elif x.dtype.kind not in "iub":
            raise ValueError(
                f"Categorical symbols must be integers, got dtype {x.dtype}. "
                "Encode the symbols as 0, 1, ..., n_symbols - 1."
            )
        if not x.size:
            return
        negative = x.min() < 0
        if negative or (self.n_categories is None and x.max() >= self.n_symbols):
            raise ValueError(
                f"Categorical symbols must lie in [0, {self.n_symbols - 1}], got values in "
                f"[{x.min()}, {x.max()}]; increase n_symbols (n_features in CategoricalHMM) "
                "or re-encode the symbols."
                + (
                    " Negative values in data are not symbols (missing=True takes -1 as "
                    "a missing entry)."
                    if negative
                    else ""
                )
            )
        if self.n_categories is not None:
            limits = self._column_categories(x.shape[1])
            outside = np.flatnonzero(x.max(axis=0) >= limits)
            if outside.size:
                column = int(outside[0])
                raise ValueError(
                    f"Categorical column {column} must hold symbols in "
                    f"[0, {limits[column] - 1}], got {x[:, column].max()}; increase its "
                    "number of categories or re-encode the symbols."
                )

    def features(self, x):
        # float32 one-hot is exact and promotes to float64 against float64 parameters.
        # Leading axes are kept, so chunked data (n_chunks, chunk_size, D) maps too.
        if self.missing and jnp.issubdtype(x.dtype, jnp.floating):
            x = jnp.where(jnp.isnan(x), -1, x)  # a cast would make NaN symbol 0
        # A negative code (missing) is an all-zero one-hot: no density, no count.
        one_hot = jax.nn.one_hot(x.astype(jnp.int32), self.n_symbols, dtype=jnp.float32)
        return one_hot.reshape(x.shape[:-1] + (-1,))

    def log_base_measure(self, x):
        return jnp.zeros(x.shape[:1], jnp.float32)

    def natural_parameters(self, params: CategoricalParams):
        log_probs = params.log_probs
        n_components = log_probs.shape[0]
        return (
            log_probs.reshape(n_components, -1),
            jnp.zeros((n_components,), log_probs.dtype),
        )

    def m_step(self, feature_sums, counts, hyper: CategoricalHyper) -> CategoricalParams:
        del counts
        n_components = feature_sums.shape[0]
        symbol_counts = feature_sums.reshape(n_components, -1, self.n_symbols)
        # hmmlearn: max(prior - 1 + counts, 0), normalised per (component, column);
        # an all-zero row stays 0 (then floored).
        pseudo = jnp.maximum(hyper.prior - 1 + symbol_counts, 0)
        total = jnp.sum(pseudo, axis=-1, keepdims=True)
        probs = pseudo / jnp.where(total == 0, 1, total)
        return CategoricalParams(_floored_log(probs))

    def n_parameters(self, n_components: int, n_features: int) -> int:
        return n_components * int(np.sum(self._column_categories(n_features) - 1))

    def sample(self, key, params: CategoricalParams, labels):
        return jax.random.categorical(key, params.log_probs[labels], axis=-1).astype(jnp.int32)

    # -- optional hooks -----------------------------------------------------------------------
    def data_dtype(self, compute_dtype):
        """Symbols stay integers on the device; with ``missing``, floating data keeps
        its NaN (cast to an integer, NaN would become symbol 0)."""
        return compute_dtype if self.missing else jnp.int32

    def initial_params(self, key, chunks, n_components: int, hyper) -> CategoricalParams:
        """hmmlearn's init: uniform random probabilities, normalised per column."""
        del hyper
        dtype = chunks.weights.dtype
        n_columns = chunks.x.shape[-1]
        probs = jax.random.uniform(key, (n_components, n_columns, self.n_symbols), dtype)
        # Categories a column does not have get no probability.
        exists = np.arange(self.n_symbols) < self._column_categories(n_columns)[:, None]
        probs = jnp.where(exists, probs, 0)
        return CategoricalParams(jnp.log(probs / probs.sum(-1, keepdims=True)))

    def unconstrain(self, params: CategoricalParams) -> CategoricalParams:
        """The log-probabilities recentred over the symbols (:func:`jaxem.ops.centred_logs`)."""
        return CategoricalParams(ops.centred_logs(params.log_probs))

    def constrain(self, values: CategoricalParams) -> CategoricalParams:
        """Inverse of :meth:`unconstrain`: log-probabilities again (log softmax)."""
        return CategoricalParams(ops.normalised_logs(values.log_probs))

    def to_layout(self, params: CategoricalParams) -> dict[str, Any]:
        """``probabilities`` of shape ``(K, D, n_symbols)`` (numpy); floored
        log-probabilities of never-seen symbols come back as exact zeros."""
        log_probs = jax.device_get(params.log_probs)
        probs = np.exp(log_probs)
        # exp(log(tiny)) may round a few ulps above tiny.
        return {"probabilities": np.where(probs < 2 * np.finfo(log_probs.dtype).tiny, 0.0, probs)}

    def from_layout(self, dtype, *, probabilities) -> CategoricalParams:
        """Parameters from ``probabilities`` ``(K, D, n_symbols)`` (or ``(K, n_symbols)``
        for one column)."""
        return self.params_from_probabilities(jnp.asarray(probabilities, dtype))

    # -- conveniences (not part of the contract) -------------------------------------------
    def params_from_probabilities(self, probs) -> CategoricalParams:
        """Parameters from probabilities ``(K, D, n_symbols)``; a 2-D ``(K, n_symbols)``
        array is one column. Zeros are floored."""
        probs = jnp.asarray(probs)
        if probs.ndim == 2:
            probs = probs[:, None, :]
        return CategoricalParams(_floored_log(probs))


def categorical(
    n_symbols: int,
    prior: float = 1.0,
    *,
    n_categories: tuple[int, ...] | None = None,
    missing: bool = False,
) -> Categorical:
    """Categorical component family; see :class:`Categorical`."""
    return Categorical(n_symbols=n_symbols, prior=prior, n_categories=n_categories, missing=missing)

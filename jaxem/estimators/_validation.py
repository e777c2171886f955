"""Input validation and conversion shared by the scikit-learn-style estimators.

Every estimator turns user input into device arrays the same way:

1. :func:`check_data` -- scikit-learn's ``validate_data``: array-like or DataFrame
   to a 2-D float numpy array, finite values only, at least ``ensure_min_samples``
   rows, ``n_features_in_`` / ``feature_names_in_`` set on fit and checked after
   (``"X has 3 features, but GaussianMixture is expecting 2 features as input."``).
2. :func:`check_n_samples` -- at least as many rows as components or clusters.
3. :func:`input_precision`, :func:`precision` and :func:`compute_dtype` -- the
   precision policy below.

Precision policy (scikit-learn's): float32 input is computed and returned in
float32; float64, integer and boolean input in float64, whatever JAX's global
64-bit flag says. The estimators run their JAX calls inside :func:`precision`, a
``jax.enable_x64`` context that sets 64-bit types on or off for the call only and
restores the caller's setting afterwards; the global flag is never changed.

Also: :func:`check_fitted` (``NotFittedError`` via scikit-learn's
``check_is_fitted``) and :func:`random_key` (``random_state`` to a JAX key).
"""

from __future__ import annotations

import contextlib

import jax
import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from jaxem.families.low_rank_gaussian import check_rank

__all__ = [
    "FLOAT_DTYPES",
    "x64_enabled",
    "input_precision",
    "precision",
    "compute_dtype",
    "check_data",
    "check_observed_columns",
    "check_n_samples",
    "check_fitted",
    "random_seed",
    "random_key",
]

#: Accepted input dtypes; anything else (ints, bools, objects) converts to float64 first.
FLOAT_DTYPES = (np.float64, np.float32)


def x64_enabled() -> bool:
    """Whether JAX's 64-bit mode is on (respects ``jax.enable_x64`` contexts)."""
    return bool(jax.config.read("jax_enable_x64"))


def input_precision(X) -> np.dtype:
    """The precision ``X`` is computed in: float32 if it holds float32, else float64.

    Reads the dtype without converting: numpy, JAX and scipy.sparse arrays by
    ``dtype``, DataFrames by their columns' (all float32: float32), anything else
    (lists, integers, booleans) is float64, as scikit-learn's validation converts it.

    >>> input_precision(np.zeros(3, np.float32)), input_precision([[1, 2]])
    (dtype('float32'), dtype('float64'))
    """
    dtype = getattr(X, "dtype", None)
    if dtype is None and hasattr(X, "dtypes"):  # a DataFrame
        kinds = {str(column) for column in X.dtypes}
        dtype = np.float32 if kinds == {"float32"} else np.float64
    try:
        single = np.dtype(dtype) == np.float32
    except TypeError:  # an extension or object dtype: converted to float64
        single = False
    return np.dtype(np.float32 if single else np.float64)


def precision(dtype):
    """A context with JAX's 64-bit types on iff ``dtype`` is float64 (None: unchanged).

    The caller's setting is restored on exit, so estimators compute float64 input
    in float64 whether or not the user enabled x64 globally.

    >>> import jax
    >>> with precision(np.float64):
    ...     jax.numpy.zeros(2).dtype
    dtype('float64')
    """
    if dtype is None:
        return contextlib.nullcontext()
    return jax.enable_x64(np.dtype(dtype) == np.float64)


def compute_dtype(dtype) -> np.dtype:
    """float64 iff ``dtype`` is float64 and 64-bit types are on (inside
    :func:`precision` of float64 input, they are), else float32."""
    if np.dtype(dtype) == np.float64 and x64_enabled():
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def check_data(
    estimator, X, *, reset: bool, ensure_min_samples: int = 1, allow_nan: bool = False
) -> np.ndarray:
    """Validate ``X`` as scikit-learn does and return a 2-D float numpy array.

    Parameters
    ----------
    estimator : the estimator (``n_features_in_`` is set when ``reset``, checked otherwise).
    X : array-like of shape (n_samples, n_features)
    reset : True in ``fit``, False in ``predict``, ``score`` and the like.
    ensure_min_samples : fewest rows accepted.
    allow_nan : accept NaN (missing entries) but not infinity.

    Returns
    -------
    ndarray of float64 or float32 (float32 input stays float32; the rest is float64).
    Call :func:`compute_dtype` on its dtype for the precision to compute in.

    Raises
    ------
    ValueError
        NaN (unless ``allow_nan``) or infinity, 0 rows or fewer than
        ``ensure_min_samples``, not 2-D, or (``reset=False``) a feature count
        different from the fit's. Messages are scikit-learn's.
    TypeError
        Sparse input.
    """
    try:
        return validate_data(
            estimator,
            X,
            reset=reset,
            dtype=list(FLOAT_DTYPES),
            ensure_min_samples=ensure_min_samples,
            ensure_all_finite="allow-nan" if allow_nan else True,
        )
    except ValueError as error:
        # scikit-learn's message suggests imputers; say that this estimator can do better.
        offers_em = "missing" in estimator.get_params(deep=False)
        if allow_nan or not offers_em or "contains NaN" not in str(error):
            raise
        raise ValueError(
            f"{error}\njaxem: {type(estimator).__name__}(missing='em') fits with the "
            "missing entries instead (exact EM on the observed data)."
        ) from error


def check_observed_columns(X) -> None:
    """Raise ``ValueError`` if a column of ``X`` holds nothing but NaN (missing)."""
    empty = np.flatnonzero(np.isnan(X).all(axis=0))
    if empty.size:
        raise ValueError(
            f"Feature {int(empty[0])} has no observed entry (all NaN; {empty.size} such "
            "features): nothing can be learnt about it. Drop the feature."
        )


def check_n_samples(n_samples: int, n_components: int, name: str = "n_components") -> None:
    """Raise scikit-learn's ValueError unless ``n_samples >= n_components``."""
    if n_samples < n_components:
        raise ValueError(
            f"Expected n_samples >= {name} but got {name} = {n_components}, n_samples = {n_samples}"
        )


def check_fitted(estimator, attributes=None) -> None:
    """Raise :class:`sklearn.exceptions.NotFittedError` if ``estimator`` is not fitted."""
    check_is_fitted(estimator, attributes)


def random_seed(random_state) -> int:
    """A 31-bit seed drawn from scikit-learn's ``check_random_state(random_state)``.

    An int gives the same seed every call; a ``RandomState`` is advanced; ``None``
    draws from numpy's global random state, as scikit-learn does.
    """
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def key_from_seed(seed: int) -> jax.Array:
    """``jax.random.key(seed)`` for a seed in ``[0, 2**32)``, built on the host for JAX's
    default threefry keys: the same key, without the two small programs that
    ``jax.random.key`` compiles in each new process (about 0.05 s)."""
    if jax.config.jax_default_prng_impl == "threefry2x32":
        # jax.random.key's threefry seeding: [high 32 bits, low 32 bits] of the seed.
        data = np.array([seed >> 32, seed & 0xFFFFFFFF], np.uint32)
        return jax.random.wrap_key_data(data, impl="threefry2x32")
    return jax.random.key(seed)


def random_key(random_state) -> jax.Array:
    """A JAX PRNG key derived deterministically from ``random_state``:
    ``jax.random.key`` of :func:`random_seed`."""
    return key_from_seed(random_seed(random_state))


#: The jaxem extension's covariance type of GaussianMixture and GaussianHMM: ``W Wᵀ + Ψ``
#: of rank ``covariance_rank`` plus diagonal (mixtures of factor analysers).
LOW_RANK = "lowrank"


def check_low_rank_options(covariance_type, covariance_rank, missing="error") -> bool:
    """Whether ``covariance_type`` is ``'lowrank'``, after checking that
    ``covariance_rank`` comes with it (an int >= 1) and only with it, and that
    ``missing='em'`` does not (the low-rank family has no missing-data E-step).

    Raises
    ------
    ValueError
        Naming the option to change.
    TypeError
        If ``covariance_rank`` is not an int.
    """
    if covariance_type != LOW_RANK:
        if covariance_rank is not None:
            raise ValueError(
                f"covariance_rank={covariance_rank!r} is only for "
                f"covariance_type='lowrank', not {covariance_type!r}. Set "
                "covariance_rank=None, or covariance_type='lowrank'."
            )
        return False
    if covariance_rank is None:
        raise ValueError(
            "covariance_type='lowrank' needs covariance_rank, the rank q of the "
            "loadings (1 <= q < n_features), e.g. covariance_rank=16."
        )
    check_rank(covariance_rank, name="covariance_rank")
    if missing == "em":
        raise ValueError(
            "missing='em' is not available with covariance_type='lowrank'. Use "
            "another covariance_type or impute the missing entries first."
        )
    return True

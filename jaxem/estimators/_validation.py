"""Input validation and conversion shared by the scikit-learn-style estimators.

Every estimator turns user input into device arrays the same way:

1. :func:`check_data` -- scikit-learn's ``validate_data``: array-like or DataFrame
   to a 2-D float numpy array, finite values only, at least ``ensure_min_samples``
   rows, ``n_features_in_`` / ``feature_names_in_`` set on fit and checked after
   (``"X has 3 features, but GaussianMixture is expecting 2 features as input."``).
2. :func:`check_n_samples` -- at least as many rows as components or clusters.
3. :func:`compute_dtype` -- the precision policy below.

Precision policy: computation runs in float64 if and only if the data is float64
*and* JAX's 64-bit mode is on (``jax.config.update("jax_enable_x64", True)`` or
``JAX_ENABLE_X64=1``); otherwise in float32. Library code never changes the flag.

Also: :func:`check_fitted` (``NotFittedError`` via scikit-learn's
``check_is_fitted``) and :func:`random_key` (``random_state`` to a JAX key).
"""

from __future__ import annotations

import jax
import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = [
    "FLOAT_DTYPES",
    "x64_enabled",
    "compute_dtype",
    "check_data",
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


def compute_dtype(dtype) -> np.dtype:
    """float64 iff ``dtype`` is float64 and JAX's 64-bit mode is on, else float32."""
    if np.dtype(dtype) == np.float64 and x64_enabled():
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def check_data(estimator, X, *, reset: bool, ensure_min_samples: int = 1) -> np.ndarray:
    """Validate ``X`` as scikit-learn does and return a 2-D float numpy array.

    Parameters
    ----------
    estimator : the estimator (``n_features_in_`` is set when ``reset``, checked otherwise).
    X : array-like of shape (n_samples, n_features)
    reset : True in ``fit``, False in ``predict``, ``score`` and the like.
    ensure_min_samples : fewest rows accepted.

    Returns
    -------
    ndarray of float64 or float32 (float32 input stays float32; the rest is float64).
    Call :func:`compute_dtype` on its dtype for the precision to compute in.

    Raises
    ------
    ValueError
        NaN or infinity, 0 rows or fewer than ``ensure_min_samples``, not 2-D, or
        (``reset=False``) a feature count different from the fit's. Messages are
        scikit-learn's.
    TypeError
        Sparse input.
    """
    return validate_data(
        estimator,
        X,
        reset=reset,
        dtype=list(FLOAT_DTYPES),
        ensure_min_samples=ensure_min_samples,
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


def random_key(random_state) -> jax.Array:
    """A JAX PRNG key derived deterministically from ``random_state``."""
    return jax.random.key(random_seed(random_state))

"""scikit-learn's array API dispatch at the estimators' boundary.

With ``sklearn.set_config(array_api_dispatch=True)``, scikit-learn's estimators take
arrays of any array API namespace (array_api_strict, PyTorch, CuPy, ...) and return
their results, fitted attributes included, in the input's namespace and on its
device. jaxem computes in JAX whatever the input, so it converts at the boundary:
array API input (and array-valued constructor parameters such as ``means_init``)
becomes numpy on the way in, and arrays on the way out (results and the public fitted
attributes) go back to the input's namespace and device. Without the setting, or
with NumPy input, nothing changes.

The namespace and device are read with scikit-learn's own helpers (which use
``array_api_compat``), so they compare equal to what scikit-learn's tests expect.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, NamedTuple

import numpy as np
import sklearn


class Namespace(NamedTuple):
    """An array API namespace and device that results must be returned in."""

    xp: Any
    device: Any

    def to_numpy(self, value):
        if _is_foreign_array(value):
            from sklearn.utils._array_api import _convert_to_numpy

            return _convert_to_numpy(value, self.xp)
        return value

    def from_numpy(self, value):
        if isinstance(value, np.ndarray):
            return self.xp.asarray(value, device=self.device)
        if isinstance(value, tuple):
            return tuple(self.from_numpy(item) for item in value)
        return value


def dispatch_enabled() -> bool:
    return bool(sklearn.get_config().get("array_api_dispatch", False))


def _is_foreign_array(value) -> bool:
    """An array of a namespace other than NumPy (not a list, scalar, sparse matrix)."""
    if value is None or isinstance(value, (np.ndarray, np.generic, list, tuple, str)):
        return False
    if not (hasattr(value, "__array_namespace__") or hasattr(value, "__dlpack__")):
        return False
    return hasattr(value, "shape") and hasattr(value, "dtype")


def namespace_of(*values) -> Namespace | None:
    """The namespace of the array API arrays among ``values`` under scikit-learn's
    array API dispatch; None without dispatch or when all are NumPy (or not arrays)."""
    if not dispatch_enabled():
        return None
    arrays = [value for value in values if _is_foreign_array(value)]
    if not arrays:
        return None
    from sklearn.utils._array_api import _is_numpy_namespace, get_namespace_and_device

    xp, _, device = get_namespace_and_device(*arrays)
    return None if _is_numpy_namespace(xp) else Namespace(xp, device)


def _public_arrays(estimator) -> dict:
    """Fitted attributes (``name_``) and constructor parameters that hold arrays."""
    names = [name for name in vars(estimator) if name.endswith("_") and not name.startswith("_")]
    names += list(estimator.get_params(deep=False))
    return {name: getattr(estimator, name) for name in names if hasattr(estimator, name)}


@contextlib.contextmanager
def _numpy_inside(estimator, space: Namespace):
    """The estimator's array API attributes and parameters as numpy for the call; then
    its parameters as they were and its fitted attributes in ``space``."""
    parameters = set(estimator.get_params(deep=False))
    saved, before = {}, {}
    for name, value in _public_arrays(estimator).items():
        if _is_foreign_array(value):
            saved[name] = value
            setattr(estimator, name, space.to_numpy(value))
        before[name] = getattr(estimator, name)
    try:
        with sklearn.config_context(array_api_dispatch=False):
            yield
    finally:
        for name, value in _public_arrays(estimator).items():
            if name in parameters:
                if name in saved:
                    setattr(estimator, name, saved[name])
            # Back to the namespace: what was there, and what the call set (a fit);
            # NumPy attributes a call only read stay NumPy.
            elif isinstance(value, np.ndarray) and (name in saved or before.get(name) is not value):
                setattr(estimator, name, space.from_numpy(value))


def in_input_namespace(method):
    """Run ``method(self, *args)`` on numpy and return its results (and leave the public
    fitted attributes) in the namespace and on the device of its array API input, or of
    the fitted attributes when it takes no array (``sample``)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if not dispatch_enabled():
            return method(self, *args, **kwargs)
        space = namespace_of(*args, *kwargs.values()) or namespace_of(
            *_public_arrays(self).values()
        )
        if space is None:
            return method(self, *args, **kwargs)
        args = [space.to_numpy(arg) for arg in args]
        kwargs = {name: space.to_numpy(value) for name, value in kwargs.items()}
        with _numpy_inside(self, space):
            result = method(self, *args, **kwargs)
        return result if result is self else space.from_numpy(result)

    return wrapper

"""Saving and loading fitted estimators and fit results as ``.npz`` files, without pickle.

The format (version 1) is a numpy ``.npz`` archive, read back with
``np.load(..., allow_pickle=False)``:

``__jaxem__``
    A 0-d unicode array holding one JSON object: ``format`` (``"jaxem"``),
    ``format_version``, ``kind`` (``"estimator"`` or ``"fit_result"``),
    ``jaxem_version``, and for an estimator ``class``, ``dtype`` (of its fitted
    float arrays), ``params`` (``get_params(deep=False)``) and ``attributes``
    (everything else the fitted estimator holds: ``weights_``, ``n_features_in_``,
    ``feature_names_in_``, ``restarts_``, and private state such as the centring
    offset ``_fit_offset``); for a fit result, ``value``.
every other member
    One numeric, boolean or string array, named by its place in the JSON
    (``attributes/means_``, ``value/restarts/trace``), with the dtype and shape the
    JSON records for it. Other arrays may sit beside them (the command line adds
    its summary) and are ignored.

Values in the JSON are plain JSON (None, bools, ints, strings, finite floats,
lists) or tagged objects ``{"type": ...}``: ``array`` (a reference to a member),
``float`` (NaN and infinities), ``tuple``, ``dict``, ``deque``, ``dtype`` (a dtype
or a numpy scalar type), ``strings`` (an object array of str, as
``feature_names_in_``), ``namedtuple``, ``object`` and ``RandomState``.

Loading runs no code from the file: there is no pickle and no ``eval``; classes
are looked up by name in explicit registries of jaxem's own classes (its public
estimators; the public NamedTuples of :mod:`jaxem.engine`, :mod:`jaxem.models` and
:mod:`jaxem.families`; hmmlearn's ``ConvergenceMonitor``), never imported from a
path the file names. Everything wrong with a file, truncated, tampered or written
for another class, is a ``ValueError`` that says what.

Parameters that are not data cannot be saved: a callable (``KMeans(init=f)``) or
any other object raises a ``ValueError`` naming the parameter. A
``numpy.random.RandomState`` ``random_state`` is data: its full state is saved,
so the loaded estimator draws the same numbers.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zipfile
import zlib
from collections import deque
from pathlib import Path

import jax
import numpy as np

from jaxem import engine, families, models
from jaxem.estimators import _validation

__all__ = [
    "FORMAT_VERSION",
    "estimator_arrays",
    "save_estimator",
    "load_estimator",
    "save_fit",
    "load_fit",
    "load",
]

#: Version of the file layout; files of a later version are refused with a message.
FORMAT_VERSION = 1
#: The archive member holding the JSON metadata.
METADATA_KEY = "__jaxem__"
_FORMAT = "jaxem"
#: Array dtype kinds a file may hold: booleans, integers, floats, complex, str.
_ARRAY_KINDS = frozenset("biufcU")
#: What a damaged archive raises inside numpy and zipfile (truncated, bad CRC, bad header).
_READ_ERRORS = (
    ValueError,
    EOFError,
    OSError,
    KeyError,
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    UnicodeError,
    RecursionError,
)

#: Shapes of fitted arrays by attribute name: "K" components (states, clusters), "D"
#: features (symbols for CategoricalHMM), "layout" the covariance type's layout, "own"
#: the estimator's ``_layout_shape(attribute, K, D)`` ("dof": that, or ``(K,)`` when it
#: has none or returns None), "noise" one variance per
#: feature (factor analysis) or one for all (probabilistic PCA). An estimator whose
#: ``_own_shapes`` names an attribute checks it by its ``_layout_shape`` instead (GMMHMM's
#: ``weights_``, ``means_`` and ``covars_`` have a mixture axis).
_SHAPES = {
    "weights_": ("K",),
    "means_": ("K", "D"),
    "cluster_centers_": ("K", "D"),
    "startprob_": ("K",),
    "transmat_": ("K", "K"),
    "lambdas_": ("K", "D"),
    "emissionprob_": ("K", "D"),
    "_fit_offset": ("D",),
    "_counts": ("K",),
    "feature_names_in_": ("D",),
    "covariances_": "layout",
    "precisions_": "layout",
    "precisions_cholesky_": "layout",
    "_covars_": "covars",
    "rates_": ("K", "D"),
    "concentrations_": ("K",),
    "probabilities_": "own",
    "n_categories_": ("D",),
    "degrees_of_freedom_": "dof",
    "mean_precision_": ("K",),
    "mean_prior_": ("D",),
    "mean_": ("D",),
    "components_": ("K", "D"),
    "exp_dirichlet_component_": ("K", "D"),
    "noise_variance_": "noise",
    "noise_variances_": ("K", "D"),
    "loadings_": "own",
    "coef_": ("K", "D"),
    "intercept_": ("K",),
    "variances_": ("K",),
    "gate_coef_": ("K", "D"),
    "gate_intercept_": ("K",),
}


# -- registries ------------------------------------------------------------------------------
def _estimator_classes() -> dict:
    """jaxem's public estimators by name (the package is fully imported by now)."""
    import jaxem.estimators as package

    return {name: getattr(package, name) for name in package.__all__}


def _namedtuple_classes() -> dict:
    """The public NamedTuples of the engine, the models and the families, by name."""
    classes = {}
    for module in (engine, models, families):
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type) and issubclass(value, tuple) and hasattr(value, "_fields"):
                classes[name] = value
    return classes


def _object_classes() -> dict:
    """Plain objects saved as their ``vars()``."""
    from jaxem.estimators.hmm import ConvergenceMonitor

    return {"ConvergenceMonitor": ConvergenceMonitor}


# -- encoding --------------------------------------------------------------------------------
def _encode(value, key: str, arrays: dict):
    """JSON for ``value``; its arrays go into ``arrays`` under keys below ``key``."""
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        return _encode_array(value, key, arrays)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"type": "float", "value": repr(value)}
    if isinstance(value, np.dtype):
        _check_kind(value, key)
        return {"type": "dtype", "name": value.str}
    if isinstance(value, type) and issubclass(value, np.generic):  # np.float32 itself
        _check_kind(np.dtype(value), key)
        return {"type": "dtype", "name": np.dtype(value).str, "scalar_type": True}
    if isinstance(value, np.random.RandomState):
        return _encode_random_state(value, key, arrays)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        fields = {
            name: _encode(item, f"{key}/{name}", arrays) for name, item in zip(value._fields, value)
        }
        return {"type": "namedtuple", "class": type(value).__name__, "fields": fields}
    if isinstance(value, (list, tuple, deque)):
        items = [_encode(item, f"{key}/{i}", arrays) for i, item in enumerate(value)]
        if isinstance(value, list):
            return items
        if isinstance(value, tuple):
            return {"type": "tuple", "items": items}
        return {"type": "deque", "items": items, "maxlen": value.maxlen}
    if isinstance(value, dict):
        return {"type": "dict", "items": _encode_mapping(value, key, arrays)}
    if _object_classes().get(type(value).__name__) is type(value):
        return {
            "type": "object",
            "class": type(value).__name__,
            "state": _encode_mapping(vars(value), key, arrays),
        }
    raise ValueError(
        f"cannot save {key}: a {type(value).__name__} is not data (jaxem files hold "
        "numbers, strings, arrays and jaxem's own parameter tuples, never code or "
        "arbitrary objects). Replace it, e.g. with set_params, before saving."
    )


def _encode_mapping(mapping: dict, key: str, arrays: dict) -> dict:
    for name in mapping:
        if not isinstance(name, str):
            raise ValueError(f"cannot save {key}: the key {name!r} is not a string.")
    return {name: _encode(item, f"{key}/{name}", arrays) for name, item in mapping.items()}


def _encode_array(value, key: str, arrays: dict) -> dict:
    array = np.asarray(jax.device_get(value))
    if array.dtype == object:
        if all(isinstance(item, str) for item in array.flat):  # feature_names_in_
            return {"type": "strings", "values": array.ravel().tolist(), "shape": array.shape}
        raise ValueError(f"cannot save {key}: an array of Python objects is not data.")
    _check_kind(array.dtype, key)
    arrays[key] = array
    return {
        "type": "array",
        "key": key,
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "scalar": isinstance(value, np.generic),
    }


def _check_kind(dtype: np.dtype, key: str) -> None:
    if dtype.kind not in _ARRAY_KINDS:
        raise ValueError(f"cannot save {key}: arrays of dtype {dtype} are not supported.")


def _encode_random_state(value: np.random.RandomState, key: str, arrays: dict) -> dict:
    try:
        name, keys, position, has_gauss, cached_gaussian = value.get_state(legacy=True)
    except ValueError as error:  # a RandomState over another bit generator
        raise ValueError(f"cannot save {key}: {error}") from error
    state = {
        "keys": _encode_array(keys, f"{key}/keys", arrays),
        "pos": int(position),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }
    return {"type": "RandomState", "bit_generator": name, "state": state}


# -- decoding --------------------------------------------------------------------------------
class _Decoder:
    """Rebuilds values from the JSON and the archive's arrays; every fault a ValueError."""

    def __init__(self, source: str, arrays: dict, namedtuples: dict):
        self.source = source
        self.arrays = arrays
        self.namedtuples = namedtuples

    def fail(self, message: str):
        raise ValueError(f"{self.source}: {message}")

    def field(self, node: dict, name: str, kinds, where: str):
        if name not in node or not isinstance(node[name], kinds):
            self.fail(f"corrupt metadata at {where}: missing or malformed {name!r}.")
        return node[name]

    def decode(self, node, where: str):
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.decode(item, f"{where}/{i}") for i, item in enumerate(node)]
        if not isinstance(node, dict):
            self.fail(f"corrupt metadata at {where}.")
        kind = node.get("type")
        method = getattr(self, f"_decode_{kind}", None) if isinstance(kind, str) else None
        if method is None:
            self.fail(f"corrupt metadata at {where}: unknown value type {kind!r}.")
        return method(node, where)

    def mapping(self, node, where: str) -> dict:
        if not isinstance(node, dict):
            self.fail(f"corrupt metadata at {where}: expected an object.")
        return {name: self.decode(item, f"{where}/{name}") for name, item in node.items()}

    def _decode_float(self, node, where):
        text = self.field(node, "value", str, where)
        if text not in ("nan", "inf", "-inf"):
            self.fail(f"corrupt metadata at {where}: {text!r} is not a float.")
        return float(text)

    def _decode_tuple(self, node, where):
        return tuple(self.decode(self.field(node, "items", list, where), where))

    def _decode_deque(self, node, where):
        maxlen = node.get("maxlen")
        if maxlen is not None and not isinstance(maxlen, int):
            self.fail(f"corrupt metadata at {where}: bad maxlen.")
        return deque(self.decode(self.field(node, "items", list, where), where), maxlen)

    def _decode_dict(self, node, where):
        return self.mapping(self.field(node, "items", dict, where), where)

    def _decode_dtype(self, node, where):
        name = self.field(node, "name", str, where)
        try:
            dtype = np.dtype(name)
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in _ARRAY_KINDS:
            self.fail(f"corrupt metadata at {where}: {name!r} is not a supported dtype.")
        return dtype.type if node.get("scalar_type") else dtype

    def _decode_strings(self, node, where):
        values = self.field(node, "values", list, where)
        shape = self.field(node, "shape", list, where)
        sizes_ok = all(isinstance(size, int) and size >= 0 for size in shape)
        if not (sizes_ok and all(isinstance(value, str) for value in values)) or math.prod(
            shape
        ) != len(values):
            self.fail(f"corrupt metadata at {where}: malformed strings.")
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)

    def _decode_array(self, node, where):
        key = self.field(node, "key", str, where)
        if key not in self.arrays:
            self.fail(f"the array {key!r} is missing from the archive.")
        array = self.arrays[key]
        if array.dtype.kind not in _ARRAY_KINDS:
            self.fail(f"the array {key!r} has dtype {array.dtype}, which jaxem files never hold.")
        dtype, shape = node.get("dtype"), node.get("shape")
        if array.dtype.str != dtype or list(array.shape) != shape:
            self.fail(
                f"the array {key!r} has dtype {array.dtype.str} and shape {array.shape}, "
                f"but the metadata records {dtype} and {shape}: the file was altered."
            )
        return array[()] if node.get("scalar") and array.ndim == 0 else array

    def _decode_namedtuple(self, node, where):
        name = self.field(node, "class", str, where)
        fields = self.field(node, "fields", dict, where)
        cls = self.namedtuples.get(name)
        if cls is None:
            self.fail(
                f"{where} is a {name}, which is not one of jaxem's parameter tuples; "
                "pass your own NamedTuple classes with classes=[...]."
            )
        if list(fields) != list(cls._fields):
            self.fail(
                f"{where}: the file's {name} has fields {list(fields)}, "
                f"this jaxem's has {list(cls._fields)}."
            )
        return cls(
            **{field: self.decode(item, f"{where}/{field}") for field, item in fields.items()}
        )

    def _decode_object(self, node, where):
        name = self.field(node, "class", str, where)
        cls = _object_classes().get(name)
        if cls is None:
            self.fail(f"{where} is a {name!r}, which jaxem does not load.")
        state = self.mapping(self.field(node, "state", dict, where), where)
        if not all(key.isidentifier() and not key.startswith("__") for key in state):
            self.fail(f"corrupt metadata at {where}: bad attribute names.")
        value = cls.__new__(cls)
        vars(value).update(state)
        return value

    def _decode_RandomState(self, node, where):  # the tag is the class name
        state = self.field(node, "state", dict, where)
        keys = self.decode(self.field(state, "keys", dict, where), f"{where}/keys")
        random_state = np.random.RandomState()
        try:
            random_state.set_state(
                (
                    self.field(node, "bit_generator", str, where),
                    keys,
                    self.field(state, "pos", int, where),
                    self.field(state, "has_gauss", int, where),
                    self.field(state, "cached_gaussian", (int, float), where),
                )
            )
        except (ValueError, TypeError) as error:
            self.fail(f"corrupt random state at {where}: {error}")
        return random_state


# -- the archive -----------------------------------------------------------------------------
def _source_name(source) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else "<file object>"


def _write(target, arrays: dict) -> None:
    """``np.savez`` to a file object, or to a path through a temporary file (a failed
    write leaves no half-written file under the name)."""
    if hasattr(target, "write"):
        np.savez(target, **arrays)
        return
    path = Path(target)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:  # a file object: numpy adds no extension
            np.savez(file, **arrays)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _metadata_array(kind: str, **entries) -> np.ndarray:
    from jaxem import __version__

    metadata = {
        "format": _FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "jaxem_version": __version__,
        **entries,
    }
    return np.array(json.dumps(metadata, allow_nan=False))


def _read(source) -> tuple[dict, dict, str]:
    """``(metadata, arrays, name)`` of a jaxem archive: every member is read with
    ``allow_pickle=False`` (an object array is refused before anything is unpickled)."""
    name = _source_name(source)
    file = open(source, "rb") if isinstance(source, (str, os.PathLike)) else source
    try:
        try:
            archive = np.load(file, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            with archive:
                arrays = {key: archive[key] for key in archive.files}
        except _READ_ERRORS as error:
            lines = str(error).strip().splitlines()
            reason = lines[0] if lines else type(error).__name__
            raise ValueError(
                f"{name}: not a readable jaxem .npz file ({reason}); it may be truncated, "
                "corrupt, or hold objects that would need pickle, which jaxem never loads."
            ) from error
    finally:
        if file is not source:
            file.close()
    if METADATA_KEY not in arrays:
        raise ValueError(
            f"{name}: not a jaxem file (no {METADATA_KEY!r} metadata); write one with "
            "estimator.save(path) or jaxem.save_fit(path, result)."
        )
    text = arrays.pop(METADATA_KEY)
    try:
        if text.dtype.kind != "U" or text.ndim != 0:
            raise ValueError("not a string")
        metadata = json.loads(str(text))
    except (ValueError, RecursionError) as error:
        raise ValueError(f"{name}: corrupt {METADATA_KEY!r} metadata ({error}).") from error
    if not isinstance(metadata, dict) or metadata.get("format") != _FORMAT:
        raise ValueError(f"{name}: corrupt {METADATA_KEY!r} metadata (not a jaxem format).")
    version = metadata.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(
            f"{name}: format version {version!r}, but this jaxem reads versions 1 to "
            f"{FORMAT_VERSION}; the file was written by another jaxem "
            f"({metadata.get('jaxem_version')!r}); upgrade jaxem to read it."
        )
    return metadata, arrays, name


def _check_kind_of_file(metadata: dict, kind: str, name: str) -> None:
    found = metadata.get("kind")
    if found != kind:
        loaders = {
            "estimator": "jaxem.load(path) or the estimator class's load(path)",
            "fit_result": "jaxem.load_fit(path)",
        }
        hint = f"; load it with {loaders[found]}" if found in loaders else ""
        raise ValueError(f"{name}: holds a {found!r}, not a {kind!r}{hint}.")


# -- estimators ------------------------------------------------------------------------------
def estimator_arrays(estimator) -> dict:
    """The arrays of ``estimator``'s file, metadata included, for :func:`numpy.savez`.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.
    ValueError
        If a parameter or attribute is not data (a callable ``init``, an arbitrary
        object); the message names it.
    """
    _validation.check_fitted(estimator)
    params = estimator.get_params(deep=False)
    attributes = {
        name: value
        for name, value in vars(estimator).items()
        # Online EM's running state is a session's, not the model's: not saved.
        if name not in params and name != "_online_state"
    }
    if isinstance(params.get("mesh"), jax.sharding.Mesh):
        # Devices are this machine's, not the model's: a loaded estimator uses one.
        params["mesh"] = None
    arrays: dict = {}
    encoded_params = _encode_mapping(params, "params", arrays)
    encoded_attributes = _encode_mapping(attributes, "attributes", arrays)
    arrays[METADATA_KEY] = _metadata_array(
        "estimator",
        **{"class": type(estimator).__name__},
        dtype=_fitted_float_dtype(attributes),
        params=encoded_params,
        attributes=encoded_attributes,
    )
    return arrays


def save_estimator(path, estimator) -> None:
    """Write ``estimator`` to ``path`` (a path or a binary file object)."""
    _write(path, estimator_arrays(estimator))


def load_estimator(path, cls=None):
    """The estimator saved in ``path``; an instance of ``cls`` (or any jaxem estimator).

    Raises
    ------
    ValueError
        If the file is not a jaxem estimator file, holds another class, or is
        damaged or inconsistent.
    """
    metadata, arrays, name = _read(path)
    return _estimator_from(metadata, arrays, name, cls)


def _estimator_from(metadata: dict, arrays: dict, name: str, cls):
    _check_kind_of_file(metadata, "estimator", name)
    decoder = _Decoder(name, arrays, _namedtuple_classes())
    target = _estimator_class(decoder.field(metadata, "class", str, "class"), cls, name)
    params = decoder.mapping(decoder.field(metadata, "params", dict, "params"), "params")
    unknown = set(params) - set(target._get_param_names())
    if unknown:
        decoder.fail(
            f"parameters {sorted(unknown)} are not parameters of {target.__name__} in this jaxem."
        )
    estimator = target(**params)
    attributes = decoder.field(metadata, "attributes", dict, "attributes")
    for attribute, node in attributes.items():
        if (
            not attribute.isidentifier()
            or attribute.startswith("__")
            or attribute in params
            or hasattr(target, attribute)  # methods, properties, class settings
        ):
            decoder.fail(f"{attribute!r} is not an attribute a {target.__name__} can load.")
        setattr(estimator, attribute, decoder.decode(node, f"attributes/{attribute}"))
    _check_loaded(estimator, metadata.get("dtype"), decoder)
    return estimator


def _estimator_class(stored: str, cls, name: str):
    """The class to build: ``cls`` itself, or a registered jaxem subclass of it."""
    if cls is not None and stored == cls.__name__:
        return cls
    registered = _estimator_classes().get(stored)
    if registered is None:
        raise ValueError(
            f"{name}: holds a {stored!r}, which is not a jaxem estimator"
            + (f"; load it with {stored}.load(path)." if cls is not None else ".")
        )
    if cls is not None and not issubclass(registered, cls):
        raise ValueError(
            f"{name}: holds a {stored}, not a {cls.__name__}; load it with "
            f"{stored}.load(path) or jaxem.load(path)."
        )
    return registered


def _fitted_float_dtype(attributes: dict):
    """The dtype of the public fitted float arrays (None if there are none)."""
    dtypes = {
        value.dtype
        for name, value in attributes.items()
        if name.endswith("_")
        and not name.startswith("_")
        and isinstance(value, np.ndarray)
        and value.dtype.kind == "f"
    }
    return np.result_type(*dtypes).name if dtypes else None


def _check_loaded(estimator, dtype, decoder: _Decoder) -> None:
    """The loaded arrays fit together: shapes from the component and feature counts,
    one float dtype as recorded."""
    attributes = vars(estimator)
    if dtype != _fitted_float_dtype(attributes):
        decoder.fail(
            f"the metadata records dtype {dtype!r}, the arrays are "
            f"{_fitted_float_dtype(attributes)!r}: the file was altered."
        )
    try:
        n_components = estimator._n_components_fitted()
    except NotImplementedError:  # the HMMs: their parameter is the fitted count
        n_components = estimator.n_components
    except (AttributeError, TypeError, IndexError) as error:
        decoder.fail(f"a fitted attribute is missing or malformed ({error}).")
    # CategoricalHMM's n_features (its symbols) is a parameter; the other HMMs' an attribute.
    n_features = getattr(estimator, "n_features_in_", getattr(estimator, "n_features", None))
    sizes = {"K": n_components, "D": n_features}
    own_only = {name: "own" for name in getattr(estimator, "_own_shapes", ())}
    for attribute, rule in {**_SHAPES, **own_only}.items():
        if attribute not in attributes or attributes[attribute] is None or n_features is None:
            continue  # None: not fitted that way (an HMM whose emissions are not centred)
        value = np.asarray(attributes[attribute])
        try:
            if rule == "covars":  # hmmlearn accepts two layouts; the family checks them
                family = estimator._family()
                family.compact_covariances(value, n_components, n_features, attribute)
                continue
            if rule == "noise":
                expected = () if value.ndim == 0 else (n_features,)
            elif rule == "layout":
                expected = tuple(estimator._family().layout_shape(n_components, n_features))
            elif rule == "dof":  # one per component, unless the estimator says otherwise
                own = getattr(estimator, "_layout_shape", None)
                own = own(attribute, n_components, n_features) if own else None
                expected = (n_components,) if own is None else tuple(own)
            elif rule == "own":
                expected = tuple(estimator._layout_shape(attribute, n_components, n_features))
            else:
                expected = tuple(sizes[size] for size in rule)
        except (ValueError, TypeError) as error:  # e.g. an altered covariance_type
            decoder.fail(f"{attribute} does not fit the saved parameters: {error}")
        if value.shape != expected:
            decoder.fail(
                f"{attribute} has shape {value.shape}, but {n_components} components and "
                f"{n_features} features need {expected}: the file was altered or mixes fits."
            )


# -- fit results -----------------------------------------------------------------------------
def save_fit(path, result) -> None:
    """Write a :class:`jaxem.FitResult` to ``path``, a ``.npz`` file without pickle.

    The parameters' pytree is saved leaf by leaf with the names of its NamedTuple
    classes (and their fields), which :func:`load_fit` looks up among jaxem's own.

    Parameters
    ----------
    path : str, path-like or binary file object
    result : FitResult
        From :func:`jaxem.fit`.

    Raises
    ------
    TypeError
        If ``result`` is not a :class:`jaxem.FitResult`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import jax
    >>> import jaxem
    >>> X = jax.random.normal(jax.random.key(0), (100, 2))
    >>> model = jaxem.mixture(jaxem.gaussian("diag"), n_components=2)
    >>> result = jaxem.fit(model, X, key=jax.random.key(1), n_restarts=4)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "fit.npz"
    >>> jaxem.save_fit(path, result)
    >>> loaded = jaxem.load_fit(path)
    >>> type(loaded.params).__name__, loaded.log_likelihood == result.log_likelihood
    ('MixtureParams', True)
    """
    if not isinstance(result, engine.FitResult):
        raise TypeError(f"save_fit saves a jaxem.FitResult, got a {type(result).__name__}.")
    arrays: dict = {}
    value = _encode(jax.device_get(result), "value", arrays)
    arrays[METADATA_KEY] = _metadata_array("fit_result", value=value)
    _write(path, arrays)


def load_fit(path, classes=()):
    """The :class:`jaxem.FitResult` saved by :func:`save_fit`.

    Parameters
    ----------
    path : str, path-like or binary file object
    classes : iterable of NamedTuple classes, optional
        Parameter classes of your own models, matched by class name (jaxem's own
        are known).

    Returns
    -------
    FitResult
        Its arrays are numpy arrays of the saved dtypes; its pytree has the saved
        NamedTuple classes.

    Raises
    ------
    ValueError
        If the file is not a saved fit result, is damaged, or names a parameter
        class that is neither jaxem's nor in ``classes``.
    """
    metadata, arrays, name = _read(path)
    return _fit_from(metadata, arrays, name, classes)


def _fit_from(metadata: dict, arrays: dict, name: str, classes):
    _check_kind_of_file(metadata, "fit_result", name)
    namedtuples = {**_namedtuple_classes(), **{cls.__name__: cls for cls in classes}}
    decoder = _Decoder(name, arrays, namedtuples)
    result = decoder.decode(decoder.field(metadata, "value", dict, "value"), "value")
    if not isinstance(result, engine.FitResult):
        decoder.fail(f"holds a {type(result).__name__}, not a FitResult.")
    return result


def load(path, classes=()):
    """Whatever jaxem saved in ``path``: an estimator or a :class:`jaxem.FitResult`.

    Parameters
    ----------
    path : str, path-like or binary file object
        Written by ``estimator.save``, :func:`jaxem.save_fit`, or ``jaxem fit
        --output FILE.npz``.
    classes : iterable of NamedTuple classes, optional
        For a fit result of your own model: its parameter classes.

    Returns
    -------
    estimator or FitResult
        An instance of the saved class (chosen among jaxem's estimators by name).

    Raises
    ------
    ValueError
        If the file is not a jaxem file, or is damaged or inconsistent.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> import jaxem
    >>> X = np.array([[1.0, 2.0], [1.0, 4.0], [1.0, 0.0], [10.0, 2.0], [10.0, 4.0]])
    >>> km = jaxem.KMeans(n_clusters=2, n_init=2, random_state=0).fit(X)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "km.npz"
    >>> km.save(path)
    >>> loaded = jaxem.load(path)
    >>> type(loaded).__name__, bool(np.all(loaded.predict(X) == km.predict(X)))
    ('KMeans', True)
    """
    metadata, arrays, name = _read(path)
    if metadata.get("kind") == "fit_result":
        return _fit_from(metadata, arrays, name, classes)
    return _estimator_from(metadata, arrays, name, None)

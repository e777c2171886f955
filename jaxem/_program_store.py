"""The engine's program store: traced and lowered programs kept on disk.

JAX's persistent compilation cache saves the XLA compile of a program, but every new
process still traces the Python code and lowers it to StableHLO before it can look the
compile up, and for jaxem's programs (a vmapped ``lax.while_loop`` around a model's
E- and M-steps, its initialisation and seeding) that costs 0.1-1 s per program, most
of the time to a first answer once the cache is warm. This module keeps each program
as a :mod:`jax.export` artifact beside that cache: a warm process reads it, skips
tracing and lowering, and its compile is a cache hit.

Only :mod:`jaxem.engine` calls it, and only once :func:`jaxem.enable_compilation_cache`
has given it a folder; otherwise :func:`call` is the plain ``jax.jit`` call.

An entry is keyed by everything that decides the traced program: the program's name,
its static arguments (a model's compared dataclass fields, as its ``__eq__``), the
inputs' tree structure, shapes, dtypes and weak types, the compiler options, JAX's and
jaxlib's versions, the backend, the 64-bit flag and a hash of jaxem's own source files
(so editing jaxem never reuses a stale program). Files hold the StableHLO artifact
(``jax.export``'s flatbuffer) and a JSON description of the output's pytree; loading
never unpickles, and a file that cannot be read is written again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

_PACKAGE = Path(__file__).resolve().parent

#: Where programs are stored; None: the store is off (the default).
_folder: Path | None = None
#: In-process memo: signature -> (exported program, output skeleton). It holds no compiled
#: executable: those live in the cache of :func:`_runner`'s ``jax.jit``, so that
#: ``jax.clear_caches()`` frees them as it frees every other program's.
_loaded: dict[tuple, tuple[Any, Any]] = {}
#: Memo value of a program whose output cannot be described (see _skeleton).
_NOT_STORABLE = object()
#: Counters for tests and benchmarks: entries (programs and parameter shapes) written,
#: and read back from disk.
counts = {"exported": 0, "loaded": 0}


def use_folder(folder) -> Path | None:
    """Store programs in ``folder`` (None turns the store off); returns the previous one."""
    global _folder
    previous = _folder
    _folder = None if folder is None else Path(folder)
    if _folder is not None:
        _folder.mkdir(parents=True, exist_ok=True)
    _loaded.clear()
    return previous


def folder() -> Path | None:
    """The folder programs are stored in, or None when the store is off."""
    return _folder


def forget_loaded() -> None:
    """Drop the programs loaded in this process, and their executables (they load
    again when next called)."""
    _loaded.clear()
    _runner.cache_clear()


def call(
    name: str,
    jitted: Callable,
    function: Callable,
    model,
    args: tuple,
    statics: dict,
    compiler_options: dict | None = None,
):
    """``jitted(model, *args, **statics)``, through the store when it is on.

    ``function`` is the undecorated body of ``jitted`` (``jitted`` is ``jax.jit(function,
    static_argnames=("model", *statics), compiler_options=compiler_options)``).
    Inside a trace (an argument is a tracer) the store is bypassed: the program is part
    of the caller's.
    """
    leaves, in_tree = jax.tree.flatten(args)
    if _folder is None or any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return jitted(model, *args, **statics)
    leaves = [leaf if hasattr(leaf, "dtype") else np.asarray(leaf) for leaf in leaves]
    key_impls = tuple(_key_impl(leaf) for leaf in leaves)
    avals = tuple(
        (tuple(np.shape(leaf)), str(leaf.dtype), bool(getattr(leaf, "weak_type", False)))
        for leaf in leaves
    )
    signature = (
        name,
        _identity(model),
        tuple(sorted((k, _identity(v)) for k, v in statics.items())),
        str(in_tree),
        avals,
        key_impls,
        _options_key(compiler_options),
    )
    entry = _loaded.get(signature)
    if entry is None:
        bound = functools.partial(function, model)
        entry = _load_or_export(
            signature, bound, in_tree, statics, key_impls, leaves, compiler_options
        )
        _loaded[signature] = entry
    if entry is _NOT_STORABLE:  # an output the JSON description cannot hold
        return jitted(model, *args, **statics)
    exported, skeleton = entry
    flat = [jax.random.key_data(leaf) if impl else leaf for leaf, impl in zip(leaves, key_impls)]
    outputs = _runner(_options_key(compiler_options))(exported, *flat)
    return _rebuild(skeleton, outputs)


def _identity(value) -> str:
    """What a static argument contributes to the program, as text: a dataclass's compared
    fields only, as in its ``__eq__`` (``compare=False`` fields are array inputs of the
    program, like a mixture's ``n_components`` within its padded size)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ", ".join(
            f"{field.name}={_identity(getattr(value, field.name))}"
            for field in dataclasses.fields(value)
            if field.compare
        )
        return f"{type(value).__module__}.{type(value).__qualname__}({fields})"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__}({', '.join(_identity(item) for item in value)})"
    return repr(value)


def shapes(name: str, model, specs, compute: Callable):
    """``compute()`` (a ``jax.eval_shape`` of ``model`` on ``specs``, a pytree of
    ``jax.ShapeDtypeStruct``), kept on disk as JSON when the store is on, so a new process
    does not trace the model again to learn the shapes of its parameters."""
    if _folder is None:
        return compute()
    leaves, tree = jax.tree.flatten(specs)
    signature = (
        name,
        _identity(model),
        str(tree),
        tuple((tuple(leaf.shape), str(leaf.dtype)) for leaf in leaves),
    )
    path = _folder / f"{name}-{_digest(signature)}.shapes.json"
    if path.exists():
        try:
            stored = json.loads(path.read_text())
            found = [
                jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))
                for shape, dtype in stored["leaves"]
            ]
            counts["loaded"] += 1
            return _rebuild(stored["skeleton"], found)
        except Exception:  # unreadable: computed and written again
            pass
    result = compute()
    out_leaves, skeleton = _described(result)
    if skeleton is not None and all(leaf.dtype.kind in "biuf" for leaf in out_leaves):
        description = {
            "skeleton": skeleton,
            "leaves": [[list(leaf.shape), str(leaf.dtype)] for leaf in out_leaves],
        }
        _write(path, json.dumps(description).encode())
        counts["exported"] += 1
    return result


def _key_impl(leaf) -> str | None:
    """The PRNG implementation of a typed key array (passed as its raw data), else None."""
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return str(jax.random.key_impl(leaf))
    return None


def _load_or_export(signature, function, in_tree, statics, key_impls, leaves, compiler_options):
    base = _folder / f"{signature[0]}-{_digest(signature)}"
    program_path, tree_path = base.with_suffix(".jaxexport"), base.with_suffix(".json")
    exported = skeleton = None
    if program_path.exists() and tree_path.exists():
        try:
            exported = jax.export.deserialize(bytearray(program_path.read_bytes()))
            skeleton = json.loads(tree_path.read_text())
            _rebuild(skeleton, range(len(exported.out_avals)))  # a valid description
            counts["loaded"] += 1
        except Exception:  # unreadable (truncated, other version): export it again
            exported = None
    if exported is None:
        exported, skeleton = _export(function, in_tree, statics, key_impls, leaves)
        if skeleton is None:
            return _NOT_STORABLE
        _write(program_path, exported.serialize())
        _write(tree_path, json.dumps(skeleton).encode())
        counts["exported"] += 1
    return exported, skeleton


def _options_key(compiler_options) -> tuple:
    return tuple(sorted((compiler_options or {}).items()))


@functools.cache
def _runner(options: tuple):
    """One ``jax.jit`` per set of compiler options, with the exported program a static
    argument (``Exported`` is a frozen, hashable dataclass): its compiled executables are
    kept in JAX's own cache."""
    return jax.jit(
        lambda exported, *flat: exported.call(*flat),
        static_argnums=0,
        compiler_options=dict(options) or None,
    )


def _export(function, in_tree, statics, key_impls, leaves):
    """Trace and lower ``function`` with flat inputs (key arrays as raw data) and flat
    outputs; returns the artifact and the output's skeleton (None if not storable)."""
    found = {}

    def flat(*flat_leaves):
        restored = [
            jax.random.wrap_key_data(leaf, impl=impl) if impl else leaf
            for leaf, impl in zip(flat_leaves, key_impls)
        ]
        outputs = function(*jax.tree.unflatten(in_tree, restored), **statics)
        out_leaves, found["skeleton"] = _described(outputs)
        return out_leaves

    specs = [
        jax.ShapeDtypeStruct(np.shape(data), data.dtype)
        for data in (
            jax.random.key_data(leaf) if impl else leaf for leaf, impl in zip(leaves, key_impls)
        )
    ]
    exported = jax.export.export(jax.jit(flat))(*specs)
    return exported, found["skeleton"]


def _digest(signature) -> str:
    """File name part for an entry: its signature with the environment, hashed."""
    return hashlib.sha256(repr((signature, _environment())).encode()).hexdigest()[:40]


def _environment() -> tuple:
    return (
        jax.__version__,
        jax.lib.__version__ if hasattr(jax.lib, "__version__") else "",
        jax.default_backend(),
        jax.devices()[0].device_kind,
        bool(jax.config.jax_enable_x64),
        _source_hash(),
    )


_source_digest: str | None = None


def _source_hash() -> str:
    """Hash of every jaxem source file (names and contents), computed once."""
    global _source_digest
    if _source_digest is None:
        digest = hashlib.sha256()
        for path in sorted(_PACKAGE.rglob("*.py")):
            digest.update(str(path.relative_to(_PACKAGE)).encode())
            digest.update(path.read_bytes())
        _source_digest = digest.hexdigest()
    return _source_digest


# -- the output's pytree as JSON -----------------------------------------------------------
def _described(tree):
    """``(leaves, skeleton)`` of a pytree: its leaves and the JSON form of its structure
    (None when :func:`_skeleton` cannot describe it)."""
    leaves, structure = jax.tree.flatten(tree)
    return leaves, _skeleton(jax.tree.unflatten(structure, range(len(leaves))))


def _skeleton(tree):
    """JSON form of a pytree whose leaves are their flat indices; None when it holds a node
    other than tuple, list, dict (string keys), None or a module-level NamedTuple."""
    if tree is None:
        return {"none": True}
    if isinstance(tree, int):
        return {"leaf": tree}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        cls = type(tree)
        if "<locals>" in cls.__qualname__:
            return None
        children = [_skeleton(child) for child in tree]
        if any(child is None for child in children):
            return None
        return {"namedtuple": f"{cls.__module__}:{cls.__qualname__}", "children": children}
    if type(tree) in (tuple, list):
        children = [_skeleton(child) for child in tree]
        if any(child is None for child in children):
            return None
        return {type(tree).__name__: children}
    if type(tree) is dict and all(isinstance(k, str) for k in tree):
        children = {k: _skeleton(v) for k, v in tree.items()}
        if any(child is None for child in children.values()):
            return None
        return {"dict": children}
    return None


def _rebuild(skeleton, leaves):
    if "leaf" in skeleton:
        return leaves[skeleton["leaf"]]
    if "none" in skeleton:
        return None
    if "namedtuple" in skeleton:
        cls = _named_tuple_class(skeleton["namedtuple"])
        return cls(*(_rebuild(child, leaves) for child in skeleton["children"]))
    if "tuple" in skeleton:
        return tuple(_rebuild(child, leaves) for child in skeleton["tuple"])
    if "list" in skeleton:
        return [_rebuild(child, leaves) for child in skeleton["list"]]
    return {k: _rebuild(v, leaves) for k, v in skeleton["dict"].items()}


def _named_tuple_class(reference: str):
    """The NamedTuple class named ``module:qualname``: from jaxem, or from a module the
    process has already imported (a description never makes it import anything else)."""
    module_name, _, qualname = reference.partition(":")
    if module_name in sys.modules:
        target: Any = sys.modules[module_name]
    elif module_name == "jaxem" or module_name.startswith("jaxem."):
        target = importlib.import_module(module_name)
    else:
        raise ValueError(f"stored program names a class of a module not imported: {reference!r}")
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if not (isinstance(target, type) and issubclass(target, tuple) and hasattr(target, "_fields")):
        raise ValueError(f"stored program names {reference!r}, which is not a NamedTuple")
    return target


def _write(path: Path, data: bytes) -> None:
    """Write atomically: a concurrent reader sees the old file or the whole new one."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

"""Files for the command line: reading CSV with a header, ``.npy`` and ``.npz``;
writing a fit's arrays as ``.npz`` or ``.json``.

Every problem with the user's files becomes a :class:`DataError` (input) or an
:class:`OutputError` (output) whose message is one line fit for
``jaxem: error: ...``; anything else (a bug) propagates. That includes files too
large to read: beyond :data:`MAX_COLUMNS` columns, or an ``.npy`` header (alone
or in an ``.npz``) declaring more than the memory available, checked from the
header before numpy allocates the array.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import os
import tokenize
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "DataError",
    "OutputError",
    "Dataset",
    "load",
    "load_faithful",
    "check_finite",
    "check_output_path",
    "save",
    "json_value",
    "EXTENSIONS",
    "OUTPUT_EXTENSIONS",
    "MAX_COLUMNS",
]

#: File name endings :func:`load` understands.
EXTENSIONS = (".csv", ".npy", ".npz")
#: File name endings :func:`save` writes.
OUTPUT_EXTENSIONS = (".npz", ".json")
#: Most columns :func:`load` reads. A Gaussian mixture over d features keeps a d x d
#: covariance per component (full, the default): at 100,000 features that is 40 GB in
#: float32 for each component and restart, beyond any one machine. Tables that wide
#: are mostly samples laid out as columns.
MAX_COLUMNS = 100_000


class DataError(ValueError):
    """The data file is missing, unreadable or not a finite numeric table."""


class OutputError(ValueError):
    """The output file has an unknown type or cannot be written."""


class Dataset(NamedTuple):
    """A numeric table and where it came from.

    Attributes
    ----------
    x : (n_samples, n_features) float64 array; for an ``.npy`` too large to read
        whole (:func:`stream_threshold`), a read-only ``numpy.memmap`` of the file's
        own numeric dtype, which the fit streams
    feature_names : one name per column (the CSV header, else ``x0, x1, ...``)
    source : human-readable origin, e.g. the path and the ``.npz`` key
    """

    x: np.ndarray
    feature_names: tuple[str, ...]
    source: str


def load(path, *, key: str | None = None, delimiter: str = ",", header: bool = True) -> Dataset:
    """Read a numeric table from a CSV, ``.npy`` or ``.npz`` file.

    Parameters
    ----------
    path : str or Path
        The file; its extension (case-insensitive) selects the format.
    key : str, optional
        Array to read from an ``.npz`` file; default ``"X"``, or the only array.
    delimiter : str
        CSV field separator.
    header : bool
        Whether the CSV's first line holds column names.

    Returns
    -------
    Dataset
        float64 data of shape ``(n_samples, n_features)``; a 1-D array is read as
        one feature. Values are checked to be finite and the table non-empty.

    Raises
    ------
    DataError
        With a one-line message, for anything wrong with the file or its contents,
        and for a file too large: more than :data:`MAX_COLUMNS` columns, an
        ``.npy`` header declaring an array (plus its float64 copy) larger than
        the memory available, or a read that runs out of memory.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "d.csv"
    >>> _ = path.write_text("a,b\\n1,2\\n3,4\\n")
    >>> data = load(path)
    >>> data.x.shape, data.feature_names
    ((2, 2), ('a', 'b'))
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if key is not None and suffix != ".npz":
        raise DataError(f"--key applies to .npz files only, not {path.name!r}.")
    if suffix not in EXTENSIONS:
        raise DataError(
            f"{path}: unknown file type {path.suffix or '(no extension)'!r}; "
            f"expected one of {', '.join(EXTENSIONS)}."
        )
    if not path.exists():
        raise DataError(f"{path}: no such file.")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a data file.")
    try:
        if suffix == ".csv":
            return _load_csv(path, delimiter, header)
        _check_magic(path, suffix)
        if suffix == ".npy":
            with open(path, "rb") as file:
                needed = _check_declared(file, str(path), streamable=True)
            if needed > stream_threshold():
                return _mapped_table(path)
            try:
                array = np.load(path, allow_pickle=False)
            except (ValueError, EOFError) as error:  # bad header, truncated, object dtype
                raise DataError(
                    f"{path}: not a readable .npy file ({_first_line(error)})."
                ) from error
            return _table(array, None, str(path))
        return _load_npz(path, key)
    except OSError as error:  # permissions, I/O errors
        raise DataError(f"{path}: cannot read: {error.strerror or error}.") from error
    except MemoryError as error:  # numpy raises it before allocating; nothing is lost
        raise DataError(
            f"{path}: too large for the memory available; "
            "use a sample of its rows, or a machine with more memory."
        ) from error


def stream_threshold() -> int:
    """Bytes (an ``.npy`` array plus its float64 copy) above which :func:`load` maps
    the file instead of reading it, so that the fit streams it: ``$JAXEM_STREAM_BYTES``
    if set, else a quarter of the memory available."""
    explicit = os.environ.get("JAXEM_STREAM_BYTES", "").strip()
    if explicit:
        try:
            return int(explicit)
        except ValueError:
            raise DataError(
                f"JAXEM_STREAM_BYTES must be a number of bytes, got {explicit!r}."
            ) from None
    available = _available_memory()
    return available // 4 if available is not None else 1 << 62


#: Rows checked at a time for non-finite values in a memory-mapped file.
_CHECK_ROWS = 1 << 18


def _mapped_table(path: Path) -> Dataset:
    """An ``.npy`` too large to read whole, memory-mapped (read-only, never loaded);
    checked block by block to be a finite numeric table."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable .npy file ({_first_line(error)}).") from error
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: holds {array.dtype} values, not numbers.")
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2 or array.shape[0] == 0:
        raise DataError(f"{path}: expected a non-empty 2-D table, got shape {array.shape}.")
    for start in range(0, array.shape[0], _CHECK_ROWS):
        block = np.asarray(array[start : start + _CHECK_ROWS])
        try:
            check_finite(block, str(path))
        except DataError:
            bad = np.argwhere(~np.isfinite(block))[0]
            raise DataError(
                f"{path}: a non-finite value (NaN or inf) at row {start + int(bad[0]) + 1}, "
                f"column {int(bad[1]) + 1}; remove or impute it first."
            ) from None
    names = tuple(f"x{i}" for i in range(array.shape[1]))
    return Dataset(array, names, str(path))


def load_faithful() -> Dataset:
    """The Old Faithful eruptions shipped with jaxem: 272 rows × 2 features.

    ``eruptions`` is the eruption time and ``waiting`` the time to the next one,
    both in minutes (Azzalini and Bowman, 1990; R's ``datasets::faithful``).

    Examples
    --------
    >>> data = load_faithful()
    >>> data.x.shape, data.feature_names
    ((272, 2), ('eruptions', 'waiting'))
    """
    resource = importlib.resources.files("jaxem") / "data" / "faithful.csv"
    with importlib.resources.as_file(resource) as path:
        data = _load_csv(path, ",", True)
    return data._replace(source="jaxem/data/faithful.csv (shipped with jaxem)")


def check_finite(x: np.ndarray, source: str, csv_header: bool | None = None) -> None:
    """Raise :class:`DataError` naming the first NaN or infinite cell of ``x``.

    Rows and columns are counted from 1; for a CSV (``csv_header`` not None) the
    file's line number is given too.
    """
    bad = ~np.isfinite(x)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        line = "" if csv_header is None else f" (line {row + 1 + int(csv_header)})"
        raise DataError(
            f"{source}: {int(bad.sum())} non-finite value(s) (NaN or inf), the first at "
            f"row {row + 1}{line}, column {column + 1}; remove or impute them first."
        )


def _load_csv(path: Path, delimiter: str, header: bool) -> Dataset:
    with open(path, encoding="utf-8-sig", newline="") as file:
        first = file.readline()
        if not first.strip():
            raise DataError(f"{path}: empty file (expected a header row and numeric rows).")
        _check_columns(first.count(delimiter) + 1, str(path))  # before parsing any row
        names = tuple(name.strip().strip('"').strip("'") for name in first.split(delimiter))
        if header and _all_numeric(names):
            raise DataError(
                f"{path}: the first line {first.strip()!r} looks like data, not a header; "
                "add a header row or pass --no-header."
            )
        if not header:
            file.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
                array = np.loadtxt(
                    file, delimiter=delimiter, ndmin=2, dtype=np.float64, quotechar='"'
                )
        except ValueError as error:
            # numpy's row numbers are hard to map to lines; find the culprit ourselves.
            raise DataError(
                f"{path}: {_describe_bad_csv(path, delimiter, header, names) or error}"
            ) from error
    if array.size == 0:
        raise DataError(f"{path}: no data rows" + (" after the header." if header else "."))
    if header and array.shape[1] != len(names):
        raise DataError(
            f"{path}: the header names {len(names)} column(s) but the rows have {array.shape[1]}."
        )
    return _table(array, names if header else None, str(path), csv_header=header)


def _load_npz(path: Path, key: str | None) -> Dataset:
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{path}: not a readable .npz file ({_first_line(error)}).") from error
    with archive:
        keys = list(archive.files)
        if key is None:
            if "X" in keys:
                key = "X"
            elif len(keys) == 1:
                key = keys[0]
            elif not keys:
                raise DataError(f"{path}: the .npz archive holds no arrays.")
            else:
                raise DataError(
                    f"{path}: no array named 'X' among {', '.join(keys)}; choose one with --key."
                )
        elif key not in keys:
            raise DataError(
                f"{path}: no array named {key!r}; it holds {', '.join(keys) or 'no arrays'}."
            )
        source = f"{path} (array {key!r})"
        # numpy's own lookup: the member as named, else with .npy appended.
        member = key if key in archive.zip.namelist() else f"{key}.npy"
        try:
            with archive.zip.open(member) as file:
                _check_declared(file, source)
            array = archive[key]
        except DataError:  # a ValueError too, and already one line
            raise
        except ValueError as error:  # object arrays need pickle
            raise DataError(f"{path}[{key}]: {_first_line(error)}") from error
        except (zipfile.BadZipFile, zlib.error) as error:  # bad CRC, corrupted compression
            raise DataError(
                f"{source}: corrupted in the archive ({_first_line(error)})."
            ) from error
    return _table(array, None, source)


def _table(array: np.ndarray, names, source: str, csv_header: bool | None = None) -> Dataset:
    """Check a loaded array is a non-empty finite numeric table; make it float64 2-D."""
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    ):
        raise DataError(f"{source}: expected numbers, got an array of dtype {array.dtype}.")
    if np.iscomplexobj(array):
        raise DataError(f"{source}: complex numbers are not supported.")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise DataError(
            f"{source}: expected a 2-D table (n_samples, n_features), got shape {array.shape}."
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{source}: no data (shape {array.shape}).")
    array = np.asarray(array, np.float64)
    check_finite(array, source, csv_header)
    if names is None:
        names = tuple(f"x{i}" for i in range(array.shape[1]))
    return Dataset(array, tuple(names), source)


def _describe_bad_csv(path: Path, delimiter: str, header: bool, names) -> str | None:
    """One line locating the first malformed row of a CSV that numpy rejected."""
    width = None
    with open(path, encoding="utf-8-sig", newline="") as file:
        for number, line in enumerate(file, start=1):
            if (header and number == 1) or not line.strip() or line.lstrip().startswith("#"):
                continue
            cells = [cell.strip().strip('"') for cell in line.rstrip("\r\n").split(delimiter)]
            width = len(cells) if width is None else width
            if len(cells) != width:
                return f"line {number} has {len(cells)} fields, earlier rows have {width}."
            for column, cell in enumerate(cells):
                try:
                    float(cell)
                except ValueError:
                    name = f" ({names[column]!r})" if header and column < len(names) else ""
                    shown = repr(cell) if cell else "an empty cell"
                    return f"line {number}, column {column + 1}{name}: {shown} is not a number."
    return None


def _check_magic(path: Path, suffix: str) -> None:
    """numpy blames unrecognised bytes on pickling; say plainly what the file is not."""
    if suffix == ".csv":
        return
    with open(path, "rb") as file:
        start = file.read(6)
    if suffix == ".npy" and start != b"\x93NUMPY":
        raise DataError(f"{path}: not a .npy file (no NumPy header; use numpy.save).")
    if suffix == ".npz" and start[:2] != b"PK":
        raise DataError(f"{path}: not a .npz file (not a zip archive; use numpy.savez).")


def _check_declared(file, source: str, *, streamable: bool = False) -> int:
    """Refuse an ``.npy`` array whose header is corrupted or declares too much.

    Reads the header only (no data, never a pickle) from ``file``, an open binary
    file at the start of the array, so that a tiny file declaring a huge shape is
    refused before numpy allocates that shape.

    Raises
    ------
    DataError
        If the header cannot be parsed, has a negative dimension, or declares an
        array that, with the float64 copy :func:`load` makes of other dtypes, needs
        more than :func:`_available_memory` (unless ``streamable``: the caller can
        read it from disk chunk by chunk); or more than :data:`MAX_COLUMNS` columns.

    Returns
    -------
    The bytes the array and its float64 copy need in memory.
    """
    try:
        version = np.lib.format.read_magic(file)
        # Versions 2.0 and 3.0 differ only in the header's encoding (latin-1 or UTF-8),
        # which matters only for the field names of structured dtypes.
        read = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read(file)
        if min(shape, default=0) < 0:  # two negatives would multiply to a valid size
            raise ValueError(f"negative dimension in shape {shape}")
    # numpy's header parser lets out each of these on corrupted bytes.
    except (ValueError, TypeError, SyntaxError, EOFError, tokenize.TokenError) as error:
        reason = error.args[0] if isinstance(error, tokenize.TokenError) else _first_line(error)
        raise DataError(
            f"{source}: not a readable .npy file (corrupted header: {reason})."
        ) from error
    _check_columns(shape[1] if len(shape) == 2 else 1, source)
    cells = math.prod(shape)
    needed = cells * dtype.itemsize + (0 if dtype == np.float64 else cells * 8)
    available = _available_memory()
    if streamable:
        data_bytes = cells * dtype.itemsize
        held = os.fstat(file.fileno()).st_size - file.tell()
        if data_bytes > held:
            raise DataError(
                f"{source}: its header declares shape {shape} {dtype} "
                f"({_size(data_bytes)}) but the file holds {_size(held)} after it; "
                "the file is truncated or its header corrupted."
            )
    elif available is not None and needed > available:
        raise DataError(
            f"{source}: its header declares shape {shape} {dtype}, which needs "
            f"{_size(needed)} of memory and {_size(available)} is available; "
            "use a sample of its rows, or a machine with more memory."
        )
    return needed


def _check_columns(columns: int, source: str) -> None:
    """Refuse tables wider than :data:`MAX_COLUMNS`, saying what to do instead."""
    if columns > MAX_COLUMNS:
        raise DataError(
            f"{source}: {columns:,} columns, more than the {MAX_COLUMNS:,} jaxem reads; "
            "if the samples are columns, transpose the table, else reduce the features "
            "first (e.g. with PCA)."
        )


def _available_memory() -> int | None:
    """Bytes of memory a new array may take, or None where unknown.

    Linux's MemAvailable counts the page cache the kernel would give back, which
    ``SC_AVPHYS_PAGES`` (free pages only) leaves out; elsewhere the physical memory
    is the bound. Neither sees a container's own memory limit.
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # given in kB
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # no sysconf (Windows) or no such name
        return None


def _size(n: int) -> str:
    """Bytes for people, ``"8,000 PB"``: integer steps, as a header's size may not
    fit a float."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if n < 10_000:
            return f"{n:,} {unit}"
        n //= 1000
    return f"{n:,} EB"


def _all_numeric(cells) -> bool:
    try:
        for cell in cells:
            float(cell)
    except ValueError:
        return False
    return True


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


# -- writing -----------------------------------------------------------------------------------


def check_output_path(path: Path) -> None:
    """Raise :class:`OutputError` unless :func:`save` can write ``path``.

    Checked before anything is fitted, so a typo costs no compile.
    """
    if path.suffix.lower() not in OUTPUT_EXTENSIONS:
        raise OutputError(
            f"--output {path}: unknown file type {path.suffix or '(no extension)'!r}; "
            "use .npz or .json."
        )
    if not path.parent.is_dir():
        raise OutputError(f"--output {path}: directory {str(path.parent)!r} does not exist.")
    if path.is_dir():
        raise OutputError(f"--output {path}: is a directory.")


def save(path: Path, arrays: dict) -> None:
    """Write named numpy arrays and scalars to ``path``, ``.npz`` or ``.json`` by its
    extension.

    JSON has one key per line, each value compact (readable and diff-friendly),
    non-finite floats as ``null``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "fit.json"
    >>> save(path, {"weights": np.array([0.25, 0.75]), "name": np.str_("full")})
    >>> print(path.read_text(), end="")
    {
     "weights": [0.25, 0.75],
     "name": "full"
    }
    """
    try:
        if path.suffix.lower() == ".npz":
            with open(path, "wb") as file:  # a file object: numpy adds no extension
                np.savez(file, **arrays)
        else:
            body = ",\n".join(
                f" {json.dumps(name)}: {json.dumps(json_value(value))}"
                for name, value in arrays.items()
            )
            path.write_text("{\n" + body + "\n}\n", encoding="utf-8")
    except OSError as error:
        raise OutputError(f"{path}: cannot write: {error.strerror or error}.") from error


def json_value(value):
    """numpy → JSON: lists and Python scalars, non-finite floats as None.

    Examples
    --------
    >>> json_value(np.array([1.5, np.nan, -np.inf])), json_value(np.str_("full"))
    ([1.5, None, None], 'full')
    """
    value = np.asarray(value)
    if value.dtype.kind == "f":
        value = np.where(np.isfinite(value), value, np.nan).astype(object)
        value[value != value] = None  # NaN is not valid JSON
    return value.tolist()

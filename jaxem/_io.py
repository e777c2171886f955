"""Files for the command line: reading CSV with a header, ``.npy`` and ``.npz``;
writing a fit's arrays as ``.npz`` or ``.json``.

Every problem with the user's files becomes a :class:`DataError` (input) or an
:class:`OutputError` (output) whose message is one line fit for
``jaxem: error: ...``; anything else (a bug) propagates.
"""

from __future__ import annotations

import importlib.resources
import json
import warnings
import zipfile
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
]

#: File name endings :func:`load` understands.
EXTENSIONS = (".csv", ".npy", ".npz")
#: File name endings :func:`save` writes.
OUTPUT_EXTENSIONS = (".npz", ".json")


class DataError(ValueError):
    """The data file is missing, unreadable or not a finite numeric table."""


class OutputError(ValueError):
    """The output file has an unknown type or cannot be written."""


class Dataset(NamedTuple):
    """A numeric table and where it came from.

    Attributes
    ----------
    x : (n_samples, n_features) float64 array
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
        With a one-line message, for anything wrong with the file or its contents.

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
        try:
            array = archive[key]
        except ValueError as error:  # object arrays need pickle
            raise DataError(f"{path}[{key}]: {_first_line(error)}") from error
    return _table(array, None, f"{path} (array {key!r})")


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

"""The ``jaxem`` command line, called in-process through :func:`jaxem.cli.main`.

Most fits use the Old Faithful data with 2 components and 16 restarts, so they
share one compiled program (jit caches across calls of equal shapes and static
arguments); error cases fail before anything is compiled.

JAX's persistent compilation cache is process-wide and checked once per process,
so in-process runs keep it off (JAXEM_NO_CACHE=1, and the config is restored
after every test); the tests of the cache itself run ``python -m jaxem`` in
subprocesses on a temporary folder, never the user's.
"""

import gc
import importlib.metadata
import io
import json
import os
import subprocess
import sys
import time
import types
import zipfile

import jax
import numpy as np
import pytest

import jaxem
from jaxem import _io, _program_store, cli
from jaxem._stream import fit_stream
from jaxem.cli import progress, report
from jaxem.cli import run as cli_run
from jaxem.engine import RestartSummary, Status
from tests.conftest import FAITHFUL

# The classic two-component optimum of Old Faithful (mean log-likelihood per sample).
FAITHFUL_BEST = -4.1554
SHARED = ["-k", "2", "--restarts", "16"]  # every fit of the Old Faithful copies uses these


_CACHE_CONFIG = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)


@pytest.fixture(autouse=True)
def no_user_cache(monkeypatch, tmp_path):
    """Keep every test away from the user's cache folder and JAX's cache settings."""
    monkeypatch.setenv("JAXEM_NO_CACHE", "1")
    monkeypatch.setenv("JAXEM_CACHE_DIR", str(tmp_path / "cache-of-this-test"))
    saved = {name: getattr(jax.config, name) for name in _CACHE_CONFIG}
    store = _program_store.folder()
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    _program_store.use_folder(store)


def run(capsys, *argv):
    """``(exit status, stdout, stderr)`` of ``jaxem argv...``."""
    status = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line_error(status, out, err, *fragments):
    assert status == 2
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("jaxem: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def faithful_files(tmp_path_factory):
    """The Old Faithful data as CSV, .npy and .npz (key X) in a temporary directory."""
    directory = tmp_path_factory.mktemp("faithful")
    x = np.loadtxt(FAITHFUL, delimiter=",", skiprows=1)
    paths = {
        "csv": directory / "faithful.csv",
        "npy": directory / "faithful.npy",
        "npz": directory / "faithful.npz",
    }
    paths["csv"].write_text(FAITHFUL.read_text())
    np.save(paths["npy"], x)
    np.savez(paths["npz"], X=x, other=x[::-1].copy())
    return paths


# -- help, version, usage -------------------------------------------------------------------


def test_version(capsys):
    status, out, _ = run(capsys, "--version")
    assert status == 0
    assert out.strip().startswith(f"jaxem {jaxem.__version__}")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--help"], ["demo", "fit", "--no-cache", "--cache-dir", "persistent", "~/.cache/jaxem"]),
        (
            ["demo", "--help"],
            ["--restarts", "--components", "--seed", "--repeats", "--progress", "--no-cache"],
        ),
        (
            ["fit", "--help"],
            [
                "FILE",
                "--covariance-type",
                "--float64",
                "--labels",
                "--key",
                "--cache-dir",
                "100,000",
            ],
        ),
    ],
)
def test_help(capsys, argv, expected):
    status, out, _ = run(capsys, *argv)
    assert status == 0
    for fragment in expected:
        assert fragment in out


# -- demo -----------------------------------------------------------------------------------


def test_demo_reports_the_fit(capsys):
    status, out, err = run(capsys, "demo", "--restarts", 16)
    assert status == 0, err
    for fragment in [
        "272",
        "eruptions, waiting",
        "Old Faithful",
        "2 components, full covariance",
        "16 restarts",
        f"mean log-likelihood per sample  {FAITHFUL_BEST}",
        "16 of 16 restarts reached the best",
        "16 converged, 0 reached max_iter, 0 non-finite",
        "iterations  min",
        "component 1  weight",
        "component 2  weight",
        "covariance",
        "compile",
        # the repeat call reuses the compiled program
        "a second identical fit (no recompilation)",
        "persistent cache off (JAXEM_NO_CACHE is set)",
    ]:
        assert fragment in out, fragment
    # The two classic clusters: short eruptions after ~54 min, long ones after ~80 min.
    assert "2.03" in out and "54.4" in out and "4.28" in out and "79.9" in out


def test_demo_repeats(capsys):
    status, out, err = run(capsys, "demo", "--restarts", 16, "--repeats", 2)
    assert status == 0, err
    assert "median of 2 identical fits after the first (no recompilation)" in out
    status, out, err = run(capsys, "demo", "--restarts", 16, "--repeats", 0)
    assert status == 0, err
    assert "repeat" not in out


def test_the_script_freezes_its_imports_and_library_calls_do_not():
    # ``jaxem`` and ``python -m jaxem`` own their process: they move the objects their
    # imports made out of the garbage collector's reach (its full collections then walk
    # only new objects). Called as a library function, main leaves the collector alone.
    before = gc.get_freeze_count()
    assert cli.main(["--version"]) == 0
    assert gc.get_freeze_count() == before
    script = (
        "import gc, runpy, sys\n"
        "sys.argv = ['jaxem', '--version']\n"
        "try:\n"
        "    runpy.run_module('jaxem', run_name='__main__')\n"
        "except SystemExit as exit_:\n"
        "    print(exit_.code, gc.get_freeze_count())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    status, frozen = done.stdout.split()[-2:]
    assert status == "0"
    assert int(frozen) > 10_000  # JAX's and scikit-learn's objects, not a handful
    (script_entry,) = [
        entry
        for entry in importlib.metadata.entry_points(group="console_scripts")
        if entry.name == "jaxem"
    ]
    assert script_entry.value == "jaxem.cli:console_main"


def _python_m_jaxem(*argv, cache_dir, no_cache=None):
    """``python -m jaxem argv...`` in a fresh process with its cache in ``cache_dir``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("JAXEM_")}
    env["JAXEM_CACHE_DIR"] = str(cache_dir)
    if no_cache is not None:
        env["JAXEM_NO_CACHE"] = no_cache
    completed = subprocess.run(
        [sys.executable, "-m", "jaxem", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    return completed.stdout


def test_persistent_cache_across_processes(tmp_path):
    # On by default: the first process compiles and fills the folder, the second loads.
    cache_dir = tmp_path / "xla"
    argv = ["demo", "--restarts", 8, "--seed", 1, "--repeats", 0]
    first = _python_m_jaxem(*argv, cache_dir=cache_dir)
    for fragment in ["272", "8 of 8 restarts reached the best", "weight", "Timing", "compile"]:
        assert fragment in first, fragment
    assert f"persistent cache {cache_dir}: 0 programs loaded" in first
    assert any(cache_dir.iterdir())
    entries = set(cache_dir.iterdir())
    second = _python_m_jaxem(*argv, cache_dir=cache_dir, no_cache="0")
    assert "programs loaded, 0 compiled and saved" in second
    assert " 0 programs loaded" not in second
    assert set(cache_dir.iterdir()) == entries


@pytest.mark.parametrize(
    "argv, no_cache, reason",
    [
        (["--no-cache", "demo"], None, "--no-cache"),
        (["demo", "--no-cache"], None, "--no-cache"),
        (["demo"], "1", "JAXEM_NO_CACHE is set"),
    ],
)
def test_cache_off_writes_nothing(capsys, monkeypatch, tmp_path, argv, no_cache, reason):
    cache_dir = tmp_path / "xla"
    monkeypatch.setenv("JAXEM_CACHE_DIR", str(cache_dir))
    if no_cache is None:
        monkeypatch.delenv("JAXEM_NO_CACHE")
    else:
        monkeypatch.setenv("JAXEM_NO_CACHE", no_cache)
    before = jax.config.jax_compilation_cache_dir
    status, out, err = run(capsys, *argv, "--restarts", 16, "--repeats", 0)
    assert status == 0, err
    assert f"persistent cache off ({reason})" in out
    assert not cache_dir.exists()
    assert jax.config.jax_compilation_cache_dir == before


def test_cache_folder_that_cannot_be_made_warns_and_goes_on(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("JAXEM_NO_CACHE")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    status, out, err = run(
        capsys, "--cache-dir", blocker / "xla", "demo", "--restarts", 16, "--repeats", 0
    )
    assert status == 0, err
    assert err.startswith("jaxem: warning: persistent compilation cache off: cannot create ")
    assert len(err.strip().splitlines()) == 1
    assert "persistent cache off (cannot create" in out


# -- fit --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["csv", "npy", "npz"])
def test_fit_each_format(capsys, tmp_path, faithful_files, kind):
    output = tmp_path / "fit.json"
    status, out, err = run(capsys, "fit", faithful_files[kind], *SHARED, "-o", output)
    assert status == 0, err
    assert f"mean log-likelihood per sample  {FAITHFUL_BEST}" in out
    assert f"wrote {output}" in out
    names = "eruptions, waiting" if kind == "csv" else "x0, x1"
    assert names in out
    saved = json.loads(output.read_text())
    assert saved["feature_names"] == names.split(", ")
    assert saved["log_likelihood"] == pytest.approx(FAITHFUL_BEST, abs=1e-4)


def test_fit_npz_key(capsys, faithful_files):
    status, out, err = run(capsys, "fit", faithful_files["npz"], "--key", "other", *SHARED)
    assert status == 0, err
    assert "(array 'other')" in out
    assert "272" in out


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_output_round_trip(capsys, tmp_path, faithful_files, suffix):
    output = tmp_path / f"fit{suffix}"
    status, _, err = run(capsys, "fit", faithful_files["csv"], *SHARED, "-o", output, "--labels")
    assert status == 0, err
    if suffix == ".npz":
        with np.load(output, allow_pickle=False) as archive:
            saved = {key: archive[key] for key in archive.files}
    else:
        saved = {key: np.asarray(value) for key, value in json.loads(output.read_text()).items()}
    n_components, n_features, n_restarts = 2, 2, 16
    weights, means = saved["weights"], saved["means"]
    covariances, chol = saved["covariances"], saved["precisions_cholesky"]
    assert weights.shape == (n_components,)
    assert weights.sum() == pytest.approx(1.0, abs=1e-5)
    assert means.shape == (n_components, n_features)
    assert covariances.shape == chol.shape == (n_components, n_features, n_features)
    for covariance, factor in zip(covariances, chol):
        np.testing.assert_allclose(covariance, covariance.T, rtol=1e-6)
        assert np.all(np.linalg.eigvalsh(covariance) > 0)
        # precision = U Uᵀ is the inverse of the covariance
        np.testing.assert_allclose(covariance @ factor @ factor.T, np.eye(2), atol=1e-3)
    # Means are in the original (uncentred) coordinates.
    np.testing.assert_allclose(np.sort(means[:, 1]), [54.48, 79.97], atol=0.05)
    assert str(saved["covariance_type"]) == "full"
    assert float(saved["log_likelihood"]) == pytest.approx(FAITHFUL_BEST, abs=1e-4)
    assert bool(saved["converged"])
    assert int(saved["n_iter"]) >= 1
    for key in ("restart_log_likelihood", "restart_n_iter", "restart_status"):
        assert saved[key].shape == (n_restarts,)
    best = int(saved["best_restart"])
    assert saved["restart_log_likelihood"][best] == pytest.approx(float(saved["log_likelihood"]))
    assert saved["restart_n_iter"][best] == int(saved["n_iter"])
    assert list(saved["status_names"]) == ["running", "converged", "max_iter", "non_finite"]
    assert set(saved["restart_status"].tolist()) <= {jaxem.CONVERGED, jaxem.MAX_ITER}
    labels = saved["labels"]
    assert labels.shape == (272,)
    assert set(labels.tolist()) == {0, 1}
    # The heavier component holds the majority of rows.
    assert np.bincount(labels)[np.argmax(weights)] > 136


def test_output_without_labels(capsys, tmp_path, faithful_files):
    output = tmp_path / "fit.npz"
    status, _, err = run(capsys, "fit", faithful_files["npy"], *SHARED, "-o", output)
    assert status == 0, err
    with np.load(output) as archive:
        assert "labels" not in archive.files
        assert "weights" in archive.files


@pytest.mark.parametrize(
    "covariance_type, fragments",
    [
        ("diag", ["diag covariance", "variance"]),
        ("spherical", ["spherical covariance", "one variance shared by all features"]),
    ],
)
def test_fit_diagonal_covariances(capsys, tmp_path, faithful_files, covariance_type, fragments):
    output = tmp_path / "fit.npz"
    status, out, err = run(
        capsys,
        "fit",
        faithful_files["csv"],
        *SHARED,
        "--covariance-type",
        covariance_type,
        "-o",
        output,
    )
    assert status == 0, err
    for fragment in fragments:
        assert fragment in out, fragment
    assert "covariance shared by all components" not in out
    # Two variances per component are printed, whatever the layout.
    assert out.count("    variance  ") == 2
    expected_shape = {"diag": (2, 2), "spherical": (2,)}[covariance_type]
    with np.load(output) as archive:
        assert archive["covariances"].shape == expected_shape
        assert str(archive["dtype"]) == "float32"


def test_fit_float64_tied_many_features(capsys, tmp_path):
    rng = np.random.default_rng(0)
    centers = np.repeat(np.eye(2) * 8.0, 4, axis=1)[:, :7]
    x = centers[rng.integers(2, size=120)] + rng.normal(size=(120, 7))
    path = tmp_path / "wide.npy"
    np.save(path, x)
    output = tmp_path / "wide.json"
    status, out, err = run(
        capsys,
        "fit",
        path,
        "-k",
        2,
        "--covariance-type",
        "tied",
        "--restarts",
        4,
        "--float64",
        "--init",
        "k-means++",
        "-o",
        output,
    )
    assert status == 0, err
    assert "float64" in out
    assert "covariance shared by all components" in out
    assert "diagonals shown: 7 features" in out
    saved = json.loads(output.read_text())
    assert np.asarray(saved["covariances"]).shape == (7, 7)
    assert np.asarray(saved["means"]).shape == (2, 7)
    assert saved["dtype"] == "float64"


def test_every_restart_failing_is_one_line_exit_2(capsys, tmp_path):
    # The eruptions column twice and no regularisation: every covariance is singular.
    # (Same shapes as the other fits, and reg_covar is traced: no new compile.)
    eruptions = np.loadtxt(FAITHFUL, delimiter=",", skiprows=1)[:, :1]
    path = tmp_path / "singular.npy"
    np.save(path, np.hstack([eruptions, eruptions]))
    status, out, err = run(capsys, "fit", path, *SHARED, "--reg-covar", 0)
    assert_one_line_error(
        status, out, err, "fit failed: Fitting the mixture model failed", "All 16 restarts"
    )


# -- errors: one line on stderr, exit status 2 ---------------------------------------------


def _write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize(
    "name, content, fragments",
    [
        ("bad.csv", "a,b\n1,2\n3,x\n", ["line 3, column 2 ('b'): 'x' is not a number"]),
        ("hole.csv", "a,b\n1,2\n3,\n", ["line 3", "empty cell"]),
        ("ragged.csv", "a,b\n1,2\n3,4,5\n", ["line 3 has 3 fields"]),
        ("nan.csv", "a,b\n1,2\n3,nan\n", ["non-finite", "line 3"]),
        ("inf.csv", "a,b\n1,inf\n3,4\n", ["non-finite", "row 1"]),
        ("header.csv", "a,b\n", ["no data rows"]),
        ("empty.csv", "", ["empty file"]),
        ("noheader.csv", "1,2\n3,4\n", ["looks like data", "--no-header"]),
        ("mismatch.csv", "a,b,c\n1,2\n3,4\n", ["header names 3"]),
        ("data.txt", "a,b\n1,2\n", ["unknown file type '.txt'"]),
        ("junk.npy", "not numpy", ["not a .npy file"]),
        ("junk.npz", "not numpy", ["not a .npz file"]),
        ("cut.npy", b"\x93NUMPY garbage", ["not a readable .npy file"]),
        ("cut.npz", "PK garbage", ["not a readable .npz file"]),
        ("one.csv", "a,b\n1,2\n", ["1 row(s) is too few for 1 component", "two for any fit"]),
    ],
)
def test_bad_text_files(capsys, tmp_path, name, content, fragments):
    path = _write(tmp_path / name, content)
    assert_one_line_error(*run(capsys, "fit", path), *fragments)


@pytest.mark.parametrize(
    "array, fragments",
    [
        (np.array(["a", "b"]), ["expected numbers"]),
        (np.array([{}], dtype=object), ["Object arrays"]),
        (np.zeros((0, 3)), ["no data"]),
        (np.zeros((2, 2, 2)), ["expected a 2-D table"]),
        (np.array([[1.0, np.nan]]), ["non-finite"]),
        (np.array([[1.0 + 2.0j]]), ["complex numbers are not supported"]),
    ],
)
def test_bad_npy(capsys, tmp_path, array, fragments):
    path = tmp_path / "bad.npy"
    np.save(path, array, allow_pickle=True)
    assert_one_line_error(*run(capsys, "fit", path), *fragments)


def test_bad_npz_keys(capsys, tmp_path):
    path = tmp_path / "two.npz"
    np.savez(path, a=np.ones((3, 2)), b=np.ones((3, 2)))
    assert_one_line_error(*run(capsys, "fit", path), "no array named 'X'", "--key")
    assert_one_line_error(*run(capsys, "fit", path, "--key", "zz"), "no array named 'zz'")
    empty = tmp_path / "empty.npz"
    np.savez(empty)
    assert_one_line_error(*run(capsys, "fit", empty), "holds no arrays")


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["-k", "0"], ["--components", ">= 1"]),
        (["--restarts", "many"], ["--restarts", "expected an integer"]),
        (["--tol", "-1"], ["--tol"]),
        (["--reg-covar", "nan"], ["--reg-covar"]),
        (["--max-iter", "0"], ["--max-iter"]),
        # Gone with the move onto GaussianMixture, which sizes its chunks itself.
        (["--chunk-size", "50"], ["unrecognized arguments: --chunk-size"]),
        (["--seed", "-3"], ["--seed"]),
        (["--covariance-type", "round"], ["invalid choice"]),
        (["--init", "psychic"], ["invalid choice"]),
        (["--labels"], ["--labels needs --output"]),
        (["-o", "fit.txt"], ["unknown file type '.txt'"]),
        (["-o", "no/such/dir/fit.npz"], ["does not exist"]),
        (["--key", "X"], [".npz files only"]),
        (["-k", "300"], ["too few for 300 components"]),
    ],
)
def test_bad_options(capsys, faithful_files, extra, fragments):
    assert_one_line_error(*run(capsys, "fit", faithful_files["csv"], *extra), *fragments)


def test_output_is_a_directory(capsys, tmp_path, faithful_files):
    folder = tmp_path / "fit.npz"
    folder.mkdir()
    assert_one_line_error(
        *run(capsys, "fit", faithful_files["csv"], "-o", folder), "fit.npz: is a directory"
    )


def test_unwritable_output(capsys, monkeypatch, tmp_path, faithful_files):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    output = tmp_path / "fit.npz"
    status, out, err = run(capsys, "fit", faithful_files["csv"], *SHARED, "-o", output)
    # The summary of the fit is printed before the file is written.
    assert "mean log-likelihood per sample" in out and "wrote" not in out
    assert status == 2
    assert err == f"jaxem: error: {output}: cannot write: No space left on device.\n"


def test_unreadable_file(capsys, monkeypatch, tmp_path):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_io, "_load_csv", denied)
    path = _write(tmp_path / "locked.csv", "a\n1\n")
    assert_one_line_error(*run(capsys, "fit", path), "cannot read: Permission denied")


def test_missing_file(capsys, tmp_path):
    assert_one_line_error(*run(capsys, "fit", tmp_path / "absent.csv"), "no such file")


def test_directory_as_file(capsys, tmp_path):
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    assert_one_line_error(*run(capsys, "fit", folder), "is a directory")


# -- files too large to read, or with corrupted headers ---------------------------------------

WIDE = 1_000_000  # columns: parsed, a full covariance over them overflows in the fit


def _npy_header(shape, descr="<f8", version=(1, 0)) -> bytes:
    """An ``.npy`` header declaring ``shape`` and ``descr``, followed by no data."""
    file = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(file, header)
    else:
        np.lib.format.write_array_header_2_0(file, header)
    return file.getvalue()


def _raw_npy(text: bytes) -> bytes:
    """An ``.npy`` version 1.0 file whose header is ``text``, however broken."""
    return np.lib.format.magic(1, 0) + len(text).to_bytes(2, "little") + text


def _npy_or_npz(tmp_path, suffix, content: bytes):
    """``content`` as an ``.npy`` file, or as member ``X.npy`` of an ``.npz``."""
    path = tmp_path / f"declared{suffix}"
    if suffix == ".npy":
        path.write_bytes(content)
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("X.npy", content)
    return path


def _never(*args, **kwargs):
    raise AssertionError("read past the check")


@pytest.mark.parametrize("header", [True, False])
def test_too_many_csv_columns_refused_from_the_first_line(capsys, monkeypatch, tmp_path, header):
    names = ",".join(f"c{i}" for i in range(WIDE)) if header else ",".join(["0"] * WIDE)
    path = _write(tmp_path / "wide.csv", names + "\n" + ",".join(["1"] * WIDE) + "\n")
    monkeypatch.setattr(np, "loadtxt", _never)  # refused before any row is parsed
    argv = ["fit", path] + ([] if header else ["--no-header"])
    assert_one_line_error(*run(capsys, *argv), "1,000,000 columns", "100,000", "transpose", "PCA")


def test_column_limit_is_inclusive(tmp_path):
    width = _io.MAX_COLUMNS
    row = ",".join(["1"] * width)
    path = _write(tmp_path / "widest.csv", ",".join(f"c{i}" for i in range(width)) + f"\n{row}\n")
    assert _io.load(path).x.shape == (1, width)
    path = _write(tmp_path / "wider.csv", f"{row},1\n")
    with pytest.raises(_io.DataError, match="100,001 columns"):
        _io.load(path, header=False)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_header_declaring_more_than_memory(capsys, tmp_path, suffix):
    # 8 * 10**16 bytes, declared in a file of 128 bytes: numpy would try to allocate it.
    path = _npy_or_npz(tmp_path, suffix, _npy_header((10**12, 10**4)))
    where = f"{path} (array 'X')" if suffix == ".npz" else str(path)
    # An .npy too large for memory would be streamed from disk; this one is not there.
    fragments = (
        ("needs 80 PB of memory", "use a sample of its rows")
        if suffix == ".npz"
        else ("(80 PB) but the file holds 0 bytes", "truncated")
    )
    assert_one_line_error(
        *run(capsys, "fit", path),
        f"jaxem: error: {where}: its header declares shape (1000000000000, 10000) float64",
        *fragments,
    )


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_wide_npy_header_refused_before_reading(capsys, monkeypatch, tmp_path, version):
    monkeypatch.setattr(_io, "_available_memory", lambda: 10**12)
    path = _npy_or_npz(tmp_path, ".npy", _npy_header((3, WIDE), version=version))
    monkeypatch.setattr(np, "load", _never)
    assert_one_line_error(*run(capsys, "fit", path), "1,000,000 columns", "transpose")


def test_stream_threshold_counts_the_float64_copy(monkeypatch, tmp_path):
    """An .npy needing more than a quarter of the memory (with its float64 copy) is
    memory-mapped, to be streamed; one needing less is read."""
    path = tmp_path / "small.npy"
    np.save(path, np.ones((10, 10), np.float32))  # 400 bytes, and 800 as float64
    monkeypatch.setenv("JAXEM_STREAM_BYTES", "")
    monkeypatch.setattr(_io, "_available_memory", lambda: 4 * 1199)
    mapped = _io.load(path).x
    assert isinstance(mapped, np.memmap) and mapped.shape == (10, 10)
    monkeypatch.setattr(_io, "_available_memory", lambda: 4 * 1200)
    read = _io.load(path).x
    assert not isinstance(read, np.memmap) and read.dtype == np.float64
    monkeypatch.setenv("JAXEM_STREAM_BYTES", "many")
    with pytest.raises(_io.DataError, match="JAXEM_STREAM_BYTES must be a number of bytes"):
        _io.load(path)


def test_available_memory_is_measured():
    available = _io._available_memory()
    assert isinstance(available, int) and available > 2**20


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
@pytest.mark.parametrize(
    "content, fragment",
    [
        pytest.param(
            _raw_npy(b"{'descr': '<f8', 'shape': (2,"),
            "corrupted header: EOF in multi-line statement).",
            id="unclosed",  # tokenize.TokenError
        ),
        pytest.param(
            _raw_npy(b"{'descr': '<,f8', 'fortran_order': False, 'shape': (3,)}"),
            "invalid syntax",
            id="syntax",  # SyntaxError
        ),
        pytest.param(
            _raw_npy(b"{'descr': '<f8', 'fortran_order': False,B'shape': (3,)}"),
            "not supported between",
            id="bytes-key",  # TypeError
        ),
        pytest.param(_npy_header((-(10**6), -(10**6))), "negative dimension", id="negative-shape"),
        pytest.param(
            _raw_npy(b"{'descr': '<f8', 'fortran_order': False, 'shape': (1.5, 2)}"),
            "shape is not valid",
            id="float-shape",
        ),
        pytest.param(
            _raw_npy(b"{'descr': 'zz', 'fortran_order': False, 'shape': (3,)}"),
            "not a valid dtype descriptor",
            id="descr",
        ),
        pytest.param(
            _raw_npy(b"{'descr': '<f8', 'fortran_order': False}"), "correct keys", id="keys"
        ),
        pytest.param(
            np.lib.format.magic(1, 0) + b"\xff\x00{'descr'",
            "expected 255 bytes",
            id="truncated",
        ),
    ],
)
def test_corrupted_npy_header_is_one_line(capsys, tmp_path, suffix, content, fragment):
    path = _npy_or_npz(tmp_path, suffix, content)
    where = f"{path} (array 'X')" if suffix == ".npz" else str(path)
    start = f"jaxem: error: {where}: not a readable .npy file (corrupted header"
    assert_one_line_error(*run(capsys, "fit", path), start, fragment)


def test_npz_member_that_is_not_npy(capsys, tmp_path):
    path = tmp_path / "raw.npz"
    with zipfile.ZipFile(path, "w") as archive:  # numpy would hand back these bytes
        archive.writestr("X", b"hello")
    assert_one_line_error(*run(capsys, "fit", path), "(array 'X')", "magic string")


def _flip_deflate(data: bytes) -> bytes:
    # Bytes 60 to 120 lie in the compressed stream, past the member's 55-byte local header.
    return data[:60] + bytes(b ^ 0x5A for b in data[60:120]) + data[120:]


def _zero_crc(data: bytes) -> bytes:
    crc = data.rindex(b"PK\x01\x02") + 16  # the central directory's CRC-32, which zipfile checks
    return data[:crc] + bytes(4) + data[crc + 4 :]


@pytest.mark.parametrize(
    "corrupt, fragment",
    [(_flip_deflate, "Error -3"), (_zero_crc, "Bad CRC-32")],
    ids=["deflate", "crc"],
)
def test_corrupted_compressed_npz_member_is_one_line(capsys, tmp_path, corrupt, fragment):
    path = tmp_path / "compressed.npz"
    np.savez_compressed(path, X=np.arange(600.0).reshape(300, 2))
    path.write_bytes(corrupt(path.read_bytes()))
    assert_one_line_error(*run(capsys, "fit", path), "(array 'X'): corrupted", fragment)


def test_out_of_memory_while_reading_is_one_line(capsys, monkeypatch, tmp_path):
    def out_of_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 9 TiB")

    monkeypatch.setattr(np, "loadtxt", out_of_memory)
    path = _write(tmp_path / "big.csv", "a,b\n1,2\n3,4\n")
    assert_one_line_error(
        *run(capsys, "fit", path), "too large for the memory available", "a sample of its rows"
    )


@pytest.mark.parametrize(
    "argv, fragment",
    [
        ([], "choose a command"),
        (["frobnicate"], "invalid choice"),
        (["fit"], "required: FILE"),
        (["demo", "--restarts", "0"], "--restarts"),
    ],
)
def test_usage_errors(capsys, argv, fragment):
    assert_one_line_error(*run(capsys, *argv), fragment)


# -- pieces -----------------------------------------------------------------------------------


def test_load_csv_without_header(tmp_path):
    path = _write(tmp_path / "plain.csv", "1;2\n3;4\n5;6\n")
    data = _io.load(path, delimiter=";", header=False)
    assert data.x.shape == (3, 2)
    assert data.feature_names == ("x0", "x1")


def test_load_one_dimensional_npy_is_one_feature(tmp_path):
    path = tmp_path / "line.npy"
    np.save(path, np.arange(5.0))
    assert _io.load(path).x.shape == (5, 1)


def test_json_value_maps_non_finite_to_null():
    assert _io.json_value(np.array([1.5, np.nan, -np.inf])) == [1.5, None, None]
    assert _io.json_value(np.str_("full")) == "full"


def test_distinct_optima_groups_within_tolerance():
    optima = report.distinct_optima([-4.0, -4.0005, -4.2, -4.2, -4.0009, -5.0])
    assert optima == [(-4.0, 3), (-4.2, 2), (-5.0, 1)]


def test_restart_report_follows_status_codes():
    # A failed restart is recognised by its status alone, even with a finite value.
    status = [Status.CONVERGED, Status.NON_FINITE, Status.MAX_ITER, Status.CONVERGED]
    restarts = RestartSummary(
        log_likelihood=np.array([-4.0, -1.0, -4.0004, -5.0]),
        n_iter=np.array([7, 3, 100, 9]),
        status=np.array(status, np.int32),
        trace=np.full((4, 100), np.nan),
        params=None,
    )
    estimator = types.SimpleNamespace(restarts_=restarts, n_iter_=7)
    lines = "\n".join(report._restart_lines(types.SimpleNamespace(estimator=estimator)))
    assert "2 converged, 1 reached max_iter, 1 non-finite" in lines
    assert "2 of 4 restarts reached the best" in lines
    assert "2 landed elsewhere (1 non-finite)" in lines
    assert "-1.0000" not in lines


def test_status_names_follow_the_codes():
    assert [report.STATUS_NAMES[code] for code in Status] == [
        "running",
        "converged",
        "max_iter",
        "non_finite",
    ]


def test_progress_modes():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert progress.progress_mode(None, io.StringIO()) is None
    assert progress.progress_mode(True, io.StringIO()) == "lines"
    assert progress.progress_mode(None, Terminal()) == "tty"
    assert progress.progress_mode(False, Terminal()) is None


@pytest.mark.parametrize("mode", ["lines", "tty"])
def test_progress_display(mode):
    stream = io.StringIO()
    with progress.Progress(stream, mode, delay=0.0) as display:
        display.stage("fitting 4 restarts")
        time.sleep(0.35)
    text = stream.getvalue()
    assert "fitting 4 restarts…" in text
    if mode == "lines":
        assert text.splitlines()[-1].startswith("jaxem: done in")
    else:
        assert text.endswith("\r\x1b[K")  # the spinner line is cleared


def test_progress_shows_compiling_while_jax_compiles():
    stream = io.StringIO()
    display = progress.Progress(stream, "lines")
    meter = progress.CompileMeter()
    display._meter = meter
    display.stage("fitting")
    assert display.label() == "fitting"
    meter.started, meter.in_progress = 1, 1
    assert display.label() == "compiling"
    meter.finished, meter.in_progress = 1, 0
    assert display.label() == "fitting"


# -- files too large to read: streamed ---------------------------------------------------------
def test_npy_beyond_the_stream_threshold_is_streamed(capsys, monkeypatch, tmp_path):
    rows = _io.load_faithful().x
    path = tmp_path / "faithful.npy"
    np.save(path, rows)
    outputs, streamed_fits = {}, []

    def recording_fit_stream(*args, **kwargs):
        streamed_fits.append(args[1])
        return fit_stream(*args, **kwargs)

    monkeypatch.setattr(cli_run, "fit_stream", recording_fit_stream)
    for mode, threshold in (("read", ""), ("streamed", "1")):
        monkeypatch.setenv("JAXEM_STREAM_BYTES", threshold)
        output = tmp_path / f"{mode}.npz"
        status, out, err = run(capsys, "fit", path, *SHARED, "-o", output, "--labels")
        assert status == 0, err
        assert len(streamed_fits) == (mode == "streamed")
        with np.load(output, allow_pickle=False) as archive:
            outputs[mode] = {key: archive[key] for key in archive.files}
    read, streamed = outputs["read"], outputs["streamed"]
    order = np.argsort(read["means"][:, 0]), np.argsort(streamed["means"][:, 0])
    np.testing.assert_allclose(streamed["means"][order[1]], read["means"][order[0]], rtol=1e-4)
    np.testing.assert_allclose(streamed["bic"], read["bic"], rtol=1e-5)
    assert streamed["n_samples"] == read["n_samples"] == rows.shape[0]
    relabel = np.argsort(order[1])[order[0]]  # streamed label of each read component
    np.testing.assert_array_equal(relabel[read["labels"]], streamed["labels"])


def test_truncated_npy_is_refused_when_streamed(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("JAXEM_STREAM_BYTES", "1")
    path = tmp_path / "cut.npy"
    np.save(path, np.zeros((1000, 2)))
    path.write_bytes(path.read_bytes()[:-800])
    assert_one_line_error(
        *run(capsys, "fit", path), "its header declares shape (1000, 2) float64", "truncated"
    )


def test_non_finite_mapped_rows_are_named(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("JAXEM_STREAM_BYTES", "1")
    rows = np.zeros((50, 2))
    rows[31, 1] = np.nan
    path = tmp_path / "nan.npy"
    np.save(path, rows)
    assert_one_line_error(*run(capsys, "fit", path), "row 32, column 2", "impute")

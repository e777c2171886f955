"""Fits spread over devices and processes equal the one-device fit.

The device count is fixed when JAX starts, so the sharded fits run in a subprocess
with 4 forced host devices (``tests/scale/sharded_checks.py``), and the fit across
processes in two processes joined by ``jax.distributed`` over localhost
(``tests/scale/multiprocess_worker.py``); this file asserts what they report.
"""

import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxem
from tests.scale.shared import MULTIPROCESS_MODELS, data_sets, fit_settings

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-10


def _environment(**extra):
    environment = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **extra)
    environment.pop("XLA_FLAGS", None)
    environment.update(extra)
    return environment


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded") / "report.json"
    subprocess.run(
        [sys.executable, "-m", "tests.scale.sharded_checks", str(out)],
        # Level-0 code generation: the checks compare results and collectives (HLO),
        # which it leaves as they are; the 8 tests reading this report took 93 -> 75 s.
        env=_environment(
            XLA_FLAGS="--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0"
        ),
        cwd=ROOT,
        check=True,
        timeout=900,
    )
    return json.loads(out.read_text())


def test_the_checks_ran_on_four_devices(report):
    assert report["n_devices"] == 4


@pytest.mark.parametrize(
    "model, mesh",
    [
        ("gmm", "rows"),
        ("gmm", "restarts"),
        ("gmm", "restarts x rows"),
        ("gmm", "restarts x rows, automatic axes"),
        ("kmeans", "restarts x rows"),
        ("sem", "restarts x rows"),
        ("hmm", "restarts x rows"),
    ],
)
def test_sharded_fit_equals_the_one_device_fit(report, model, mesh):
    fit = report["fits"][f"{model} / {mesh}"]
    assert fit["params"] < TOLERANCE
    assert fit["log_likelihood"] < TOLERANCE
    assert fit["n_iter_equal"] and fit["best_equal"]


def _elements(shape_text):
    """Elements of an HLO result type such as ``f64[4,3]{1,0}`` or a tuple of them."""
    total = 0
    for dims in re.findall(r"\[([\d,]*)\]", shape_text):
        total += math.prod(int(d) for d in dims.split(",") if d)
    return total


@pytest.mark.parametrize("model", ["gmm", "kmeans", "hmm"])
def test_sharded_program_reduces_statistics_and_never_gathers_the_data(report, model):
    collectives = report["collectives"][model]
    found = collectives["found"]
    assert found.get("all-reduce"), "statistics must be merged by an all-reduce"
    # Statistics are gathered (merging Gaussian statistics is not a plain sum), data
    # never: every gathered array is smaller than one device's block of the data.
    gathered = [_elements(shape) for shape in found.get("all-gather", [])]
    assert max(gathered, default=0) < collectives["local_elements"]
    assert not found.get("all-to-all") and not found.get("collective-permute")


def test_a_device_count_and_a_sharded_array_select_the_mesh(report):
    assert report["mesh=4"] < TOLERANCE
    assert report["sharded input"] < TOLERANCE


@pytest.mark.parametrize(
    "estimator",
    [
        "GaussianMixture",
        "GaussianHMM",
        "LatentDirichletAllocation",
        "LatentDirichletAllocation online",
    ],
)
def test_estimators_take_a_mesh(report, estimator):
    assert report["estimators"][estimator] < TOLERANCE


def test_bad_meshes_are_refused_with_the_fix(report):
    errors = report["errors"]
    assert errors["too many devices"].startswith("ValueError: mesh=5 asks for 5 devices")
    assert "must be named 'rows'" in errors["bad axis"] and "jax.make_mesh" in errors["bad axis"]
    assert errors["not a mesh"].startswith("TypeError: mesh must be None, a device count")


def _free_port():
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_two_processes_end_with_the_one_process_fit(tmp_path):
    port = _free_port()
    outputs = [tmp_path / f"process{i}.npz" for i in range(2)]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests/scale/multiprocess_worker.py"),
                str(i),
                "2",
                str(port),
                str(out),
            ],
            env=_environment(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i, out in enumerate(outputs)
    ]
    logs = []
    for worker in workers:
        try:
            log, _ = worker.communicate(timeout=600)
        finally:
            worker.kill()
        logs.append(log.decode(errors="replace")[-3000:])
    assert all(worker.returncode == 0 for worker in workers), "\n".join(logs)
    first, second = (np.load(out) for out in outputs)
    with jax.enable_x64(True):
        for name, (model, x) in data_sets().items():
            if name not in MULTIPROCESS_MODELS:
                continue
            reference = jaxem.fit(model, x, **fit_settings())
            for i, leaf in enumerate(jax.tree.leaves(reference.params)):
                leaf = np.asarray(leaf)
                scale = max(np.max(np.abs(leaf)), 1e-300)
                assert np.max(np.abs(first[f"{name}/{i}"] - leaf)) / scale < TOLERANCE, name
                np.testing.assert_array_equal(first[f"{name}/{i}"], second[f"{name}/{i}"])
            assert abs(
                float(first[f"{name}/log_likelihood"]) - reference.log_likelihood
            ) < TOLERANCE * abs(reference.log_likelihood)

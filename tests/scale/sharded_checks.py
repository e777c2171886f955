"""Sharded fits against one-device fits, run with 4 forced host devices.

Run by tests/scale/test_sharding.py in a subprocess (the device count is fixed when
JAX starts): ``XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m
tests.scale.sharded_checks OUT.json``. Writes what the test asserts as JSON.
"""

import json
import re
import sys

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import jaxem  # noqa: E402
from jaxem import engine  # noqa: E402
from tests.scale.shared import data_sets, fit_settings, hmm_frames  # noqa: E402

MESHES = {
    "rows": jax.make_mesh((4,), ("rows",)),
    "restarts": jax.make_mesh((4,), ("restarts",)),
    "restarts x rows": jax.make_mesh((2, 2), ("restarts", "rows")),
    # jax.sharding.Mesh's axes are automatic, jax.make_mesh's explicit: both work.
    "restarts x rows, automatic axes": jax.sharding.Mesh(
        np.asarray(jax.devices()).reshape(2, 2), ("restarts", "rows")
    ),
}
#: Splits each model is fitted with (the 2-D mesh splits rows and restarts at once;
#: the 1-D ones alone for the Gaussian mixture, to keep the compiles few).
SPLITS = {
    "gmm": ("rows", "restarts", "restarts x rows", "restarts x rows, automatic axes"),
    "kmeans": ("restarts x rows",),
    "sem": ("restarts x rows",),
    "hmm": ("restarts x rows",),
}


def relative_difference(a, b):
    a, b = jax.tree.leaves(a), jax.tree.leaves(b)
    return max(
        float(np.max(np.abs(np.asarray(p) - np.asarray(q))) / max(np.max(np.abs(q)), 1e-300))
        for p, q in zip(a, b)
    )


def collectives(model, x, mesh):
    """Result shapes of every collective in the compiled sharded fit program."""
    settings = fit_settings()
    prepared = engine._prepare(model, x, None, None, 4, settings["chunk_size"], mesh)
    lowered = engine._sharded_fit_program.lower(
        model,
        prepared.x,
        prepared.weights,
        settings["key"],
        prepared.hyper,
        None,
        np.int32(10),
        np.float64(1e-3),
        np.int32(0),
        n_restarts=4,
        chunk_size=prepared.chunk_size,
        n_trace=128,
        mesh=mesh,
    )
    found = {}
    for line in lowered.compile().as_text().splitlines():
        match = re.search(
            r"= (.+?) (all-gather|all-reduce|all-to-all|collective-permute)(-start)?\(", line
        )
        if match:
            found.setdefault(match.group(2), []).append(match.group(1))
    local_elements = sum(leaf.size for leaf in jax.tree.leaves(prepared.x)) // mesh.shape["rows"]
    return found, local_elements


def main(out):
    report = {"n_devices": jax.device_count(), "fits": {}, "collectives": {}}
    for name, (model, x) in data_sets().items():
        reference = jaxem.fit(model, x, **fit_settings())
        for mesh_name in SPLITS[name]:
            result = jaxem.fit(model, x, mesh=MESHES[mesh_name], **fit_settings())
            report["fits"][f"{name} / {mesh_name}"] = {
                "params": relative_difference(result.restarts.params, reference.restarts.params),
                "log_likelihood": abs(result.log_likelihood - reference.log_likelihood)
                / abs(reference.log_likelihood),
                "n_iter_equal": bool(
                    np.array_equal(result.restarts.n_iter, reference.restarts.n_iter)
                ),
                "best_equal": result.best_restart == reference.best_restart,
            }
        found, local_elements = collectives(model, x, MESHES["rows"])
        report["collectives"][name] = {"found": found, "local_elements": local_elements}
    # An int mesh splits the rows; an already sharded array brings its own mesh.
    model, x = data_sets()["gmm"]
    reference = jaxem.fit(model, x, **fit_settings())
    by_count = jaxem.fit(model, x, mesh=4, **fit_settings())
    sharded = jax.device_put(
        x, jax.sharding.NamedSharding(engine.resolve_mesh(4), jax.sharding.PartitionSpec("rows"))
    )
    by_array = jaxem.fit(model, sharded, **fit_settings())  # the same program as mesh=4
    report["mesh=4"] = relative_difference(by_count.params, reference.params)
    report["sharded input"] = relative_difference(by_array.params, reference.params)
    # Estimators: the same fit with and without mesh.
    estimator_results = {}
    for make in (lambda mesh: jaxem.GaussianMixture(3, n_init=3, random_state=0, mesh=mesh),):
        one, four = make(None).fit(x), make(4).fit(x)
        name = type(one).__name__
        attribute = "means_" if hasattr(one, "means_") else "cluster_centers_"
        estimator_results[name] = relative_difference(
            getattr(four, attribute), getattr(one, attribute)
        )
    frames, lengths = hmm_frames()
    hmm_one = jaxem.GaussianHMM(2, n_iter=20, random_state=0, n_init=2)
    hmm_four = jaxem.GaussianHMM(
        2, n_iter=20, random_state=0, n_init=2, mesh=MESHES["restarts x rows"]
    )
    hmm_one.fit(frames, lengths)
    hmm_four.fit(frames, lengths)
    estimator_results["GaussianHMM"] = relative_difference(hmm_four.means_, hmm_one.means_)
    # LDA: every batch E-step's documents split over the devices (engine.statistics).
    counts = np.random.RandomState(0).poisson(0.3, (300, 200)).astype(np.float64)
    settings = dict(n_components=8, max_iter=3, random_state=0, n_init=2)
    lda_one = jaxem.LatentDirichletAllocation(**settings).fit(counts)
    lda_four = jaxem.LatentDirichletAllocation(**settings, mesh=4).fit(counts)
    estimator_results["LatentDirichletAllocation"] = relative_difference(
        lda_four.components_, lda_one.components_
    )
    # Online: every mini-batch split over the devices, by fit and by partial_fit.
    settings.update(learning_method="online", batch_size=64)
    lda_one = jaxem.LatentDirichletAllocation(**settings).fit(counts)
    lda_four = jaxem.LatentDirichletAllocation(**settings, mesh=4).fit(counts)
    partial_one = jaxem.LatentDirichletAllocation(**settings).partial_fit(counts)
    partial_four = jaxem.LatentDirichletAllocation(**settings, mesh=4).partial_fit(counts)
    estimator_results["LatentDirichletAllocation online"] = max(
        relative_difference(lda_four.components_, lda_one.components_),
        relative_difference(partial_four.components_, partial_one.components_),
    )
    report["estimators"] = estimator_results
    errors = {}
    for label, mesh in {
        "too many devices": 5,
        "bad axis": jax.make_mesh((4,), ("data",)),
        "not a mesh": "four",
    }.items():
        try:
            jaxem.fit(*data_sets()["gmm"], mesh=mesh, **fit_settings())
        except (ValueError, TypeError) as error:
            errors[label] = f"{type(error).__name__}: {error}"
    report["errors"] = errors
    with open(out, "w") as file:
        json.dump(report, file, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])

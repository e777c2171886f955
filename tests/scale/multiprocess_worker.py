"""One process of a fit spread over processes (run by tests/scale/test_sharding.py).

Usage: python multiprocess_worker.py PROCESS_ID N_PROCESSES PORT OUT_FILE

Each process takes its own block of a data set that every process can regenerate,
fits it together with the others, and writes the fitted parameters to OUT_FILE.
"""

import sys

import jax
import numpy as np

process_id, n_processes, port, out_file = (
    int(sys.argv[1]),
    int(sys.argv[2]),
    int(sys.argv[3]),
    sys.argv[4],
)
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(
    coordinator_address=f"localhost:{port}",
    num_processes=n_processes,
    process_id=process_id,
    initialization_timeout=120,
)

import jaxem  # noqa: E402
from tests.scale.shared import MULTIPROCESS_MODELS, data_sets, fit_settings  # noqa: E402

results = {}
for name, (model, x) in data_sets().items():
    if name not in MULTIPROCESS_MODELS:
        continue
    mine_rows = np.array_split(np.arange(jax.tree.leaves(x)[0].shape[0]), n_processes)[process_id]
    mine = jax.tree.map(lambda leaf, rows=mine_rows: leaf[rows], x)
    x_global, weights = jaxem.rows_across_processes(mine)
    result = jaxem.fit(model, x_global, weights=weights, **fit_settings())
    for i, leaf in enumerate(jax.tree.leaves(result.params)):
        results[f"{name}/{i}"] = np.asarray(leaf)
    results[f"{name}/log_likelihood"] = np.asarray(result.log_likelihood)
np.savez(out_file, **results)
jax.distributed.shutdown()

"""Model selection on Old Faithful: ``jaxem.select`` vs a loop of scikit-learn fits.

Both sides fit ``n_components`` 1..9 x covariance types full/tied/diag/spherical with
``n_init=32`` restarts, ``random_state=0``, on Old Faithful (``jaxem/data/faithful.csv``,
272 x 2, float64), and score every model by BIC:

* jaxem: ``jaxem.select(X, range(1, 10), n_init=32, random_state=0)``: one program per
  covariance type. Run in a fresh process with the persistent compilation cache off
  (``jax_enable_compilation_cache=False``): the first call is **cold** (tracing and
  compiling included), the second, in the same process, **warm**. Compilations inside
  each call are counted from :mod:`jax.monitoring` (``backend_compile_duration``
  events, their seconds summed), so compile time is reported apart.
* scikit-learn: ``GaussianMixture(k, covariance_type=c, n_init=32,
  random_state=0).fit(X).bic(X)`` for the 36 models, in a fresh process, timed around
  the loop.

Printed: both sides' BIC per model and their chosen models, the wall times, jaxem's
compile count and seconds, and the ratios jaxem / scikit-learn (cold and warm). The
machine's load average before and after is printed: the figures of a shared machine
move with it. Target (issue 14): cold at most 3x scikit-learn's wall time, at most 4
compilations.

Reproduce (repository root)::

    PYTHONPATH=. python benchmarks/selection.py

(Named ``selection.py``: a script named ``select.py`` would shadow the standard library's
``select`` module, which ``subprocess`` imports.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

JAXEM_CHILD = r"""
import json, time
import jax
jax.config.update("jax_enable_compilation_cache", False)
import numpy as np
import jaxem
from jaxem import _io

events = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, seconds, **kw: events.append(seconds)
    if event == "/jax/core/compile/backend_compile_duration" else None
)
X = _io.load_faithful().x
out = {}
for label in ("cold", "warm"):
    events.clear()
    start = time.perf_counter()
    found = jaxem.select(X, range(1, 10), n_init=32, random_state=0)
    out[label] = {"wall_s": time.perf_counter() - start, "compiles": len(events),
                  "compile_s": sum(events)}
out["bic"] = {f"{r['n_components']} {r['covariance_type']}": r["bic"]
              for r in found.as_records()}
out["log_likelihood"] = {f"{r['n_components']} {r['covariance_type']}": r["log_likelihood"]
                         for r in found.as_records()}
out["best"] = list(found.best_)
print(json.dumps(out))
"""

SKLEARN_CHILD = r"""
import json, time, warnings
import numpy as np
from sklearn.mixture import GaussianMixture
from jaxem import _io

X = _io.load_faithful().x
bic, log_likelihood = {}, {}
start = time.perf_counter()
for c in ("full", "tied", "diag", "spherical"):
    for k in range(1, 10):
        model = GaussianMixture(k, covariance_type=c, n_init=32, random_state=0).fit(X)
        bic[f"{k} {c}"] = model.bic(X)
        log_likelihood[f"{k} {c}"] = model.score(X) * X.shape[0]
wall = time.perf_counter() - start
best = min(bic, key=bic.get).split()
print(json.dumps({"wall_s": wall, "bic": bic, "log_likelihood": log_likelihood,
                  "best": [int(best[0]), best[1]]}))
"""


def _child(program: str) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=root, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    print(f"load average before: {os.getloadavg()}")
    jaxem_side = _child(JAXEM_CHILD)
    sklearn_side = _child(SKLEARN_CHILD)
    print(f"load average after: {os.getloadavg()}")
    print(f"{'model':<14} {'jaxem BIC':>12} {'sklearn BIC':>12} {'jaxem logL':>12} {'sk logL':>12}")
    for name, value in jaxem_side["bic"].items():
        print(
            f"{name:<14} {value:>12.3f} {sklearn_side['bic'][name]:>12.3f} "
            f"{jaxem_side['log_likelihood'][name]:>12.3f} "
            f"{sklearn_side['log_likelihood'][name]:>12.3f}"
        )
    print(f"chosen: jaxem {jaxem_side['best']}, scikit-learn {sklearn_side['best']}")
    sk = sklearn_side["wall_s"]
    for label in ("cold", "warm"):
        side = jaxem_side[label]
        print(
            f"jaxem {label}: {side['wall_s']:.2f} s ({side['compiles']} compilations, "
            f"{side['compile_s']:.2f} s compiling); scikit-learn {sk:.2f} s; "
            f"ratio jaxem/sklearn {side['wall_s'] / sk:.3f}"
        )


if __name__ == "__main__":
    main()

"""scikit-learn's and hmmlearn's own test files, run against jaxem's estimators.

At test time the peers' test files for these classes are copied out of the
installed packages into a temporary directory, their imports are pointed at
jaxem (``from sklearn.mixture import GaussianMixture`` imports jaxem's; other
functions of the same files, such as ``_log_wishart_norm``, stay the peer's), and they
run in a pytest subprocess, once with JAX's 64-bit flag off (``JAX_ENABLE_X64``
unset) and once on. See ``tests/dropin/harness.py`` for the copy and the rewrite.

Every test of those files must pass, except those in :data:`EXCLUDED`: a test is
excluded only when it cannot exercise jaxem's class at all, because it

- tests a private function of the peer (``_compute_precision_cholesky``), calls a
  private method of the peer's implementation on the estimator (``_initialize``,
  hmmlearn's ``_init`` and ``_check``) or reads a private attribute jaxem does not
  mirror, or patches the peer's internals (jaxem never calls them);
- tests another class or function of the same file (``BayesianGaussianMixture``,
  ``k_means``, ``kmeans_plusplus``).

scikit-learn's array API tests run (array-api-strict and array-api-compat are test
dependencies; the namespaces that are not installed, PyTorch and CuPy, skip as in
scikit-learn's own runs), and so does the OpenMP thread-limit test.

Private members that jaxem does mirror (``_n_parameters``, ``_covars_``) are not
excluded, nor are private functions used only to compute a reference value. A test
that fails because jaxem gets a number wrong or lacks a feature is a failure to
fix, never an exclusion. If jaxem grows one of the private members named below,
drop its entry.

Run: ``python -m pytest tests/test_dropin.py`` (marked ``slow``; ``-m "not slow"``
leaves it out). ``-k test_k_means`` or ``-k x64-off`` runs part of it; the
subprocess runs only the files and flag settings selected. On failure the message
lists the failing test ids grouped by their error. ``JAXEM_DROPIN_REPORTS=dir``
keeps each run's JSON report (every test's outcome, error lines and time).
"""

import concurrent.futures
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest

from tests.dropin import harness

_INIT = "calls hmmlearn's private _BaseHMM._init (its parameter initialisation)"
_CHECK = "calls hmmlearn's private _BaseHMM._check (its attribute validation)"
_SPARSE_HELPERS = "tests a private helper of sklearn.cluster._k_means_common, no estimator"

#: Test-id pattern (``file::[Class::]test[params]``, ``*`` matches anything) -> why it
#: cannot test jaxem. Only the three kinds of reasons of the module docstring.
EXCLUDED = {
    # sklearn/mixture/tests/test_gaussian_mixture.py
    "test_gaussian_mixture.py::test_suffstat_sk_full": (
        "tests sklearn's private _estimate_gaussian_covariances_full and "
        "_compute_precision_cholesky, no estimator"
    ),
    "test_gaussian_mixture.py::test_suffstat_sk_tied": (
        "tests sklearn's private _estimate_gaussian_covariances_tied, no estimator"
    ),
    "test_gaussian_mixture.py::test_suffstat_sk_diag": (
        "tests sklearn's private _estimate_gaussian_covariances_diag, no estimator"
    ),
    "test_gaussian_mixture.py::test_gaussian_suffstat_sk_spherical*": (
        "tests sklearn's private _estimate_gaussian_covariances_spherical, no estimator"
    ),
    "test_gaussian_mixture.py::test_compute_log_det_cholesky*": (
        "tests sklearn's private _compute_log_det_cholesky, no estimator"
    ),
    "test_gaussian_mixture.py::test_gaussian_mixture_log_probabilities": (
        "tests sklearn's private _estimate_log_gaussian_prob, no estimator"
    ),
    "test_gaussian_mixture.py::test_gaussian_mixture_precisions_init[*": (
        "calls sklearn's private BaseMixture._initialize(X, resp) and "
        "GaussianMixture._set_parameters on the estimator"
    ),
    "test_gaussian_mixture.py::test_gaussian_mixture_all_init_does_not_estimate_*": (
        "patches sklearn.mixture._gaussian_mixture._estimate_gaussian_parameters and counts "
        "its calls; jaxem's class never calls it"
    ),
    # sklearn/mixture/tests/test_bayesian_mixture.py
    "test_bayesian_mixture.py::test_log_dirichlet_norm": (
        "tests sklearn's private _log_dirichlet_norm, no estimator"
    ),
    "test_bayesian_mixture.py::test_log_wishart_norm": (
        "tests sklearn's private _log_wishart_norm, no estimator"
    ),
    # sklearn/cluster/tests/test_k_means.py
    "test_k_means.py::test_minibatch_update_consistency[*": (
        "tests sklearn's private _mini_batch_step (dense against sparse), no estimator"
    ),
    "test_k_means.py::test_minibatch_reassign[*": (
        "tests sklearn's private _mini_batch_step's reassignment, no estimator"
    ),
    "test_k_means.py::test_relocate_empty_clusters[*": (
        "tests sklearn's private _relocate_empty_clusters_dense / _sparse, no estimator"
    ),
    "test_k_means.py::test_euclidean_distance[*": _SPARSE_HELPERS,
    "test_k_means.py::test_inertia[*": _SPARSE_HELPERS,
    "test_k_means.py::test_is_same_clustering": _SPARSE_HELPERS,
    "test_k_means.py::test_k_means_function*": (
        "tests the function sklearn.cluster.k_means (which runs sklearn's KMeans), not the class"
    ),
    "test_k_means.py::test_kmeans_plusplus_*": "tests the function sklearn.cluster.kmeans_plusplus",
    "test_k_means.py::test_sample_weight_init[*": (
        "calls sklearn's private _BaseKMeans._init_centroids"
    ),
    "test_k_means.py::test_sample_weight_zero[*": (
        "calls sklearn's private _BaseKMeans._init_centroids"
    ),
    # hmmlearn/tests/test_gaussian_hmm.py
    "test_gaussian_hmm.py::*::test_bad_covariance_type[*": _CHECK,
    "test_gaussian_hmm.py::*::test_score_samples_and_decode[*": _INIT,
    "test_gaussian_hmm.py::*::test_fit_too_little_data[*": _INIT,
    "test_gaussian_hmm.py::*::test_covar_is_writeable[*": _INIT,
    # hmmlearn/tests/test_categorical_hmm.py
    "test_categorical_hmm.py::*::test_attributes[*": _CHECK,
    "test_categorical_hmm.py::*::test_fit_with_init[*": _INIT,
    "test_categorical_hmm.py::*::test__check_and_set_categorical_n_features[*": (
        "calls hmmlearn's private CategoricalHMM._check_and_set_n_features"
    ),
    # hmmlearn/tests/test_poisson_hmm.py
    "test_poisson_hmm.py::*::test_attributes[*": _CHECK,
    "test_poisson_hmm.py::*::test_fit_with_init[*": _INIT,
    # hmmlearn/tests/test_multinomial_hmm.py
    "test_multinomial_hmm.py::*::test_attributes[*": _CHECK,
    "test_multinomial_hmm.py::*::test_fit_with_init[*": _INIT,
    "test_multinomial_hmm.py::*::test__check_and_set_multinomial_n_features_n_trials[*": (
        "calls hmmlearn's private MultinomialHMM._check_and_set_n_features"
    ),
    # hmmlearn/tests/test_gmm_hmm_new.py
    "test_gmm_hmm_new.py::*::test_check_bad_covariance_type[*": _CHECK,
    "test_gmm_hmm_new.py::*::test_check_good_covariance_type[*": _CHECK,
    "test_gmm_hmm_new.py::*::test_init[*": _INIT,
    "test_gmm_hmm_new.py::*::test_fit_sparse_data[*": _INIT,
    # sklearn/decomposition/tests/test_online_lda.py
    "test_online_lda.py::test_dirichlet_expectation": (
        "tests sklearn's private Cython helpers _dirichlet_expectation_1d / _2d of "
        "sklearn.decomposition._online_lda_fast, no estimator"
    ),
}

MODES = {"x64-off": False, "x64-on": True}
TIMEOUT = float(os.environ.get("JAXEM_DROPIN_TIMEOUT", 3600))


#: mode -> future of its report, started by :func:`start_peer_runs` at collection end,
#: and "tree": the copied files they run.
_RUNS: dict = {}


def _selected_files(items) -> dict:
    """mode -> the peer files this session selected for it."""
    selected: dict = {}
    for item in items:
        if getattr(item, "originalname", None) == "test_peer_file_passes":
            params = item.callspec.params
            selected.setdefault(params["mode"], []).append(params["name"])
    return selected


def _run_mode(tree, mode, names):
    try:
        result = harness.run(tree, names, MODES[mode], TIMEOUT)
    except Exception as error:  # every file of the mode fails with it, once
        return error
    keep = os.environ.get("JAXEM_DROPIN_REPORTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        Path(keep, f"report-{mode}.json").write_text(json.dumps(result, indent=1))
        shutil.copyfile(tree.root / f"output-{mode}.txt", Path(keep, f"output-{mode}.txt"))
    return result


def start_peer_runs(items) -> None:
    """Start the subprocesses (one per mode, in turn) in the background as soon as the
    session is collected (``tests/conftest.py`` calls this), so the peers' files run
    while the rest of the suite does; each ``test_peer_file_passes`` then waits for its
    mode. Under pytest-xdist the worker that gets this file starts them from
    :func:`peer_tree` (its first test), and the other worker runs the rest."""
    selected = _selected_files(items)
    if not selected or _RUNS:
        return
    tree = _RUNS["tree"] = harness.prepare(Path(tempfile.mkdtemp(prefix="jaxem-dropin-")), EXCLUDED)
    # One after the other: the second mode reuses the first's compiled programs (the
    # harness shares a persistent compilation cache), and the rest of the suite keeps a
    # core to itself on a 2-core machine.
    pool = concurrent.futures.ThreadPoolExecutor(1)
    for mode, names in selected.items():
        _RUNS[mode] = pool.submit(_run_mode, tree, mode, names)
    pool.shutdown(wait=False)


def _remove_tree() -> None:
    """Remove the copied files and their compilation cache (tens of MB) once both modes
    have finished; a run still going (an interrupted session) keeps its folder."""
    tree = _RUNS.get("tree")
    if tree is not None and all(_RUNS[mode].done() for mode in MODES if mode in _RUNS):
        shutil.rmtree(tree.root, ignore_errors=True)


@pytest.fixture(scope="session")
def peer_tree(request):
    """The peers' test files, copied and pointed at jaxem, for this session."""
    start_peer_runs(request.session.items)
    request.addfinalizer(_remove_tree)
    return _RUNS["tree"]


@pytest.fixture(scope="session")
def peer_report(request):
    """``peer_report(mode)``: the report of that mode's subprocess (started at
    collection end, or here when the hook did not run)."""
    start_peer_runs(request.session.items)

    def report(mode):
        result = _RUNS[mode].result()
        if isinstance(result, Exception):
            raise result
        return result

    return report


def test_exclusions_are_patterns_of_known_files():
    for pattern, reason in EXCLUDED.items():
        assert pattern.partition("::")[0] in harness.PEER_FILES, pattern
        assert reason.strip(), pattern


def test_rewrite_points_the_classes_at_jaxem_and_keeps_line_numbers():
    source = (
        "from sklearn.cluster import (\n"
        "    KMeans,\n"
        "    MiniBatchKMeans as MB, k_means as KM,\n"
        ")\n"
        "from .. import hmm\n"
        "from . import normalized\n"
        "from ..utils import normalize\n"
        "def test_patch(monkeypatch):\n"
        "    from sklearn.mixture import GaussianMixture as GM\n"
        "    monkeypatch.setattr(sklearn.mixture._gaussian_mixture, '_f', None)\n"
        "    mock.patch('sklearn.cluster.KMeans.fit')\n"
    )
    rewritten, names = harness.rewrite_source(source, "hmmlearn.tests")
    lines = rewritten.splitlines()
    assert len(lines) == len(source.splitlines())
    assert lines[0] == "import jaxem; from sklearn.cluster import k_means as KM; " + (
        "from jaxem import KMeans; from jaxem import MiniBatchKMeans as MB"
    )
    assert lines[1:4] == ["", "", ""]
    assert lines[4] == "import jaxem_hmm_shim as hmm"
    assert lines[5] == "from . import normalized"  # hmmlearn's tests/__init__.py is copied
    assert lines[6] == "from hmmlearn.utils import normalize"
    assert lines[8] == "    from jaxem import GaussianMixture as GM"
    assert lines[10] == "    mock.patch('jaxem.KMeans.fit')"
    assert {"KMeans", "GaussianMixture", "hmmlearn.hmm", "jaxem.KMeans"} <= set(names)
    assert harness.patching_tests(rewritten) == {"test_patch"}


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", list(harness.PEER_FILES))
def test_peer_file_passes(name, mode, peer_tree, peer_report):
    report = peer_report(mode)
    summary = harness.file_summary(report, name)
    print(
        f"{name} [{mode}]: {summary['passed']} passed, {summary['failed']} failed, "
        f"{summary['skipped']} skipped, {summary['excluded']} excluded, "
        f"{summary['seconds']:.1f} s; whole run {report['wall_seconds']:.0f} s, "
        f"{report['crashes']} interpreter crashes"
    )
    assert not summary["collection_errors"], summary["collection_errors"]

    patching = {
        key
        for key in summary["tests"]
        if key.partition("::")[2].rpartition("::")[2].partition("[")[0] in peer_tree.patching[name]
    }
    assert not patching, (
        f"these tests patch scikit-learn or hmmlearn internals, which jaxem never calls: "
        f"exclude them with a reason in EXCLUDED, or redirect the patch: {sorted(patching)}"
    )

    used = set(report["excluded"].values())
    stale = [p for p in EXCLUDED if p.startswith(f"{name}::") and p not in used]
    if stale:
        warnings.warn(f"exclusions matching no test of {name}: {stale}", stacklevel=1)

    unfinished = (
        ""
        if report["finished"]
        else f"\nThe run did not finish: over {TIMEOUT:.0f} s (JAXEM_DROPIN_TIMEOUT) or over "
        f"{harness.MAX_CRASHES} interpreter crashes; see {peer_tree.root}/output-{mode}.txt"
    )
    assert summary["passed"], f"no test of {name} passed{unfinished}"
    assert not summary["failures"] and not unfinished, (
        f"{summary['failed']} of {name}'s own tests fail against jaxem with JAX_ENABLE_X64 "
        f"{'=1' if MODES[mode] else 'unset'} ({summary['passed']} passed, "
        f"{summary['skipped']} skipped, {summary['excluded']} excluded); by error:\n"
        + harness.describe_failures(summary["failures"])
        + unfinished
    )

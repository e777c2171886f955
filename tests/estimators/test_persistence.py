"""Saving and loading estimators and fit results: ``.npz`` files read without pickle.

Every estimator is fitted once per module on 40 small rows (few iterations); the
file tests rewrite one saved GaussianMixture file in the ways a file goes wrong.
"""

import copy
import doctest
import io
import json
import pickle
import re
import warnings
from collections import deque
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning, NotFittedError

import jaxem
from jaxem import cli
from jaxem.estimators import _persist
from jaxem.estimators._base import EMEstimator
from jaxem.estimators.hmm import ConvergenceMonitor
from tests.conftest import FAITHFUL

LENGTHS = [20, 20]
README = Path(__file__).resolve().parents[2] / "README.md"


def _gaussian(dtype=np.float32):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (20, 2)), rng.normal(5, 1, (20, 2))])
    return x.astype(dtype)


def _symbols():
    return np.random.default_rng(1).integers(3, size=(40, 1))


def _counts():
    rng = np.random.default_rng(2)
    return np.concatenate([rng.poisson(2, (20, 2)), rng.poisson(9, (20, 2))])


def _binary():
    rng = np.random.default_rng(3)
    return (rng.random((40, 3)) < np.where(np.arange(40)[:, None] < 20, 0.2, 0.8)).astype(int)


def _directions():
    x = _gaussian(np.float64) + 1.0
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _codes():
    rng = np.random.default_rng(4)
    return np.column_stack([rng.integers(2, size=40), rng.integers(4, size=40)])


def _regression():
    """Rows and a response on two lines (the estimators that take ``fit(X, y)``)."""
    x = _gaussian(np.float64)
    return x, np.where(np.arange(40) % 2 == 0, x[:, 0], -x[:, 1]) + 0.1 * x[:, 0] ** 2


#: Estimators fitted as ``fit(X, y)``: their ``predict`` takes ``X`` alone.
RESPONSES = ("RegressionMixture", "MixtureOfExperts")

#: name -> (unfitted estimator, data, lengths)
CASES = {
    "GaussianMixture": (lambda: jaxem.GaussianMixture(2, max_iter=5, random_state=0), _gaussian),
    "KMeans": (lambda: jaxem.KMeans(2, n_init=2, max_iter=5, random_state=0), _gaussian),
    "MiniBatchKMeans": (
        lambda: jaxem.MiniBatchKMeans(2, batch_size=10, max_iter=5, random_state=0),
        _gaussian,
    ),
    "GaussianHMM": (lambda: jaxem.GaussianHMM(2, n_iter=3, random_state=0), _gaussian),
    "CategoricalHMM": (lambda: jaxem.CategoricalHMM(2, n_iter=3, random_state=0), _symbols),
    "PoissonHMM": (lambda: jaxem.PoissonHMM(2, n_iter=3, random_state=0), _counts),
    "MultinomialHMM": (lambda: jaxem.MultinomialHMM(2, n_iter=3, random_state=0), _counts),
    "GMMHMM": (lambda: jaxem.GMMHMM(2, n_mix=2, n_iter=3, random_state=0), _gaussian),
    "PoissonMixture": (lambda: jaxem.PoissonMixture(2, max_iter=5, random_state=0), _counts),
    "BernoulliMixture": (lambda: jaxem.BernoulliMixture(2, max_iter=5, random_state=0), _binary),
    "StudentTMixture": (
        lambda: jaxem.StudentTMixture(2, max_iter=5, random_state=0),
        _gaussian,
    ),
    "MultinomialMixture": (
        lambda: jaxem.MultinomialMixture(2, max_iter=5, random_state=0),
        _counts,
    ),
    "CategoricalMixture": (
        lambda: jaxem.CategoricalMixture(2, max_iter=5, random_state=0),
        _codes,
    ),
    "VonMisesFisherMixture": (
        lambda: jaxem.VonMisesFisherMixture(2, max_iter=5, random_state=0),
        _directions,
    ),
    "FactorAnalysis": (lambda: jaxem.FactorAnalysis(1, max_iter=5, rotation="varimax"), _gaussian),
    "ProbabilisticPCA": (lambda: jaxem.ProbabilisticPCA(1, max_iter=5), _gaussian),
    "LatentDirichletAllocation": (
        lambda: jaxem.LatentDirichletAllocation(2, max_iter=3, random_state=0),
        _counts,
    ),
    "BayesianGaussianMixture": (
        lambda: jaxem.BayesianGaussianMixture(n_components=2, max_iter=5, random_state=0),
        _gaussian,
    ),
    "RegressionMixture": (
        lambda: jaxem.RegressionMixture(2, max_iter=5, random_state=0),
        _regression,
    ),
    "MixtureOfExperts": (
        lambda: jaxem.MixtureOfExperts(2, max_iter=5, random_state=0),
        _regression,
    ),
}
METHODS = ("predict", "predict_proba", "score_samples", "score", "transform", "decode", "bic")


def _fit(name, dtype=np.float32):
    make, data = CASES[name]
    estimator = make()
    x = data(dtype) if data is _gaussian else data()
    lengths = LENGTHS if name.endswith("HMM") else None
    if name in RESPONSES:  # the response travels where an HMM's lengths do
        x, lengths = x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the short fits are not the subject
        estimator.fit(x) if lengths is None else estimator.fit(x, lengths)
    return estimator, x, lengths


def _outputs(estimator, x, lengths):
    args = (x,) if lengths is None else (x, lengths)
    alone = type(estimator).__name__ in RESPONSES  # predict(X): no response
    return {
        name: getattr(estimator, name)(*(args[:1] if alone and name == "predict" else args))
        for name in METHODS
        if hasattr(estimator, name)
    }


def assert_identical(actual, expected, where="value"):
    """Equal values of equal types; arrays bit for bit with equal dtypes."""
    assert type(actual) is type(expected), f"{where}: {type(actual)} != {type(expected)}"
    if isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype, f"{where}: {actual.dtype} != {expected.dtype}"
        np.testing.assert_array_equal(actual, expected, err_msg=where)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), where
        for key in expected:
            assert_identical(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple, deque)):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_identical(a, e, f"{where}[{i}]")
    elif isinstance(expected, ConvergenceMonitor):
        assert_identical(vars(actual), vars(expected), f"{where}.__dict__")
    elif isinstance(expected, np.random.RandomState):
        assert_identical(actual.get_state(), expected.get_state(), f"{where}.get_state()")
    elif isinstance(expected, float) and np.isnan(expected):
        assert np.isnan(actual), where
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


@pytest.fixture(scope="module", params=list(CASES))
def fitted(request):
    return _fit(request.param)


@pytest.fixture(scope="module")
def gaussian_mixture():
    return _fit("GaussianMixture")


@pytest.fixture
def saved(gaussian_mixture, tmp_path):
    """A saved GaussianMixture file and the estimator it holds."""
    path = tmp_path / "gm.npz"
    gaussian_mixture[0].save(path)
    return path, gaussian_mixture[0]


def _rewrite(path, change):
    """Rewrite ``path`` with ``change(metadata, arrays)`` applied (a tampered copy)."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    metadata = json.loads(str(arrays.pop("__jaxem__")))
    change(metadata, arrays)
    with open(path, "wb") as file:
        np.savez(file, __jaxem__=np.array(json.dumps(metadata)), **arrays)
    return path


# -- round trips -------------------------------------------------------------------------------
def test_round_trip(fitted, tmp_path):
    estimator, x, lengths = fitted
    path = tmp_path / "model.npz"
    estimator.save(path)
    loaded = type(estimator).load(path)
    assert type(loaded) is type(estimator)
    assert_identical(loaded.get_params(deep=False), estimator.get_params(deep=False))
    # Every fitted attribute, private state included, with its dtype.
    assert_identical(vars(loaded), vars(estimator), "vars")
    assert_identical(_outputs(loaded, x, lengths), _outputs(estimator, x, lengths), "outputs")
    # The base class and the module-level loader pick the class from the file.
    assert type(jaxem.load(path)) is type(estimator)
    assert type(EMEstimator.load(path)) is type(estimator)


def test_float32_attributes_stay_float32(gaussian_mixture, tmp_path):
    estimator = gaussian_mixture[0]
    estimator.save(tmp_path / "gm.npz")
    loaded = jaxem.load(tmp_path / "gm.npz")
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert getattr(loaded, name).dtype == np.float32, name
    assert loaded._fit_offset.dtype == np.float64  # the centring offset stays exact
    with np.load(tmp_path / "gm.npz", allow_pickle=False) as archive:
        assert json.loads(str(archive["__jaxem__"]))["dtype"] == "float32"


@pytest.mark.parametrize("name", ["GaussianMixture", "KMeans"])
def test_float64_round_trip(name, x64, tmp_path):
    estimator, x, lengths = _fit(name, np.float64)
    path = tmp_path / "model.npz"
    estimator.save(path)
    loaded = jaxem.load(path)
    centres = "means_" if name == "GaussianMixture" else "cluster_centers_"
    assert getattr(loaded, centres).dtype == np.float64
    assert_identical(vars(loaded), vars(estimator), "vars")
    assert_identical(_outputs(loaded, x, lengths), _outputs(estimator, x, lengths), "outputs")


def test_file_object_round_trip(gaussian_mixture):
    estimator, x, _ = gaussian_mixture
    buffer = io.BytesIO()
    estimator.save(buffer)
    buffer.seek(0)
    np.testing.assert_array_equal(
        jaxem.GaussianMixture.load(buffer).predict(x), estimator.predict(x)
    )


def test_metadata_is_plain_json(saved):
    path, estimator = saved
    with np.load(path, allow_pickle=False) as archive:
        metadata = json.loads(str(archive["__jaxem__"]))
        assert archive["attributes/means_"].dtype == np.float32
    assert metadata["format"] == "jaxem"
    assert metadata["format_version"] == _persist.FORMAT_VERSION
    assert metadata["kind"] == "estimator"
    assert metadata["class"] == "GaussianMixture"
    assert metadata["jaxem_version"] == jaxem.__version__
    assert metadata["params"]["n_components"] == 2
    assert metadata["attributes"]["n_iter_"] == estimator.n_iter_


def test_array_parameters_and_feature_names(tmp_path):
    estimator, x, _ = _fit("KMeans")
    estimator.set_params(init=np.asarray(estimator.cluster_centers_), n_init=1)
    estimator.feature_names_in_ = np.array(["eruptions", "waiting"], dtype=object)
    estimator.save(tmp_path / "km.npz")
    loaded = jaxem.KMeans.load(tmp_path / "km.npz")
    assert_identical(loaded.get_params(deep=False), estimator.get_params(deep=False))
    assert_identical(loaded.feature_names_in_, estimator.feature_names_in_)


def test_dtype_attributes_round_trip(tmp_path):
    estimator = _fit("KMeans")[0]
    estimator._probe_dtype, estimator._probe_type = np.dtype(np.float32), np.float64
    estimator.save(tmp_path / "km.npz")
    loaded = jaxem.load(tmp_path / "km.npz")
    assert loaded._probe_dtype == np.dtype(np.float32)
    assert loaded._probe_type is np.float64


def test_random_state_instance_keeps_its_state(tmp_path):
    estimator, _, _ = _fit("GaussianMixture")
    estimator.set_params(random_state=np.random.RandomState(3))
    estimator.random_state.normal(size=5)  # a state that is not the seed's
    estimator.save(tmp_path / "gm.npz")
    loaded = jaxem.load(tmp_path / "gm.npz")
    assert_identical(loaded.random_state, estimator.random_state)
    assert_identical(loaded.sample(6), estimator.sample(6))


# -- what cannot be saved ----------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_unfitted_estimator_is_not_saved(name, tmp_path):
    with pytest.raises(NotFittedError):
        CASES[name][0]().save(tmp_path / "model.npz")
    assert not list(tmp_path.iterdir())


def test_callable_parameter_is_refused(tmp_path):
    estimator = copy.deepcopy(_fit("KMeans")[0])
    estimator.set_params(init=lambda x, n_clusters, random_state: x[:n_clusters])
    with pytest.raises(ValueError, match=r"cannot save params/init: a function is not data"):
        estimator.save(tmp_path / "km.npz")
    assert not list(tmp_path.iterdir())


# -- files that are refused --------------------------------------------------------------------
UNPICKLED = []


def _record_unpickling():
    UNPICKLED.append(True)
    return "unpickled"


class _Tripwire:
    """Unpickling this object records it: proof that a loader did or did not unpickle."""

    def __reduce__(self):
        return (_record_unpickling, ())


@pytest.mark.parametrize("member", ["attributes/means_", "extra"])
def test_object_array_is_refused_without_unpickling(saved, member):
    path, _ = saved

    def put_object(metadata, arrays):
        arrays[member] = np.array([_Tripwire()], dtype=object)

    _rewrite(path, put_object)
    UNPICKLED.clear()
    with pytest.raises(ValueError, match="pickle"):
        jaxem.GaussianMixture.load(path)
    assert UNPICKLED == []
    # The tripwire works: a loader that allowed pickle would have run it.
    with np.load(path, allow_pickle=True) as archive:
        archive[member]
    assert UNPICKLED == [True]


def test_pickle_file_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(pickle.dumps(_Tripwire()))
    UNPICKLED.clear()
    with pytest.raises(ValueError, match="not a readable jaxem .npz file"):
        jaxem.load(path)
    assert UNPICKLED == []


@pytest.mark.parametrize("keep", [0.5, 0.99, 0])
def test_truncated_file_is_refused(saved, keep):
    path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match="not a readable jaxem .npz file.*truncated"):
        jaxem.GaussianMixture.load(path)


def test_flipped_byte_is_refused(saved):
    path, estimator = saved
    data = bytearray(path.read_bytes())
    offset = data.find(estimator.means_.tobytes())  # a byte inside the means' data
    assert offset > 0
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not a readable jaxem .npz file"):
        jaxem.GaussianMixture.load(path)


def test_other_class_is_refused(saved, tmp_path):
    path, _ = saved
    with pytest.raises(ValueError, match="holds a GaussianMixture, not a KMeans"):
        jaxem.KMeans.load(path)
    with pytest.raises(ValueError, match="holds a GaussianMixture, not a GaussianHMM"):
        jaxem.GaussianHMM.load(path)
    with pytest.raises(ValueError, match="holds a 'estimator', not a 'fit_result'"):
        jaxem.load_fit(path)


@pytest.mark.parametrize("name", ["os.system", "EMEstimator", "ConvergenceMonitor"])
def test_unknown_class_is_refused(saved, name):
    path, _ = saved
    _rewrite(path, lambda metadata, arrays: metadata.update({"class": name}))
    with pytest.raises(ValueError, match=f"holds a '{name}', which is not a jaxem estimator"):
        jaxem.load(path)


def test_missing_array_is_refused(saved):
    path, _ = saved
    _rewrite(path, lambda metadata, arrays: arrays.pop("attributes/means_"))
    with pytest.raises(ValueError, match="'attributes/means_' is missing from the archive"):
        jaxem.GaussianMixture.load(path)


def test_missing_attribute_is_refused(saved):
    path, _ = saved
    _rewrite(path, lambda metadata, arrays: metadata["attributes"].pop("weights_"))
    with pytest.raises(ValueError, match="a fitted attribute is missing"):
        jaxem.GaussianMixture.load(path)


def test_file_without_metadata_is_refused(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.ones((3, 2)))
    with pytest.raises(ValueError, match="not a jaxem file"):
        jaxem.load(path)


@pytest.mark.parametrize("version", [2, 0, "1"])
def test_other_format_version_is_refused(saved, version):
    path, _ = saved
    _rewrite(path, lambda metadata, arrays: metadata.update(format_version=version))
    with pytest.raises(ValueError, match=f"format version {version!r}.*reads versions 1 to 1"):
        jaxem.load(path)


def test_tampered_shape_is_refused(saved):
    path, _ = saved

    def widen(metadata, arrays):
        arrays["attributes/means_"] = np.zeros((2, 3), np.float32)
        metadata["attributes"]["means_"]["shape"] = [2, 3]

    _rewrite(path, widen)
    message = r"means_ has shape \(2, 3\), but 2 components and 2 features need \(2, 2\)"
    with pytest.raises(ValueError, match=message):
        jaxem.GaussianMixture.load(path)


def test_tampered_hmm_covariances_are_refused(tmp_path):
    path = tmp_path / "hmm.npz"
    _fit("GaussianHMM")[0].save(path)

    def widen(metadata, arrays):
        arrays["attributes/_covars_"] = np.ones((2, 3))
        metadata["attributes"]["_covars_"]["shape"] = [2, 3]

    _rewrite(path, widen)
    with pytest.raises(ValueError, match=r"'diag' _covars_ must have shape \(2, 2\), got \(2, 3\)"):
        jaxem.GaussianHMM.load(path)


def test_altered_covariance_type_is_refused(saved):
    path, _ = saved
    _rewrite(path, lambda metadata, arrays: metadata["params"].update(covariance_type="diag"))
    with pytest.raises(ValueError, match=r"covariances_ has shape \(2, 2, 2\).*need \(2, 2\)"):
        jaxem.load(path)


def test_array_unlike_its_metadata_is_refused(saved):
    path, _ = saved
    _rewrite(path, lambda m, arrays: arrays.update({"attributes/means_": np.zeros((2, 2))}))
    with pytest.raises(ValueError, match="'attributes/means_' has dtype <f8.*records <f4"):
        jaxem.GaussianMixture.load(path)


@pytest.mark.parametrize(
    "attribute", ["predict", "__class__", "_precision_attribute", "n_components"]
)
def test_attribute_names_are_checked(saved, attribute):
    path, _ = saved
    _rewrite(path, lambda metadata, arrays: metadata["attributes"].update({attribute: 1}))
    with pytest.raises(ValueError, match="is not an attribute a GaussianMixture can load"):
        jaxem.GaussianMixture.load(path)


def test_unknown_parameter_is_refused(saved):
    path, _ = saved
    _rewrite(path, lambda metadata, arrays: metadata["params"].update(command="rm -rf"))
    with pytest.raises(ValueError, match=r"\['command'\] are not parameters of GaussianMixture"):
        jaxem.load(path)


def test_unknown_value_type_is_refused(saved):
    path, _ = saved
    tagged = {"type": "eval", "source": "__import__('os')"}
    _rewrite(path, lambda metadata, arrays: metadata["attributes"].update(n_iter_=tagged))
    with pytest.raises(ValueError, match="unknown value type 'eval'"):
        jaxem.load(path)


# -- fit results ---------------------------------------------------------------------------------
def test_fit_result_round_trip(tmp_path):
    model = jaxem.mixture(jaxem.gaussian("full"), n_components=2)
    result = jaxem.fit(model, _gaussian(), key=jax.random.key(0), n_restarts=3, max_iter=5)
    jaxem.save_fit(tmp_path / "fit.npz", result)
    loaded = jaxem.load_fit(tmp_path / "fit.npz")
    assert jax.tree.structure(loaded) == jax.tree.structure(result)
    assert_identical(loaded, jax.device_get(result), "result")
    assert_identical(jaxem.load(tmp_path / "fit.npz"), loaded, "jaxem.load")
    # The loaded parameters work with the model again.
    np.testing.assert_array_equal(
        jaxem.engine.evaluate(model, loaded.params, _gaussian(), "log_prob"),
        jaxem.engine.evaluate(model, result.params, _gaussian(), "log_prob"),
    )
    with pytest.raises(ValueError, match="holds a 'fit_result', not a 'estimator'"):
        jaxem.GaussianMixture.load(tmp_path / "fit.npz")


class MyParams(NamedTuple):
    """Parameters of a model of one's own."""

    rates: np.ndarray


def test_fit_result_of_a_model_of_ones_own(tmp_path):
    restarts = jaxem.RestartSummary(
        np.zeros(2), np.ones(2, np.int32), np.ones(2, np.int32), np.zeros((2, 4)),
        MyParams(np.ones((2, 3), np.float32)),
    )  # fmt: skip
    result = jaxem.FitResult(MyParams(np.ones(3, np.float32)), -1.5, 0, True, 1, restarts)
    jaxem.save_fit(tmp_path / "fit.npz", result)
    with pytest.raises(ValueError, match="MyParams, which is not one of jaxem's.*classes="):
        jaxem.load_fit(tmp_path / "fit.npz")
    assert_identical(jaxem.load_fit(tmp_path / "fit.npz", classes=[MyParams]), result)
    with pytest.raises(TypeError, match="saves a jaxem.FitResult"):
        jaxem.save_fit(tmp_path / "other.npz", tuple(result))


# -- the command line and the README -----------------------------------------------------------
def test_command_line_output_loads_as_the_estimator(monkeypatch, capsys, tmp_path, faithful):
    monkeypatch.setenv("JAXEM_NO_CACHE", "1")
    output = tmp_path / "fit.npz"
    argv = ["fit", str(FAITHFUL), "-k", "2", "--restarts", "4", "--max-iter", "20"]
    assert cli.main([*argv, "-o", str(output), "--labels"]) == 0, capsys.readouterr().err
    estimator = jaxem.load(output)
    assert type(estimator) is jaxem.GaussianMixture
    assert estimator.get_params()["n_init"] == 4
    with np.load(output, allow_pickle=False) as archive:
        np.testing.assert_array_equal(estimator.predict(faithful), archive["labels"])
        np.testing.assert_array_equal(estimator.means_.astype(np.float64), archive["means"])
    assert jaxem.GaussianMixture.load(output).n_iter_ == estimator.n_iter_


def test_readme_example():
    text = README.read_text()
    section = re.search(r"^## Saving and loading\n(.*?)(?=^## )", text, re.M | re.S)
    assert section, "README.md has no 'Saving and loading' section"
    source = re.sub(r"^```.*$", "", section.group(1), flags=re.M)  # a fence ends an output
    test = doctest.DocTestParser().get_doctest(source, {}, "README", str(README), 0)
    assert test.examples, "the section has no >>> example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


@pytest.mark.parametrize("attribute", ["weights_", "means_", "covars_"])
def test_tampered_gmmhmm_mixture_axis_is_refused(attribute, tmp_path):
    """GMMHMM's weights_, means_ and covars_ carry a mixture axis (its own shapes)."""
    path = tmp_path / "gmmhmm.npz"
    _fit("GMMHMM")[0].save(path)

    def drop_mixture_axis(metadata, arrays):
        key = f"attributes/{attribute}"
        arrays[key] = arrays[key][:, 0]
        metadata["attributes"][attribute]["shape"] = list(arrays[key].shape)

    _rewrite(path, drop_mixture_axis)
    with pytest.raises(ValueError, match=rf"{attribute} has shape .* need \(2, 2"):
        jaxem.GMMHMM.load(path)

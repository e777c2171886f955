"""The architecture as tests: layers import downwards, one engine compiles, no model
or estimator branches on a family, and no model imports another."""

import ast
from pathlib import Path

import pytest

import jaxem

PACKAGE = Path(jaxem.__file__).resolve().parent
FAMILY_CLASSES = {"Family", "Gaussian", "Categorical", "Poisson", "Bernoulli"}

#: What each layer may not import (data flows top to bottom, never back up).
FORBIDDEN = {
    "ops.py": ("jaxem.contract", "jaxem.seeding", "jaxem.families", "jaxem.models"),
    "contract.py": ("jaxem.seeding", "jaxem.families", "jaxem.models", "jaxem.engine"),
    "seeding.py": ("jaxem.families", "jaxem.models", "jaxem.engine", "jaxem.estimators"),
    "families": ("jaxem.models", "jaxem.engine", "jaxem.estimators", "jaxem.cli"),
    "models": ("jaxem.engine", "jaxem.estimators", "jaxem.cli"),
    "_program_store.py": ("jaxem",),
    "engine.py": ("jaxem.estimators", "jaxem.cli", "jaxem.families", "jaxem.models"),
    "_differentiate.py": ("jaxem.estimators", "jaxem.cli", "jaxem.families", "jaxem.models"),
    "estimators": ("jaxem.cli", "jaxem.selection", "jaxem.plots"),
    "selection.py": ("jaxem.cli", "jaxem.plots"),
    "plots.py": ("jaxem.cli",),
}


def _modules(layer):
    path = PACKAGE / layer
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def _imports(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_downwards(layer):
    for path in _modules(layer):
        for name in _imports(path):
            assert not name.startswith(FORBIDDEN[layer]), f"{path.name} imports {name}"


def test_no_model_imports_another():
    models = PACKAGE / "models"
    for path in models.glob("*.py"):
        if path.name == "__init__.py":
            continue
        own = (
            {f"jaxem.models.{path.stem}", "jaxem.models.hmm_inference"}
            if path.stem == "hmm"
            else set()
        )
        for name in _imports(path):
            if name.startswith("jaxem.models.") and name.count(".") == 2:
                assert name in own, f"{path.name} imports {name}"


def _calls(path, function_name):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name == function_name:
                yield node


@pytest.mark.parametrize(
    "layer",
    [
        "estimators",
        "cli",
        "models",
        "families",
        "seeding.py",
        "_differentiate.py",
        "selection.py",
        "plots.py",
    ],
)
def test_only_the_engine_compiles(layer):
    for path in _modules(layer):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("jit", "pmap"):
                # hmm_inference's standalone functions are jitted for direct use.
                assert path.name == "hmm_inference.py", f"{path.name}:{node.lineno} uses jax.jit"


def test_no_isinstance_on_a_family_outside_families():
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "families":
            continue
        for call in _calls(path, "isinstance"):
            classes = call.args[1]
            names = {getattr(node, "id", getattr(node, "attr", None)) for node in ast.walk(classes)}
            assert not names & FAMILY_CLASSES, f"{path.name}:{call.lineno} branches on a family"


def test_no_covariance_type_branches_outside_the_gaussian_family():
    allowed = {"gaussian.py"}
    for layer in ("models", "estimators", "engine.py", "cli"):
        for path in _modules(layer):
            if path.name in allowed:
                continue
            text = path.read_text()
            for pattern in ('covariance_type == "', 'covariance_type in ("'):
                assert pattern not in text, f"{path.name} branches on covariance_type"

"""The import direction of ARCHITECTURE.md, checked in fresh interpreters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules_after_importing(package: str) -> set[str]:
    code = (
        "import importlib, pkgutil, sys\n"
        f"import {package}\n"
        f"for m in pkgutil.walk_packages({package}.__path__, '{package}.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(' '.join(sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(done.stdout.split())


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("analysis", {"torch", "ray", "optuna", "models", "tune", "search_spaces"}),
        ("models", {"ray", "optuna", "pandas", "tune", "analysis", "search_spaces"}),
        ("search_spaces", {"ray", "tune", "analysis"}),
        # tune's layers (tune/__init__.py): each imports only the ones before it
        ("tune.data", {"ray", "optuna", "tune.config", "tune.train", "tune.sweep", "tune.cli"}),
        ("tune.config", {"torch", "ray", "tune.train", "tune.sweep", "tune.cli"}),
        ("tune.train", {"ray", "tune.sweep", "tune.cli"}),
    ],
)
def test_imports_point_one_way(package: str, forbidden: set[str]) -> None:
    loaded = _modules_after_importing(package)
    assert not forbidden & loaded, f"{package} pulls in {sorted(forbidden & loaded)}"


def test_packages_are_ours() -> None:
    import analysis
    import models
    import search_spaces
    import tune

    for mod in (models, tune, analysis, search_spaces):
        assert Path(mod.__file__).resolve().is_relative_to(ROOT)


def test_cli_help_does_not_import_ray_or_torch() -> None:
    code = (
        "import sys\n"
        "from tune.cli.commands import build_parser\n"
        "build_parser()\n"
        "print(' '.join(sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = set(done.stdout.split())
    assert not {"ray", "torch"} & loaded


def test_error_classes_and_data_cost_no_torch_and_configs_still_validate() -> None:
    code = (
        "import sys\n"
        "import models.errors, tune.data\n"
        "assert 'torch' not in sys.modules, 'torch imported by models.errors or tune.data'\n"
        "from models import ModelConfig\n"
        "print(ModelConfig(name='mipet_vae').num_ipe, ModelConfig(name='beta_vae').num_ipe)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "0"]


def test_every_third_party_import_is_a_declared_dependency() -> None:
    """What the product imports is in pyproject's dependencies (tqdm and pillow were not)."""
    import ast
    import importlib.metadata
    import re

    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[\[<>=~!; ]", d, maxsplit=1)[0].lower()
                for d in project["dependencies"]}
    ours = {"tune", "models", "analysis", "search_spaces"}
    imported: set[str] = set()
    for package in ours:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported.add(node.module.split(".")[0])
    dists = importlib.metadata.packages_distributions()
    missing = {}
    for name in sorted(imported - ours - set(sys.stdlib_module_names)):
        names = {d.lower() for d in dists.get(name, [name])}
        if not names & declared:
            missing[name] = sorted(names)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    assert "optuna>=4.0" in [d.split()[0].replace(",", "") for d in project["dependencies"]]
    extras = project["optional-dependencies"]
    assert any(d.startswith("optuna-dashboard") for d in extras["dashboard"])

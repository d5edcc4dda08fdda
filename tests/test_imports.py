"""The import direction of the packages (tune -> models, search_spaces, analysis; search_spaces
-> models' torch-free config facts; models -> torch; analysis -> neither torch, Ray nor Optuna;
tune's own layers as tune/__init__.py lists them), checked twice: in fresh interpreters (what
importing a package loads), and in the source (every import statement, inside functions too, and
what importing its target loads)."""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("analysis", "models", "search_spaces", "tune")

# What each layer may not import (a name and everything under it). tune may import every other
# package; tune's own layers (tune/__init__.py) each import only the ones before it.
LAYERS = [
    ("analysis", {"torch", "ray", "optuna", "models", "tune", "search_spaces"}),
    ("models", {"ray", "optuna", "pandas", "tune", "analysis", "search_spaces"}),
    # models' config facts only: a models module whose import loads torch is forbidden too
    ("search_spaces", {"torch", "ray", "tune", "analysis"}),
    ("tune.data", {"ray", "optuna", "tune.config", "tune.train", "tune.sweep", "tune.cli"}),
    # a RunConfig is read without torch and without the metric implementations (scikit-learn,
    # SciPy): what tune.config needs of a metric must come from a module that loads neither
    ("tune.config", {"torch", "sklearn", "scipy", "ray", "tune.train", "tune.sweep", "tune.cli"}),
    ("tune.train", {"ray", "tune.sweep", "tune.cli"}),
    ("tune.sweep", {"tune.cli"}),
]

# Crossings allowed inside functions only, each with its reason. tune.config checks a
# `train/lr_scheduler` against torch's own class (its name and keywords) when a config names one,
# so torch is loaded then and only then: reading any config, and `mipet-tune --help`, load none.
LAZY_ALLOWED = {("tune.config.schedules", "torch")}


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


def _crossing(names: set[str], forbidden: set[str]) -> list[str]:
    return sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize(("package", "forbidden"), LAYERS)
def test_imports_point_one_way(package: str, forbidden: set[str]) -> None:
    loaded = _modules_after_importing(package)
    assert not _crossing(loaded, forbidden), f"{package} pulls in {_crossing(loaded, forbidden)}"


# ---- every import statement, read from the source -------------------------------------------
@cache
def _our_modules() -> dict[str, Path]:
    """Module name -> file, for every module of our packages (a package is its __init__.py)."""
    out = {}
    for package in OURS:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    """The modules an import statement in `module` names (`from pkg import sub` names pkg.sub)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:  # relative: from the package of `module`
        package = module.split(".")
        is_package = _our_modules()[module].name == "__init__.py"
        package = package[: len(package) - node.level + (1 if is_package else 0)]
        base = ".".join(package + ([node.module] if node.module else []))
    subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in _our_modules()]
    return [base, *subs]


@cache
def _statements(module: str) -> tuple[tuple[str, int, bool], ...]:
    """(imported module, line, at import time) for every import statement of `module`, inside
    functions too; those under `if TYPE_CHECKING:` never run and are left out."""
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                for orelse in child.orelse:
                    visit(orelse, in_function)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.extend((t, child.lineno, not in_function) for t in _targets(child, module))
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                      ast.Lambda))
            visit(child, inner)

    visit(ast.parse(_our_modules()[module].read_text()), False)
    return tuple(out)


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@cache
def _loads(name: str) -> frozenset[str]:
    """What importing `name` loads, read from the source: the module, its parent packages and,
    for ours, what their import-time statements import, recursively (a third-party module
    stands for itself)."""
    seen: set[str] = set()
    todo = _with_parents(name)
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in _our_modules():
            todo += [p for t, _, now in _statements(current) if now for p in _with_parents(t)]
    return frozenset(seen)


def _layer_of(module: str) -> set[str] | None:
    rules = [(pkg, forbidden) for pkg, forbidden in LAYERS
             if module == pkg or module.startswith(pkg + ".")]
    return max(rules, key=lambda r: len(r[0]))[1] if rules else None


def _violations() -> list[str]:
    out = []
    for module, path in sorted(_our_modules().items()):
        forbidden = _layer_of(module)
        if forbidden is None:
            continue
        for target, line, now in _statements(module):
            if not now and any(module == m and (target == t or target.startswith(t + "."))
                               for m, t in LAZY_ALLOWED):
                continue
            if not any(target == f or target.startswith(f + ".") for f in forbidden):
                loaded = set(_loads(target))
                crossed = sorted(f for f in forbidden if _crossing(loaded, {f}))
                if not crossed:
                    continue
                target = f"{target} (which loads {', '.join(crossed)})"
            out.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    return out


def test_no_import_anywhere_crosses_a_layer() -> None:
    """An import inside a function counts as much as one at the top: the rules of LAYERS hold for
    every import statement, and for what importing its target loads."""
    found = _violations()
    assert not found, "imports that cross a layer:\n" + "\n".join(found)


def _cycles() -> list[list[str]]:
    """The import cycles among our modules (Tarjan's strongly connected components), counting
    imports inside functions; a module importing its own parent package does not count."""
    graph = {
        m: sorted({p for t, _, _ in _statements(m) for p in _with_parents(t)
                   if p in _our_modules() and p != m and not m.startswith(p + ".")})
        for m in sorted(_our_modules())
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_no_import_cycles() -> None:
    """No module imports, even inside a function, one that imports it back (through others)."""
    found = _cycles()
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_source_reading_sees_imports_inside_functions(tmp_path: Path) -> None:
    """The checker finds a crossing hidden in a function, a relative import and one loaded
    through another of our modules, and leaves `if TYPE_CHECKING:` imports alone."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "heavy.py").write_text("import torch\n")
    (tmp_path / "pkg" / "light.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import ray\n"
        "def f():\n    from . import heavy\n    import optuna.trial\n"
    )
    modules = {"pkg": tmp_path / "pkg" / "__init__.py", "pkg.heavy": tmp_path / "pkg" / "heavy.py",
               "pkg.light": tmp_path / "pkg" / "light.py"}
    saved = dict(_our_modules())
    for f in (_statements, _loads):
        f.cache_clear()
    try:
        _our_modules().clear()
        _our_modules().update(modules)
        got = {(t, now) for t, _, now in _statements("pkg.light")}
        assert got == {("typing", True), ("pkg", False), ("pkg.heavy", False),
                       ("optuna.trial", False)}
        assert "torch" in _loads("pkg.heavy") and "torch" not in _loads("pkg.light")
        assert _crossing(set(_loads("pkg.heavy")), {"torch"}) == ["torch"]
    finally:
        _our_modules().clear()
        _our_modules().update(saved)
        for f in (_statements, _loads):
            f.cache_clear()


def test_validating_a_space_against_the_models_loads_no_torch() -> None:
    """What the source cannot see: `models.MODELS` and the other lazy names load torch on first
    use, and search_spaces must not use them."""
    code = (
        "import sys\n"
        "from search_spaces import load_space, preset_names\n"
        "for name in preset_names():\n"
        "    load_space(name, model_names=['mipet_vae', 'beta_vae']).describe()\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]


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

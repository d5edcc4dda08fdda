"""docs/recipes/add_objective.md, followed: its toy objective file and its one registry line,
written into a copy of the `models` package, give a working objective that passes the registry's
contract; a record missing a part fails with one clear line."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from models._objectives import OBJECTIVES
from models.spec import Adversary, Knob, check_spec, role

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "docs" / "recipes" / "add_objective.md"
REGISTRY_END = '    "commutative",\n)'


def recipe_blocks() -> list[str]:
    """The recipe's python code blocks: the objective file, then the registry excerpt."""
    return re.findall(r"```python\n(.*?)```", RECIPE.read_text(), flags=re.S)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the models package and of the contract test, to follow the recipe in."""
    shutil.copytree(ROOT / "models", tmp_path / "models",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "tests").mkdir()
    for name in ("test_objective_registry.py", "test_models.py"):  # the contract, its fixture
        shutil.copy(ROOT / "tests" / name, tmp_path / "tests")
    return tmp_path


def add_objective(tree: Path, source: str, *, register: bool = True) -> None:
    """Step 1 (the file) and step 2 (the registry line) of the recipe."""
    (tree / "models" / "_objectives" / "toy_vae.py").write_text(source)
    if register:
        line = next(x for x in recipe_blocks()[1].splitlines() if "toy_vae" in x)
        registry = tree / "models" / "_objectives" / "__init__.py"
        text = registry.read_text()
        assert text.count(REGISTRY_END) == 1, "MODULES no longer ends as the recipe says"
        registry.write_text(text.replace(REGISTRY_END, REGISTRY_END[:-1] + line + "\n)"))


def run(tree: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=300)


USE = r"""
import sys
import models
from models import ConfigError, ModelConfig
assert models.__file__.startswith(sys.argv[1]), models.__file__
cfg = ModelConfig.from_dict({"name": "toy_vae", "toy_weight": "2.0"})
assert cfg.toy_weight == 2.0 and ModelConfig(name="mipet_toy_vae").num_ipe == 3
assert "toy_weight" in models.used_fields("toy_vae")
assert "toy_weight" in models.used_fields("beta_vae", ["toy_vae"])
assert "toy_weight" not in models.used_fields("beta_vae")
assert models.loss_weight_fields("mipet_toy_vae") == {"rec_weight", "toy_weight"}
assert "toy_weight: weight of the toy penalty" in ModelConfig.__doc__
try:
    ModelConfig(name="toy_vae", toy_weight=-1.0)
except ConfigError as exc:
    assert str(exc) == "model.toy_weight must be >= 0 and finite, got -1.0", exc
else:
    raise AssertionError("a negative toy_weight was accepted")
assert "torch" not in sys.modules, "reading a config imported torch"

import torch
torch.manual_seed(0)
model = models.build_model(cfg).eval()
assert type(model).__name__ == "ToyVae" and {"toy_vae", "mipet_toy_vae"} <= set(models.MODELS)
x, eps = torch.rand(4, 1, 64, 64), torch.randn(4, 10)
out = model(x, eps)
assert out.weights == {"rec": 1.0, "kld": 1.0, "toy": 2.0}, out.weights
z = out.mu + torch.exp(0.5 * out.logvar) * eps
assert torch.allclose(out.terms["toy"], z.pow(2).sum(1).mean())
assert torch.allclose(out.loss, sum(w * out.terms[n] for n, w in out.weights.items()))
model.set_loss_weights({"toy_weight": 0.0})
assert model(x, eps).weights["toy"] == 0.0
stacked = models.build_model(ModelConfig(name="mipet_vae", loss_terms=["toy_vae"]))
assert set(stacked(x).weights) == {"rec", "kld", "reg", "toy"}
print("ok")
"""


def test_the_recipe_adds_a_working_objective_that_passes_the_contract(tree: Path) -> None:
    add_objective(tree, recipe_blocks()[0])
    done = run(tree, "-c", USE, str(tree))
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
    contract = run(tree, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "tests/test_objective_registry.py", "-k", "toy_vae or registered or cycle")
    assert contract.returncode == 0, contract.stdout[-3000:]
    assert "5 passed" in contract.stdout, contract.stdout[-500:]  # toy: record, forward, stack


def test_a_file_without_its_registry_line_fails_the_contract(tree: Path) -> None:
    add_objective(tree, recipe_blocks()[0], register=False)
    contract = run(tree, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "tests/test_objective_registry.py", "-k", "registered")
    assert contract.returncode == 1
    assert "an objective file without its line in MODULES" in contract.stdout


@pytest.mark.parametrize(("edit", "message"), [
    (('main=role(["toy_weight"], ["toy_weight"]', 'main=role([], ["toy_weight"]'),
     "objective 'toy_vae': weight 'toy_weight' of its main role is not a field it reads"),
    ((', build_stacked=build_stacked', ''),
     "objective 'toy_vae': stacked and build_stacked must be given together (or neither)"),
    (("toy_weight", "beta"),  # its own Knob for beta-VAE's field
     "objective 'toy_vae': knob 'beta' is defined twice; import the Knob of the objective"),
    (('name="toy_vae"', 'name="toy"'),
     "models/_objectives/toy_vae.py holds objective 'toy': name the file toy.py"),
    (('"toy_weight", float, 0.5', '"toy_weight", float, -0.5'),
     "objective 'toy_vae': the default of knob 'toy_weight' fails its own check"),
])
def test_a_record_missing_a_part_fails_at_import(tree: Path, edit: tuple[str, str],
                                                 message: str) -> None:
    source = recipe_blocks()[0]
    assert edit[0] in source, edit[0]
    add_objective(tree, source.replace(*edit))
    done = run(tree, "-c", "import models")
    assert done.returncode == 1 and message in done.stderr.splitlines()[-1], done.stderr[-2000:]


# -- check_spec on broken copies of registered records (no subprocess) ---------------------------


def _broken(name: str, **changes: object) -> object:
    return dataclasses.replace(OBJECTIVES[name], **changes)


@pytest.mark.parametrize(("record", "message"), [
    (lambda: _broken("beta_vae", reference=" "), "'beta_vae': reference is empty"),
    (lambda: _broken("betatcvae", build_stacked=None), "stacked and build_stacked must be given"),
    (lambda: _broken("vae", main=role()), "its main role adds no loss term"),
    (lambda: _broken("beta_vae", knobs=OBJECTIVES["beta_vae"].knobs + (
        Knob("unread", float, 1.0, "a knob no role reads."),)),
     "knob 'unread' is read by none of its roles"),
    (lambda: _broken("factor_vae", adversaries=(
        Adversary("factor", "factor_rate", print, print),)),
     "adversary 'factor': lr_field 'factor_rate' is not one of its knobs"),
    (lambda: _broken("cvae", mipet=OBJECTIVES["beta_vae"].mipet),
     "a conditional objective has no MIPET variant"),
    (lambda: _broken("info_vae", main=role(["info_alpha", "info_gamma"], ["info_alpha"],
                                           ["mmd"])),
     "field 'info_gamma' of its main role is neither its knob nor a ModelConfig field"),
    (lambda: "vae", "must be a models.spec.ObjectiveSpec"),
])
def test_check_spec_names_the_missing_part(record, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_spec(record(), common_fields={"name", "latent_dim"})

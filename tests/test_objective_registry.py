"""The contract of every objective record (models/_objectives/): complete, its fields known to
ModelConfig, its terms produced by a forward, its weights real fields that move the loss, its
adversaries built and trained, and every objective file registered.

Parametrized by objective name, so `-k <name>` checks one objective (the recipe test runs it on a
toy objective: docs/recipes/add_objective.md).
"""

from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path

import pytest
import torch
from test_models import _one_thread  # noqa: F401  (the autouse fixture applies)

import models
from models import ModelConfig
from models._facts import MODEL_FACTS
from models._objectives import KNOBS, MODULES, OBJECTIVES
from models.spec import ObjectiveSpec, check_spec

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
NAMES = list(OBJECTIVES)
FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig)}
PACKAGE = Path(models.__file__).parent


def config(name: str, **kw: object) -> ModelConfig:
    """A default config of model `name`; a conditional one conditioned on two factors."""
    if MODEL_FACTS[name].needs_labels:
        kw = {"condition_on": ["shape", "scale"], "condition_classes": [3, 6], **kw}
    return ModelConfig.from_dict({"name": name, "latent_dim": 10, **kw})


def forward(model: models.VAE, step: int = 5) -> models.ModelOutput:
    """A fixed batch of 4 binary images through `model` in eval mode (same noise each call)."""
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(4, 1, 64, 64, generator=gen) > 0.5).float()
    eps = torch.randn(4, model.cfg.latent_dim, generator=gen)
    labels = torch.tensor([[0, 1], [1, 2], [2, 3], [0, 5]]) if model.needs_labels else None
    return model.eval()(x, eps, step=step, labels=labels)


def build(cfg: ModelConfig) -> models.VAE:
    torch.manual_seed(0)
    return models.build_model(cfg)


def stack_base(spec: ObjectiveSpec) -> str:
    """A model the stacked regulariser of `spec` can go on (one without its knobs or terms)."""
    return "vae" if spec.name != "vae" else "beta_vae"


def loss_parts(out: models.ModelOutput) -> tuple:
    """The factors and the term values of a forward (a weight moves one or the other: a tiny
    penalty can move the total by less than its float32 resolution)."""
    return out.weights, {n: float(t) for n, t in out.terms.items()}


def moved(value: object) -> float:
    """Another valid value of a weight field (None, the DIP default, becomes 3)."""
    return 3.0 if value is None else float(value) * 2 + 0.5


# -- the records ----------------------------------------------------------------------------------


def test_every_objective_file_is_registered() -> None:
    files = sorted(p.stem for p in (PACKAGE / "_objectives").glob("*.py") if p.stem != "__init__")
    assert sorted(MODULES) == files, "an objective file without its line in MODULES, or back"
    assert list(OBJECTIVES) == list(MODULES)
    assert set(MODEL_FACTS) == {n for s in OBJECTIVES.values() for n in s.model_names}
    assert set(models.MODELS) == set(MODEL_FACTS)


@pytest.mark.parametrize("name", NAMES)
def test_record_is_complete_and_its_fields_are_modelconfig_fields(name: str) -> None:
    spec = OBJECTIVES[name]
    common = set(FIELDS) - set(KNOBS)
    check_spec(spec, common_fields=common)
    roles = [spec.main] + ([spec.stacked] if spec.stacked else [])
    for role in roles:
        assert role.fields <= set(FIELDS) and role.weights <= role.fields
    for knob in spec.knobs:
        assert KNOBS[knob.name] is knob
        assert FIELDS[knob.name].default == knob.default
    for model in spec.model_names:
        assert spec.main.fields <= models.used_fields(model)
        assert spec.main.weights | {"rec_weight"} == models.loss_weight_fields(model)
        assert models.MODELS[model].objective == name
    if spec.mipet is not None:
        assert ModelConfig(name=spec.mipet.name, **_labels(spec)).num_ipe == spec.mipet.num_ipe


def _labels(spec: ObjectiveSpec) -> dict:
    return {"condition_on": ("shape",)} if spec.needs_labels else {}


# -- the model a record builds --------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_forward_produces_the_records_terms_and_weights_move_the_loss(name: str) -> None:
    spec = OBJECTIVES[name]
    for model_name in spec.model_names:
        cfg = config(model_name)
        model = build(cfg)
        out = forward(model)
        ef = {"reg"} if cfg.num_ipe and cfg.ef_conversion else set()
        assert set(out.weights) == {"rec"} | spec.main.terms | ef, model_name
        assert torch.allclose(out.loss, sum(w * out.terms[n] for n, w in out.weights.items()))
        assert math.isfinite(float(out.loss))
        for weight in sorted(spec.main.weights):  # each changed on top of the last
            before = loss_parts(forward(model))
            model.set_loss_weights({weight: moved(getattr(cfg, weight))})
            assert loss_parts(forward(model)) != before, f"{model_name}: {weight} moves nothing"


@pytest.mark.parametrize("name", [n for n in NAMES if OBJECTIVES[n].stacked is not None])
def test_stacked_regulariser_adds_its_terms_and_weights(name: str) -> None:
    spec = OBJECTIVES[name]
    assert spec.stacked is not None
    base = stack_base(spec)
    plain = set(forward(build(config(base))).weights)
    cfg = config(base, loss_terms=[name])
    model = build(cfg)
    out = forward(model)
    assert set(out.weights) == plain | spec.stacked.terms
    assert spec.stacked.fields <= models.used_fields(base, [name])
    for weight in sorted(spec.stacked.weights):
        before = loss_parts(forward(model))
        model.set_loss_weights({weight: moved(getattr(cfg, weight))})
        assert loss_parts(forward(model)) != before, f"stacked {name}: {weight} moves nothing"


@pytest.mark.parametrize("name", [n for n in NAMES if OBJECTIVES[n].adversaries])
def test_adversaries_are_built_outside_the_main_optimizer_and_trained(name: str) -> None:
    spec = OBJECTIVES[name]
    model = build(config(name))
    keys = [a.key for a in spec.adversaries]
    assert list(model.adversaries) == keys
    main = {id(p) for p in model.main_parameters()}
    assert not main & {id(p) for p in model.adversaries.parameters()}
    adversaries = model.build_adversaries()
    for adv in spec.adversaries:
        opt = adversaries.optimizers[adv.key]
        assert opt.defaults["lr"] == getattr(model.cfg, adv.lr_field)
        assert opt.defaults["betas"] == adv.betas
    model.train()
    gen = torch.Generator().manual_seed(2)
    x = (torch.rand(4, 1, 64, 64, generator=gen) > 0.5).float()
    labels = torch.tensor([[0, 1], [1, 2], [2, 3], [0, 5]]) if model.needs_labels else None
    before = [p.detach().clone() for p in model.adversaries.parameters()]
    losses = adversaries.step(model(x, labels=labels))
    assert set(losses) == {f"{k}_disc" for k in keys}
    after = list(model.adversaries.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


# -- the import graph -----------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    """The `models.*` modules a file imports anywhere (functions and TYPE_CHECKING included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("models"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("models")}
    return out


def test_the_models_package_has_no_import_cycle() -> None:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = _imports(path) - {name}
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            cycle = trail[trail.index(node):] + [node]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, trail + [node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])

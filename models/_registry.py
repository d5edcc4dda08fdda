"""The model registry: name -> class, one class per registered model of `models._facts`.

What configs need of a model (fields, default K, labels) is plain data in `models._facts`, derived
from the objectives' records (`models._objectives`); each model class here takes those facts as
class attributes when it registers, so the two cannot drift. A model of a Lie group objective is
a `LieGroupVAE`, any other a `VAE`; everything else it does comes from its objective's record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, TypeVar

from models._facts import MODEL_FACTS, ModelFacts, facts
from models._facts import used_fields as used_fields  # re-exported: `models.used_fields`
from models._vae import VAE, LieGroupVAE
from models.errors import ConfigError
from models.strict import nearest

if TYPE_CHECKING:
    import torch

    from models.config import ModelConfig

__all__ = ["MODELS", "register_model", "build_model"]

MODELS: dict[str, type] = {}

C = TypeVar("C", bound=type)


def register_model(name: str) -> Callable[[C], C]:
    """Class decorator adding a model class to `MODELS` under `name` (its YAML and CLI value).

    The name must have its facts in `models._facts.MODEL_FACTS`; the class gets them as its
    `registry_name`, `objective`, `default_num_ipe`, `lie_group` and `config_fields`.
    """

    def add(cls: C) -> C:
        if name in MODELS:
            raise ValueError(f"model name {name!r} is taken by {MODELS[name].__qualname__}")
        if name not in MODEL_FACTS:
            raise ValueError(f"model name {name!r} has no entry in models._facts.MODEL_FACTS")
        fact = MODEL_FACTS[name]
        MODELS[name] = cls
        cls.registry_name = name
        cls.objective = fact.objective
        cls.default_num_ipe = fact.default_num_ipe
        cls.lie_group = fact.lie_group
        cls.config_fields = fact.fields
        return cls

    return add


def _model_class(fact: ModelFacts) -> type[VAE]:
    """The class of one registered model, its docstring from its objective's record."""
    spec = fact.spec
    camel = "".join(part.capitalize() for part in fact.name.split("_"))
    kind = (f"MIPET (K = {fact.default_num_ipe} IPE maps) on the" if fact.default_num_ipe
            else "The")
    ipe = " + reg (the EF regulariser)" if fact.default_num_ipe else ""
    doc = (f"{kind} {spec.name} objective ({spec.reference}): {spec.summary}{ipe}. Its record: "
           f"models/_objectives/{spec.name}.py.")
    base = LieGroupVAE if spec.lie_group else VAE
    return type(camel, (base,), {"__doc__": doc, "__module__": __name__, "__qualname__": camel})


for _fact in MODEL_FACTS.values():
    _cls = register_model(_fact.name)(_model_class(_fact))
    globals()[_cls.__name__] = _cls


def build_model(cfg: ModelConfig) -> torch.nn.Module:
    """Instantiate and initialise the model `cfg.name` (seed torch before calling this)."""
    facts(cfg.name)
    if cfg.name not in MODELS:
        raise ConfigError(f"model.name {cfg.name!r} is unknown; {nearest(cfg.name, MODELS)}")
    return MODELS[cfg.name](cfg)

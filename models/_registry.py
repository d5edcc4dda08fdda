"""The model registry: name -> class, filled by `register_model` in each model module."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, TypeVar

from models.errors import ConfigError
from models.strict import nearest

if TYPE_CHECKING:
    import torch

    from models.config import ModelConfig

MODELS: dict[str, type] = {}

C = TypeVar("C", bound=type)


def register_model(name: str) -> Callable[[C], C]:
    """Class decorator adding a model class to `MODELS` under `name` (its YAML and CLI value)."""

    def add(cls: C) -> C:
        if name in MODELS:
            raise ValueError(f"model name {name!r} is taken by {MODELS[name].__qualname__}")
        MODELS[name] = cls
        cls.registry_name = name
        return cls

    return add


def build_model(cfg: ModelConfig) -> torch.nn.Module:
    """Instantiate and initialise the model `cfg.name` (seed torch before calling this)."""
    if cfg.name not in MODELS:
        raise ConfigError(f"model.name {cfg.name!r} is unknown; {nearest(cfg.name, MODELS)}")
    return MODELS[cfg.name](cfg)


def used_fields(name: str) -> frozenset[str]:
    """The ModelConfig fields that model `name` reads; sweeping any other field is a mistake.

    Raises:
        ConfigError: for an unknown model name.
    """
    if name not in MODELS:
        raise ConfigError(f"model.name {name!r} is unknown; {nearest(name, MODELS)}")
    return MODELS[name].config_fields


# A stop-gap (helper sched) of zoo's contract; zoo's version wins at merge.
_LOSS_WEIGHTS = frozenset({"rec_weight", "beta", "alpha", "gamma", "hy_rec", "hy_hes", "hy_commute"})


def loss_weight_fields(name: str) -> frozenset[str]:
    """The ModelConfig fields of model `name` that weight a loss term (what a schedule may set
    through `VAE.set_loss_weights`)."""
    return used_fields(name) & _LOSS_WEIGHTS

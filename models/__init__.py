"""The PyTorch MIPET VAEs, their baselines and ablations (docs/paper_code.md).

Example:
    >>> import torch, models
    >>> _ = torch.manual_seed(0)  # seeding is the caller's
    >>> # the dSprites settings (what tune.data.model_defaults("dsprites") returns)
    >>> data = {"name": "mipet_betatcvae", "image_channels": 1, "dense_dim": (256, 128),
    ...         "recon_loss": "bce", "dataset_size": 737280}
    >>> cfg = models.ModelConfig.from_dict(data)
    >>> model = models.build_model(cfg)
    >>> out = model(torch.rand(8, 1, 64, 64))
    >>> sorted(out.weights)
    ['dwkl', 'mi', 'rec', 'reg', 'tc']
"""

from __future__ import annotations

import importlib
from typing import Any

from models._facts import MODEL_NAMES, loss_weight_fields, used_fields
from models.config import ModelConfig
from models.errors import ConfigError, MipetTuneError, NonFiniteLossError
from models.spec import ObjectiveSpec

# The torch-backed parts load on first use, so that `import models.errors` (every package's
# error classes), `ModelConfig`, `MODEL_NAMES`, `used_fields` and `loss_weight_fields` cost no
# torch import: the data loaders, the CLI and the search-space validation of field names start
# fast.
_LAZY = {
    "MODELS": "models._registry",
    "build_model": "models._registry",
    "register_model": "models._registry",
    "Adversaries": "models._adversary",
    "VAE": "models._vae",
    "ModelOutput": "models._output",
    "LossInputs": "models.objectives",
    "Objective": "models.objectives",
    "load_paper_state_dict": "models.paper",
    "param_groups": "models.paper",
    "to_paper_state_dict": "models.paper",
}

__all__ = [
    "MODELS", "VAE", "Adversaries", "ConfigError", "LossInputs", "MipetTuneError",
    "MODEL_NAMES", "ModelConfig", "ModelOutput", "ObjectiveSpec",
    "NonFiniteLossError", "Objective", "build_model", "load_paper_state_dict",
    "param_groups", "register_model", "to_paper_state_dict", "used_fields", "loss_weight_fields",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    importlib.import_module("models._registry")  # registers the models before MODELS is read
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

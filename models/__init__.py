"""The PyTorch MIPET VAEs, their baselines and ablations (spec/mipet.md).

Example:
    >>> import torch, models
    >>> _ = torch.manual_seed(0)  # seeding is the caller's
    >>> data = {"name": "mipet_betatcvae", **models.dataset_defaults("dsprites")}
    >>> cfg = models.ModelConfig.from_dict(data)
    >>> model = models.build_model(cfg)
    >>> out = model(torch.rand(8, 1, 64, 64))
    >>> sorted(out.weights)
    ['dwkl', 'mi', 'rec', 'reg', 'tc']
"""

from __future__ import annotations

from models import _vae  # noqa: F401  (registers the models)
from models._registry import MODELS, build_model, register_model, used_fields
from models._vae import VAE, ModelOutput
from models.config import ModelConfig, dataset_defaults
from models.errors import ConfigError, MipetTuneError, NonFiniteLossError
from models.objectives import LossInputs, Objective
from models.paper import load_paper_state_dict, param_groups, to_paper_state_dict

__all__ = [
    "MODELS", "VAE", "ConfigError", "LossInputs", "MipetTuneError", "ModelConfig", "ModelOutput",
    "NonFiniteLossError", "Objective", "build_model", "dataset_defaults", "load_paper_state_dict",
    "param_groups", "register_model", "to_paper_state_dict", "used_fields",
]

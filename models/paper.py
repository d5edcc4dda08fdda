"""Parity with the paper code: optimizer groups and checkpoints (docs/paper_code.md)."""

from __future__ import annotations

import logging
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from models.errors import ConfigError
from models.strict import nearest

__all__ = ["param_groups", "load_paper_state_dict", "to_paper_state_dict"]

log = logging.getLogger(__name__)

# Our IPEBank attribute -> the paper's key inside `inv_equ.{k}.`
_IPE_KEYS = {
    "w1": "w1", "w2": "w2",
    "gz_p": "subobj.z_parameter_generator.layers.0",
    "gz_q": "subobj.z_parameter_generator.layers.1",
    "ge_p": "subobj.eps_parameter_generator.layers.0",
    "ge_q": "subobj.eps_parameter_generator.layers.1",
    "t_p": "subobj.suff_stat.layers.0", "t_q": "subobj.suff_stat.layers.1",
    "nu_p": "subobj.nu.layers.0", "nu_q": "subobj.nu.layers.1",
    "pc_p": "subobj.post_carrier.layers.0", "pc_q": "subobj.post_carrier.layers.1",
    "ln_u": "subobj.log_norm.w1", "ln_v": "subobj.log_norm.w2",
    "lam_w": "subobj.lambda_.weight", "lam_b": "subobj.lambda_.bias",
}


def param_groups(
    model: nn.Module, lr: float, sub_lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    """The paper's two Adam groups, by parameter name as the paper code does.

    Group "encoder_decoder": every parameter whose name contains "encoder" or "decoder" (the Lie
    basis and unused heads included): lr, weight_decay (coupled L2 of torch Adam).
    Group "ipe": everything else (the IPE/EF parameters): sub_lr, weight decay 0. An empty group
    (baselines) is left out. Adversarial modules (`adversaries.*`, e.g. the Factor-VAE
    discriminator) are in no group: their own optimizers train them (`VAE.build_adversaries`).

    Returns:
        A list for `torch.optim.Adam(groups, betas=(0.9, 0.999), eps=1e-8)`.
    """
    main: list[nn.Parameter] = []
    sub: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad and not name.startswith("adversaries."):
            (main if ("encoder" in name or "decoder" in name) else sub).append(p)
    groups = [{"params": main, "lr": lr, "weight_decay": weight_decay, "name": "encoder_decoder"}]
    if sub:
        groups.append({"params": sub, "lr": sub_lr, "weight_decay": 0.0, "name": "ipe"})
    for g in groups:
        log.info(
            "optimizer group %s: %d tensors, %d parameters, lr %g, weight decay %g",
            g["name"], len(g["params"]), sum(p.numel() for p in g["params"]), g["lr"],
            g["weight_decay"],
        )
    return groups


def _paper_names(model: nn.Module, key: str) -> list[tuple[str, int | None]]:
    """Paper keys for one of our state-dict keys, each with the index into our tensor (or None)."""
    parts = key.split(".")
    if parts[0] == "ipe":
        k = model.num_ipe  # type: ignore[attr-defined]
        sub = _IPE_KEYS[parts[1]]
        if model.lie_group and k == 1:  # type: ignore[attr-defined]
            return [(f"inv_equ.{sub}", 0)]
        return [(f"inv_equ.{i}.{sub}", i) for i in range(k)]
    if key == "decoder.lie_basis":
        n = model.decoder.lie_basis.shape[0]  # type: ignore[union-attr]
        return [(f"decoder.lie_alg_basis_ls.{j}", j) for j in range(n)]
    if len(parts) == 4 and parts[1] == "features":
        j = int(parts[2])
        if parts[0] == "decoder" and j == 6:
            return [(f"decoder.hidden_layers.3.{parts[3]}", None)]
        return [(f"{parts[0]}.hidden_layers.{j // 2}.conv.{parts[3]}", None)]
    return [(key, None)]


def to_paper_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Our state dict under the paper code's key names and layouts (copies)."""
    out: dict[str, Tensor] = {}
    for key, t in model.state_dict().items():
        for pkey, idx in _paper_names(model, key):
            v = t if idx is None else t[idx]
            if key == "decoder.lie_basis":
                v = v.unsqueeze(0)  # the paper stores each basis matrix as [1, m, m]
            out[pkey] = v.detach().clone()
    return out


def _is_dead_paper_key(model: nn.Module, pkey: str) -> bool:
    if ".subobj.nu." in pkey or ".subobj.post_carrier." in pkey or pkey.startswith(
        ("inv_equ.subobj.nu.", "inv_equ.subobj.post_carrier.")
    ):
        return True
    lie = getattr(model, "lie_group", False)
    head = pkey.split(".")[:2]
    return lie and head in (["encoder", "dense"], ["encoder", "mu"], ["encoder", "logvar"])


def load_paper_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Load a checkpoint of the paper code (GIST-IRR/MIPET-VAEs `model.pt`) into `model`.

    Key names follow the paper code's modules (`to_paper_state_dict` writes the same layout).
    The model must have the same architecture (dataset channels, dense_dim, latent_dim, K).
    With keep_dead_params=False the paper's dead parameters (EF nu / post_carrier, the Lie
    encoder's unused heads) are skipped.

    Raises:
        ConfigError: on a missing or unexpected key, or a shape that does not match.
    """
    own = model.state_dict()
    expected: dict[str, tuple[str, int | None]] = {}
    for key in own:
        for pkey, idx in _paper_names(model, key):
            expected[pkey] = (key, idx)
    given = {
        k: v for k, v in state_dict.items() if k in expected or not _is_dead_paper_key(model, k)
    }
    for pkey in given:
        if pkey not in expected:
            raise ConfigError(
                f"paper state dict has key {pkey!r} that this model "
                f"({getattr(model, 'registry_name', '?')}, K={getattr(model, 'num_ipe', '?')}) "
                f"does not have; {nearest(pkey, expected)}"
            )
    missing = [k for k in expected if k not in given]
    if missing:
        raise ConfigError(
            f"paper state dict lacks {len(missing)} key(s) of this model, e.g. {missing[:3]}; "
            "is it a checkpoint of the same model type, dataset and number of IPE maps?"
        )
    new = {k: v.detach().clone() for k, v in own.items()}
    for pkey, (key, idx) in expected.items():
        value = torch.as_tensor(given[pkey])
        target = new[key] if idx is None else new[key][idx]
        if key == "decoder.lie_basis":
            value = value.reshape(target.shape) if value.numel() == target.numel() else value
        if tuple(value.shape) != tuple(target.shape):
            raise ConfigError(
                f"paper state dict key {pkey!r} has shape {tuple(value.shape)}, this model "
                f"expects {tuple(target.shape)} (check image_channels, dense_dim, latent_dim)"
            )
        target.copy_(value)
    model.load_state_dict(new)

"""The Commutative Lie Group VAE (Zhu et al. 2021, CLG-VAE): rec + KL + hy_hes hessian +
hy_commute commute + hy_rec group_rec, on its own Lie group networks. Its MIPET variant has K = 1
by default (the paper's run)."""

from __future__ import annotations

import math
from typing import Any

from models.errors import ConfigError
from models.spec import Knob, Mipet, ObjectiveSpec, non_negative, role

_WEIGHT = (non_negative, ">= 0 and finite")
KNOBS = (
    Knob("hy_rec", float, 0.1, "weight of the commutative Lie group reconstruction loss.",
         *_WEIGHT),
    Knob("hy_hes", float, 40.0, "weight of the commutative Hessian loss.", *_WEIGHT),
    Knob("hy_commute", float, 20.0, "weight of the commutative commutator loss.", *_WEIGHT),
    Knob("forward_eq_prob", float, 0.2,
         "probability per training step of reconstructing from the encoder's group features "
         "instead of the decoder's (commutative models).", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    Knob("subgroup_sizes", tuple[int, ...], (100,),
         "the Lie group layout (one subgroup supported: (m*m,)).",),
    Knob("subspace_sizes", tuple[int, ...], (10,),
         "the latent units of each subgroup (one supported: (latent_dim,))."),
)
_WEIGHTS = ["hy_rec", "hy_hes", "hy_commute"]


def check(cfg: Any, active: bool) -> None:
    """The one-subgroup layout, for a commutative model."""
    if not active:
        return
    if len(cfg.subgroup_sizes) != 1 or len(cfg.subspace_sizes) != 1:
        raise ConfigError(
            "model.subgroup_sizes and model.subspace_sizes must have one entry each (one "
            f"subgroup is supported), got {list(cfg.subgroup_sizes)} and "
            f"{list(cfg.subspace_sizes)}"
        )
    size = cfg.subgroup_sizes[0]
    if size < 1 or math.isqrt(size) ** 2 != size:
        raise ConfigError(f"model.subgroup_sizes entries must be squares m*m, got {size}")
    if cfg.subspace_sizes[0] != cfg.latent_dim:
        raise ConfigError(
            f"model.latent_dim must equal sum(model.subspace_sizes) = {cfg.subspace_sizes[0]} "
            f"for {cfg.name!r}, got {cfg.latent_dim}"
        )


def build(model: Any, cfg: Any) -> list:
    from models.objectives import KLTerm, LieGroupLoss

    return [KLTerm(1.0), LieGroupLoss(cfg.hy_hes, cfg.hy_commute, cfg.hy_rec)]


SPEC = ObjectiveSpec(
    name="commutative", reference="Zhu et al. 2021 (CLG-VAE)",
    summary="rec + KL + hy_hes hessian + hy_commute commute + hy_rec group_rec", knobs=KNOBS,
    main=role([k.name for k in KNOBS] + ["keep_dead_params", "dense_dim"], _WEIGHTS,
              ["kld", "hessian", "commute", "group_rec"]),
    build=build, mipet=Mipet("mipet_commutative", num_ipe=1), lie_group=True, check=check,
)

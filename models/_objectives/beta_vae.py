"""beta-VAE (Higgins et al. 2017): rec + beta * KL. Its MIPET variant is the paper's MIPET-VAE
(`mipet_vae`: rec + beta * EF KL + reg; beta = 1 reproduces the paper code, which has none)."""

from __future__ import annotations

from typing import Any

from models.spec import Knob, Mipet, ObjectiveSpec, positive, role

BETA = Knob(
    "beta", float, 1.0,
    "weight of the KL term of (mipet_)beta_vae (1.0 = the paper code, which has no beta) and "
    "of the TC term of (mipet_)betatcvae.",
    positive, "> 0",
)


def build(model: Any, cfg: Any) -> list:
    from models.objectives import KLTerm

    return [KLTerm(cfg.beta)]


SPEC = ObjectiveSpec(
    name="beta_vae", reference="Higgins et al. 2017", summary="rec + beta * KL",
    knobs=(BETA,), main=role(["beta"], ["beta"], ["kld"]), build=build,
    mipet=Mipet("mipet_vae"),
)

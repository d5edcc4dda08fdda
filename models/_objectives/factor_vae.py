"""Factor-VAE (Kim & Mnih 2018): rec + KL + gamma * the discriminator's total correlation
estimate. The discriminator is an adversary: a module of the model trained by its own Adam."""

from __future__ import annotations

from typing import Any

from models.spec import Adversary, Knob, Mipet, ObjectiveSpec, non_negative, positive, role

KNOBS = (
    Knob("factor_gamma", float, 10.0,
         "Factor-VAE weight of the discriminator's total correlation estimate.",
         non_negative, ">= 0 and finite"),
    Knob("factor_lr", float, 1e-4,
         "learning rate of the Factor-VAE discriminator's Adam (betas 0.5, 0.9).",
         positive, "> 0"),
)


def _discriminator(model: Any) -> Any:
    from models._adversary import FactorDiscriminator

    return FactorDiscriminator(model.cfg.latent_dim)


def _discriminator_loss(model: Any, module: Any, out: Any) -> Any:
    from models._adversary import factor_discriminator_loss

    return factor_discriminator_loss(module, out.z)


def build_stacked(model: Any, cfg: Any) -> list:
    from models.objectives import FactorTC

    return [FactorTC(cfg.factor_gamma, model.adversaries["factor"])]


def build(model: Any, cfg: Any) -> list:
    from models.objectives import KLTerm

    return [KLTerm(1.0), *build_stacked(model, cfg)]


SPEC = ObjectiveSpec(
    name="factor_vae", reference="Kim & Mnih 2018", summary="rec + KL + gamma * TC(discriminator)",
    knobs=KNOBS,
    main=role(["factor_gamma", "factor_lr"], ["factor_gamma"], ["kld", "factor_tc"]),
    build=build,
    stacked=role(["factor_gamma", "factor_lr"], ["factor_gamma"], ["factor_tc"]),
    build_stacked=build_stacked,
    adversaries=(Adversary("factor", "factor_lr", _discriminator, _discriminator_loss),),
    mipet=Mipet("mipet_factor_vae"),
)

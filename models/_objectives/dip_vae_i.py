"""DIP-VAE-I (Kumar et al. 2018): rec + KL + lambda_od sum_{i != j} C_ij^2 +
lambda_d sum_i (C_ii - 1)^2, C the covariance of mu over the batch. DIP-VAE-II shares its knobs."""

from __future__ import annotations

from typing import Any

from models.spec import Knob, Mipet, ObjectiveSpec, non_negative, role

KNOBS = (
    Knob("dip_lambda_od", float, 10.0, "DIP-VAE weight of the off-diagonal covariance penalty.",
         non_negative, ">= 0 and finite"),
    Knob("dip_lambda_d", float | None, None,
         "DIP-VAE weight of the diagonal covariance penalty; None = 10 x dip_lambda_od for "
         "DIP-VAE-I and 1 x dip_lambda_od for DIP-VAE-II.",
         lambda v: v is None or non_negative(v), ">= 0 (or null)"),
)
FIELDS = [k.name for k in KNOBS]


def dip_spec(kind: str, summary: str) -> ObjectiveSpec:
    """The record of DIP-VAE of `kind` 'i' or 'ii' (both read these knobs)."""

    def stacked(model: Any, cfg: Any) -> list:
        from models.objectives import DipTerm

        return [DipTerm(kind, cfg.dip_lambda_od, cfg.dip_lambda_d)]

    def build(model: Any, cfg: Any) -> list:
        from models.objectives import KLTerm

        return [KLTerm(1.0), *stacked(model, cfg)]

    return ObjectiveSpec(
        name=f"dip_vae_{kind}", reference="Kumar et al. 2018", summary=summary,
        knobs=KNOBS, main=role(FIELDS, FIELDS, ["kld", "dip"]), build=build,
        stacked=role(FIELDS, FIELDS, ["dip"]), build_stacked=stacked,
        mipet=Mipet(f"mipet_dip_vae_{kind}"),
    )


SPEC = dip_spec("i", "rec + KL + DIP-I(cov of mu)")

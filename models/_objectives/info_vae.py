"""InfoVAE (Zhao et al. 2019): rec + (1 - alpha) KL + (alpha + lambda - 1) MMD(q(z), p(z))."""

from __future__ import annotations

from typing import Any

from models.errors import ConfigError
from models.spec import Knob, Mipet, ObjectiveSpec, non_negative, role

KNOBS = (
    Knob("info_alpha", float, 0.0, "InfoVAE alpha: (1 - alpha) KL + (alpha + lambda - 1) MMD."),
    Knob("info_lambda", float, 2.0, "InfoVAE lambda (see info_alpha).",
         non_negative, ">= 0 and finite"),
)
_FIELDS = [k.name for k in KNOBS]


def check(cfg: Any, active: bool) -> None:
    """Both weights 1 - alpha and alpha + lambda - 1 must be >= 0 (in every config)."""
    if not (cfg.info_alpha <= 1 and cfg.info_alpha + cfg.info_lambda >= 1):
        raise ConfigError(
            "model.info_alpha must be <= 1 and info_alpha + info_lambda >= 1 (the KL and "
            f"MMD weights 1 - alpha and alpha + lambda - 1 must be >= 0), got "
            f"info_alpha={cfg.info_alpha}, info_lambda={cfg.info_lambda}"
        )


def build_stacked(model: Any, cfg: Any) -> list:
    from models.objectives import MMDTerm

    return [MMDTerm(cfg.info_alpha, cfg.info_lambda)]


def build(model: Any, cfg: Any) -> list:
    from models.objectives import KLTerm

    return [KLTerm(1.0 - cfg.info_alpha), *build_stacked(model, cfg)]


SPEC = ObjectiveSpec(
    name="info_vae", reference="Zhao et al. 2019",
    summary="rec + (1 - alpha) KL + (alpha + lambda - 1) MMD", knobs=KNOBS,
    main=role(_FIELDS, _FIELDS, ["kld", "mmd"]), build=build,
    stacked=role(_FIELDS, _FIELDS, ["mmd"]), build_stacked=build_stacked,
    mipet=Mipet("mipet_info_vae"), check=check,
)

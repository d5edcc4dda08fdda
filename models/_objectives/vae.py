"""The VAE (Kingma & Welling 2014): rec + KL. No MIPET variant: `mipet_vae` is MIPET on
beta-VAE, as in the paper."""

from __future__ import annotations

from typing import Any

from models.spec import ObjectiveSpec, role


def build(model: Any, cfg: Any) -> list:
    from models.objectives import KLTerm

    return [KLTerm(1.0)]


SPEC = ObjectiveSpec(
    name="vae", reference="Kingma & Welling 2014", summary="rec + KL",
    main=role(terms=["kld"]), build=build,
)

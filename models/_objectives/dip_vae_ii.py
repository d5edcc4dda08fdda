"""DIP-VAE-II (Kumar et al. 2018): as DIP-VAE-I on the covariance of q(z) (that of mu plus
mean_b diag(exp(logvar))); the knobs are DIP-VAE-I's."""

from __future__ import annotations

from typing import Any

from models._objectives.dip_vae_i import FIELDS, KNOBS, dip_terms
from models.spec import Mipet, ObjectiveSpec, role


def build(model: Any, cfg: Any) -> list:
    from models.objectives import KLTerm

    return [KLTerm(1.0), *dip_terms("ii", cfg)]


SPEC = ObjectiveSpec(
    name="dip_vae_ii", reference="Kumar et al. 2018", summary="rec + KL + DIP-II(cov of q(z))",
    knobs=KNOBS, main=role(FIELDS, FIELDS, ["kld", "dip"]), build=build,
    stacked=role(FIELDS, FIELDS, ["dip"]), build_stacked=lambda m, c: dip_terms("ii", c),
    mipet=Mipet("mipet_dip_vae_ii"),
)

"""beta-TCVAE (Chen et al. 2018): rec + alpha mi + beta tc + gamma dwkl on the pre-IPE sample;
stacked on another objective's KL it adds (beta - 1) tc."""

from __future__ import annotations

from typing import Any, Literal

from models._objectives.beta_vae import BETA
from models.spec import Knob, Mipet, ObjectiveSpec, at_least, non_negative, one_of, role

ALPHA = Knob("alpha", float, 1.0, "beta-TC weight of the mutual information term.",
             non_negative, ">= 0 and finite")
GAMMA = Knob("gamma", float, 1.0, "beta-TC weight of the dimension-wise KL term.",
             non_negative, ">= 0 and finite")
TC_ESTIMATOR = Knob(
    "tc_estimator", Literal["paper", "mss"], "paper",
    "'paper' (log importance weight added per latent dimension, as the paper code does) or "
    "'mss' (minibatch stratified sampling of Chen et al. 2018).",
    one_of("paper", "mss"), "'paper' or 'mss'",
)
DATASET_SIZE = Knob("dataset_size", int, 737_280,
                    "N of the beta-TC estimator (the trainer sets it from the dataset).",
                    at_least(2), ">= 2")


def _betatc(cfg: Any) -> Any:
    from models.objectives import BetaTC

    return BetaTC(cfg.alpha, cfg.beta, cfg.gamma, cfg.tc_estimator, cfg.dataset_size)


def build(model: Any, cfg: Any) -> list:
    return [_betatc(cfg)]


def build_stacked(model: Any, cfg: Any) -> list:
    """beta-TCVAE on top of a KL: (beta - 1) * tc, so KL + that = mi + beta tc + dwkl."""
    tc = _betatc(cfg)
    tc.weights = {"tc": cfg.beta - 1.0}
    return [tc]


SPEC = ObjectiveSpec(
    name="betatcvae", reference="Chen et al. 2018",
    summary="rec + alpha mi + beta tc + gamma dwkl (on the pre-IPE z)",
    knobs=(ALPHA, BETA, GAMMA, TC_ESTIMATOR, DATASET_SIZE),
    main=role(["alpha", "beta", "gamma", "tc_estimator", "dataset_size"],
              ["alpha", "beta", "gamma"], ["mi", "tc", "dwkl"]),
    build=build,
    stacked=role(["beta", "tc_estimator", "dataset_size"], ["beta"], ["tc"]),
    build_stacked=build_stacked,
    mipet=Mipet("mipet_betatcvae"),
)

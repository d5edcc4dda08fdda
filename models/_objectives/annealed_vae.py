"""The annealed VAE, controlled capacity increase (Burgess et al. 2018): rec + gamma |KL - C(step)|
with C(step) = min(capacity_max, capacity_max * step / capacity_steps)."""

from __future__ import annotations

from typing import Any

from models.spec import Knob, Mipet, ObjectiveSpec, at_least, non_negative, role

KNOBS = (
    Knob("capacity_gamma", float, 1000.0, "annealed VAE weight gamma of |KL - C(step)|.",
         non_negative, ">= 0 and finite"),
    Knob("capacity_max", float, 25.0, "annealed VAE final capacity C (nats).",
         non_negative, ">= 0 and finite"),
    Knob("capacity_steps", int, 100_000, "annealed VAE steps over which C grows to capacity_max.",
         at_least(1), ">= 1"),
)
_FIELDS = [k.name for k in KNOBS]


def build(model: Any, cfg: Any) -> list:
    from models.objectives import CapacityTerm

    return [CapacityTerm(cfg.capacity_gamma, cfg.capacity_max, cfg.capacity_steps)]


SPEC = ObjectiveSpec(
    name="annealed_vae", reference="Burgess et al. 2018", summary="rec + gamma |KL - C(step)|",
    knobs=KNOBS, main=role(_FIELDS, _FIELDS[:2], ["capacity"]), build=build,
    stacked=role(_FIELDS, _FIELDS[:2], ["capacity"]), build_stacked=build,
    mipet=Mipet("mipet_annealed_vae"),
)

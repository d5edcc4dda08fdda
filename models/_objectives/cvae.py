"""The conditional VAE (Sohn et al. 2015): rec + KL, the encoder and the decoder given the classes
of the `condition_on` factors (one-hot; the encoder's as extra channels tiled to the image size).
The IFCVAE shares its condition knobs."""

from __future__ import annotations

from typing import Any

from models.errors import ConfigError
from models.spec import Knob, ObjectiveSpec, role

CONDITION_ON = Knob(
    "condition_on", tuple[str, ...], (),
    "factor names of the dataset a conditional model (cvae, ifcvae) is given, e.g. [shape, "
    "scale]; the conditional models need it, the others refuse it.",
)
CONDITION_CLASSES = Knob(
    "condition_classes", tuple[int, ...], (),
    "the class count of each condition_on factor (the trainer sets them from the dataset, as "
    "it sets dataset_size; empty until then).",
)
KNOBS = (CONDITION_ON, CONDITION_CLASSES)
FIELDS = [k.name for k in KNOBS]


def check(cfg: Any, active: bool) -> None:
    """No factor twice; a class count >= 1 for each factor once the counts are set."""
    if len(set(cfg.condition_on)) != len(cfg.condition_on):
        raise ConfigError(f"model.condition_on lists a factor twice: {list(cfg.condition_on)}")
    if cfg.condition_classes and (
        len(cfg.condition_classes) != len(cfg.condition_on) or min(cfg.condition_classes) < 1
    ):
        raise ConfigError(
            "model.condition_classes must give a class count >= 1 for each of "
            f"{list(cfg.condition_on)}, got {list(cfg.condition_classes)}"
        )


def build(model: Any, cfg: Any) -> list:
    from models.objectives import KLTerm

    return [KLTerm(1.0)]


SPEC = ObjectiveSpec(
    name="cvae", reference="Sohn et al. 2015", summary="rec + KL, given the classes",
    knobs=KNOBS, main=role(FIELDS, terms=["kld"]), build=build, conditioning="encoder",
    check=check,
)

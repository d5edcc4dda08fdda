"""The objective registry: one line per objective in `MODULES`, each naming a module of this
package whose `SPEC` is the objective's record (`models.spec.ObjectiveSpec`).

Adding an objective is one new file here plus its line below (docs/recipes/add_objective.md).
The order is the order of `ModelConfig`'s objective fields, of the registered models and of a
model's adversaries. Loading checks every record (`models.spec.check_spec`), that the module is
named after its objective, that no two objectives register one model name, and that a field two
objectives share is one `Knob` object. Torch-free: configs read this without torch.
"""

from __future__ import annotations

import importlib
from typing import Iterable

from models.spec import Knob, ObjectiveSpec, check_spec

__all__ = ["MODULES", "OBJECTIVES", "KNOBS", "load"]

MODULES = (
    "vae",
    "beta_vae",
    "betatcvae",
    "annealed_vae",
    "factor_vae",
    "dip_vae_i",
    "dip_vae_ii",
    "info_vae",
    "cvae",
    "ifcvae",
    "commutative",
)


def load(modules: Iterable[str]) -> tuple[dict[str, ObjectiveSpec], dict[str, Knob]]:
    """The records of `modules` (names in this package) by objective name, and their knobs by
    field name, in order.

    Raises:
        ValueError: one line naming the module or objective and the part that is wrong.
    """
    specs: dict[str, ObjectiveSpec] = {}
    knobs: dict[str, Knob] = {}
    models: dict[str, str] = {}
    for module in modules:
        spec = getattr(importlib.import_module(f"{__name__}.{module}"), "SPEC", None)
        if spec is None:
            raise ValueError(f"models/_objectives/{module}.py defines no SPEC (its "
                             "models.spec.ObjectiveSpec record)")
        check_spec(spec)
        if spec.name != module:
            raise ValueError(f"models/_objectives/{module}.py holds objective {spec.name!r}: "
                             f"name the file {spec.name}.py")
        for name in spec.model_names:
            if name in models:
                raise ValueError(f"objective {spec.name!r}: model name {name!r} is taken by "
                                 f"objective {models[name]!r}")
            models[name] = spec.name
        for knob in spec.knobs:
            if knobs.setdefault(knob.name, knob) is not knob:
                raise ValueError(
                    f"objective {spec.name!r}: knob {knob.name!r} is defined twice; import the "
                    "Knob of the objective that defines it"
                )
        specs[spec.name] = spec
    return specs, knobs


OBJECTIVES, KNOBS = load(MODULES)

"""The record of an objective: everything the rest of the code asks about it, as plain data.

One file per objective under `models/_objectives/` holds an `ObjectiveSpec` named `SPEC`, and one
line in `models/_objectives/__init__.py` registers it (docs/recipes/add_objective.md). From the
records come `ModelConfig`'s objective fields (with their defaults and checks), the registered
model names (the baseline and the MIPET variant), `used_fields`, `loss_weight_fields`, the loss
terms of a forward and the adversarial modules of a model.

This module imports no torch, and neither may an objective module at import time: configs are
read without torch. A record's builders (`build`, `build_stacked`, an adversary's `build` and
`loss`) run only when a model is built, and import the torch-backed loss terms
(`models.objectives`) and modules (`models._adversary`) inside their bodies.

`check_spec` refuses an incomplete or inconsistent record with one line naming the objective and
the part; the registry calls it on every record at import, so a missing part fails there.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal

from models.errors import ConfigError

__all__ = [
    "Knob", "Role", "Adversary", "Mipet", "ObjectiveSpec", "check_spec", "role",
    "non_negative", "positive", "at_least", "one_of", "CONDITIONING",
]

# A builder: (model, cfg) -> the objective's loss terms (`models.objectives.Objective` objects),
# evaluated in the model's forward in list order.
Builder = Callable[[Any, Any], list]


@dataclass(frozen=True)
class Knob:
    """One `ModelConfig` field that an objective owns.

    Attributes:
        name: the field name (the YAML key under `model:`).
        type: its annotation as a type object (`float`, `int`, `float | None`,
            `Literal["paper", "mss"]`, `tuple[str, ...]`); `from_dict` coerces YAML and CLI
            values to it.
        default: the default value (immutable: use tuples, not lists).
        doc: one sentence for `ModelConfig`'s docstring.
        check: `check(value) -> bool`, True when the value is valid; None accepts any value of
            the type. Every knob is checked in every config, used by the model or not.
        rule: what a valid value is, for the error "model.<name> must be <rule>, got <value>".
    """

    name: str
    type: Any
    default: Any
    doc: str
    check: Callable[[Any], bool] | None = None
    rule: str = ""

    def validate(self, value: Any) -> None:
        """Raise ConfigError when `check(value)` is False."""
        if self.check is not None and not self.check(value):
            raise ConfigError(f"model.{self.name} must be {self.rule}, got {value!r}")


def non_negative(value: Any) -> bool:
    """value >= 0 and finite (a loss weight)."""
    return value >= 0 and math.isfinite(value)


def positive(value: Any) -> bool:
    """value > 0 and finite (a learning rate, beta)."""
    return value > 0 and math.isfinite(value)


def at_least(low: int) -> Callable[[Any], bool]:
    """A check for value >= low."""
    return lambda value: value >= low


def one_of(*choices: Any) -> Callable[[Any], bool]:
    """A check for value in choices."""
    return lambda value: value in choices


@dataclass(frozen=True)
class Role:
    """One role of an objective: the config fields it reads, which of them are continuous loss
    weights (schedulable with `VAE.set_loss_weights`), and the names of the weighted loss terms
    it adds to a forward's `weights`."""

    fields: frozenset[str] = frozenset()
    weights: frozenset[str] = frozenset()
    terms: frozenset[str] = frozenset()


def role(fields: Iterable[str] = (), weights: Iterable[str] = (),
         terms: Iterable[str] = ()) -> Role:
    """A `Role` from any iterables of names."""
    return Role(frozenset(fields), frozenset(weights), frozenset(terms))


@dataclass(frozen=True)
class Adversary:
    """A module with its own optimizer (Adam), stepped by the training loop after each main step.

    It lives at `model.adversaries[key]` (so it is in the state dict, under `adversaries.<key>.`,
    and outside the main optimizer). The model builds one for each objective that is its own or
    stacked on it.

    Attributes:
        key: the module's name in `model.adversaries`; its logged loss is `<key>_disc`.
        lr_field: the knob holding its Adam learning rate.
        build: `build(model) -> nn.Module`, the freshly initialised module.
        loss: `loss(model, module, out) -> scalar tensor`, what it minimises, from a forward's
            `ModelOutput` (read it detached).
        betas: Adam's betas ((0.5, 0.9), as disentanglement_lib's Factor-VAE).
    """

    key: str
    lr_field: str
    build: Callable[[Any], Any]
    loss: Callable[[Any, Any, Any], Any]
    betas: tuple[float, float] = (0.5, 0.9)


@dataclass(frozen=True)
class Mipet:
    """The MIPET variant of an objective: its registered name and its default K (num_ipe)."""

    name: str
    num_ipe: int = 3


CONDITIONING = ("encoder", "label_encoder")


@dataclass(frozen=True)
class ObjectiveSpec:
    """An objective: its fields, roles, builders, adversaries, variants and reference.

    Attributes:
        name: the objective's name, also the registered name of its baseline model (K = 0) and
            its value in `model.loss_terms`.
        reference: the paper the formula comes from (shown in the model class's docstring).
        summary: the loss in one line, e.g. "rec + beta * KL".
        knobs: the `ModelConfig` fields it owns. A field shared by two objectives is one `Knob`
            object, defined by one and imported by the other (e.g. `beta`).
        main: the fields, weights and terms of the objective as a model's own.
        build: `build(model, cfg) -> [loss terms]`, the objective as a model's own (its
            divergence and regularisers; the reconstruction and the EF regulariser are added by
            the model).
        stacked: the role of the regulariser it adds when stacked on another objective with
            `loss_terms: [...]`, or None when it cannot be stacked.
        build_stacked: the builder of that regulariser; given exactly when `stacked` is.
        adversaries: the adversarial modules it needs, own or stacked.
        mipet: the MIPET variant (IPE maps on this objective), or None for none.
        conditioning: None for an unsupervised objective; "encoder": the encoder and decoder
            read the given classes of the conditioned factors (cvae); "label_encoder": the
            decoder reads a label encoder's prediction of them from x (ifcvae). Either needs
            labels (`model.condition_on`).
        lie_group: the model uses the Lie group networks (commutative) instead of
            `encoder`/`decoder`.
        check: `check(cfg, active)`: cross-field checks of its knobs (raise ConfigError), run
            for every config after the knob checks; `active` is whether the objective is the
            model's own or stacked on it.
    """

    name: str
    reference: str
    summary: str
    main: Role
    build: Builder
    knobs: tuple[Knob, ...] = ()
    stacked: Role | None = None
    build_stacked: Builder | None = None
    adversaries: tuple[Adversary, ...] = ()
    mipet: Mipet | None = None
    conditioning: Literal["encoder", "label_encoder"] | None = None
    lie_group: bool = False
    check: Callable[[Any, bool], None] | None = field(default=None, compare=False)

    @property
    def needs_labels(self) -> bool:
        """Whether its models are conditional (forward takes the conditioned classes)."""
        return self.conditioning is not None

    @property
    def model_names(self) -> tuple[str, ...]:
        """The registered models of this objective: the baseline and the MIPET variant."""
        return (self.name,) if self.mipet is None else (self.name, self.mipet.name)


def check_spec(spec: Any, common_fields: Iterable[str] = ()) -> None:
    """Refuse an incomplete or inconsistent record, naming the objective and the part.

    Args:
        spec: the record (what an objective module calls `SPEC`).
        common_fields: the `ModelConfig` fields that are not any objective's knobs (a role may
            read them, e.g. `dense_dim`).
    Raises:
        ValueError: one line, e.g. "objective 'toy': weight 'w' of its main role is not a field
            it reads".
    """
    if not isinstance(spec, ObjectiveSpec):
        raise ValueError(f"an objective record must be a models.spec.ObjectiveSpec, got "
                         f"{type(spec).__name__}")
    where = f"objective {spec.name!r}"

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(f"{where}: {what}")

    need(bool(re.fullmatch(r"[a-z][a-z0-9_]*", spec.name)), "name must be lower_snake_case")
    need(bool(spec.reference.strip()), "reference is empty (name the paper)")
    need(bool(spec.summary.strip()), "summary is empty (the loss in one line)")
    need(callable(spec.build), "build must be a function (model, cfg) -> [loss terms]")
    need((spec.stacked is None) == (spec.build_stacked is None),
         "stacked and build_stacked must be given together (or neither)")
    need(spec.build_stacked is None or callable(spec.build_stacked),
         "build_stacked must be a function (model, cfg) -> [loss terms]")
    knobs = {k.name: k for k in spec.knobs}
    need(len(knobs) == len(spec.knobs), "a knob is listed twice")
    common = frozenset(common_fields)
    known = set(knobs) | common
    roles = [("main", spec.main)] + ([("stacked", spec.stacked)] if spec.stacked else [])
    for label, r in roles:
        need(isinstance(r, Role), f"{label} must be a models.spec.Role")
        need(bool(r.terms), f"its {label} role adds no loss term (list the weighted terms)")
        for w in sorted(r.weights - r.fields):
            need(False, f"weight {w!r} of its {label} role is not a field it reads")
        for f in sorted(r.fields - known) if common else ():
            need(False, f"field {f!r} of its {label} role is neither its knob nor a "
                        "ModelConfig field")
    read = spec.main.fields | (spec.stacked.fields if spec.stacked else frozenset())
    for name, knob in knobs.items():
        need(name in read, f"knob {name!r} is read by none of its roles")
        need(knob.type is not None and bool(knob.doc.strip()), f"knob {name!r} needs a type and "
                                                                "a doc")
        need(knob.check is None or bool(knob.rule), f"knob {name!r} has a check but no rule")
        try:
            knob.validate(knob.default)
        except ConfigError as exc:
            need(False, f"the default of knob {name!r} fails its own check ({exc})")
    for adv in spec.adversaries:
        need(isinstance(adv, Adversary), "adversaries must be models.spec.Adversary records")
        need(adv.lr_field in knobs, f"adversary {adv.key!r}: lr_field {adv.lr_field!r} is not "
                                    "one of its knobs")
        need(callable(adv.build) and callable(adv.loss),
             f"adversary {adv.key!r}: build and loss must be functions")
    if spec.mipet is not None:
        need(spec.mipet.name.startswith("mipet_"), "its MIPET variant's name must start with "
                                                   "'mipet_'")
        need(1 <= spec.mipet.num_ipe <= 64, "its MIPET variant's num_ipe must be in [1, 64]")
        need(spec.conditioning is None, "a conditional objective has no MIPET variant (MIPET "
                                        "is unsupervised)")
    need(spec.conditioning in (None, *CONDITIONING),
         f"conditioning must be None or one of {list(CONDITIONING)}")

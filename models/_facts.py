"""What configs need to know of each model and objective, as plain data (no torch).

`ModelConfig` validation, `used_fields`, `loss_weight_fields` and the search-space checks read
these tables, so building a config imports no torch. The objectives' records are in
`models._objectives` (one module each); the registered models (each objective's baseline and its
MIPET variant) are derived here, and `models._registry` makes a class for each.

An objective has a `main` role (the model's own objective: its divergence and regularisers) and,
if it can be stacked with `loss_terms: [...]`, a `stacked` role: the regulariser it adds on top of
another objective (disentanglement-pytorch's `--loss_terms`). Two objectives of one model may not
share a knob or a loss term (two capacity terms, beta-VAE's and beta-TCVAE's `beta`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from models._objectives import OBJECTIVES
from models.errors import ConfigError
from models.spec import ObjectiveSpec, Role
from models.strict import nearest

__all__ = [
    "ModelFacts", "Role", "OBJECTIVES", "MODEL_FACTS", "used_fields", "loss_weight_fields",
    "check_loss_terms", "ARCHITECTURES", "MODEL_NAMES",
]

ARCHITECTURES = ("paper", "conv64", "mlp")

COMMON = frozenset({"name", "image_channels", "latent_dim", "recon_loss", "rec_weight",
                    "loss_terms"})
NETS = frozenset({"dense_dim", "encoder", "decoder"})  # the standard (non-Lie) networks
IPE = frozenset({"num_ipe", "ipe_symmetric", "ef_conversion", "calibration", "keep_dead_params"})


@dataclass(frozen=True)
class ModelFacts:
    """A registered model: its objective, default K, network family and the fields it reads."""

    name: str
    objective: str
    default_num_ipe: int

    @property
    def spec(self) -> ObjectiveSpec:
        return OBJECTIVES[self.objective]

    @property
    def lie_group(self) -> bool:
        return self.spec.lie_group

    @property
    def fields(self) -> frozenset[str]:
        nets = frozenset() if self.lie_group else NETS
        ipe = IPE if self.default_num_ipe > 0 else frozenset()
        return COMMON | nets | ipe | self.spec.main.fields

    @property
    def needs_labels(self) -> bool:
        return self.spec.needs_labels


def _model_facts() -> dict[str, ModelFacts]:
    out: dict[str, ModelFacts] = {}
    for name, spec in OBJECTIVES.items():
        out[name] = ModelFacts(name, name, 0)
        if spec.mipet is not None:
            out[spec.mipet.name] = ModelFacts(spec.mipet.name, name, spec.mipet.num_ipe)
    return out


MODEL_FACTS: dict[str, ModelFacts] = _model_facts()
MODEL_NAMES: tuple[str, ...] = tuple(MODEL_FACTS)  # every registered model name, torch-free


def facts(name: str) -> ModelFacts:
    """The facts of model `name`. Raises ConfigError for an unknown name."""
    if name not in MODEL_FACTS:
        raise ConfigError(f"model.name {name!r} is unknown; {nearest(name, MODEL_FACTS)}")
    return MODEL_FACTS[name]


def used_fields(name: str, loss_terms: Iterable[str] = ()) -> frozenset[str]:
    """The ModelConfig fields that model `name` (with `loss_terms` stacked) reads; sweeping any
    other field is a mistake.

    Raises:
        ConfigError: for an unknown model or objective name.
    """
    out = facts(name).fields
    for term in loss_terms:
        role = _stacked_role(term)
        out |= role.fields
    return out


def loss_weight_fields(name: str, loss_terms: Iterable[str] = ()) -> frozenset[str]:
    """The ModelConfig fields of model `name` (and of the `loss_terms` stacked on it) that are
    continuous loss weights and may be scheduled during training (`VAE.set_loss_weights`).

    Example:
        >>> sorted(loss_weight_fields("factor_vae", ["dip_vae_i"]))
        ['dip_lambda_d', 'dip_lambda_od', 'factor_gamma', 'rec_weight']
    """
    out = {"rec_weight"} | OBJECTIVES[facts(name).objective].main.weights
    for term in loss_terms:
        out |= _stacked_role(term).weights
    return frozenset(out)


def _stacked_role(term: str) -> Role:
    if term not in OBJECTIVES:
        raise ConfigError(f"model.loss_terms: {term!r} is not an objective; "
                          f"{nearest(term, OBJECTIVES)}")
    obj = OBJECTIVES[term]
    if obj.stacked is None:
        stackable = sorted(n for n, o in OBJECTIVES.items() if o.stacked is not None)
        raise ConfigError(
            f"model.loss_terms: {term!r} adds no regulariser of its own to stack; stack one of "
            f"{', '.join(stackable)}"
        )
    return obj.stacked


def check_loss_terms(name: str, loss_terms: Iterable[str], *, has_labels: bool = False) -> None:
    """Refuse a duplicate or incompatible stack, naming both parts, in one line.

    Raises:
        ConfigError: unknown or unstackable objective, an objective twice (or the model's own),
            two objectives that share a knob or a loss term, or a conditional objective on a
            model without labels.
    """
    own = facts(name).objective
    seen: list[tuple[str, Role]] = [(own, OBJECTIVES[own].main)]
    for term in loss_terms:
        role = _stacked_role(term)
        if OBJECTIVES[term].needs_labels and not has_labels:
            raise ConfigError(
                f"model.loss_terms: {term!r} is conditional and needs labels, but {name!r} has "
                "none; use a conditional model (model.condition_on) or drop it"
            )
        for other, other_role in seen:
            if other == term:
                what = "the model's own objective" if other == own else "listed twice"
                raise ConfigError(f"model.loss_terms: {term!r} is {what} (model {name!r})")
            shared = sorted((role.terms & other_role.terms) | (role.weights & other_role.weights))
            if shared:
                raise ConfigError(
                    f"model.loss_terms: {term!r} cannot be stacked with {other!r}: both set "
                    f"{', '.join(shared)}"
                )
        seen.append((term, role))

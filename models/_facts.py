"""What configs need to know of each model and objective, as plain data (no torch).

`ModelConfig` validation, `used_fields`, `loss_weight_fields` and the search-space checks read
these tables, so building a config imports no torch. The model classes (`models._vae`) take their
class attributes from here when they register; a test checks that every fact has a class.

An objective has a `main` role (the model's own objective: its divergence and regularisers) and,
if it can be stacked with `loss_terms: [...]`, a `stacked` role: the regulariser it adds on top of
another objective (disentanglement-pytorch's `--loss_terms`). Two objectives of one model may not
share a knob or a loss term (two capacity terms, beta-VAE's and beta-TCVAE's `beta`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from models.errors import ConfigError
from models.strict import nearest

__all__ = [
    "ObjectiveFacts", "ModelFacts", "Role", "OBJECTIVES", "MODEL_FACTS", "used_fields",
    "loss_weight_fields", "check_loss_terms", "ARCHITECTURES",
]

ARCHITECTURES = ("paper", "conv64", "mlp")

COMMON = frozenset({"name", "image_channels", "latent_dim", "recon_loss", "rec_weight",
                    "loss_terms"})
NETS = frozenset({"dense_dim", "encoder", "decoder"})  # the standard (non-Lie) networks
IPE = frozenset({"num_ipe", "ipe_symmetric", "ef_conversion", "calibration", "keep_dead_params"})
LIE = frozenset({
    "hy_rec", "hy_hes", "hy_commute", "forward_eq_prob", "subgroup_sizes", "subspace_sizes",
    "keep_dead_params", "dense_dim",
})


@dataclass(frozen=True)
class Role:
    """One role of an objective: the config fields it reads, which of them are continuous loss
    weights (schedulable), and the names of the weighted loss terms it adds."""

    fields: frozenset[str] = frozenset()
    weights: frozenset[str] = frozenset()
    terms: frozenset[str] = frozenset()


def _role(fields: Iterable[str] = (), weights: Iterable[str] = (),
          terms: Iterable[str] = ()) -> Role:
    return Role(frozenset(fields), frozenset(weights), frozenset(terms))


@dataclass(frozen=True)
class ObjectiveFacts:
    """An objective: its roles, whether it needs labels, and where its formula comes from."""

    name: str
    main: Role
    stacked: Role | None
    reference: str
    needs_labels: bool = False


_BETATC = ("alpha", "beta", "gamma", "tc_estimator", "dataset_size")
_CAPACITY = ("capacity_gamma", "capacity_max", "capacity_steps")
_DIP = ("dip_lambda_od", "dip_lambda_d")
_INFO = ("info_alpha", "info_lambda")
_COND = ("condition_on", "condition_classes")
_IFC = ("ifc_w_le", "ifc_w_aux", "ifc_lr")

OBJECTIVES: dict[str, ObjectiveFacts] = {o.name: o for o in [
    ObjectiveFacts("vae", _role(terms=["kld"]), None, "Kingma & Welling 2014"),
    ObjectiveFacts("beta_vae", _role(["beta"], ["beta"], ["kld"]), None, "Higgins et al. 2017"),
    ObjectiveFacts(
        "betatcvae", _role(_BETATC, ["alpha", "beta", "gamma"], ["mi", "tc", "dwkl"]),
        _role(["beta", "tc_estimator", "dataset_size"], ["beta"], ["tc"]), "Chen et al. 2018",
    ),
    ObjectiveFacts(
        "annealed_vae", _role(_CAPACITY, _CAPACITY[:2], ["capacity"]),
        _role(_CAPACITY, _CAPACITY[:2], ["capacity"]), "Burgess et al. 2018",
    ),
    ObjectiveFacts(
        "factor_vae", _role(["factor_gamma"], ["factor_gamma"], ["kld", "factor_tc"]),
        _role(["factor_gamma"], ["factor_gamma"], ["factor_tc"]), "Kim & Mnih 2018",
    ),
    ObjectiveFacts(
        "dip_vae_i", _role(_DIP, _DIP, ["kld", "dip"]), _role(_DIP, _DIP, ["dip"]),
        "Kumar et al. 2018",
    ),
    ObjectiveFacts(
        "dip_vae_ii", _role(_DIP, _DIP, ["kld", "dip"]), _role(_DIP, _DIP, ["dip"]),
        "Kumar et al. 2018",
    ),
    ObjectiveFacts(
        "info_vae", _role(_INFO, _INFO, ["kld", "mmd"]), _role(_INFO, _INFO, ["mmd"]),
        "Zhao et al. 2019",
    ),
    ObjectiveFacts("cvae", _role(_COND, terms=["kld"]), None, "Sohn et al. 2015",
                   needs_labels=True),
    ObjectiveFacts(
        "ifcvae",
        _role(_COND + _IFC, _IFC[:2], ["kld", "ifc_le", "ifc_le_recon", "ifc_aux"]), None,
        "Creswell et al. 2017 (IFcVAE-GAN)", needs_labels=True,
    ),
    ObjectiveFacts(
        "commutative",
        _role(LIE, ["hy_rec", "hy_hes", "hy_commute"], ["kld", "hessian", "commute", "group_rec"]),
        None, "Zhu et al. 2021 (CLG-VAE)",
    ),
]}


@dataclass(frozen=True)
class ModelFacts:
    """A registered model: its objective, default K, network family and the fields it reads."""

    name: str
    objective: str
    default_num_ipe: int
    lie_group: bool = False

    @property
    def fields(self) -> frozenset[str]:
        nets = frozenset() if self.lie_group else NETS
        ipe = IPE if self.default_num_ipe > 0 else frozenset()
        return COMMON | nets | ipe | OBJECTIVES[self.objective].main.fields

    @property
    def needs_labels(self) -> bool:
        return OBJECTIVES[self.objective].needs_labels


def _model_facts() -> dict[str, ModelFacts]:
    out = {
        "mipet_commutative": ModelFacts("mipet_commutative", "commutative", 1, lie_group=True),
        "commutative": ModelFacts("commutative", "commutative", 0, lie_group=True),
    }
    for name, obj in OBJECTIVES.items():
        if obj.name == "commutative":
            continue
        out[name] = ModelFacts(name, name, 0)
        if name == "vae" or obj.needs_labels:
            continue  # mipet_vae is MIPET on beta-VAE, as in the paper; MIPET is unsupervised
        mipet = "mipet_vae" if name == "beta_vae" else f"mipet_{name}"
        out[mipet] = ModelFacts(mipet, name, 3)
    return out


MODEL_FACTS: dict[str, ModelFacts] = _model_facts()


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

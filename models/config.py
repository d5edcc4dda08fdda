"""`ModelConfig`: the one frozen description of a model.

Defaults are the paper's published run (GIST-IRR/MIPET-VAEs run.sh; docs/paper_code.md):
latent size 10, K = 3 IPE maps (1 for the commutative model), alpha = beta = gamma = 1, hy_rec
0.1, hy_hes 40, hy_commute 20, forward_eq_prob 0.2, every behaviour of the paper code kept.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
import typing
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from models._facts import ARCHITECTURES, check_loss_terms, facts
from models._objectives import KNOBS, OBJECTIVES
from models.errors import ConfigError
from models.spec import check_spec
from models.strict import from_dict, to_dict

__all__ = ["ModelConfig"]


def with_objective_knobs(cls: type) -> type:
    """Add every registered objective's knobs (`models._objectives.KNOBS`) to `cls` as fields
    with their defaults, and their docs to its docstring, before `dataclass` makes it a
    dataclass; check each objective record against the resulting fields.

    Raises:
        ValueError: at import, for a knob named like a common field or a record that reads a
            field `ModelConfig` lacks.
    """
    own = dict(cls.__annotations__)
    for name, knob in KNOBS.items():
        if name in own:
            raise ValueError(f"knob {name!r} of an objective is a common ModelConfig field; "
                             "rename it")
        cls.__annotations__[name] = knob.type
        setattr(cls, name, knob.default)
    for spec in OBJECTIVES.values():
        check_spec(spec, common_fields=own)
    docs = "\n".join(textwrap.fill(f"{name}: {knob.doc}", 99, initial_indent=" " * 8,
                                    subsequent_indent=" " * 12) for name, knob in KNOBS.items())
    cls.__doc__ = (cls.__doc__ or "") + f"""
    Objective fields (each objective's record in models/_objectives/ defines its own):
{docs}
    """
    return cls


@dataclass(frozen=True)
@with_objective_knobs
class ModelConfig:
    """Every knob of a model. Construct with `ModelConfig.from_dict(d)` (strict keys) or directly.

    Fields a model does not read are listed by `models.used_fields(name)`. The common fields are
    below; each objective adds its own (its knobs, `models.spec.Knob`), listed after them.

    Attributes:
        name: registry name (`models.MODELS`).
        image_channels: 1 (dSprites) or 3 (3D Shapes, Cars3D, MPI3D).
        latent_dim: d, the number of latent units (the commutative models need
            d == sum(subspace_sizes)).
        dense_dim: (h0, h1) hidden sizes; h0 must be 256 (the conv flatten size 64*2*2), h1 is the
            encoder/decoder hidden width (paper: 128 on dSprites, 256 elsewhere).
        recon_loss: 'bce' (sum over pixels, for binary images), 'mse' (sum), or 'auto' (bce for
            1 channel, mse for 3; resolved at construction).
        num_ipe: K, the number of IPE maps; 0 gives the baseline. None picks the model's default:
            3 for the mipet_ models, 1 for mipet_commutative, 0 for the baselines.
        ipe_symmetric: IPE maps use exp of the symmetrised matrices (False: exp of the raw ones).
        ef_conversion: use the EF conversion and its regulariser (False: IPE maps alone).
        calibration: add the KL calibration term to the regulariser.
        keep_dead_params: keep the paper code's never-trained parameters (EF `nu` and
            `post_carrier`, the Lie encoder's unused heads) so that parameter counts and state
            dicts match the paper code; False drops them (same maths, smaller model).
        rec_weight: weight of the reconstruction term (1.0 = every published objective).
        loss_terms: objectives whose regularisers are added to the model's own
            (disentanglement-pytorch's `--loss_terms`), e.g. [dip_vae_i, betatcvae].
        encoder, decoder: network family: 'paper' (the paper code's per-dataset networks),
            'conv64' (disentanglement_lib's conv encoder / deconv decoder) or 'mlp' (dense
            1200-1200, Chen et al.'s dSprites MLP). The Lie models have their own networks.
    """

    name: str = "mipet_vae"
    image_channels: int = 1
    latent_dim: int = 10
    dense_dim: tuple[int, ...] = (256, 128)
    recon_loss: Literal["auto", "bce", "mse"] = "auto"
    num_ipe: int | None = None
    ipe_symmetric: bool = True
    ef_conversion: bool = True
    calibration: bool = True
    keep_dead_params: bool = True
    rec_weight: float = 1.0
    loss_terms: tuple[str, ...] = ()
    encoder: Literal["paper", "conv64", "mlp"] = "paper"
    decoder: Literal["paper", "conv64", "mlp"] = "paper"

    def __post_init__(self) -> None:
        cls = facts(self.name)  # plain data: no torch import
        if isinstance(self.loss_terms, str):
            object.__setattr__(self, "loss_terms", (self.loss_terms,))
        value = self.dense_dim
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"model.dense_dim must be a list of integers, got {value!r}")
        object.__setattr__(self, "dense_dim", tuple(int(v) for v in value))
        if self.image_channels not in (1, 3):
            raise ConfigError(f"model.image_channels must be 1 or 3, got {self.image_channels}")
        if not 1 <= self.latent_dim <= 1024:
            raise ConfigError(f"model.latent_dim must be in [1, 1024], got {self.latent_dim}")
        if len(self.dense_dim) != 2 or self.dense_dim[0] != 256 or self.dense_dim[1] < 1:
            raise ConfigError(
                "model.dense_dim must be [256, h1] with h1 >= 1 (256 is the conv flatten size "
                f"64*2*2), got {list(self.dense_dim)}"
            )
        if self.recon_loss == "auto":
            object.__setattr__(self, "recon_loss", "bce" if self.image_channels == 1 else "mse")
        if self.recon_loss not in ("bce", "mse"):
            raise ConfigError(
                f"model.recon_loss must be 'auto', 'bce' or 'mse', got {self.recon_loss!r}"
            )
        if self.num_ipe is None:
            object.__setattr__(self, "num_ipe", cls.default_num_ipe)
        if not 0 <= self.num_ipe <= 64:
            raise ConfigError(f"model.num_ipe must be in [0, 64], got {self.num_ipe}")
        if cls.default_num_ipe == 0 and self.num_ipe != 0:
            raise ConfigError(
                f"model.num_ipe must be 0 for the baseline {self.name!r}, got {self.num_ipe}; "
                f"use the mipet_ variant for IPE maps"
            )
        if not (self.rec_weight >= 0 and math.isfinite(self.rec_weight)):
            raise ConfigError(f"model.rec_weight must be >= 0 and finite, got {self.rec_weight}")
        for fld in ("encoder", "decoder"):
            value = getattr(self, fld)
            if value not in ARCHITECTURES:
                raise ConfigError(
                    f"model.{fld} must be one of {list(ARCHITECTURES)}, got {value!r}"
                )
            if cls.lie_group and value != "paper":
                raise ConfigError(
                    f"model.{fld}={value!r}: {self.name!r} has its own Lie group networks; "
                    "leave it at 'paper'"
                )
        object.__setattr__(self, "loss_terms", tuple(str(t) for t in self.loss_terms))
        check_loss_terms(self.name, self.loss_terms, has_labels=cls.needs_labels)
        self._check_knobs()
        self._check_condition()

    def _check_knobs(self) -> None:
        """Every objective's knobs (list knobs made tuples), then each objective's own checks."""
        for name, knob in KNOBS.items():
            value = getattr(self, name)
            if typing.get_origin(knob.type) is tuple:
                if isinstance(value, str):
                    value = (value,)
                if not isinstance(value, (list, tuple)):
                    raise ConfigError(f"model.{name} must be a list, got {value!r}")
                inner = typing.get_args(knob.type)[0]
                value = tuple(inner(v) for v in value)
                object.__setattr__(self, name, value)
            knob.validate(value)
        active = {facts(self.name).objective, *self.loss_terms}
        for spec in OBJECTIVES.values():
            if spec.check is not None:
                spec.check(self, spec.name in active)

    def _check_condition(self) -> None:
        """`condition_on` exactly for the conditional models."""
        conditional = facts(self.name).needs_labels
        if conditional and not self.condition_on:
            raise ConfigError(
                f"model {self.name!r} is conditional: set model.condition_on to the dataset "
                "factors it is given, e.g. [shape, scale]"
            )
        if not conditional and self.condition_on:
            raise ConfigError(
                f"model.condition_on={list(self.condition_on)}: {self.name!r} takes no labels; "
                "use a conditional model (cvae, ifcvae) or drop condition_on"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, where: str = "model/") -> ModelConfig:
        """Strict construction: unknown keys raise ConfigError naming the nearest known key."""
        return from_dict(cls, data, where=where)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, not tuples) that `from_dict` reads back to an equal config."""
        return to_dict(self)

    def replace(self, **changes: Any) -> ModelConfig:
        """A validated copy with `changes` (num_ipe is re-resolved when the name changes)."""
        if "name" in changes and "num_ipe" not in changes:
            changes["num_ipe"] = None
        return dataclasses.replace(self, **changes)

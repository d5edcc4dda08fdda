"""`ModelConfig`: the one frozen description of a model.

Defaults are the paper's published run (GIST-IRR/MIPET-VAEs run.sh; spec/mipet.md sections 3.2 and
2.5): latent size 10, K = 3 IPE maps (1 for the commutative model), alpha = beta = gamma = 1,
hy_rec 0.1, hy_hes 40, hy_commute 20, forward_eq_prob 0.2, every behaviour of the paper code kept.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from models._facts import ARCHITECTURES, check_loss_terms, facts
from models.errors import ConfigError
from models.strict import from_dict, to_dict

__all__ = ["ModelConfig"]


@dataclass(frozen=True)
class ModelConfig:
    """Every knob of a model. Construct with `ModelConfig.from_dict(d)` (strict keys) or directly.

    Fields a model does not read are listed by `models.used_fields(name)`.

    Attributes:
        name: registry name (`models.MODELS`).
        image_channels: 1 (dSprites) or 3 (3D Shapes, Cars3D, MPI3D).
        latent_dim: d, the number of latent units (the commutative models need
            d == sum(subspace_sizes)).
        dense_dim: (h0, h1) hidden sizes; h0 must be 256 (the conv flatten size 64*2*2), h1 is the
            encoder/decoder hidden width (paper: 128 on dSprites, 256 elsewhere).
        recon_loss: 'bce' (sum over pixels, for binary images), 'mse' (sum), or 'auto' (bce for
            1 channel, mse for 3; resolved at construction).
        num_ipe: K, the number of IPE maps; 0 gives the baseline. None picks the default: 3 for
            mipet_vae / mipet_betatcvae, 1 for mipet_commutative, 0 for the baselines.
        beta: weight of the KL term of (mipet_)beta_vae (1.0 = the paper code, which has no beta)
            and of the TC term of (mipet_)betatcvae.
        alpha, gamma: beta-TC weights of the mutual information and dimension-wise KL terms.
        tc_estimator: 'paper' (log importance weight added per latent dimension, as the paper
            code does) or 'mss' (minibatch stratified sampling of Chen et al. 2018).
        dataset_size: N of the beta-TC estimator (the trainer sets it from the dataset).
        hy_rec, hy_hes, hy_commute: weights of the commutative Lie-group losses.
        forward_eq_prob: probability per training step of reconstructing from the encoder's group
            features instead of the decoder's (commutative models).
        subgroup_sizes, subspace_sizes: the Lie group layout (one subgroup supported:
            (m*m,) and (d,)).
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
        capacity_gamma, capacity_max, capacity_steps: annealed VAE, gamma * |KL - C(step)| with
            C(step) = min(capacity_max, capacity_max * step / capacity_steps).
        factor_gamma: Factor-VAE weight of the discriminator's total correlation estimate.
        factor_lr: learning rate of the Factor-VAE discriminator's Adam (betas 0.5, 0.9).
        dip_lambda_od, dip_lambda_d: DIP-VAE weights of the off-diagonal and diagonal
            covariance penalties; dip_lambda_d None = 10 x dip_lambda_od for DIP-VAE-I and
            1 x dip_lambda_od for DIP-VAE-II.
        info_alpha, info_lambda: InfoVAE: (1 - alpha) KL + (alpha + lambda - 1) MMD.
        condition_on: factor names of the dataset a conditional model (cvae, ifcvae) is given,
            e.g. [shape, scale]; the conditional models need it, the others refuse it.
        condition_classes: the class count of each `condition_on` factor (the trainer sets them
            from the dataset, as it sets dataset_size; empty until then).
        ifc_w_le, ifc_w_aux: IFCVAE weights of the label encoder's cross entropy and of the
            adversarial term (minus the auxiliary's cross entropy of the labels from z).
        ifc_lr: learning rate of the IFCVAE auxiliary classifier's Adam (betas 0.5, 0.9).
    """

    name: str = "mipet_vae"
    image_channels: int = 1
    latent_dim: int = 10
    dense_dim: tuple[int, ...] = (256, 128)
    recon_loss: Literal["auto", "bce", "mse"] = "auto"
    num_ipe: int | None = None
    beta: float = 1.0
    alpha: float = 1.0
    gamma: float = 1.0
    tc_estimator: Literal["paper", "mss"] = "paper"
    dataset_size: int = 737_280
    hy_rec: float = 0.1
    hy_hes: float = 40.0
    hy_commute: float = 20.0
    forward_eq_prob: float = 0.2
    subgroup_sizes: tuple[int, ...] = (100,)
    subspace_sizes: tuple[int, ...] = (10,)
    ipe_symmetric: bool = True
    ef_conversion: bool = True
    calibration: bool = True
    keep_dead_params: bool = True
    rec_weight: float = 1.0
    loss_terms: tuple[str, ...] = ()
    encoder: Literal["paper", "conv64", "mlp"] = "paper"
    decoder: Literal["paper", "conv64", "mlp"] = "paper"
    capacity_gamma: float = 1000.0
    capacity_max: float = 25.0
    capacity_steps: int = 100_000
    factor_gamma: float = 10.0
    factor_lr: float = 1e-4
    dip_lambda_od: float = 10.0
    dip_lambda_d: float | None = None
    info_alpha: float = 0.0
    info_lambda: float = 2.0
    condition_on: tuple[str, ...] = ()
    condition_classes: tuple[int, ...] = ()
    ifc_w_le: float = 1.0
    ifc_w_aux: float = 1.0
    ifc_lr: float = 1e-4

    def __post_init__(self) -> None:
        cls = facts(self.name)  # plain data: no torch import
        if isinstance(self.loss_terms, str):
            object.__setattr__(self, "loss_terms", (self.loss_terms,))
        for fld in ("dense_dim", "subgroup_sizes", "subspace_sizes"):
            value = getattr(self, fld)
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"model.{fld} must be a list of integers, got {value!r}")
            object.__setattr__(self, fld, tuple(int(v) for v in value))
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
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ConfigError(f"model.beta must be > 0, got {self.beta}")
        for fld in ("alpha", "gamma", "hy_rec", "hy_hes", "hy_commute"):
            value = getattr(self, fld)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"model.{fld} must be >= 0 and finite, got {value}")
        if self.tc_estimator not in ("paper", "mss"):
            raise ConfigError(
                f"model.tc_estimator must be 'paper' or 'mss', got {self.tc_estimator!r}"
            )
        if self.dataset_size < 2:
            raise ConfigError(f"model.dataset_size must be >= 2, got {self.dataset_size}")
        if not 0.0 <= self.forward_eq_prob <= 1.0:
            raise ConfigError(
                f"model.forward_eq_prob must be in [0, 1], got {self.forward_eq_prob}"
            )
        self._check_zoo()
        if cls.lie_group:
            self._check_lie()

    def _check_zoo(self) -> None:
        """The objective zoo's knobs, the networks, and the stack of loss terms."""
        object.__setattr__(self, "loss_terms", tuple(str(t) for t in self.loss_terms))
        check_loss_terms(self.name, self.loss_terms, has_labels=facts(self.name).needs_labels)
        self._check_condition()
        for fld in ("encoder", "decoder"):
            value = getattr(self, fld)
            if value not in ARCHITECTURES:
                raise ConfigError(
                    f"model.{fld} must be one of {list(ARCHITECTURES)}, got {value!r}"
                )
            if facts(self.name).lie_group and value != "paper":
                raise ConfigError(
                    f"model.{fld}={value!r}: {self.name!r} has its own Lie group networks; "
                    "leave it at 'paper'"
                )
        for fld in ("rec_weight", "capacity_gamma", "capacity_max", "factor_gamma",
                    "dip_lambda_od", "info_lambda"):
            value = getattr(self, fld)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"model.{fld} must be >= 0 and finite, got {value}")
        if self.dip_lambda_d is not None and not (
            self.dip_lambda_d >= 0 and math.isfinite(self.dip_lambda_d)
        ):
            raise ConfigError(
                f"model.dip_lambda_d must be >= 0 (or null), got {self.dip_lambda_d}"
            )
        if self.capacity_steps < 1:
            raise ConfigError(f"model.capacity_steps must be >= 1, got {self.capacity_steps}")
        if not (self.factor_lr > 0 and math.isfinite(self.factor_lr)):
            raise ConfigError(f"model.factor_lr must be > 0, got {self.factor_lr}")
        if not (self.info_alpha <= 1 and self.info_alpha + self.info_lambda >= 1):
            raise ConfigError(
                "model.info_alpha must be <= 1 and info_alpha + info_lambda >= 1 (the KL and "
                f"MMD weights 1 - alpha and alpha + lambda - 1 must be >= 0), got "
                f"info_alpha={self.info_alpha}, info_lambda={self.info_lambda}"
            )

    def _check_condition(self) -> None:
        """`condition_on` exactly for the conditional models; ifc weights; class counts."""
        if isinstance(self.condition_on, str):
            object.__setattr__(self, "condition_on", (self.condition_on,))
        for fld in ("condition_on", "condition_classes"):
            value = getattr(self, fld)
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"model.{fld} must be a list, got {value!r}")
        object.__setattr__(self, "condition_on", tuple(str(v) for v in self.condition_on))
        object.__setattr__(self, "condition_classes",
                           tuple(int(v) for v in self.condition_classes))
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
        if len(set(self.condition_on)) != len(self.condition_on):
            raise ConfigError(
                f"model.condition_on lists a factor twice: {list(self.condition_on)}"
            )
        if self.condition_classes and (
            len(self.condition_classes) != len(self.condition_on)
            or min(self.condition_classes) < 1
        ):
            raise ConfigError(
                "model.condition_classes must give a class count >= 1 for each of "
                f"{list(self.condition_on)}, got {list(self.condition_classes)}"
            )
        for fld in ("ifc_w_le", "ifc_w_aux"):
            value = getattr(self, fld)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"model.{fld} must be >= 0 and finite, got {value}")
        if not (self.ifc_lr > 0 and math.isfinite(self.ifc_lr)):
            raise ConfigError(f"model.ifc_lr must be > 0, got {self.ifc_lr}")

    def _check_lie(self) -> None:
        if len(self.subgroup_sizes) != 1 or len(self.subspace_sizes) != 1:
            raise ConfigError(
                "model.subgroup_sizes and model.subspace_sizes must have one entry each (one "
                f"subgroup is supported), got {list(self.subgroup_sizes)} and "
                f"{list(self.subspace_sizes)}"
            )
        size = self.subgroup_sizes[0]
        if size < 1 or math.isqrt(size) ** 2 != size:
            raise ConfigError(f"model.subgroup_sizes entries must be squares m*m, got {size}")
        if self.subspace_sizes[0] != self.latent_dim:
            raise ConfigError(
                "model.latent_dim must equal sum(model.subspace_sizes) = "
                f"{self.subspace_sizes[0]} "
                f"for {self.name!r}, got {self.latent_dim}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, where: str = "model.") -> ModelConfig:
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

"""The shared model: encoder, optional K IPE maps, decoder, and the objectives of its record.

A registered model class (`models._registry`) is `VAE` or `LieGroupVAE` with its objective's
name; everything objective-specific (loss terms, adversaries, conditioning, networks) is read from
the objective's record (`models._objectives`), never from branches on names.
"""

from __future__ import annotations

import copy
import math
from typing import Mapping

import torch
from torch import Tensor, nn

from models._adversary import Adversaries
from models._facts import loss_weight_fields
from models._ipe import IPEBank
from models._nets import LabelEncoder, LieDecoder, LieEncoder, make_decoder, make_encoder
from models._objectives import OBJECTIVES
from models._output import ModelOutput
from models.config import ModelConfig
from models.errors import ConfigError, NonFiniteLossError
from models.objectives import EFRegulariser, LossInputs, Objective, Reconstruction, gaussian_kl
from models.spec import Adversary, ObjectiveSpec
from models.strict import nearest

__all__ = ["ModelOutput", "VAE", "LieGroupVAE", "build_objectives"]


class VAE(nn.Module):
    """Shared machinery: encoder, optional K IPE maps, decoder, and a list of objectives.

    A registered subclass gets its objective, default K and fields from `models._facts`; its
    losses come from `build_objectives`, its adversaries and conditioning from its objective's
    record (`spec`). Call `forward(x, eps=None, step=0)` for the training record, `encode(x)` for
    (mu, logvar), `decode(z)` for images from pre-IPE codes.
    """

    registry_name: str = ""
    objective: str = ""
    default_num_ipe: int = 0
    lie_group: bool = False
    config_fields: frozenset[str] = frozenset()
    condition_sizes: tuple[int, ...] = ()  # class counts of the conditioned factors

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.spec: ObjectiveSpec = OBJECTIVES[self.objective]
        c, h1, d = cfg.image_channels, cfg.dense_dim[1], cfg.latent_dim
        self.num_ipe: int = int(cfg.num_ipe or 0)
        if self.lie_group:
            g = cfg.subgroup_sizes[0]
            self.encoder: nn.Module = LieEncoder(c, h1, d, g, keep_dead=cfg.keep_dead_params)
            self.decoder: nn.Module = LieDecoder(c, d, g)
        else:
            self._build_nets(cfg)
        self._init_weights()  # before the IPE maps: K = 0 and the baseline draw the same weights
        self.ipe = (
            IPEBank(
                self.num_ipe, d, symmetric=cfg.ipe_symmetric, ef_conversion=cfg.ef_conversion,
                keep_dead=cfg.keep_dead_params,
            )
            if self.num_ipe > 0 else None
        )
        # Adversarial parts: trained by their own optimizers (`build_adversaries`), never by the
        # main one (`param_groups` leaves out every name under `adversaries.`): those of the
        # model's own objective and of the stacked ones, in registry order.
        self.adversaries = nn.ModuleDict()
        self._adversary_specs: dict[str, Adversary] = {}
        active = (self.objective, *cfg.loss_terms)
        for spec in OBJECTIVES.values():
            for adv in spec.adversaries if spec.name in active else ():
                self.adversaries[adv.key] = adv.build(self)
                self._adversary_specs[adv.key] = adv
        self.losses: list[Objective] = build_objectives(self, cfg)
        self.check_finite = True
        self.channels_last = False
        self.set_channels_last(True)  # same maths, faster decoder on CPU (oneDNN)

    # -- construction ----------------------------------------------------------------------------
    def _build_nets(self, cfg: ModelConfig) -> None:
        """Encoder and decoder by name. A conditional model's decoder reads z and the one-hot
        condition (B, d + n); a cvae's encoder also reads the condition, as n extra channels
        tiled to the image size; an ifcvae has a label encoder predicting it from x."""
        c, h1, d = cfg.image_channels, cfg.dense_dim[1], cfg.latent_dim
        conditioning = self.spec.conditioning
        if self.needs_labels:
            if len(cfg.condition_classes) != len(cfg.condition_on):
                raise ConfigError(
                    f"model.condition_classes is unset for {list(cfg.condition_on)}: the trainer "
                    "sets the class counts from the dataset (or pass them, e.g. [3, 6])"
                )
            self.condition_sizes = tuple(cfg.condition_classes)
        n = sum(self.condition_sizes)
        extra = n if conditioning == "encoder" else 0  # a cvae's encoder reads the condition
        self.encoder = make_encoder(cfg.encoder, c + extra, h1, d)
        self.decoder = make_decoder(cfg.decoder, c, h1, d + n)
        if conditioning == "label_encoder":
            self.label_encoder = LabelEncoder(c, h1, n)

    @property
    def needs_labels(self) -> bool:
        """Whether `forward`, `encode` and `decode` take the conditioned factors' classes."""
        return self.spec.needs_labels

    def _init_weights(self) -> None:
        """Xavier-uniform (gain 1) on every weight with ndim >= 2; biases keep PyTorch defaults."""
        for name, p in self.named_parameters():
            if p.ndim >= 2 and not name.endswith("lie_basis"):
                nn.init.xavier_uniform_(p)
        if self.lie_group:
            basis = self.decoder.lie_basis
            m = basis.shape[-1]
            bound = (6.0 / (m * m + m)) ** 0.5  # Xavier of each [1, m, m] parameter
            with torch.no_grad():
                basis.uniform_(-bound, bound)

    # -- loss weights and adversaries --------------------------------------------------------
    def set_loss_weights(self, values: Mapping[str, float]) -> None:
        """Later forwards compute the losses as if the config had these values (e.g. a beta
        warm-up); parameters are untouched. Keys are `models.loss_weight_fields(...)`.

        Raises:
            ConfigError: for a field that is not a loss weight of this model, or a bad value.
        """
        known = loss_weight_fields(self.registry_name, self.cfg.loss_terms)
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"model.{key} is not a loss weight of {self.registry_name!r}; "
                    f"{nearest(key, known, 'model.')}"
                )
        changes = {k: float(v) for k, v in values.items() if getattr(self.cfg, k) != float(v)}
        for key, value in changes.items():
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"model.{key} must be a finite weight >= 0, got {value}")
        if changes:
            # Not dataclasses.replace: a schedule may pass through values that a config refuses
            # as a constant (a beta warm-up starts at 0), so the copy skips __post_init__.
            cfg = copy.copy(self.cfg)
            for key, value in changes.items():
                object.__setattr__(cfg, key, value)
            self.cfg = cfg
            self.losses = build_objectives(self, self.cfg)

    def build_adversaries(self) -> Adversaries:
        """The optimizers of the adversarial modules (each an Adam with the lr and betas of its
        record, e.g. Factor-VAE's: lr model.factor_lr, betas (0.5, 0.9), as disentanglement_lib),
        for the loop to step after each main step."""
        opts: dict[str, torch.optim.Optimizer] = {
            key: torch.optim.Adam(self.adversaries[key].parameters(),
                                  lr=getattr(self.cfg, adv.lr_field), betas=adv.betas)
            for key, adv in self._adversary_specs.items()
        }
        self._adversary_opts = Adversaries(self, opts)
        return self._adversary_opts

    def adversary_state_dict(self) -> dict:
        """The state of the optimizers of the last `build_adversaries()` ({} when none), for the
        checkpoint; `build_adversaries().load_state_dict(...)` restores it."""
        opts = getattr(self, "_adversary_opts", None)
        return {} if opts is None else opts.state_dict()

    def adversary_loss(self, name: str, out: ModelOutput) -> Tensor:
        """The loss that adversary `name` minimises, from a forward's (detached) record."""
        if name not in self._adversary_specs:
            raise KeyError(f"no adversary {name!r}")
        return self._adversary_specs[name].loss(self, self.adversaries[name], out)

    def main_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the adversaries' (what the main optimizer trains)."""
        return [p for n, p in self.named_parameters() if not n.startswith("adversaries.")]

    def dead_parameter_names(self) -> list[str]:
        """Names of the parameters that never receive a gradient (kept for paper parity)."""
        dead = ("ipe.nu_p", "ipe.nu_q", "ipe.pc_p", "ipe.pc_q")
        if self.lie_group:
            dead += tuple(
                f"encoder.{m}.{w}" for m in ("dense", "mu", "logvar") for w in ("weight", "bias")
            )
        if self.ipe is not None and not self.cfg.ef_conversion:  # EF parameters unused too
            ef = ("gz_p", "gz_q", "ge_p", "ge_q", "t_p", "t_q", "ln_u", "ln_v", "lam_w", "lam_b")
            dead += tuple(f"ipe.{n}" for n in ef)
        names = dict(self.named_parameters())
        return [n for n in dead if n in names]

    # -- memory format -------------------------------------------------------------------------
    def set_channels_last(self, flag: bool = True) -> VAE:
        """Run the decoder's transposed convolutions in channels_last memory format (same maths).

        Measured on CPU (oneDNN) this is faster for the decoder and slower for the encoder
        (odd 31x31 and 1-channel maps), so the encoder stays NCHW.
        """
        fmt = torch.channels_last if flag else torch.contiguous_format
        self.channels_last = flag
        self.decoder.memory_format = fmt
        for m in self.decoder.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.data = m.weight.data.contiguous(memory_format=fmt)
        return self

    # -- public API ----------------------------------------------------------------------------
    def encode(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (B, C, 64, 64) float in [0, 1] -> (mu, logvar), each (B, d). Encoder only; a
        conditional model takes the classes `labels` (B, F_c) of its `condition_on` factors."""
        mu, logvar, _ = self.encoder(self._encoder_input(x, labels))
        return mu, logvar

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Pre-IPE codes z (B, d) -> image probabilities (B, C, 64, 64): the K IPE maps, the
        decoder, and the mean over K (the model's generative path, e.g. for traversals). A
        conditional model decodes under the condition `labels` (B, F_c)."""
        b = z.shape[0]
        codes = self.ipe.transform(z) if self.ipe is not None else z.unsqueeze(0)  # (K', B, d)
        if self.needs_labels:
            codes = _with_condition(codes, self.one_hot(self._check_labels(labels, b)))
        probs, _ = self.decoder(codes.reshape(-1, codes.shape[-1]))
        return probs.view(codes.shape[0], b, *probs.shape[1:]).mean(0)

    def forward(self, x: Tensor, eps: Tensor | None = None, *, step: int = 0,
                labels: Tensor | None = None) -> ModelOutput:
        """Encode, sample, apply the K IPE maps, decode, and score.

        Args:
            x: images (B, C, 64, 64), float32 in [0, 1].
            eps: reparameterisation noise (B, d); drawn from torch's RNG when None.
            step: training steps done so far (the annealed VAE's capacity reads it).
            labels: int64 (B, F_c) classes of the `condition_on` factors (conditional models).
        Returns:
            ModelOutput (loss, terms, weights, mu, logvar, z, recon, z_hat, labels).
        Raises:
            NonFiniteLossError: when the loss is NaN or infinite (e.g. a NaN input).
        """
        mu, logvar, g_e = self.encoder(self._encoder_input(x, labels))
        dev = x.device.type
        with torch.autocast(dev, enabled=False):  # latent maths and losses in float32
            mu, logvar = mu.float(), logvar.float()
            if eps is None:
                eps = torch.randn_like(mu)
            elif eps.shape != mu.shape:
                raise ValueError(
                    f"eps must have the shape of mu {tuple(mu.shape)}, got {tuple(eps.shape)}"
                )
            z = mu + torch.exp(0.5 * logvar) * eps  # (B, d), pre-IPE sample
            ipe = self.ipe(z, eps) if self.ipe is not None else None
        codes = ipe.z_hat if ipe is not None else z.unsqueeze(0)  # (K', B, d)
        label_logits = None
        if self.needs_labels:  # the decoder reads z and the (true or predicted) condition
            if self.spec.conditioning == "label_encoder":
                label_logits = self.label_encoder(x)
                cond = torch.cat([c.detach().softmax(1) for c in torch.split(
                    label_logits, list(self.condition_sizes), dim=1)], dim=1)
            else:
                cond = self.one_hot(labels)
            codes = _with_condition(codes, cond.to(codes.dtype))
        recon, g_d = self._reconstruct(codes, g_e)
        with torch.autocast(dev, enabled=False):
            inp = LossInputs(
                x=x, recon=recon.float(), mu=mu, logvar=logvar, z=z,
                kl_gauss=gaussian_kl(mu, logvar), num_ipe=self.num_ipe, ipe=ipe,
                group_e=None if g_e is None else g_e.float(),
                group_d=None if g_d is None else g_d.float(),
                lie_basis=self.decoder.lie_basis if self.lie_group else None, step=step,
                labels=labels, label_logits=label_logits,
            )
            terms: dict[str, Tensor] = {"origin_kld": inp.kl_gauss.mean()}
            weights: dict[str, float] = {}
            loss = None
            for objective in self.losses:
                out = objective(inp)
                terms.update(out)
                for name, w in objective.weights.items():
                    weights[name] = w
                    loss = out[name] * w if loss is None else loss + out[name] * w
        assert loss is not None  # every model has a reconstruction objective
        if self.check_finite and not bool(torch.isfinite(loss)):
            raise NonFiniteLossError(_nonfinite_message(x, loss, terms))
        return ModelOutput(
            loss, terms, weights, mu, logvar, z, inp.recon, None if ipe is None else codes, labels
        )

    # -- the condition of the conditional models -----------------------------------------------
    def one_hot(self, labels: Tensor) -> Tensor:
        """Classes (B, F_c) of the `condition_on` factors -> float one-hot (B, sum of counts)."""
        return torch.cat([
            torch.nn.functional.one_hot(labels[:, f].long(), size).float()
            for f, size in enumerate(self.condition_sizes)
        ], dim=1)

    def _check_labels(self, labels: Tensor | None, b: int) -> Tensor:
        want = (b, len(self.condition_sizes))
        if labels is None or tuple(labels.shape) != want:
            got = None if labels is None else tuple(labels.shape)
            raise ValueError(
                f"{self.registry_name!r} is conditional on {list(self.cfg.condition_on)}: pass "
                f"labels of shape {want} (their classes), got {got}"
            )
        bad = (labels < 0) | (
            labels >= torch.as_tensor(self.condition_sizes, device=labels.device)
        )
        if bool(bad.any()):
            raise ValueError(f"labels out of range for class counts {list(self.condition_sizes)}")
        return labels

    def _encoder_input(self, x: Tensor, labels: Tensor | None) -> Tensor:
        """x itself, or (cvae) x with the one-hot condition as extra channels tiled to H x W."""
        if not self.needs_labels:
            return x
        labels = self._check_labels(labels, x.shape[0])
        if self.spec.conditioning != "encoder":
            return x
        cond = self.one_hot(labels).to(x.dtype)
        tiled = cond[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return torch.cat([x, tiled], dim=1)

    def _reconstruct(self, codes: Tensor, g_e: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """codes (K', B, d) -> mean over K' of the decoder's probabilities (B, C, 64, 64), g_D."""
        k, b, d = codes.shape
        probs, g_d = self.decoder(codes.reshape(k * b, d))  # (K'B, C, 64, 64)
        recon = probs if k == 1 else probs.view(k, b, *probs.shape[1:]).mean(0)
        return recon, g_d


def _with_condition(codes: Tensor, cond: Tensor) -> Tensor:
    """codes (K', B, d) and a condition (B, n) -> (K', B, d + n), the decoder's input."""
    return torch.cat([codes, cond.unsqueeze(0).expand(codes.shape[0], -1, -1)], dim=2)


def _nonfinite_message(x: Tensor, loss: Tensor, terms: dict[str, Tensor]) -> str:
    bad = [n for n, t in terms.items() if not bool(torch.isfinite(t))]
    where = (
        "the input batch contains NaN or inf values"
        if not bool(torch.isfinite(x).all())
        else f"non-finite terms: {', '.join(bad) or 'none'}"
    )
    return (
        f"non-finite loss ({loss.item()}): {where}; stopping instead of training on "
        "(check the data, lower the learning rate, or clip gradients)"
    )


# -- the objectives of a model --------------------------------------------------------------------


def build_objectives(model: VAE, cfg: ModelConfig) -> list[Objective]:
    """Reconstruction, the model's own objective, the EF regulariser (K > 0 with EF conversion),
    then the stacked `loss_terms` (in that order: the paper models sum exactly as before)."""
    out: list[Objective] = [Reconstruction(cfg.recon_loss, cfg.rec_weight)]
    out += model.spec.build(model, cfg)
    if model.num_ipe > 0 and cfg.ef_conversion:
        out.append(EFRegulariser(calibration=cfg.calibration))
    for term in cfg.loss_terms:
        build = OBJECTIVES[term].build_stacked
        assert build is not None  # ModelConfig refuses an unstackable term
        out += build(model, cfg)
    return out


class LieGroupVAE(VAE):
    """The Lie group networks' forward (commutative objectives).

    In training, with probability `forward_eq_prob` per step (torch's RNG) the reconstruction is
    decoded from the encoder's group features g_E instead of the decoder's; only the decode pass
    that the loss uses is run (the paper code also runs the other one, and a never-used third).
    `recon` is then that reconstruction. With K > 1 the decoder images are averaged over the K
    maps and 'group_rec' over the K decoder group features.
    """

    def _reconstruct(self, codes: Tensor, g_e: Tensor | None) -> tuple[Tensor, Tensor | None]:
        k, b, d = codes.shape
        dec: LieDecoder = self.decoder  # type: ignore[assignment]
        use_eg = self.training and bool(torch.rand(()) < self.cfg.forward_eq_prob)
        if use_eg:
            assert g_e is not None
            g_d = dec.group(codes.reshape(k * b, d).float())
            recon = torch.sigmoid(dec.logits(g_e))
        else:
            probs, g_d = dec(codes.reshape(k * b, d))
            recon = probs if k == 1 else probs.view(k, b, *probs.shape[1:]).mean(0)
        return recon, g_d.view(k, b, -1)

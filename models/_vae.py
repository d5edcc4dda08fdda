"""The registered models: MIPET VAEs, their baselines, and the shared forward pass."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models._ipe import IPEBank
from models._nets import Decoder, Encoder, LieDecoder, LieEncoder
from models._registry import register_model
from models.config import ModelConfig
from models.errors import NonFiniteLossError
from models.objectives import (
    BetaTC, EFRegulariser, KLTerm, LieGroupLoss, LossInputs, Objective, Reconstruction,
    gaussian_kl,
)

__all__ = ["ModelOutput", "VAE"]

_COMMON = frozenset({
    "name", "image_channels", "latent_dim", "dense_dim", "recon_loss", "rec_weight",
})
_IPE = frozenset({"num_ipe", "ipe_symmetric", "ef_conversion", "calibration", "keep_dead_params"})
_BETATC = frozenset({"alpha", "beta", "gamma", "tc_estimator", "dataset_size"})
_LIE = frozenset({
    "hy_rec", "hy_hes", "hy_commute", "forward_eq_prob", "subgroup_sizes", "subspace_sizes",
    "keep_dead_params",
})


@dataclass
class ModelOutput:
    """What `forward` returns.

    Attributes:
        loss: scalar tensor, the optimised total = sum(weights[n] * terms[n]).
        terms: every named scalar term (loss terms and diagnostics such as 'origin_kld').
        weights: factor of each term that enters `loss` (terms not listed are diagnostics).
        mu, logvar: posterior parameters (B, d).
        z: pre-IPE sample (B, d).
        recon: reconstruction probabilities (B, C, 64, 64) in [0, 1] that `terms['rec']` scores.
        z_hat: IPE-transformed samples (K, B, d), or None for K = 0.
    """

    loss: Tensor
    terms: dict[str, Tensor]
    weights: dict[str, float]
    mu: Tensor
    logvar: Tensor
    z: Tensor
    recon: Tensor
    z_hat: Tensor | None = None


class VAE(nn.Module):
    """Shared machinery: encoder, optional K IPE maps, decoder, and a list of objectives.

    Subclasses set the class attributes and `objectives()`. Call `forward(x, eps=None)` for the
    training record, `encode(x)` for (mu, logvar), `decode(z)` for images from pre-IPE codes.
    """

    registry_name: str = ""
    default_num_ipe: int = 0
    lie_group: bool = False
    config_fields: frozenset[str] = _COMMON

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, h1, d = cfg.image_channels, cfg.dense_dim[1], cfg.latent_dim
        self.num_ipe: int = int(cfg.num_ipe or 0)
        if self.lie_group:
            g = cfg.subgroup_sizes[0]
            self.encoder: nn.Module = LieEncoder(c, h1, d, g, keep_dead=cfg.keep_dead_params)
            self.decoder: nn.Module = LieDecoder(c, d, g)
        else:
            self.encoder = Encoder(c, h1, d)
            self.decoder = Decoder(c, h1, d)
        self._init_weights()  # before the IPE maps: K = 0 and the baseline draw the same weights
        self.ipe = (
            IPEBank(
                self.num_ipe, d, symmetric=cfg.ipe_symmetric, ef_conversion=cfg.ef_conversion,
                keep_dead=cfg.keep_dead_params,
            )
            if self.num_ipe > 0 else None
        )
        self.losses: list[Objective] = []
        self.set_loss_weights({})
        self.check_finite = True
        self.channels_last = False
        self.set_channels_last(True)  # same maths, faster decoder on CPU (oneDNN)

    # -- construction ----------------------------------------------------------------------------
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

    def objectives(self, cfg: ModelConfig) -> list[Objective]:
        raise NotImplementedError

    def _ef_objectives(self, cfg: ModelConfig) -> list[Objective]:
        if self.num_ipe > 0 and cfg.ef_conversion:
            return [EFRegulariser(calibration=cfg.calibration)]
        return []

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

    # -- loss weights: a stop-gap (helper sched) of zoo's contract; zoo's version wins at merge --
    def set_loss_weights(self, values: Mapping[str, float]) -> None:
        """Later forwards compute the losses as if the config had these loss-weight `values`
        (field name -> value, e.g. from a schedule; `models.loss_weight_fields` lists them)."""
        cfg = copy.copy(self.cfg)  # unchecked: a schedule may pass 0 where the config needs > 0
        for name, value in values.items():
            object.__setattr__(cfg, name, float(value))
        self.losses = self.objectives(cfg)
        for objective in self.losses:
            if isinstance(objective, Reconstruction):
                objective.weights = {"rec": cfg.rec_weight}

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
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, C, 64, 64) float in [0, 1] -> (mu, logvar), each (B, d). Encoder only."""
        mu, logvar, _ = self.encoder(x)
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        """Pre-IPE codes z (B, d) -> image probabilities (B, C, 64, 64): the K IPE maps, the
        decoder, and the mean over K (the model's generative path, e.g. for traversals)."""
        b = z.shape[0]
        codes = self.ipe.transform(z) if self.ipe is not None else z.unsqueeze(0)  # (K', B, d)
        probs, _ = self.decoder(codes.reshape(-1, z.shape[1]))
        return probs.view(codes.shape[0], b, *probs.shape[1:]).mean(0)

    def forward(self, x: Tensor, eps: Tensor | None = None) -> ModelOutput:
        """Encode, sample, apply the K IPE maps, decode, and score.

        Args:
            x: images (B, C, 64, 64), float32 in [0, 1].
            eps: reparameterisation noise (B, d); drawn from torch's RNG when None.
        Returns:
            ModelOutput (loss, terms, weights, mu, logvar, z, recon, z_hat).
        Raises:
            NonFiniteLossError: when the loss is NaN or infinite (e.g. a NaN input).
        """
        mu, logvar, g_e = self.encoder(x)
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
        recon, g_d = self._reconstruct(codes, g_e)
        with torch.autocast(dev, enabled=False):
            inp = LossInputs(
                x=x, recon=recon.float(), mu=mu, logvar=logvar, z=z,
                kl_gauss=gaussian_kl(mu, logvar), num_ipe=self.num_ipe, ipe=ipe,
                group_e=None if g_e is None else g_e.float(),
                group_d=None if g_d is None else g_d.float(),
                lie_basis=self.decoder.lie_basis if self.lie_group else None,
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
            loss, terms, weights, mu, logvar, z, inp.recon, None if ipe is None else codes
        )

    def _reconstruct(self, codes: Tensor, g_e: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """codes (K', B, d) -> mean over K' of the decoder's probabilities (B, C, 64, 64), g_D."""
        k, b, d = codes.shape
        probs, g_d = self.decoder(codes.reshape(k * b, d))  # (K'B, C, 64, 64)
        recon = probs if k == 1 else probs.view(k, b, *probs.shape[1:]).mean(0)
        return recon, g_d


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


# -- standard encoder / decoder -------------------------------------------------------------------


@register_model("mipet_vae")
class MipetVae(VAE):
    """MIPET-VAE: rec + beta * EF KL + reg (beta = 1 reproduces the paper code, which has none)."""

    default_num_ipe = 3
    config_fields = _COMMON | _IPE | {"beta"}

    def objectives(self, cfg: ModelConfig) -> list[Objective]:
        return [Reconstruction(cfg.recon_loss), KLTerm(cfg.beta), *self._ef_objectives(cfg)]


@register_model("beta_vae")
class BetaVae(MipetVae):
    """beta-VAE baseline: the MIPET-VAE networks without IPE maps: rec + beta * Gaussian KL."""

    default_num_ipe = 0
    config_fields = _COMMON | {"beta"}


@register_model("mipet_betatcvae")
class MipetBetaTcVae(VAE):
    """MIPET-beta-TCVAE: rec + alpha mi + beta tc + gamma dwkl (on the pre-IPE z) + reg."""

    default_num_ipe = 3
    config_fields = _COMMON | _IPE | _BETATC

    def objectives(self, cfg: ModelConfig) -> list[Objective]:
        tc = BetaTC(cfg.alpha, cfg.beta, cfg.gamma, cfg.tc_estimator, cfg.dataset_size)
        return [Reconstruction(cfg.recon_loss), tc, *self._ef_objectives(cfg)]


@register_model("betatcvae")
class BetaTcVae(MipetBetaTcVae):
    """beta-TCVAE baseline (no IPE maps)."""

    default_num_ipe = 0
    config_fields = _COMMON | _BETATC


# -- Lie group encoder / decoder ------------------------------------------------------------------


@register_model("mipet_commutative")
class MipetCommutativeVae(VAE):
    """MIPET Commutative Lie Group VAE: rec + KL + group losses + reg.

    In training, with probability `forward_eq_prob` per step (torch's RNG) the reconstruction is
    decoded from the encoder's group features g_E instead of the decoder's; only the decode pass
    that the loss uses is run (the paper code also runs the other one, and a never-used third).
    `recon` is then that reconstruction. With K > 1 the decoder images are averaged over the K
    maps and 'group_rec' over the K decoder group features.
    """

    default_num_ipe = 1
    lie_group = True
    config_fields = _COMMON | _IPE | _LIE

    def objectives(self, cfg: ModelConfig) -> list[Objective]:
        return [
            Reconstruction(cfg.recon_loss), KLTerm(1.0),
            LieGroupLoss(cfg.hy_hes, cfg.hy_commute, cfg.hy_rec), *self._ef_objectives(cfg),
        ]

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


@register_model("commutative")
class CommutativeVae(MipetCommutativeVae):
    """Commutative Lie Group VAE baseline (no IPE maps): rec + Gaussian KL + group losses."""

    default_num_ipe = 0
    config_fields = _COMMON | _LIE


__all__ += [
    "MipetVae", "BetaVae", "MipetBetaTcVae", "BetaTcVae", "MipetCommutativeVae", "CommutativeVae",
]

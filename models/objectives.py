"""Loss terms as small composable objectives (per-model losses as the paper code reduces them).

A model is its networks plus a list of objectives. Each objective reads a `LossInputs` record and
returns named scalar terms; its `weights` say which terms enter the optimised loss and with what
factor (terms without a weight are diagnostics, logged only). The total loss is
sum(weight * term). The objective zoo (controlled capacity, Factor-VAE, DIP-VAE, InfoVAE) are
classes here too; each objective's record (`models._objectives`) builds them from the config, and
the MIPET parts stay untouched. With IPE maps and EF conversion a model's KL is the EF KL
(`model_kl`), while the zoo's regularisers read the pre-IPE posterior and sample, as
MIPET-beta-TCVAE does.

Every reduction is as in the paper code: reconstruction summed over pixels and channels and
divided by the batch size; KL terms summed over latent units and averaged over the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from models._ipe import IPEOutput
from models.errors import ConfigError

__all__ = [
    "LossInputs", "Objective", "Reconstruction", "KLTerm", "EFRegulariser", "BetaTC",
    "LieGroupLoss", "gaussian_kl", "log_normal", "betatc_terms", "log_importance_weights",
    "model_kl", "capacity_target", "CapacityTerm", "dip_covariance", "dip_penalty", "DipTerm",
    "mmd", "MMDTerm", "FactorTC", "label_cross_entropy", "IFCTerm", "FunctionTerm",
]

_LOG_2PI = math.log(2 * math.pi)


@dataclass
class LossInputs:
    """What an objective may read (all float32; B = batch, d = latent size, K = IPE maps).

    Attributes:
        x: target images (B, C, 64, 64) in [0, 1].
        recon: reconstruction probabilities (B, C, 64, 64) that the loss compares with x.
        mu, logvar: posterior parameters (B, d).
        z: pre-IPE sample (B, d) = mu + exp(logvar / 2) * eps.
        kl_gauss: Gaussian KL of the pre-IPE posterior to N(0, I) per sample (B,).
        num_ipe: K (0 = no IPE maps).
        ipe: output of the IPE maps (z_hat (K, B, d), ef (K, B), kl (K, B, d)) or None.
        group_e, group_d: Lie group features of encoder (B, G) and decoder (K', B, G), or None.
        lie_basis: Lie algebra basis (d, m, m), or None.
        step: the training step (optimizer steps done before this forward), for objectives that
            depend on training progress.
        labels: int64 (B, F_c) classes of the conditioned factors (conditional models), or None.
        label_logits: the IFCVAE label encoder's logits (B, sum of class counts), or None.
    """

    x: Tensor
    recon: Tensor
    mu: Tensor
    logvar: Tensor
    z: Tensor
    kl_gauss: Tensor
    num_ipe: int = 0
    ipe: IPEOutput | None = None
    group_e: Tensor | None = None
    group_d: Tensor | None = None
    lie_basis: Tensor | None = None
    step: int = 0
    labels: Tensor | None = None
    label_logits: Tensor | None = None


@dataclass
class Objective:
    """Base class: `__call__(inputs) -> {name: scalar tensor}`; `weights` {name: loss factor}."""

    weights: dict[str, float] = field(default_factory=dict, init=False)

    def __call__(self, inp: LossInputs) -> dict[str, Tensor]:
        raise NotImplementedError


@dataclass
class FunctionTerm(Objective):
    """Terms from a plain function `fn(inputs) -> {name: scalar tensor}`, weighted by `factors`
    ({name: factor} of the outputs that enter the loss; the others are diagnostics). An
    objective's record can keep its maths in its own file this way (docs/recipes/add_objective.md).
    """

    fn: Callable[[LossInputs], dict[str, Tensor]] = lambda inp: {}
    factors: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.weights = dict(self.factors)

    def __call__(self, inp: LossInputs) -> dict[str, Tensor]:
        return self.fn(inp)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over units: (B, d) -> (B,)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)


def log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise log N(z; mu, exp(logvar)) (broadcasting)."""
    return -0.5 * (_LOG_2PI + logvar) - 0.5 * (z - mu).pow(2) * torch.exp(-logvar)


@dataclass
class Reconstruction(Objective):
    """'rec' = L(recon, x) / B with L = BCE (sum) or squared error (sum), as the paper code."""

    kind: Literal["bce", "mse"] = "bce"
    weight: float = 1.0

    def __post_init__(self) -> None:
        self.weights = {"rec": self.weight}

    def __call__(self, inp: LossInputs) -> dict[str, Tensor]:
        b = inp.x.shape[0]
        if self.kind == "bce":
            # BCELoss(sum) as the paper code; it refuses NaN values (on CUDA with a device assert),
            # so they are swapped out and put back through a zero-weight sum.
            p, x = inp.recon, inp.x
            total = F.binary_cross_entropy(
                torch.nan_to_num(p, nan=0.5), torch.nan_to_num(x, nan=0.5, posinf=1.0, neginf=0.0),
                reduction="sum",
            )
            total = total + 0.0 * (p.sum() + x.sum())
        else:
            total = F.mse_loss(inp.recon, inp.x, reduction="sum")
        return {"rec": total / b}


@dataclass
class KLTerm(Objective):
    """'kld' weighted by beta: the EF KL mean_b sum_k sum_j kl_k[b, j] when the IPE maps carry an
    EF conversion (the paper's MIPET models), else the Gaussian KL mean_b KL_g[b] (baselines,
    K = 0, ef_conversion off)."""

    beta: float = 1.0

    def __post_init__(self) -> None:
        self.weights = {"kld": self.beta}

    def __call__(self, inp: LossInputs) -> dict[str, Tensor]:
        return {"kld": model_kl(inp)}


def model_kl(inp: LossInputs) -> Tensor:
    """The model's KL (scalar): the EF KL mean_b sum_k sum_j kl_k[b, j] with IPE maps and EF
    conversion, else the Gaussian KL mean_b KL_g[b]."""
    if inp.ipe is not None and inp.ipe.kl is not None:
        return inp.ipe.kl.sum(dim=(0, 2)).mean()
    return inp.kl_gauss.mean()


@dataclass
class EFRegulariser(Objective):
    """'reg' = mean_b sum_k ef_k[b] + CAL, CAL = mean_b (KL_ef[b] - K KL_g[b])^2 (the calibration).

    Diagnostics: 'ef' (mean EF objective), 'cal' (CAL, also when it is switched off), 'ef_kld'
    (mean EF KL).
    """

    calibration: bool = True

    def __post_init__(self) -> None:
        self.weights = {"reg": 1.0}

    def __call__(self, inp: LossInputs) -> dict[str, Tensor]:
        ipe = inp.ipe
        if ipe is None or ipe.ef is None or ipe.kl is None:
            raise RuntimeError("EFRegulariser needs IPE maps with EF conversion")
        kl_ef = ipe.kl.sum(dim=(0, 2))  # (B,)
        ef = ipe.ef.sum(0).mean()
        cal = F.mse_loss(kl_ef, inp.num_ipe * inp.kl_gauss)
        reg = ef + cal if self.calibration else ef
        return {"reg": reg, "ef": ef, "cal": cal, "ef_kld": kl_ef.mean()}


def log_importance_weights(
    batch: int, dataset_size: int, device: torch.device, layout: str = "paper"
) -> Tensor:
    """log W (B, B) of minibatch stratified sampling (Chen et al. 2018); row i weighs sample j.

    layout 'paper': exactly what the paper code (and Chen et al.'s released code) builds:
    1/(B-1) everywhere, then every B-th flat entry from 0 set to 1/N and from 1 set to
    (N-B+1)/(N(B-1)), then entry (B-2, 0) to the latter. With a stride of B those flat entries are
    the first two COLUMNS, not the diagonal and superdiagonal: the self term gets 1/(B-1).
    layout 'mss': the intended weights: 1/N on the diagonal (the sample's own posterior),
    (N-B+1)/(N(B-1)) at (i, i+1 mod B), 1/(B-1) elsewhere; every row sums to 1.
    """
    n, b = dataset_size, batch
    strat = (n - b + 1) / (n * (b - 1))
    w = torch.full((b, b), 1.0 / (b - 1), device=device)
    if layout == "paper":
        flat = w.view(-1)
        flat[::b] = 1.0 / n
        flat[1::b] = strat
        w[b - 2, 0] = strat
    else:
        idx = torch.arange(b, device=device)
        w[idx, idx] = 1.0 / n
        w[idx, (idx + 1) % b] = strat
    return w.log()


def betatc_terms(
    z: Tensor, mu: Tensor, logvar: Tensor, log_w: Tensor, estimator: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Mutual information, total correlation and dimension-wise KL of a batch.

    Args:
        z, mu, logvar: (B, d) float32.
        log_w: (B, B) log importance weights (`log_importance_weights`).
        estimator: 'paper' adds log W to every unit before summing over units, so log q(z)
            carries d log W (the paper code); 'mss' adds it once (Chen et al. 2018). Pass the
            log W of the same layout (`log_importance_weights(..., layout=estimator)`).
    Returns:
        mi, tc, dwkl: scalars (batch means); mi + tc + dwkl = mean(log q(z|x) - log p(z)).
    """
    b = z.shape[0]
    log_qzx = log_normal(z, mu, logvar).sum(1)  # (B,)
    log_pz = (-0.5 * (_LOG_2PI + z.pow(2))).sum(1)  # (B,)
    mat = log_normal(z.view(b, 1, -1), mu.view(1, b, -1), logvar.view(1, b, -1))  # (B, B, d)
    mat_w = mat + log_w.unsqueeze(-1)
    log_qz_prod = torch.logsumexp(mat_w, dim=1).sum(1)  # (B,)
    if estimator == "paper":
        log_qz = torch.logsumexp(mat_w.sum(2), dim=1)
    else:
        log_qz = torch.logsumexp(mat.sum(2) + log_w, dim=1)
    mi = (log_qzx - log_qz).mean()
    tc = (log_qz - log_qz_prod).mean()
    dwkl = (log_qz_prod - log_pz).mean()
    return mi, tc, dwkl


@dataclass
class BetaTC(Objective):
    """beta-TCVAE decomposition on the pre-IPE sample: alpha*'mi' + beta*'tc' + gamma*'dwkl'."""

    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 1.0
    estimator: Literal["paper", "mss"] = "paper"
    dataset_size: int = 737_280

    def __post_init__(self) -> None:
        self.weights = {"mi": self.alpha, "tc": self.beta, "dwkl": self.gamma}
        self._log_w: dict[tuple[int, torch.device], Tensor] = {}

    def __call__(self, inp: LossInputs) -> dict[str, Tensor]:
        b = inp.z.shape[0]
        if not 2 <= b <= self.dataset_size:
            raise ConfigError(
                f"beta-TC needs 2 <= batch size <= model.dataset_size ({self.dataset_size}), "
                f"got a batch of {b}; set model.dataset_size to the training set size"
            )
        key = (b, inp.z.device)
        if key not in self._log_w:
            self._log_w[key] = log_importance_weights(
                b, self.dataset_size, inp.z.device, layout=self.estimator
            )
        mi, tc, dwkl = betatc_terms(inp.z, inp.mu, inp.logvar, self._log_w[key], self.estimator)
        return {"mi": mi, "tc": tc, "dwkl": dwkl}


@dataclass
class LieGroupLoss(Objective):
    """Commutative Lie group losses (CLG-VAE, as in the paper code).

    P_ij = A_j A_i for i != j, 0 on the diagonal; 'hessian' = mean_ij ||P_ij||_F^2;
    'commute' = mean_ij ||P_ij - P_ij^T||_F^2 (matrix transpose, kept from CLG-VAE);
    'group_rec' = mean over samples (and IPE maps) of ||g_E - g_D||^2. Diagnostic 'group' is the
    weighted sum hy_hes*hessian + hy_commute*commute + hy_rec*group_rec (the paper's "group").
    """

    hy_hes: float = 40.0
    hy_commute: float = 20.0
    hy_rec: float = 0.1

    def __post_init__(self) -> None:
        self.weights = {
            "hessian": self.hy_hes, "commute": self.hy_commute, "group_rec": self.hy_rec
        }

    def __call__(self, inp: LossInputs) -> dict[str, Tensor]:
        a, g_e, g_d = inp.lie_basis, inp.group_e, inp.group_d
        if a is None or g_e is None or g_d is None:
            raise RuntimeError("LieGroupLoss needs Lie group features and basis")
        n = a.shape[0]
        prod = torch.matmul(a.unsqueeze(0), a.unsqueeze(1))  # (d, d, m, m): [i, j] = A_j A_i
        prod = prod * (1 - torch.eye(n, dtype=a.dtype, device=a.device)).view(n, n, 1, 1)
        hessian = prod.pow(2).sum(dim=(2, 3)).mean()
        commute = (prod - prod.transpose(2, 3)).pow(2).sum(dim=(2, 3)).mean()
        group_rec = (g_e - g_d).pow(2).sum(-1).mean()
        group = self.hy_hes * hessian + self.hy_commute * commute + self.hy_rec * group_rec
        return {"hessian": hessian, "commute": commute, "group_rec": group_rec, "group": group}


# -- the objective zoo ----------------------------------------------------------------------------


def capacity_target(step: int, capacity_max: float, capacity_steps: int) -> float:
    """C(step) = min(capacity_max, capacity_max * step / capacity_steps) (Burgess et al. 2018)."""
    return min(capacity_max, capacity_max * step / capacity_steps)


@dataclass
class CapacityTerm(Objective):
    """Controlled capacity increase: 'capacity' = |KL - C(step)|, weight gamma. Diagnostics:
    'kld' (the model's KL) and 'capacity_c' (C(step))."""

    gamma: float = 1000.0
    capacity_max: float = 25.0
    capacity_steps: int = 100_000

    def __post_init__(self) -> None:
        self.weights = {"capacity": self.gamma}

    def __call__(self, inp: LossInputs) -> dict[str, Tensor]:
        kl = model_kl(inp)
        c = capacity_target(inp.step, self.capacity_max, self.capacity_steps)
        return {"capacity": (kl - c).abs(), "kld": kl, "capacity_c": kl.new_tensor(c)}


def dip_covariance(mu: Tensor, logvar: Tensor, kind: Literal["i", "ii"]) -> Tensor:
    """DIP-VAE's covariance (d, d): I: the biased (divide by B) covariance of mu over the batch;
    II: that plus mean_b diag(exp(logvar)) (the covariance of q(z))."""
    centred = mu - mu.mean(0, keepdim=True)  # (B, d)
    cov = centred.T @ centred / mu.shape[0]  # (d, d)
    if kind == "ii":
        cov = cov + torch.diag(logvar.exp().mean(0))
    return cov


def dip_penalty(cov: Tensor, lambda_od: float, lambda_d: float) -> Tensor:
    """lambda_od * sum_{i != j} C_ij^2 + lambda_d * sum_i (C_ii - 1)^2 (a scalar)."""
    diag = torch.diagonal(cov)
    off = cov - torch.diag(diag)
    return lambda_od * off.pow(2).sum() + lambda_d * (diag - 1).pow(2).sum()


@dataclass
class DipTerm(Objective):
    """DIP-VAE regulariser on the pre-IPE posterior: 'dip' (the weighted penalty), weight 1."""

    kind: Literal["i", "ii"] = "i"
    lambda_od: float = 10.0
    lambda_d: float | None = None  # None: 10 x lambda_od for I, 1 x lambda_od for II

    def __post_init__(self) -> None:
        if self.lambda_d is None:
            self.lambda_d = self.lambda_od * (10.0 if self.kind == "i" else 1.0)
        self.weights = {"dip": 1.0}

    def __call__(self, inp: LossInputs) -> dict[str, Tensor]:
        cov = dip_covariance(inp.mu, inp.logvar, self.kind)
        return {"dip": dip_penalty(cov, self.lambda_od, float(self.lambda_d))}


def mmd(a: Tensor, b: Tensor) -> Tensor:
    """Biased MMD^2 estimate between samples a (N, d) and b (M, d) with the kernel
    k(x, y) = exp(-||x - y||^2 / d^2), as disentanglement-pytorch computes it (the squared
    distance averaged over units, then divided by d): mean k(a, a) + mean k(b, b) - 2 mean k(a, b).
    """
    d = a.shape[1]

    def kernel(x: Tensor, y: Tensor) -> Tensor:
        sq = (x.unsqueeze(1) - y.unsqueeze(0)).pow(2).sum(-1)  # (N, M); no sqrt: finite grads
        return torch.exp(-sq / (d * d))

    return kernel(a, a).mean() + kernel(b, b).mean() - 2 * kernel(a, b).mean()


@dataclass
class MMDTerm(Objective):
    """InfoVAE: 'mmd' = MMD(q(z), p(z)) of the pre-IPE sample against as many N(0, I) draws
    (torch's RNG), weight alpha + lambda - 1."""

    alpha: float = 0.0
    lam: float = 2.0

    def __post_init__(self) -> None:
        self.weights = {"mmd": self.alpha + self.lam - 1.0}

    def __call__(self, inp: LossInputs) -> dict[str, Tensor]:
        return {"mmd": mmd(inp.z, torch.randn_like(inp.z))}


@dataclass
class FactorTC(Objective):
    """Factor-VAE: 'factor_tc' = mean(logits[:, 0] - logits[:, 1]) of the discriminator on the
    pre-IPE sample z, weight gamma. The gradient reaches the encoder only: the discriminator is
    applied with detached parameters (it is trained by its own optimizer, stepped by the loop;
    `models._adversary`)."""

    gamma: float = 10.0
    discriminator: torch.nn.Module | None = None

    def __post_init__(self) -> None:
        self.weights = {"factor_tc": self.gamma}

    def __call__(self, inp: LossInputs) -> dict[str, Tensor]:
        if self.discriminator is None:
            raise RuntimeError("FactorTC needs the model's discriminator")
        params = {n: p.detach() for n, p in self.discriminator.named_parameters()}
        logits = torch.func.functional_call(self.discriminator, params, (inp.z,))  # (B, 2)
        return {"factor_tc": (logits[:, 0] - logits[:, 1]).mean()}


def label_cross_entropy(logits: Tensor, labels: Tensor, sizes: tuple[int, ...]) -> Tensor:
    """Cross entropy of the classes `labels` (B, F_c) under `logits` (B, sum(sizes)), one
    softmax per factor: summed over the factors, averaged over the batch."""
    total = logits.new_zeros(())
    for f, chunk in enumerate(torch.split(logits, list(sizes), dim=1)):
        total = total + F.cross_entropy(chunk, labels[:, f])
    return total


@dataclass
class IFCTerm(Objective):
    """IFCVAE (Creswell et al., as disentanglement-pytorch's `ifcvae`): 'ifc_le' = the label
    encoder's cross entropy of the true classes on x, 'ifc_le_recon' = the same on the
    reconstruction (both weight w_le; the decoder reads the label encoder's softmax detached, so
    the first trains the label encoder alone), 'ifc_aux' = minus the auxiliary classifier's cross
    entropy of the classes from the pre-IPE z (weight w_aux): the encoder is trained to make z
    useless to it. The auxiliary is applied with detached parameters; its own optimizer trains it
    on the plus sign (`models._adversary.aux_classifier_loss`)."""

    w_le: float = 1.0
    w_aux: float = 1.0
    sizes: tuple[int, ...] = ()
    label_encoder: torch.nn.Module | None = None
    auxiliary: torch.nn.Module | None = None

    def __post_init__(self) -> None:
        self.weights = {"ifc_le": self.w_le, "ifc_le_recon": self.w_le, "ifc_aux": self.w_aux}

    def __call__(self, inp: LossInputs) -> dict[str, Tensor]:
        if (self.auxiliary is None or self.label_encoder is None or inp.labels is None
                or inp.label_logits is None):
            raise RuntimeError("IFCTerm needs the label encoder, the auxiliary and the labels")
        params = {n: p.detach() for n, p in self.auxiliary.named_parameters()}
        aux_logits = torch.func.functional_call(self.auxiliary, params, (inp.z,))
        recon_logits = self.label_encoder(inp.recon).float()
        return {
            "ifc_le": label_cross_entropy(inp.label_logits.float(), inp.labels, self.sizes),
            "ifc_le_recon": label_cross_entropy(recon_logits, inp.labels, self.sizes),
            "ifc_aux": -label_cross_entropy(aux_logits, inp.labels, self.sizes),
        }

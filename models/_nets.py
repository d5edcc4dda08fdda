"""Encoders and decoders of the paper code (docs/paper_code.md).

Shapes: images (B, C, 64, 64) float in [0, 1]; the encoder's convolutions have no padding
(64 -> 31 -> 14 -> 6 -> 2, flatten 256); decoders reshape to (64, 4, 4) and upsample to 64x64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from models._fastconv import PhaseConvTranspose2d

FLAT = 256  # conv flatten size 64*2*2 (= dense_dim[0] in the paper code)


def conv_trunk(channels: int) -> nn.Sequential:
    """Four Conv2d(k=4, s=2, p=0) + ReLU: (B, C, 64, 64) -> (B, 64, 2, 2).

    Conv layers sit at indices 0, 2, 4, 6 (paper keys `hidden_layers.{0..3}.conv`).
    """
    return nn.Sequential(
        nn.Conv2d(channels, 32, 4, 2), nn.ReLU(inplace=True),
        nn.Conv2d(32, 32, 4, 2), nn.ReLU(inplace=True),
        nn.Conv2d(32, 64, 4, 2), nn.ReLU(inplace=True),
        nn.Conv2d(64, 64, 4, 2), nn.ReLU(inplace=True),
    )


def deconv_head(channels: int) -> nn.Sequential:
    """(N, 64, 4, 4) -> logits (N, C, 64, 64): three ConvTranspose2d(k4, s2, p1) + ReLU and a last
    ConvTranspose2d (indices 0, 2, 4, 6; paper keys `hidden_layers.{0..2}.conv`,
    `hidden_layers.3`). The layers are `PhaseConvTranspose2d` (models/_fastconv.py), which apply
    the ReLU themselves (the odd indices are identities): the same parameters and values, a
    faster backward on CPU.
    """
    return nn.Sequential(
        PhaseConvTranspose2d(64, 64, relu=True), nn.Identity(),
        PhaseConvTranspose2d(64, 32, relu=True), nn.Identity(),
        PhaseConvTranspose2d(32, 32, relu=True), nn.Identity(),
        PhaseConvTranspose2d(32, channels),
    )


def _flatten(h: Tensor) -> Tensor:
    """(B, 64, 2, 2) in any memory format -> (B, 256) in (channel, row, column) order."""
    return h.reshape(h.shape[0], FLAT)


class Encoder(nn.Module):
    """Standard encoder: conv trunk -> Linear(256, h1) (no activation) -> mu, logvar heads."""

    def __init__(self, channels: int, hidden: int, latent_dim: int) -> None:
        super().__init__()
        self.features = conv_trunk(channels)
        self.dense = nn.Linear(FLAT, hidden)
        self.mu = nn.Linear(hidden, latent_dim)
        self.logvar = nn.Linear(hidden, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, None]:
        """x (B, C, 64, 64) -> mu (B, d), logvar (B, d), None (no group features)."""
        h = self.dense(_flatten(self.features(x)))  # (B, h1)
        return self.mu(h), self.logvar(h), None


class Decoder(nn.Module):
    """Standard decoder: Linear(d, h1)+ReLU -> Linear(h1, 1024)+ReLU -> (64, 4, 4) -> deconvs."""

    def __init__(self, channels: int, hidden: int, latent_dim: int) -> None:
        super().__init__()
        self.dense1 = nn.Linear(latent_dim, hidden)
        self.dense2 = nn.Linear(hidden, 4 * FLAT)
        self.features = deconv_head(channels)
        self.memory_format = torch.contiguous_format

    def logits(self, z: Tensor) -> Tensor:
        """z (N, d) -> logits (N, C, 64, 64) (the paper applies the sigmoid; see `forward`)."""
        h = torch.relu(self.dense2(torch.relu(self.dense1(z))))
        h = h.view(-1, 64, 4, 4).contiguous(memory_format=self.memory_format)  # (N, 64, 4, 4)
        return self.features(h)

    def forward(self, z: Tensor) -> tuple[Tensor, None]:
        """z (N, d) -> probabilities (N, C, 64, 64), None (no group features)."""
        return torch.sigmoid(self.logits(z)), None


class LieEncoder(nn.Module):
    """Lie encoder (CLG-VAE style): trunk -> Linear(256, 256)+ReLU -> Linear(256, G)+Sigmoid = g_E,
    then mu = to_means[0](g_E), logvar = to_logvar[0](g_E) with MLPs G -> 4G -> d.

    With `keep_dead` it also owns the standard encoder's `dense`, `mu`, `logvar` heads, which the
    paper code inherits and never uses (no gradient).
    """

    def __init__(
        self, channels: int, hidden: int, latent_dim: int, group_size: int, keep_dead: bool
    ) -> None:
        super().__init__()
        self.features = conv_trunk(channels)
        if keep_dead:
            self.dense = nn.Linear(FLAT, hidden)
            self.mu = nn.Linear(hidden, latent_dim)
            self.logvar = nn.Linear(hidden, latent_dim)
        self.dense1 = nn.Linear(FLAT, FLAT)
        self.dense2 = nn.Linear(FLAT, group_size)
        self.to_means = nn.ModuleList([_mlp(group_size, latent_dim)])
        self.to_logvar = nn.ModuleList([_mlp(group_size, latent_dim)])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, C, 64, 64) -> mu (B, d), logvar (B, d), g_E (B, G) in (0, 1)."""
        h = torch.relu(self.dense1(_flatten(self.features(x))))
        g_e = torch.sigmoid(self.dense2(h))  # (B, G)
        return self.to_means[0](g_e), self.to_logvar[0](g_e), g_e


def _mlp(size: int, out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(size, 4 * size), nn.ReLU(inplace=True), nn.Linear(4 * size, out)
    )


class LieDecoder(nn.Module):
    """Lie decoder: g_D = flatten(expm(sum_j z_j A_j)) (B, m*m), then the image head
    Linear(m*m, 256)+ReLU -> Linear(256, 1024)+ReLU -> (64, 4, 4) -> deconvs -> sigmoid.

    The basis A (d, m, m) is unconstrained; it is initialised as the paper code ends up doing
    (Xavier-uniform of each [1, m, m] parameter: bound sqrt(6 / (m*m + m))).
    """

    def __init__(self, channels: int, latent_dim: int, group_size: int) -> None:
        super().__init__()
        self.mat = math.isqrt(group_size)
        self.dense1 = nn.Linear(group_size, FLAT)
        self.dense2 = nn.Linear(FLAT, 4 * FLAT)
        self.features = deconv_head(channels)
        self.lie_basis = nn.Parameter(torch.empty(latent_dim, self.mat, self.mat))
        self.memory_format = torch.contiguous_format

    def group(self, z: Tensor) -> Tensor:
        """z (N, d) -> g_D (N, m*m) = flatten(expm(sum_j z_j A_j))."""
        with torch.autocast(z.device.type, enabled=False):  # expm in float32
            alg = torch.einsum("nd,dij->nij", z.float(), self.lie_basis)  # (N, m, m)
            return torch.linalg.matrix_exp(alg).reshape(z.shape[0], -1)

    def logits(self, g: Tensor) -> Tensor:
        """Image head on group features g (N, m*m) -> logits (N, C, 64, 64)."""
        h = torch.relu(self.dense2(torch.relu(self.dense1(g))))
        h = h.view(-1, 64, 4, 4).contiguous(memory_format=self.memory_format)
        return self.features(h)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z (N, d) -> probabilities (N, C, 64, 64), g_D (N, m*m)."""
        g = self.group(z)
        return torch.sigmoid(self.logits(g)), g


# -- networks by name, independent of the objective -----------------------------------------------


class Conv64Encoder(nn.Module):
    """disentanglement_lib's `conv_encoder`: Conv2d 32, 32, 64, 64 with kernels 4, 4, 2, 2,
    stride 2, 'same' padding and ReLU ((B, C, 64, 64) -> (B, 64, 4, 4)), Linear(1024, 256)+ReLU,
    then the mean and log-variance heads."""

    def __init__(self, channels: int, latent_dim: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 4, 2, 1), nn.ReLU(inplace=True),  # 64 -> 32
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(inplace=True),  # 32 -> 16
            nn.Conv2d(32, 64, 2, 2), nn.ReLU(inplace=True),  # 16 -> 8
            nn.Conv2d(64, 64, 2, 2), nn.ReLU(inplace=True),  # 8 -> 4
        )
        self.dense = nn.Linear(4 * FLAT, 256)
        self.mu = nn.Linear(256, latent_dim)
        self.logvar = nn.Linear(256, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, None]:
        """x (B, C, 64, 64) -> mu (B, d), logvar (B, d), None."""
        h = self.features(x).reshape(x.shape[0], 4 * FLAT)  # (B, 1024)
        h = torch.relu(self.dense(h))  # (B, 256)
        return self.mu(h), self.logvar(h), None


class MlpEncoder(nn.Module):
    """Chen et al.'s dSprites MLP encoder: flatten -> Linear(C*4096, 1200)+ReLU ->
    Linear(1200, 1200)+ReLU -> mean and log-variance heads."""

    def __init__(self, channels: int, latent_dim: int, width: int = 1200) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * 64 * 64, width), nn.ReLU(inplace=True),
            nn.Linear(width, width), nn.ReLU(inplace=True),
        )
        self.mu = nn.Linear(width, latent_dim)
        self.logvar = nn.Linear(width, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, None]:
        """x (B, C, 64, 64) -> mu (B, d), logvar (B, d), None."""
        h = self.features(x)  # (B, 1200)
        return self.mu(h), self.logvar(h), None


class MlpDecoder(nn.Module):
    """Chen et al.'s dSprites MLP decoder: Linear(d, 1200)+Tanh, two Linear(1200, 1200)+Tanh,
    Linear(1200, C*4096) -> logits (N, C, 64, 64)."""

    def __init__(self, channels: int, latent_dim: int, width: int = 1200) -> None:
        super().__init__()
        self.channels = channels
        self.net = nn.Sequential(
            nn.Linear(latent_dim, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
            nn.Linear(width, width), nn.Tanh(), nn.Linear(width, channels * 64 * 64),
        )
        self.memory_format = torch.contiguous_format

    def logits(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, self.channels, 64, 64)  # (N, C, 64, 64)

    def forward(self, z: Tensor) -> tuple[Tensor, None]:
        """z (N, d) -> probabilities (N, C, 64, 64), None."""
        return torch.sigmoid(self.logits(z)), None


def make_encoder(kind: str, channels: int, hidden: int, latent_dim: int) -> nn.Module:
    """The encoder `kind` ('paper', 'conv64' or 'mlp'); `hidden` is the paper's h1."""
    if kind == "conv64":
        return Conv64Encoder(channels, latent_dim)
    if kind == "mlp":
        return MlpEncoder(channels, latent_dim)
    return Encoder(channels, hidden, latent_dim)


def make_decoder(kind: str, channels: int, hidden: int, latent_dim: int) -> nn.Module:
    """The decoder `kind`. disentanglement_lib's `deconv_decoder` is the paper's decoder with a
    256-wide first layer: Linear(d, 256)+ReLU, Linear(256, 1024)+ReLU as (64, 4, 4), transposed
    convs 64, 32, 32, C (kernel 4, stride 2)."""
    if kind == "conv64":
        return Decoder(channels, 256, latent_dim)
    if kind == "mlp":
        return MlpDecoder(channels, latent_dim)
    return Decoder(channels, hidden, latent_dim)


class LabelEncoder(nn.Module):
    """IFCVAE's label encoder: conv trunk -> Linear(256, hidden) + ReLU -> class logits
    (B, num_logits), one block of logits per conditioned factor."""

    def __init__(self, channels: int, hidden: int, num_logits: int) -> None:
        super().__init__()
        self.features = conv_trunk(channels)
        self.dense = nn.Linear(FLAT, hidden)
        self.logits = nn.Linear(hidden, num_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(torch.relu(self.dense(_flatten(self.features(x)))))

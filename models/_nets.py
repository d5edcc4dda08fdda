"""Encoders and decoders of the paper code (spec/mipet.md sections 1.1-1.3).

Shapes: images (B, C, 64, 64) float in [0, 1]; the encoder's convolutions have no padding
(64 -> 31 -> 14 -> 6 -> 2, flatten 256); decoders reshape to (64, 4, 4) and upsample to 64x64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

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
    `hidden_layers.3`).
    """
    return nn.Sequential(
        nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(inplace=True),
        nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(inplace=True),
        nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(inplace=True),
        nn.ConvTranspose2d(32, channels, 4, 2, 1),
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

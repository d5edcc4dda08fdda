"""`ModelOutput`: what a model's forward returns (read by the loop, the adversaries, the tests)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["ModelOutput"]


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
        labels: the conditioned factors' classes (B, F_c) of a conditional model, else None.
    """

    loss: Tensor
    terms: dict[str, Tensor]
    weights: dict[str, float]
    mu: Tensor
    logvar: Tensor
    z: Tensor
    recon: Tensor
    z_hat: Tensor | None = None
    labels: Tensor | None = None

"""Adversarial parts of a model: modules with their own optimizer, stepped by the training loop.

An objective's record names its adversaries (`models.spec.Adversary`: the module, its loss, its
learning-rate field); the model builds them from there. The Factor-VAE discriminator is a module of
the model (`model.adversaries['factor']`), so it is in
the model's state dict; `param_groups` leaves it out of the main optimizer. Its optimizer lives in
an `Adversaries` object that the loop builds once (`model.build_adversaries()`), steps after each
main step (`adversaries.step(out)`) and saves in its checkpoint (`state_dict()`), so a resumed run
is exact. A model without adversaries gets an empty one whose `step` does nothing.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models._output import ModelOutput
from models.errors import ConfigError
from models.objectives import label_cross_entropy

__all__ = [
    "Adversaries", "FactorDiscriminator", "permute_dims", "factor_discriminator_loss",
    "AuxClassifier", "aux_classifier_loss",
]


class FactorDiscriminator(nn.Module):
    """Factor-VAE's discriminator (as disentanglement_lib): 6 Linear(1000) + LeakyReLU(0.2), then
    2 logits ([:, 0]: "from q(z)", [:, 1]: "from the product of marginals")."""

    def __init__(self, latent_dim: int, width: int = 1000, depth: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(latent_dim if i == 0 else width, width), nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(width, 2))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """z (B, d) -> logits (B, 2)."""
        return self.net(z)


def permute_dims(z: Tensor) -> Tensor:
    """Each column of z (B, d) permuted across the batch independently (torch's RNG): a sample
    of the product of the marginals. Every column keeps its values."""
    idx = torch.argsort(torch.rand_like(z), dim=0)  # (B, d): one permutation per unit
    return torch.gather(z, 0, idx)


def factor_discriminator_loss(disc: nn.Module, z: Tensor) -> Tensor:
    """-(0.5 mean log p_true(z) + 0.5 mean log p_perm(z_perm)) on the detached sample z (B, d)."""
    z = z.detach().float()
    true = F.log_softmax(disc(z), dim=1)[:, 0]
    perm = F.log_softmax(disc(permute_dims(z)), dim=1)[:, 1]
    return -(0.5 * true.mean() + 0.5 * perm.mean())


class AuxClassifier(nn.Module):
    """IFCVAE's auxiliary: predicts the conditioned factors' classes from z (B, d) ->
    logits (B, sum of class counts); two hidden Linear(width) + LeakyReLU(0.2)."""

    def __init__(self, latent_dim: int, num_logits: int, width: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, width), nn.LeakyReLU(0.2), nn.Linear(width, width),
            nn.LeakyReLU(0.2), nn.Linear(width, num_logits),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def aux_classifier_loss(aux: nn.Module, z: Tensor, labels: Tensor,
                        sizes: tuple[int, ...]) -> Tensor:
    """The auxiliary's own loss: cross entropy of the true classes from the detached z."""
    return label_cross_entropy(aux(z.detach().float()), labels, sizes)


class _HasAdversaries(Protocol):
    def adversary_loss(self, name: str, out: ModelOutput) -> Tensor: ...


class Adversaries:
    """The optimizers of a model's adversarial modules (one Adam each), stepped after the main
    optimizer step. Empty (and falsy) for a model without adversaries."""

    def __init__(self, model: _HasAdversaries,
                 optimizers: dict[str, torch.optim.Optimizer]) -> None:
        self.model = model
        self.optimizers = optimizers

    def __bool__(self) -> bool:
        return bool(self.optimizers)

    def step(self, out: ModelOutput) -> dict[str, Tensor]:
        """One step of each adversary on this forward's detached codes.

        Returns:
            Each adversary's loss by name (`'<name>_disc'`, detached scalars), for logging.
        """
        losses: dict[str, Tensor] = {}
        for name, opt in self.optimizers.items():
            loss = self.model.adversary_loss(name, out)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)  # no stale grads in the next main step's clipping
            losses[f"{name}_disc"] = loss.detach()
        return losses

    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != set(self.optimizers):
            raise ConfigError(
                f"the checkpoint holds adversary optimizer state for {sorted(state)}, this model "
                f"has adversaries {sorted(self.optimizers)}; is it a checkpoint of this model?"
            )
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])

"""What changes with the step during a run: loss-weight schedules and the learning rate.

Both are part of the checkpointed state in the sense that matters: a weight schedule is a pure
function of the step (`tune.config.schedules.Schedule`), and `LRStepper.state_dict` holds the
torch scheduler's state and the partial loss window, so a resumed run goes on exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tune.config.run import RunConfig
from tune.config.schedules import Schedule, build_torch_lr_scheduler


class WeightSchedules:
    """The run's `train.schedules`: `values(step)` -> {model field: value} for
    `VAE.set_loss_weights`, and `logged(step)` -> {"schedule/model/beta": value}."""

    def __init__(self, cfg: RunConfig) -> None:
        self.schedules = {path: Schedule(spec, f"train.schedules/{path}")
                          for path, spec in cfg.train.schedules.items()}

    def __bool__(self) -> bool:
        return bool(self.schedules)

    def values(self, step: int) -> dict[str, float]:
        return {path.split("/", 1)[1]: s.value(step) for path, s in self.schedules.items()}

    def logged(self, step: int) -> dict[str, float]:
        return {f"schedule/{path}": s.value(step) for path, s in self.schedules.items()}


class LRStepper:
    """The learning-rate scheduler of a run, stepped after every optimizer step.

    Without `train.lr_scheduler`: a LambdaLR of `lr_factor` (constant, linear or cosine decay,
    warm-up), stepped every step. With it: the named torch scheduler, stepped once per `window`
    optimizer steps; ReduceLROnPlateau is given the mean of its `monitor` over those steps: the
    loss (the library's "epoch objective") or the reconstruction term.
    """

    def __init__(self, cfg: RunConfig, optimizer: torch.optim.Optimizer,
                 lr_factor: Callable[[int], float]) -> None:
        self.optimizer = optimizer
        spec = cfg.train.lr_scheduler
        if spec is None:
            self.window, self.plateau, self.monitor = 1, False, "loss"
            self.scheduler: Any = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        else:
            args = {k: v for k, v in spec.items() if k not in ("name", "window", "monitor")}
            self.window = int(spec["window"])
            self.plateau = spec["name"] == "ReduceLROnPlateau"
            self.monitor = spec.get("monitor", "loss")
            self.scheduler = build_torch_lr_scheduler(spec["name"], args, optimizer)
        self.loss_sum: torch.Tensor | None = None
        self.count = 0

    def step(self, loss: torch.Tensor, terms: dict[str, torch.Tensor] | None = None) -> None:
        """After one optimizer step with this (scalar) loss and the step's loss terms (for
        `monitor: rec`)."""
        if self.plateau:
            watched = loss if self.monitor == "loss" else (terms or {})[self.monitor]
            v = watched.detach().float()
            self.loss_sum = v if self.loss_sum is None else self.loss_sum + v
        self.count += 1
        if self.count < self.window:
            return
        if self.plateau:
            assert self.loss_sum is not None
            self.scheduler.step(float(self.loss_sum) / self.count)
        else:
            self.scheduler.step()
        self.loss_sum, self.count = None, 0

    @property
    def lr(self) -> float:
        """The learning rate of the first parameter group (encoder/decoder)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict(), "count": self.count,
                "loss_sum": None if self.loss_sum is None else self.loss_sum.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        self.count = int(state["count"])
        loss_sum = state["loss_sum"]
        self.loss_sum = None if loss_sum is None else loss_sum.to(
            self.optimizer.param_groups[0]["params"][0].device)

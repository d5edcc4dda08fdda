"""Schedules of loss weights (`train/schedules`) and the learning-rate scheduler
(`train/lr_scheduler`) of a run config, read strictly and checked at config time.

A schedule is a pure function of the optimizer step (the number of steps already taken), so a
resumed run is exact. In a run config:

    train:
      schedules:
        model/beta: {kind: linear, start: 0.0, end: 4.0, steps: 5000, warmup: 1000}
        model/rec_weight: {kind: cyclic, start: 0.5, end: 1.0, steps: 20000, cycles: 4}
      lr_scheduler: {name: ReduceLROnPlateau, factor: 0.95, patience: 2, window: 1000}

Every field of a schedule is a config path of its own, `train/schedules/<weight path>/<field>`
(for example `train/schedules/model/beta/end`), so `--set` and search spaces name them like any
other key; the nested form `{model: {beta: {...}}}` that those paths build is read as `model/beta`.

The lr scheduler is stepped once per `window` optimizer steps; ReduceLROnPlateau is given the
mean over those steps of its `monitor`: `loss` (the default, the objective) or `rec` (the
reconstruction term, which weight schedules do not raise).

Kinds (`v(t)` at step t; `p` = progress `clip((t - warmup) / steps, 0, 1)`; before `warmup` every
kind but `constant` holds `start`):
    constant: `start`.
    linear:   start + (end - start) * p.
    cosine:   start + (end - start) * (1 - cos(pi p)) / 2.
    cyclic:   Fu et al. 2019's cyclical annealing: `steps` split into `cycles` cycles (default
              4); in each, a linear ramp from start to end over the first `ratio` (default 0.5)
              of the cycle, then flat at end; after `steps`, end.
    step:     start * factor ** ((t - warmup) // every), never past `end` when it is given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from models.errors import ConfigError
from models.strict import nearest

__all__ = [
    "KINDS", "LR_SCHEDULERS", "Schedule", "lr_scheduler_paths", "normalise_lr_scheduler",
    "normalise_schedules", "schedule_paths",
]

# kind -> (required fields, optional fields)
KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "constant": (("start",), ()),
    "linear": (("start", "end", "steps"), ("warmup",)),
    "cosine": (("start", "end", "steps"), ("warmup",)),
    "cyclic": (("start", "end", "steps"), ("cycles", "ratio", "warmup")),
    "step": (("start", "factor", "every"), ("end", "warmup")),
}
FIELDS = ("kind", "start", "end", "steps", "cycles", "ratio", "every", "factor", "warmup")
_INTS = ("steps", "cycles", "every", "warmup")


class Schedule:
    """One loss weight's schedule; `value(step)` is its value at optimizer step `step`."""

    def __init__(self, spec: Mapping[str, Any], where: str = "train.schedules") -> None:
        self.spec = _check_schedule(spec, where)
        s = self.spec
        self.kind: str = s["kind"]
        self.start: float = s["start"]
        self.end: float = s.get("end", self.start)
        self.steps: int = s.get("steps", 1)
        self.warmup: int = s.get("warmup", 0)
        self.cycles: int = s.get("cycles", 4)
        self.ratio: float = s.get("ratio", 0.5)
        self.every: int = s.get("every", 1)
        self.factor: float = s.get("factor", 1.0)

    def value(self, step: int) -> float:
        if self.kind == "constant":
            return self.start
        t = step - self.warmup
        if t < 0:
            return self.start
        if self.kind == "step":
            v = self.start * self.factor ** (t // self.every)
            if "end" in self.spec:
                v = max(v, self.end) if self.factor < 1 else min(v, self.end)
            return v
        p = min(1.0, t / self.steps)
        if self.kind == "linear":
            return self.start + (self.end - self.start) * p
        if self.kind == "cosine":
            return self.start + (self.end - self.start) * 0.5 * (1.0 - math.cos(math.pi * p))
        if t >= self.steps:  # cyclic, after its last cycle
            return self.end
        period = self.steps / self.cycles
        tau = (t % period) / period
        return self.start + (self.end - self.start) * min(1.0, tau / self.ratio)


def _check_schedule(spec: Any, where: str) -> dict[str, Any]:
    """The schedule `spec` with numbers coerced, or a one-line ConfigError."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where} must be a mapping like {{kind: linear, start: 0, end: 1, "
                          f"steps: 1000}}, got {spec!r}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}/kind must be one of {', '.join(KINDS)}, got {kind!r}")
    required, optional = KINDS[kind]
    allowed = ("kind",) + required + optional
    for key in spec:
        if key not in allowed:
            raise ConfigError(f"{where}: {key!r} is not a field of a {kind} schedule; its fields "
                              f"are {', '.join(allowed)}")
    missing = [k for k in required if k not in spec]
    if missing:
        raise ConfigError(f"{where}: a {kind} schedule needs {', '.join(missing)} "
                          f"(fields: {', '.join(allowed)})")
    out: dict[str, Any] = {"kind": kind}
    for key in allowed[1:]:
        if key in spec:
            out[key] = _number(spec[key], f"{where}/{key}", integer=key in _INTS)
    for key in ("start", "end"):
        if key in out and out[key] < 0:
            raise ConfigError(f"{where}/{key} must be >= 0 (a loss weight), got {out[key]}")
    lows = {"steps": 1, "cycles": 1, "every": 1, "warmup": 0}
    for key, low in lows.items():
        if key in out and out[key] < low:
            raise ConfigError(f"{where}/{key} must be >= {low}, got {out[key]}")
    if "ratio" in out and not 0 < out["ratio"] <= 1:
        raise ConfigError(f"{where}/ratio must be in (0, 1], got {out['ratio']}")
    if "factor" in out and not out["factor"] > 0:
        raise ConfigError(f"{where}/factor must be > 0, got {out['factor']}")
    return out


def _number(value: Any, where: str, *, integer: bool) -> Any:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return int(value)
    return float(value)


def normalise_schedules(raw: Any) -> dict[str, dict[str, Any]]:
    """`train.schedules` as `{"model/beta": {checked fields}}`, from the flat form (keys
    `model/beta`), the nested form the "/"-paths build (`{model: {beta: {...}}}`) or a mix."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"train.schedules must be a mapping of model/<weight>: schedule, got "
                          f"{raw!r}")
    merged: dict[str, dict[str, Any]] = {}

    def walk(prefix: tuple[str, ...], node: Mapping[str, Any]) -> None:
        for key, value in node.items():
            parts = prefix + tuple(p for p in str(key).split("/") if p)
            if len(parts) == 1 and isinstance(value, Mapping):  # {model: {beta: {...}}}
                walk(parts, value)
            elif len(parts) == 2 and isinstance(value, Mapping):  # {model/beta: {...}}
                for field, v in value.items():
                    merged.setdefault("/".join(parts), {})[str(field)] = v
            elif len(parts) == 3 and not isinstance(value, Mapping):  # {model/beta/end: 4}
                merged.setdefault("/".join(parts[:2]), {})[parts[2]] = value
            else:
                raise ConfigError(f"train.schedules/{'/'.join(parts)}: expected "
                                  "model/<weight>: {kind: ..., start: ..., ...}")

    walk((), raw)
    return {path: _check_schedule(spec, f"train.schedules/{path}")
            for path, spec in sorted(merged.items())}


def check_schedule_paths(schedules: Mapping[str, Any], model_name: str,
                         loss_terms: Sequence[str] = ()) -> None:
    """Every scheduled path names a loss weight of the model (or of a term stacked on it)."""
    from models import loss_weight_fields

    weights = sorted(f"model/{f}" for f in loss_weight_fields(model_name, loss_terms))
    for path in schedules:
        if path not in weights:
            raise ConfigError(f"train.schedules: {path!r} is not a loss weight of model "
                              f"{model_name!r}; {nearest(path, weights)}")


def schedule_paths() -> list[str]:
    """Every "/"-path of a schedule field, for `--set` and search spaces."""
    import models

    weights = sorted({f for name in models.MODELS for f in models.loss_weight_fields(name)})
    return [f"train/schedules/model/{w}/{k}" for w in weights for k in FIELDS]


# ---- the learning-rate scheduler ---------------------------------------------------------
# torch.optim.lr_scheduler classes that take only numbers and strings (no functions or other
# schedulers), each stepped once per `window` optimizer steps; ReduceLROnPlateau is given the
# mean loss over those steps.
LR_SCHEDULERS = (
    "ConstantLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "CyclicLR", "ExponentialLR",
    "LinearLR", "MultiStepLR", "OneCycleLR", "PolynomialLR", "ReduceLROnPlateau", "StepLR",
)
_NOT_ARGS = ("optimizer", "last_epoch", "scale_fn", "verbose")
# What ReduceLROnPlateau watches: the objective (`loss`, the library's "epoch objective"), or
# the reconstruction term alone (`rec`), which weight schedules leave alone: a β or capacity
# ramp raises the objective while the model improves, and would read as a plateau.
MONITORS = ("loss", "rec")


def _lr_arguments(name: str) -> list[str]:
    import inspect

    import torch.optim.lr_scheduler as schedulers

    params = inspect.signature(getattr(schedulers, name)).parameters
    return [p for p in params if p not in _NOT_ARGS]


def normalise_lr_scheduler(raw: Any) -> dict[str, Any] | None:
    """`train.lr_scheduler` checked by building it on a throwaway optimizer: `{name, window,
    **arguments}`, or None. Imports torch (the model config already has)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or "name" not in raw:
        raise ConfigError(f"train.lr_scheduler must be a mapping like {{name: ReduceLROnPlateau, "
                          f"factor: 0.5, patience: 2, window: 1000}}, got {raw!r}")
    name = raw["name"]
    if name not in LR_SCHEDULERS:
        raise ConfigError(f"train.lr_scheduler/name {name!r} is not a usable torch lr scheduler;"
                          f" {nearest(str(name), LR_SCHEDULERS)}")
    spec = dict(raw)
    window = _number(spec.pop("window", 1), "train.lr_scheduler/window", integer=True)
    if window < 1:
        raise ConfigError(f"train.lr_scheduler/window must be >= 1, got {window}")
    monitor = spec.pop("monitor", None)
    if monitor is not None and name != "ReduceLROnPlateau":
        raise ConfigError(f"train.lr_scheduler/monitor is for ReduceLROnPlateau only; {name} "
                          f"does not watch a loss")
    if monitor is not None and monitor not in MONITORS:
        raise ConfigError(f"train.lr_scheduler/monitor must be one of {', '.join(MONITORS)}, "
                          f"got {monitor!r}")
    spec.pop("name")
    valid = _lr_arguments(name)
    ours = ["window", "monitor"] if name == "ReduceLROnPlateau" else ["window"]
    for key in spec:
        if key not in valid:
            raise ConfigError(f"train.lr_scheduler: {name} has no argument {key!r}; its "
                              f"arguments are {', '.join(valid + ours)}")
    try:
        build_torch_lr_scheduler(name, spec)
    except (TypeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"train.lr_scheduler: {name}({_shown(spec)}) is refused by torch: "
                          f"{first}") from None
    if name == "ReduceLROnPlateau":
        return {"name": name, "window": window, "monitor": monitor or "loss", **spec}
    return {"name": name, "window": window, **spec}


def build_torch_lr_scheduler(name: str, arguments: Mapping[str, Any], optimizer: Any = None):
    """The torch scheduler `name(optimizer, **arguments)` (a throwaway optimizer by default)."""
    import torch

    if optimizer is None:
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in arguments.items()}
    return getattr(torch.optim.lr_scheduler, name)(optimizer, **args)


def _shown(spec: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in spec.items())


def lr_scheduler_paths() -> list[str]:
    """Every "/"-path of `train/lr_scheduler` (name, window and every scheduler's arguments)."""
    args = sorted({a for name in LR_SCHEDULERS for a in _lr_arguments(name)})
    return ["train/lr_scheduler/name", "train/lr_scheduler/window",
            "train/lr_scheduler/monitor"] + [
        f"train/lr_scheduler/{a}" for a in args]

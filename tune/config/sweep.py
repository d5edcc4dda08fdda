"""`SweepSpec`: one sweep as data, read strictly from YAML (or a preset) before Ray starts."""

from __future__ import annotations

import dataclasses
import importlib.resources
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from models import strict_yaml
from models.errors import ConfigError
from models.strict import check_keys, from_dict, nearest, to_dict
from tune.config.run import (
    RunConfig,
    apply_overrides,
    known_paths,
    parse_override,
    read_yaml,
    set_path,
)
from tune.config.scheduler import SchedulerSpec

PRESETS_PACKAGE = "tune.config.presets"
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ResourcesSpec:
    """Per-trial resources: `gpu: 0.25` packs four trials on one GPU."""

    cpu: float = 1.0
    gpu: float = 0.0

    def __post_init__(self) -> None:
        if not self.cpu > 0:
            raise ConfigError(f"resources.cpu must be > 0, got {self.cpu}")
        if not 0 <= self.gpu:
            raise ConfigError(f"resources.gpu must be >= 0, got {self.gpu}")
        if self.gpu > 1 and not float(self.gpu).is_integer():
            raise ConfigError(
                f"resources.gpu={self.gpu}: a fraction must be below 1 (or a whole number of GPUs)"
            )


@dataclass(frozen=True)
class SamplerSpec:
    """The Optuna sampler: TPE by default (NSGA-II is offered for several objectives).

    TPE's own settings (0 keeps Optuna's default; they apply to `kind: tpe` only):
    `n_startup_trials` random trials before TPE starts (Optuna: 10), `n_ei_candidates`
    candidates drawn per suggestion (Optuna: 24; a suggestion's cost grows with it and with the
    finished trials), `constant_liar` (on: a running trial counts as a poor one, so many
    trials in flight are spread out instead of crowding the same point; Optuna 5's default)
    and `max_history` (0: all; else TPE models at most this many finished trials, the best
    tenth of the study and the most recent ones, so a suggestion's cost stops growing)."""

    kind: Literal["tpe", "random", "nsga2", "qmc", "gp"] = "tpe"
    seed: int = 0
    n_startup_trials: int = 0
    n_ei_candidates: int = 0
    constant_liar: bool = True
    max_history: int = 0

    def __post_init__(self) -> None:
        for key in ("n_startup_trials", "n_ei_candidates", "max_history"):
            if getattr(self, key) < 0:
                raise ConfigError(f"sampler.{key} must be >= 0 (0: Optuna's default), got "
                                  f"{getattr(self, key)}")
        tpe_only = (self.n_startup_trials, self.n_ei_candidates, not self.constant_liar,
                    self.max_history)
        if self.kind != "tpe" and any(tpe_only):
            raise ConfigError(
                f"sampler.kind={self.kind!r}: n_startup_trials, n_ei_candidates, "
                "constant_liar and max_history are TPE's settings; leave them out or use "
                "kind: tpe"
            )

    def tpe_options(self) -> dict[str, Any]:
        """The keyword arguments of `optuna.samplers.TPESampler` these settings give, beyond
        the seed ({} when they are all Optuna's defaults)."""
        out: dict[str, Any] = {}
        if self.n_startup_trials:
            out["n_startup_trials"] = self.n_startup_trials
        if self.n_ei_candidates:
            out["n_ei_candidates"] = self.n_ei_candidates
        if not self.constant_liar:
            out["constant_liar"] = False
        return out


@dataclass(frozen=True)
class SweepSpec:
    """A sweep: what to train (`base` run config + `space`), how many, how, and where."""

    name: str = "sweep"
    base: Mapping[str, Any] = field(default_factory=dict)  # a partial RunConfig (nested)
    space: Any = "quick"  # a search_spaces preset name, a file path, or an inline mapping
    num_samples: int = 8
    seeds: int = 1  # seeds per configuration; their mean is what Optuna sees
    metric: tuple[str, ...] = ("eval/mig",)
    mode: tuple[str, ...] = ("max",)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    max_concurrent: int = 0  # 0 = as many as the resources allow
    storage: str = "runs"  # the parent folder (or URI) of the sweep folder
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    max_failures: int = 1  # retries of a crashed trial from its last checkpoint
    reuse_actors: bool = True
    checkpoints_to_keep: int = 2

    def __post_init__(self) -> None:
        if not _NAME_OK.match(self.name):
            raise ConfigError(
                f"name={self.name!r}: use letters, digits, '.', '_' or '-' (it names a folder)"
            )
        if self.num_samples < 1:
            raise ConfigError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.seeds < 1:
            raise ConfigError(f"seeds must be >= 1, got {self.seeds}")
        if len(self.metric) != len(self.mode) or not self.metric:
            raise ConfigError(
                f"metric {list(self.metric)} and mode {list(self.mode)} must be lists of equal, "
                "non-zero length"
            )
        for m in self.mode:
            if m not in ("min", "max"):
                raise ConfigError(f"mode {m!r} must be 'min' or 'max'")
        for m in self.metric:
            if not (m.startswith("eval/") or m.startswith("train/")):
                raise ConfigError(
                    f"metric {m!r}: optimise a final value, eval/<metric> (e.g. eval/mig) or "
                    "train/<loss term> (e.g. train/recon)"
                )
        check_udr_seeds(self.metric, self.scheduler.metric, self.seeds)
        object.__setattr__(self, "metric", tuple(
            UDR_METRIC if m == "eval/udr" else m for m in self.metric))
        if self.max_concurrent < 0:
            raise ConfigError(f"max_concurrent must be >= 0, got {self.max_concurrent}")
        if self.max_failures < 0:
            raise ConfigError(f"max_failures must be >= 0, got {self.max_failures}")
        if self.checkpoints_to_keep < 1:
            raise ConfigError(f"checkpoints_to_keep must be >= 1, got {self.checkpoints_to_keep}")
        if self.scheduler.population_based and self.seeds > 1:
            raise ConfigError(
                f"seeds={self.seeds} with scheduler.kind={self.scheduler.kind}: a population "
                "member is one training run (an exploit copies one model's state); use seeds: 1"
            )

    # ---- reading ------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepSpec:
        data = dict(data)
        for key in ("metric", "mode"):
            if isinstance(data.get(key), str):
                data[key] = [data[key]]
        if "base" in data and data["base"] is not None and not isinstance(data["base"], Mapping):
            raise ConfigError(
                f"base must be a mapping (a partial run config), got {data['base']!r}"
            )
        spec = from_dict(cls, data)
        base = spec.run_config()  # a bad base fails here, with its path
        spec.scheduler.check_run(base)
        check_metrics_fit_data(spec.metric, base)
        return spec

    @classmethod
    def load(cls, *, preset: str | None = None, config: str | Path | None = None,
             overrides: list[str] | tuple[str, ...] = (), name: str | None = None,
             storage: str | None = None) -> SweepSpec:
        """Read a preset or a YAML file and apply `--set` overrides.

        An override names a sweep key (`num_samples=4`, `resources/gpu=0.25`) or a run-config
        path applied to `base` (`train/steps=100`, `model/latent_dim=6`).
        """
        if (preset is None) == (config is None):
            raise ConfigError("give exactly one of --preset NAME or --config FILE")
        raw = read_preset(preset) if preset is not None else read_yaml(config)  # type: ignore
        if preset is not None:
            raw.setdefault("name", preset)
        elif "name" not in raw:
            raw["name"] = Path(config).stem  # type: ignore[arg-type]
        raw = apply_sweep_overrides(raw, overrides)
        if name is not None:
            raw["name"] = name
        if storage is not None:
            raw["storage"] = storage
        return cls.from_dict(raw)

    # ---- derived ------------------------------------------------------------------------
    def run_config(self, flat: Mapping[str, Any] | None = None) -> RunConfig:
        """The RunConfig of a trial: `base` with the trial's "/"-path values applied."""
        d = apply_overrides(dict(self.base), [])
        if flat:
            for path, value in flat.items():
                set_path(d, path, value)
        return RunConfig.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        out = to_dict(self)
        out["base"] = dict(self.base)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SWEEP_KEYS = [f.name for f in dataclasses.fields(SweepSpec)]
UDR_METRIC = "eval/udr_lasso"  # what `metric: eval/udr` names (dlib's default correlation)
UDR_ALL_TO_ALL = "eval/udr_a2a"


def check_udr_seeds(metrics: tuple[str, ...], scheduler_metric: str, seeds: int) -> None:
    """Refuse, in one line, a sweep that optimises (or early-stops on) UDR with fewer than two
    seeds per configuration: UDR scores a trial's models against each other, and one model
    cannot form a group. The all-to-all UDR is computed after the sweep, never a trial's."""
    from analysis.metrics.registry import GROUP_METRIC_KEYS

    if UDR_ALL_TO_ALL in metrics:
        raise ConfigError(
            f"metric {UDR_ALL_TO_ALL!r} scores every model of a finished sweep (mipet-tune udr "
            f"SWEEP), so no trial can report it; optimise {UDR_METRIC} with seeds >= 2")
    keys = {k for names in GROUP_METRIC_KEYS.values() for k in names} | {"udr"}
    for m in (*metrics, scheduler_metric):
        if seeds < 2 and m.split("/", 1)[-1] in keys:
            raise ConfigError(
                f"metric {m!r} with seeds: {seeds}: UDR compares a trial's models trained with "
                "different seeds, and one model cannot form a group; set seeds >= 2")


def check_metrics_fit_data(metrics: tuple[str, ...], base: RunConfig) -> None:
    """Refuse an objective that needs ground-truth factors on data without them, naming the
    metrics that work there."""
    from analysis.metrics.registry import registered
    from tune.data._registry import dataset_record

    if dataset_record(base.data.name).has_factors:
        return
    needs = {k for m in registered() if m.needs_factors for k in m.keys}
    bad = [m for m in metrics if m.startswith("eval/") and m[5:] in needs]
    if bad:
        works = [f"eval/{k}" for m in registered() if not m.needs_factors for k in m.keys
                 if k != UDR_ALL_TO_ALL[5:]]
        raise ConfigError(
            f"metric {bad[0]!r} needs ground-truth factors, which dataset {base.data.name!r} has "
            f"none of; metrics that work here: {', '.join(works)} (UDR with seeds >= 2)")


def preset_names() -> list[str]:
    folder = importlib.resources.files(PRESETS_PACKAGE)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_preset(name: str) -> dict[str, Any]:
    names = preset_names()
    if name not in names:
        raise ConfigError(f"unknown preset {name!r}; {nearest(name, names)}")
    text = importlib.resources.files(PRESETS_PACKAGE).joinpath(f"{name}.yaml").read_text()
    return strict_yaml.loads(text, f"preset {name!r}") or {}


def apply_sweep_overrides(
    raw: Mapping[str, Any], overrides: list[str] | tuple[str, ...]
) -> dict[str, Any]:
    out = dict(raw)
    base = apply_overrides(dict(out.get("base") or {}), [])  # a deep copy
    changed_base = False
    run_paths = known_paths()
    for item in overrides:
        key, value = parse_override(item)
        head = key.split("/")[0]
        path = key.removeprefix("base/")
        if path in run_paths:
            set_path(base, path, value)
            changed_base = True
        elif key.startswith("base/"):
            raise ConfigError(f"--set {key!r}: unknown config path; {nearest(path, run_paths)}")
        elif head in SWEEP_KEYS:
            parts = key.split("/")
            node = out
            for part in parts[:-1]:
                node[part] = dict(node.get(part) or {})
                node = node[part]
            node[parts[-1]] = value
        else:
            raise ConfigError(
                f"--set {key!r}: not a sweep key or run-config path; "
                f"{nearest(key, SWEEP_KEYS + run_paths)}"
            )
    if changed_base:
        out["base"] = base
    check_keys(out, SWEEP_KEYS, "")
    return out

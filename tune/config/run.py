"""`RunConfig`: the one input of a training run (a trial, or `mipet-tune train`).

A run config is five frozen parts: `model` (`models.ModelConfig`), `data`, `train`, `eval` and the
`seed`. It is read strictly from nested dicts (YAML, Ray's trial config) or from "/"-paths
(`"model/beta"`, as search spaces and `--set` name them), and written back with `to_dict()`, so the
Ray trial dict, the checkpoint, the exported best config and `train --config` all hold the same
thing.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

# light: names and keys, no scikit-learn
from analysis.metrics.registry import GROUP_METRIC_KEYS, METRIC_KEYS, registered
from models import ModelConfig, strict_yaml
from models.errors import ConfigError
from models.strict import check_keys, from_dict, nearest, to_dict
from tune.data import DATASETS  # the one list of dataset names
from tune.data._registry import dataset_record, info_for, model_defaults

SECTIONS = ("model", "data", "train", "eval", "seed")
MAX_STEPS = 1_000_000_000  # train/steps above this is a typo (1e30), not a run
# The one key a resumed run may change: a run trained longer is the same run (`run_id`).
RESUMABLE_KEYS = ("train/steps",)
# Keys an exported best config carries besides the run config; `train --config` ignores them.
EXPORT_EXTRA_KEYS = ("metrics", "provenance")
UDR_DEFAULT = "udr_lasso"  # what `udr` names: UDR with dlib's default correlation


@dataclass(frozen=True)
class DataConfig:
    """Which ground-truth dataset a run trains and is evaluated on."""

    name: str = "dsprites"
    source: str | None = None  # the real file or folder; None = the built-in generator
    cache_dir: str | None = None  # None = $MIPET_TUNE_CACHE or ~/.cache/mipet-tune

    def __post_init__(self) -> None:
        if self.name not in DATASETS:
            raise ConfigError(
                f"data.name={self.name!r} is unknown; {nearest(self.name, DATASETS)}"
            )


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation: the paper's run.sh settings by default (Adam, lr 4e-4, batch 256)."""

    steps: int = 100_000  # optimizer steps; `--set train/steps=N` shortens any run
    batch_size: int = 256
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 4e-4  # encoder/decoder group
    sub_lr: float = 4e-4  # IPE/EF group (spec 3.3)
    weight_decay: float = 0.0  # encoder/decoder group only, coupled L2 (torch Adam)
    max_grad_norm: float = 1.0  # global-norm clipping; 0 disables
    lr_schedule: Literal["const", "linear", "cosine"] = "const"
    warmup_steps: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 = autocast on the forward pass
    device: Literal["auto", "cpu", "cuda"] = "auto"
    report_every: int = 500  # steps between loss reports
    checkpoint_every: int = 5_000  # steps between checkpoints (and one at the end)
    eval_every: int = 0  # steps between `fast` metric evaluations; 0 = only at the end
    num_threads: int = 0  # torch intra-op threads; 0 = what the trial's CPUs allow
    images: bool = True  # reconstructions and traversals at each evaluation and at the end
    traversal_steps: int = 9  # values per latent in a traversal (frames of traversal.gif)
    traversal_range: Literal["fixed", "data"] = "fixed"  # [-2, 2], or each latent's data range
    # loss-weight schedules {"model/beta": {kind, start, end, steps, ...}} (tune.config.schedules)
    schedules: dict[str, Any] = field(default_factory=dict)
    # a torch.optim.lr_scheduler by name, {name, window, **arguments}; replaces lr_schedule
    lr_scheduler: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        from tune.config.schedules import normalise_lr_scheduler, normalise_schedules

        object.__setattr__(self, "schedules", normalise_schedules(self.schedules))
        object.__setattr__(self, "lr_scheduler", normalise_lr_scheduler(self.lr_scheduler))
        if self.lr_scheduler is not None and (self.lr_schedule != "const" or self.warmup_steps):
            raise ConfigError(
                f"train.lr_scheduler ({self.lr_scheduler['name']}) replaces train.lr_schedule "
                f"and train.warmup_steps; leave them at const and 0, got {self.lr_schedule!r} "
                f"and {self.warmup_steps}"
            )
        for name in ("steps", "batch_size", "report_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.steps > MAX_STEPS:
            raise ConfigError(
                f"train.steps={self.steps:.4g} is past the limit of {MAX_STEPS:.0e} optimizer "
                "steps; give a whole number of steps, for example 300000"
            )
        if self.batch_size < 2:
            raise ConfigError(f"train.batch_size must be >= 2, got {self.batch_size}")
        for name in ("lr", "sub_lr"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not self.weight_decay >= 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if not self.max_grad_norm >= 0:
            raise ConfigError(f"train.max_grad_norm must be >= 0, got {self.max_grad_norm}")
        if self.traversal_steps < 2:
            raise ConfigError(f"train.traversal_steps must be >= 2, got {self.traversal_steps}")
        for name in ("warmup_steps", "eval_every", "num_threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class EvalConfig:
    """The disentanglement evaluation at the end of a run (and, cheaply, during it)."""

    protocol: Literal["dlib", "mipet", "fast", "none"] = "dlib"
    metrics: tuple[str, ...] = ()  # empty = the protocol's default set
    # "mu": metrics on the encoder mean (the sound choice); "sample": on a reparameterised sample
    # z, as the paper code does (docs/paper_code.md, item 1).
    representation: Literal["mu", "sample"] = "mu"
    fast_metrics: tuple[str, ...] = ("mig", "dci", "factor_vae")  # during training (eval_every)
    cache: bool = True  # encode each distinct image once per evaluation
    # "bf16": the encoder pass runs under bfloat16 autocast (CPU and GPU); the codes are cast
    # back to float32 before the metrics. fp32 stays the default: on a trained beta-TCVAE (3
    # metric seeds) bf16 moved DCI beyond its seed spread (dlib: disentanglement by 0.0034 against
    # a seed sd of 0.0016, train informativeness by 0.022 against 0.003; fast: 0.009 against
    # 0.004); every other metric moved by less than its seed sd.
    precision: Literal["fp32", "bf16"] = "fp32"

    def __post_init__(self) -> None:
        # `udr` is UDR with dlib's default correlation, lasso (its column is eval/udr_lasso).
        object.__setattr__(self, "metrics", tuple(
            UDR_DEFAULT if name == "udr" else name for name in self.metrics))
        for where, names in (("eval.metrics", self.metrics),
                             ("eval.fast_metrics", self.fast_metrics)):
            for name in names:
                if name in GROUP_METRIC_KEYS and where == "eval.fast_metrics":
                    raise ConfigError(
                        f"{where}: {name} scores a trial's seeds together once the last one has "
                        "finished, not during training; name it in eval.metrics")
                if name in GROUP_METRIC_KEYS and self.protocol == "mipet":
                    raise ConfigError(
                        f"{where}: {name} does not run under eval.protocol=mipet; use dlib or "
                        "fast")
                if name not in METRIC_KEYS and name not in GROUP_METRIC_KEYS:
                    known = [*METRIC_KEYS, *GROUP_METRIC_KEYS, "udr"]
                    raise ConfigError(
                        f"{where}: unknown metric {name!r}; {nearest(name, known)}"
                    )


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run depends on. Same config, same losses."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig(name="mipet_vae"))
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        from tune.config.schedules import check_schedule_paths

        check_schedule_paths(self.train.schedules, self.model.name,
                             self.model.loss_terms)
        if not dataset_record(self.data.name).has_factors:
            object.__setattr__(self, "eval", eval_without_factors(self.eval, self.data.name))

    # ---- reading -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RunConfig:
        """Strictly build a RunConfig from a nested dict.

        Unknown keys fail with the nearest known key. The model's `image_channels` and
        `dense_dim` default to the dataset's (its record's model defaults) unless given. The keys
        of an exported best config (`metrics`, `provenance`) are accepted and ignored.
        """
        data = dict(data or {})
        for key in EXPORT_EXTRA_KEYS:
            data.pop(key, None)
        check_keys(data, SECTIONS, "")
        for key in ("model", "data", "train", "eval"):
            if data.get(key) is not None and not isinstance(data[key], Mapping):
                raise ConfigError(f"{key} must be a mapping of settings, got {data[key]!r}")
        data_cfg = from_dict(DataConfig, data.get("data"), where="data/")
        model_d = dict(data.get("model") or {})
        for key, value in model_defaults(data_cfg.name, data_cfg.source).items():
            model_d.setdefault(key, value)
        model_d.setdefault("name", "mipet_vae")
        model_cfg = ModelConfig.from_dict(model_d)
        if model_cfg.condition_on:
            check_condition_on(model_cfg.condition_on, info_for(data_cfg.name).factor_names,
                               data_cfg.name)
        seed = data.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        return cls(
            model=model_cfg,
            data=data_cfg,
            train=from_dict(TrainConfig, data.get("train"), where="train/"),
            eval=from_dict(EvalConfig, data.get("eval"), where="eval/"),
            seed=seed,
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(read_yaml(path))

    # ---- writing -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "model": to_dict(self.model),
            "data": to_dict(self.data),
            "train": to_dict(self.train),
            "eval": to_dict(self.eval),
            "seed": self.seed,
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        """`{"model/beta": 1.0, ..., "seed": 0}`."""
        from analysis.trials import flatten  # the one flattening (the trials table's columns)

        return flatten(self.to_dict())

    def config_id(self) -> str:
        """A short hash of everything but the seed: the seeds of one configuration share it.

        A trial computes it here and reports it; the trials table takes the reported one.
        """
        from analysis.trials import config_hash

        return config_hash(self.to_dict())

    def run_id(self) -> str:
        """A short hash of everything but the seed and `train/steps`: the identity of one run
        (its folder under `mipet-tune train --out`), which it keeps when trained longer."""
        from analysis.trials import config_hash

        d = self.to_dict()
        d["train"] = {k: v for k, v in d["train"].items() if k != "steps"}
        return config_hash(d)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


def config_changes(old: Mapping[str, Any], new: RunConfig, *,
                   ignore: Sequence[str] = RESUMABLE_KEYS) -> list[str]:
    """What changed from the run config dict `old` (a checkpoint's or a run folder's, as
    `to_dict` wrote it) to `new`, one `"model/beta: 4.0 -> 6.0"` per "/"-path, in `new`'s
    order; paths in `ignore` are left out."""
    from analysis.trials import flatten

    before, after = flatten(old), new.flat()
    absent = object()

    def same(a: Any, b: Any) -> bool:
        return json.dumps(a, sort_keys=True, default=list) == json.dumps(
            b, sort_keys=True, default=list)

    def shown(v: Any) -> str:
        return "(absent)" if v is absent else json.dumps(v, default=list)

    out = []
    for key in list(after) + [k for k in before if k not in after]:
        a, b = before.get(key, absent), after.get(key, absent)
        if key not in ignore and (a is absent or b is absent or not same(a, b)):
            out.append(f"{key}: {shown(a)} -> {shown(b)}")
    return out


def check_one_model(cfg: RunConfig, *, exported: bool = False) -> RunConfig:
    """Refuse a group metric (UDR) in a run that trains one model (`mipet-tune train`); a
    sweep's exported best config (`exported`) has its group metrics dropped instead (logged)."""
    group = [n for n in cfg.eval.metrics if n in GROUP_METRIC_KEYS]
    if group and exported:
        import logging

        logging.getLogger(__name__).info(
            "%s left out: one train run makes one model (its sweep scored the seeds together)",
            ", ".join(group))
        rest = tuple(n for n in cfg.eval.metrics if n not in GROUP_METRIC_KEYS)
        return cfg.replace(eval=dataclasses.replace(cfg.eval, metrics=rest))
    if group:
        raise ConfigError(
            f"eval.metrics: {group[0]} compares models trained with different seeds, and one "
            "train run makes one model, which cannot form a group; drop it here (a sweep with "
            "seeds >= 2 reports it)")
    return cfg


def eval_without_factors(ev: EvalConfig, dataset: str) -> EvalConfig:
    """`ev` for data without factors (your own images): a metric that needs factors is refused
    in one line naming the ones that work; an empty `eval.metrics` and the default
    `eval.fast_metrics` become the unsupervised metrics of their protocol."""
    def works(protocol: str, group: bool) -> list[str]:
        return [m.name for m in registered() if not m.needs_factors
                and m.budgets[protocol] is not None and (group or not m.group)]

    def refuse(where: str, names: Sequence[str], protocol: str) -> None:
        if protocol == "mipet":  # its metrics all need factors
            raise ConfigError(f"{where}: eval.protocol=mipet scores only metrics that need "
                              f"ground-truth factors, which dataset {dataset!r} has none of; "
                              "use eval.protocol dlib or fast")
        bad = [n for n in names if n not in works(protocol, True)]
        if bad:
            raise ConfigError(
                f"{where}: {', '.join(bad)} need{'s' * (len(bad) == 1)} ground-truth factors, "
                f"which dataset {dataset!r} has none of; metrics that work here: "
                f"{', '.join(works(protocol, where == 'eval.metrics'))}"
                + (" (UDR in a sweep with seeds >= 2)" if where == "eval.metrics" else ""))

    changes: dict[str, Any] = {}
    if ev.protocol != "none":
        refuse("eval.metrics", ev.metrics, ev.protocol)
        if not ev.metrics:
            changes["metrics"] = tuple(works(ev.protocol, False))
    if ev.fast_metrics == EvalConfig.fast_metrics:
        changes["fast_metrics"] = tuple(works("fast", False))
    else:
        refuse("eval.fast_metrics", ev.fast_metrics, "fast")
    return dataclasses.replace(ev, **changes) if changes else ev


def check_condition_on(condition_on: Sequence[str], factor_names: Sequence[str],
                       dataset: str) -> None:
    """Refuse a conditioned factor that the dataset does not have, listing its factors; at
    config time against the dataset's factor table, at run start against the opened data."""
    unknown = [n for n in condition_on if n not in factor_names]
    if unknown:
        raise ConfigError(
            f"model.condition_on: {', '.join(map(repr, unknown))} is not a factor of dataset "
            f"{dataset!r}; its factors are {', '.join(factor_names)}"
        )


# ---- "/"-paths ---------------------------------------------------------------------------
def set_path(d: dict[str, Any], path: str, value: Any) -> None:
    """Set `d["model"]["beta"] = value` for `path="model/beta"`, creating sections as needed."""
    parts = [p for p in path.replace(".", "/").split("/") if p]
    if not parts:
        raise ConfigError(f"empty config path in {path!r}")
    node = d
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"config path {path!r}: {part!r} is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def known_paths() -> list[str]:
    """Every settable "/"-path of a RunConfig (`model/beta`, `train/lr`, ..., `seed`), with
    every field of a schedule (`train/schedules/model/beta/end`) and of the lr scheduler
    (`train/lr_scheduler/factor`)."""
    out = []
    for section, cls in (
        ("model", ModelConfig),
        ("data", DataConfig),
        ("train", TrainConfig),
        ("eval", EvalConfig),
    ):
        out += [f"{section}/{f.name}" for f in dataclasses.fields(cls) if f.init]
    from tune.config.schedules import lr_scheduler_paths, schedule_paths

    return out + schedule_paths() + lr_scheduler_paths() + ["seed"]


def parse_override(item: str) -> tuple[str, Any]:
    """`"model.beta=4"` -> `("model/beta", 4)`: the value parsed as a YAML 1.2 scalar."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected PATH=VALUE, for example model/beta=4")
    path, raw = item.split("=", 1)
    return path.strip().replace(".", "/"), strict_yaml.scalar(raw)


def apply_overrides(
    d: Mapping[str, Any], overrides: list[str] | tuple[str, ...]
) -> dict[str, Any]:
    """Apply `--set model/beta=4` style overrides (values parsed as YAML scalars) to a dict."""
    out = json.loads(json.dumps(d, default=list)) if d else {}
    paths = known_paths()
    for item in overrides:
        path, value = parse_override(item)
        if path not in paths:
            raise ConfigError(f"--set {path!r}: unknown config path; {nearest(path, paths)}")
        set_path(out, path, value)
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping strictly (`models.strict_yaml`: duplicate keys fail, `1e-4` is a
    float); a missing file or bad YAML is a one-line ConfigError."""
    return strict_yaml.read_mapping(path, "config file")

"""Population-based training (`scheduler: {kind: pbt | pb2}`) on Ray Tune's schedulers.

What Ray Tune gets:
- the population: `num_samples` trials drawn at random from the sweep's search space by Ray's
  own variant generator (`population_space`: each searched parameter as a Ray domain, seeded by
  `sampler.seed`); PBT owns the population, so the Optuna searcher is not used. A perturbed path
  that the space does not search starts from the sweep's `base` value, or, when the base does not
  set it either, is drawn from its mutation range;
- the scheduler (`build_scheduler`): `PopulationBasedTraining` with the mutations converted to
  what it perturbs on the nested trial config (`{"model": {"beta": tune.loguniform(1, 16)}}`, a
  list for choices), perturbed values clipped into their ranges; or `PB2` with the bounds.
  Both count time in optimizer steps through the `pbt_step` key, which advances only on a
  trial's checkpointed reports before its last step, so PBT perturbs at checkpointed steps and
  never at the end.

What a trial does (`tune.sweep.trainable`): a checkpoint written by another trial is an exploit.
`restore_exploit` rewrites the donor's checkpoint for the trial's new (perturbed) config: the
model, optimizer, adversary, lr-scheduler, loader and random-number states are the donor's;
only the perturbed paths may differ from the donor's config (anything else is refused as for any
resume), and a changed `train/lr`, `train/sub_lr` or `train/weight_decay` is applied to the
optimizer's parameter groups and to the lr scheduler's base rates, so the schedule goes on at the
new rate. Each exploit adds an entry to the trial's history, `{step, trial, from_trial, changes,
model_sha256}`, which travels in the checkpoints (a trial that copies this one inherits it) and
is reported as the `pbt/history` column of the trials table; the perturbed values are reported
as `pbt/<path>` and written to the trial's TensorBoard run, the schedule PBT found.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

from models.errors import ConfigError

log = logging.getLogger(__name__)

TIME_KEY = "pbt_step"  # PBT's time_attr: the step of the last checkpointed report
HISTORY_KEY = "pbt/history"
_MIN_CHECKPOINTS = 4  # an exploit reads a donor's checkpoint after the donor has gone on


# ---- the population and the scheduler (driver side) -------------------------------------------
def check_population(spec: Any, base: Any, space: Any) -> None:
    """What the driver can check only with the space loaded: Ray's variant generator has no
    conditions, and every model the space picks must have the perturbed loss weights.

    Raises:
        ConfigError: a conditional parameter; a perturbed path another model lacks.
    """
    from tune.config.scheduler import mutable_paths

    sched = spec.scheduler
    for p in space.params:
        if p.when:
            raise ConfigError(
                f"search space: {p.path} is conditional ({p.condition()}); scheduler.kind="
                f"{sched.kind} draws its population with Ray's sampling, which has no "
                "conditions: give an unconditional space"
            )
    names = [base.model.name]
    for p in space.alternatives("model/name"):
        names += [c for c in p.choices if c not in names]
    for name in names:
        cfg = spec.run_config({"model/name": name})
        allowed = mutable_paths(cfg)
        for path in sched.searched:
            if path not in allowed:
                raise ConfigError(
                    f"scheduler.{sched.perturbed_key}: {path!r} is not a loss weight of model "
                    f"{name!r}, which the space picks; it can perturb {', '.join(allowed)}"
                )


def population_space(spec: Any, space: Any) -> dict[str, Any]:
    """Ray's `param_space` for the population: the space's fixed values, the sweep's `base`, each
    searched parameter as a Ray domain, and each perturbed path not set by those drawn from its
    mutation range (as nested dicts, the form Ray hands the trainable)."""
    from analysis.trials import flatten

    flat: dict[str, Any] = dict(space.fixed_dict())
    flat.update(flatten(dict(spec.base)))
    for p in space.params:
        if p.path not in space.fixed:
            flat[p.path] = ray_domain(p)
    for p in spec.scheduler.mutation_ranges().params:
        if p.path not in flat:
            flat[p.path] = ray_domain(p)
    return _nested(flat)


def ray_domain(p: Any) -> Any:
    """A `search_spaces.Param` as a Ray Tune domain (ranges inclusive of `high`, like Optuna)."""
    from ray import tune

    if p.kind == "categorical":
        return tune.choice(list(p.choices))
    low, high = p.low, p.high
    if p.kind == "int":
        step = int(p.step or 1)
        if p.log:
            return tune.lograndint(int(low), int(high) + 1)
        return tune.qrandint(int(low), int(high), step) if step > 1 else tune.randint(
            int(low), int(high) + 1)
    if p.log:
        return tune.loguniform(float(low), float(high))
    if p.step is not None:
        return tune.quniform(float(low), float(high), float(p.step))
    return tune.uniform(float(low), float(high))


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    from tune.config.run import set_path

    out: dict[str, Any] = {}
    for path, value in flat.items():
        set_path(out, path, value)
    return out


def hyperparam_mutations(sched: Any) -> dict[str, Any]:
    """pbt's `mutations` as Ray's nested `hyperparam_mutations`: a range becomes a Ray domain
    (resampled from, or its value scaled by a perturbation factor), choices a list (resampled,
    or shifted to a neighbour)."""
    out = {}
    for p in sched.mutation_ranges().params:
        out[p.path] = list(p.choices) if p.kind == "categorical" else ray_domain(p)
    return _nested(out)


def hyperparam_bounds(sched: Any) -> dict[str, Any]:
    """pb2's `bounds` as Ray's nested `hyperparam_bounds` (`[low, high]` lists)."""
    return _nested({p.path: [float(p.low), float(p.high)]
                    for p in sched.mutation_ranges().params})


class ClipToRanges:
    """PBT's `custom_explore_fn`: a perturbed value scaled out of its range is put back at the
    nearest end (module-level and plain data, so it pickles with the scheduler)."""

    def __init__(self, ranges: dict[str, tuple[float, float, bool]]) -> None:
        self.ranges = ranges  # path -> (low, high, integer)

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for path, (low, high, integer) in self.ranges.items():
            node = config
            *parents, leaf = path.split("/")
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict) and isinstance(node.get(leaf), (int, float)):
                value = min(max(node[leaf], low), high)
                node[leaf] = int(round(value)) if integer else float(value)
        return config


def build_scheduler(spec: Any) -> Any:
    """Ray's `PopulationBasedTraining` or `PB2` for `spec.scheduler` (kind pbt or pb2)."""
    from ray.tune.schedulers import PopulationBasedTraining

    sched = spec.scheduler
    common = dict(time_attr=TIME_KEY, metric=sched.metric, mode=sched.mode,
                  perturbation_interval=sched.perturbation_interval,
                  quantile_fraction=sched.quantile_fraction, synch=sched.synch,
                  # a fast/ metric comes only with the evaluations
                  require_attrs=False, log_config=True)
    if sched.kind == "pb2":
        from ray.tune.schedulers.pb2 import PB2

        return PB2(hyperparam_bounds=hyperparam_bounds(sched), **common)
    ranges = {p.path: (float(p.low), float(p.high), p.kind == "int")
              for p in sched.mutation_ranges().params if p.kind != "categorical"}
    return PopulationBasedTraining(
        hyperparam_mutations=hyperparam_mutations(sched),
        resample_probability=sched.resample_probability,
        perturbation_factors=tuple(sched.perturbation_factors),
        custom_explore_fn=ClipToRanges(ranges) if ranges else None,
        **common,
    )


def population_searcher(spec: Any) -> Any:
    """The search algorithm of a population: Ray's variant generator (random draws from
    `population_space`, seeded by `sampler.seed`), saying once that no Optuna sampler is used."""
    from ray.tune.search import BasicVariantGenerator

    if spec.sampler.kind != "tpe":
        log.warning("scheduler.kind=%s owns the population: sampler.kind=%s is not used; the "
                    "first population is drawn at random from the space (seed sampler.seed=%d)",
                    spec.scheduler.kind, spec.sampler.kind, spec.sampler.seed)
    return BasicVariantGenerator(max_concurrent=spec.max_concurrent,
                                 random_state=spec.sampler.seed)


def checkpoints_to_keep(spec: Any) -> int:
    """At least `_MIN_CHECKPOINTS` per trial: Ray deletes a trial's older checkpoints as it goes
    on, and an exploit reads the donor's checkpoint of the perturbation step afterwards."""
    return max(spec.checkpoints_to_keep, _MIN_CHECKPOINTS)


def trial_context(spec: Any) -> dict[str, Any]:
    """What a trial needs to know of the population (`context["pbt"]` of the trainable)."""
    sched = spec.scheduler
    return {"kind": sched.kind, "paths": list(sched.searched), "metric": sched.metric}


# ---- a trial's side: exploits, history, the schedule ------------------------------------------
def member_values(cfg: Any, paths: list[str]) -> dict[str, Any]:
    """`{"pbt/model/beta": 4.0, ...}`: the perturbed values a trial trains with."""
    flat = cfg.flat()
    return {f"pbt/{p}": flat.get(p) for p in paths}


def model_sha256(model_state: dict[str, Any]) -> str:
    """A checksum of a model's state dict (names, dtypes, shapes and bytes, in name order)."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(model_state):
        t = model_state[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{t.dtype}:{tuple(model_state[name].shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def restore_exploit(folder: Path, cfg: Any, *, paths: list[str], trial_id: str,
                    donor: str, history: list[dict[str, Any]],
                    into: Path) -> tuple[Path, dict[str, Any]]:
    """A donor trial's checkpoint rewritten for this trial's perturbed config.

    Args:
        folder: the donor's checkpoint folder (complete; see `tune.train.run_checkpoint`).
        cfg: this trial's RunConfig after the explore step.
        paths: the perturbed paths, the only ones that may differ from the donor's config.
        trial_id, donor: this trial's and the donor's ids (for the history entry).
        history: the donor's history (from its checkpoint's meta).
        into: an existing folder to write the adapted checkpoint in.
    Returns:
        The adapted checkpoint folder and the new history entry.
    Raises:
        ConfigError: the configs differ in a path that was not perturbed.
    """
    from analysis.trials import flatten
    from tune.config.run import RunConfig
    from tune.train.checkpoint import load_state, save_state, write_checkpoint
    from tune.train.run_checkpoint import CONFIG_FILE, META_FILE, STATE_FILE

    state = load_state(folder, filename=STATE_FILE)
    before, after = flatten(state.get("config") or {}), cfg.flat()
    changed = sorted(k for k in set(before) | set(after)
                     if json.dumps(before.get(k), default=list)
                     != json.dumps(after.get(k), default=list) and k != "train/steps")
    foreign = [k for k in changed if k not in paths]
    if foreign:
        shown = "; ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in foreign[:4])
        raise ConfigError(f"{folder}: an exploit may change only the perturbed paths "
                          f"({', '.join(paths)}), but the config changes {shown}")
    old = RunConfig.from_dict(state["config"])
    _rescale_optimizer(state, old, cfg)
    state["config"] = cfg.to_dict()
    entry = {"step": int(state["step"]), "trial": trial_id, "from_trial": donor,
             "changes": {k: [before.get(k), after.get(k)] for k in changed},
             "model_sha256": model_sha256(state["model"])}
    meta_path = folder / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta.update(trial_id=trial_id, pbt_history=list(history) + [entry])

    def write(tmp: Path) -> None:
        save_state(tmp, state, filename=STATE_FILE)
        (tmp / CONFIG_FILE).write_text(cfg.to_yaml())
        (tmp / META_FILE).write_text(json.dumps(meta))

    out = write_checkpoint(into, f"exploit_{entry['step']:08d}", write, step=entry["step"])
    log.info("trial %s exploits trial %s at step %d: %s", trial_id, donor, entry["step"],
             ", ".join(f"{k} {a} -> {b}" for k, (a, b) in entry["changes"].items()) or "no change")
    return out, entry


def _group_fields(group: dict[str, Any]) -> tuple[str, str | None]:
    """Which config fields set an optimizer group's lr and weight decay (`models.param_groups`
    names them; plain SGD has one unnamed group)."""
    return ("sub_lr", None) if group.get("name") == "ipe" else ("lr", "weight_decay")


def _rescale_optimizer(state: dict[str, Any], old: Any, new: Any) -> None:
    """Apply the new config's lr and weight decay to the saved optimizer and lr scheduler: each
    group's current lr (and the scheduler's base and last rates) scaled by new/old base lr, so a
    warm-up or decay goes on at the new rate."""
    groups = state["optimizer"]["param_groups"]
    sched = (state.get("scheduler") or {}).get("scheduler") or {}
    for i, group in enumerate(groups):
        lr_field, wd_field = _group_fields(group)
        old_lr, new_lr = getattr(old.train, lr_field), getattr(new.train, lr_field)
        if old_lr != new_lr:
            ratio = new_lr / old_lr if old_lr > 0 else math.nan

            def scaled(value: float, ratio: float = ratio, new_lr: float = new_lr) -> float:
                return new_lr if math.isnan(ratio) else value * ratio

            group["lr"] = scaled(group["lr"])
            if "initial_lr" in group:
                group["initial_lr"] = new_lr
            for key in ("base_lrs", "_last_lr"):
                if isinstance(sched.get(key), list) and i < len(sched[key]):
                    sched[key][i] = new_lr if key == "base_lrs" else scaled(sched[key][i])
        if wd_field is not None:
            group["weight_decay"] = getattr(new.train, wd_field)


class ScheduleLog:
    """The perturbed values as TensorBoard scalars `pbt/<path>` in a trial's run folder (its own
    event file beside the training loop's), one point per report."""

    def __init__(self, artifact_dir: Path | None) -> None:
        self.folder = Path(artifact_dir) / "tb" if artifact_dir is not None else None
        self.writer: Any = None

    def log(self, step: int, values: dict[str, Any]) -> None:
        if self.folder is None:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.folder.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(log_dir=str(self.folder), filename_suffix=".pbt")
        for tag, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_policy_logs(ray_dir: Path) -> list[list[Any]]:
    """Ray's own record of the exploits, `pbt_global.txt` in the experiment folder: one
    [trial tag, donor tag, trial iteration, donor iteration, donor config, new config] per
    exploit ([] when there was none)."""
    path = Path(ray_dir) / "pbt_global.txt"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

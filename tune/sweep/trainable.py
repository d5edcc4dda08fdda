"""The Ray Tune function trainable: a thin adapter from a trial's config dict to `run_training`.

One trial is one configuration; with `seeds > 1` it trains the configuration once per seed in turn
and reports their mean as the objective, so Optuna sees the mean of the repeats. Each seed's final
numbers travel in the last report (`seed_results`) and become one row each in `trials.parquet`.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def train_trial(config: dict[str, Any], *, context: dict[str, Any]) -> None:
    """Train one trial under Ray Tune.

    Args:
        config: the trial's nested run config (Ray unflattens the searcher's "/"-paths).
        context: sweep-level facts, small and picklable: `sweep_dir` (absolute path or URI of the
            sweep folder, for per-trial artifacts), `seeds` (repeats per configuration) and
            `objectives` (the metric keys the searcher optimises: a run without a finite value
            of one fails, so Optuna records a failure rather than a missing value).
    """
    from ray import tune as ray_tune

    from tune.config.run import RunConfig
    from tune.train.checkpoint import is_complete
    from tune.train.loop import META_FILE, run_training

    cfg = RunConfig.from_dict(config)  # bad keys fail here, before any work
    trial = _Trial(cfg, context, trial_id=ray_tune.get_context().get_trial_id() or "local",
                   gpu_ids=_assigned_gpus())
    resume_dir: Path | None = None
    resume_index, resumed_step = 0, 0
    holder = None
    checkpoint = ray_tune.get_checkpoint()
    if checkpoint is not None:
        holder = checkpoint.as_directory()
        folder = Path(holder.__enter__())
        saved = json.loads((folder / META_FILE).read_text())
        trial.done, resume_index = list(saved["done"]), int(saved["seed_index"])
        resume_dir = folder if saved["resumable"] else None
        resumed_step = int(saved["step"]) if resume_dir is not None else 0
        if resume_dir is not None and not is_complete(resume_dir, verify=True):
            # Retrying the same broken checkpoint would fail every retry: start the seed afresh.
            log.warning("trial %s: checkpoint %s is incomplete or corrupt; seed %d starts over",
                        trial.trial_id, resume_dir, resume_index)
            resume_dir = None
        trial.history = list(saved.get("pbt_history") or [])
        if resume_dir is not None and _is_exploit(trial, saved):
            resume_dir = _exploit(trial, resume_dir, saved)
        log.info("trial %s resumes seed %d of %d", trial.trial_id, resume_index + 1,
                 trial.n_seeds)

    if resume_index >= trial.n_seeds:  # restarted after its last checkpoint: report it again
        trial.udr.score(trial.done)
        ray_tune.report({"step": cfg.train.steps, "total_step": trial.n_seeds * cfg.train.steps,
                     "config_id": trial.config_id,
                     **_seed_means(trial.done), "seed_results": json.dumps(trial.done)})
    try:
        for index in range(resume_index, trial.n_seeds):
            resuming = resume_dir is not None and index == resume_index
            seed = _SeedRun(trial, index, resumed_from=resumed_step if resuming else 0)
            with tempfile.TemporaryDirectory(prefix="mipet-trial-") as tmp:
                result = run_training(
                    cfg.replace(seed=seed.seed),
                    report=seed.report,
                    resume_from=resume_dir if resuming else None,
                    checkpoint_root=Path(tmp),
                    artifact_dir=seed.artifact_dir,
                    gpu_ids=trial.gpu_ids,
                    checkpoint_meta=seed.meta,
                )
            trial.done.append(seed.row(_final_numbers(result)))
    finally:
        trial.close()
        if holder is not None:
            holder.__exit__(None, None, None)


# ---- population-based training: a checkpoint of another trial is an exploit ------------------
def _is_exploit(trial: _Trial, saved: dict[str, Any]) -> bool:
    owner = saved.get("trial_id")
    return trial.pbt is not None and owner is not None and owner != trial.trial_id


def _exploit(trial: _Trial, donor_dir: Path, saved: dict[str, Any]) -> Path:
    """The donor's checkpoint rewritten for this trial's perturbed config (the whole training
    state is the donor's; see `tune.sweep.pbt.restore_exploit`), its history entry recorded."""
    from tune.sweep.pbt import restore_exploit

    tmp = tempfile.TemporaryDirectory(prefix="mipet-exploit-")
    trial.cleanup.append(tmp)
    folder, entry = restore_exploit(donor_dir, trial.cfg, paths=list(trial.pbt["paths"]),
                                    trial_id=trial.trial_id, donor=str(saved["trial_id"]),
                                    history=trial.history, into=Path(tmp.name))
    trial.history.append(entry)
    return folder


@dataclass
class _Trial:
    """One trial's facts and the rows of its finished seeds."""

    cfg: Any  # RunConfig
    context: dict[str, Any]
    trial_id: str
    gpu_ids: list
    started_at: float = field(default_factory=time.time)
    done: list[dict[str, Any]] = field(default_factory=list)  # one row per finished seed
    config_id: str = ""  # computed once, reported with every result; readers take this one
    udr: Any = None  # tune.sweep.udr.TrialUDR: the seeds' models as one UDR group
    history: list[dict[str, Any]] = field(default_factory=list)  # PBT exploits (see pbt.py)
    cleanup: list[Any] = field(default_factory=list)  # what `close` releases

    def __post_init__(self) -> None:
        from tune.sweep.udr import TrialUDR

        self.config_id = self.cfg.config_id()
        self.udr = TrialUDR(self.cfg, self.n_seeds, self.gpu_ids)

    @property
    def pbt(self) -> dict[str, Any] | None:
        """The population's facts (`tune.sweep.pbt.trial_context`), None outside PBT."""
        return self.context.get("pbt")

    def pbt_columns(self) -> dict[str, Any]:
        """The perturbed values this trial trains with and its exploits (`pbt/history`)."""
        if self.pbt is None:
            return {}
        from tune.sweep.pbt import HISTORY_KEY, member_values

        return {**member_values(self.cfg, list(self.pbt["paths"])),
                HISTORY_KEY: json.dumps(self.history)}

    def close(self) -> None:
        for item in reversed(self.cleanup):
            item.cleanup() if hasattr(item, "cleanup") else item.close()
        self.cleanup.clear()

    @property
    def n_seeds(self) -> int:
        return int(self.context.get("seeds", 1))


@dataclass
class _SeedRun:
    """One seed of a trial: what its checkpoints remember (`meta`), what it tells Ray
    (`report`) and its row of trials.parquet (`row`)."""

    trial: _Trial
    index: int
    resumed_from: int = 0
    schedule_log: Any = None  # a PBT member's `pbt/<path>` TensorBoard scalars
    pbt_time: int = 0  # the step of its last report that PBT may act on

    @property
    def seed(self) -> int:
        return self.trial.cfg.seed + self.index

    @property
    def artifact_dir(self) -> Path | None:
        return _artifact_dir(self.trial.context.get("sweep_dir"), self.trial.trial_id, self.seed)

    def row(self, metrics: dict[str, Any]) -> dict[str, Any]:
        row = _seed_row(metrics, self.seed, self.artifact_dir, self.trial.gpu_ids,
                        self.resumed_from)
        row["started_at"] = self.trial.started_at
        row.update(self.trial.pbt_columns())
        return row

    def meta(self, step: int, final: dict[str, Any] | None) -> dict[str, Any]:
        done = self.trial.done
        own = {"trial_id": self.trial.trial_id, "pbt_history": self.trial.history}
        if final is None:
            return {"done": done, "seed_index": self.index, "resumable": True, "step": step,
                    **own}
        return {"done": done + [self.row(final)], "seed_index": self.index + 1,
                "resumable": False, "step": step, **own}

    def report(self, metrics: dict[str, Any], saved: Path | None) -> None:
        from ray import tune as ray_tune

        from models.errors import NonFiniteLossError

        steps = self.trial.cfg.train.steps
        metrics = dict(metrics)
        metrics["seed"] = self.seed
        metrics["config_id"] = self.trial.config_id
        metrics["seed_index"] = self.index
        metrics["total_step"] = self.index * steps + int(metrics.get("step", 0))
        if self.trial.pbt is not None:
            self._population_keys(metrics, saved is not None)
        if int(metrics.get("step", 0)) >= steps:  # a seed's final model joins the UDR group
            self.trial.udr.keep(self.index, saved, self.artifact_dir)
        if int(metrics.get("step", 0)) >= steps and self.index == self.trial.n_seeds - 1:
            rows = self.trial.done + [self.row(metrics)]  # the trial's last report
            self.trial.udr.score(rows)  # each seed's row gets its model's UDR
            metrics.update(_seed_means(rows))
            metrics["seed_results"] = json.dumps(rows)
            missing = [m for m in self.trial.context.get("objectives", ()) if m not in metrics]
            if missing:  # Optuna must see a failure, not a missing or NaN value
                raise NonFiniteLossError(
                    f"objective {', '.join(missing)} is not finite for this run")
        ckpt = ray_tune.Checkpoint.from_directory(str(saved)) if saved is not None else None
        ray_tune.report(metrics, checkpoint=ckpt)

    def _population_keys(self, metrics: dict[str, Any], checkpointed: bool) -> None:
        """A PBT member's report: its perturbed values and history (also to TensorBoard), and
        PBT's time key: the step of a checkpointed report before the last step (where PBT may
        act); other reports repeat the last such step, so PBT's clock stands still there."""
        from tune.sweep.pbt import TIME_KEY, ScheduleLog

        step = int(metrics.get("step", 0))
        columns = self.trial.pbt_columns()
        metrics.update(columns)
        if self.schedule_log is None:
            self.schedule_log = ScheduleLog(self.artifact_dir)
            self.trial.cleanup.append(self.schedule_log)
        self.schedule_log.log(step, columns)
        if checkpointed and step < self.trial.cfg.train.steps:
            wanted = self.trial.pbt["metric"]
            if wanted not in metrics:
                from models.errors import ConfigError

                shown = sorted(k for k in metrics if k.startswith(("train/", "fast/")))
                raise ConfigError(f"scheduler.metric={wanted!r} is not reported by this run; it "
                                  f"reports {', '.join(shown)}")
            self.pbt_time = step
        metrics[TIME_KEY] = max(self.pbt_time, self.resumed_from)


def _final_numbers(result: Any) -> dict[str, Any]:
    """A finished seed's `TrainResult` as report keys."""
    return {"step": result.step, "images_per_s": result.images_per_s,
            "train_seconds": result.train_seconds, "setup_seconds": result.setup_seconds,
            **{f"train/{k}": v for k, v in result.losses.items()},
            **{f"eval/{k}": v for k, v in result.metrics.items()}}


def _assigned_gpus() -> list:
    import ray

    try:
        return list(ray.get_gpu_ids())
    except Exception:  # outside a Ray worker
        return []


def _artifact_dir(sweep_dir: str | None, trial_id: str, seed: int) -> Path | None:
    if not sweep_dir or "://" in sweep_dir and not sweep_dir.startswith("file://"):
        # Remote storage: artifacts stay with the trial (TensorBoard via Ray's own logger).
        return None
    return Path(sweep_dir.removeprefix("file://")) / "trials" / trial_id / f"seed_{seed}"


def _seed_row(metrics: dict[str, Any], seed: int, artifact_dir: Path | None, gpu_ids: list,
              resumed_from: int) -> dict[str, Any]:
    """One seed's final numbers and where they came from (a row of trials.parquet)."""
    row = {k: v for k, v in metrics.items()
           if k.startswith(("train/", "eval/", "pbt/"))
           or k in ("step", "images_per_s", "train_seconds", "setup_seconds")}
    row["seed"] = seed
    row["artifact_dir"] = str(artifact_dir) if artifact_dir is not None else None
    row["node"] = os.uname().nodename
    row["gpu_ids"] = ",".join(str(g) for g in gpu_ids)
    row["resumed_from_step"] = resumed_from
    row["finished_at"] = time.time()
    return row


def _seed_means(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The mean over seeds of every final number (what Optuna is told)."""
    keys = {k for r in rows for k in r if k.startswith(("eval/", "train/"))}
    out = {}
    for key in sorted(keys):
        values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        if values:
            out[key] = float(statistics.fmean(values))
    return out

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
    from ray import tune

    from tune.config.run import RunConfig
    from models.errors import NonFiniteLossError
    from tune.train.checkpoint import is_complete
    from tune.train.loop import META_FILE, run_training

    started_at = time.time()
    cfg = RunConfig.from_dict(config)  # bad keys fail here, before any work
    n_seeds = int(context.get("seeds", 1))
    seeds = [cfg.seed + i for i in range(n_seeds)]
    trial_id = tune.get_context().get_trial_id() or "local"
    gpu_ids = _assigned_gpus()

    done: list[dict[str, Any]] = []  # one row per finished seed
    resume_dir: Path | None = None
    resume_index = 0
    holder = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        holder = checkpoint.as_directory()
        folder = Path(holder.__enter__())
        saved = json.loads((folder / META_FILE).read_text())
        done, resume_index = list(saved["done"]), int(saved["seed_index"])
        resume_dir = folder if saved["resumable"] else None
        if resume_dir is not None and not is_complete(resume_dir, verify=True):
            # Retrying the same broken checkpoint would fail every retry: start the seed afresh.
            log.warning("trial %s: checkpoint %s is incomplete or corrupt; seed %d starts over",
                        trial_id, resume_dir, resume_index)
            resume_dir = None
        log.info("trial %s resumes seed %d of %d", trial_id, resume_index + 1, n_seeds)

    sweep_dir = context.get("sweep_dir")
    if resume_index >= n_seeds:  # restarted after its last checkpoint: report the result again
        tune.report({"step": cfg.train.steps, "total_step": n_seeds * cfg.train.steps,
                     "config_id": cfg.config_id(),
                     **_seed_means(done), "seed_results": json.dumps(done)})
    try:
        for index in range(resume_index, n_seeds):
            seed = seeds[index]
            artifact_dir = _artifact_dir(sweep_dir, trial_id, seed)
            resumed_from = 0
            if resume_dir is not None and index == resume_index:
                resumed_from = int(saved["step"])

            def seed_row(metrics: dict[str, Any], _seed=seed, _dir=artifact_dir,
                         _resumed=resumed_from) -> dict[str, Any]:
                row = _seed_row(metrics, _seed, _dir, gpu_ids, _resumed)
                row["started_at"] = started_at
                return row

            def meta(step: int, final: dict[str, Any] | None, _index=index, _row=seed_row):
                if final is None:
                    return {"done": done, "seed_index": _index, "resumable": True, "step": step}
                return {"done": done + [_row(final)], "seed_index": _index + 1,
                        "resumable": False, "step": step}

            def report(metrics: dict[str, Any], saved: Path | None, *, _index=index, _seed=seed,
                       _row=seed_row) -> None:
                metrics = dict(metrics)
                metrics["seed"] = _seed
                metrics["config_id"] = cfg.config_id()  # the one id; readers take this one
                metrics["seed_index"] = _index
                metrics["total_step"] = _index * cfg.train.steps + int(metrics.get("step", 0))
                if int(metrics.get("step", 0)) >= cfg.train.steps:  # this seed's last report
                    rows = done + [_row(metrics)]
                    if _index == n_seeds - 1:
                        metrics.update(_seed_means(rows))
                        metrics["seed_results"] = json.dumps(rows)
                        missing = [m for m in context.get("objectives", ()) if m not in metrics]
                        if missing:  # Optuna must see a failure, not a missing or NaN value
                            raise NonFiniteLossError(
                                f"objective {', '.join(missing)} is not finite for this run")
                ckpt = tune.Checkpoint.from_directory(str(saved)) if saved is not None else None
                tune.report(metrics, checkpoint=ckpt)

            with tempfile.TemporaryDirectory(prefix="mipet-trial-") as tmp:
                result = run_training(
                    cfg.replace(seed=seed),
                    report=report,
                    resume_from=resume_dir if index == resume_index else None,
                    checkpoint_root=Path(tmp),
                    artifact_dir=artifact_dir,
                    gpu_ids=gpu_ids,
                    checkpoint_meta=meta,
                )
            final = {"step": result.step, "images_per_s": result.images_per_s,
                     "train_seconds": result.train_seconds, "setup_seconds": result.setup_seconds,
                     **{f"train/{k}": v for k, v in result.losses.items()},
                     **{f"eval/{k}": v for k, v in result.metrics.items()}}
            done.append(seed_row(final))
    finally:
        if holder is not None:
            holder.__exit__(None, None, None)


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
           if k.startswith(("train/", "eval/"))
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

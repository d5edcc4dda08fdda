"""The sweep driver: a `SweepSpec` in, a sweep folder out.

    <storage>/<name>/
      sweep.yaml        the resolved spec (with the search space)
      optuna.journal    the Optuna study (optuna-dashboard opens it); optuna_study.json names it
      ray/              Ray Tune's experiment folder (trial folders, checkpoints, TensorBoard)
      trials/<id>/      per-trial artifacts: TensorBoard scalars, reconstructions, traversals
      trials.parquet    one row per trial and seed
      report/           ranked tables, plots, best_config.yaml
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from models.errors import ConfigError
from analysis.trials import flatten
from tune.config.run import RunConfig, known_paths, read_yaml
from tune.config.sweep import SweepSpec
from tune.sweep.floor import write_sweep_floor

log = logging.getLogger(__name__)

SPEC_FILE = "sweep.yaml"
RAY_DIR = "ray"
TRIALS_FILE = "trials.parquet"
STATE_FILE = "sweep_state.json"

# Set in the driver before Ray Tune is imported; trial workers started by this driver inherit them.
_ENV_DEFAULTS = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # Objectives (eval/*) exist only in a trial's last report; intermediate reports lack them.
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_AIR_NEW_OUTPUT": "1",
    # Ray's loggers are chosen by `ray_loggers`: its TensorBoard copy of every scalar is left out.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}


def set_ray_env() -> None:
    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def ray_loggers(folder: Path | str) -> list:
    """Ray Tune's result loggers: params.json/result.json/progress.csv (the trials table reads
    them). TensorBoard is the trainable's own, one run per trial and seed under
    `trials/<id>/seed_<s>/tb`, except on remote storage, where no trial folder is local and
    Ray's TensorBoard logger is kept."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    remote = "://" in str(folder) and not str(folder).startswith("file://")
    return [CSVLoggerCallback(), JsonLoggerCallback()] + ([TBXLoggerCallback()] if remote else [])


def trial_dirname(trial) -> str:
    """Ray trial folders named by trial id (module-level: the Tuner pickles it)."""
    return f"trial_{trial.trial_id}"


class TrialSpace:
    """OptunaSearch's define-by-run space: a trial's run config as "/"-paths.

    Precedence, lowest first: the space's fixed values, the sweep's own `base` (so
    `--set train/steps=N` shortens any sweep), then the searched values; what none of them sets
    keeps the RunConfig default (which may depend on the model, like `num_ipe`). Module-level
    and plain data, so it pickles with the searcher.
    """

    def __init__(self, space: Any, user_flat: dict[str, Any]) -> None:
        self.space = space
        self.user_flat = user_flat

    def __call__(self, trial) -> dict[str, Any]:
        values = self.space.suggest(trial)
        fixed = self.space.fixed_dict()
        out = dict(fixed)
        out.update(self.user_flat)
        out.update({k: v for k, v in values.items() if k not in fixed})
        return out


def load_space_for(spec: SweepSpec, base: RunConfig):
    """The spec's search space, validated against the run config: every corner, with the sweep's
    own `base` applied as a trial gets it (see `TrialSpace`), must build a RunConfig."""
    from search_spaces import read_space

    space = read_space(spec.space)
    user = flatten(spec.base)
    fixed = set(space.fixed_dict())

    def check(flat: dict[str, Any]) -> None:
        merged = {k: v for k, v in flat.items() if k in fixed}
        merged.update(user)
        merged.update({k: v for k, v in flat.items() if k not in fixed})
        spec.run_config(merged)

    space.validate(known_paths=known_paths(), check=check, model_names=[base.model.name])
    return space


def sweep_folder(spec: SweepSpec) -> Path | str:
    from tune.sweep.storage import resolve_storage

    storage = resolve_storage(spec.storage)
    if "://" in storage and not storage.startswith("file://"):
        return f"{storage.rstrip('/')}/{spec.name}"
    return Path(storage.removeprefix("file://")) / spec.name


def _build_searcher(spec: SweepSpec, space, folder: Path):
    import optuna

    from tune.sweep.searcher import SafeOptunaSearch, make_study_storage

    if not log.isEnabledFor(logging.DEBUG):  # Optuna's per-trial INFO lines
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    # Mirror mode: the study lives in the searcher (pickled with every Tune snapshot) and is
    # appended to optuna.journal at each snapshot, so after a driver kill the study is restored
    # exactly as consistent as the trials table (a write-through storage runs ahead of it).
    study = make_study_storage(folder, spec.name)
    s = spec.sampler
    sampler = None
    if s.kind == "random":
        sampler = optuna.samplers.RandomSampler(seed=s.seed)
    elif s.kind == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=s.seed)
    elif s.kind == "qmc":
        sampler = optuna.samplers.QMCSampler(seed=s.seed)
    elif s.kind == "gp":
        sampler = optuna.samplers.GPSampler(seed=s.seed)
    multi = len(spec.metric) > 1
    kwargs: dict[str, Any] = dict(
        space=TrialSpace(space, flatten(spec.base)),
        metric=list(spec.metric) if multi else spec.metric[0],
        mode=list(spec.mode) if multi else spec.mode[0],
        study_name=study.study_name,
        mirror_path=study.path,
    )
    if sampler is None:
        kwargs["seed"] = s.seed
    else:
        kwargs["sampler"] = sampler
    return SafeOptunaSearch(**kwargs)


def _build_scheduler(spec: SweepSpec, base: RunConfig):
    if spec.scheduler.kind == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    total = base.train.steps * spec.seeds
    grace = spec.scheduler.grace_period or max(1, base.train.steps // 10)
    return ASHAScheduler(
        time_attr="total_step",
        metric=spec.scheduler.metric,
        mode=spec.scheduler.mode,
        max_t=total,
        grace_period=min(grace, total),
        reduction_factor=spec.scheduler.reduction_factor,
    )


def _trainable(spec: SweepSpec, folder: Path | str):
    from ray import tune

    from tune.sweep.trainable import train_trial

    context = {
        "sweep_dir": str(folder),
        "seeds": spec.seeds,
        "objectives": list(spec.metric),
    }
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    return tune.with_resources(tune.with_parameters(train_trial, context=context), resources)


def _check_objectives(spec: SweepSpec, base: RunConfig) -> None:
    from analysis.metrics import DEFAULT_METRICS, GROUP_METRIC_KEYS, METRIC_KEYS
    from tune.sweep.udr import trial_udr_keys

    if base.eval.protocol == "none":
        produced: set[str] = set()
    else:
        names = [n for n in base.eval.metrics or DEFAULT_METRICS[base.eval.protocol]
                 if n not in GROUP_METRIC_KEYS]  # UDR: scored over the seeds (tune.sweep.udr)
        unknown = [n for n in names if n not in METRIC_KEYS]
        if unknown:
            raise ConfigError(f"eval.metrics: unknown metric {unknown[0]!r}; known: "
                              f"{', '.join(METRIC_KEYS)}")
        produced = {k for n in names for k in METRIC_KEYS[n]} | trial_udr_keys(base, spec.seeds)
    for m in spec.metric:
        if m.startswith("eval/") and m[5:] not in produced:
            raise ConfigError(
                f"metric {m!r} is not computed by eval.protocol={base.eval.protocol!r}"
                + (f" with eval.metrics={list(base.eval.metrics)}" if base.eval.metrics else "")
                + f"; it computes {sorted('eval/' + k for k in produced)}"
            )


def prepare(spec: SweepSpec) -> tuple[RunConfig, Any]:
    """Everything that can fail on bad input, before Ray starts: the base config, the space."""
    base = spec.run_config()
    space = load_space_for(spec, base)
    _check_objectives(spec, base)
    if (spec.scheduler.kind == "asha" and spec.scheduler.metric.startswith("fast/")
            and not base.train.eval_every):
        raise ConfigError(
            f"scheduler.metric={spec.scheduler.metric!r} needs fast metrics during training: "
            "set base train/eval_every (steps between evaluations)"
        )
    return base, space


def run_sweep(spec: SweepSpec | None = None, *, resume: str | Path | None = None,
              address: str | None = None, verbose: int = 1, analyse: bool = True) -> SweepResult:
    """Run (or, with `resume=folder`, continue) a sweep into its folder, write trials.parquet,
    and (with `analyse`) the ranked table, report and best config.

    Bad input (spec, space, resources, storage) fails before any trial starts.
    """
    set_ray_env()
    if resume is not None:
        folder = Path(resume).expanduser().resolve()
        spec = _resumed_spec(folder)
    if spec is None:
        raise ConfigError("run_sweep needs a SweepSpec or resume=FOLDER")
    base, space = prepare(spec)
    if resume is None:
        folder = _new_sweep_folder(spec, base, space)
    else:
        from tune.sweep.storage import check_writable
        from tune.sweep.study import check_study

        check_writable(folder)
        check_study(folder)  # a damaged optuna.journal fails here, before Ray starts
    checksum = _start_cluster(spec, base, folder, address)
    grid = _fit(spec, base, space, folder, resumed=resume is not None, verbose=verbose)
    _reconcile_study(spec, folder, grid)
    write_trials(folder, trials_table(grid, data_checksum=checksum))
    write_sweep_floor(folder, spec, base, space)  # the untrained models, for the ranking
    text, best = (None, None)
    if analyse:
        from tune.cli.analyze import analyse_sweep

        text, best = analyse_sweep(folder, by=list(spec.metric))
    return SweepResult(folder=folder, ranked_text=text, best_config=best)


def _resumed_spec(folder: Path) -> SweepSpec:
    """The spec a sweep folder was started with, its search space as it was then."""
    spec_path = folder / SPEC_FILE
    if not spec_path.is_file():
        raise ConfigError(f"{folder}: not a sweep folder (no {SPEC_FILE}); nothing to resume")
    saved = read_yaml(spec_path)
    resolved = saved.pop("resolved", None) or {}
    if resolved.get("space"):  # the space as it was, even if its preset changed since
        saved["space"] = resolved["space"]
    return SweepSpec.from_dict(saved)


def _new_sweep_folder(spec: SweepSpec, base: RunConfig, space) -> Path:
    """Create a new sweep's folder (refusing one that holds a sweep) and write sweep.yaml."""
    folder = sweep_folder(spec)
    if not isinstance(folder, Path):
        raise ConfigError(
            f"storage {spec.storage!r}: remote sweep folders are written by Ray; give a local or "
            "shared-filesystem folder for the sweep itself"
        )
    ray_dir = folder / RAY_DIR
    if ray_dir.exists() and any(ray_dir.iterdir()):
        raise ConfigError(
            f"{folder} already holds a sweep; continue it with `mipet-tune sweep --resume "
            f"{folder}` or pick another --name"
        )
    from tune.sweep.storage import check_writable

    check_writable(folder)
    folder.mkdir(parents=True, exist_ok=True)
    resolved = spec.to_dict()
    resolved["resolved"] = {"space": space.to_dict(), "base": base.to_dict()}
    (folder / SPEC_FILE).write_text(yaml.safe_dump(resolved, sort_keys=False))
    return folder


def _start_cluster(spec: SweepSpec, base: RunConfig, folder: Path, address: str | None) -> str:
    """Connect to Ray, check the resources, prepare the dataset on every node; its checksum."""
    from tune.sweep.connect import connect
    from tune.sweep.nodes import prepare_on_all_nodes
    from tune.sweep.resources import check_resources

    cluster = connect(address)
    check_resources({"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
                    spec.max_concurrent or None, cluster)
    checksum = prepare_on_all_nodes(base.data.name, base.data.source, base.data.cache_dir)
    _write_state(folder, {"data_checksum": checksum, "started": time.time()})
    return checksum


def _fit(spec: SweepSpec, base: RunConfig, space, folder: Path, *, resumed: bool,
         verbose: int):
    """Run the trials (a new Tuner, or the restored one of a resumed sweep); the ResultGrid."""
    from ray import tune

    trainable = _trainable(spec, folder)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Ray's progress tables are logs, not results
        if resumed and tune.Tuner.can_restore(str(folder / RAY_DIR)):
            from tune.sweep.searcher import make_study_storage, relocate_mirror

            relocate_mirror(make_study_storage(folder).path)  # the folder may have moved
            tuner = tune.Tuner.restore(str(folder / RAY_DIR), trainable=trainable,
                                       resume_unfinished=True, resume_errored=True)
        else:
            tuner = _new_tuner(spec, base, space, folder, trainable, verbose)
        grid = tuner.fit()
    log.info("sweep %s: fit() took %.1f s", spec.name, time.perf_counter() - t0)
    return grid


def _reconcile_study(spec: SweepSpec, folder: Path, grid) -> None:
    from tune.sweep.searcher import eval_attrs_from_results, outcomes_from_results, reconcile_study

    try:
        metric = list(spec.metric) if len(spec.metric) > 1 else spec.metric[0]
        fixed = reconcile_study(folder, None, outcomes_from_results(grid, metric),
                                attrs=eval_attrs_from_results(grid))
        log.info("Optuna study reconciled with the trials: %s", fixed)
    except Exception as exc:  # never lose the results table over the study's bookkeeping
        log.warning("could not reconcile the Optuna study with the trials: %s", exc)


@dataclass(frozen=True)
class SweepResult:
    """A finished (or resumed) sweep: its folder, the ranked table as text, the best config."""

    folder: Path
    ranked_text: str | None = None
    best_config: Path | None = None


def _new_tuner(spec, base, space, folder: Path, trainable, verbose: int):
    from ray import tune

    searcher = _build_searcher(spec, space, folder)
    multi = len(spec.metric) > 1
    tune_config = tune.TuneConfig(
        search_alg=searcher,
        scheduler=_build_scheduler(spec, base),
        num_samples=spec.num_samples,
        max_concurrent_trials=spec.max_concurrent or None,
        reuse_actors=spec.reuse_actors,
        trial_dirname_creator=trial_dirname,
        **({} if multi else {"metric": spec.metric[0], "mode": spec.mode[0]}),
    )
    run_config = tune.RunConfig(
        name=RAY_DIR,
        storage_path=str(folder),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.checkpoints_to_keep),
        callbacks=ray_loggers(folder),
        verbose=verbose,
    )
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    from tune.train.checkpoint import atomic_write

    path = folder / STATE_FILE
    old = json.loads(path.read_text()) if path.is_file() else {}
    old.update(state)
    atomic_write(path, lambda fh: fh.write(json.dumps(old, indent=1).encode()))


# ---- the trials table ----------------------------------------------------------------------
def trials_table(grid, *, data_checksum: str | None = None):
    """One row per trial and seed from a ResultGrid, built by `analysis.trials.trial_rows` (the
    builder that also rebuilds a killed sweep's table from `ray/`)."""
    import pandas as pd

    from analysis.trials import trial_rows

    rows = []
    for result in grid:
        metrics = dict(result.metrics or {})
        trial_dir = Path(result.path) if result.path else None
        error = str(result.error) if result.error is not None else None
        try:
            resolved = RunConfig.from_dict(result.config).to_dict()
        except Exception as exc:  # a config that never validated: keep the row, flagged
            resolved = None
            error = error or f"invalid config: {exc}"
        rows += trial_rows(
            trial_id=metrics.get("trial_id") or (
                trial_dir.name.removeprefix("trial_") if trial_dir else None),
            config=result.config or {},
            reports=[metrics] if metrics else [],
            error=error,
            resolved=resolved,
            over=True,
            checkpoint_path=result.checkpoint.path if result.checkpoint is not None else None,
            trial_dir=str(trial_dir) if trial_dir else None,
            sweep_dir=trial_dir.parent.parent if trial_dir else None,
            extra={"data_checksum": data_checksum},
        )
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values(["trial_id", "seed"], kind="stable").reset_index(drop=True)
    return df


def write_trials(folder: Path, df) -> Path:
    """Write trials.parquet atomically (a crash never leaves half a table)."""
    from tune.train.checkpoint import atomic_write

    return atomic_write(folder / TRIALS_FILE, lambda fh: df.to_parquet(fh, index=False))

"""The sweep driver: a `SweepSpec` in, a sweep folder out.

    <storage>/<name>/
      .mipet-sweep      the marker that makes it a sweep folder (its format version)
      .mipet-sweep.lock while a driver runs: who holds the folder (see `tune.sweep.folder`)
      sweep.yaml        the resolved spec (with the search space)
      optuna.journal    the Optuna study (optuna-dashboard opens it); optuna_study.json names it
      ray/              Ray Tune's experiment folder (trial folders, checkpoints, TensorBoard)
      trials/<id>/      per-trial artifacts: TensorBoard scalars, reconstructions, traversals
      trials.parquet    one row per trial and seed; only gains rows
      trials.pending/   an ended trial's rows, until folded into trials.parquet (tune.sweep.table)
      report/           ranked tables, plots, best_config.yaml
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from models.errors import ConfigError
from tune.config.run import RunConfig
from tune.config.sweep import SweepSpec
from tune.sweep.floor import write_sweep_floor
from tune.sweep.folder import (
    MARKER_FILE,
    RAY_DIR,
    SPEC_FILE,
    STATE_FILE,
    SweepFolderError,
    SweepLock,
    check_sweep_folder,
    is_sweep_folder,
    write_marker,
)
from tune.sweep.interrupts import Interrupts
from tune.sweep.resume import check_ray_state, resumed_spec, saved_statuses
from tune.sweep.table import (
    ACTIVE,
    finished_count,
    trials_table,
    write_trials,
)

# `TrialSpace` and `trial_dirname` are pickled in tuner.pkl of sweeps started before they moved.
from tune.sweep.tuner import TrialSpace, load_space_for, new_tuner, trial_dirname  # noqa: F401

log = logging.getLogger(__name__)


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


def sweep_folder(spec: SweepSpec) -> Path | str:
    from tune.sweep.storage import resolve_storage

    storage = resolve_storage(spec.storage)
    if "://" in storage and not storage.startswith("file://"):
        return f"{storage.rstrip('/')}/{spec.name}"
    return Path(storage.removeprefix("file://")) / spec.name


def _trainable(spec: SweepSpec, folder: Path | str):
    from ray import tune as ray_tune

    from tune.sweep.trainable import train_trial

    context = {
        "sweep_dir": str(folder),
        "seeds": spec.seeds,
        "objectives": list(spec.metric),
    }
    if spec.scheduler.population_based:
        from tune.sweep.pbt import trial_context

        context["pbt"] = trial_context(spec)
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    return ray_tune.with_resources(ray_tune.with_parameters(train_trial, context=context),
                                   resources)


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
    if spec.scheduler.population_based:
        from tune.sweep.pbt import check_population

        check_population(spec, base, space)
    return base, space


def run_sweep(spec: SweepSpec | None = None, *, resume: str | Path | None = None,
              address: str | None = None, verbose: int = 1, analyse: bool = True) -> SweepResult:
    """Run (or, with `resume=folder`, continue) a sweep into its folder, write trials.parquet,
    and (with `analyse`) the ranked table, report and best config.

    Bad input (spec, space, resources, storage) fails before any trial starts, and a sweep
    that fails before its first trial leaves no folder behind (or, in a folder that existed,
    nothing of what it wrote). One driver at a time holds a sweep folder (`SweepLock`).
    SIGINT and SIGTERM stop the sweep gracefully: the result says `interrupted` (the signal),
    running trials are recorded as INTERRUPTED, nothing is analysed, and `resume` continues.

    Raises:
        SweepFolderError: `resume` is not a sweep folder, another driver holds it, or Ray's
            experiment state in it is damaged.
        SweepInterrupted: a signal came before the trials started.
    """
    set_ray_env()
    if resume is not None:
        folder = Path(resume).expanduser().resolve()
        check_sweep_folder(folder)
        spec = resumed_spec(folder)
    if spec is None:
        raise ConfigError("run_sweep needs a SweepSpec or resume=FOLDER")
    base, space = prepare(spec)
    with Interrupts() as interrupts, contextlib.ExitStack() as stack:
        if resume is None:
            folder, made = _new_sweep_folder(spec, base, space, stack)
        else:
            made = None
            stack.enter_context(SweepLock(folder))
            from tune.sweep.storage import check_writable
            from tune.sweep.study import check_study

            check_writable(folder)
            check_study(folder)  # a damaged optuna.journal fails here, before Ray starts
            check_ray_state(folder, spec)
            if not (folder / MARKER_FILE).is_file():  # a sweep from before the marker
                write_marker(folder, spec.name)
        try:
            checksum = _start_cluster(spec, base, folder, address)
            interrupts.reinstall()
        except BaseException:
            if made is not None:
                made.undo()
            raise
        ACTIVE.update(folder=folder, checksum=checksum, objectives=tuple(spec.metric))
        try:
            grid = _fit(spec, base, space, folder, resumed=resume is not None,
                        verbose=verbose, interrupts=interrupts)
        finally:
            ACTIVE.clear()
        if interrupts.signum is not None:
            return _interrupted(spec, folder, grid, checksum, interrupts.signum)
        _reconcile_study(spec, folder, grid)
        write_trials(folder, trials_table(grid, data_checksum=checksum))
        write_sweep_floor(folder, spec, base, space)  # the untrained models, for the ranking
        text, best = (None, None)
        if analyse:
            from tune.sweep.results import analyse_sweep

            text, best = analyse_sweep(folder, by=list(spec.metric))
        finished = finished_count(folder)
    return SweepResult(folder=folder, ranked_text=text, best_config=best, finished=finished,
                       planned=spec.num_samples)


def _interrupted(spec: SweepSpec, folder: Path, grid, checksum: str, signum: int) -> SweepResult:
    """Record a sweep stopped by a signal: unfinished trials as INTERRUPTED, nothing final."""
    statuses = saved_statuses(folder)
    write_trials(folder, trials_table(grid, data_checksum=checksum, statuses=statuses))
    finished = finished_count(folder)
    log.warning("sweep %s interrupted by %s: %d of %d trials finished; continue with "
                "`mipet-tune sweep --resume %s`", spec.name, signal.Signals(signum).name,
                finished, spec.num_samples, folder)
    return SweepResult(folder=folder, finished=finished, planned=spec.num_samples,
                       interrupted=signum)


@dataclass
class _Made:
    """What `_new_sweep_folder` created, so that a sweep failing before its first trial can
    remove exactly that."""

    folder: Path
    created_folder: bool
    files: list[Path]

    def undo(self) -> None:
        if self.created_folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            return
        for path in self.files:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _new_sweep_folder(spec: SweepSpec, base: RunConfig, space,
                      stack: contextlib.ExitStack) -> tuple[Path, _Made]:
    """Create a new sweep's folder, lock it (refusing one another driver holds or that holds a
    sweep already) and write the marker and sweep.yaml."""
    folder = sweep_folder(spec)
    if not isinstance(folder, Path):
        raise ConfigError(
            f"storage {spec.storage!r}: remote sweep folders are written by Ray; give a local or "
            "shared-filesystem folder for the sweep itself"
        )
    from tune.sweep.storage import check_writable

    check_writable(folder.parent)
    try:
        folder.mkdir()  # atomic: whether this driver created the folder
        created = True
    except FileExistsError:
        created = False
    # Never undo anything before the lock is ours: another driver may have the folder.
    stack.enter_context(SweepLock(folder))
    made = _Made(folder, created_folder=created, files=[])
    try:
        ray_dir = folder / RAY_DIR
        if is_sweep_folder(folder) or (ray_dir.exists() and any(ray_dir.iterdir())):
            raise SweepFolderError(
                f"{folder} already holds a sweep; continue it with `mipet-tune sweep --resume "
                f"{folder}` or pick another --name"
            )
        check_writable(folder)
        resolved = spec.to_dict()
        resolved["resolved"] = {"space": space.to_dict(), "base": base.to_dict()}
        made.files += [folder / SPEC_FILE, folder / MARKER_FILE, folder / STATE_FILE]
        (folder / SPEC_FILE).write_text(yaml.safe_dump(resolved, sort_keys=False))
        write_marker(folder, spec.name)
    except BaseException:
        made.undo()
        raise
    return folder, made


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
         verbose: int, interrupts: Interrupts):
    """Run the trials (a new Tuner, or the restored one of a resumed sweep); the ResultGrid."""
    from ray import tune as ray_tune

    trainable = _trainable(spec, folder)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Ray's progress tables are logs, not results
        if resumed and ray_tune.Tuner.can_restore(str(folder / RAY_DIR)):
            from tune.sweep.searcher import make_study_storage, relocate_mirror

            relocate_mirror(make_study_storage(folder).path)  # the folder may have moved
            tuner = ray_tune.Tuner.restore(str(folder / RAY_DIR), trainable=trainable,
                                           resume_unfinished=True, resume_errored=True)
        else:
            tuner = new_tuner(spec, base, space, folder, trainable, verbose)
        relocate = _new_trials_in(folder) if resumed else contextlib.nullcontext()
        with interrupts.fitting(), relocate:
            grid = tuner.fit()
    log.info("sweep %s: fit() took %.1f s", spec.name, time.perf_counter() - t0)
    return grid


@contextlib.contextmanager
def _new_trials_in(folder: Path):
    """Make the trials a restored Tuner creates live in `folder`, even if the sweep folder was
    moved or copied since it started. Ray 2.60 updates the restored trials' storage, but its
    SearchGenerator restores the pickled Experiment, whose storage still names the old folder:
    new trials (their checkpoints) went there, into someone else's sweep. Patched for the
    duration of one `fit()` in this process."""
    from ray.tune.search.search_generator import SearchGenerator

    original = SearchGenerator.set_state

    def set_state(self, state: dict) -> None:
        original(self, state)
        storage = getattr(self._experiment, "storage", None)
        if storage is not None and not storage.custom_fs_provided:
            if Path(storage.storage_fs_path) != folder:
                log.info("the sweep folder moved from %s: new trials go to %s",
                         storage.storage_fs_path, folder)
                storage.storage_fs_path = Path(folder).as_posix()

    SearchGenerator.set_state = set_state
    try:
        yield
    finally:
        SearchGenerator.set_state = original


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
    """A finished, resumed or interrupted sweep: its folder, the ranked table as text and the
    best config (None when interrupted), how many trials finished of those planned."""

    folder: Path
    ranked_text: str | None = None
    best_config: Path | None = None
    finished: int = 0
    planned: int = 0
    interrupted: int | None = None  # the signal that stopped the sweep, or None


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    from analysis._files import atomic_write

    path = folder / STATE_FILE
    old = json.loads(path.read_text()) if path.is_file() else {}
    old.update(state)
    atomic_write(path, lambda fh: fh.write(json.dumps(old, indent=1).encode()))



"""The Ray Tune `Tuner` of a sweep: the Optuna searcher over the define-by-run space, the
scheduler (ASHA, PBT, PB2), Ray's loggers and the callback that writes the trials table.

`TrialSpace` and `trial_dirname` are pickled into `ray/tuner.pkl`; `tune.sweep.driver` keeps
their old names importable, so sweeps started before they moved here still resume.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from analysis.trials import flatten
from tune.config.run import RunConfig, known_paths
from tune.config.sweep import SweepSpec
from tune.sweep.folder import RAY_DIR

log = logging.getLogger(__name__)


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


def build_searcher(spec: SweepSpec, space, folder: Path):
    import optuna

    from tune.sweep.searcher import SafeOptunaSearch, make_study_storage

    if not log.isEnabledFor(logging.DEBUG):  # Optuna's per-trial INFO lines
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    # Mirror mode: the study lives in the searcher (pickled with every Tune snapshot) and is
    # appended to optuna.journal at each snapshot, so after a driver kill the study is restored
    # exactly as consistent as the trials table (a write-through storage runs ahead of it).
    study = make_study_storage(folder, spec.name)
    if spec.scheduler.population_based:  # PBT owns the population; the study records it after
        from tune.sweep.pbt import population_searcher

        optuna.create_study(study_name=study.study_name, storage=study.storage,
                            directions=["maximize" if m == "max" else "minimize"
                                        for m in spec.mode])
        return population_searcher(spec)
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
    elif s.max_history:
        from tune.sweep.searcher import bounded_tpe_sampler

        sampler = bounded_tpe_sampler(s.max_history, seed=s.seed, **s.tpe_options())
    elif s.tpe_options():  # OptunaSearch's own TPESampler(seed=) has Optuna's defaults
        sampler = optuna.samplers.TPESampler(seed=s.seed, **s.tpe_options())
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


def build_scheduler(spec: SweepSpec, base: RunConfig):
    if spec.scheduler.kind == "none":
        return None
    if spec.scheduler.population_based:
        from tune.sweep.pbt import build_scheduler

        return build_scheduler(spec)
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


def new_tuner(spec, base, space, folder: Path, trainable, verbose: int):
    from ray import tune as ray_tune

    from tune.sweep.callbacks import TrialsWriter

    searcher = build_searcher(spec, space, folder)
    scheduler = build_scheduler(spec, base)
    population = spec.scheduler.population_based
    param_space, keep = None, spec.checkpoints_to_keep
    if population:  # Ray's variant generator draws the population; PBT perturbs it
        from tune.sweep.pbt import checkpoints_to_keep, population_space

        param_space, keep = population_space(spec, space), checkpoints_to_keep(spec)
    multi = len(spec.metric) > 1
    tune_config = ray_tune.TuneConfig(
        search_alg=searcher,
        scheduler=scheduler,
        num_samples=spec.num_samples,
        max_concurrent_trials=None if population else spec.max_concurrent or None,
        reuse_actors=spec.reuse_actors,
        trial_dirname_creator=trial_dirname,
        # a scheduler holds its own metric; Tune refuses a second one in TuneConfig
        **({} if multi or scheduler is not None else {"metric": spec.metric[0],
                                                      "mode": spec.mode[0]}),
    )
    run_config = ray_tune.RunConfig(
        name=RAY_DIR,
        storage_path=str(folder),
        failure_config=ray_tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=ray_tune.CheckpointConfig(num_to_keep=keep),
        callbacks=ray_loggers(folder) + [TrialsWriter()],  # rows written as trials end
        verbose=verbose,
    )
    return ray_tune.Tuner(trainable, param_space=param_space, tune_config=tune_config,
                          run_config=run_config)

"""`mipet-tune confirm`: re-run a sweep's top configurations with fresh seeds, as Ray trials.

The pairs (configuration, seed) are fixed when a confirmation starts and written to
`<sweep>/confirm/plan.json`: the top K configurations of the sweep's ranking (by its metric,
`analysis.rank`), each with N seeds it never used (the ones after the largest seed of that
configuration in trials.parquet), its run config from the trials table with the chosen
evaluation protocol and `--set` overrides. Each pair is one Ray Tune trial with the sweep's
resources (so pairs run side by side, on fractional GPUs too), no searcher; each trial's row is
merged into `confirm/trials.parquet` as it ends (`tune.sweep.confirm_writer`), with the same
atomic, only-gaining writer as the sweep's table, keyed by the pair. A resume runs exactly the
pairs without a finished row, as a new Ray run (`confirm/ray/run_<i>`). The confirmation holds
the sweep folder's lock (`SweepLock`) while it runs; SIGINT and SIGTERM stop it gracefully.

At the end: the noise floor under the confirmation's protocol (the sweep's own floor rows when
the protocols match, else evaluated once per model and dataset), the confirmed table
(`analysis.confirm`), and the sweep's best_config.yaml and report written again, now led by the
confirmed result.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from analysis.confirm import CONFIRM_DIR, CONFIRMED, PLAN_FILE, PLAN_FORMAT, read_plan
from models.errors import ConfigError
from tune.config.run import RunConfig, apply_overrides
from tune.sweep.folder import SweepFolderError, SweepLock, is_sweep_folder

log = logging.getLogger(__name__)

PROTOCOLS = ("dlib", "fast", "mipet")
RAY_RUNS = "ray"  # confirm/ray/run_<i>: one Ray experiment per start or resume


@dataclass(frozen=True)
class ConfirmResult:
    """A confirmation that ended or was stopped: its folder, its text (None when stopped),
    runs finished of those planned, and the signal that stopped it."""

    folder: Path
    text: str | None = None
    finished: int = 0
    planned: int = 0
    failed: int = 0
    interrupted: int | None = None


# ---- the plan ----------------------------------------------------------------------------------
def plan_confirmation(folder: Path, *, top: int, seeds: int, protocol: str = "dlib",
                      overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The plan of a new confirmation of `folder` (reads only; writes nothing).

    Raises:
        ConfigError: `top` or `seeds` out of range, an unknown protocol, a bad override, or a
            metric the protocol does not compute.
        AnalysisError: a sweep without finished trials.
    """
    from analysis import load_sweep
    from analysis.export import run_config_of
    from analysis.rank import rank
    from tune.sweep.driver import _check_objectives
    from tune.sweep.resume import resumed_spec

    if seeds < 2:
        raise ConfigError(f"--seeds {seeds}: a confirmation needs at least 2 seeds per "
                          "configuration (one seed cannot say how much seeds move a metric)")
    if top < 1:
        raise ConfigError(f"--top {top}: confirm at least 1 configuration")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    spec = resumed_spec(folder)
    df = load_sweep(folder)
    ranked = rank(df)  # the sweep's own metric; raises when no trial finished
    if top > len(ranked):
        raise ConfigError(f"--top {top}: the sweep has only {len(ranked)} ranked "
                          f"configuration{'s' if len(ranked) != 1 else ''}; give --top "
                          f"{len(ranked)} or less")
    configs = []
    for _, r in ranked.head(top).iterrows():
        cid = str(r["config_id"])
        row = df[(df["trial_id"] == r["best_trial"]) & (df["seed"] == r["best_seed"])].iloc[0]
        d = run_config_of(df, row)
        d.pop("seed", None)
        d.setdefault("eval", {})["protocol"] = protocol
        d = apply_overrides(d, list(overrides))
        cfg = RunConfig.from_dict(d)
        _check_objectives(spec, cfg)
        used = [int(s) for s in df.loc[df["config_id"] == cid, "seed"].dropna()]
        start = max(used, default=-1) + 1
        model = row.get("config/model/name")
        configs.append({
            "config_id": cid,
            "label": f"{model} {cid}" if isinstance(model, str) else cid,
            "search_rank": int(r["rank"]),
            "search_seeds": sorted(set(used)),
            "seeds": list(range(start, start + seeds)),
            "run_config": cfg.to_dict(),
            "run_config_id": cfg.config_id(),
        })
    return {"format": PLAN_FORMAT, "sweep": spec.name, "metric": list(ranked.attrs["by"]),
            "protocol": protocol, "overrides": list(overrides), "top": top,
            "seeds_per_config": seeds, "created": time.time(), "configs": configs}


def pairs(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (configuration, seed) of a plan: `key` (the row's `trial_id`), `config_id`,
    `seed` and `config` (the trial's full run config)."""
    out = []
    for c in plan["configs"]:
        for seed in c["seeds"]:
            out.append({"key": pair_key(c["config_id"], seed), "config_id": c["config_id"],
                        "seed": int(seed), "config": {**c["run_config"], "seed": int(seed)}})
    return out


def pair_key(config_id: str, seed: int) -> str:
    return f"{config_id}-s{int(seed)}"


def finished_pairs(confirm_dir: Path) -> set[str]:
    """The pairs with a finished row in confirm/trials.parquet."""
    from analysis.confirm import read_runs

    runs = read_runs(confirm_dir)
    if runs.empty:
        return set()
    return set(runs.loc[runs["status"] == "TERMINATED", "trial_id"].astype(str))


def _lookup(plan: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """(the run config's hash without the seed, seed) -> pair: how a Ray trial's config finds
    its pair (`analysis.trials.config_hash`, which `RunConfig.config_id` is)."""
    return {(c["run_config_id"], int(s)): {"key": pair_key(c["config_id"], s),
                                           "config_id": c["config_id"]}
            for c in plan["configs"] for s in c["seeds"]}


# ---- running -----------------------------------------------------------------------------------
def run_confirm(folder: str | Path, *, top: int | None = None, seeds: int | None = None,
                protocol: str | None = None, overrides: Sequence[str] = (),
                resume: bool = False, address: str | None = None,
                verbose: int = 1) -> ConfirmResult:
    """Confirm the top `top` configurations of the sweep in `folder` with `seeds` fresh seeds
    each (or, with `resume`, run the pairs of the saved plan that have not finished).

    Bad input fails before anything is written: not a sweep folder, a sweep without finished
    trials, `top` larger than its configurations, `seeds` < 2, a confirmation already there
    (without `resume`) or none to resume.

    Raises:
        ConfigError, SweepFolderError, AnalysisError: bad input, one line each.
        SweepInterrupted: a signal came before the trials started.
    """
    from tune.sweep.driver import set_ray_env
    from tune.sweep.interrupts import Interrupts

    set_ray_env()
    folder = Path(folder).expanduser()
    if not folder.is_dir() or not is_sweep_folder(folder):
        raise SweepFolderError(f"{folder}: not a sweep folder (no .mipet-sweep marker, which "
                               "`mipet-tune sweep` writes); nothing to confirm")
    folder = folder.resolve()
    confirm_dir = folder / CONFIRM_DIR
    if resume:
        if top is not None or seeds is not None or protocol is not None or overrides:
            raise ConfigError("--resume continues the confirmation as planned in "
                              f"{CONFIRM_DIR}/{PLAN_FILE}; drop --top, --seeds, --protocol "
                              "and --set")
        plan = read_plan(confirm_dir)
        if plan is None:
            raise ConfigError(f"{folder}: no confirmation to resume (no {CONFIRM_DIR}/"
                              f"{PLAN_FILE}); start one with --top K --seeds N")
    else:
        if top is None or seeds is None:
            raise ConfigError("give --top K and --seeds N (or --resume)")
        _refuse_existing(confirm_dir)
        plan = plan_confirmation(folder, top=top, seeds=seeds, protocol=protocol or "dlib",
                                 overrides=overrides)
    from tune.sweep.resume import resumed_spec

    spec = resumed_spec(folder)
    with Interrupts() as interrupts, SweepLock(folder):
        if not resume:
            _refuse_existing(confirm_dir)  # another driver may have started one meanwhile
        done = finished_pairs(confirm_dir) if resume else set()
        todo = [p for p in pairs(plan) if p["key"] not in done]
        if todo:
            checksum = _start_cluster(spec, plan, address)
            interrupts.reinstall()
            if not resume:
                _write_plan(confirm_dir, plan)
            signum = _fit(spec, plan, todo, confirm_dir, checksum, verbose, interrupts)
            if signum is not None:
                return _stopped(folder, plan, signum)
        elif not resume:
            _write_plan(confirm_dir, plan)
        _write_floor(folder, plan)
        from analysis.confirm import write_confirmed

        conf = write_confirmed(folder)
        _refresh_results(folder)
    failed = conf.planned - conf.finished
    text = _text(folder, conf)
    return ConfirmResult(folder, text, conf.finished, conf.planned, failed)


def _refuse_existing(confirm_dir: Path) -> None:
    if (confirm_dir / PLAN_FILE).is_file():
        raise ConfigError(f"{confirm_dir.parent} already holds a confirmation; continue it "
                          f"with `mipet-tune confirm {confirm_dir.parent} --resume`, or remove "
                          f"{confirm_dir} to start another")


def _write_plan(confirm_dir: Path, plan: dict[str, Any]) -> None:
    from analysis._files import atomic_write

    confirm_dir.mkdir(exist_ok=True)
    atomic_write(confirm_dir / PLAN_FILE,
                 lambda fh: fh.write(json.dumps(plan, indent=1).encode()))


def _start_cluster(spec, plan: dict[str, Any], address: str | None) -> str | None:
    """Connect to Ray, check the sweep's resources, prepare each dataset on every node."""
    from tune.sweep.connect import connect
    from tune.sweep.nodes import prepare_on_all_nodes
    from tune.sweep.resources import check_resources

    cluster = connect(address)
    check_resources({"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
                    spec.max_concurrent or None, cluster)
    checksums = set()
    for c in plan["configs"]:
        data = c["run_config"]["data"]
        checksums.add(prepare_on_all_nodes(data["name"], data.get("source"),
                                           data.get("cache_dir")))
    return next(iter(checksums)) if len(checksums) == 1 else None


def _fit(spec, plan: dict[str, Any], todo: list[dict[str, Any]], confirm_dir: Path,
         checksum: str | None, verbose: int, interrupts) -> int | None:
    """Run the pairs `todo` as one Ray experiment; their rows go to confirm/trials.parquet.
    Returns the signal that stopped it, or None."""
    from ray import tune as ray_tune
    from ray.tune.search import BasicVariantGenerator

    from tune.sweep.confirm_writer import ACTIVE, ConfirmWriter, pair_rows
    from tune.sweep.table import trials_table, write_trials
    from tune.sweep.trainable import train_trial
    from tune.sweep.tuner import ray_loggers, trial_dirname

    context = {"sweep_dir": str(confirm_dir), "seeds": 1, "objectives": list(spec.metric)}
    trainable = ray_tune.with_resources(ray_tune.with_parameters(train_trial, context=context),
                                        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    points = [p["config"] for p in todo]
    runs = confirm_dir / RAY_RUNS
    runs.mkdir(parents=True, exist_ok=True)
    name = f"run_{len(list(runs.glob('run_*')))}"
    tuner = ray_tune.Tuner(
        trainable,
        param_space=points[0],  # the structure every point fills in (all have the same keys)
        tune_config=ray_tune.TuneConfig(
            search_alg=BasicVariantGenerator(points_to_evaluate=points,
                                             max_concurrent=spec.max_concurrent),
            num_samples=len(points), reuse_actors=spec.reuse_actors,
            trial_dirname_creator=trial_dirname),
        run_config=ray_tune.RunConfig(
            name=name, storage_path=str(runs), verbose=verbose,
            callbacks=ray_loggers(confirm_dir) + [ConfirmWriter()],
            failure_config=ray_tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=ray_tune.CheckpointConfig(num_to_keep=spec.checkpoints_to_keep)),
    )
    lookup = _lookup(plan)
    ACTIVE.update(folder=confirm_dir, lookup=lookup, checksum=checksum)
    # Every point differs from `param_space` (the first point) somewhere, and Ray warns about
    # each such value of each trial ("Pre-set value ... is not equal to ..."): noise here.
    variants = logging.getLogger("ray.tune.search.variant_generator")
    preset = _DropPresetWarnings()
    variants.addFilter(preset)
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr), interrupts.fitting():
            grid = tuner.fit()
    finally:
        ACTIVE.clear()
        variants.removeFilter(preset)
    log.info("confirmation: %d runs in %.1f s", len(points), time.perf_counter() - t0)
    stopped = interrupts.signum
    table = trials_table(grid, data_checksum=checksum, statuses={} if stopped else None)
    configs = {}
    for result in grid:
        trial_dir = Path(result.path) if result.path else None
        tid = (result.metrics or {}).get("trial_id") or (
            trial_dir.name.removeprefix("trial_") if trial_dir else None)
        configs[str(tid)] = dict(result.config or {})
    write_trials(confirm_dir, pair_rows(table, configs, lookup))
    return stopped


class _DropPresetWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Pre-set value")


def _stopped(folder: Path, plan: dict[str, Any], signum: int) -> ConfirmResult:
    import signal

    planned = len(pairs(plan))
    finished = len(finished_pairs(folder / CONFIRM_DIR))
    log.warning("confirmation of %s interrupted by %s: %d of %d runs finished; continue with "
                "`mipet-tune confirm %s --resume`", folder, signal.Signals(signum).name,
                finished, planned, folder)
    return ConfirmResult(folder, None, finished, planned, interrupted=signum)


def _write_floor(folder: Path, plan: dict[str, Any]) -> None:
    """confirm/floor.parquet: the sweep's floor rows under the plan's protocol, and for each
    model and dataset they lack, the untrained models evaluated now (`write_floor`)."""
    import pandas as pd

    from analysis._files import atomic_write
    from analysis.floor import FLOOR_FILE, load_floor
    from tune.sweep.floor import write_floor

    confirm_dir = folder / CONFIRM_DIR
    if not (confirm_dir / FLOOR_FILE).is_file():
        sweep_floor = load_floor(folder)
        if sweep_floor is not None and "eval/protocol" in sweep_floor.columns:
            same = sweep_floor[sweep_floor["eval/protocol"] == plan["protocol"]]
            if len(same):
                atomic_write(confirm_dir / FLOOR_FILE,
                             lambda fh: pd.DataFrame(same).to_parquet(fh, index=False))
    write_floor(confirm_dir, [RunConfig.from_dict({**c["run_config"], "seed": c["seeds"][0]})
                              for c in plan["configs"]])


def _refresh_results(folder: Path) -> None:
    """The sweep's best_config.yaml and report, written again to lead with the confirmation."""
    from tune.sweep.results import export, report

    for what, write in (("best config", export), ("report", report)):
        try:
            write(folder)
        except Exception as exc:  # the confirmed table is written; these are its echoes
            log.warning("the sweep's %s could not be written again: %s", what, exc)


def _text(folder: Path, conf) -> str:
    from analysis.confirm import confirmed_markdown

    lines = [confirmed_markdown(conf)]
    missing = conf.planned - conf.finished
    if missing:
        lines.append(f"{missing} of {conf.planned} runs did not finish; run them with "
                     f"`mipet-tune confirm {folder} --resume`")
    lines.append(f"confirmed table: {folder / CONFIRM_DIR / CONFIRMED}.md (.csv, .parquet)")
    return "\n".join(lines)

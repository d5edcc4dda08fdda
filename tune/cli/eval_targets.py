"""What `mipet-tune evaluate` scores: the checkpoints a target names (a run folder of
`mipet-tune train`, one of its checkpoint folders, a sweep trial, or a sweep's top K
configurations), each with where it came from and the config id its run recorded."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalTarget:
    """One checkpoint to score, and where it came from.

    `config_id`: the id its run recorded (a sweep's row, a run's result.yaml), checked against
    the checkpoint's own config; None when nothing recorded one."""

    checkpoint: Path
    trial_id: str | None = None
    seed: int | None = None
    config_id: str | None = None
    sweep: Path | None = None


def find_targets(target: str | Path, *, trial: str | None = None,
                 top: int | None = None) -> list[EvalTarget]:
    """The checkpoints `evaluate TARGET [--trial ID | --top K]` scores (reads only).

    Raises:
        ConfigError: not a run, checkpoint or sweep folder; a sweep without --trial/--top (or
            a run with them); an unknown trial id; --top larger than the sweep; a sweep or
            trial without finished runs; a run without a checkpoint.
        DataFileError: a run folder without a readable checkpoint.
    """
    from tune.train.command import CHECKPOINTS, RESULT_FILE
    from tune.train.run_checkpoint import STATE_FILE, checkpoints_in, choose_checkpoint

    path = Path(target).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{target}: no such folder; give a run folder of mipet-tune train, "
                          "one of its checkpoint folders, or a sweep folder")
    path = path.resolve()
    if _is_sweep(path):
        if (trial is None) == (top is None):
            raise ConfigError(f"{target} is a sweep folder: give --trial ID (one trial) or "
                              "--top K (its K best configurations)")
        return _sweep_targets(path, trial=trial, top=top)
    if trial is not None or top is not None:
        raise ConfigError(f"{target}: --trial and --top take a sweep folder (with "
                          "trials.parquet or ray/); this is not one")
    if (path / STATE_FILE).is_file():
        _readable(path)
        return [EvalTarget(path, config_id=_recorded_id(path.parent.parent / RESULT_FILE, path))]
    if (path / CHECKPOINTS).is_dir() or (path / "config.yaml").is_file():
        if not checkpoints_in(path / CHECKPOINTS):
            raise ConfigError(f"{target}: the run has no checkpoint yet (it stopped before its "
                              "first); train it to the end, then evaluate it")
        quiet = logging.getLogger("tune.train.run_checkpoint")  # its "resuming from" line
        level = quiet.level
        quiet.setLevel(max(level, logging.WARNING))  # (its warnings still show)
        try:
            chosen = choose_checkpoint(path / CHECKPOINTS)
        finally:
            quiet.setLevel(level)
        log.info("evaluating %s, the newest readable checkpoint of the run", chosen)
        return [EvalTarget(chosen, config_id=_recorded_id(path / RESULT_FILE, chosen))]
    raise ConfigError(f"{target}: not a run folder of mipet-tune train (no {CHECKPOINTS}/), a "
                      f"checkpoint folder (no {STATE_FILE}) or a sweep folder (no "
                      "trials.parquet or ray/)")


def _is_sweep(path: Path) -> bool:
    return (path / "trials.parquet").is_file() or (path / "ray").is_dir()


def _readable(folder: Path) -> None:
    from tune.errors import DataFileError
    from tune.train.run_checkpoint import inspect

    problem = inspect(folder).problem
    if problem is not None:
        raise DataFileError(f"{folder}: not a readable checkpoint: {problem}")


def _recorded_id(result_file: Path, checkpoint: Path) -> str | None:
    """The config id a run's result.yaml records, if it is the result of this checkpoint's
    step (a run trained longer with --resume has another train/steps, so another id)."""
    import yaml

    from tune.train.run_checkpoint import checkpoint_step

    try:
        loaded = yaml.safe_load(result_file.read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(loaded, dict) or loaded.get("step") != checkpoint_step(checkpoint):
        return None
    value = loaded.get("config_id")
    return str(value) if value else None


def _sweep_targets(folder: Path, *, trial: str | None, top: int | None) -> list[EvalTarget]:
    from analysis import AnalysisError, load_sweep, rank
    from analysis.trials import usable_trials

    df = load_sweep(folder)
    used, _ = usable_trials(df)
    if trial is not None:
        rows = df[df["trial_id"] == str(trial)]
        if rows.empty:
            ids = sorted(set(df["trial_id"].astype(str)))
            known = ", ".join(ids[:8])
            more = f" and {len(ids) - 8} more" if len(ids) > 8 else ""
            raise ConfigError(f"--trial {trial}: no such trial in {folder}; its trials are "
                              f"{known}{more}")
        rows = used[used["trial_id"] == str(trial)]
        if rows.empty:
            status = ", ".join(sorted(set(df.loc[df["trial_id"] == str(trial), "status"])))
            raise ConfigError(f"--trial {trial}: the trial did not finish (status {status}); "
                              "only a finished trial can be evaluated")
    else:
        if used.empty:
            raise ConfigError(f"{folder}: the sweep has no finished trial to evaluate "
                              f"({len(df)} runs, none finished without failing)")
        try:
            ranked = rank(df)
        except AnalysisError as exc:
            raise ConfigError(f"{folder}: cannot rank the sweep for --top: {exc}") from None
        top = int(top or 0)
        if top > len(ranked):
            raise ConfigError(f"--top {top}: the sweep has {len(ranked)} ranked "
                              f"configuration{'s' * (len(ranked) != 1)}; give --top "
                              f"{len(ranked)} or less")
        best = list(ranked["config_id"].head(top))
        rows = used[used["config_id"].isin(best)]
        order = {c: i for i, c in enumerate(best)}
        rows = rows.assign(_order=rows["config_id"].map(order)).sort_values(
            ["_order", "seed", "trial_id"], kind="mergesort")
    out, missing = [], []
    for row in rows.itertuples(index=False):
        seed = None if _missing(row.seed) else int(row.seed)
        try:
            found = _trial_checkpoint(folder, str(row.trial_id), seed, row.checkpoint_path,
                                      row.trial_dir)
        except ConfigError as exc:  # an earlier seed's checkpoint that Ray did not keep
            missing.append(str(exc))
            continue
        out.append(EvalTarget(found, trial_id=str(row.trial_id), seed=seed,
                              config_id=str(row.config_id), sweep=folder))
    if not out:
        raise ConfigError(missing[0] if len(missing) == 1 else
                          f"no checkpoint of the {len(missing)} runs asked for: {missing[0]}")
    for line in missing:
        log.warning("left out: %s", line)
    return out


def _missing(value: Any) -> bool:
    try:
        return value is None or bool(value != value)  # NaN, pd.NA
    except TypeError:
        return True


def _trial_checkpoint(sweep: Path, trial_id: str, seed: int | None, checkpoint_path: Any,
                      trial_dir: Any) -> Path:
    """The newest readable checkpoint of one seed of a trial, in its Ray trial folder (the one
    the table names, else the folder under `ray/` named by the trial id)."""
    from tune.train.run_checkpoint import checkpoint_step, inspect

    dirs: list[Path] = []
    for given in (trial_dir, checkpoint_path and Path(str(checkpoint_path)).parent):
        if given and "://" not in str(given) and Path(str(given)).is_dir():
            dirs.append(Path(str(given)))
    if not dirs and (sweep / "ray").is_dir():
        dirs = [p for p in (sweep / "ray").rglob(f"*{trial_id}*") if p.is_dir()]
    candidates = {c.resolve() for d in dirs for c in d.glob("checkpoint_*")
                  if c.is_dir() and not c.name.startswith(".")}
    mine = [c for c in candidates if seed is None or _checkpoint_seed(c) == seed]
    problems = []
    for c in sorted(mine, key=checkpoint_step, reverse=True):
        problem = inspect(c).problem
        if problem is None:
            return c
        problems.append(f"{c.name}: {problem}")
    what = f"trial {trial_id}" + (f" seed {seed}" if seed is not None else "")
    if problems:
        raise ConfigError(f"{what}: no readable checkpoint ({'; '.join(problems)})")
    where = ", ".join(map(str, dirs)) or f"{sweep / 'ray'} (no folder of this trial)"
    raise ConfigError(f"{what}: no checkpoint of this seed in {where} (Ray keeps "
                      "checkpoints_to_keep per trial; an earlier seed's may be gone)")


def _checkpoint_seed(folder: Path) -> int | None:
    from tune.train.command import folder_config

    seed = (folder_config(folder) or {}).get("seed")
    return seed if isinstance(seed, int) else None

"""Reading a sweep folder into one trials table (the names of its columns: `analysis.columns`).

A sweep folder holds `trials.parquet` (one row per run, i.e. per trial and seed: a Ray trial
may train several seeds of its configuration), `trials.pending/` (one small parquet file per
trial that ended since the table was last rewritten; the sweep driver folds them into
`trials.parquet` from time to time and when the sweep ends, so a running or killed sweep has
some) and Ray Tune's experiment folder `ray/`. A sweep that was killed may have no parquet;
`load_sweep` then rebuilds the same table from the trial folders (`params.json`,
`result.json`, `error.txt`) with the row builder that wrote the parquet (`analysis.trials`,
which defines the columns).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# The column vocabulary lives in analysis.columns; re-exported here, where the other modules of
# analysis (and tests) have always imported it from.
from analysis.columns import (
    _hashable,
    _is_missing,
    config_columns,
    metric_columns,
    metric_label,
    param_label,
    resolve_metric,
    resolve_metrics,
    resolve_param,
    run_row,
    searched_params,
)
from analysis.errors import AnalysisError
from analysis.trials import (
    HIGHER_IS_BETTER,
    LOWER_IS_BETTER,
    METRIC_PREFIXES,
    config_hash,
    direction,
    mark_usable,
    trial_rows,
    usable_trials,
)

log = logging.getLogger(__name__)

__all__ = [
    "HIGHER_IS_BETTER",
    "LOWER_IS_BETTER",
    "config_columns",
    "direction",
    "load_sweep",
    "metric_columns",
    "metric_label",
    "param_label",
    "rebuild_from_ray",
    "resolve_metric",
    "resolve_metrics",
    "resolve_param",
    "run_row",
    "searched_params",
    "usable_trials",
]

_METRIC_PREFIXES = METRIC_PREFIXES
_FLAG_COLUMNS = ("failed", "nonfinite")

#: The folder of a sweep's pending rows: `<trial_id>.parquet`, the rows of one ended trial (its
#: seeds), newer than the same runs' rows in trials.parquet (the sweep engine writes them).
PENDING_DIR = "trials.pending"


def pending_files(folder: str | Path) -> list[Path]:
    """The pending row files of a sweep folder, oldest first (none: [])."""
    pending = Path(folder) / PENDING_DIR
    if not pending.is_dir():
        return []
    files = []
    for p in pending.glob("*.parquet"):
        try:
            files.append((p.stat().st_mtime, p.name, p))
        except FileNotFoundError:  # folded away meanwhile
            continue
    return [p for _, _, p in sorted(files)]


def read_pending(files: list[Path]) -> pd.DataFrame | None:
    """The rows of pending row files, in their order (None for none). An unreadable file is
    skipped with a warning (they are written atomically, so it is not one of the sweep's)."""
    frames = []
    for p in files:
        try:
            frames.append(pd.read_parquet(p))
        except FileNotFoundError:
            continue
        except Exception as exc:  # pyarrow raises several kinds for a broken file
            log.warning("%s: not a readable Parquet file (%s); skipped", p, exc)
    frames = [f for f in frames if not f.empty]
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def overlay_rows(df: pd.DataFrame | None, newer: pd.DataFrame) -> pd.DataFrame:
    """`df` with its runs (trial_id, seed) that are in `newer` replaced by `newer`'s rows (the
    last of them per run), and `newer`'s other runs added."""
    newer = newer.assign(_key=_run_keys(newer)).drop_duplicates("_key", keep="last")
    if df is None or df.empty:
        return newer.drop(columns="_key").reset_index(drop=True)
    keep = ~_run_keys(df).isin(set(newer["_key"]))
    return pd.concat([df[keep.to_numpy()], newer.drop(columns="_key")], ignore_index=True)


def _run_keys(df: pd.DataFrame) -> pd.Series:
    seed = df["seed"] if "seed" in df.columns else pd.Series(-1, index=df.index)
    seed = pd.to_numeric(seed, errors="coerce").fillna(-1).astype("int64").astype(str)
    return df["trial_id"].astype(str) + "\x00" + seed


# ---- loading ---------------------------------------------------------------------------------
def load_sweep(folder: str | Path) -> pd.DataFrame:
    """Read a sweep folder's trials table.

    Args:
        folder: the sweep folder (holding `trials.parquet` and/or Ray's `ray/` folder).
    Returns:
        One row per trial with typed columns (see the module docstring). Failed, non-finite,
        unfinished and early-stopped trials are kept and flagged. `df.attrs` holds
        `sweep_folder` (str), `source` (`"parquet"`, `"ray"`, or `"parquet+ray"` when runs
        found in `ray/` were missing from the parquet and were added; `"pending"` for a folder
        holding only pending rows), `pending_rows` (how many rows came from `trials.pending/`,
        which replace the same runs' rows of the parquet or of `ray/`) and `spec` (the parsed
        `sweep.yaml` mapping, or `{}`).
    Raises:
        AnalysisError: if the folder does not exist or is not a sweep folder, or the table is
            unreadable or lacks the required columns.
    """
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise AnalysisError(f"{path}: no such sweep folder")
    parquet = path / "trials.parquet"
    ray_dir = path / "ray"
    pending = read_pending(pending_files(path))
    if parquet.is_file():
        try:
            df = pd.read_parquet(parquet)
        except Exception as exc:  # pyarrow raises several kinds for a broken file
            raise AnalysisError(f"{parquet}: not a readable Parquet file ({exc})") from exc
        source = "parquet"
        if pending is not None:
            df = overlay_rows(df, pending)
        if ray_dir.is_dir():
            extra = _runs_missing_from(df, ray_dir, path)
            if not extra.empty:
                log.warning(
                    "%s: %d runs in ray/ are missing from trials.parquet (a resumed sweep that "
                    "stopped before writing it?); added from the Ray trial folders",
                    path,
                    len(extra),
                )
                df = pd.concat([df, extra], ignore_index=True)
                source = "parquet+ray"
    elif ray_dir.is_dir() and (pending is None or _trial_dirs(ray_dir)):
        df = rebuild_from_ray(ray_dir, sweep_dir=path)
        source = "ray"
        log.info("%s has no trials.parquet; rebuilt %d trials from %s", path, len(df), ray_dir)
        if pending is not None:  # the rows the engine wrote as trials ended are the exact ones
            df = overlay_rows(df, pending)
    elif pending is not None:
        df, source = pending, "pending"
    else:
        raise AnalysisError(
            f"{path}: not a sweep folder (expected trials.parquet or a ray/ experiment folder)"
        )
    df.attrs = {}  # pandas restores attrs saved in the parquet; they are deep-copied per op
    df = _typed(df, where=str(ray_dir if source == "ray" else parquet))
    df.attrs["sweep_folder"] = str(path.resolve())
    df.attrs["source"] = source
    df.attrs["pending_rows"] = 0 if pending is None else len(pending)
    df.attrs["spec"] = _read_spec(path / "sweep.yaml")
    return df


def rebuild_from_ray(ray_dir: str | Path, *, sweep_dir: str | Path | None = None) -> pd.DataFrame:
    """Rebuild the trials table from Ray Tune trial folders (for a sweep that was killed).

    A trial folder is any folder below `ray_dir` holding `params.json` or `result.json`. One
    trial may train several seeds in turn: its last report's `seed_results` (a JSON list, one
    object per seed) gives one row per seed when the trial finished; otherwise the reports are
    grouped by their `seed` key, and each seed whose reports include final `eval/*` metrics
    is a finished row.

    Status per row: ERROR for the seed running when `error.txt` was written; TERMINATED for
    a seed with final metrics (or a last report saying `done`); RUNNING for one cut off by a
    kill; PENDING for a trial without reports.

    Args:
        ray_dir: Ray's experiment folder.
        sweep_dir: the sweep folder, whose `trials/<trial_id>[/seed_<n>]` hold the artifacts
            (default: the parent of `ray_dir`).
    Raises:
        AnalysisError: if no trial folder is found.
    """
    root = Path(ray_dir)
    sweep = Path(sweep_dir) if sweep_dir is not None else root.parent
    trial_dirs = _trial_dirs(root)
    if not trial_dirs:
        raise AnalysisError(f"{root}: no Ray trial folders (params.json/result.json) found")
    rows = [row for d in trial_dirs for row in _trial_rows(d, sweep)]
    return pd.DataFrame(rows)


def _trial_dirs(root: Path) -> list[Path]:
    return sorted({p.parent for name in ("params.json", "result.json") for p in root.rglob(name)})


def _runs_missing_from(df: pd.DataFrame, ray_dir: Path, sweep: Path) -> pd.DataFrame:
    """Rows for the Ray trials that a (stale) trials.parquet lacks."""
    known = set(df["trial_id"].astype(str)) if "trial_id" in df.columns else set()
    rows = []
    for d in _trial_dirs(ray_dir):
        if _trial_id_from_name(d) in known:
            continue  # cheap: most folders are named by their trial id
        rows += [r for r in _trial_rows(d, sweep) if r["trial_id"] not in known]
    return pd.DataFrame(rows)


def _trial_rows(trial_dir: Path, sweep: Path) -> list[dict[str, Any]]:
    """A trial folder's rows, built as the sweep engine builds them for trials.parquet."""
    results = _read_results(trial_dir / "result.json")
    config = results[-1].get("config") if results else None
    if not isinstance(config, dict):
        config = _read_json(trial_dir / "params.json") or {}
    error_file = trial_dir / "error.txt"
    checkpoints = sorted(trial_dir.glob("checkpoint_*"))
    return trial_rows(
        trial_id=str((results[-1].get("trial_id") if results else None)
                     or _trial_id_from_name(trial_dir)),
        config=config,
        reports=results,
        error=error_file.read_text(errors="replace").strip() if error_file.is_file() else None,
        checkpoint_path=str(checkpoints[-1]) if checkpoints else None,
        trial_dir=str(trial_dir),
        sweep_dir=sweep,
    )


def _read_results(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)  # Python's json reads NaN and Infinity
        except json.JSONDecodeError:
            log.warning("%s line %d: not JSON (a report cut off by a kill?); skipped", path, n)
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("%s: not JSON; ignored", path)
        return None


def _trial_id_from_name(trial_dir: Path) -> str:
    """tune names trial folders `trial_<id>`; Ray's default is `<trainable>_<id>_<n>_...`
    with ids like `8e2f1_00003`."""
    name = trial_dir.name
    if name.startswith("trial_"):
        return name.removeprefix("trial_")
    m = re.search(r"(?:^|_)([0-9a-f]{5}_\d{5})(?:_|$)", name)
    return m.group(1) if m else name


def _read_spec(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    # Not models.strict_yaml (analysis imports nothing of ours): sweep.yaml is written by the
    # sweep engine with yaml.safe_dump, whose floats always carry a dot, so YAML 1.1 reads it.
    try:
        import yaml  # pyyaml: a dependency of the distribution, needed only here and in export
    except ImportError:  # pragma: no cover
        return {}
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        log.warning("%s: not YAML (%s); ignored", path, exc)
        return {}
    return spec if isinstance(spec, dict) else {}


# ---- typing ----------------------------------------------------------------------------------
def _typed(df: pd.DataFrame, where: str) -> pd.DataFrame:
    df = df.copy()
    if "trial_id" not in df.columns:
        raise AnalysisError(f"{where}: no 'trial_id' column; not a trials table")
    if len(df) == 0:
        raise AnalysisError(f"{where}: the trials table is empty")
    df["trial_id"] = df["trial_id"].astype(str)
    if "status" not in df.columns:
        df["status"] = "TERMINATED"
    df["status"] = df["status"].fillna("PENDING").astype(str).str.upper()
    if "error" not in df.columns:
        df["error"] = None
    for flag in _FLAG_COLUMNS:
        if flag not in df.columns:
            df[flag] = False
        df[flag] = df[flag].fillna(False).astype(bool)
    for col in [c for c in df.columns if c.startswith(_METRIC_PREFIXES)]:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    for col in [*config_columns(df), "config/seed"]:
        if col in df.columns:
            df[col] = _typed_config_column(df[col])
    if "seed" not in df.columns:
        df["seed"] = df["config/seed"] if "config/seed" in df.columns else 0
    df["seed"] = pd.to_numeric(df["seed"], errors="coerce").astype("Int64")
    if "config_id" not in df.columns:
        df["config_id"] = None
    missing = df["config_id"].isna()
    if missing.any():  # e.g. a config that never validated: hash its config columns
        cfg_cols = config_columns(df)
        df.loc[missing, "config_id"] = [
            "cfg-" + config_hash({c: _hashable(v) for c, v in zip(cfg_cols, row, strict=True)})
            for row in df.loc[missing, cfg_cols].itertuples(index=False)
        ]
    df["config_id"] = df["config_id"].astype(str)
    for col in ("step",):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    for col in ("time_total_s", "images_per_s"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    for col in ("node", "checkpoint_path", "artifact_dir", "trial_dir", "error"):
        if col not in df.columns:
            df[col] = None
        df[col] = df[col].astype(object).where(df[col].notna(), None)
    mark_usable(df)
    return df.reset_index(drop=True)


def _typed_config_column(col: pd.Series) -> pd.Series:
    """Lists/arrays become tuples (hashable); integral numbers stay integers (nullable)."""
    values = [_hashable(v) for v in col]
    non_null = [v for v in values if not _is_missing(v)]
    if non_null and all(isinstance(v, (bool, np.bool_)) for v in non_null):
        return pd.Series(values, index=col.index, dtype=object)
    if non_null and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in non_null
    ):
        return pd.Series(
            [None if _is_missing(v) else int(v) for v in values], index=col.index, dtype="Int64"
        )
    if non_null and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        for v in non_null
    ):
        return pd.Series(
            [np.nan if _is_missing(v) else float(v) for v in values], index=col.index, dtype=float
        )
    return pd.Series(values, index=col.index, dtype=object)

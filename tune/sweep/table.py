"""The trials table of a sweep folder, `trials.parquet`: one row per trial and seed.

As each trial ends (a Tune Callback, `tune.sweep.callbacks`, calls `record_trial`) its rows are
written atomically to a file of their own, `trials.pending/<trial_id>.parquet`: a few
milliseconds, whatever the size of the sweep (rewriting the whole table per ended trial cost
O(N) each, O(N^2) over a sweep). The pending files are folded into trials.parquet by
`write_trials`: by `record_trial` once they number a `FOLD_FRACTION` of the table's rows (so
the table is rewritten every N/20 trials, a constant cost per trial, and at once for the first
trials), after `fit()`, and whenever the driver writes the table. `analysis.load_sweep` reads
the pending rows too, so `rank` on a running or killed sweep sees every ended trial.

trials.parquet is always merged with what is there by (trial_id, seed) and replaced
atomically: the table only ever gains rows, a finished row (TERMINATED or ERROR) is never
replaced by an unfinished one, and a crash mid-write leaves the previous table (and the pending
files, which are removed only once the table holding them is in place).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from analysis.sweep import PENDING_DIR, overlay_rows, pending_files, read_pending
from tune.config.run import RunConfig
from tune.sweep.folder import TRIALS_FILE

log = logging.getLogger(__name__)

#: Pending row files are folded into trials.parquet once they number this fraction of its rows.
FOLD_FRACTION = 0.05

INTERRUPTED = "INTERRUPTED"  # the status of a trial a signal stopped before it finished

def trials_table(grid, *, data_checksum: str | None = None,
                 statuses: dict[str, str] | None = None):
    """One row per trial and seed from a ResultGrid, built by `analysis.trials.trial_rows` (the
    builder that also rebuilds a killed sweep's table from `ray/`).

    Args:
        statuses: for an interrupted sweep, each trial's status in Ray's last snapshot; a
            trial neither TERMINATED nor ERROR there (or, without a snapshot entry, one whose
            last report is not its final one) gets status INTERRUPTED instead of TERMINATED.
    """
    rows = []
    for result in grid:
        metrics = dict(result.metrics or {})
        trial_dir = Path(result.path) if result.path else None
        trial_id = metrics.get("trial_id") or (
            trial_dir.name.removeprefix("trial_") if trial_dir else None)
        over = True
        if statuses is not None:
            saved = statuses.get(str(trial_id))
            over = saved in ("TERMINATED", "ERROR") if saved else "seed_results" in metrics
        rows += trial_rows_of(
            trial_id=trial_id, config=result.config or {}, metrics=metrics,
            error=str(result.error) if result.error is not None else None,
            checkpoint_path=result.checkpoint.path if result.checkpoint is not None else None,
            trial_dir=trial_dir, over=over, data_checksum=data_checksum)
    return sorted_table(rows)


def trial_rows_of(*, trial_id, config: dict, metrics: dict, error: str | None,
          checkpoint_path: str | None, trial_dir: Path | None, over: bool,
          data_checksum: str | None) -> list[dict[str, Any]]:
    """A trial's rows; an unfinished trial (`over` False) has status INTERRUPTED."""
    from analysis.trials import trial_rows

    try:
        resolved = RunConfig.from_dict(config).to_dict()
    except Exception as exc:  # a config that never validated: keep the row, flagged
        resolved = None
        error = error or f"invalid config: {exc}"
    rows = trial_rows(
        trial_id=trial_id, config=config, reports=[metrics] if metrics else [], error=error,
        resolved=resolved, over=over, checkpoint_path=checkpoint_path,
        trial_dir=str(trial_dir) if trial_dir else None,
        sweep_dir=trial_dir.parent.parent if trial_dir else None,
        extra={"data_checksum": data_checksum},
    )
    if not over:
        for row in rows:
            if row["status"] in ("RUNNING", "PENDING"):
                row["status"] = INTERRUPTED
    return rows


def sorted_table(rows: list[dict[str, Any]]):
    import pandas as pd

    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values(["trial_id", "seed"], kind="stable").reset_index(drop=True)
    return df


def write_trials(folder: Path, df=None) -> Path:
    """Merge the pending rows and then `df` into trials.parquet and write it atomically (a
    crash mid-write leaves the previous table and the pending files); then remove the pending
    files it folded. The table only gains rows: see `merge_trials`."""
    from analysis._files import atomic_write

    folder = Path(folder)
    path = folder / TRIALS_FILE
    files = pending_files(folder)
    pending = read_pending(files)
    new = df if pending is None else merge_trials(pending, df)
    merged = merge_trials(read_trials(path), new)
    atomic_write(path, lambda fh: merged.to_parquet(fh, index=False))
    for file in files:
        file.unlink(missing_ok=True)
    if files:
        with contextlib.suppress(OSError):  # not empty: a trial ended meanwhile
            (folder / PENDING_DIR).rmdir()
    _FOLDS[str(folder)] = {"rows": len(merged), "pending": 0}
    return path


def read_trials(path: Path):
    import pandas as pd

    if not path.is_file():
        return None
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # keep the unreadable table beside the new one, never drop it
        aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
        os.replace(path, aside)
        log.warning("%s is unreadable (%s); kept as %s and rebuilt", path, exc, aside.name)
        return None


def merge_trials(old, new):
    """The rows of `old` and `new` by (trial_id, seed): a row of `new` replaces the same run's
    row of `old`, except that a finished row (TERMINATED or ERROR) is never replaced by an
    unfinished one. No row of `old` is dropped."""
    import pandas as pd

    if old is None or old.empty:
        return sorted_table(new.to_dict("records")) if new is not None else pd.DataFrame()
    if new is None or new.empty:
        return old
    both = pd.concat([old.assign(_new=0), new.assign(_new=1)], ignore_index=True)
    both["_trial"] = both["trial_id"].astype(str)
    both["_seed"] = pd.to_numeric(both.get("seed"), errors="coerce").fillna(-1)
    final = both["status"].isin(["TERMINATED", "ERROR"]).astype(int)
    both["_rank"] = final * 2 + both["_new"]
    both = both.sort_values("_rank", kind="stable")
    merged = both.drop_duplicates(["_trial", "_seed"], keep="last")
    merged = merged.drop(columns=["_new", "_trial", "_seed", "_rank"])
    out = sorted_table(merged.to_dict("records"))
    if len(out) < len(old):  # pragma: no cover (by construction)
        raise RuntimeError("merging the trials table would lose rows")
    return out


# ---- writing a trial's row as it ends --------------------------------------------------------
ACTIVE: dict[str, Any] = {}  # the running sweep's folder and data checksum (this process)


def error_text(trial) -> str:
    try:
        return Path(trial.error_file).read_text(errors="replace").strip() or "error"
    except (OSError, TypeError):
        return "error"


_FOLDS: dict[str, dict[str, int]] = {}  # per folder: rows of trials.parquet, pending files


def record_trial(trial, *, error: str | None) -> None:
    """Write an ended trial's rows (a Tune `Trial`) to the active sweep's pending rows, and
    fold the pending rows into trials.parquet when they are due (`FOLD_FRACTION`)."""
    folder = ACTIVE.get("folder")
    if folder is None:
        return
    try:
        write_pending(folder, str(trial.trial_id),
                      ended_trial_rows(trial, error=error, checksum=ACTIVE.get("checksum")))
        if fold_due(folder):
            write_trials(folder)
    except Exception as exc:  # never fail the sweep over this early copy
        log.warning("trial %s: could not write its row to %s: %s", trial.trial_id,
                    PENDING_DIR, exc)


def ended_trial_rows(trial, *, error: str | None, checksum: str | None):
    """The table rows of an ended Tune `Trial` (its config, last result and checkpoint)."""
    checkpoint = trial.checkpoint
    return sorted_table(trial_rows_of(
        trial_id=trial.trial_id, config=dict(trial.config or {}),
        metrics=dict(trial.last_result or {}), error=error,
        checkpoint_path=checkpoint.path if checkpoint is not None else None,
        trial_dir=Path(trial.path) if trial.path else None, over=True, data_checksum=checksum))


def write_pending(folder: Path, trial_id: str, df) -> Path:
    """Write one trial's rows atomically to `trials.pending/<trial_id>.parquet` (replacing the
    file of an earlier end of the same trial, which they are newer than)."""
    from analysis._files import atomic_write

    pending = Path(folder) / PENDING_DIR
    pending.mkdir(exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", trial_id) or "trial"
    path = atomic_write(pending / f"{safe}.parquet", lambda fh: df.to_parquet(fh, index=False))
    state = _fold_state(Path(folder))
    state["pending"] += 1
    return path


def fold_due(folder: Path) -> bool:
    """Whether the pending rows number `FOLD_FRACTION` of trials.parquet's rows (or more)."""
    state = _fold_state(Path(folder))
    return state["pending"] >= max(1.0, FOLD_FRACTION * state["rows"])


def _fold_state(folder: Path) -> dict[str, int]:
    """The rows of trials.parquet and the pending files, counted once per process."""
    key = str(folder)
    if key not in _FOLDS:
        rows = 0
        path = folder / TRIALS_FILE
        if path.is_file():
            try:
                import pyarrow.parquet as pq

                rows = pq.ParquetFile(path).metadata.num_rows
            except Exception:  # unreadable: the next fold sets it aside and rebuilds
                rows = 0
        _FOLDS[key] = {"rows": rows, "pending": len(pending_files(folder))}
    return _FOLDS[key]


def finished_count(folder: Path) -> int:
    """Trials with a TERMINATED row in trials.parquet or in the pending rows."""
    import pandas as pd

    path = folder / TRIALS_FILE
    df = None
    if path.is_file():
        try:
            df = pd.read_parquet(path, columns=["trial_id", "seed", "status"])
        except Exception as exc:  # pyarrow raises several kinds for a broken file
            log.warning("%s is unreadable: %s", path, exc)
    pending = read_pending(pending_files(folder))
    if pending is not None and {"trial_id", "status"} <= set(pending.columns):
        df = overlay_rows(df, pending)  # a pending row is the newer end of its run
    if df is None or df.empty:
        return 0
    return int(df.loc[df["status"] == "TERMINATED", "trial_id"].astype(str).nunique())

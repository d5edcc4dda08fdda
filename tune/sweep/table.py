"""The trials table of a sweep folder, `trials.parquet`: one row per trial and seed.

It is written as each trial ends (a Tune Callback, `tune.sweep.callbacks`, calls
`record_trial`) and again after `fit()`, always merged with what is there by (trial_id, seed)
and replaced atomically: the table only ever gains rows, a finished row (TERMINATED or ERROR)
is never replaced by an unfinished one, and a crash mid-write leaves the previous table.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from tune.config.run import RunConfig
from tune.sweep.folder import TRIALS_FILE

log = logging.getLogger(__name__)

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


def write_trials(folder: Path, df) -> Path:
    """Merge `df` into trials.parquet and write it atomically (a crash mid-write leaves the
    previous table). The table only gains rows: see `merge_trials`."""
    from analysis._files import atomic_write

    path = Path(folder) / TRIALS_FILE
    merged = merge_trials(read_trials(path), df)
    return atomic_write(path, lambda fh: merged.to_parquet(fh, index=False))


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


def record_trial(trial, *, error: str | None) -> None:
    """Merge an ended trial's rows (a Tune `Trial`) into the active sweep's trials.parquet."""
    folder = ACTIVE.get("folder")
    if folder is None:
        return
    try:
        checkpoint = trial.checkpoint
        rows = trial_rows_of(trial_id=trial.trial_id, config=dict(trial.config or {}),
                     metrics=dict(trial.last_result or {}), error=error,
                     checkpoint_path=checkpoint.path if checkpoint is not None else None,
                     trial_dir=Path(trial.path) if trial.path else None, over=True,
                     data_checksum=ACTIVE.get("checksum"))
        write_trials(folder, sorted_table(rows))
    except Exception as exc:  # never fail the sweep over this early copy
        log.warning("trial %s: could not write its row to %s: %s", trial.trial_id,
                    TRIALS_FILE, exc)


def finished_count(folder: Path) -> int:
    import pandas as pd

    path = folder / TRIALS_FILE
    if not path.is_file():
        return 0
    try:
        df = pd.read_parquet(path, columns=["trial_id", "status"])
    except Exception as exc:  # pyarrow raises several kinds for a broken file
        log.warning("%s is unreadable: %s", path, exc)
        return 0
    return int(df.loc[df["status"] == "TERMINATED", "trial_id"].nunique())

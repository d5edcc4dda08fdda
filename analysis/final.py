"""The final evaluation's columns of a trials table: `final/<metric>` per run, added to the rows
of `trials.parquet` that `mipet-tune evaluate SWEEP --trial ID` or `--top K` scored again.

The values are set on the existing rows, matched by (trial id, seed); no row is added, removed or
reordered, and every other column is left as it was. The file is rewritten atomically
(`analysis._files.atomic_write`): a reader sees the old table or the new one, never half of
either. `final_protocol` says which protocol gave a row's `final/*` values (one evaluation
replaces the previous one's values of the same keys).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from analysis._files import atomic_write
from analysis.errors import AnalysisError

__all__ = ["FINAL_PREFIX", "TRIALS_FILE", "add_final_columns"]

FINAL_PREFIX = "final/"
TRIALS_FILE = "trials.parquet"

RunKey = tuple[str, int | None]


def add_final_columns(folder: str | Path, results: Mapping[RunKey, Mapping[str, float]], *,
                      protocol: str) -> Path:
    """Set `final/<key>` (and `final_protocol`) on the rows of `folder/trials.parquet` given by
    `results`.

    Args:
        folder: the sweep folder.
        results: {(trial_id, seed): {metric key (`mig`, ...): value}}; a non-finite value is
            written as NaN. `seed` None matches a trial's only row.
        protocol: the protocol of these values (`dlib`, `fast`, `mipet`).
    Returns:
        The path of the rewritten table.
    Raises:
        AnalysisError: no readable trials.parquet, or a (trial id, seed) it does not hold
            (nothing is written then).
    """
    path = Path(folder) / TRIALS_FILE
    if not path.is_file():
        raise AnalysisError(f"{path}: no trials table to add the final/ columns to (a sweep "
                            "that was stopped before writing it: resume it first)")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several kinds for a broken file
        raise AnalysisError(f"{path}: not a readable Parquet file ({exc})") from exc
    rows_of = {key: _row_index(df, key, path) for key in results}
    for key, values in results.items():
        index = rows_of[key]
        for name, value in values.items():
            col = name if name.startswith(FINAL_PREFIX) else FINAL_PREFIX + name
            if col not in df.columns:
                df[col] = math.nan
            df.loc[index, col] = _number(value)
        if "final_protocol" not in df.columns:
            df["final_protocol"] = None
        df["final_protocol"] = df["final_protocol"].astype(object)
        df.loc[index, "final_protocol"] = protocol
    return atomic_write(path, lambda fh: df.to_parquet(fh, index=False))


def _row_index(df: pd.DataFrame, key: RunKey, path: Path) -> Any:
    trial_id, seed = key
    hit = df["trial_id"].astype(str) == str(trial_id)
    if seed is not None and "seed" in df.columns and hit.sum() != 1:
        hit &= pd.to_numeric(df["seed"], errors="coerce") == int(seed)
    if hit.sum() != 1:
        raise AnalysisError(f"{path}: no single row of trial {trial_id!r} and seed {seed!r} "
                            f"({int(hit.sum())} match)")
    return df.index[hit.to_numpy()][0]


def _number(value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan

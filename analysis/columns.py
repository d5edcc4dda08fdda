"""The names of a trials table's columns: which columns are metrics and config fields, how a
name given by a user (`mig`, `beta`, `model.beta`) maps to its column, and how columns are labelled
in tables and plots.

`analysis.sweep` reads the table; every other module of analysis asks this one what its columns
mean. Column families are defined in `analysis.trials`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.trials import METRIC_PREFIXES

__all__ = [
    "config_columns",
    "metric_columns",
    "metric_label",
    "param_label",
    "resolve_metric",
    "resolve_metrics",
    "resolve_param",
    "run_row",
    "searched_params",
]

_METRIC_PREFIXES = METRIC_PREFIXES
#: Names that stand for another metric: `udr` is UDR with dlib's default correlation (lasso).
_ALIASES = {"udr": "udr_lasso", "eval/udr": "eval/udr_lasso"}


def metric_columns(df: pd.DataFrame, *, include_fast: bool = False) -> list[str]:
    """The metric columns of a trials table: `eval/*` first, then `final/*` (a later final
    evaluation), `train/*` (then `fast/*`)."""
    prefixes = ("eval/", "final/", "train/") + (("fast/",) if include_fast else ())
    return [c for p in prefixes for c in df.columns if c.startswith(p)]


def config_columns(df: pd.DataFrame) -> list[str]:
    """Every `config/...` column except `config/seed`."""
    return [c for c in df.columns if c.startswith("config/") and c != "config/seed"]


def resolve_metric(df: pd.DataFrame, name: str) -> str:
    """Map a metric name to its column: `mig` -> `eval/mig`, `recon` -> `train/recon`,
    `udr` -> `eval/udr_lasso`.

    A full column name (`eval/mig`, `train/loss`, `fast/mig`, `final/mig`) is taken as it is.

    Raises:
        AnalysisError: naming the known metrics when `name` matches none.
    """
    if name in df.columns and name.startswith(_METRIC_PREFIXES):
        return name
    name = _ALIASES.get(name, name)
    for prefix in _METRIC_PREFIXES:
        if prefix + name in df.columns:
            return prefix + name
    known = metric_columns(df, include_fast=True)
    shown = ", ".join(metric_label(c) for c in known)
    raise AnalysisError(
        f"unknown metric {name!r}; this sweep has: {shown or 'no metric columns at all'}"
    )


def resolve_param(df: pd.DataFrame, name: str) -> str:
    """Map a config parameter name to its column.

    Accepts `config/model/beta`, `model/beta`, `model.beta` or a bare field name such as
    `beta` when exactly one section has it.

    Raises:
        AnalysisError: naming the config parameters when `name` matches none, or is ambiguous.
    """
    key = name.replace(".", "/")
    for candidate in (key, f"config/{key}"):
        if candidate in df.columns and candidate.startswith("config/"):
            return candidate
    cols = config_columns(df)
    hits = [c for c in cols if c.rsplit("/", 1)[-1] == key]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise AnalysisError(
            f"config parameter {name!r} is ambiguous; say which: "
            + ", ".join(param_label(c) for c in hits)
        )
    raise AnalysisError(
        f"unknown config parameter {name!r}; known: "
        + (", ".join(param_label(c) for c in cols) or "none")
    )


def param_label(column: str) -> str:
    """`config/model/beta` -> `model/beta` (for tables and plots)."""
    return column[len("config/") :] if column.startswith("config/") else column


def metric_label(column: str) -> str:
    """`eval/mig` -> `mig`; other metric columns (`train/loss`, `fast/mig`, `final/mig`) keep
    their prefix."""
    return column.removeprefix("eval/")


def searched_params(df: pd.DataFrame) -> list[str]:
    """The config columns that vary across the trials (the seed excluded).

    A conditional parameter, present in some trials and NaN in others, counts as varying.
    """
    out = []
    for col in config_columns(df):
        values = {_hashable(v) for v in df[col]}
        if len(values) > 1:
            out.append(col)
    return out


def run_row(df: pd.DataFrame, trial_id: str, seed: Any) -> pd.Series:
    """The row of one run: a Ray trial id and a seed (a trial may train several seeds).

    Raises:
        AnalysisError: when no row matches.
    """
    rows = df[df["trial_id"] == str(trial_id)]
    if seed is not None and not pd.isna(seed) and len(rows) > 1:
        rows = rows[rows["seed"] == int(seed)]
    if rows.empty:
        raise AnalysisError(f"no run with trial_id={trial_id!r} and seed={seed!r} in the table")
    return rows.iloc[0]


def resolve_metrics(df: pd.DataFrame, names: str | Sequence[str] | None) -> list[str]:
    """`resolve_metric` over one name or several; duplicates removed, order kept."""
    out: list[str] = []
    for name in _as_list(names):
        col = resolve_metric(df, name)
        if col not in out:
            out.append(col)
    return out


# ---- cell values ------------------------------------------------------------------------------
def _hashable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return tuple(_hashable(v) for v in value.tolist())
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if _is_missing(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    return False


def _as_list(names: str | Iterable[str] | None) -> list[str]:
    if names is None:
        return []
    if isinstance(names, str):
        return [names]
    return list(names)

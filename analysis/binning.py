"""Quantile bins of a continuous parameter, for ablation tables: a float range of the search
space (such as beta in [4, 10]) becomes `bins` bins holding about equally many trials, labelled
by their range (`[4, 5.3)`, the last one closed, `[8.1, 10]`), instead of one row per sampled
value. See `analysis.ablation` for when a parameter is binned."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from analysis import _format as fmt
from analysis.sweep import _hashable

#: Quantile bins of a continuous parameter's rows.
BINS = 4


@dataclasses.dataclass(frozen=True, order=True)
class Bin:
    """A range of a continuous parameter, `[low, high)` (`[low, high]` for the last bin)."""

    low: float
    high: float
    closed: bool = False

    def __str__(self) -> str:
        return f"[{fmt.num(self.low, 3)}, {fmt.num(self.high, 3)}{']' if self.closed else ')'}"

    def __contains__(self, x: float) -> bool:
        return self.low <= x <= self.high if self.closed else self.low <= x < self.high


def _declared_float_ranges(df: pd.DataFrame) -> dict[str, bool] | None:
    """{config column: continuous?} from the search space saved in sweep.yaml; None if none."""
    spec = df.attrs.get("spec") or {}
    space = (spec.get("resolved") or {}).get("space") or spec.get("space")
    if not isinstance(space, dict) or not isinstance(space.get("params"), dict):
        return None
    out = {}
    for path, decl in space["params"].items():
        alts = decl if isinstance(decl, list) else [decl]
        out[f"config/{path}"] = all(
            isinstance(a, dict) and "low" in a and "high" in a and "choices" not in a
            and a.get("type", "float") == "float" and a.get("step") is None
            for a in alts
        )
    return out


def continuous_params(
    df: pd.DataFrame, params: Sequence[str], *, bins: int = BINS
) -> dict[str, list[Bin]]:
    """The parameters among `params` (config columns) that get quantile bins, and their bins.

    Returns:
        {config column: bins, lowest first}; empty for `bins` < 2.
    """
    if bins < 2 or (df.attrs.get("spec") or {}).get("kind") == "ablation":
        return {}  # an ablation grid's values are chosen, not sampled: one row each
    declared = _declared_float_ranges(df)
    out = {}
    for col in params:
        values = [_hashable(v) for v in df[col]]
        x = np.array([float(v) for v in values if _is_number(v)], dtype=float)
        if len(x) < len([v for v in values if v is not None]):
            continue  # a non-number among the values: categorical
        distinct = np.unique(x)
        if declared is not None and col in declared:
            if not declared[col]:
                continue
        elif not (all(isinstance(v, float) for v in values if v is not None)
                  and len(distinct) > bins):
            continue
        n_bins = min(bins, len(distinct) // 2)
        if n_bins < 2:
            continue
        edges = np.unique(np.quantile(x, np.linspace(0.0, 1.0, n_bins + 1)))
        out[col] = [
            Bin(float(lo), float(hi), closed=i == len(edges) - 2)
            for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True))
        ]
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _binned(used: pd.DataFrame, ranges: dict[str, list[Bin]]) -> pd.DataFrame:
    """`used` with each binned column's values replaced by their `Bin` (None stays None)."""
    out = used.copy()
    for col, edges in ranges.items():
        out[col] = [
            None if not _is_number(_hashable(v))
            else next(b for b in edges if float(v) in b or b.closed)
            for v in out[col]
        ]
    return out

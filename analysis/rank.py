"""Ranking the configurations of a sweep: by one metric, by several, and Pareto fronts (the
ranking as text: `analysis.rank_text`).

Seeds of one configuration (rows sharing `config_id`) are aggregated first: mean, standard
deviation (ddof 1), count, and a 95% Student-t interval of the mean. Failed, non-finite,
unfinished and early-stopped trials, and trials without a finite value of a ranked metric,
are left out and counted in `ranked.attrs["excluded"]`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.columns import resolve_metrics, searched_params
from analysis.errors import AnalysisError
from analysis.floor import add_floor_columns, load_floor, seed_verdict

# The text of a ranking lives in analysis.rank_text; its names are re-exported here, where the
# report and older callers import them from.
from analysis.rank_text import (  # noqa: F401
    FLOOR_LABEL,
    NOT_ABOVE,
    excluded_line,
    floor_csv_rows,
    ranked_markdown,
    ranked_notes,
    ranked_rows,
    ranked_text,
    summary_sentence,
)
from analysis.sweep import load_sweep
from analysis.trials import direction, usable_trials

log = logging.getLogger(__name__)

__all__ = [
    "aggregate_seeds",
    "default_metrics",
    "pareto_fronts",
    "pareto_metrics",
    "rank",
    "rank_table",
    "reconstruction_metric",
]

#: The metric a sweep is ranked by when none is named, in order of preference.
PREFERRED = (
    "eval/mig",
    "eval/dci_disentanglement",
    "eval/factor_vae",
    "eval/beta_vae",
    "eval/sap",
    "train/loss",
)


#: The reconstruction term, the loss that means the same in every trial: `train/rec` is what the
#: models report; `train/recon` is accepted for tables that name it so. Never `train/loss`: the
#: total loss weighs the KL and other terms by beta (and its kin), so its value is not comparable
#: across trials that sample those weights (a sweep's losses may span 107 to -54).
RECONSTRUCTION = ("train/rec", "train/recon")


def reconstruction_metric(df: pd.DataFrame) -> str | None:
    """The table's reconstruction column (see `RECONSTRUCTION`) with a finite value, or None."""
    for col in RECONSTRUCTION:
        if col in df.columns and np.isfinite(pd.to_numeric(df[col], errors="coerce")).any():
            return col
    return None


def pareto_metrics(df: pd.DataFrame, primary: Sequence[str]) -> list[str]:
    """The two objectives of the report's Pareto front: disentanglement against reconstruction.

    The first two ranking metrics when there are two (other than `train/loss`), else the first
    ranking metric against the reconstruction term (`reconstruction_metric`); [] when no pair
    can be made. `train/loss` is never an objective: it is not comparable across trials.
    """
    named = [m for m in primary if m != "train/loss"]
    if len(named) >= 2:
        return list(named[:2])
    rec = reconstruction_metric(df)
    if named and rec and named[0] != rec:
        return [named[0], rec]
    return []


def default_metrics(df: pd.DataFrame) -> list[str]:
    """The sweep's own objective(s) from `sweep.yaml` if given, else the first of `PREFERRED`."""
    spec = df.attrs.get("spec") or {}
    named = spec.get("metric") or spec.get("metrics")
    if isinstance(named, str):
        named = [named]
    if isinstance(named, (list, tuple)):
        try:
            return resolve_metrics(df, [str(n) for n in named])
        except AnalysisError:
            log.warning("sweep.yaml names metrics %s that the table lacks; ignored", named)
    for col in PREFERRED:
        if col in df.columns and df[col].notna().any():
            return [col]
    metrics = [c for c in df.columns if c.startswith(("eval/", "train/"))]
    if not metrics:
        raise AnalysisError("the trials table has no eval/* or train/* metric columns")
    return metrics[:1]


def aggregate_seeds(
    df: pd.DataFrame, metrics: Sequence[str], *, params: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per `config_id` with seed statistics of each metric.

    Args:
        df: trials (already filtered to the ones that count).
        metrics: full metric column names.
        params: config columns to carry along (default: the searched ones of `df`).
    Returns:
        Columns `config_id`, `n_trials`, `trial_ids` (list of str), the `params`, and per metric
        `<m>/mean`, `<m>/std` (NaN for one seed), `<m>/n`, `<m>/ci_low`, `<m>/ci_high`.
    """
    from scipy import stats  # imported here: scipy.stats takes a second to import

    params = list(searched_params(df) if params is None else params)
    ordered = df.sort_values(["config_id", "seed", "trial_id"], kind="mergesort")
    ordered.attrs = {}  # pandas deep-copies attrs (the sweep's spec) into every group: 9 s at 2k
    groups = ordered.groupby("config_id", sort=True)
    sizes = groups.size()
    out = pd.DataFrame({"config_id": sizes.index.to_numpy(), "n_trials": sizes.to_numpy()})
    out["trial_ids"] = groups["trial_id"].agg(list).to_numpy()
    firsts = groups.head(1).set_index("config_id")  # every row of a config shares its params
    for p in params:
        out[p] = firsts.loc[out["config_id"], p].to_numpy()
    for m in metrics:
        x = ordered[m].astype(float).where(np.isfinite(ordered[m].astype(float)))
        g = x.groupby(ordered["config_id"], sort=True)
        mean = g.mean().to_numpy()
        n = g.count().to_numpy()
        std = g.std(ddof=1).to_numpy()
        std = np.where(n > 1, std, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            half = stats.t.ppf(0.975, np.maximum(n - 1, 1)) * std / np.sqrt(n)
        out[f"{m}/mean"] = mean
        out[f"{m}/std"] = std
        out[f"{m}/n"] = n
        out[f"{m}/ci_low"] = mean - half
        out[f"{m}/ci_high"] = mean + half
    return out


def pareto_fronts(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Non-dominated sorting.

    Args:
        values: objectives, float, shape (n_points, n_objectives), finite.
        maximize: per objective, True if larger is better.
    Returns:
        int array (n_points,): 1 for the Pareto front, 2 for the front once 1 is removed, ...
        Equal points share a front.
    """
    v = np.asarray(values, dtype=float) * np.where(np.asarray(maximize), 1.0, -1.0)
    if v.ndim == 2 and v.shape[1] == 2:
        return _fronts_2d(v)
    n = len(v)
    front = np.zeros(n, dtype=int)
    remaining = np.arange(n)
    level = 0
    while len(remaining):
        level += 1
        sub = v[remaining]
        ge = (sub[:, None, :] >= sub[None, :, :]).all(axis=2)
        gt = (sub[:, None, :] > sub[None, :, :]).any(axis=2)
        dominated = (ge & gt).any(axis=0)  # column j is dominated by some row i
        front[remaining[~dominated]] = level
        remaining = remaining[dominated]
    return front


def _fronts_2d(v: np.ndarray) -> np.ndarray:
    """`pareto_fronts` of two objectives, both maximised, in O(n log n) (the general sort peels
    one front at a time over all pairs: minutes for 10,000 configurations). A point's front is
    one more than the largest front among the points that dominate it; visiting the points by
    the first objective, then the second, descending, those are the ones visited before with a
    second objective at least as large (identical points are visited together and share one)."""
    n = len(v)
    front = np.zeros(n, dtype=int)
    order = np.lexsort((-v[:, 1], -v[:, 0]))
    ys = np.unique(v[:, 1])[::-1]  # descending: rank r holds the r-th largest second value
    rank_of = {y: r + 1 for r, y in enumerate(ys)}
    tree = np.zeros(len(ys) + 1, dtype=int)  # Fenwick tree: max front over ranks 1..r

    def best_up_to(r: int) -> int:
        out = 0
        while r > 0:
            out = max(out, int(tree[r]))
            r -= r & -r
        return out

    def put(r: int, value: int) -> None:
        while r <= len(ys):
            tree[r] = max(tree[r], value)
            r += r & -r

    i = 0
    while i < n:
        j = i
        x, y = v[order[i]]
        while j + 1 < n and v[order[j + 1], 0] == x and v[order[j + 1], 1] == y:
            j += 1
        level = best_up_to(rank_of[y]) + 1
        front[order[i:j + 1]] = level
        put(rank_of[y], level)
        i = j + 1
    return front


def _tie_round(x: np.ndarray) -> np.ndarray:
    """Round to 12 significant digits so that float noise in means does not break ties."""
    out = np.array(x, dtype=float)
    finite = np.isfinite(out) & (out != 0)
    mag = np.floor(np.log10(np.abs(out[finite])))
    out[finite] = np.round(out[finite] / 10**mag, 11) * 10**mag
    return out


def rank(
    df: pd.DataFrame,
    by: str | Sequence[str] | None = None,
    *,
    sort: str = "rank",
    include_stopped: bool = False,
    floor: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Rank the configurations of a sweep.

    Args:
        df: a trials table from `load_sweep` (or the same columns).
        by: one metric or several: bare names (`mig`, `recon`) or columns (`eval/mig`,
            `train/recon`). Default: the sweep's objective, else MIG, else `train/loss`.
        sort: `"rank"` (by the metric, or the mean rank across metrics) or `"pareto"`
            (by Pareto front, then mean rank; several metrics only).
        include_stopped: keep trials an early-stopping scheduler ended (off: their metrics
            were taken at fewer steps).
        floor: the sweep's noise floor (`analysis.floor.load_floor`); default: read from
            `floor.parquet` in `df.attrs["sweep_folder"]` (none for a table without a folder,
            or an old sweep without the file).
    Returns:
        A new DataFrame, best first, one row per configuration: `rank` (1 = best; tied
        configurations share the smallest rank), `config_id`, `best_trial` and `best_seed`
        (the run with the best value of the first metric; one Ray trial may hold several
        seeds, so the pair names the row), `n_trials` (rows), `trial_ids`, the searched
        parameters,
        the seed statistics of each metric (see `aggregate_seeds`) and, with several metrics,
        `<m>/rank` per metric, `mean_rank` and `pareto_front` (1 = non-dominated). With a
        floor, per metric `<m>/floor`, `<m>/floor_std`, `<m>/margin` and `<m>/above_floor`
        (see `analysis.floor.add_floor_columns`).
        `attrs`: `by`, `directions` ({metric: "max"|"min"}), `excluded` (counts of trials
        left out by reason: failed, nonfinite, unfinished, stopped, missing_metric),
        `n_trials` (all rows), `n_used`, `floor` (the floors met, see `add_floor_columns`;
        None when the sweep has no floor) and `seed_verdict` (`analysis.floor.SeedVerdict` of
        the first two configurations; None for a ranking by several metrics, whose order no
        one metric's seeds decide).
    Raises:
        AnalysisError: for an unknown metric (listing the known ones), a bad `sort`, or no
            finished trial with finite values of the metrics.
    """
    if sort not in ("rank", "pareto"):
        raise AnalysisError(f"sort must be 'rank' or 'pareto', got {sort!r}")
    metrics = resolve_metrics(df, by) if by is not None and len(by) else default_metrics(df)
    directions = {m: direction(m) for m in metrics}
    used, excluded = _runs_to_rank(df, metrics, include_stopped)
    params = searched_params(df)
    table = aggregate_seeds(used, metrics, params=params)
    best = _best_runs(used, metrics[0], directions[metrics[0]]).loc[table["config_id"]]
    table.insert(1, "best_trial", best["trial_id"].tolist())
    table.insert(2, "best_seed", pd.array(best["seed"].tolist(), dtype="Int64"))
    keys = _add_ranks(table, metrics, directions, sort)
    asc = [True, False, True] if len(metrics) == 1 else [True] * len(keys)
    table = table.sort_values(keys, ascending=asc, kind="mergesort").reset_index(drop=True)
    front_cols = ["rank", "config_id", "best_trial", "best_seed", "n_trials"]
    table = table[front_cols + [c for c in table.columns if c not in front_cols]]
    if floor is None and df.attrs.get("sweep_folder"):
        floor = load_floor(df.attrs["sweep_folder"])
    floors = add_floor_columns(table, used, floor, metrics)
    table.attrs.update(
        by=list(metrics),
        directions=directions,
        excluded=excluded,
        n_trials=len(df),
        n_used=len(used),
        params=params,
        sweep_folder=df.attrs.get("sweep_folder"),
        floor=None if floor is None else floors,
        seed_verdict=_first_two(table, used, metrics),
    )
    if any(excluded.values()):
        log.info("ranking left out %s", ", ".join(f"{n} {k}" for k, n in excluded.items() if n))
    return table


def _first_two(table: pd.DataFrame, used: pd.DataFrame, metrics: list[str]):
    """Whether the first two configurations of a one-metric ranking differ beyond their seeds."""
    if len(metrics) > 1:
        return None
    top = set(table["config_id"].head(2))
    return seed_verdict(used[used["config_id"].isin(top)], metrics[0])


def _runs_to_rank(
    df: pd.DataFrame, metrics: list[str], include_stopped: bool
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The usable runs with finite values of every metric, and the counts of those left out."""
    used, excluded = usable_trials(df, include_stopped=include_stopped)
    values = used[metrics].to_numpy(dtype=float)
    finite = np.isfinite(values).all(axis=1)
    excluded["missing_metric"] = int((~finite).sum())
    used = used[finite]
    if used.empty:
        reasons = ", ".join(f"{n} {k}" for k, n in excluded.items() if n) or "none"
        raise AnalysisError(
            f"no finished trial with a finite {', '.join(metrics)} among {len(df)} trials "
            f"(left out: {reasons})"
        )
    return used, excluded


def _best_runs(used: pd.DataFrame, metric: str, how: str) -> pd.DataFrame:
    """The best run of each configuration (indexed by config_id): the best value of `metric`,
    then the lowest seed."""
    key = used[metric].astype(float) * (-1.0 if how == "max" else 1.0)
    return (
        used.assign(_key=key)
        .sort_values(["config_id", "_key", "seed", "trial_id"], kind="mergesort")
        .groupby("config_id", sort=True)
        .head(1)
        .set_index("config_id")
    )


def _add_ranks(
    table: pd.DataFrame, metrics: list[str], directions: dict[str, str], sort: str
) -> list[str]:
    """Add `rank` (and with several metrics the per-metric ranks, `mean_rank`, `pareto_front`)
    to the seed table; returns the columns to sort it by."""

    def oriented(m: str) -> np.ndarray:
        x = _tie_round(table[f"{m}/mean"].to_numpy(dtype=float))
        return x if directions[m] == "max" else -x

    if len(metrics) == 1:
        first = metrics[0]
        table["rank"] = pd.Series(oriented(first)).rank(ascending=False, method="min").astype(int)
        return ["rank", f"{first}/n", "config_id"]
    for m in metrics:
        table[f"{m}/rank"] = pd.Series(oriented(m)).rank(ascending=False, method="average")
    table["mean_rank"] = table[[f"{m}/rank" for m in metrics]].mean(axis=1)
    table["rank"] = _tie_round(table["mean_rank"].to_numpy())
    table["rank"] = table["rank"].rank(method="min").astype(int)
    table["pareto_front"] = pareto_fronts(
        np.column_stack([table[f"{m}/mean"] for m in metrics]),
        [directions[m] == "max" for m in metrics],
    )
    return (["pareto_front"] if sort == "pareto" else []) + ["rank", "config_id"]


def rank_table(
    folder_or_df: str | Path | pd.DataFrame,
    by: str | Sequence[str] | None = None,
    *,
    top: int | None = None,
    sort: str = "rank",
) -> tuple[pd.DataFrame, str]:
    """What `mipet-tune rank SWEEP --by ...` prints.

    Args:
        folder_or_df: a sweep folder or a table from `load_sweep`.
        by: metric name(s), as for `rank`.
        top: show only the first `top` rows in the text (the DataFrame has all).
        sort: as for `rank`.
    Returns:
        (the ranked DataFrame, a text: one summary line, then a Markdown table).
    Raises:
        AnalysisError: as `load_sweep` and `rank` do.
    """
    df = folder_or_df if isinstance(folder_or_df, pd.DataFrame) else load_sweep(folder_or_df)
    ranked = rank(df, by, sort=sort)
    return ranked, ranked_text(ranked, top=top)

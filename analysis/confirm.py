"""The confirmation of a sweep: its best configurations re-run with fresh seeds, and whether the
order they came in survives the seeds.

`mipet-tune confirm` (the running side, `tune.sweep.confirm`) writes into `<sweep>/confirm/`:

    plan.json            the pairs (configuration, seed) fixed at the start: the configurations
                         (their `config_id` in the sweep, search rank, run config) and the
                         fresh seeds of each; the metric(s), the protocol
    trials.parquet       one row per configuration and seed (the trials table's columns; its
                         `config_id` is the sweep's, `run_config_id` the re-run's own, and
                         `ray_trial_id` the Ray trial that ran it)
    floor.parquet        the noise floor under the confirmation's protocol
    confirmed.parquet    the confirmed table (`.csv`, `.md` beside it), written when the
                         confirmation ends; this module recomputes it from the three files above

The confirmed table, one row per configuration, best first by the seed mean of the first metric:
`confirm_rank`, `config_id`, `label`, `search_rank`, `seeds` (the finished seeds) and, per
metric, `<m>/values` (the per-seed values, in seed order, so that anyone can recompute the
tests), `<m>/mean`, `<m>/std` (ddof 1), `<m>/n`, `<m>/ci_low` and `<m>/ci_high` (a 95% Student-t
interval of the mean), the floor columns of `analysis.floor.add_floor_columns`; for the first
metric, the first configuration against each other one: `p_value` (Welch's two-sided t-test,
`scipy.stats.ttest_ind(equal_var=False)`), `p_holm` (Holm's step-down adjustment over the K - 1
comparisons) and `separable` (`p_holm` < `ALPHA`).

The verdict is one sentence about the first against the second. When they are not separable it
gives the smallest difference `MORE_SEEDS` more seeds each could detect: the t-based power
calculation for two equal groups of m = n + `MORE_SEEDS` seeds, two-sided level `ALPHA`, power
`POWER`, with the pooled standard deviation s of the two configurations,

    d = (t(1 - ALPHA / 2, 2m - 2) + t(POWER, 2m - 2)) * s * sqrt(2 / m)

(the normal-quantile version, z instead of t, is about 10% smaller at m = 7).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import _format as fmt
from analysis._files import atomic_write
from analysis.errors import AnalysisError
from analysis.floor import ALPHA, FLOOR_RULE, add_floor_columns, load_floor
from analysis.trials import direction, usable_trials

log = logging.getLogger(__name__)

__all__ = [
    "Confirmation",
    "Verdict",
    "confirmed_markdown",
    "confirmed_table",
    "detectable_difference",
    "holm",
    "load_confirmation",
    "welch_p",
    "write_confirmed",
]

CONFIRM_DIR = "confirm"
PLAN_FILE = "plan.json"
RUNS_FILE = "trials.parquet"
CONFIRMED = "confirmed"  # .parquet, .csv, .md
PLAN_FORMAT = 1
MORE_SEEDS = 5  # the verdict's "the smallest difference 5 more seeds could detect"
POWER = 0.8


# ---- the statistics ----------------------------------------------------------------------------
def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Welch's two-sided t-test p-value of two samples (`scipy.stats.ttest_ind`, unequal
    variances); NaN with fewer than 2 values on a side. Two samples without any spread get 0
    when their values differ and 1 when they agree (scipy's answer there is NaN)."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return 0.0 if a[0] != b[0] else 1.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment: the i-th smallest of m p-values becomes
    max over j <= i of min(1, (m - j + 1) * p_(j)). NaNs stay NaN and do not count in m.

    Args:
        p_values: shape (m,).
    Returns:
        The adjusted p-values, shape (m,), in the input's order.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if not m:
        return out
    order = ok[np.argsort(p[ok], kind="mergesort")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def pooled_sd(a: Sequence[float], b: Sequence[float]) -> float:
    """The pooled sample standard deviation of two samples (NaN with fewer than 3 values)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    dof = len(a) + len(b) - 2
    if dof < 1 or len(a) < 1 or len(b) < 1:
        return float("nan")
    ss = ((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()
    return float(math.sqrt(ss / dof))


def detectable_difference(sd: float, n: int, *, more: int = MORE_SEEDS, alpha: float = ALPHA,
                          power: float = POWER) -> float:
    """The smallest difference of means that `n + more` seeds per configuration detect with a
    two-sided t-test at level `alpha` and the given power, for a seed spread `sd` (the
    module docstring has the formula)."""
    from scipy import stats

    m = n + more
    if not (math.isfinite(sd) and m >= 2):
        return float("nan")
    dof = 2 * m - 2
    t = stats.t.ppf(1 - alpha / 2, dof) + stats.t.ppf(power, dof)
    return float(t * sd * math.sqrt(2.0 / m))


# ---- the verdict -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """The first confirmed configuration against the second."""

    metric: str
    first: str  # label
    second: str | None
    n_first: int
    n_second: int
    p_value: float  # Welch, first against second
    p_holm: float  # Holm-adjusted over `comparisons`
    comparisons: int  # K - 1
    detectable: float  # the smallest difference MORE_SEEDS more seeds could detect
    first_mean: float = float("nan")
    first_std: float = float("nan")

    @property
    def separable(self) -> bool:
        return math.isfinite(self.p_holm) and self.p_holm < ALPHA

    def sentence(self) -> str:
        """`A is ahead of B on MIG (p = 0.01, 5 seeds each).` or `A and B are not separable
        at 5 seeds (p = 0.4); the smallest difference 5 more seeds could detect is about X.`"""
        name = metric_name(self.metric)
        if self.second is None:
            return (f"Only {self.first} was confirmed: {name} {_num(self.first_mean)} ± "
                    f"{_num(self.first_std)} over {self.n_first} seeds; there is no second "
                    "to compare.")
        if self.n_first < 2 or self.n_second < 2:
            return (f"Whether {self.first} and {self.second} differ on {name} is unknown: they "
                    f"have {self.n_first} and {self.n_second} finished seeds, and the test "
                    "needs at least 2 each.")
        seeds = (f"{self.n_first} seeds each" if self.n_first == self.n_second
                 else f"{self.n_first} and {self.n_second} seeds")
        p = self.p_holm if self.comparisons > 1 else self.p_value
        holm_note = (f", Holm-adjusted over {self.comparisons} comparisons"
                     if self.comparisons > 1 else "")
        if self.separable:
            return f"{self.first} is ahead of {self.second} on {name} (p = {_p(p)}{holm_note}, " \
                   f"{seeds})."
        at = (f"{self.n_first} seeds" if self.n_first == self.n_second
              else f"{self.n_first} and {self.n_second} seeds")
        return (f"{self.first} and {self.second} are not separable on {name} at {at} "
                f"(p = {_p(p)}{holm_note}); the smallest difference {MORE_SEEDS} more seeds "
                f"could detect is about {_num(self.detectable)}.")


def metric_name(metric: str) -> str:
    """`eval/mig` -> `MIG`, `eval/factor_vae` -> `factor_vae`, `train/rec` -> `train/rec`."""
    short = metric.removeprefix("eval/")
    return short.upper() if short.isalpha() and len(short) <= 4 else short


def _num(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.3g}"


def _p(x: float) -> str:
    if not math.isfinite(x):
        return "nan"
    return f"{x:.2g}" if x >= 0.001 else f"{x:.1e}"


# ---- the table ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Confirmation:
    """A confirmation read back: its table (see the module docstring), verdict and plan."""

    table: pd.DataFrame
    verdict: Verdict
    plan: dict[str, Any]
    runs: pd.DataFrame  # confirm/trials.parquet
    floor: list[dict[str, Any]]  # the floors met (see add_floor_columns); [] without one

    @property
    def metrics(self) -> list[str]:
        return list(self.plan["metric"])

    @property
    def planned(self) -> int:
        return sum(len(c["seeds"]) for c in self.plan["configs"])

    @property
    def finished(self) -> int:
        return int(self.table["seeds"].map(len).sum()) if len(self.table) else 0


def confirmed_table(runs: pd.DataFrame, metrics: Sequence[str], *,
                    configs: Sequence[dict[str, Any]] | None = None,
                    floor: pd.DataFrame | None = None) -> tuple[pd.DataFrame, Verdict,
                                                                list[dict[str, Any]]]:
    """The confirmed table of the runs of a confirmation.

    Args:
        runs: one row per configuration and seed (`config_id`, `seed`, `status`, metrics,
            `config/*`); unfinished, failed and non-finite rows are left out.
        metrics: full metric columns; the first decides the order and the tests.
        configs: the plan's configurations (`config_id`, `label`, `search_rank`), for labels,
            the search rank and configurations without any finished seed; default: those of
            `runs`.
        floor: the floor table under the confirmation's protocol, or None.
    Returns:
        (the table, the verdict, the floors met).
    Raises:
        AnalysisError: no configuration to confirm, or a metric the runs lack.
    """
    metrics = list(metrics)
    used, _ = usable_trials(runs) if len(runs) else (runs, {})
    for m in metrics:
        if len(used) and m not in used.columns:
            raise AnalysisError(f"the confirmation's runs have no {m!r} column")
    if configs is None:
        configs = [{"config_id": c} for c in sorted(set(runs["config_id"]))]
    if not configs:
        raise AnalysisError("the confirmation has no configuration")
    first = metrics[0]
    rows = []
    for c in configs:
        mine = used[used["config_id"] == c["config_id"]] if len(used) else used
        if len(mine) and first in mine.columns:
            mine = mine[np.isfinite(mine[first].astype(float))]
        mine = mine.sort_values("seed", kind="mergesort") if len(mine) else mine
        row: dict[str, Any] = {"config_id": c["config_id"],
                               "label": c.get("label") or c["config_id"],
                               "search_rank": c.get("search_rank"),
                               "seeds": [int(s) for s in mine["seed"]] if len(mine) else []}
        for m in metrics:
            values = mine[m].astype(float).to_numpy() if len(mine) else np.array([])
            row.update(_seed_stats(m, values))
        rows.append(row)
    table = pd.DataFrame(rows)
    sign = 1.0 if direction(first) == "max" else -1.0
    key = -sign * table[f"{first}/mean"].astype(float)
    table = (table.assign(_key=key.fillna(np.inf), _n=-table[f"{first}/n"])
             .sort_values(["_key", "_n", "search_rank"], kind="mergesort")
             .drop(columns=["_key", "_n"]).reset_index(drop=True))
    table.insert(0, "confirm_rank", np.arange(1, len(table) + 1))
    best = np.asarray(table.loc[0, f"{first}/values"], dtype=float)
    p = [float("nan")] + [welch_p(best, np.asarray(v, dtype=float))
                          for v in table[f"{first}/values"].iloc[1:]]
    table["p_value"] = p
    table["p_holm"] = np.concatenate([[np.nan], holm(p[1:])])
    table["separable"] = table["p_holm"] < ALPHA
    keyed = runs.drop_duplicates("config_id") if len(runs) else runs
    whole = len(keyed) and set(table["config_id"]) <= set(keyed["config_id"])
    floors = add_floor_columns(table, keyed, floor, metrics) if whole else []
    return table, _verdict(table, first), floors


def _seed_stats(m: str, values: np.ndarray) -> dict[str, Any]:
    from scipy import stats

    n = len(values)
    mean = float(values.mean()) if n else float("nan")
    std = float(values.std(ddof=1)) if n > 1 else float("nan")
    half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else float("nan")
    return {f"{m}/values": [float(v) for v in values], f"{m}/mean": mean, f"{m}/std": std,
            f"{m}/n": n, f"{m}/ci_low": mean - half, f"{m}/ci_high": mean + half}


def _verdict(table: pd.DataFrame, m: str) -> Verdict:
    top = table.iloc[0]
    if len(table) < 2:
        return Verdict(m, str(top["label"]), None, int(top[f"{m}/n"]), 0, float("nan"),
                       float("nan"), 0, float("nan"), float(top[f"{m}/mean"]),
                       float(top[f"{m}/std"]))
    second = table.iloc[1]
    a = np.asarray(top[f"{m}/values"], dtype=float)
    b = np.asarray(second[f"{m}/values"], dtype=float)
    return Verdict(m, str(top["label"]), str(second["label"]), len(a), len(b),
                   float(second["p_value"]), float(second["p_holm"]), len(table) - 1,
                   detectable_difference(pooled_sd(a, b), min(len(a), len(b))),
                   float(top[f"{m}/mean"]), float(top[f"{m}/std"]))


# ---- reading and writing -----------------------------------------------------------------------
def read_plan(confirm_dir: str | Path) -> dict[str, Any] | None:
    """The confirmation's plan.json, or None when there is none.

    Raises:
        AnalysisError: an unreadable plan, or one of a newer format.
    """
    path = Path(confirm_dir) / PLAN_FILE
    if not path.is_file():
        return None
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise AnalysisError(f"{path}: unreadable confirmation plan ({exc}); remove "
                            f"{path.parent} to start the confirmation over") from None
    if not isinstance(plan, dict) or not isinstance(plan.get("configs"), list):
        raise AnalysisError(f"{path}: not a confirmation plan (no 'configs' list)")
    if int(plan.get("format", 0)) > PLAN_FORMAT:
        raise AnalysisError(f"{path}: plan format {plan['format']} is newer than this "
                            f"mipet-tune reads ({PLAN_FORMAT}); upgrade mipet-tune")
    return plan


def read_runs(confirm_dir: str | Path) -> pd.DataFrame:
    """confirm/trials.parquet (an empty table when no run has finished yet)."""
    path = Path(confirm_dir) / RUNS_FILE
    if not path.is_file():
        return pd.DataFrame(columns=["trial_id", "config_id", "seed", "status"])
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several kinds for a broken file
        raise AnalysisError(f"{path}: not a readable Parquet file ({exc})") from None
    df.attrs = {}
    return df


def compute_confirmation(sweep_folder: str | Path) -> Confirmation | None:
    """The confirmation of a sweep folder recomputed from `confirm/` (plan, runs, floor), or
    None when the sweep has no confirmation plan."""
    confirm_dir = Path(sweep_folder).expanduser() / CONFIRM_DIR
    plan = read_plan(confirm_dir)
    if plan is None:
        return None
    runs = read_runs(confirm_dir)
    floor = load_floor(confirm_dir)
    table, verdict, floors = confirmed_table(runs, plan["metric"], configs=plan["configs"],
                                             floor=floor)
    table.attrs = {}
    return Confirmation(table, verdict, plan, runs, floors)


def load_confirmation(sweep_folder: str | Path | None) -> Confirmation | None:
    """The finished confirmation of a sweep (one whose `confirmed.parquet` was written), or None
    (no folder, no confirmation, or one still running or stopped before its end). An unreadable
    one is a WARNING and None: the search's own ranking still stands."""
    if sweep_folder is None:
        return None
    confirm_dir = Path(sweep_folder).expanduser() / CONFIRM_DIR
    if not (confirm_dir / f"{CONFIRMED}.parquet").is_file():
        return None
    try:
        return compute_confirmation(sweep_folder)
    except AnalysisError as exc:
        log.warning("the confirmation in %s is not usable (%s); showing the search's ranking",
                    confirm_dir, exc)
        return None


def write_confirmed(sweep_folder: str | Path) -> Confirmation:
    """Compute the confirmation and write `confirm/confirmed.parquet`, `.csv` and `.md`.

    Raises:
        AnalysisError: no confirmation plan in the folder.
    """
    conf = compute_confirmation(sweep_folder)
    confirm_dir = Path(sweep_folder).expanduser() / CONFIRM_DIR
    if conf is None:
        raise AnalysisError(f"{confirm_dir}: no confirmation ({PLAN_FILE} is missing)")
    table = conf.table
    atomic_write(confirm_dir / f"{CONFIRMED}.csv",
                 lambda fh: table.to_csv(fh, index=False), mode="w")
    atomic_write(confirm_dir / f"{CONFIRMED}.md",
                 lambda fh: fh.write(confirmed_markdown(conf)), mode="w")
    atomic_write(confirm_dir / f"{CONFIRMED}.parquet",
                 lambda fh: table.to_parquet(fh, index=False))  # last: it marks the end
    return conf


# ---- as text -----------------------------------------------------------------------------------
def confirmed_rows(conf: Confirmation) -> tuple[list[str], list[list[str]], list[str]]:
    """The confirmed table as text cells: (header, rows, alignment)."""
    metrics = conf.metrics
    first = metrics[0]
    floored = bool(conf.floor)
    arrow = {m: "↑" if direction(m) == "max" else "↓" for m in metrics}
    header = ["rank", "config", "search rank"]
    for m in metrics:
        header += [f"{m} {arrow[m]}", "95% CI"] + (["× floor"] if floored else [])
    header += [f"{first} per seed", "seeds", "p (Welch)", "p (Holm)"]
    align = ["r", "l", "r"] + ["r"] * (len(header) - 3)
    align[header.index("seeds")] = "l"
    rows = []
    for _, r in conf.table.iterrows():
        row = [str(r["confirm_rank"]), str(r["label"]), fmt.value(r["search_rank"])]
        for m in metrics:
            row.append(fmt.cell(r[f"{m}/mean"], r[f"{m}/std"], int(r[f"{m}/n"]), digits=4))
            lo, hi = r[f"{m}/ci_low"], r[f"{m}/ci_high"]
            row.append(fmt.DASH if not np.isfinite(lo) else f"[{fmt.num(lo)}, {fmt.num(hi)}]")
            if floored:
                row.append(_margin(r, m))
        row.append(", ".join(fmt.num(v) for v in r[f"{first}/values"]) or fmt.DASH)
        row.append(", ".join(str(s) for s in r["seeds"]) or fmt.DASH)
        row += [_p(r["p_value"]) if np.isfinite(r["p_value"]) else fmt.DASH,
                _p(r["p_holm"]) if np.isfinite(r["p_holm"]) else fmt.DASH]
        rows.append(row)
    return header, rows, align


def _margin(r: pd.Series, m: str) -> str:
    if pd.isna(r.get(f"{m}/floor", np.nan)):
        return fmt.DASH
    times = r.get(f"{m}/margin", np.nan)
    text = fmt.DASH if pd.isna(times) else fmt.num(times, 3)
    return text if bool(r.get(f"{m}/above_floor", False)) else f"{text} †"


def confirmed_notes(conf: Confirmation) -> list[str]:
    """The lines under the confirmed table: how it was made, what the columns mean."""
    plan = conf.plan
    lines = [
        f"Confirmation: the top {len(plan['configs'])} configurations of the search re-run "
        f"with fresh seeds under the `{plan.get('protocol', '?')}` protocol; "
        f"{conf.finished} of {conf.planned} runs finished.",
        "p (Welch): the first configuration against each other one, Welch's two-sided t-test "
        f"of their per-seed values; p (Holm): Holm-adjusted over {_count(len(conf.table) - 1)}"
        f". Not separable: the smallest difference "
        f"{MORE_SEEDS} more seeds could detect comes from a t-based power calculation "
        f"(two-sided alpha {ALPHA:g}, power {POWER:g}, the pooled seed sd).",
    ]
    if conf.floor:
        lines.append(f"× floor: the seed mean over the untrained model's (step 0, same "
                     f"protocol); † not clearly above it ({FLOOR_RULE}).")
    else:
        lines.append("No noise floor for this protocol was computed, so the table cannot say "
                     "which values an untrained model would reach too.")
    return lines


def _count(k: int) -> str:
    return "1 comparison" if k == 1 else f"{max(k, 0)} comparisons"


def confirmed_markdown(conf: Confirmation) -> str:
    """The verdict, the confirmed table as Markdown, and its notes."""
    table = fmt.markdown_table(*confirmed_rows(conf))
    notes = "".join(f"\n{line}\n" for line in confirmed_notes(conf))
    return f"Confirmed: {conf.verdict.sentence()}\n\n{table}{notes}"

"""The noise floor of a sweep, and whether its numbers clear it.

A disentanglement metric is not zero for a model that learned nothing: MIG's histogram estimate of
mutual information is biased upwards on a finite sample, and the random features of an untrained
convolutional encoder already carry some of the factors (an object's position moves pixel mass).
So each sweep evaluates, once per model and dataset it uses, the untrained model (step 0 of the
sweep's first seed, the very weights its first trial starts from, and of the two seeds after it,
since one untrained model's MIG moves from seed to seed by as much as its own size) with the
trials' protocol and metrics, and writes the result beside the trials as `floor.parquet`.

The floor table has one row per evaluated untrained model:

    config/model/name, config/data/name   which floor (the columns the trials table uses)
    config/seed                           the init seed of the untrained model
    eval/protocol                         the evaluation protocol (`fast`, `dlib`, `mipet`)
    step                                  0
    eval/<metric>                         every metric key the trials report

The rule for "clearly above the floor" (`FLOOR_RULE`), for a higher-is-better metric whose
configuration has seed mean `m` and seed spread `s` (sample standard deviation; 0 for one seed)
against a floor with mean `f` and spread `s_f` (0 when the floor has one seed):

    m >= 2 * f   and   m - f > 2 * max(s, s_f)

The ratio asks a trained model to at least double what random features score, which the
estimator's bias alone cannot do; the spread term keeps a lucky seed from passing on noise alone
(two standard deviations: about a 2.5% chance for one seed on one side of a normal spread). For a
floor of 0 or less only the spread term (and m > f) applies. For a lower-is-better metric the
rule is mirrored: `m <= f / 2` and `f - m > 2 * max(s, s_f)`. The `margin` is `m / f` (for
lower-is-better `f / m`): 3.0 means three times the floor.

Whether the first and second configurations of a ranking differ (`seed_verdict`) is a Welch
t-test of their per-seed values (unequal variances; two-sided; alpha 0.05). With fewer than two
seeds on either side the verdict is "unknown": one seed cannot say how much seeds move a metric.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.sweep import direction, usable_trials

log = logging.getLogger(__name__)

FLOOR_FILE = "floor.parquet"
KEY_COLUMNS = ("config/model/name", "config/data/name")
RATIO = 2.0  # "clearly above" needs at least this multiple of the floor
SPREADS = 2.0  # ... and a lead over the floor of this many seed standard deviations
ALPHA = 0.05  # the seed verdict's significance level
FLOOR_RULE = (
    f"clearly above the noise floor = at least {RATIO:g}x the untrained model's value and more "
    f"than {SPREADS:g} seed standard deviations above it"
)


# ---- the floor table ---------------------------------------------------------------------
def floor_rows(model: str, dataset: str, seed: int, protocol: str,
               metrics: dict[str, float]) -> dict[str, Any]:
    """One row of the floor table from an evaluation of an untrained model."""
    row: dict[str, Any] = {"config/model/name": model, "config/data/name": dataset,
                           "config/seed": int(seed), "eval/protocol": protocol, "step": 0}
    row.update({k if k.startswith("eval/") else f"eval/{k}": float(v)
                for k, v in metrics.items()})
    return row


def load_floor(folder: str | Path) -> pd.DataFrame | None:
    """The sweep's floor table (see the module docstring), or None for a sweep without one
    (written before floors existed, or with `eval.protocol: none`) and for a file that cannot
    be used (truncated, not Parquet, or without the key columns): a missing floor never stops
    a ranking, and an unusable one is one WARNING line saying why.
    """
    path = Path(folder).expanduser() / FLOOR_FILE
    if not path.is_file():
        return None
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several kinds for a broken file
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        log.warning("%s: not a readable Parquet file (%s); going on without the noise floor",
                    path, reason)
        return None
    missing = [c for c in KEY_COLUMNS if c not in df.columns]
    if missing:
        log.warning("%s: not a noise-floor table (no column %r); going on without the noise "
                    "floor", path, missing[0])
        return None
    df.attrs = {}
    return df


def floor_summary(floor: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """The floor per model and dataset: `<m>/mean`, `<m>/std` (0 for one seed), `<m>/n`."""
    metrics = [m for m in metrics if m in floor.columns]
    groups = floor.groupby(list(KEY_COLUMNS), sort=True)
    out = groups.size().rename("n_floor_seeds").reset_index()
    for m in metrics:
        g = floor[m].astype(float).groupby([floor[k] for k in KEY_COLUMNS], sort=True)
        out[f"{m}/mean"] = g.mean().to_numpy()
        out[f"{m}/std"] = g.std(ddof=1).fillna(0.0).to_numpy()
        out[f"{m}/n"] = g.count().to_numpy()
    return out


# ---- the rule ----------------------------------------------------------------------------
def margin(value: float, floor: float, *, mode: str = "max") -> float:
    """How many times the floor a value is (`value / floor`; `floor / value` when lower is
    better); NaN when it cannot be said (a floor or value of 0 or less, or NaN)."""
    num, den = (value, floor) if mode == "max" else (floor, value)
    if not (math.isfinite(num) and math.isfinite(den)) or den <= 0:
        return float("nan")
    return float(num / den)


def clearly_above(value: float, floor: float, *, spread: float = 0.0, floor_spread: float = 0.0,
                  mode: str = "max") -> bool:
    """Whether a (seed-mean) value is clearly better than the floor (`FLOOR_RULE`).

    Args:
        value: the configuration's metric (mean over seeds).
        floor: the untrained model's metric (mean over its seeds).
        spread: the configuration's seed standard deviation (0 or NaN for one seed).
        floor_spread: the floor's seed standard deviation (0 or NaN for one seed).
        mode: "max" (higher is better) or "min".
    Returns:
        False for a NaN value or floor.
    """
    if not (math.isfinite(value) and math.isfinite(floor)):
        return False
    noise = max(_zero_if_nan(spread), _zero_if_nan(floor_spread))
    lead = value - floor if mode == "max" else floor - value
    if lead <= SPREADS * noise or lead <= 0:
        return False
    if floor <= 0:
        return True  # no ratio to ask for; the lead over the spread decides
    return value >= RATIO * floor if mode == "max" else value <= floor / RATIO


def floor_verdicts(df: pd.DataFrame, floor: pd.DataFrame | None,
                   metrics: Sequence[str]) -> pd.DataFrame:
    """Each configuration's seed statistics beside its floor, with the verdict.

    Args:
        df: a trials table (one row per trial and seed); failed, non-finite and unfinished
            rows are left out.
        floor: the floor table (`load_floor`), or None.
        metrics: full metric column names (`eval/mig`, ...).
    Returns:
        One row per `config_id`, with the key columns and, per metric, `<m>/mean`,
        `<m>/std` (NaN for one seed), `<m>/n`, `<m>/floor`, `<m>/floor_std`, `<m>/margin` and
        `<m>/above_floor` (bool; False where there is no floor).
    """
    rows, _ = usable_trials(df)
    keys = [k for k in KEY_COLUMNS if k in rows.columns]
    metrics = [m for m in metrics if m in rows.columns]
    groups = rows.groupby("config_id", sort=True)
    if keys:
        out = groups[keys].first().reset_index()
    else:
        out = groups.size().reset_index()[["config_id"]]
    for m in metrics:
        g = rows[m].astype(float).groupby(rows["config_id"], sort=True)
        out[f"{m}/mean"] = g.mean().to_numpy()
        out[f"{m}/std"] = g.std(ddof=1).to_numpy()
        out[f"{m}/n"] = g.count().to_numpy()
    summary = floor_summary(floor, metrics) if floor is not None and len(keys) == 2 else None
    if summary is not None:
        out = out.merge(summary, on=list(KEY_COLUMNS), how="left", suffixes=("", "/floorsum"))
    for m in metrics:
        f = out.get(f"{m}/mean/floorsum") if summary is not None else None
        fs = out.get(f"{m}/std/floorsum") if summary is not None else None
        f = f if f is not None else pd.Series(np.nan, index=out.index)
        fs = fs if fs is not None else pd.Series(np.nan, index=out.index)
        _verdict_columns(out, m, f.astype(float), fs.astype(float))
    return out.drop(columns=[c for c in out.columns if c.endswith("/floorsum")] +
                    (["n_floor_seeds"] if "n_floor_seeds" in out.columns else []))


def _verdict_columns(table: pd.DataFrame, m: str, floor: Any, floor_std: Any) -> None:
    """Add `<m>/floor`, `/floor_std`, `/margin` and `/above_floor` to `table`, which has
    `<m>/mean` and `<m>/std` per configuration (the rule of `clearly_above`)."""
    mode = direction(m)
    table[f"{m}/floor"] = floor
    table[f"{m}/floor_std"] = floor_std
    table[f"{m}/margin"] = [margin(v, fl, mode=mode)
                            for v, fl in zip(table[f"{m}/mean"], table[f"{m}/floor"], strict=True)]
    table[f"{m}/above_floor"] = [
        clearly_above(v, fl, spread=s, floor_spread=sf, mode=mode)
        for v, s, fl, sf in zip(table[f"{m}/mean"], table[f"{m}/std"], table[f"{m}/floor"],
                                table[f"{m}/floor_std"], strict=True)]


def _zero_if_nan(x: float) -> float:
    return 0.0 if x is None or not math.isfinite(x) else float(x)


# ---- first against second ----------------------------------------------------------------
@dataclass(frozen=True)
class SeedVerdict:
    """Whether the best two configurations differ by more than their seed spread."""

    metric: str
    first: str  # config_id
    second: str | None
    first_mean: float
    second_mean: float
    n_first: int
    n_second: int
    p_value: float  # Welch's two-sided p; NaN when it cannot be computed
    verdict: str  # "differ", "within seed spread", "unknown"

    def sentence(self) -> str:
        """The one line a report puts at the top."""
        name = self.metric.split("/", 1)[-1]
        if self.second is None:
            return f"Only one configuration has {name}; there is no second to compare."
        shown = f"({_num(self.first_mean)} vs {_num(self.second_mean)} {name}"
        if self.verdict == "differ":
            return (f"The best configuration beats the second by more than their seed spread "
                    f"{shown}, Welch p = {_num(self.p_value)}).")
        if self.verdict == "within seed spread":
            return (f"The best two configurations are within their seed spread {shown}, Welch "
                    f"p = {_num(self.p_value)}): their order is a coin toss.")
        return (f"Whether the best two configurations differ is unknown {shown}, seeds "
                f"{self.n_first} and {self.n_second}): it needs at least 2 seeds each.")


def seed_verdict(df: pd.DataFrame, by: str, *, alpha: float = ALPHA) -> SeedVerdict:
    """Compare the first and second configurations by `by` (their seed means) with a Welch
    t-test of their per-seed values.

    Args:
        df: a trials table (one row per trial and seed); unusable rows are left out.
        by: a full metric column (`eval/mig`); its direction decides first and second.
        alpha: the test's level.
    Raises:
        AnalysisError: no usable row has a finite `by`.
    """
    from scipy import stats  # imported here: scipy.stats takes a second to import

    rows, _ = usable_trials(df)
    if by not in rows.columns:
        raise AnalysisError(f"no column {by!r} in the trials table")
    x = rows[["config_id", by]].copy()
    x[by] = x[by].astype(float)
    x = x[np.isfinite(x[by])]
    if x.empty:
        raise AnalysisError(f"no finished trial has a finite {by}")
    means = x.groupby("config_id")[by].mean()
    order = means.sort_values(ascending=direction(by) == "min", kind="mergesort").index
    first = order[0]
    a = x.loc[x["config_id"] == first, by].to_numpy()
    if len(order) < 2:
        return SeedVerdict(by, str(first), None, float(a.mean()), float("nan"), len(a), 0,
                           float("nan"), "unknown")
    second = order[1]
    b = x.loc[x["config_id"] == second, by].to_numpy()
    p = float("nan")
    verdict = "unknown"
    if len(a) >= 2 and len(b) >= 2:
        if np.ptp(a) == 0 and np.ptp(b) == 0:  # no spread at all: any gap is beyond it
            p = 0.0 if a[0] != b[0] else 1.0
        else:
            p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
        verdict = "differ" if p < alpha else "within seed spread"
    return SeedVerdict(by, str(first), str(second), float(a.mean()), float(b.mean()), len(a),
                       len(b), p, verdict)


def _num(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.3g}"


# ---- the floor in a ranking ----------------------------------------------------------------
def add_floor_columns(table: pd.DataFrame, used: pd.DataFrame, floor: pd.DataFrame | None,
                      metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Put each ranked configuration beside its floor, in place.

    Args:
        table: the seed table of a ranking (one row per `config_id`, with `<m>/mean`, `<m>/std`).
        used: the runs it was made from (for each configuration's model and dataset).
        floor: the floor table (`load_floor`), or None.
        metrics: the ranking metrics.
    Returns:
        The floors the ranking meets, one dict per model and dataset: the key columns, and per
        metric `<m>/mean`, `<m>/std` (0 for one seed), `<m>/n`. Empty without a floor; then the
        table gets no columns. Otherwise it gets, per metric, `<m>/floor`, `<m>/floor_std`,
        `<m>/margin` and `<m>/above_floor` (False where its model and dataset have no floor).
    """
    keys = [k for k in KEY_COLUMNS if k in used.columns]
    if floor is None or len(keys) < len(KEY_COLUMNS):
        return []
    summary = floor_summary(floor, metrics)
    own = used.groupby("config_id", sort=True)[keys].first()
    here = own.loc[table["config_id"]].reset_index(drop=True)
    matched = here.merge(summary, on=keys, how="left")
    for m in metrics:
        f = matched.get(f"{m}/mean", pd.Series(np.nan, index=matched.index)).astype(float)
        fs = matched.get(f"{m}/std", pd.Series(np.nan, index=matched.index)).astype(float)
        _verdict_columns(table, m, f.to_numpy(), fs.to_numpy())
    met = summary.merge(here.drop_duplicates(), on=keys, how="inner")
    cols = keys + [f"{m}/{s}" for m in metrics for s in ("mean", "std", "n")
                   if f"{m}/{s}" in met.columns]
    return [{c: (v.item() if isinstance(v, np.generic) else v) for c, v in r.items()}
            for r in met[cols].to_dict("records")]

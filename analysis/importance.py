"""Which hyperparameters matter, and how much the metrics agree, each with how sure it is.

Importance per metric, with a bootstrap interval over trials (`bootstrap_importance`): the
trials with a finite value of the metric are resampled with replacement `n_boot` times, the
importance is recomputed on each resample, and each parameter gets the importance on all the
trials, the bootstrap mean and a 95% percentile interval. The importance itself comes from a
scorer: the sweep's report uses Optuna's fANOVA or PED-ANOVA evaluators
(`tune.sweep.importance`, outside this package, which imports no Optuna); without Optuna,
`importance_intervals` (and the older `importance`, point values only) fit a random forest from
the searched parameters to the metric and take each parameter's share of its impurity decrease
(the evaluator Optuna calls `MeanDecreaseImpurityImportanceEvaluator`) or of its permutation
importance. Shares are normalised to sum to 1 per metric.

Below `MIN_IMPORTANCE_TRIALS` (10) finished trials with a value of the metric no importance is
given: on three parameters, one of which drives the metric, fANOVA at 5 trials gives the driving
one a share (median 0.54 over 20 draws) no larger than the largest share of three parameters
that do nothing (0.55); at 10 trials the driving one gets 0.89 (5-95%: 0.83-0.95) against the
noise's 0.55 (0.43-0.71). The shares always sum to 1, so a few trials always show a "winner".

The metric agreement is Spearman's rank correlation between metrics over configurations
(seed means) or trials. With `oriented=True` a lower-is-better metric is negated first, so
+1 always means "these two metrics order the configurations the same way, best to worst".
`metric_agreement` gives each pair its rho, its number of points n and a 95% interval by the
Fisher z transform with the Fieller-Hartley-Pearson variance for Spearman's rho:
tanh(atanh(rho) +- 1.96 * sqrt(1.06 / (n - 3))). Below `MIN_AGREEMENT_POINTS` (10) points a
pair is not shown: at 6 points even rho = 0.8 has the interval [-0.07, 0.98].
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.rank import reconstruction_metric
from analysis.sweep import (
    _hashable,
    param_label,
    resolve_metrics,
    resolve_param,
    searched_params,
)
from analysis.trials import direction, usable_trials

log = logging.getLogger(__name__)

__all__ = [
    "MIN_AGREEMENT_POINTS",
    "MIN_IMPORTANCE_TRIALS",
    "N_BOOT",
    "bootstrap_importance",
    "default_report_metrics",
    "encode_params",
    "importance",
    "importance_intervals",
    "importance_matrix",
    "metric_agreement",
    "metric_correlation",
    "spearman_interval",
]

#: The fewest trials (for `importance`, the forest alone) that get a value at all.
MIN_TRIALS = 4
#: The fewest finished trials with a value of a metric for its importance (see the module text).
MIN_IMPORTANCE_TRIALS = 10
#: The fewest points (configurations, or trials) for a metric pair's rank correlation.
MIN_AGREEMENT_POINTS = 10
#: Bootstrap resamples of the trials for an importance interval: the 95% interval's ends are
#: then about the 3rd and the 98th of 100 sorted values. fANOVA on 36 trials and 6 metrics
#: takes 18 s of CPU with 100 (16 trees on each resample).
N_BOOT = 100
#: The variance factor of Fisher's z for Spearman's rho (Fieller, Hartley and Pearson, 1957).
SPEARMAN_VARIANCE = 1.06

#: (rows, metric, parameter columns, seed) -> {parameter column: importance share}.
Scorer = Callable[[pd.DataFrame, str, list[str], int], dict[str, float]]


def default_report_metrics(df: pd.DataFrame) -> list[str]:
    """Every `eval/*` column with a finite value, then the reconstruction term (`train/rec`).

    Not `train/loss`: its value depends on beta and the other weights, so it does not compare
    across trials (see `analysis.rank.RECONSTRUCTION`).
    """
    cols = [c for c in df.columns if c.startswith("eval/") and np.isfinite(df[c]).any()]
    rec = reconstruction_metric(df)
    if rec:
        cols.append(rec)
    return cols


def encode_params(df: pd.DataFrame, params: Sequence[str]) -> np.ndarray:
    """Parameters as a float matrix for trees.

    Numbers stay numbers (a missing value, from a conditional parameter, becomes a value
    below the smallest); anything else becomes the index of its value in sorted order.

    Returns:
        float64 array, shape (len(df), len(params)).
    """
    out = np.empty((len(df), len(params)))
    for j, p in enumerate(params):
        values = [_hashable(v) for v in df[p]]
        present = [v for v in values if v is not None]
        if present and all(
            isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            for v in present
        ):
            x = np.array([np.nan if v is None else float(v) for v in values])
            finite = x[np.isfinite(x)]
            low = finite.min() - 1.0 - (finite.max() - finite.min()) if finite.size else 0.0
            out[:, j] = np.where(np.isfinite(x), x, low)
        else:
            levels = sorted({str(v) for v in values})
            out[:, j] = [levels.index(str(v)) for v in values]
    return out


def importance(
    df: pd.DataFrame,
    metrics: str | Sequence[str] | None = None,
    params: Sequence[str] | None = None,
    *,
    method: str = "forest",
    n_estimators: int = 64,
    seed: int = 0,
) -> pd.DataFrame:
    """Hyperparameter importance for each metric by a random forest, point values only.

    The fallback without Optuna and without an interval; `importance_intervals` adds the
    bootstrap interval and the minimum of trials, and the sweep's report uses Optuna's fANOVA
    (`tune.sweep.importance.sweep_importance`).

    Args:
        df: trials from `load_sweep`; only finished, healthy trials are used, seeds as
            separate samples.
        metrics: metric names; default: `default_report_metrics(df)`.
        params: config parameters; default: the searched ones.
        method: `"forest"` (mean decrease in impurity) or `"permutation"`.
        n_estimators: trees in the forest.
        seed: the forest's random_state.
    Returns:
        A new DataFrame: index = parameter labels (`model/beta`), columns = metric columns,
        values in [0, 1] summing to 1 per metric; NaN for a metric with fewer than 4 trials
        or that does not vary. `attrs["n_trials"]` = {metric: trials used}.
    Raises:
        AnalysisError: for an unknown metric, parameter or method, or no searched parameter.
    """
    if method not in ("forest", "permutation"):
        raise AnalysisError(f"importance method must be 'forest' or 'permutation', got {method!r}")
    metric_cols, param_cols, used = _inputs(df, metrics, params)
    result = pd.DataFrame(index=[param_label(p) for p in param_cols], dtype=float)
    counts: dict[str, int] = {}
    for m in metric_cols:
        y = used[m].to_numpy(dtype=float)
        keep = np.isfinite(y)
        counts[m] = int(keep.sum())
        if keep.sum() < MIN_TRIALS or np.ptp(y[keep]) == 0:
            log.info("importance of %s: %d usable trials or no variation; left NaN", m, keep.sum())
            result[m] = np.nan
            continue
        shares = forest_scores(
            used[keep], m, param_cols, seed, method=method, n_estimators=n_estimators
        )
        result[m] = [shares[p] for p in param_cols]
    result.index.name = "parameter"
    result.attrs["n_trials"] = counts
    result.attrs["method"] = method
    return result


def _inputs(
    df: pd.DataFrame, metrics: str | Sequence[str] | None, params: Sequence[str] | None
) -> tuple[list[str], list[str], pd.DataFrame]:
    """The metric columns, the parameter columns and the usable trials; raises without params."""
    metric_cols = resolve_metrics(df, metrics) if metrics else default_report_metrics(df)
    param_cols = [resolve_param(df, p) for p in params] if params else searched_params(df)
    if not param_cols:
        raise AnalysisError("no searched parameters: every trial has the same configuration")
    used, _ = usable_trials(df)
    return metric_cols, param_cols, used


def forest_scores(
    rows: pd.DataFrame,
    metric: str,
    params: list[str],
    seed: int,
    *,
    method: str = "forest",
    n_estimators: int = 64,
) -> dict[str, float]:
    """A random forest's importance shares of `params` for `metric` over `rows` (a `Scorer`).

    Returns:
        {parameter column: share}, shares >= 0 summing to 1 (all NaN when every share is 0).
    """
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.inspection import permutation_importance

    x = encode_params(rows, params)
    y = rows[metric].to_numpy(dtype=float)
    forest = RandomForestRegressor(
        n_estimators=n_estimators, min_samples_leaf=1, random_state=seed, n_jobs=1
    ).fit(x, y)
    if method == "forest":
        scores = forest.feature_importances_
    else:
        scores = permutation_importance(
            forest, x, y, n_repeats=8, random_state=seed, n_jobs=1
        ).importances_mean
    scores = np.clip(scores, 0.0, None)
    total = scores.sum()
    shares = scores / total if total > 0 else np.full(len(params), np.nan)
    return dict(zip(params, shares.tolist(), strict=True))


def bootstrap_importance(
    df: pd.DataFrame,
    metrics: str | Sequence[str] | None = None,
    params: Sequence[str] | None = None,
    *,
    scorer: Scorer,
    method: str,
    n_boot: int = N_BOOT,
    seed: int = 0,
    min_trials: int = MIN_IMPORTANCE_TRIALS,
    replicate_scorer: Scorer | None = None,
) -> pd.DataFrame:
    """Importance per parameter and metric with a bootstrap interval over trials.

    For each metric, the finished trials with a finite value (seeds as separate samples) are
    scored once (`importance`), then `n_boot` times resampled with replacement and scored again;
    `boot_mean`, `low` and `high` are the mean and the 2.5% and 97.5% percentiles of those.

    Args:
        df: trials from `load_sweep`.
        metrics: metric names; default: `default_report_metrics(df)`.
        params: config parameters; default: the searched ones.
        scorer: (rows, metric, parameter columns, seed) -> {parameter column: share}.
        method: the scorer's name, for the table and the report (`fanova`, `forest`, ...).
        n_boot: resamples.
        seed: seeds the resampling; the scorer gets `seed` and then `seed + 1 + b`.
        min_trials: a metric with fewer trials gets no rows (see `MIN_IMPORTANCE_TRIALS`).
        replicate_scorer: the scorer of the resamples (default: `scorer`; a cheaper one keeps
            the bootstrap fast).
    Returns:
        A long DataFrame, one row per (metric, parameter): `metric`, `parameter` (the label,
        `model/beta`), `importance`, `boot_mean`, `low`, `high`, `n_trials`, `n_boot` (the
        resamples that could be scored). `attrs`: `method`, `min_trials`, `n_boot`,
        `too_early` ({metric: trials} of the metrics left out for too few trials),
        `constant` (metrics that do not vary), `n_trials` ({metric: trials}).
    Raises:
        AnalysisError: for an unknown metric or parameter, or no searched parameter.
    """
    metric_cols, param_cols, used = _inputs(df, metrics, params)
    again = replicate_scorer or scorer
    rng = np.random.default_rng(seed)
    records: list[dict[str, object]] = []
    too_early: dict[str, int] = {}
    constant: list[str] = []
    counts: dict[str, int] = {}
    for m in metric_cols:
        y = used[m].to_numpy(dtype=float)
        rows = used[np.isfinite(y)]
        n = counts[m] = len(rows)
        if n < min_trials:
            too_early[m] = n
            continue
        if np.ptp(rows[m].to_numpy(dtype=float)) == 0:
            constant.append(m)
            continue
        point = scorer(rows, m, param_cols, seed)
        reps = []
        for b in range(n_boot):
            sample = rows.iloc[rng.integers(0, n, n)]
            if np.ptp(sample[m].to_numpy(dtype=float)) == 0:
                continue
            shares = again(sample, m, param_cols, seed + 1 + b)
            reps.append([shares.get(p, np.nan) for p in param_cols])
        boot = np.array(reps, dtype=float).reshape(-1, len(param_cols))
        for j, p in enumerate(param_cols):
            col = boot[:, j][np.isfinite(boot[:, j])]
            low, high = np.percentile(col, [2.5, 97.5]) if col.size else (np.nan, np.nan)
            records.append(
                {
                    "metric": m,
                    "parameter": param_label(p),
                    "importance": float(point.get(p, np.nan)),
                    "boot_mean": float(col.mean()) if col.size else np.nan,
                    "low": float(low),
                    "high": float(high),
                    "n_trials": n,
                    "n_boot": int(col.size),
                }
            )
    columns = ["metric", "parameter", "importance", "boot_mean", "low", "high", "n_trials",
               "n_boot"]
    out = pd.DataFrame(records, columns=columns)
    out.attrs.update(method=method, min_trials=min_trials, n_boot=n_boot, too_early=too_early,
                     constant=constant, n_trials=counts)
    return out


def importance_intervals(
    df: pd.DataFrame,
    metrics: str | Sequence[str] | None = None,
    params: Sequence[str] | None = None,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    min_trials: int = MIN_IMPORTANCE_TRIALS,
) -> pd.DataFrame:
    """`bootstrap_importance` with the random forest's impurity shares: the analysis without
    Optuna. The sweep's report uses Optuna's fANOVA instead (`tune.sweep.importance`)."""

    def forest(rows: pd.DataFrame, m: str, p: list[str], s: int) -> dict[str, float]:
        return forest_scores(rows, m, p, s)

    def small(rows: pd.DataFrame, m: str, p: list[str], s: int) -> dict[str, float]:
        return forest_scores(rows, m, p, s, n_estimators=16)

    return bootstrap_importance(
        df, metrics, params, scorer=forest, method="forest", n_boot=n_boot, seed=seed,
        min_trials=min_trials, replicate_scorer=small,
    )


def importance_matrix(long: pd.DataFrame, value: str = "importance") -> pd.DataFrame:
    """A `bootstrap_importance` table as parameters x metrics (NaN where none was given)."""
    if long.empty:
        return pd.DataFrame(dtype=float)
    wide = long.pivot(index="parameter", columns="metric", values=value)
    order = list(dict.fromkeys(long["parameter"]))
    wide = wide.reindex(index=order, columns=list(dict.fromkeys(long["metric"])))
    wide.attrs["method"] = long.attrs.get("method", "")
    return wide


def spearman_interval(rho: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The 95% interval of a Spearman rho from n points (Fisher z, variance 1.06 / (n - 3)).

    Returns (NaN, NaN) for n < 4 or a NaN rho; (rho, rho) for |rho| = 1.
    """
    if n < 4 or not math.isfinite(rho):
        return (math.nan, math.nan)
    if abs(rho) >= 1.0:
        return (float(rho), float(rho))
    half = z * math.sqrt(SPEARMAN_VARIANCE / (n - 3))
    centre = math.atanh(rho)
    return (math.tanh(centre - half), math.tanh(centre + half))


def _metric_points(
    df: pd.DataFrame, metrics: str | Sequence[str] | None, level: str, oriented: bool
) -> tuple[list[str], pd.DataFrame]:
    """The metric columns and one row per point (configuration seed means, or trials)."""
    if level not in ("config", "trial"):
        raise AnalysisError(f"level must be 'config' or 'trial', got {level!r}")
    metric_cols = resolve_metrics(df, metrics) if metrics else default_report_metrics(df)
    if len(metric_cols) < 2:
        raise AnalysisError(
            f"a correlation needs two or more metrics; got {', '.join(metric_cols) or 'none'}"
        )
    used, _ = usable_trials(df)
    table = used[metric_cols].astype(float).replace([np.inf, -np.inf], np.nan)
    if level == "config":
        table = table.groupby(used["config_id"]).mean()
    if oriented:
        for m in metric_cols:
            if direction(m) == "min":
                table[m] = -table[m]
    return metric_cols, table


def metric_agreement(
    df: pd.DataFrame,
    metrics: str | Sequence[str] | None = None,
    *,
    level: str = "config",
    oriented: bool = True,
    min_points: int = MIN_AGREEMENT_POINTS,
) -> pd.DataFrame:
    """Spearman's rho of every pair of metrics, with its n and a 95% interval.

    Args:
        df: trials from `load_sweep` (finished, healthy trials are used).
        metrics: metric names; default: `default_report_metrics(df)`.
        level: `"config"` (one point per configuration: the seed mean) or `"trial"`.
        oriented: negate lower-is-better metrics first (see `metric_correlation`).
        min_points: pairs with fewer points where both metrics have a value get `shown`
            False (see `MIN_AGREEMENT_POINTS`).
    Returns:
        A long DataFrame, one row per pair (a, b) with a before b in `metrics`: `a`, `b`,
        `rho`, `n`, `low`, `high` (`spearman_interval`), `shown` (n >= min_points; rho and
        the interval are NaN where fewer than 3 points pair up or a metric is constant).
        `attrs`: `n_points` (configurations or trials), `level`, `oriented`, `min_points`.
    Raises:
        AnalysisError: for an unknown metric or level, or fewer than two metrics.
    """
    metric_cols, table = _metric_points(df, metrics, level, oriented)
    records = []
    for i, a in enumerate(metric_cols):
        for b in metric_cols[i + 1 :]:
            pair = table[[a, b]].dropna()
            n = len(pair)
            rho = math.nan
            if n >= 3 and pair[a].nunique() > 1 and pair[b].nunique() > 1:
                rho = float(pair[a].rank().corr(pair[b].rank()))
            low, high = spearman_interval(rho, n)
            records.append({"a": a, "b": b, "rho": rho, "n": n, "low": low, "high": high,
                            "shown": n >= min_points})
    out = pd.DataFrame(records, columns=["a", "b", "rho", "n", "low", "high", "shown"])
    out.attrs.update(n_points=len(table), level=level, oriented=oriented, min_points=min_points,
                     metrics=metric_cols)
    return out


def metric_correlation(
    df: pd.DataFrame,
    metrics: str | Sequence[str] | None = None,
    *,
    level: str = "config",
    oriented: bool = True,
) -> pd.DataFrame:
    """Spearman rank correlation between metrics.

    Args:
        df: trials from `load_sweep` (finished, healthy trials are used).
        metrics: metric names; default: `default_report_metrics(df)`.
        level: `"config"` (one point per configuration: the seed mean) or `"trial"`.
        oriented: negate lower-is-better metrics first, so +1 means full agreement on
            which configurations are better.
    Returns:
        A square DataFrame (metrics x metrics), NaN where fewer than 3 points pair up or a
        metric is constant. `attrs["n_points"]`: the number of configurations or trials.
    Raises:
        AnalysisError: for an unknown metric or level, fewer than two metrics, or fewer than
            three points.
    """
    metric_cols, table = _metric_points(df, metrics, level, oriented)
    if len(table) < 3:
        raise AnalysisError(
            f"a rank correlation needs 3 or more {level}s with finished trials; got {len(table)}"
        )
    corr = table.corr(method="spearman", min_periods=3)
    corr.attrs["n_points"] = len(table)
    corr.attrs["oriented"] = oriented
    return corr

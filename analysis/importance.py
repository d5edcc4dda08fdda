"""Which hyperparameters matter, and how much the metrics agree.

Importance is computed on the trials table, not on the Optuna study (analysis imports no
Optuna): a random forest is fitted from the searched parameters to each metric, and each
parameter's share of the forest's impurity decrease (the evaluator Optuna calls
`MeanDecreaseImpurityImportanceEvaluator`; `method="forest"`) or of its permutation importance
(`method="permutation"`) is reported, normalised to sum to 1 per metric.

The metric agreement is Spearman's rank correlation between metrics over configurations
(seed means) or trials. With `oriented=True` a lower-is-better metric is negated first, so
+1 always means "these two metrics order the configurations the same way, best to worst".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.sweep import (
    _hashable,
    param_label,
    resolve_metrics,
    resolve_param,
    searched_params,
)
from analysis.trials import direction, usable_trials

log = logging.getLogger(__name__)

__all__ = ["default_report_metrics", "encode_params", "importance", "metric_correlation"]

MIN_TRIALS = 4


def default_report_metrics(df: pd.DataFrame) -> list[str]:
    """Every `eval/*` column with a finite value, then `train/recon` (or `train/loss`)."""
    cols = [c for c in df.columns if c.startswith("eval/") and np.isfinite(df[c]).any()]
    for loss in ("train/recon", "train/loss"):
        if loss in df.columns and np.isfinite(df[loss]).any():
            cols.append(loss)
            break
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
    """Hyperparameter importance for each metric.

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
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.inspection import permutation_importance

    metric_cols = resolve_metrics(df, metrics) if metrics else default_report_metrics(df)
    param_cols = [resolve_param(df, p) for p in params] if params else searched_params(df)
    if not param_cols:
        raise AnalysisError("no searched parameters: every trial has the same configuration")
    used, _ = usable_trials(df)
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
        x = encode_params(used[keep], param_cols)
        forest = RandomForestRegressor(
            n_estimators=n_estimators, min_samples_leaf=1, random_state=seed, n_jobs=1
        ).fit(x, y[keep])
        if method == "forest":
            scores = forest.feature_importances_
        else:
            scores = permutation_importance(
                forest, x, y[keep], n_repeats=8, random_state=seed, n_jobs=1
            ).importances_mean
        scores = np.clip(scores, 0.0, None)
        total = scores.sum()
        result[m] = scores / total if total > 0 else np.nan
    result.index.name = "parameter"
    result.attrs["n_trials"] = counts
    result.attrs["method"] = method
    return result


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
    if len(table) < 3:
        raise AnalysisError(
            f"a rank correlation needs 3 or more {level}s with finished trials; got {len(table)}"
        )
    corr = table.corr(method="spearman", min_periods=3)
    corr.attrs["n_points"] = len(table)
    corr.attrs["oriented"] = oriented
    return corr

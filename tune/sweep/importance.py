"""Hyperparameter importance of a sweep by Optuna's own evaluators, with a bootstrap interval.

`analysis` imports no Optuna, so the report's importance is computed here and handed to it as
plain numbers (`analysis.report.write_report(..., importance=...)`):

    table = sweep_importance(load_sweep(folder))          # fANOVA, 100 resamples
    write_report(folder, importance=table)

For each metric an in-memory Optuna study is built from the trials table (one `create_trial`
per finished trial and seed, the metric as its value, the distributions rebuilt from the
search space saved in `sweep.yaml`, or inferred from the columns for a table without one), and
`optuna.importance.get_param_importances` runs the evaluator on it: `fanova`
(`FanovaImportanceEvaluator`, Optuna's default) or `ped_anova` (`PedAnovaImportanceEvaluator`,
which compares the best 10% of the trials with all of them). The resampling, the interval and
the minimum number of trials are `analysis.importance.bootstrap_importance`'s.

A conditional parameter (absent from some trials, as `model/num_ipe` for a baseline) would make
Optuna drop either the parameter or the trials without it; here it becomes a categorical whose
choices are its values and None ("absent"), when it takes at most `MAX_CONDITIONAL_LEVELS`
values; a conditional parameter with more values is left out (`attrs["left_out"]`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.importance import (
    MIN_IMPORTANCE_TRIALS,
    N_BOOT,
    _inputs,
    bootstrap_importance,
)
from analysis.sweep import _hashable, param_label
from analysis.trials import direction
from models.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["METHODS", "MIN_TRIALS", "report_importance", "study_of", "sweep_importance"]

#: The evaluators, and the fewest trials each needs. PED-ANOVA contrasts the best 10% of the
#: trials with the rest: below 20 trials that top set holds a single trial.
MIN_TRIALS = {"fanova": MIN_IMPORTANCE_TRIALS, "ped_anova": 2 * MIN_IMPORTANCE_TRIALS}
METHODS = tuple(MIN_TRIALS)
#: A conditional parameter with at most this many values becomes a categorical with None.
MAX_CONDITIONAL_LEVELS = 12
#: Trees of fANOVA's forest on each bootstrap resample (64, Optuna's default, on all trials).
BOOT_TREES = 16
#: Above this many usable trials (rows) the importance is computed on a seeded random subsample
#: of this many, with `LARGE_N_BOOT` resamples: one fANOVA fit grows with the trials (its trees'
#: leaves), about 1 s at 300 trials on 2 loaded cores, so 100 resamples of 10,000 trials per
#: metric would take hours (and 20 of 1,000 took 8 minutes for four metrics); the subsample's
#: interval is the wider (a conservative one).
MAX_TRIALS = 500
LARGE_N_BOOT = 10


def _evaluator(method: str, seed: int, *, n_trees: int = 64):
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    if method == "fanova":
        return FanovaImportanceEvaluator(n_trees=n_trees, seed=seed)
    return PedAnovaImportanceEvaluator()


def _space_distributions(df: pd.DataFrame) -> dict[str, Any]:
    """`{config column: distribution}` from the search space saved in sweep.yaml ({} if none)."""
    spec = df.attrs.get("spec") or {}
    space = (spec.get("resolved") or {}).get("space")
    if not space:
        return {}
    from search_spaces import read_space

    try:
        dists = read_space(space).distributions()
    except ConfigError as exc:
        log.warning("sweep.yaml's search space could not be read (%s); distributions inferred "
                    "from the trials", exc)
        return {}
    return {f"config/{path}": d for path, d in dists.items()}


def _plain(v: Any) -> Any:
    """A table value as Optuna takes it: a Python scalar (a tuple as its text), None if absent."""
    v = _hashable(v)
    return str(v) if isinstance(v, tuple) else v


def _distribution(col: str, values: list[Any], declared: Any):
    """One column's distribution: the declared one widened to hold every value, or inferred."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    present = [v for v in values if v is not None]
    absent = len(present) < len(values)
    numeric = present and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in present
    )
    if absent or not numeric or isinstance(declared, CategoricalDistribution):
        choices = list(dict.fromkeys(
            ([*declared.choices] if isinstance(declared, CategoricalDistribution) else [])
            + sorted(set(present), key=str)
        ))
        if absent:
            if len(choices) > MAX_CONDITIONAL_LEVELS:
                return None
            choices.append(None)
        return CategoricalDistribution(choices)
    low, high = min(present), max(present)
    log_scale = bool(getattr(declared, "log", False)) and low > 0
    is_int = isinstance(declared, IntDistribution) or (
        declared is None and all(isinstance(v, int) for v in present)
    )
    if declared is not None:
        low, high = min(low, declared.low), max(high, declared.high)
    if is_int:
        return IntDistribution(int(low), max(int(high), int(low) + 1), log=log_scale)
    return FloatDistribution(float(low), float(high) if high > low else float(low) + 1.0,
                             log=log_scale)


def _param_values(rows: pd.DataFrame, col: str, dist: Any) -> list[Any]:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    out = []
    for v in rows[col]:
        v = _plain(v)
        if isinstance(dist, CategoricalDistribution) and v is not None and v not in dist.choices:
            v = next((c for c in dist.choices if str(c) == str(v)), v)
        elif isinstance(dist, IntDistribution) and v is not None:
            v = int(v)
        elif v is not None and not isinstance(dist, CategoricalDistribution):
            v = float(v)
        out.append(v)
    return out


def _distributions(df: pd.DataFrame, used: pd.DataFrame, params: Sequence[str]):
    """({config column: distribution} for the parameters Optuna can take, {label: reason})."""
    declared = _space_distributions(df)
    dists, left_out = {}, {}
    for col in params:
        values = [_plain(v) for v in used[col]]
        dist = _distribution(col, values, declared.get(col))
        if dist is None:
            left_out[param_label(col)] = (
                f"absent from some trials and more than {MAX_CONDITIONAL_LEVELS} values"
            )
            continue
        dists[col] = dist
    return dists, left_out


def study_of(rows: pd.DataFrame, metric: str, dists: Mapping[str, Any]):
    """An in-memory Optuna study: one finished trial per row, `metric` as its value.

    Args:
        rows: trials (finite values of `metric`).
        metric: the metric column; its direction sets the study's.
        dists: {config column: Optuna distribution}; the study's parameter names are the
            labels (`model/beta`).
    """
    import optuna

    study = optuna.create_study(
        direction="maximize" if direction(metric) == "max" else "minimize"
    )
    columns = {col: _param_values(rows, col, d) for col, d in dists.items()}
    values = rows[metric].to_numpy(dtype=float)
    names = {col: param_label(col) for col in dists}
    trials = []
    for i, value in enumerate(values):
        trials.append(optuna.trial.create_trial(
            params={names[c]: columns[c][i] for c in dists},
            distributions={names[c]: d for c, d in dists.items()},
            value=float(value),
        ))
    study.add_trials(trials)
    return study


def sweep_importance(
    df: pd.DataFrame,
    metrics: str | Sequence[str] | None = None,
    params: Sequence[str] | None = None,
    *,
    method: str = "fanova",
    n_boot: int | None = None,
    seed: int = 0,
    min_trials: int | None = None,
    max_trials: int | None = MAX_TRIALS,
) -> pd.DataFrame:
    """Importance per parameter and metric by an Optuna evaluator, with a bootstrap interval.

    Args:
        df: trials from `analysis.load_sweep`.
        metrics: metric names; default: `analysis.importance.default_report_metrics(df)`.
        params: config parameters; default: the searched ones.
        method: `"fanova"` or `"ped_anova"`.
        n_boot: bootstrap resamples of the trials (fANOVA uses `BOOT_TREES` trees on each);
            default `N_BOOT`, or `LARGE_N_BOOT` for a subsampled table.
        seed: fANOVA's seed on all trials (`seed + 1 + b` on resample b) and the resampling's.
        min_trials: the fewest trials with a value of a metric; default `MIN_TRIALS[method]`.
        max_trials: above this many usable trials, a seeded random subsample of this many is
            used instead (None: all; see `MAX_TRIALS`).
    Returns:
        The table of `analysis.importance.bootstrap_importance`: `importance` is what
        `optuna.importance.get_param_importances(study, evaluator=...)` gives on the study of
        all the trials. `attrs["left_out"]`: {parameter: why} for parameters Optuna could
        not take; `attrs["subsample"]`: (trials used, usable trials) when subsampled, else
        None.
    Raises:
        AnalysisError: for an unknown metric or parameter, or no searched parameter.
        ConfigError: for an unknown method.
    """
    import optuna

    if method not in METHODS:
        raise ConfigError(f"importance method {method!r}: choose one of {', '.join(METHODS)}")
    metric_cols, param_cols, used = _inputs(df, metrics, params)
    subsample = None
    if max_trials is not None and len(used) > max_trials:
        keep = np.sort(np.random.default_rng(seed).choice(len(used), max_trials, replace=False))
        subsample = (max_trials, len(used))
        attrs, df = df.attrs, used.iloc[keep]
        df.attrs = attrs
        metric_cols, param_cols, used = _inputs(df, metric_cols, param_cols)
        log.info("importance on a random %d of the %d usable trials, %s resamples",
                 max_trials, subsample[1], n_boot or LARGE_N_BOOT)
    if n_boot is None:
        n_boot = N_BOOT if subsample is None else LARGE_N_BOOT
    dists, left_out = _distributions(df, used, param_cols)
    if not dists:
        raise AnalysisError(
            "no searched parameter Optuna can take: " + "; ".join(
                f"{p}: {why}" for p, why in left_out.items())
        )
    names = [param_label(c) for c in dists]

    def scorer(trees: int):
        def score(rows: pd.DataFrame, m: str, _p: list[str], s: int) -> dict[str, float]:
            study = study_of(rows, m, dists)
            try:
                shares = optuna.importance.get_param_importances(
                    study, evaluator=_evaluator(method, s, n_trees=trees), params=names
                )
            except (RuntimeError, ValueError) as exc:  # e.g. PED-ANOVA's top set too small
                log.info("importance of %s on a resample failed: %s", m, exc)
                return {}
            return {c: float(shares.get(param_label(c), np.nan)) for c in dists}

        return score

    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per created study
    try:
        table = bootstrap_importance(
            df, metric_cols, list(dists), scorer=scorer(64), method=method, n_boot=n_boot,
            seed=seed, min_trials=MIN_TRIALS[method] if min_trials is None else min_trials,
            replicate_scorer=scorer(BOOT_TREES),
        )
    finally:
        optuna.logging.set_verbosity(previous)
    table.attrs["left_out"] = left_out
    table.attrs["subsample"] = subsample
    return table


def report_importance(
    folder: str | Path, *, by: str | Sequence[str] | None = None, method: str = "fanova"
) -> pd.DataFrame | None:
    """The importance table for `analysis.report.write_report(folder, by=by)`: Optuna's
    evaluator on the report's own metrics; None when there is none to compute (no searched
    parameter, no finished trial: the report then says why)."""
    from analysis import load_sweep
    from analysis.report import report_metrics

    try:
        df = load_sweep(folder)
        _, metrics = report_metrics(df, by)
        return sweep_importance(df, metrics, method=method)
    except AnalysisError as exc:
        log.info("no importance for the report of %s: %s", folder, exc)
        return None

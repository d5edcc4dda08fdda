"""The report's sections that say how sure their numbers are: hyperparameter importance with
bootstrap intervals, the agreement between metrics with n and an interval, and the
metric-against-parameter panels; each says "too early" below its minimum number of trials."""

from __future__ import annotations

import pandas as pd

from analysis import _format as fmt
from analysis._report_doc import Doc, Sweep
from analysis.errors import AnalysisError
from analysis.importance import (
    MIN_IMPORTANCE_TRIALS,
    importance_intervals,
    importance_matrix,
    metric_agreement,
)
from analysis.plots import plot_correlation, plot_importance, plot_metric_vs_params
from analysis.sweep import metric_label


def importance_section(doc: Doc, sweep: Sweep) -> None:
    doc.heading("Hyperparameter importance")
    try:
        imp = sweep.importance
        if imp is None:
            imp = importance_intervals(sweep.df, sweep.metrics)
    except AnalysisError as exc:
        doc.para(f"(No importance: {exc}.)")
        return
    method = imp.attrs.get("method", "forest")
    minimum = imp.attrs.get("min_trials", MIN_IMPORTANCE_TRIALS)
    early = imp.attrs.get("too_early", {})
    if imp.empty and not early:
        doc.para("(No importance: no metric varies across the finished trials.)")
        return
    if imp.empty:
        counts = sorted(set(early.values()))
        doc.para(
            f"Too early for importance: it needs at least {minimum} finished trials with a "
            f"value of the metric, and this sweep has {fmt.value(max(counts))}. Below that the "
            "shares (which always sum to 1) name a winner whatever the data; none is shown."
        )
        return
    imp.to_csv(sweep.out / "importance.csv", index=False)
    how = {
        "fanova": "Optuna's fANOVA (FanovaImportanceEvaluator)",
        "ped_anova": "Optuna's PED-ANOVA (PedAnovaImportanceEvaluator)",
    }.get(method, "a random forest's impurity decrease (the fallback without Optuna)")
    doc.para(
        f"Share of each parameter by {how}, per metric over the finished trials (seeds as "
        f"samples); in brackets the 95% percentile interval of {imp.attrs.get('n_boot')} "
        "bootstrap resamples of the trials. Shares sum to 1 per metric, so compare a share "
        "with its interval, not with zero alone."
    )
    wide = importance_matrix(imp)
    lows, highs = importance_matrix(imp, "low"), importance_matrix(imp, "high")
    doc.table(
        ["parameter", *[metric_label(m) for m in wide.columns]],
        [
            [p, *[_interval(wide.loc[p, m], lows.loc[p, m], highs.loc[p, m])
                  for m in wide.columns]]
            for p in wide.index
        ],
        ["l"] + ["r"] * len(wide.columns),
    )
    notes = [f"{metric_label(m)} ({n} trials)" for m, n in early.items()]
    if notes:
        doc.para(f"Too early (fewer than {minimum} trials): " + ", ".join(notes) + ".")
    constant = imp.attrs.get("constant") or []
    if constant:
        doc.para("Left out, the same in every trial: "
                 + ", ".join(metric_label(m) for m in constant) + ".")
    left = imp.attrs.get("left_out") or {}
    if left:
        doc.para("Left out: " + "; ".join(f"{p} ({why})" for p, why in left.items()) + ".")
    doc.image(plot_importance(imp, sweep.plots / "importance.png"), "importance")


def _interval(value: float, low: float, high: float) -> str:
    """A share and its interval, two decimals (shares lie in [0, 1])."""
    if any(pd.isna(v) for v in (value, low, high)):
        return fmt.DASH
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def agreement_section(doc: Doc, sweep: Sweep) -> None:
    doc.heading("Agreement between metrics")
    try:
        pairs = metric_agreement(sweep.df, sweep.metrics)
    except AnalysisError as exc:
        doc.para(f"(No correlation: {exc}.)")
        return
    minimum = pairs.attrs["min_points"]
    n_points = pairs.attrs["n_points"]
    if not pairs["shown"].any():
        doc.para(
            f"Too early for the agreement between metrics: a rank correlation needs at least "
            f"{minimum} configurations with both values, and this sweep has {n_points}. "
            "Below that its 95% interval spans almost every value from -1 to 1."
        )
        return
    pairs.to_csv(sweep.out / "metric_correlation.csv", index=False)
    doc.para(
        f"Spearman rank correlation over up to {n_points} configurations (seed means), with "
        "the number of configurations n and a 95% interval (Fisher z); lower-is-better "
        "metrics negated, so +1 means the two metrics order the configurations alike. Pairs "
        f"with fewer than {minimum} configurations are left blank."
    )
    shown = pairs[pairs["shown"]]
    doc.table(
        ["metric", "metric", "rho", "95% interval", "n"],
        [
            [metric_label(r["a"]), metric_label(r["b"]), fmt.num(r["rho"], 2),
             f"[{fmt.num(r['low'], 2)}, {fmt.num(r['high'], 2)}]", str(int(r["n"]))]
            for _, r in shown.iterrows()
        ],
        ["l", "l", "r", "r", "r"],
    )
    doc.image(plot_correlation(pairs, sweep.plots / "metric_correlation.png"), "correlation")


def metrics_vs_params_section(doc: Doc, sweep: Sweep) -> None:
    doc.heading("Metrics against the searched parameters")
    n_used = int(sweep.ranked.attrs.get("n_used", 0))
    if n_used < MIN_IMPORTANCE_TRIALS:
        doc.para(
            f"Too early for metric-against-parameter panels: {n_used} finished trials, fewer "
            f"than {MIN_IMPORTANCE_TRIALS}; a line through so few points reads as a trend it "
            "is not. Each configuration's values are in the ranking above and in ranked.csv."
        )
        return
    for m in sweep.metrics:
        try:
            png = sweep.plots / f"vs_params_{metric_label(m).replace('/', '-')}.png"
            path = plot_metric_vs_params(sweep.df, m, png)
            doc.image(path, f"{m} against the parameters")
        except AnalysisError as exc:
            doc.para(f"({m}: {exc}.)")

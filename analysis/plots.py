"""Sweep plots as PNG files, drawn with matplotlib's Agg canvas (no pyplot, no display).

Every function takes tables from this package, writes one PNG and returns its path:
    plot_metric_vs_params   a metric against each searched parameter, seed error bars
    plot_pareto             two metrics' seed means, the Pareto front highlighted
    plot_importance         hyperparameter importance bars, per metric
    plot_correlation        the Spearman correlation heatmap between metrics
    plot_best_images        the saved traversals or reconstructions of the best trials
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis import _format as fmt
from analysis.errors import AnalysisError
from analysis.rank import aggregate_seeds, pareto_fronts
from analysis.sweep import (
    _hashable,
    metric_label,
    param_label,
    resolve_metric,
    resolve_param,
    run_row,
    searched_params,
)
from analysis.trials import direction, usable_trials

log = logging.getLogger(__name__)

__all__ = [
    "plot_best_images",
    "plot_correlation",
    "plot_importance",
    "plot_metric_vs_params",
    "plot_pareto",
]

DPI = 110


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=DPI)
    return out


def _metric_axis_label(metric: str) -> str:
    return f"{metric} ({'higher' if direction(metric) == 'max' else 'lower'} is better)"


def _numeric(values: Sequence[Any]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        for v in present
    )


def plot_metric_vs_params(
    df: pd.DataFrame, metric: str, path: str | Path, params: Sequence[str] | None = None
) -> Path:
    """One panel per parameter: each configuration's seed mean ± std of `metric`.

    Numeric parameters get a numeric axis (logarithmic when positive and spanning 10x or
    more); others get one tick per value. A line joins the best configuration at each value.
    Trials where a conditional parameter is absent are counted in the panel title.

    Raises:
        AnalysisError: for an unknown metric or parameter, or no finished trial with it.
    """
    m = resolve_metric(df, metric)
    param_cols = [resolve_param(df, p) for p in params] if params else searched_params(df)
    used, _ = usable_trials(df)
    used = used[np.isfinite(used[m].to_numpy(dtype=float))]
    if used.empty:
        raise AnalysisError(f"no finished trial has a finite {m}; nothing to plot")
    if not param_cols:
        param_cols = [c for c in ("config/model/name",) if c in df.columns]
    agg = aggregate_seeds(used, [m], params=param_cols)
    n = max(len(param_cols), 1)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = _figure(max(4.2 * ncols, 6.5), 3.3 * nrows + 0.3)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    rng = np.random.default_rng(0)
    best = np.nanmax if direction(m) == "max" else np.nanmin
    for ax, p in zip(axes, param_cols, strict=False):  # spare axes are hidden
        _param_panel(ax, agg, p, m, best, rng)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(f"{_metric_axis_label(m)}: configuration means ± std over seeds", fontsize=11)
    return _save_figure(fig, path)


def _param_panel(ax, agg: pd.DataFrame, p: str, m: str, best, rng) -> None:
    """One parameter's panel: each configuration's mean ± std (jittered), and a line through
    the best configuration at each value."""
    raw = [_hashable(v) for v in agg[p]]
    present = np.array([v is not None for v in raw])
    means = agg[f"{m}/mean"].to_numpy(dtype=float)
    stds = np.nan_to_num(agg[f"{m}/std"].to_numpy(dtype=float))
    if _numeric(raw):
        x, xj, levels = _numeric_axis(ax, raw, present, rng)
    else:
        x, xj, levels = _category_axis(ax, raw, rng)
    ax.errorbar(
        xj[present],
        means[present],
        yerr=stds[present],
        fmt="o",
        ms=4,
        color="tab:blue",
        ecolor="tab:blue",
        alpha=0.55,
        capsize=2,
        lw=1,
    )
    line_y = [best(means[present][x[present] == lv]) for lv in levels]
    ax.plot(levels, line_y, "-", color="tab:red", lw=1.5, label="best at each value")
    absent = int((~present).sum())
    title = param_label(p) + (f"  ({absent} configs without it)" if absent else "")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(param_label(p))
    ax.set_ylabel(m)
    ax.grid(alpha=0.3)


def _numeric_axis(ax, raw: list[Any], present: np.ndarray, rng):
    """A numeric x axis (log when positive and spanning 10x): (x, jittered x, the values)."""
    x = np.array([np.nan if v is None else float(v) for v in raw])
    xs = x[present]
    log_axis = xs.size > 0 and (xs > 0).all() and xs.max() / xs.min() >= 10
    if log_axis:
        ax.set_xscale("log")
        jitter = np.exp(rng.uniform(-0.04, 0.04, len(x)))
        xj = x * jitter
    else:
        span = (xs.max() - xs.min()) if xs.size else 1.0
        xj = x + rng.uniform(-0.015, 0.015, len(x)) * (span or 1.0)
    levels = sorted(set(xs.tolist()))
    if 0 < len(levels) <= 6:  # a few grid values: tick exactly those
        ax.set_xticks(levels, [fmt.num(v, 3) for v in levels])
        ax.minorticks_off()
    return x, xj, levels


def _category_axis(ax, raw: list[Any], rng):
    """One tick per value: (x, jittered x, the tick positions)."""
    labels = sorted({fmt.value(v) for v in raw})
    x = np.array(
        [labels.index(fmt.value(v)) if v is not None else np.nan for v in raw], dtype=float
    )
    xj = x + rng.uniform(-0.08, 0.08, len(x))
    ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 3 else 0)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    return x, xj, list(range(len(labels)))


def plot_pareto(
    ranked: pd.DataFrame, path: str | Path, metrics: Sequence[str] | None = None
) -> Path:
    """Two metrics' configuration means (± std), the Pareto front highlighted and joined.

    Args:
        ranked: from `rank(df, by=[a, b, ...])` (or any table with `<m>/mean`, `<m>/std`).
        path: the PNG to write.
        metrics: the two metric columns to draw; default the first two of `ranked.attrs["by"]`.
    Raises:
        AnalysisError: when two metrics are not available.
    """
    ms = list(metrics or ranked.attrs.get("by", []))[:2]
    if len(ms) < 2 or any(f"{m}/mean" not in ranked.columns for m in ms):
        raise AnalysisError(
            "a Pareto plot needs a table ranked by two metrics, e.g. rank(df, by=['mig', 'recon'])"
        )
    a, b = ms
    xa, xb = ranked[f"{a}/mean"].to_numpy(float), ranked[f"{b}/mean"].to_numpy(float)
    sa = np.nan_to_num(ranked[f"{a}/std"].to_numpy(float))
    sb = np.nan_to_num(ranked[f"{b}/std"].to_numpy(float))
    maximize = [direction(a) == "max", direction(b) == "max"]
    front = pareto_fronts(np.column_stack([xa, xb]), maximize)
    on = front == 1
    fig = _figure(5.8, 4.6)
    ax = fig.subplots()
    ax.errorbar(
        xa[~on],
        xb[~on],
        xerr=sa[~on],
        yerr=sb[~on],
        fmt="o",
        ms=4,
        color="0.55",
        ecolor="0.75",
        capsize=2,
        lw=1,
        label="dominated",
    )
    ax.errorbar(
        xa[on],
        xb[on],
        xerr=sa[on],
        yerr=sb[on],
        fmt="o",
        ms=6,
        color="tab:red",
        ecolor="tab:red",
        capsize=2,
        lw=1,
        label="Pareto front",
    )
    order = np.argsort(xa[on])
    ax.plot(xa[on][order], xb[on][order], "--", color="tab:red", lw=1)
    for i in np.flatnonzero(on):
        ax.annotate(
            str(ranked["config_id"].iloc[i])[:6],
            (xa[i], xb[i]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xlabel(_metric_axis_label(a))
    ax.set_ylabel(_metric_axis_label(b))
    ax.set_title(
        f"Pareto front: {int(on.sum())} of {len(on)} configurations (mean ± std)", fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save_figure(fig, path)


def plot_importance(imp: pd.DataFrame, path: str | Path) -> Path:
    """Horizontal bars: one group per parameter, one bar per metric.

    Args:
        imp: a long table from `analysis.importance.bootstrap_importance` (the bars get its
            95% interval as error bars) or a wide one from `importance` (parameters x metrics).
        path: the PNG to write.
    """
    long = {"metric", "parameter", "importance"} <= set(imp.columns)
    if long:
        from analysis.importance import importance_matrix

        data = importance_matrix(imp)
        lows, highs = importance_matrix(imp, "low"), importance_matrix(imp, "high")
    else:
        data = imp.dropna(axis=1, how="all")
        lows = highs = None
    if data.empty:
        raise AnalysisError("no importance values to plot (too few trials, or no variation)")
    params = list(data.index)
    metrics = list(data.columns)
    height = 0.8 / len(metrics)
    fig = _figure(8.4, 0.9 + 0.32 * len(params) * max(2, len(metrics)) / 2)
    ax = fig.subplots()
    y = np.arange(len(params))
    for k, m in enumerate(metrics):
        x = data[m].fillna(0).to_numpy()
        err = None
        if lows is not None and highs is not None:
            lo = np.nan_to_num(lows[m].to_numpy(dtype=float), nan=0.0)
            hi = np.nan_to_num(highs[m].to_numpy(dtype=float), nan=0.0)
            err = np.vstack([np.clip(x - lo, 0, None), np.clip(hi - x, 0, None)])
        ax.barh(y - 0.4 + height * (k + 0.5), x, height=height, label=m, xerr=err,
                error_kw={"lw": 0.8, "capsize": 2, "ecolor": "0.2"})
    ax.set_yticks(y, params)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    method = imp.attrs.get("method", "forest")
    ax.set_xlabel(f"importance (share, {method})" + (", 95% bootstrap interval" if long else ""))
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    n = int(imp["n_trials"].max()) if long and len(imp) else None
    ax.set_title(
        f"Hyperparameter importance per metric ({method}"
        + (f", {n} trials)" if n else " on the trials)"),
        fontsize=10,
    )
    return _save_figure(fig, path)


def plot_correlation(corr: pd.DataFrame, path: str | Path) -> Path:
    """Heatmap of the metric agreement, values printed.

    Args:
        corr: a long table from `analysis.importance.metric_agreement` (each cell shows rho,
            its 95% interval and n; pairs not `shown` are left blank) or a square matrix from
            `metric_correlation`.
        path: the PNG to write.
    """
    if corr.empty:
        raise AnalysisError("empty correlation matrix")
    long = {"a", "b", "rho"} <= set(corr.columns)
    if long:
        names = list(corr.attrs.get("metrics") or dict.fromkeys([*corr["a"], *corr["b"]]))
        k = len(names)
        values = np.eye(k)
        texts = [["" if i != j else "1" for j in range(k)] for i in range(k)]
        for _, r in corr.iterrows():
            i, j = names.index(r["a"]), names.index(r["b"])
            if not r["shown"] or not np.isfinite(r["rho"]):
                values[i, j] = values[j, i] = np.nan
                texts[i][j] = texts[j][i] = fmt.DASH
                continue
            values[i, j] = values[j, i] = r["rho"]
            texts[i][j] = texts[j][i] = (
                f"{r['rho']:.2f}\n[{r['low']:.2f}, {r['high']:.2f}]\nn={int(r['n'])}"
            )
    else:
        names = list(corr.columns)
        k = len(names)
        values = corr.to_numpy(dtype=float)
        texts = [[fmt.DASH if np.isnan(v) else f"{v:.2f}" for v in row] for row in values]
    labels = [metric_label(c) for c in names]
    scale = 1.0 if long else 0.55
    fig = _figure(2.2 + scale * k, 1.6 + (0.9 if long else 0.5) * k)
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(k), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                texts[i][j],
                ha="center",
                va="center",
                fontsize=6 if long else 7,
                color="white" if abs(np.nan_to_num(values[i, j])) > 0.6 else "black",
            )
    fig.colorbar(im, ax=ax, shrink=0.8, label="Spearman rank correlation")
    how = "lower-is-better negated" if corr.attrs.get("oriented", True) else "raw values"
    extra = ", rho [95% interval] n" if long else ""
    ax.set_title(
        f"Metric agreement over {corr.attrs.get('n_points', '?')} points ({how}{extra})",
        fontsize=10,
    )
    return _save_figure(fig, path)


def plot_best_images(
    df: pd.DataFrame,
    ranked: pd.DataFrame,
    path: str | Path,
    *,
    kind: str = "traversal",
    top: int = 3,
) -> Path | None:
    """Stack the saved `<kind>.png` of the best trials (one per top configuration).

    Args:
        df: trials (for `artifact_dir`).
        ranked: from `rank`; its `best_trial` column picks the trial of each configuration.
        path: the PNG to write.
        kind: `"traversal"` or `"reconstruction"`.
        top: how many configurations.
    Returns:
        The path, or None when none of those trials saved such an image.
    """
    from matplotlib.image import imread

    if kind not in ("traversal", "reconstruction"):
        raise AnalysisError(f"kind must be 'traversal' or 'reconstruction', got {kind!r}")
    found = []
    for _, r in ranked.head(top).iterrows():
        try:
            adir = run_row(df, r["best_trial"], r.get("best_seed")).get("artifact_dir")
        except AnalysisError:
            adir = None
        if not adir:
            continue
        png = Path(adir) / f"{kind}.png"
        if png.is_file():
            try:
                found.append((r, imread(png)))
            except (OSError, ValueError, SyntaxError) as exc:
                log.warning("%s: unreadable image (%s); skipped", png, exc)
    if not found:
        return None
    by = ranked.attrs.get("by", [])
    fig = _figure(7.0, 2.6 * len(found))
    axes = fig.subplots(len(found), 1, squeeze=False).ravel()
    for ax, (r, img) in zip(axes, found, strict=True):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_axis_off()
        score = ", ".join(f"{m} {fmt.num(r[f'{m}/mean'], 3)}" for m in by if f"{m}/mean" in r)
        seed = r.get("best_seed")
        run = f"trial {r['best_trial']}" + ("" if pd.isna(seed) else f", seed {seed}")
        ax.set_title(f"#{r['rank']} config {r['config_id']} ({run}): {score}", fontsize=9)
    return _save_figure(fig, path)

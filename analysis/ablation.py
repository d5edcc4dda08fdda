"""Ablation tables: a metric's `mean ± std (n)` over seeds for each setting of a few parameters.

    table = ablation_table(df, rows=["model/name", "model/num_ipe"], columns="model/beta",
                           metrics=["mig", "dci_disentanglement"])
    table.to_markdown(); table.to_latex(); table.to_csv()

Rows are the combinations of the `rows` parameters present in the finished trials; each metric
gets one table column, or one per value of the `columns` parameter. The best cell of each table
column (by the metric's direction; ties all) is marked: bold in Markdown and LaTeX, `best=True`
in the CSV. Failed, non-finite, unfinished and early-stopped trials are left out.

A continuous parameter (a float range in the sweep's search space, such as beta in [4, 10]; in
a table without a saved space, a float column with more than `bins` distinct values) gets
quantile bins instead of one row per sampled value: `bins` (default `BINS` = 4) bins holding
about equally many trials, labelled by their range, `[4, 5.3)`, the last one closed,
`[8.1, 10]`; at most one bin per two distinct values (four sampled values make two bins, three
keep one row each). Integer and categorical parameters, float grids and every parameter of
an ablation grid (`mipet-tune ablate`) keep one row per value. `bins=0` turns binning off.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import _format as fmt
from analysis.binning import BINS, Bin, _binned, continuous_params
from analysis.errors import AnalysisError
from analysis.rank import default_metrics
from analysis.sweep import (
    _hashable,
    metric_label,
    param_label,
    resolve_metrics,
    resolve_param,
)
from analysis.trials import direction, usable_trials

log = logging.getLogger(__name__)

__all__ = [
    "BINS",
    "AblationTable",
    "Bin",
    "ablation_table",
    "ablation_text",
    "continuous_params",
    "write_ablation",
]

FORMATS = {"md": "md", "markdown": "md", "tex": "tex", "latex": "tex", "csv": "csv"}


@dataclasses.dataclass(frozen=True)
class AblationTable:
    """An ablation table in long form, with its three renderings.

    Attributes:
        rows: the row parameters (config columns).
        columns: the column parameters (config columns; often one, may be none).
        metrics: the metric columns.
        stats: one row per (row setting, column setting, metric): the row parameters' values,
            `column` (the column parameter's value, a tuple of values for several, or None),
            `metric`, `mean`, `std`, `n`
            (trials), `n_configs` (distinct configurations pooled in the cell), `cell`
            (`mean ± std (n)`) and `best` (bool). A binned parameter's value is its `Bin`.
        excluded: counts of trials left out, by reason.
        binned: {parameter: its bins} for the continuous parameters (see the module text).
    """

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    metrics: tuple[str, ...]
    stats: pd.DataFrame
    excluded: dict[str, int]
    binned: dict[str, list[Bin]] = dataclasses.field(default_factory=dict)

    # ---- layout ------------------------------------------------------------------------------
    def _column_keys(self) -> list[tuple[str, Any]]:
        values = _sorted_unique(self.stats["column"]) if self.columns else [None]
        if len(self.columns) > 1:
            values = sorted(values, key=lambda t: tuple(_sort_key(v) for v in t))
        return [(m, v) for m in self.metrics for v in values]

    def _column_label(self, v: Any, *, names: bool = False) -> str:
        if len(self.columns) == 1:
            text = fmt.value(v)
            return f"{param_label(self.columns[0])}={text}" if names else text
        pairs = zip(self.columns, v, strict=True)
        return ", ".join(f"{param_label(c)}={fmt.value(x)}" for c, x in pairs)

    def _row_keys(self) -> list[tuple[Any, ...]]:
        keys = {tuple(_hashable(r[p]) for p in self.rows) for _, r in self.stats.iterrows()}
        return sorted(keys, key=lambda k: tuple(_sort_key(v) for v in k))

    def _lookup(self) -> dict[tuple[Any, ...], pd.Series]:
        out = {}
        for _, r in self.stats.iterrows():
            key = (*(_hashable(r[p]) for p in self.rows), r["metric"], _hashable(r["column"]))
            out[key] = r
        return out

    def _grid(self, bold: Any) -> tuple[list[str], list[list[str]]]:
        lookup = self._lookup()
        header = [param_label(p) for p in self.rows]
        cols = self._column_keys()
        for m, v in cols:
            name = metric_label(m)
            header.append(name if not self.columns else f"{name} @ {self._column_label(v)}")
        body = []
        for rk in self._row_keys():
            line = [fmt.value(v) for v in rk]
            for m, v in cols:
                r = lookup.get((*rk, m, _hashable(v)))
                if r is None:
                    line.append(fmt.DASH)
                else:
                    line.append(bold(r["cell"]) if r["best"] else r["cell"])
            body.append(line)
        return header, body

    # ---- renderings --------------------------------------------------------------------------
    def to_markdown(self) -> str:
        """GitHub Markdown; the best cell of each column in bold; arrows give the direction."""
        header, body = self._grid(lambda s: f"**{s}**")
        arrows = {m: "↑" if direction(m) == "max" else "↓" for m in self.metrics}
        n_rows = len(self.rows)
        for i, (m, _) in enumerate(self._column_keys()):
            header[n_rows + i] += f" {arrows[m]}"
        align = ["l"] * n_rows + ["r"] * (len(header) - n_rows)
        return fmt.markdown_table(header, body, align)

    def to_html(self) -> str:
        """An HTML `<table>`; the best cell of each column in `<b>`."""
        header, body = self._grid(lambda s: f"\x00{s}")
        arrows = {m: "↑" if direction(m) == "max" else "↓" for m in self.metrics}
        for i, (m, _) in enumerate(self._column_keys()):
            header[len(self.rows) + i] += f" {arrows[m]}"
        cells = [
            [
                f"<b>{fmt.html_escape(c[1:])}</b>" if c.startswith("\x00") else fmt.html_escape(c)
                for c in line
            ]
            for line in body
        ]
        return fmt.html_table(header, cells, escape=False)

    def to_latex(self, *, caption: str | None = None, label: str | None = None) -> str:
        """A booktabs `table` (needs `\\usepackage{booktabs}`); best cells in `\\textbf`."""
        _, body = self._grid(lambda s: f"\x00{s}\x01")
        n_rows = len(self.rows)
        cols = self._column_keys()
        lines = [r"\begin{table}[t]", r"\centering"]
        if caption:
            lines.append(rf"\caption{{{fmt.latex_escape(caption)}}}")
        if label:
            lines.append(rf"\label{{{label}}}")
        lines.append(r"\begin{tabular}{" + "l" * n_rows + "r" * len(cols) + "}")
        lines.append(r"\toprule")
        row_head = [fmt.latex_escape(param_label(p)) for p in self.rows]
        arrows = {
            m: r"$\uparrow$" if direction(m) == "max" else r"$\downarrow$" for m in self.metrics
        }
        if not self.columns:
            head = row_head + [
                f"{fmt.latex_escape(metric_label(m))} {arrows[m]}" for m, _ in cols
            ]
            lines.append(" & ".join(head) + r" \\")
        else:
            per = len(cols) // len(self.metrics)
            top = [""] * n_rows
            rules = []
            for i, m in enumerate(self.metrics):
                top.append(
                    rf"\multicolumn{{{per}}}{{c}}{{{fmt.latex_escape(metric_label(m))} "
                    rf"{arrows[m]}}}"
                )
                start = n_rows + i * per + 1
                rules.append(rf"\cmidrule(lr){{{start}-{start + per - 1}}}")
            lines.append(" & ".join(top) + r" \\")
            lines.append(" ".join(rules))
            sub = row_head + [fmt.latex_escape(self._column_label(v, names=True)) for _, v in cols]
            lines.append(" & ".join(sub) + r" \\")
        lines.append(r"\midrule")
        for line in body:
            cells = []
            for c in line:
                text = fmt.latex_escape(c.replace("\x00", "").replace("\x01", ""))
                cells.append(rf"\textbf{{{text}}}" if c.startswith("\x00") else text)
            lines.append(" & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        return "\n".join(lines) + "\n"

    def to_csv(self, path: str | Path | None = None) -> str:
        """Long form: one line per (row setting, column value, metric); returns the text."""
        out = self.stats.copy()
        out = out.rename(columns={p: param_label(p) for p in self.rows})
        position = out.columns.get_loc("column")
        for k, c in enumerate(self.columns):
            values = [v[k] if len(self.columns) > 1 else v for v in out["column"]]
            out.insert(position + k, param_label(c), values)
        out = out.drop(columns="column")
        for col in out.columns:
            if out[col].dtype == object:
                out[col] = [fmt.value(v) if isinstance(v, tuple) else v for v in out[col]]
        buf = io.StringIO()
        out.to_csv(buf, index=False, lineterminator="\n")
        text = buf.getvalue()
        if path is not None:
            Path(path).write_text(text)
        return text


def ablation_table(
    df: pd.DataFrame,
    rows: str | Sequence[str],
    columns: str | Sequence[str] | None = None,
    metrics: str | Sequence[str] | None = None,
    *,
    include_stopped: bool = False,
    bins: int = BINS,
) -> AblationTable:
    """Build an ablation table from a trials table.

    Args:
        df: trials, from `load_sweep`.
        rows: one or more config parameters (`model/name`, `config/model/num_ipe`, `beta`).
        columns: optionally one more config parameter (or several) spread across the table's
            columns.
        metrics: metric names (`mig`, `eval/sap`, `train/recon`); default: the sweep's
            ranking metric.
        include_stopped: keep trials an early-stopping scheduler ended.
        bins: quantile bins of a continuous parameter (see the module text); 0: none.
    Returns:
        An `AblationTable`. A cell pools every finished trial with that setting; when this
        pools several configurations (other parameters varied too) a warning is logged and
        `n_configs` says how many.
    Raises:
        AnalysisError: an unknown parameter or metric (listing the known ones), a parameter
            used twice, or no finished trial.
    """
    row_cols, col_cols = _table_params(df, rows, columns)
    every = row_cols + col_cols
    metric_cols = resolve_metrics(df, metrics) if metrics else default_metrics(df)
    used, excluded = usable_trials(df, include_stopped=include_stopped)
    if used.empty:
        reasons = ", ".join(f"{n} {k}" for k, n in excluded.items() if n) or "none"
        raise AnalysisError(f"no finished trials among {len(df)} (left out: {reasons})")
    used.attrs.update(spec=df.attrs.get("spec") or {})  # the search space says what is a range
    ranges = continuous_params(used, every, bins=bins)
    if ranges:
        used = _binned(used, ranges)
    keys = [[_hashable(v) for v in used[c]] for c in every]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, key in enumerate(zip(*keys, strict=True)):
        groups.setdefault(key, []).append(i)
    records = []
    for key, idx in groups.items():
        records += _cell_records(used.iloc[idx], key, row_cols, col_cols, metric_cols)
    stats = pd.DataFrame(records)
    _mark_best(stats)
    pooled = int(stats["n_configs"].max())
    if pooled > 1:
        log.info(
            "ablation cells pool up to %d configurations each: parameters other than %s vary "
            "too; the ± then spans them, not only seeds",
            pooled,
            ", ".join(param_label(c) for c in every),
        )
    return AblationTable(
        tuple(row_cols), tuple(col_cols), tuple(metric_cols), stats, excluded, ranges
    )


def _table_params(
    df: pd.DataFrame, rows: str | Sequence[str], columns: str | Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """The row and column parameters as config columns, checked."""
    row_cols = [resolve_param(df, r) for r in ([rows] if isinstance(rows, str) else rows)]
    if not row_cols:
        raise AnalysisError("ablation_table needs at least one row parameter")
    col_cols = [
        resolve_param(df, c) for c in ([columns] if isinstance(columns, str) else (columns or []))
    ]
    every = row_cols + col_cols
    if len(set(every)) != len(every):
        raise AnalysisError(f"a parameter is used twice in rows/columns: {every}")
    return row_cols, col_cols


def _cell_records(
    sub: pd.DataFrame,
    key: tuple[Any, ...],
    row_cols: list[str],
    col_cols: list[str],
    metric_cols: list[str],
) -> list[dict[str, Any]]:
    """The cells of one setting (`key`: the row values, then the column values), per metric."""
    n_configs = int(sub["config_id"].nunique())
    col_key = key[len(row_cols) :]
    column = None if not col_cols else col_key[0] if len(col_cols) == 1 else col_key
    records = []
    for m in metric_cols:
        x = sub[m].to_numpy(dtype=float)
        x = x[np.isfinite(x)]
        n = len(x)
        mean = float(x.mean()) if n else math.nan
        std = float(x.std(ddof=1)) if n > 1 else math.nan
        rec = dict(zip(row_cols, key[: len(row_cols)], strict=True))
        rec.update(
            column=column,
            metric=m,
            mean=mean,
            std=std,
            n=n,
            n_configs=n_configs,
            cell=fmt.cell(mean, std, n),
        )
        records.append(rec)
    return records


def _mark_best(stats: pd.DataFrame) -> None:
    """`best`: the best mean of each (metric, column setting), ties included."""
    stats["best"] = False
    for (m, _), sub in stats.groupby(["metric", stats["column"].map(_hashable).map(str)]):
        x = sub["mean"].to_numpy(dtype=float)
        if not np.isfinite(x).any():
            continue
        best = np.nanmax(x) if direction(m) == "max" else np.nanmin(x)
        stats.loc[sub.index[np.isclose(x, best, rtol=1e-12, atol=0.0)], "best"] = True


def write_ablation(
    table: AblationTable, folder: str | Path, name: str = "ablation", *, caption: str | None = None
) -> dict[str, Path]:
    """Write `<name>.md`, `<name>.tex` and `<name>.csv` into `folder`; returns the paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / f"{name}.md", "tex": out / f"{name}.tex", "csv": out / f"{name}.csv"}
    paths["md"].write_text(table.to_markdown())
    paths["tex"].write_text(table.to_latex(caption=caption, label=f"tab:{name}"))
    table.to_csv(paths["csv"])
    return paths


def ablation_text(
    folder_or_df: str | Path | pd.DataFrame,
    rows: str | Sequence[str] | None = None,
    columns: str | Sequence[str] | None = None,
    metrics: str | Sequence[str] | None = None,
    *,
    fmt: str = "md",
    write: bool = True,
    bins: int | None = None,
) -> str:
    """What `mipet-tune ablate` prints: an ablation table of a sweep folder as text.

    Args:
        folder_or_df: a sweep folder (or a table from `load_sweep`).
        rows: row parameters; default: every searched parameter not in `columns` (one row
            per configuration, cells over its seeds).
        columns: column parameter(s), or none.
        metrics: metric names; default: the sweep's ranking metric.
        fmt: `md` (or `markdown`), `tex` (or `latex`), `csv`.
        write: also write `report/ablation.{md,tex,csv}` into the sweep folder.
        bins: quantile bins of a continuous row or column parameter; default `BINS` when
            `rows` are named, none for the default rows (one row per configuration).
    Returns:
        The table in `fmt`.
    Raises:
        AnalysisError: for a bad format, folder, parameter or metric, or nothing finished.
    """
    from analysis.sweep import load_sweep, searched_params

    if fmt not in FORMATS:
        raise AnalysisError(f"unknown table format {fmt!r}; choose one of {sorted(FORMATS)}")
    df = folder_or_df if isinstance(folder_or_df, pd.DataFrame) else load_sweep(folder_or_df)
    cols = [columns] if isinstance(columns, str) else list(columns or [])
    per_config = rows is None or (not isinstance(rows, str) and len(rows) == 0)
    if bins is None:
        bins = 0 if per_config else BINS
    if per_config:
        taken = {resolve_param(df, c) for c in cols}
        rows = [p for p in searched_params(df) if p not in taken]
        if not rows:
            raise AnalysisError("no searched parameter left for the table's rows; name --rows")
    table = ablation_table(df, rows=rows, columns=cols or None, metrics=metrics, bins=bins)
    folder = df.attrs.get("sweep_folder")
    if write and folder:
        write_ablation(table, Path(folder) / "report", "ablation")
    kind = FORMATS[fmt]
    if kind == "md":
        return table.to_markdown()
    if kind == "tex":
        return table.to_latex()
    return table.to_csv()


def _sort_key(v: Any) -> tuple[int, Any]:
    if isinstance(v, Bin):
        return (0, v.low)
    if v is None:
        return (3, "")
    if isinstance(v, (bool, np.bool_)):
        return (1, str(v))
    if isinstance(v, (int, float, np.integer, np.floating)):
        return (0, float(v))
    return (2, str(v))


def _sorted_unique(values: pd.Series) -> list[Any]:
    return sorted({_hashable(v) for v in values}, key=_sort_key)

"""The sweep report: `report/index.md` and a self-contained `report/index.html`.

`write_report(folder)` reads the sweep, and writes into `<folder>/report/`:
    index.md, index.html      summary, ranked table, Pareto front, ablation tables,
                              importance, metric agreement, plots, best trials' images
    ranked.csv, ranked.md     the full ranked table
    ablation_<param>.{md,tex,csv}
    importance.csv, metric_correlation.csv
    best_config.yaml          the best trial's complete run config (see analysis.export)
    plots/*.png
The HTML page embeds its images (base64), so it can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis import _format as fmt
from analysis.ablation import ablation_table, write_ablation
from analysis.errors import AnalysisError
from analysis.export import ModelFields, export_best
from analysis.importance import default_report_metrics, importance, metric_correlation
from analysis.plots import (
    plot_best_images,
    plot_correlation,
    plot_importance,
    plot_metric_vs_params,
    plot_pareto,
)
from analysis.rank import (
    default_metrics,
    excluded_line,
    floor_csv_rows,
    rank,
    ranked_markdown,
    ranked_notes,
    ranked_rows,
    summary_sentence,
)
from analysis.sweep import (
    _hashable,
    load_sweep,
    metric_label,
    param_label,
    resolve_metrics,
    run_row,
    searched_params,
)

log = logging.getLogger(__name__)

__all__ = ["write_report"]

MAX_ABLATION_LEVELS = 12
MAX_TABLE_METRICS = 4


@dataclasses.dataclass
class _Doc:
    """The report as parallel Markdown and HTML."""

    folder: Path
    md: list[str] = dataclasses.field(default_factory=list)
    html: list[str] = dataclasses.field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.md.append(f"{'#' * level} {text}\n")
        self.html.append(f"<h{level}>{fmt.html_escape(text)}</h{level}>")

    def para(self, text: str) -> None:
        self.md.append(text + "\n")
        body = re.sub(r"`([^`]+)`", r"<code>\1</code>", fmt.html_escape(text))
        self.html.append(f"<p>{body}</p>")

    def table(
        self,
        header: Sequence[str],
        rows: Sequence[Sequence[str]],
        align: Sequence[str] | None = None,
    ) -> None:
        self.md.append(fmt.markdown_table(header, rows, align))
        self.html.append(fmt.html_table(header, rows, align=align))

    def raw(self, md: str, html: str) -> None:
        self.md.append(md)
        self.html.append(html)

    def image(self, path: Path | None, alt: str) -> None:
        if path is None:
            return
        rel = path.relative_to(self.folder).as_posix()
        self.md.append(f"![{alt}]({rel})\n")
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.html.append(
            f'<figure><img alt="{fmt.html_escape(alt)}" '
            f'src="data:image/png;base64,{data}"></figure>'
        )


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:3px 8px}th{background:#f3f3f3}
img{max-width:100%}figure{margin:1em 0}code{background:#f3f3f3;padding:0 3px}"""


@dataclasses.dataclass
class _Sweep:
    """What every section of the report reads: the table, the rankings, where files go."""

    df: pd.DataFrame
    root: Path
    out: Path
    primary: list[str]  # the ranking metrics
    metrics: list[str]  # the metrics for plots, importance and agreement
    ranked: pd.DataFrame
    params: list[str]  # the searched parameters

    @property
    def plots(self) -> Path:
        return self.out / "plots"


def write_report(
    folder: str | Path,
    *,
    by: str | Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    top: int = 3,
    max_rows: int = 25,
    model_fields: ModelFields | None = None,
) -> Path:
    """Write the sweep report into `<folder>/report/`.

    Args:
        folder: the sweep folder.
        by: the ranking metric(s) (default: the sweep's objective, else MIG, ...).
        metrics: the metrics for plots, importance and agreement (default: every `eval/*`
            metric with values, plus `train/recon` or `train/loss`).
        top: how many best configurations get their images shown.
        max_rows: rows of the ranked table shown in the page (ranked.csv has all).
        model_fields: for `best_config.yaml`, as for `analysis.export.best_config`.
    Returns:
        The path of `report/index.md` (`index.html` lies beside it).
    Raises:
        AnalysisError: when the folder is not a sweep, a metric is unknown, no trial
            finished, or `<folder>/report/` cannot be written (read-only, not a folder). A
            section that cannot be made (too few trials for importance, no saved images) is
            left out with a note instead.
    """
    sweep = _read(folder, by, metrics)
    try:  # the write boundary: a read-only or clogged folder is one line, naming the path
        sweep.plots.mkdir(parents=True, exist_ok=True)
        doc = _Doc(sweep.out)
        name = (sweep.df.attrs.get("spec") or {}).get("name") or sweep.root.name
        _summary(doc, sweep, name)
        _ranking(doc, sweep, max_rows)
        _best_config(doc, sweep, model_fields)
        _pareto(doc, sweep)
        _ablations(doc, sweep)
        _importance(doc, sweep)
        _agreement(doc, sweep)
        _metrics_vs_params(doc, sweep)
        _best_images(doc, sweep, top)
        index = _write_pages(doc, sweep.out, name)
    except OSError as exc:
        where = exc.filename or sweep.out
        raise AnalysisError(f"{where}: cannot write the report ({exc.strerror or exc}); it goes "
                            f"to {sweep.out}, which must be a writable folder") from None
    log.info("wrote the report of %s to %s", sweep.root, sweep.out)
    return index


def _read(folder: str | Path, by: str | Sequence[str] | None,
          metrics: Sequence[str] | None) -> _Sweep:
    df = load_sweep(folder)
    root = Path(df.attrs["sweep_folder"])
    primary = resolve_metrics(df, by) if by else default_metrics(df)
    report_metrics = resolve_metrics(df, metrics) if metrics else default_report_metrics(df)
    for m in primary:
        if m not in report_metrics:
            report_metrics.insert(0, m)
    ranked = rank(df, primary)  # raises when nothing finished
    return _Sweep(df, root, root / "report", primary, report_metrics, ranked, searched_params(df))


def _summary(doc: _Doc, sweep: _Sweep, name: str) -> None:
    df = sweep.df
    doc.heading(f"Sweep report: {name}", 1)
    doc.para(summary_sentence(sweep.ranked))
    status = df["status"].value_counts().to_dict()
    source = (
        "trials.parquet"
        if df.attrs.get("source") == "parquet"
        else "the Ray trial folders (no trials.parquet: the sweep did not finish)"
    )
    doc.para(
        f"Folder {sweep.root}; {len(df)} trials "
        f"({', '.join(f'{n} {s}' for s, n in status.items())}); table read from {source}. "
        f"Generated {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC."
    )
    doc.para(
        "Searched parameters: " + (", ".join(param_label(p) for p in sweep.params) or "none")
        + "."
    )
    if "config/data/name" in df.columns:
        doc.para("Dataset: " + ", ".join(sorted({str(v) for v in df["config/data/name"]})) + ".")


def _ranking(doc: _Doc, sweep: _Sweep, max_rows: int) -> None:
    ranked = sweep.ranked
    dirs = ", ".join(
        f"{m} ({'higher' if ranked.attrs['directions'][m] == 'max' else 'lower'} is better)"
        for m in sweep.primary
    )
    doc.heading("Ranking")
    doc.para(
        f"Configurations ranked by {dirs}, mean over seeds, with the standard deviation, the "
        f"number of seeds and a 95% t-interval of the mean. {excluded_line(ranked)}."
    )
    header, rows, align = ranked_rows(ranked, top=max_rows)
    doc.table(header, rows, align)
    for line in ranked_notes(ranked):
        doc.para(line)
    if len(ranked) > max_rows:
        doc.para(f"First {max_rows} of {len(ranked)} configurations; all are in ranked.csv.")
    _ranked_csv(ranked).to_csv(sweep.out / "ranked.csv", index=False)
    (sweep.out / "ranked.md").write_text(ranked_markdown(ranked))


def _best_config(doc: _Doc, sweep: _Sweep, model_fields: ModelFields | None) -> None:
    best_path = export_best(sweep.df, sweep.out, by=sweep.primary, model_fields=model_fields)
    best = sweep.ranked.iloc[0]
    doc.para(
        f"Best configuration: {best['config_id']} (trial {best['best_trial']}, seed "
        f"{best['best_seed']}), exported to {best_path.name}; rerun it with "
        f"`mipet-tune train --config {best_path.name}`."
    )


def _pareto(doc: _Doc, sweep: _Sweep) -> None:
    """Disentanglement against reconstruction (or the first two ranking metrics)."""
    df, primary = sweep.df, sweep.primary
    loss = next((c for c in ("train/recon", "train/loss") if c in df.columns), None)
    pair = (
        list(primary[:2])
        if len(primary) >= 2
        else ([primary[0], loss] if loss and primary[0] != loss else [])
    )
    if not pair:
        return
    doc.heading("Pareto front")
    try:
        both = rank(df, pair)
        path = plot_pareto(both, sweep.plots / "pareto.png")
        front = both[both["pareto_front"] == 1]
        doc.para(
            f"{len(front)} of {len(both)} configurations are not beaten on both "
            f"{pair[0]} and {pair[1]}."
        )
        doc.table(*_front_rows(front, pair))
        doc.image(path, "Pareto front")
    except AnalysisError as exc:
        doc.para(f"(No Pareto front: {exc}.)")


def _ablations(doc: _Doc, sweep: _Sweep) -> None:
    primary = sweep.primary
    table_metrics = [m for m in sweep.metrics if m in primary] + [
        m for m in sweep.metrics if m not in primary
    ][: max(0, MAX_TABLE_METRICS - len(primary))]
    ablations = _ablation_specs(sweep.df, sweep.params)
    if ablations:
        doc.heading("Ablation tables")
        doc.para(
            "Cells: mean ± std (number of trials) over every finished trial with that "
            "setting; the best of each column in bold. LaTeX (booktabs) and CSV versions "
            "lie beside this page."
        )
    for rows_ in ablations:
        stem = "ablation_" + "_".join(param_label(p).replace("/", "-") for p in rows_)
        try:
            table = ablation_table(sweep.df, rows=rows_, metrics=table_metrics)
        except AnalysisError as exc:
            doc.para(f"({stem}: {exc}.)")
            continue
        caption = f"Ablation over {', '.join(map(param_label, rows_))}"
        write_ablation(table, sweep.out, stem, caption=caption)
        doc.heading(", ".join(param_label(p) for p in rows_), 3)
        pooled = int(table.stats["n_configs"].max())
        note = (
            f"Each cell pools up to {pooled} configurations (other parameters vary too). "
            if pooled > 1
            else ""
        )
        doc.raw(
            note + f"Files: {stem}.md, {stem}.tex, {stem}.csv.\n\n" + table.to_markdown(),
            f"<p>{fmt.html_escape(note)}Files: {stem}.md, {stem}.tex, {stem}.csv.</p>"
            + table.to_html(),
        )


def _importance(doc: _Doc, sweep: _Sweep) -> None:
    doc.heading("Hyperparameter importance")
    try:
        imp = importance(sweep.df, sweep.metrics)
        imp.to_csv(sweep.out / "importance.csv")
        doc.para(
            "Share of a random forest's impurity decrease per parameter, fitted to each "
            "metric over the finished trials (seeds as samples)."
        )
        doc.table(
            ["parameter", *[metric_label(m) for m in imp.columns]],
            [[p, *[fmt.num(v, 2) for v in imp.loc[p]]] for p in imp.index],
            ["l"] + ["r"] * len(imp.columns),
        )
        doc.image(plot_importance(imp, sweep.plots / "importance.png"), "importance")
    except AnalysisError as exc:
        doc.para(f"(No importance: {exc}.)")


def _agreement(doc: _Doc, sweep: _Sweep) -> None:
    doc.heading("Agreement between metrics")
    try:
        corr = metric_correlation(sweep.df, sweep.metrics)
        corr.to_csv(sweep.out / "metric_correlation.csv")
        doc.para(
            f"Spearman rank correlation over {corr.attrs['n_points']} configurations (seed "
            "means); lower-is-better metrics negated, so +1 means the two metrics order "
            "the configurations alike."
        )
        doc.image(plot_correlation(corr, sweep.plots / "metric_correlation.png"), "correlation")
    except AnalysisError as exc:
        doc.para(f"(No correlation: {exc}.)")


def _metrics_vs_params(doc: _Doc, sweep: _Sweep) -> None:
    doc.heading("Metrics against the searched parameters")
    for m in sweep.metrics:
        try:
            png = sweep.plots / f"vs_params_{metric_label(m).replace('/', '-')}.png"
            path = plot_metric_vs_params(sweep.df, m, png)
            doc.image(path, f"{m} against the parameters")
        except AnalysisError as exc:
            doc.para(f"({m}: {exc}.)")


def _best_images(doc: _Doc, sweep: _Sweep, top: int) -> None:
    doc.heading("Best trials: latent traversals and reconstructions")
    shown = False
    for kind in ("traversal", "reconstruction"):
        picture = plot_best_images(
            sweep.df, sweep.ranked, sweep.plots / f"best_{kind}s.png", kind=kind, top=top
        )
        if picture is not None:
            doc.heading(kind.capitalize() + "s", 3)
            doc.image(picture, f"{kind}s of the best trials")
            shown = True
    if not shown:
        doc.para("(None of the best trials saved traversal.png or reconstruction.png.)")
    _best_gifs(doc, sweep.df, sweep.ranked, sweep.out / "gifs", top=top)


def _write_pages(doc: _Doc, out: Path, name: str) -> Path:
    index = out / "index.md"
    index.write_text("\n".join(doc.md))
    html = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{fmt.html_escape(name)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(doc.html)
        + "\n</body></html>\n"
    )
    (out / "index.html").write_text(html)
    return index


def _best_gifs(doc: _Doc, df: pd.DataFrame, ranked: pd.DataFrame, folder: Path, *,
               top: int) -> None:
    """The animated traversals (`traversal.gif`) of the best trials, copied into `folder`."""
    found = []
    for place, (_, r) in enumerate(ranked.head(top).iterrows(), start=1):
        try:
            adir = run_row(df, r["best_trial"], r.get("best_seed")).get("artifact_dir")
        except AnalysisError:
            continue
        gif = Path(adir) / "traversal.gif" if adir else None
        if gif is not None and gif.is_file():
            found.append((place, r["best_trial"], gif.read_bytes()))
    if not found:
        return
    doc.heading("Animated traversals", 3)
    doc.para("Each frame sets every latent (a column) to the next value from -2 to 2 (or its "
             "data range) on the reference and random images (rows).")
    folder.mkdir(parents=True, exist_ok=True)
    for place, trial, data in found:
        path = folder / f"{place}_{trial}.gif"
        path.write_bytes(data)
        alt = f"#{place}: trial {trial}"
        encoded = base64.b64encode(data).decode("ascii")
        doc.raw(f"![{alt}]({path.relative_to(doc.folder).as_posix()})\n",
                f'<figure><img alt="{fmt.html_escape(alt)}" src="data:image/gif;base64,'
                f'{encoded}"><figcaption>{fmt.html_escape(alt)}</figcaption></figure>')


def _ranked_csv(ranked: pd.DataFrame) -> pd.DataFrame:
    out = ranked.copy()
    out["trial_ids"] = [" ".join(ids) for ids in out["trial_ids"]]
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = [fmt.value(v) if isinstance(v, tuple) else v for v in out[col]]
    floors = floor_csv_rows(ranked)
    return out if floors.empty else pd.concat([out, floors], ignore_index=True)


def _front_rows(
    front: pd.DataFrame, pair: Sequence[str]
) -> tuple[list[str], list[list[str]], list[str]]:
    params = [p for p in front.attrs.get("params", []) if p in front.columns]
    header = ["config", *[param_label(p) for p in params], *[metric_label(m) for m in pair]]
    rows = []
    for _, r in front.sort_values(f"{pair[0]}/mean").iterrows():
        rows.append(
            [
                str(r["config_id"]),
                *[fmt.value(r[p]) for p in params],
                *[
                    fmt.cell(r[f"{m}/mean"], r[f"{m}/std"], int(r[f"{m}/n"]), digits=4)
                    for m in pair
                ],
            ]
        )
    return header, rows, ["l"] * (1 + len(params)) + ["r"] * len(pair)


def _ablation_specs(df: pd.DataFrame, params: Sequence[str]) -> list[list[str]]:
    """One table per searched parameter with few values, plus model x num_ipe if both vary."""
    specs = []
    for p in params:
        levels = {_hashable(v) for v in df[p]}
        if len(levels) <= MAX_ABLATION_LEVELS:
            specs.append([p])
    names = [c for c in ("config/model/name",) if c in params]
    k = [c for c in params if c.rsplit("/", 1)[-1] in ("num_ipe", "n_ipe")]
    if names and k:
        specs.insert(0, names + k[:1])
    return specs

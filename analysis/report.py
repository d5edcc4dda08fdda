"""The sweep report: `report/index.md` and a self-contained `report/index.html`.

`write_report(folder)` reads the sweep, and writes into `<folder>/report/`:
    index.md, index.html      summary, ranked table, Pareto front, ablation tables,
                              importance, metric agreement, plots, best trials' images
    ranked.csv, ranked.md     the full ranked table
    ablation_<param>.{md,tex,csv}
    importance.csv            per metric and parameter: the share, the bootstrap mean and
                              95% interval, the trials (left out below 10 trials)
    metric_correlation.csv    per pair of metrics: Spearman rho, n, 95% interval, shown
    best_config.yaml          the best trial's complete run config (see analysis.export)
    plots/*.png
The HTML page embeds its images (base64), so it can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import datetime as _dt
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis import _format as fmt
from analysis._report_certainty import (
    agreement_section,
    importance_section,
    metrics_vs_params_section,
)
from analysis._report_doc import Doc, Sweep, write_pages
from analysis.ablation import BINS, ablation_table, continuous_params, write_ablation
from analysis.errors import AnalysisError
from analysis.export import ModelFields, export_best
from analysis.importance import (
    default_report_metrics,
)
from analysis.plots import (
    plot_best_images,
    plot_pareto,
)
from analysis.rank import (
    RECONSTRUCTION,
    default_metrics,
    excluded_line,
    floor_csv_rows,
    pareto_metrics,
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

__all__ = ["report_metrics", "write_report"]

MAX_ABLATION_LEVELS = 12
MAX_TABLE_METRICS = 4


def write_report(
    folder: str | Path,
    *,
    by: str | Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    top: int = 3,
    max_rows: int = 25,
    model_fields: ModelFields | None = None,
    importance: pd.DataFrame | None = None,
) -> Path:
    """Write the sweep report into `<folder>/report/`.

    Args:
        folder: the sweep folder.
        by: the ranking metric(s) (default: the sweep's objective, else MIG, ...).
        metrics: the metrics for plots, importance and agreement (default: every `eval/*`
            metric with values, plus the reconstruction term `train/rec`).
        top: how many best configurations get their images shown.
        max_rows: rows of the ranked table shown in the page (ranked.csv has all).
        model_fields: for `best_config.yaml`, as for `analysis.export.best_config`.
        importance: a table from `analysis.importance.bootstrap_importance` (the `mipet-tune`
            commands pass Optuna's fANOVA, `tune.sweep.importance.sweep_importance`); default:
            `importance_intervals`, the random-forest fallback, on `metrics`.
    Returns:
        The path of `report/index.md` (`index.html` lies beside it).
    Raises:
        AnalysisError: when the folder is not a sweep, a metric is unknown, no trial
            finished, or `<folder>/report/` cannot be written (read-only, not a folder). A
            section that cannot be made (too few trials for importance, no saved images) is
            left out with a note instead.
    """
    sweep = _read(folder, by, metrics)
    sweep.importance = importance
    check_report_folder(sweep.root)
    try:  # the write boundary: a read-only or clogged folder is one line, naming the path
        doc = Doc(sweep.out)
        name = (sweep.df.attrs.get("spec") or {}).get("name") or sweep.root.name
        _summary(doc, sweep, name)
        _confirmed(doc, sweep)
        _ranking(doc, sweep, max_rows)
        _best_config(doc, sweep, model_fields)
        _pareto(doc, sweep)
        _ablations(doc, sweep)
        importance_section(doc, sweep)
        agreement_section(doc, sweep)
        metrics_vs_params_section(doc, sweep)
        _best_images(doc, sweep, top)
        index = write_pages(doc, sweep.out, name)
    except OSError as exc:
        raise _unwritable(exc, sweep.out) from None
    log.info("wrote the report of %s to %s", sweep.root, sweep.out)
    return index


def check_report_folder(folder: str | Path) -> Path:
    """Make `<folder>/report/plots/` and write a probe file there, so that a read-only or
    clogged place fails in one line before any of the report's work is done.

    Returns:
        The report folder.
    Raises:
        AnalysisError: naming the path that cannot be written.
    """
    out = Path(folder) / "report"
    try:
        (out / "plots").mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise _unwritable(exc, out) from None
    return out


def _unwritable(exc: OSError, out: Path) -> AnalysisError:
    where = exc.filename or out
    return AnalysisError(f"{where}: cannot write the report ({exc.strerror or exc}); it goes to "
                         f"{out}, which must be a writable folder")


def report_metrics(
    df: pd.DataFrame, by: str | Sequence[str] | None = None, metrics: Sequence[str] | None = None
) -> tuple[list[str], list[str]]:
    """(the ranking metrics, the metrics of the plots, importance and agreement) of a report."""
    primary = resolve_metrics(df, by) if by else default_metrics(df)
    report = resolve_metrics(df, metrics) if metrics else default_report_metrics(df)
    for m in primary:
        if m not in report:
            report.insert(0, m)
    return primary, report


def _read(folder: str | Path, by: str | Sequence[str] | None,
          metrics: Sequence[str] | None) -> Sweep:
    df = load_sweep(folder)
    root = Path(df.attrs["sweep_folder"])
    primary, report = report_metrics(df, by, metrics)
    ranked = rank(df, primary)  # raises when nothing finished
    from analysis.confirm import load_confirmation

    confirmed = load_confirmation(root)
    if confirmed is not None and confirmed.metrics != list(primary):
        confirmed = None  # confirmed by another metric than this report ranks by
    return Sweep(df, root, root / "report", primary, report, ranked, searched_params(df),
                  confirmed=confirmed)


def _summary(doc: Doc, sweep: Sweep, name: str) -> None:
    df = sweep.df
    doc.heading(f"Sweep report: {name}", 1)
    if sweep.confirmed is not None:  # the confirmed verdict first: fresh seeds settle it
        doc.para("Confirmed with fresh seeds: " + sweep.confirmed.verdict.sentence())
        doc.para("Search: " + summary_sentence(sweep.ranked))
    else:
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


def _confirmed(doc: Doc, sweep: Sweep) -> None:
    """The confirmed table (`mipet-tune confirm`), above the search's ranking."""
    from analysis.confirm import confirmed_notes, confirmed_rows

    if sweep.confirmed is None:
        return
    doc.heading("Confirmed")
    doc.para(sweep.confirmed.verdict.sentence())
    doc.table(*confirmed_rows(sweep.confirmed))
    for line in confirmed_notes(sweep.confirmed):
        doc.para(line)


def _ranking(doc: Doc, sweep: Sweep, max_rows: int) -> None:
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


def _best_config(doc: Doc, sweep: Sweep, model_fields: ModelFields | None) -> None:
    best_path = export_best(sweep.df, sweep.out, by=sweep.primary, model_fields=model_fields)
    if sweep.confirmed is not None:
        top = sweep.confirmed.table.iloc[0]
        doc.para(f"Best configuration, confirmed: {top['label']} (seeds "
                 f"{', '.join(str(s) for s in top['seeds'])}), exported to {best_path.name}; "
                 f"rerun it with `mipet-tune train --config {best_path.name}`.")
        return
    best = sweep.ranked.iloc[0]
    doc.para(
        f"Best configuration: {best['config_id']} (trial {best['best_trial']}, seed "
        f"{best['best_seed']}), exported to {best_path.name}; rerun it with "
        f"`mipet-tune train --config {best_path.name}`."
    )


def _pareto(doc: Doc, sweep: Sweep) -> None:
    """Disentanglement against the reconstruction term (or the first two ranking metrics)."""
    df = sweep.df
    pair = pareto_metrics(df, sweep.primary)
    if not pair:
        return
    doc.heading("Pareto front")
    try:
        both = rank(df, pair)
        path = plot_pareto(both, sweep.plots / "pareto.png")
        front = both[both["pareto_front"] == 1]
        doc.para(
            f"{len(front)} of {len(both)} configurations are not beaten on both "
            f"{pair[0]} and {pair[1]} (seed means)."
            + (" The second objective is the reconstruction term, not the total loss: that "
               "weighs its other terms by beta, so it does not compare across trials."
               if pair[1] in RECONSTRUCTION else "")
        )
        doc.table(*_front_rows(front, pair))
        doc.image(path, "Pareto front")
    except AnalysisError as exc:
        doc.para(f"(No Pareto front: {exc}.)")


def _ablations(doc: Doc, sweep: Sweep) -> None:
    primary = sweep.primary
    table_metrics = [m for m in sweep.metrics if m in primary] + [
        m for m in sweep.metrics if m not in primary
    ][: max(0, MAX_TABLE_METRICS - len(primary))]
    ablations = _ablation_specs(sweep.df, sweep.params)
    if ablations:
        doc.heading("Ablation tables")
        doc.para(
            "Cells: mean ± std (number of trials) over every finished trial with that "
            f"setting; the best of each column in bold. A continuous parameter is split into "
            f"up to {BINS} quantile bins, labelled by their range. LaTeX (booktabs) and CSV "
            "versions lie beside this page."
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


def _best_images(doc: Doc, sweep: Sweep, top: int) -> None:
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


def _best_gifs(doc: Doc, df: pd.DataFrame, ranked: pd.DataFrame, folder: Path, *,
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
    """One table per searched parameter with few values or a continuous range (binned), plus
    model x num_ipe if both vary."""
    specs = []
    binned = set(continuous_params(df, params, bins=BINS))
    for p in params:
        levels = {_hashable(v) for v in df[p]}
        if p in binned or len(levels) <= MAX_ABLATION_LEVELS:
            specs.append([p])
    names = [c for c in ("config/model/name",) if c in params]
    k = [c for c in params if c.rsplit("/", 1)[-1] in ("num_ipe", "n_ipe")]
    if names and k:
        specs.insert(0, names + k[:1])
    return specs

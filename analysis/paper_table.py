"""The paper's results table from an ablation run: one block per dataset, a row per model with its
MIPET version under it, mean ± std over seeds per metric, the better of each pair in bold, and the
untrained models' noise floor as the last row of each block.

    >>> folder = "runs/paper_table"
    >>> t = paper_table(load_sweep(folder), load_floor(folder))  # doctest: +SKIP
    >>> print(t.to_markdown()); print(t.to_latex())             # doctest: +SKIP

A cell that is not clearly above its own model's noise floor (`analysis.floor.FLOOR_RULE`) carries
a dagger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from analysis import _format as fmt
from analysis.errors import AnalysisError
from analysis.floor import floor_summary, floor_verdicts, load_floor

MODEL_ORDER = ("beta_vae", "mipet_vae", "betatcvae", "mipet_betatcvae", "commutative",
               "mipet_commutative")
MODEL_LABELS = {"beta_vae": "β-VAE", "mipet_vae": "MIPET-β-VAE", "betatcvae": "β-TCVAE",
                "mipet_betatcvae": "MIPET-β-TCVAE", "commutative": "CLG-VAE",
                "mipet_commutative": "MIPET-CLG-VAE"}
LATEX_MODEL_LABELS = {k: v.replace("β", r"$\beta$") for k, v in MODEL_LABELS.items()}
BASE_OF = {"mipet_vae": "beta_vae", "mipet_betatcvae": "betatcvae",
           "mipet_commutative": "commutative"}
DATASET_LABELS = {"dsprites": "dSprites", "shapes3d": "3D Shapes", "cars3d": "Cars3D"}
METRIC_LABELS = {"eval/factor_vae": "FactorVAE", "eval/mig": "MIG", "eval/sap": "SAP",
                 "eval/dci_disentanglement": "DCI"}
DEFAULT_METRICS = tuple(METRIC_LABELS)
FLOOR_LABEL = "noise floor"
DAGGER = "†"
FILES = ("paper_table.md", "paper_table.tex")
CAPTION = ("Disentanglement scores (mean ± std over seeds); bold: the better of each pair; "
           "† not clearly above the noise floor.")


@dataclass(frozen=True)
class PaperTable:
    """Cells of the paper's table: `cells[(dataset, model)][metric] = (mean, std, n, above)`
    and `floors[dataset][metric]` = the highest floor among the dataset's models."""

    datasets: tuple[str, ...]
    models: dict[str, tuple[str, ...]]
    metrics: tuple[str, ...]
    cells: dict[tuple[str, str], dict[str, tuple[float, float, int, bool]]]
    floors: dict[str, dict[str, float]]

    def _text(self, dataset: str, model: str, metric: str) -> tuple[str, bool, bool]:
        """(number text, is the better of its pair, is clearly above its floor)."""
        mean, std, n, above = self.cells[(dataset, model)][metric]
        if n == 0 or not math.isfinite(mean):
            return fmt.DASH, False, True
        text = f"{mean:.3f}" + (f" ± {std:.3f}" if n > 1 and math.isfinite(std) else "")
        other = BASE_OF.get(model) or next((m for m, b in BASE_OF.items() if b == model), None)
        best = False
        if other is not None and (dataset, other) in self.cells:
            theirs = self.cells[(dataset, other)][metric][0]
            best = math.isfinite(theirs) and mean > theirs
        return text, best, above

    def _rows(self, bold, dagger, label) -> list[list[str]]:
        rows = []
        for dataset in self.datasets:
            name = DATASET_LABELS.get(dataset, dataset)
            for i, model in enumerate(self.models[dataset]):
                cells = [name if i == 0 else "", label(model)]
                for m in self.metrics:
                    text, best, above = self._text(dataset, model, m)
                    text = bold(text) if best else text
                    cells.append(text if above else dagger(text))
                rows.append(cells)
            floor = self.floors.get(dataset, {})
            rows.append(["", label(None)] + [
                fmt.DASH if not math.isfinite(floor.get(m, math.nan)) else f"{floor[m]:.3f}"
                for m in self.metrics])
        return rows

    def header(self) -> list[str]:
        return ["Dataset", "Model"] + [METRIC_LABELS.get(m, m.split("/", 1)[-1])
                                       for m in self.metrics]

    def to_markdown(self) -> str:
        rows = self._rows(lambda s: f"**{s}**", lambda s: f"{s} {DAGGER}",
                          lambda m: f"*{FLOOR_LABEL}*" if m is None else MODEL_LABELS.get(m, m))
        note = (f"\nMean ± std over seeds. Bold: the better of a model and its MIPET version. "
                f"{DAGGER}: not clearly above the noise floor (at least 2x the untrained model "
                f"and more than 2 seed standard deviations above it). {FLOOR_LABEL}: the "
                f"untrained models (the highest of the dataset's models).\n")
        return fmt.markdown_table(self.header(), rows,
                                  ["l", "l"] + ["r"] * len(self.metrics)) + note

    def to_latex(self, *, caption: str | None = None, label: str | None = "tab:mipet") -> str:
        """A booktabs `table` (needs `\\usepackage{booktabs}`)."""
        def esc(s: str) -> str:
            return fmt.latex_escape(s).replace(DAGGER, r"$^\dagger$")

        rows = self._rows(lambda s: "\x00" + s, lambda s: s + "\x01",
                          lambda m: "\x02" if m is None else "\x03" + m)
        lines = [r"\begin{table}[t]", r"\centering"]
        lines.append(rf"\caption{{{esc(caption or CAPTION)}}}")
        if label:
            lines.append(rf"\label{{{label}}}")
        lines += [r"\begin{tabular}{ll" + "r" * len(self.metrics) + "}", r"\toprule",
                  " & ".join(esc(h) for h in self.header()) + r" \\", r"\midrule"]
        for i, row in enumerate(rows):
            out = []
            for c in row:
                if c == "\x02":
                    out.append(rf"\textit{{{FLOOR_LABEL}}}")
                elif c.startswith("\x03"):
                    out.append(LATEX_MODEL_LABELS.get(c[1:], esc(c[1:])))
                else:
                    dag = c.endswith("\x01")
                    body = c.strip("\x00\x01")
                    body = rf"\textbf{{{esc(body)}}}" if c.startswith("\x00") else esc(body)
                    out.append(body + (r"$^\dagger$" if dag else ""))
            lines.append(" & ".join(out) + r" \\")
            if row[1] == "\x02" and i < len(rows) - 1:
                lines.append(r"\midrule")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        return "\n".join(lines) + "\n"


def paper_table(df: pd.DataFrame, floor: pd.DataFrame | None = None, *,
                metrics: Sequence[str] = DEFAULT_METRICS) -> PaperTable:
    """The paper's table from a trials table (one configuration per model and dataset).

    Raises:
        AnalysisError: no usable trials, or two configurations for one model and dataset.
    """
    stats = floor_verdicts(df, floor, list(metrics))
    if stats.empty:
        raise AnalysisError("no finished trial to put in the paper table")
    metrics = tuple(m for m in metrics if f"{m}/mean" in stats.columns)
    keys = ["config/data/name", "config/model/name"]
    twice = stats[stats.duplicated(keys, keep=False)]
    if not twice.empty:
        d, m = twice.iloc[0][keys]
        raise AnalysisError(f"the paper table takes one configuration per model and dataset; "
                            f"{m} on {d} has {int((stats[keys] == [d, m]).all(axis=1).sum())}")
    order = {m: i for i, m in enumerate(MODEL_ORDER)}
    datasets = tuple(sorted(stats["config/data/name"].unique(),
                            key=lambda d: (list(DATASET_LABELS).index(d)
                                           if d in DATASET_LABELS else 99, d)))
    models, cells = {}, {}
    for d in datasets:
        here = stats[stats["config/data/name"] == d]
        models[d] = tuple(sorted(here["config/model/name"], key=lambda m: (order.get(m, 99), m)))
        for _, r in here.iterrows():
            cells[(d, r["config/model/name"])] = {
                m: (float(r[f"{m}/mean"]), float(r[f"{m}/std"]), int(r[f"{m}/n"]),
                    bool(r[f"{m}/above_floor"]) or pd.isna(r[f"{m}/floor"]))  # no floor: no mark
                for m in metrics}
    floors: dict[str, dict[str, float]] = {}
    if floor is not None:
        summary = floor_summary(floor, metrics)
        for d in datasets:
            here = summary[summary["config/data/name"] == d]
            floors[d] = {m: float(here[f"{m}/mean"].max()) for m in metrics
                         if f"{m}/mean" in here.columns and not here.empty}
    return PaperTable(datasets, models, metrics, cells, floors)


def write_paper_table(folder: str | Path, df: pd.DataFrame,
                      metrics: Sequence[str] = DEFAULT_METRICS) -> PaperTable:
    """Write `<folder>/report/paper_table.md` and `.tex` (the floor from `floor.parquet`)."""
    table = paper_table(df, load_floor(folder), metrics=metrics)
    report = Path(folder) / "report"
    report.mkdir(parents=True, exist_ok=True)
    (report / FILES[0]).write_text(table.to_markdown())
    (report / FILES[1]).write_text(table.to_latex())
    return table

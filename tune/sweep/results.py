"""A finished sweep's results: `analysis` computes the ranking, the report and the best
configuration; this module validates what it exports as a RunConfig (analysis picks the row;
tune owns the config) and names the files it wrote. The driver calls `analyse_sweep` after
`fit()`; `mipet-tune rank | export | report` call the rest. It imports no Ray.

The exported `best_config.yaml` holds only the model fields its model reads: analysis knows no
model, so this module hands it `models.used_fields` (torch-free) to ask."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from models import used_fields
from models.errors import ConfigError
from tune.config.run import RunConfig, read_yaml

log = logging.getLogger(__name__)

BEST_CONFIG = "best_config.yaml"


def _sweep(folder: Path) -> Path:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such sweep folder")
    return folder.resolve()


def rank_text(folder: Path, *, by: Sequence[str] | None = None, top: int | None = 20) -> str:
    """The ranked table; a finished confirmation (`mipet-tune confirm`) by the same metric
    comes first, with its verdict."""
    from analysis import rank_table
    from analysis.confirm import confirmed_markdown, load_confirmation

    ranked, text = rank_table(_sweep(folder), by=by, top=top)
    confirmed = load_confirmation(_sweep(folder))
    if confirmed is None or confirmed.metrics != list(ranked.attrs["by"]):
        return text
    return f"{confirmed_markdown(confirmed)}\nSearch: {text}"


def export(folder: Path, *, to: str | Path | None = None, by: Sequence[str] | None = None) -> Path:
    """Write the best configuration (the run config, model fields its model reads only, +
    metrics + provenance) and check that `mipet-tune train --config` will accept it."""
    from analysis import export_best, load_sweep

    folder = _sweep(folder)
    target = Path(to) if to is not None else folder / "report" / BEST_CONFIG
    path = export_best(load_sweep(folder), target, by=by, sweep_folder=folder,
                       model_fields=used_fields)
    try:
        RunConfig.from_dict(read_yaml(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: the exported config does not validate: {exc}") from exc
    return path


def report(folder: Path, *, by: Sequence[str] | None = None) -> Path:
    from analysis import write_report
    from analysis.report import check_report_folder
    from tune.sweep.importance import report_importance  # Optuna's fANOVA, for the report

    folder = _sweep(folder)
    check_report_folder(folder)  # before the importance's minute of work, not after it
    return write_report(folder, by=by, model_fields=used_fields,
                        importance=report_importance(folder, by=by))


def ablation_text(folder: Path, *, rows=None, columns=None, metrics=None, fmt: str = "md") -> str:
    from analysis import ablation_text as text

    return text(_sweep(folder), rows=rows or None, columns=columns or None,
                metrics=metrics or None, fmt={"latex": "tex"}.get(fmt, fmt))


def analyse_sweep(folder: Path, *, by: Sequence[str] | None = None) -> tuple[str, Path | None]:
    """After a sweep: the ranked table (text), the report and the best config written.

    A sweep in which no trial finished still leaves its folder; the text then says so."""
    from analysis import AnalysisError

    folder = _sweep(folder)
    try:
        text = rank_text(folder, by=by, top=20)
    except AnalysisError as exc:
        return f"no ranking: {exc}", None
    best = export(folder, by=by)
    try:
        index = report(folder, by=by)
        text += f"\n\nreport: {index} (and index.html beside it)"
    except Exception as exc:  # a plot failing must not hide the ranked table and best config
        log.warning("the report could not be written: %s", exc)
    return text, best

"""Export the best configuration of a sweep as a complete, rerunnable run config.

`best_config.yaml` holds the `config/...` fields of the chosen trial, unflattened into
`{model: {...}, data: {...}, train: {...}, eval: {...}, seed: N}` (fields a conditional
parameter left out of that trial are dropped, so the defaults apply), plus two blocks that
`mipet-tune train --config` ignores: `metrics:` (what it reached) and `provenance:`.

Given `model_fields` (the caller's answer to "which fields does this model read?"; tune passes
`models.used_fields`), the `model:` block keeps only those: a beta-TCVAE's file then carries no
capacity, DIP or InfoVAE knob, and loading it fills them with their defaults. analysis knows no
model, so without it every model field is written.

The chosen trial is the `best_trial` of the top configuration of `rank(df, by=...)`: the seed
with the best value of the first ranking metric; its seed is exported with it, so rerunning
it reproduces that trial.
"""

from __future__ import annotations

import ast
import datetime as _dt
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis._files import atomic_write
from analysis.columns import _is_missing, config_columns, run_row
from analysis.errors import AnalysisError
from analysis.rank import rank

log = logging.getLogger(__name__)

__all__ = ["best_config", "export_best", "run_config_of"]

PACKAGE = "mipet-tune"
FILENAME = "best_config.yaml"

#: `model_fields(name, loss_terms)`: the model fields that model `name`, with those objectives
#: stacked, reads (`models.used_fields` has this shape).
ModelFields = Callable[[str, Sequence[str]], Iterable[str]]


def _package_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def _integral_columns(df: pd.DataFrame) -> set[str]:
    """Float config columns whose every present value is a whole number (e.g. an int field
    made float by NaN in trials without it)."""
    out = set()
    for col in config_columns(df) + (["config/seed"] if "config/seed" in df.columns else []):
        values = [v for v in df[col] if not _is_missing(v)]
        if values and all(
            isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, bool)
            and float(v).is_integer()
            for v in values
        ):
            out.add(col)
    return out


def _plain(value: Any, integral: bool) -> Any:
    """A YAML-safe Python value: numpy scalars unwrapped, tuples and arrays as lists."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v, False) for v in value]
    if isinstance(value, str):
        text = value.strip()
        if len(text) >= 2 and (text[0], text[-1]) in (("[", "]"), ("(", ")")):
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return value
            if isinstance(parsed, (list, tuple)):
                return [_plain(v, False) for v in parsed]
        return value
    if isinstance(value, float) and integral and value.is_integer():
        return int(value)
    return value


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        parts = path.split("/")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise AnalysisError(f"config column {path!r} clashes with a value at {part!r}")
        node[parts[-1]] = value
    return out


def _finite(x: Any) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def best_config(
    df: pd.DataFrame,
    *,
    by: str | Sequence[str] | None = None,
    sweep_folder: str | Path | None = None,
    model_fields: ModelFields | None = None,
) -> dict[str, Any]:
    """The best trial's run config with `metrics` and `provenance` blocks.

    Args:
        df: trials from `load_sweep`.
        by: the ranking metric(s), as for `rank` (default: the sweep's objective).
        sweep_folder: recorded in the provenance (default: `df.attrs["sweep_folder"]`).
        model_fields: which model fields to keep, asked with the trial's model name and
            `loss_terms` (`models.used_fields`); None keeps every one.
    Returns:
        A nested dict: `model`, `data`, `train`, `eval` (each field of the trial, with the
        fields absent from it dropped, and with `model_fields` the model fields its model does
        not read), `seed`, `metrics`, `provenance`.
    Raises:
        AnalysisError: as `rank` does, or when the table has no `config/...` columns.
    """
    if not any(c.startswith("config/") for c in df.columns):
        raise AnalysisError("the trials table has no config/... columns; nothing to export")
    folder = sweep_folder if sweep_folder is not None else df.attrs.get("sweep_folder")
    confirmed = _confirmation(df, by, folder)
    if confirmed is not None:  # the confirmed winner, with its metrics over the fresh seeds
        return _confirmed_config(df, confirmed, folder, model_fields)
    ranked = rank(df, by)
    top = ranked.iloc[0]
    row = run_row(df, top["best_trial"], top["best_seed"])
    ordered = _run_config(df, row)
    if model_fields is not None and isinstance(ordered.get("model"), dict):
        ordered["model"] = _read_fields(ordered["model"], model_fields)
    ordered["metrics"] = _metrics_block(df, row, ranked)
    ordered["provenance"] = _provenance(df, row, folder, ordered.get("seed"))
    return ordered


def run_config_of(df: pd.DataFrame, row: pd.Series) -> dict[str, Any]:
    """The run config of one row of a trials table as a nested dict (`config/*` columns
    unflattened; fields absent from the run dropped, so their defaults apply)."""
    return _run_config(df, row)


def _confirmation(df: pd.DataFrame, by: str | Sequence[str] | None, folder: Any):
    """The sweep's finished confirmation (`analysis.confirm`) when `by` is its metric (or
    None), else None."""
    from analysis.columns import resolve_metrics
    from analysis.confirm import load_confirmation

    conf = load_confirmation(folder)
    if conf is None or by is None or not len(by):
        return conf
    return conf if resolve_metrics(df, [by] if isinstance(by, str) else by) == conf.metrics \
        else None


def _confirmed_config(df: pd.DataFrame, conf: Any, folder: Any,
                      model_fields: ModelFields | None) -> dict[str, Any]:
    """`best_config` for a confirmed sweep: the confirmed winner's run (its best fresh seed)."""
    from analysis.trials import direction, usable_trials

    top = conf.table.iloc[0]
    first = conf.metrics[0]
    runs, _ = usable_trials(conf.runs)
    runs = runs[runs["config_id"] == top["config_id"]]
    if runs.empty:
        raise AnalysisError(f"the confirmation has no finished run of {top['config_id']}")
    key = runs[first].astype(float) * (-1.0 if direction(first) == "max" else 1.0)
    row = runs.assign(_key=key).sort_values(["_key", "seed"], kind="mergesort").iloc[0]
    runs = conf.runs.copy()
    runs.attrs = dict(df.attrs)
    ordered = _run_config(runs, row)
    if model_fields is not None and isinstance(ordered.get("model"), dict):
        ordered["model"] = _read_fields(ordered["model"], model_fields)
    over_seeds = {m: {"mean": _finite(top[f"{m}/mean"]), "std": _finite(top[f"{m}/std"]),
                      "n": int(top[f"{m}/n"]),
                      "ci95": [_finite(top[f"{m}/ci_low"]), _finite(top[f"{m}/ci_high"])],
                      "values": [float(v) for v in top[f"{m}/values"]], **_floor_block(top, m)}
                  for m in conf.metrics}
    ordered["metrics"] = {
        "confirmed": True,
        "verdict": conf.verdict.sentence(),
        "ranked_by": list(conf.metrics),
        "direction": {m: direction(m) for m in conf.metrics},
        "protocol": conf.plan.get("protocol"),
        "confirm_rank": 1,
        "of_configurations": len(conf.table),
        "search_rank": None if _is_missing(top["search_rank"]) else int(top["search_rank"]),
        "seeds": [int(s) for s in top["seeds"]],
        "trial": {c: _finite(row[c]) for c in runs.columns
                  if c.startswith(("eval/", "train/")) and _finite(row[c]) is not None},
        "over_seeds": over_seeds,
        "noise_floor": "computed" if conf.floor else "not computed for this protocol",
        "against": [{"config_id": str(r["config_id"]), "welch_p": _finite(r["p_value"]),
                     "holm_p": _finite(r["p_holm"]), "separable": bool(r["separable"])}
                    for _, r in conf.table.iloc[1:].iterrows()],
    }
    ordered["provenance"] = _provenance(runs, row, folder, ordered.get("seed"))
    if folder is not None:
        ordered["provenance"]["confirmation"] = str(Path(folder) / "confirm")
    return ordered


def _run_config(df: pd.DataFrame, row: pd.Series) -> dict[str, Any]:
    """The run's config as a nested dict: the sections first, anything else, then the seed."""
    integral = _integral_columns(df)
    flat = {}
    for col in [c for c in df.columns if c.startswith("config/")]:
        value = row[col]
        if _is_missing(value):
            continue
        flat[col[len("config/") :]] = _plain(value, col in integral)
    config = _unflatten(flat)
    if "seed" not in config and not _is_missing(row.get("seed")):
        config["seed"] = int(row["seed"])
    sections = [k for k in ("model", "data", "train", "eval") if k in config]
    ordered: dict[str, Any] = {k: config.pop(k) for k in sections}
    seed = config.pop("seed", None)
    ordered.update(config)  # anything else the table carries
    if seed is not None:
        ordered["seed"] = seed
    return ordered


def _read_fields(model: dict[str, Any], model_fields: ModelFields) -> dict[str, Any]:
    """The model block without the fields its model does not read (in the block's order)."""
    if "name" not in model:
        return model  # no model name in the table: nothing to ask
    terms = model.get("loss_terms") or []
    keep = set(model_fields(str(model["name"]), [terms] if isinstance(terms, str) else terms))
    return {k: v for k, v in model.items() if k == "name" or k in keep}


def _metrics_block(df: pd.DataFrame, row: pd.Series, ranked: pd.DataFrame) -> dict[str, Any]:
    """The run's own final numbers, and its configuration's seed statistics and rank."""
    top = ranked.iloc[0]
    metrics_trial = {
        c: _finite(row[c])
        for c in df.columns
        if c.startswith(("eval/", "train/")) and _finite(row[c]) is not None
    }
    over_seeds = {}
    for m in ranked.attrs["by"]:
        over_seeds[m] = {
            "mean": _finite(top[f"{m}/mean"]),
            "std": _finite(top[f"{m}/std"]),
            "n": int(top[f"{m}/n"]),
            "ci95": [_finite(top[f"{m}/ci_low"]), _finite(top[f"{m}/ci_high"])],
            **_floor_block(top, m),
        }
    verdict = ranked.attrs.get("seed_verdict")
    return {
        "ranked_by": list(ranked.attrs["by"]),
        "direction": dict(ranked.attrs["directions"]),
        "rank": int(top["rank"]),
        "of_configurations": len(ranked),
        "trial": metrics_trial,
        "over_seeds": over_seeds,
        "noise_floor": "computed" if ranked.attrs.get("floor") is not None else (
            "not computed (no floor.parquet in the sweep)"),
        "against_second": None if verdict is None or verdict.second is None else {
            "config_id": verdict.second, "verdict": verdict.verdict,
            "welch_p": _finite(verdict.p_value)},
    }


def _floor_block(top: pd.Series, m: str) -> dict[str, Any]:
    """The configuration's noise floor for `m`: its mean and spread, the margin (times the
    floor) and whether it is clearly above (`analysis.floor.FLOOR_RULE`); None where unknown."""
    floor = _finite(top.get(f"{m}/floor"))
    return {
        "floor": floor,
        "floor_std": _finite(top.get(f"{m}/floor_std")) if floor is not None else None,
        "margin": _finite(top.get(f"{m}/margin")) if floor is not None else None,
        "above_floor": bool(top[f"{m}/above_floor"]) if floor is not None else None,
    }


def _provenance(df: pd.DataFrame, row: pd.Series, folder: Any, seed: Any) -> dict[str, Any]:
    """Where the run came from: sweep, trial, configuration, package, data, export time."""
    spec = df.attrs.get("spec") or {}
    dataset = row.get("config/data/name")
    provenance: dict[str, Any] = {
        "sweep": str(folder) if folder is not None else None,
        "sweep_name": spec.get("name"),
        "trial_id": str(row["trial_id"]),
        "config_id": str(row["config_id"]),
        "seed": seed,
        "package": PACKAGE,
        "package_version": _package_version(),
        "dataset": None if _is_missing(dataset) else _plain(dataset, False),
    }
    for col in ("data_checksum", "data/checksum", "config/data/checksum"):
        if col in df.columns and not _is_missing(row[col]):
            provenance["data_checksum"] = str(row[col])
            break
    for col in ("trial_dir", "checkpoint_path"):
        if col in df.columns and not _is_missing(row[col]):
            provenance[col] = str(row[col])
    provenance["exported_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return provenance


def export_best(
    df: pd.DataFrame,
    path: str | Path,
    *,
    by: str | Sequence[str] | None = None,
    sweep_folder: str | Path | None = None,
    model_fields: ModelFields | None = None,
) -> Path:
    """Write `best_config(df, by=..., model_fields=...)` as YAML.

    Args:
        df: trials from `load_sweep`.
        path: the YAML file, or an existing folder (then `<folder>/best_config.yaml`).
        by: the ranking metric(s).
        sweep_folder: recorded in the provenance.
        model_fields: as for `best_config`.
    Returns:
        The file written (atomically: a temporary file renamed into place).
    Raises:
        AnalysisError: as `best_config`, or when the file cannot be written.
    """
    import yaml  # pyyaml, a dependency of the distribution

    doc = best_config(df, by=by, sweep_folder=sweep_folder, model_fields=model_fields)
    out = Path(path)
    if out.is_dir():
        out = out / FILENAME
    name = doc["provenance"].get("sweep_name")
    text = (
        f"# Best configuration{f' of sweep {name}' if name else ''}, exported by mipet-tune.\n"
        f"# Rerun: mipet-tune train --config {out.name}  "
        "(the metrics and provenance blocks are ignored)\n"
        + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True)
    )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, lambda fh: fh.write(text), mode="w")
    except OSError as exc:
        raise AnalysisError(f"{out}: cannot write the best config ({exc.strerror})") from exc
    log.info(
        "exported trial %s (config %s) to %s",
        doc["provenance"]["trial_id"],
        doc["provenance"]["config_id"],
        out,
    )
    return out

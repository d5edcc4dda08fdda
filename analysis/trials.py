"""The trials table, defined once: its columns, the row builder, metric directions, and which
runs count as finished and finite.

A sweep folder's `trials.parquet` has one row per run, i.e. per trial and seed (a Ray trial may
train several seeds of its configuration in turn). The sweep engine (`tune.sweep.driver`) builds
those rows from Ray's results with `trial_rows`; `analysis.sweep.load_sweep` builds the same rows
with the same function from Ray's result files when a killed sweep left no parquet.

Column families:
    trial_id, status, failed, nonfinite, error, config_id, seed, step, time_total_s, node,
    checkpoint_path, trial_dir, artifact_dir, ...   (`RUN_COLUMNS`)
    config/<section>/<field>   every run-config field (config/seed too)
    eval/<metric>              final disentanglement metrics (float, NaN when missing)
    train/<term>               final training losses (float, lower is better)
    fast/<metric>              intermediate metrics (only in a table rebuilt from `ray/`)
    final/<metric>             a later final evaluation (`mipet-tune evaluate`, analysis.final)
Derived when a table is read (`mark_usable`): `stopped` (a finished trial that ran fewer steps
than `config/train/steps`, as an early-stopping scheduler leaves it) and `usable` (finished, not
failed, finite, not stopped).

`config_id` is the trial's own: the trial computes it from its `RunConfig` and reports it;
readers take the reported one. Only a trial that never reported gets `cfg-<hash of the config
Ray holds>`, the same in both builders.

`flatten` and `config_hash` live here, not in `tune`, because analysis imports nothing of ours
and both sides need them: `tune` imports them from here (where `tune.config` needs them, inside
the function, so that reading a config costs no pandas).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Set
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.errors import AnalysisError
from analysis.metrics.registry import direction_of, registered

log = logging.getLogger(__name__)

__all__ = [
    "FINISHED",
    "HIGHER_IS_BETTER",
    "LOWER_IS_BETTER",
    "METRIC_PREFIXES",
    "RUN_COLUMNS",
    "config_hash",
    "direction",
    "error_line",
    "flatten",
    "mark_usable",
    "trial_rows",
    "usable_trials",
]


class _DirectionKeys(Set):
    """The result keys of one direction, read from the registry on each use."""

    def __init__(self, way: str) -> None:
        self._way = way

    def _keys(self) -> frozenset[str]:
        return frozenset(k for m in registered() for k, d in m.keys.items() if d == self._way)

    def __contains__(self, key: object) -> bool:
        return key in self._keys()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._keys()))

    def __len__(self) -> int:
        return len(self._keys())


#: Result keys where a larger / smaller value is better, as the metric registry
#: (`analysis.metrics.registry`) says: live views, so a registered metric is in them. Every
#: `train/*` column is a loss (lower is better).
HIGHER_IS_BETTER = _DirectionKeys("max")
LOWER_IS_BETTER = _DirectionKeys("min")
#: The prefixes of metric columns: final metrics, losses, intermediate (fast) metrics, and the
#: metrics of a later final evaluation (`mipet-tune evaluate`: `analysis.final`).
METRIC_PREFIXES = ("eval/", "train/", "fast/", "final/")
#: The per-run columns besides `config/*` and the metrics.
RUN_COLUMNS = (
    "trial_id", "status", "failed", "nonfinite", "error", "config_id", "seed", "step",
    "time_total_s", "images_per_s", "node", "checkpoint_path", "trial_dir", "artifact_dir",
)
#: The status of a run that ended normally.
FINISHED = "TERMINATED"
#: Words of an error that mean the run's numbers stopped being finite.
NONFINITE_WORDS = re.compile(r"non-?finite|NonFiniteLossError|\bnan\b|\binf\b", re.IGNORECASE)
_FINAL_PREFIXES = ("eval/", "train/")


# ---- metric directions -----------------------------------------------------------------------
def direction(column: str) -> str:
    """Whether a metric column is maximised or minimised.

    Args:
        column: a full column name such as `eval/mig`, `fast/mig`, `final/mig` or
            `train/recon`.
    Returns:
        `"max"` or `"min"`: the direction the metric registry gives the key; `train/*` (losses)
        are `"min"`.
    Raises:
        AnalysisError: for a column that is not a metric (`eval/`, `fast/`, `final/`,
            `train/`), or an `eval/`/`fast/`/`final/` key that no registered metric returns (no
            silent default).
    """
    if column.startswith("train/"):
        return "min"
    for prefix in ("eval/", "fast/", "final/"):
        if column.startswith(prefix):
            way = direction_of(column[len(prefix) :])
            if way is None:
                raise AnalysisError(
                    f"{column!r}: no registered metric returns {column[len(prefix):]!r}, so "
                    "its direction is unknown; register the metric (analysis.metrics.register)"
                )
            return way
    raise AnalysisError(
        f"{column!r} is not a metric column (eval/*, fast/*, final/* or train/*)")


# ---- configs as columns ----------------------------------------------------------------------
def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"model": {"beta": 4}}` -> `{"model/beta": 4}`: a nested config as "/"-paths.

    The one flattening of configs: run-config paths (`tune.config`), `config/*` columns here.
    """
    out: dict[str, Any] = {}
    for key, value in d.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, path + "/"))
        else:
            out[path] = value
    return out


def config_hash(config: Mapping[str, Any]) -> str:
    """A short hash of a config without its `seed` (what `RunConfig.config_id` returns for the
    run config's dict: the seeds of one configuration share it)."""
    d = {k: v for k, v in config.items() if k != "seed"}
    blob = json.dumps(d, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


def _cell(value: Any) -> Any:
    """Config values as parquet cells: tuples become lists (a list column), so an exported
    config writes them back as YAML lists."""
    return list(value) if isinstance(value, tuple) else value


# ---- finite numbers and errors ---------------------------------------------------------------
def _has_nonfinite(records: Iterable[Mapping[str, Any]]) -> bool:
    """A final metric or loss reported as NaN/inf (the trainer raises instead; older runs
    reported it)."""
    return any(
        isinstance(v, float) and not math.isfinite(v)
        for r in records
        for k, v in r.items()
        if k.startswith(_FINAL_PREFIXES)
    )


def error_line(error: Any) -> str | None:
    """The line of an error (a traceback, an exception) that says what went wrong."""
    if error is None:
        return None
    text = str(error).strip().splitlines()
    for line in reversed(text):
        if "Error" in line or "error" in line:
            return line.strip()[:500]
    return text[-1][:500] if text else repr(error)


# ---- the row builder -------------------------------------------------------------------------
def trial_rows(
    *,
    trial_id: str,
    config: Mapping[str, Any],
    reports: list[Mapping[str, Any]],
    error: Any = None,
    resolved: Mapping[str, Any] | None = None,
    over: bool = False,
    checkpoint_path: str | None = None,
    trial_dir: str | None = None,
    sweep_dir: Path | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The rows of one Ray trial: one per seed it trained (or started).

    Args:
        trial_id: Ray's trial id.
        config: the trial's config as Ray holds it (`params.json`).
        reports: the trial's reports, oldest first (all of `result.json`, or only the last).
        error: the trial's error (a traceback or an exception), or None.
        resolved: the full run config (`RunConfig.to_dict()`) for the `config/*` columns, when
            the caller can build it; default: `config`.
        over: the trial has ended (after `fit()`): its last seed finished unless it failed,
            even without final metrics (an early-stopping scheduler ends trials so).
        checkpoint_path, trial_dir: where Ray keeps the trial.
        sweep_dir: the sweep folder, whose `trials/<trial_id>[/seed_<n>]` hold a seed's
            artifacts when its report does not name them.
        extra: more columns, the same in every row (the data checksum).
    Returns:
        The rows, in seed order. Status: ERROR for the seed running when the error came;
        TERMINATED for a seed with final metrics (or a last report saying `done`, or `over`);
        RUNNING for one cut off by a kill; PENDING for a trial without reports.
    """
    last = reports[-1] if reports else {}
    reported_id = next((r["config_id"] for r in reversed(reports) if r.get("config_id")), None)
    common: dict[str, Any] = {
        "trial_id": str(trial_id),
        "config_id": reported_id or "cfg-" + config_hash(config),
        "time_total_s": last.get("time_total_s"),
        "node": last.get("node_ip"),
        "checkpoint_path": checkpoint_path,
        "trial_dir": trial_dir,
        **(extra or {}),
    }
    common.update({f"config/{k}": _cell(v) for k, v in flatten(resolved or config).items()})
    groups = _seed_groups(reports, (resolved or config).get("seed"), over=over)
    rows = []
    for i, (seed, values, finished, bad) in enumerate(groups):
        err = error if i == len(groups) - 1 else None
        row = dict(common)
        row.update(_run_status(err, finished, bool(values), bad))
        row["seed"] = seed
        if seed is not None:
            row["config/seed"] = seed
        iteration = values.pop("training_iteration", None)
        row.update({k: v for k, v in values.items() if k != "node" or v})
        row["step"] = values.get("step", iteration)
        row["artifact_dir"] = values.get("artifact_dir") or _artifact_dir(
            sweep_dir, str(trial_id), seed
        )
        rows.append(row)
    return rows


def _seed_groups(
    reports: list[Mapping[str, Any]], config_seed: Any, *, over: bool
) -> list[tuple[Any, dict[str, Any], bool, bool]]:
    """(seed, final values, finished, non-finite) per seed, in training order.

    A finished trial's last report carries `seed_results` (a JSON list, one row per seed);
    otherwise the reports are grouped by their `seed` key, each keeping its latest values.
    """
    last = reports[-1] if reports else {}
    seed_results = last.get("seed_results")
    if isinstance(seed_results, str):
        try:
            seed_results = json.loads(seed_results)
        except json.JSONDecodeError:
            seed_results = None
    if isinstance(seed_results, list) and seed_results:
        recs = [r for r in seed_results if isinstance(r, dict)]
        return [(r.get("seed"), dict(r), True, _has_nonfinite([r])) for r in recs]
    by_seed: dict[Any, list[Mapping[str, Any]]] = {}
    for rec in reports:
        by_seed.setdefault(rec.get("seed", config_seed), []).append(rec)
    groups = []
    for n, (seed, recs) in enumerate(by_seed.items(), 1):
        values = _run_values(recs)
        finished = (
            any(k.startswith("eval/") for r in recs for k in r)
            or bool(recs[-1].get("done"))
            or (over and n == len(by_seed))
        )
        groups.append((seed, values, finished, _has_nonfinite(recs)))
    return groups or [(config_seed, {}, over, False)]


def _run_values(records: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The latest value of each metric of a seed's reports, with its step and throughput."""
    keep = ("step", "training_iteration", "images_per_s", "artifact_dir")
    values: dict[str, Any] = {}
    for rec in records:
        values.update((k, v) for k, v in rec.items() if k.startswith(METRIC_PREFIXES) or k in keep)
    return values


def _run_status(error: Any, finished: bool, reported: bool, bad: bool) -> dict[str, Any]:
    if error is not None:
        status = "ERROR"
    elif finished:
        status = FINISHED
    else:
        status = "RUNNING" if reported else "PENDING"
    nonfinite = bad or bool(error is not None and NONFINITE_WORDS.search(str(error)))
    return {
        "status": status,
        "failed": error is not None or nonfinite,
        "nonfinite": nonfinite,
        "error": error_line(error),
    }


def _artifact_dir(sweep_dir: Path | None, trial_id: str, seed: Any) -> str | None:
    if sweep_dir is None:
        return None
    base = Path(sweep_dir) / "trials" / trial_id
    for candidate in (base / f"seed_{seed}", base):
        if candidate.is_dir():
            return str(candidate)
    return None


# ---- finished and finite ---------------------------------------------------------------------
def mark_usable(df: pd.DataFrame) -> pd.DataFrame:
    """Set the flags of a typed table in place: `failed` (errors and non-finite runs too),
    `stopped` (finished before `config/train/steps`) and `usable` (finished, not failed,
    finite, not stopped). Returns `df`."""
    df.loc[df["status"] == "ERROR", "failed"] = True
    df.loc[df["nonfinite"], "failed"] = True
    steps_cfg = "config/train/steps"
    if "step" in df.columns and steps_cfg in df.columns:
        planned = pd.to_numeric(df[steps_cfg], errors="coerce")
        ran = df["step"].astype(float)
        df["stopped"] = (
            (df["status"] == FINISHED) & ~df["failed"] & (ran < planned).fillna(False)
        ).astype(bool)
    else:
        df["stopped"] = False
    usable = (df["status"] == FINISHED) & ~df["failed"] & ~df["nonfinite"] & ~df["stopped"]
    df["usable"] = usable.astype(bool)
    return df


def usable_trials(
    df: pd.DataFrame, *, include_stopped: bool = False
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The finished, healthy trials, and how many of each other kind were left out.

    Returns:
        (rows, excluded) where `excluded` counts `failed`, `nonfinite`, `unfinished` (status
        not TERMINATED) and `stopped` (ended early by a scheduler; kept if `include_stopped`).
        A trial is counted once, under the first reason in that order.
    """
    def flag(name: str) -> pd.Series:
        if name not in df.columns:
            return pd.Series(False, index=df.index)
        return df[name].fillna(False).astype(bool)

    status = df["status"] if "status" in df.columns else pd.Series(FINISHED, index=df.index)
    nonfinite = flag("nonfinite")
    failed = (flag("failed") | (status == "ERROR")) & ~nonfinite
    unfinished = ~(failed | nonfinite) & (status != FINISHED)
    stopped = ~(failed | nonfinite | unfinished) & flag("stopped")
    excluded = {
        "failed": int(failed.sum()),
        "nonfinite": int(nonfinite.sum()),
        "unfinished": int(unfinished.sum()),
        "stopped": 0 if include_stopped else int(stopped.sum()),
    }
    keep = ~(failed | nonfinite | unfinished)
    if not include_stopped:
        keep &= ~stopped
    return df[keep], excluded

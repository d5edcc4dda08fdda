"""Reconciliation: make a sweep's Optuna study agree with Ray Tune's trials table after `fit()`.

A restored sweep leaves the study behind the truth in known ways (`searcher.py` lists them):
RUNNING trials no Tune trial accounts for (asked after Tune's last snapshot, lost with the
driver), RUNNING trials whose Tune trial errored, and Tune trials with a value whose Optuna record
is FAIL or missing (resumed or restarted after an error). `reconcile_study` fixes each through
the storage, by appending, so a dashboard following the journal sees the fixes as they are made.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.trials import flatten
from search_spaces import same_value
from tune.errors import ConfigError
from tune.sweep.study import RAY_TRIAL_ID_ATTR, StudyStorage, make_study_storage

__all__ = [
    "ReconcileReport",
    "eval_attrs",
    "eval_attrs_from_results",
    "fail_trial",
    "outcomes_from_results",
    "reconcile_study",
]

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    """What `reconcile_study` changed, by Optuna trial number.

    Attributes:
        failed_orphans: RUNNING trials no Tune trial accounts for, now FAIL.
        failed_errored: RUNNING trials whose Tune trial errored, now FAIL.
        added: new COMPLETE trials recording a Tune trial whose value Optuna missed (a trial
            resumed or restarted after an error), by Tune trial id.
        unmatched: Tune trial ids with a value that could not be recorded (no parameters known).
    """

    failed_orphans: list[int] = field(default_factory=list)
    failed_errored: list[int] = field(default_factory=list)
    added: dict[str, int] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.failed_orphans or self.failed_errored or self.added)


def reconcile_study(
    storage: Any,
    study_name: str | None = None,
    outcomes: Mapping[str, tuple[Any, Mapping[str, Any] | None]] | None = None,
    *,
    keep_running: Sequence[str] = (),
    attrs: Mapping[str, Mapping[str, Any]] | None = None,
) -> ReconcileReport:
    """Make an Optuna study agree with Ray Tune's trials table.

    Call it after `fit()` with `outcomes` from `outcomes_from_results`, or before a resumed
    `fit()` with `outcomes=None` and `keep_running` = the Tune trial ids that will run again.

    - A RUNNING Optuna trial is marked FAIL unless its `ray_trial_id` is in `keep_running`, or
      `outcomes` holds a value for it (then it is told COMPLETE with that value).
    - A Tune trial with a value whose newest Optuna record is FAIL or missing (resumed or
      restarted after an error) gets a new COMPLETE trial with the same parameters and the
      `ray_trial_id` and `supersedes` user attributes, so TPE learns the value.
    - A Tune trial without a value (errored) leaves its Optuna trial FAIL.

    Everything is appended through the storage (a journal is never rewritten), so a dashboard
    that follows the journal sees the fixes as they are made.

    Args:
        storage: an `optuna.storages.BaseStorage`, a storage URL, a `StudyStorage`, or a sweep
            folder holding the `optuna_study.json` record of `make_study_storage`.
        study_name: the study to fix; None takes the folder's (or the `StudyStorage`'s) study.
        outcomes: Tune trial id -> (values, config): values a float, a list of floats
            (multi-objective) or None (the trial errored or never reported the metric); config the
            trial's config (nested or "/"-flattened), used to find the parameters of a trial the
            searcher never suggested.
        keep_running: Tune trial ids whose RUNNING Optuna trials must stay RUNNING.
        attrs: Tune trial id -> user attributes (its `eval/*` numbers, `eval_attrs_from_results`)
            for the trials this call completes or adds.

    Returns:
        A `ReconcileReport`.
    """
    study = _open_study(storage, study_name)
    report = ReconcileReport()
    outcomes = dict(outcomes or {})
    attrs = dict(attrs or {})
    trials = study.get_trials(deepcopy=False)
    _settle_running(study, trials, outcomes, set(keep_running), attrs, report)
    _record_missed_values(study, trials, outcomes, attrs, report)
    if report.changed or report.unmatched:
        log.info(
            "reconciled Optuna study %s: %d orphan(s) and %d errored trial(s) marked FAIL, "
            "%d value(s) recorded, %d unmatched",
            study.study_name,
            len(report.failed_orphans),
            len(report.failed_errored),
            len(report.added),
            len(report.unmatched),
        )
    return report


def _open_study(storage: Any, study_name: str | None) -> Any:
    """`optuna.load_study` for what `reconcile_study` accepts as a storage."""
    import optuna

    if isinstance(storage, (str, os.PathLike)) and Path(storage).is_dir():
        storage = make_study_storage(storage)
    if isinstance(storage, StudyStorage):
        study_name = study_name or storage.study_name
        storage = storage.storage
    if study_name is None:
        raise ConfigError("reconcile_study: give study_name, or a sweep folder or StudyStorage")
    return optuna.load_study(study_name=study_name, storage=storage)


def _settle_running(study: Any, trials: Sequence[Any], outcomes: Mapping[str, Any],
                    keep: set[str], attrs: Mapping[str, Mapping[str, Any]],
                    report: ReconcileReport) -> None:
    """Step 1: each RUNNING trial is told COMPLETE with its Tune value, or marked FAIL."""
    from optuna.trial import TrialState

    for frozen in trials:
        if frozen.state != TrialState.RUNNING:
            continue
        ray_id = frozen.user_attrs.get(RAY_TRIAL_ID_ATTR)
        if ray_id in keep:
            continue
        values = outcomes.get(ray_id, (None, None))[0] if ray_id is not None else None
        if values is not None:
            try:
                for key, value in attrs.get(ray_id, {}).items():
                    study._storage.set_trial_user_attr(frozen._trial_id, key, value)
                study.tell(frozen.number, values, state=TrialState.COMPLETE)
                continue
            except Exception as exc:
                log.warning("trial #%d: could not tell %s: %s", frozen.number, values, exc)
        if ray_id is not None and ray_id in outcomes:
            fail_trial(study, frozen, "the Tune trial errored or reported no value")
            report.failed_errored.append(frozen.number)
        else:
            fail_trial(study, frozen, "no Tune trial accounts for it (lost with the driver)")
            report.failed_orphans.append(frozen.number)


def _record_missed_values(study: Any, trials: Sequence[Any], outcomes: Mapping[str, Any],
                          attrs: Mapping[str, Mapping[str, Any]],
                          report: ReconcileReport) -> None:
    """Step 2: a Tune value whose newest Optuna record is FAIL or missing becomes a new trial."""
    from optuna.trial import TrialState, create_trial

    newest: dict[str, Any] = {}
    for frozen in trials:  # trials come in number order, so the last one wins
        ray_id = frozen.user_attrs.get(RAY_TRIAL_ID_ATTR)
        if ray_id is not None:
            newest[ray_id] = frozen
    for ray_id, (values, config) in outcomes.items():
        if values is None:
            continue
        frozen = newest.get(ray_id)
        if frozen is not None and frozen.state != TrialState.FAIL:
            continue  # COMPLETE or PRUNED already, or just told in step 1
        source = frozen if frozen is not None else _trial_with_params_of(config, trials)
        if source is None:
            report.unmatched.append(ray_id)
            continue
        value_list = list(values) if isinstance(values, (list, tuple)) else [float(values)]
        try:
            study.add_trial(create_trial(
                state=TrialState.COMPLETE,
                values=value_list,
                params=dict(source.params),
                distributions=dict(source.distributions),
                user_attrs={**attrs.get(ray_id, {}), RAY_TRIAL_ID_ATTR: ray_id,
                            "supersedes": source.number},
            ))
        except Exception as exc:
            log.warning("could not record Tune trial %s in Optuna: %s", ray_id, exc)
            report.unmatched.append(ray_id)
            continue
        report.added[ray_id] = len(study.get_trials(deepcopy=False)) - 1


def _trial_with_params_of(config: Mapping[str, Any] | None, trials: Sequence[Any]) -> Any:
    """The newest trial whose parameters all appear, with the same values, in `config`."""
    if not config:
        return None
    flat = flatten(config)
    for cand in reversed(trials):
        if cand.params and all(k in flat and same_value(flat[k], v)
                               for k, v in cand.params.items()):
            return cand
    return None


def eval_attrs_from_results(results: Any) -> dict[str, dict[str, Any]]:
    """Tune trial id -> the `eval/*` numbers of its last result, for `reconcile_study(attrs=)`."""
    out: dict[str, dict[str, Any]] = {}
    for result in results:
        metrics = result.metrics or {}
        if metrics.get("trial_id") is not None:
            out[metrics["trial_id"]] = eval_attrs(metrics)
    return out


def outcomes_from_results(
    results: Any, metric: str | Sequence[str]
) -> dict[str, tuple[Any, dict[str, Any] | None]]:
    """Tune trial id -> (values, config) from a `ResultGrid`, for `reconcile_study`.

    A trial that errored, or whose last result lacks a metric or holds a non-finite one, maps to
    `(None, config)`.

    Args:
        results: a `ray.tune.ResultGrid` (iterable of `Result`).
        metric: the objective name, or names for a multi-objective study.
    """
    names = [metric] if isinstance(metric, str) else list(metric)
    out: dict[str, tuple[Any, dict[str, Any] | None]] = {}
    for result in results:
        metrics = result.metrics or {}
        ray_id = metrics.get("trial_id")
        if ray_id is None:
            continue
        values: Any = None
        if result.error is None:
            picked = [metrics.get(n) for n in names]
            try:
                floats = [float(v) for v in picked]  # type: ignore[arg-type]
            except (TypeError, ValueError):
                floats = []
            if floats and all(math.isfinite(v) for v in floats):
                values = floats[0] if isinstance(metric, str) else floats
        out[ray_id] = (values, result.config)
    return out


def eval_attrs(result: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `eval/*` numbers of a result, as JSON-safe user attributes (a non-finite one as text,
    "nan" or "inf", which the journal and the dashboard both show)."""
    out: dict[str, Any] = {}
    for key, value in (result or {}).items():
        if not key.startswith("eval/") or isinstance(value, bool):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        out[key] = number if math.isfinite(number) else str(number)
    return out


def fail_trial(study: Any, frozen: Any, reason: str) -> None:
    """Mark a RUNNING Optuna trial FAIL with a `fail_reason` user attribute."""
    from optuna.trial import TrialState

    try:
        study._storage.set_trial_user_attr(frozen._trial_id, "fail_reason", reason)
    except Exception:  # the attribute is a courtesy
        pass
    try:
        study.tell(frozen.number, None, state=TrialState.FAIL, skip_if_finished=True)
    except Exception as exc:
        log.warning("could not mark Optuna trial #%d FAIL: %s", frozen.number, exc)

"""Optuna search that survives Ray Tune restores: `SafeOptunaSearch`.

Ray Tune 2.60's `OptunaSearch` crashes `Tuner.fit()` after `Tuner.restore` in two measured cases:

1. `restart_errored=True`: the restarted trial gets a new trial id the searcher never suggested,
   and `on_trial_result` raises `KeyError`.
2. A persistent Optuna storage is ahead of Tune's last experiment snapshot: a trial Tune resumes
   is already finished in the study, and `on_trial_result` raises `UpdateFinishedTrialError`.

`SafeOptunaSearch` skips trial ids it does not know, never re-tells a finished Optuna trial, and
on restore marks as FAIL the Optuna trials that were asked after Tune's last snapshot (they died
with the driver and Tune will never report them). `reconcile_study` (`reconcile.py`) then makes
the study agree with Tune's final trials table. Every Optuna trial it creates carries the user
attribute `ray_trial_id`, the link between the two.

The class must stay at module level: `tuner.pkl` stores the searcher class by reference.

The rest of the study's life is in modules of its own, re-exported here: where the study lives
(`study.py`: `make_study_storage`, `StudyStorage`), its append-only journal for optuna-dashboard
(`journal.py`: `sync_journal`, with the design and the alternatives rejected) and the
reconciliation (`reconcile.py`). Only this module imports Ray.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from tune.errors import ConfigError
from tune.sweep.journal import sync_journal
from tune.sweep.reconcile import (
    ReconcileReport,
    eval_attrs,
    eval_attrs_from_results,
    fail_trial,
    outcomes_from_results,
    reconcile_study,
)
from tune.sweep.study import RAY_TRIAL_ID_ATTR, StudyStorage, make_study_storage

__all__ = [
    "RAY_TRIAL_ID_ATTR",
    "SafeOptunaSearch",
    "ReconcileReport",
    "StudyStorage",
    "make_study_storage",
    "reconcile_study",
    "outcomes_from_results",
    "sync_journal",
    "eval_attrs_from_results",
    "relocate_mirror",
    "bounded_tpe_sampler",
]

log = logging.getLogger(__name__)

_MIRROR_OVERRIDE: str | None = None


def relocate_mirror(path: str | os.PathLike[str] | None) -> None:
    """Make searchers restored in this process write their study to `path`.

    A restored `SafeOptunaSearch` keeps the mirror path it was created with; call this before
    `Tuner.restore(...).fit()` when the sweep folder has moved since (None undoes it).
    """
    global _MIRROR_OVERRIDE
    _MIRROR_OVERRIDE = None if path is None else str(Path(path).resolve())


def _is_finished_error(exc: Exception) -> bool:
    """True for Optuna's ways of saying "this trial is already finished"."""
    import optuna

    if isinstance(exc, optuna.exceptions.UpdateFinishedTrialError):
        return True
    return isinstance(exc, ValueError) and str(exc).startswith("Cannot tell a ")


class SafeOptunaSearch(OptunaSearch):
    """`OptunaSearch` whose bookkeeping cannot crash `Tuner.fit()` after a restore.

    Same constructor as `ray.tune.search.optuna.OptunaSearch`. Differences:

    - `suggest` tags the Optuna trial with the user attribute `ray_trial_id`.
    - `on_trial_result` / `on_trial_complete` ignore trial ids this searcher never suggested
      (a trial restarted after a restore), results without the metric, and Optuna trials that are
      already finished in the storage (the storage was ahead of Tune's snapshot).
    - An errored Tune trial is told FAIL even when its last result carried the metric (the base
      class tells it COMPLETE with a partial value).
    - `restore` marks RUNNING Optuna trials that no restored Tune trial knows as FAIL, and
      remembers which known trials the storage has already finished. Nothing in it may raise.
    - The study names its objectives (`study.set_metric_names`), and a completed trial carries
      every `eval/*` number of its last result as a user attribute (what optuna-dashboard shows
      next to the objective values).

    Extra keyword `mirror_path` (recommended; see `make_study_storage`): keep the study in memory,
    so that it is pickled with every Tune experiment snapshot and restored exactly as consistent
    with Tune's trials as the snapshot is, and bring the journal file `mirror_path` to it at each
    snapshot by appending (`sync_journal`), for optuna-dashboard and `reconcile_study`. With
    `storage=` instead, Optuna writes through at once and a restore finds the study ahead of
    Tune's snapshot: trials asked or finished after the snapshot stay in the study as FAIL or as
    COMPLETE trials no Tune trial accounts for.
    """

    def __init__(self, *args: Any, mirror_path: str | os.PathLike[str] | None = None, **kw: Any):
        if mirror_path is not None and kw.get("storage") is not None:
            raise ConfigError("SafeOptunaSearch: give either storage= or mirror_path=, not both")
        self._mirror_path = None if mirror_path is None else str(Path(mirror_path).resolve())
        super().__init__(*args, **kw)

    def _setup_study(self, mode: str | list[str]) -> None:
        super()._setup_study(mode)
        names = self._metric if isinstance(self._metric, list) else [self._metric]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # set_metric_names is "experimental"
                self._ot_study.set_metric_names([str(n) for n in names])
        except Exception as exc:  # the names are a courtesy for the dashboard
            log.debug("could not name the study's objectives %s: %s", names, exc)

    # --------------------------------------------------------------------------------- mirror
    def save(self, checkpoint_path: str) -> None:
        super().save(checkpoint_path)
        if getattr(self, "_mirror_path", None) and self._ot_study is not None:
            try:
                sync_journal(self._ot_study, self._mirror_path)
            except Exception as exc:  # a full disk must not crash fit(); the snapshot matters more
                log.warning("could not write the Optuna study to %s: %s", self._mirror_path, exc)

    # --------------------------------------------------------------------------------- suggest
    def suggest(self, trial_id: str) -> dict | None:
        params = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            try:
                ot_trial.set_user_attr(RAY_TRIAL_ID_ATTR, trial_id)
            except Exception as exc:  # a finished trial cannot take attributes; harmless
                log.debug("could not tag Optuna trial for %s: %s", trial_id, exc)
        return params

    # --------------------------------------------------------------------------------- results
    def _skip(self, trial_id: str, what: str) -> bool:
        """Whether an event for `trial_id` must be ignored (and log why, once per trial)."""
        if trial_id in self._completed_trials:
            log.debug("ignoring %s for trial %s: its Optuna trial is finished", what, trial_id)
            return True
        if trial_id not in self._ot_trials:
            seen = self.__dict__.setdefault("_unknown_logged", set())
            if trial_id not in seen:
                seen.add(trial_id)
                log.warning(
                    "trial %s was not suggested by this searcher (restarted after a restore?); "
                    "its results are not told to Optuna during the run (reconcile_study adds "
                    "them afterwards)",
                    trial_id,
                )
            return True
        return False

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, list) or self._skip(trial_id, "a result"):
            return
        value = result.get(self.metric)
        step = result.get("training_iteration")
        if value is None or step is None:
            return
        try:
            value = float(value)
        except (TypeError, ValueError):
            return
        if not math.isfinite(value):
            return
        try:
            self._ot_trials[trial_id].report(value, int(step))
        except Exception as exc:
            if _is_finished_error(exc):
                log.info(
                    "trial %s: Optuna already finished it (storage ahead of Tune's snapshot); "
                    "not reporting further results",
                    trial_id,
                )
                self._completed_trials.add(trial_id)
            else:
                log.warning("trial %s: could not report to Optuna: %s", trial_id, exc)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if self._skip(trial_id, "a completion"):
            return
        from optuna.trial import TrialState

        ot_trial = self._ot_trials[trial_id]
        for key, value in eval_attrs(result).items():
            try:
                ot_trial.set_user_attr(key, value)
            except Exception as exc:  # finished in the storage already: told below, skipped
                log.debug("trial %s: could not record %s: %s", trial_id, key, exc)
                break
        values = None if error else _values_of(result, self.metric)
        if error:
            state = TrialState.FAIL
        elif values is None:
            state = TrialState.PRUNED
        else:
            state = TrialState.COMPLETE
        try:
            self._ot_study.tell(ot_trial, values, state=state, skip_if_finished=True)
        except Exception as exc:
            if _is_finished_error(exc):
                log.debug("trial %s: Optuna trial already finished", trial_id)
            elif isinstance(exc, ValueError) and state is TrialState.COMPLETE:
                # For example a non-finite value: record the trial as failed instead.
                log.warning(
                    "trial %s: Optuna refused %s (%s); telling FAIL", trial_id, values, exc
                )
                try:
                    self._ot_study.tell(ot_trial, None, state=TrialState.FAIL)
                except Exception as exc2:  # pragma: no cover - defensive
                    log.warning("trial %s: could not tell FAIL either: %s", trial_id, exc2)
            else:
                log.warning("trial %s: could not tell Optuna: %s", trial_id, exc)
        self._completed_trials.add(trial_id)

    # --------------------------------------------------------------------------------- restore
    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        if _MIRROR_OVERRIDE is not None:
            self._mirror_path = _MIRROR_OVERRIDE
        try:
            self._sync_after_restore()
        except Exception as exc:  # never let a restore crash fit()
            log.warning("could not reconcile the Optuna study after the restore: %s", exc)

    def _sync_after_restore(self) -> None:
        from optuna.trial import TrialState

        study = self._ot_study
        if study is None:
            return
        storage = study._storage
        known_ids = {}
        for ray_id, ot_trial in self._ot_trials.items():
            known_ids[ot_trial._trial_id] = ray_id
        finished_known = 0
        orphans = []
        for frozen in storage.get_all_trials(study._study_id, deepcopy=False):
            ray_id = known_ids.get(frozen._trial_id)
            if ray_id is not None:
                if frozen.state.is_finished() and ray_id not in self._completed_trials:
                    self._completed_trials.add(ray_id)
                    finished_known += 1
            elif frozen.state == TrialState.RUNNING:
                orphans.append(frozen)
        for frozen in orphans:
            fail_trial(
                study,
                frozen,
                "asked after Tune's last experiment snapshot; lost with the driver",
            )
        if orphans or finished_known:
            log.info(
                "Optuna study after restore: %d orphan RUNNING trial(s) marked FAIL (%s), "
                "%d trial(s) Tune will resume are already finished in the study",
                len(orphans),
                ", ".join(f"#{t.number}" for t in orphans) or "none",
                finished_known,
            )


def bounded_tpe_sampler(max_history: int, **kwargs: Any) -> Any:
    """An Optuna `TPESampler` (same keyword arguments) that models at most `max_history`
    finished trials: the best of the whole study (as many as TPE's "good" set at that size,
    a tenth and at most 25), the rest spread evenly over the study's history (the newest
    included), and every running trial (constant liar). Not the most recent ones only: those
    crowd the best region, and TPE, which compares the good trials with the others, then moves
    away from it.

    TPE's cost per suggestion grows with the finished trials (its Parzen estimators have one
    kernel per trial, built again for each conditional parameter): measured with Optuna 5.0 on
    the `paper` space with 400 trials running (`benchmarks/scale.py --suggest-curve`, 2 shared
    cores), 81 ms at 1,000 finished trials and 940 ms at 10,000; bounded, it stays at the cost
    of `max_history` trials. It learns less per trial than TPE on the whole history (on a
    1-D test, 16 of the last 40 of 120 trials within 0.1 of the optimum with a history of 40,
    against 35 with all and 9 at random), so give it a history in the thousands.
    """
    return _BoundedTPESampler(max_history, **kwargs)


def _bounded(trials: list[Any], max_history: int, maximize: bool | None) -> list[Any]:
    from optuna.trial import TrialState

    finished = [t for t in trials if t.state != TrialState.RUNNING]
    if len(finished) <= max_history:
        return trials
    running = [t for t in trials if t.state == TrialState.RUNNING]
    n_best = min(math.ceil(0.1 * max_history), 25)  # TPE's own "good" set at this size
    best: list[Any] = []
    if maximize is not None:
        valued = [t for t in finished if t.values is not None]
        valued.sort(key=lambda t: t.values[0], reverse=maximize)
        best = valued[:n_best]
    keep = {t.number for t in best}
    rest = [t for t in finished if t.number not in keep]
    k = max_history - len(best)
    step = len(rest) / k  # evenly spaced over the history, ending with the newest trial
    spread = [rest[len(rest) - 1 - int(i * step)] for i in range(k)]
    return sorted(best + spread, key=lambda t: t.number) + running


class _StudyWindow:
    """A study whose `_get_trials` returns the bounded history (`_bounded`); the rest passes
    through to the study."""

    def __init__(self, study: Any, max_history: int) -> None:
        self._study = study
        self._max_history = max_history

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, *args: Any, **kwargs: Any) -> list[Any]:
        from optuna.study import StudyDirection

        trials = self._study._get_trials(*args, **kwargs)
        directions = self._study.directions
        maximize = (directions[0] == StudyDirection.MAXIMIZE) if len(directions) == 1 else None
        return _bounded(list(trials), self._max_history, maximize)


def _tpe_class() -> type:
    from optuna.samplers import TPESampler

    return TPESampler


class _BoundedTPESampler(_tpe_class()):  # type: ignore[misc]
    """See `bounded_tpe_sampler`. Module-level: it is pickled with the searcher."""

    def __init__(self, max_history: int, **kwargs: Any) -> None:
        if max_history < 1:
            raise ConfigError(f"sampler.max_history must be >= 1, got {max_history}")
        super().__init__(**kwargs)
        self._max_history = int(max_history)

    def _sample(self, study: Any, trial: Any, search_space: Any) -> Any:
        return super()._sample(_StudyWindow(study, self._max_history), trial, search_space)


def _values_of(result: Mapping[str, Any] | None, metric: str | list[str] | None) -> Any:
    """The objective value(s) in `result`, or None when any is missing or not a number."""
    if not result or metric is None:
        return None
    names = metric if isinstance(metric, list) else [metric]
    out = []
    for name in names:
        value = result.get(name)
        if value is None:
            return None
        try:
            out.append(float(value))
        except (TypeError, ValueError):
            return None
    return out if isinstance(metric, list) else out[0]

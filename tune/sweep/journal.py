"""The study journal: an append-only copy of the searcher's in-memory study, for the dashboard.

The study journal (`optuna.journal`, what optuna-dashboard follows) is append-only. Optuna's
journal readers (optuna-dashboard, any `JournalStorage` kept open) remember the byte offset of
each line they have read, so a journal rewritten in place fails them with `JSONDecodeError`.
Design, in mirror mode (what the sweep driver uses):

- The study the searcher works on lives in memory and is pickled with each Tune experiment
  snapshot; that pickle, not the journal, is what a restore starts from, so a killed and resumed
  sweep's study agrees with Tune's trials table exactly as the snapshot does.
- At each snapshot, `sync_journal` brings the journal to that study by appending: new trials
  whole, then what changed in unfinished ones (params, intermediate values, attributes, state).
  Journal and pickle so hold the same trials; trials asked after the last snapshot die with the
  driver without ever reaching the journal.
- `reconcile_study` (`reconcile.py`) appends its fixes to the same journal after `fit()`.

Rejected: appending as each trial event happens (the journal would run ahead of the snapshot,
and trials lost with a killed driver would stay in it, as FAIL, beside the resumed sweep's), and
a second, snapshot-consistent file (the dashboard and the resumed study would disagree).
Measured (tests/test_dashboard_live.py with `-s`, a 4-trial sweep on 2 shared cores): a reader
polling every 50 ms saw each trial finished 0.1-3.1 s after the trial did, optuna-dashboard's
API 2.5-3.4 s after (it caches trials for 2 s). `python benchmarks/journal_sync.py`: a sync with
nothing new takes 0.5 ms at 100 trials and 4.5 ms at 1000; one new trial 5-19 ms; each appended
line is one lock and one fsync.

A damaged journal is refused when first opened (`study.open_journal`).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tune.sweep.study import RAY_TRIAL_ID_ATTR, open_journal

MIRROR_KEY_ATTR = "mipet:mirror_of"
"""System attribute on each journal trial `sync_journal` wrote: the id of the trial it copies in
the searcher's in-memory study."""

_JOURNALS: dict[tuple[str, int], Any] = {}


def _journal(path: str | os.PathLike[str]) -> Any:
    """This process's `JournalStorage` on the file `path`, kept open: it reads only new lines.

    Raises:
        DataFileError: the journal is damaged (checked once, when it is first opened).
    """
    text = str(Path(path).resolve())
    if not os.path.exists(text):
        open(text, "ab").close()
    key = (text, os.stat(text).st_ino)  # a file replaced under the same name is a new journal
    if key not in _JOURNALS:
        _JOURNALS[key] = open_journal(text)
    return _JOURNALS[key]


def sync_journal(study: Any, path: str | os.PathLike[str]) -> int:
    """Bring the study in the journal file `path` to the state of `study`, by appending only.

    The file is never rewritten: Optuna's journal readers (optuna-dashboard, a `JournalStorage`
    kept open) remember the byte offset of every line they have read. Each trial of `study` is
    matched with the journal trial that copies it (system attribute `mipet:mirror_of`, and the
    same `ray_trial_id`); a missing one is created whole, an unfinished one gets what changed
    (params, intermediate values, attributes, state). A finished journal trial is left as it is.
    An unfinished journal trial that no trial of `study` accounts for (the journal was ahead of
    the restored study) is marked FAIL. Trials written by others (`reconcile_study`) are left
    alone. Every append goes through Optuna's journal lock.

    Returns:
        The number of trials of `study`.
    """
    storage = _journal(path)
    study_id = _journal_study(storage, study)
    copies: dict[Any, list[Any]] = {}
    for frozen in storage.get_all_trials(study_id, deepcopy=False):
        if MIRROR_KEY_ATTR in frozen.system_attrs:
            copies.setdefault(frozen.system_attrs[MIRROR_KEY_ATTR], []).append(frozen)
    matched: set[int] = set()
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        target = _copy_of(trial, copies.get(trial._trial_id, ()), matched)
        if target is None:
            template = copy.copy(trial)
            template.system_attrs = {**trial.system_attrs, MIRROR_KEY_ATTR: trial._trial_id}
            storage.create_new_trial(study_id, template_trial=template)
            continue
        matched.add(target._trial_id)
        if not target.state.is_finished():
            _update_copy(storage, target, trial)
    for group in copies.values():
        for frozen in group:
            if frozen._trial_id not in matched and not frozen.state.is_finished():
                _fail_copy(storage, frozen._trial_id, "the searcher's study, restored from "
                           "Tune's snapshot, does not hold it (lost with the driver)")
    return len(trials)


def _journal_study(storage: Any, study: Any) -> int:
    """The id of `study`'s namesake in the journal (created if missing), its attributes synced."""
    try:
        study_id = storage.get_study_id_from_name(study.study_name)
    except KeyError:
        study_id = storage.create_new_study(study.directions, study.study_name)
    source, source_id = study._storage, study._study_id
    for wanted, have, put in (
        (source.get_study_system_attrs(source_id), storage.get_study_system_attrs(study_id),
         storage.set_study_system_attr),
        (source.get_study_user_attrs(source_id), storage.get_study_user_attrs(study_id),
         storage.set_study_user_attr),
    ):
        for key, value in wanted.items():
            if key not in have or not _equal(have[key], value):
                put(study_id, key, value)
    return study_id


def _copy_of(trial: Any, candidates: Sequence[Any], matched: set[int]) -> Any:
    """The journal trial among `candidates` that copies `trial`, or None."""
    ray_id = trial.user_attrs.get(RAY_TRIAL_ID_ATTR)
    for frozen in candidates:
        other = frozen.user_attrs.get(RAY_TRIAL_ID_ATTR)
        if frozen._trial_id not in matched and other in (None, ray_id):
            return frozen
    return None


def _update_copy(storage: Any, target: Any, trial: Any) -> None:
    """Append to the unfinished journal trial `target` what `trial` has and it lacks."""
    from optuna.trial import TrialState

    tid = target._trial_id
    for name, value in trial.params.items():
        if name not in target.params:
            dist = trial.distributions[name]
            storage.set_trial_param(tid, name, dist.to_internal_repr(value), dist)
    for step, value in trial.intermediate_values.items():
        if step not in target.intermediate_values or not _equal(
            target.intermediate_values[step], value
        ):
            storage.set_trial_intermediate_value(tid, step, value)
    for have, wanted, put in (
        (target.user_attrs, trial.user_attrs, storage.set_trial_user_attr),
        (target.system_attrs, trial.system_attrs, storage.set_trial_system_attr),
    ):
        for key, value in wanted.items():
            if key != MIRROR_KEY_ATTR and (key not in have or not _equal(have[key], value)):
                put(tid, key, value)
    if trial.state != target.state:
        if trial.state.is_finished():
            storage.set_trial_state_values(tid, trial.state, trial.values)
        elif trial.state == TrialState.RUNNING:
            storage.set_trial_state_values(tid, TrialState.RUNNING)


def _fail_copy(storage: Any, trial_id: int, reason: str) -> None:
    from optuna.trial import TrialState

    storage.set_trial_user_attr(trial_id, "fail_reason", reason)
    storage.set_trial_state_values(trial_id, TrialState.FAIL)


def _equal(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN (so a NaN attribute is not appended at every sync)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


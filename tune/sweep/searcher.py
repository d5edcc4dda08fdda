"""Optuna search that survives Ray Tune restores, and the study storage of a sweep.

Ray Tune 2.60's `OptunaSearch` crashes `Tuner.fit()` after `Tuner.restore` in two measured cases
(`shared/notes/ray-optuna.md` sections 2 and 7):

1. `restart_errored=True`: the restarted trial gets a new trial id the searcher never suggested,
   and `on_trial_result` raises `KeyError`.
2. A persistent Optuna storage is ahead of Tune's last experiment snapshot: a trial Tune resumes
   is already finished in the study, and `on_trial_result` raises `UpdateFinishedTrialError`.

`SafeOptunaSearch` skips trial ids it does not know, never re-tells a finished Optuna trial, and
on restore marks as FAIL the Optuna trials that were asked after Tune's last snapshot (they died
with the driver and Tune will never report them). `reconcile_study` then makes the study agree
with Tune's final trials table. Every Optuna trial it creates carries the user attribute
`ray_trial_id`, the link between the two.

The class must stay at module level: `tuner.pkl` stores the searcher class by reference.

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
- `reconcile_study` appends its fixes to the same journal after `fit()`.

Rejected: appending as each trial event happens (the journal would run ahead of the snapshot,
and trials lost with a killed driver would stay in it, as FAIL, beside the resumed sweep's), and
a second, snapshot-consistent file (the dashboard and the resumed study would disagree).
Measured (tests/test_dashboard_live.py with `-s`, a 4-trial sweep on 2 shared cores): a reader
polling every 50 ms saw each trial finished 0.1-3.1 s after the trial did, optuna-dashboard's
API 2.5-3.4 s after (it caches trials for 2 s). `python benchmarks/journal_sync.py`: a sync with
nothing new takes 0.5 ms at 100 trials and 4.5 ms at 1000; one new trial 5-19 ms; each appended
line is one lock and one fsync.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from analysis.trials import flatten
from search_spaces import same_value
from tune.errors import ConfigError
from tune.train.checkpoint import atomic_write

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
]

log = logging.getLogger(__name__)

RAY_TRIAL_ID_ATTR = "ray_trial_id"
"""User attribute on each Optuna trial holding the Ray Tune trial id it was suggested for."""

_STUDY_RECORD = "optuna_study.json"

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
        for key, value in _eval_attrs(result).items():
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
            _fail_trial(
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


def _eval_attrs(result: Mapping[str, Any] | None) -> dict[str, Any]:
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


def _fail_trial(study: Any, frozen: Any, reason: str) -> None:
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


# ------------------------------------------------------------------------------ the live journal
MIRROR_KEY_ATTR = "mipet:mirror_of"
"""System attribute on each journal trial `sync_journal` wrote: the id of the trial it copies in
the searcher's in-memory study."""

_JOURNALS: dict[tuple[str, int], Any] = {}


def _journal(path: str | os.PathLike[str]) -> Any:
    """This process's `JournalStorage` on the file `path`, kept open: it reads only new lines."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    text = str(Path(path).resolve())
    if not os.path.exists(text):
        open(text, "ab").close()
    key = (text, os.stat(text).st_ino)  # a file replaced under the same name is a new journal
    if key not in _JOURNALS:
        _JOURNALS[key] = optuna.storages.JournalStorage(JournalFileBackend(text))
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


@dataclass(frozen=True)
class StudyStorage:
    """Where a sweep's Optuna study lives.

    Attributes:
        storage: an `optuna.storages.BaseStorage` (a `JournalStorage` or an `RDBStorage`).
        study_name: unique to the sweep; reused by a resume.
        path: the journal or sqlite file.
        backend: "journal" or "sqlite".
    """

    storage: Any
    study_name: str
    path: Path
    backend: str

    def __iter__(self):  # allows `storage, study_name = make_study_storage(...)`
        return iter((self.storage, self.study_name))


_BACKEND_FILES = {"journal": "optuna.journal", "sqlite": "optuna.db"}


def make_study_storage(
    sweep_folder: str | os.PathLike[str],
    name: str | None = None,
    *,
    backend: str | None = None,
) -> StudyStorage:
    """Open (or create) the persistent Optuna storage of a sweep folder.

    The first call writes `optuna_study.json` into the folder with the backend and a study name
    unique to the sweep (`<name or folder name>-<8 hex digits>`); later calls (a resume) read it
    back, so the same study is continued. The default backend is an Optuna journal file
    (`optuna.journal`): an append-only log with a lock file that works on network filesystems
    (NFS), where sqlite's locking is unreliable; it needs no SQLAlchemy, and optuna-dashboard
    opens it. `backend="sqlite"` gives `optuna.db` through `RDBStorage` for a local disk.

    Args:
        sweep_folder: a local folder (created if missing). A URI is refused: the study is written
            by the driver only, so keep it on the driver's disk or a mounted shared folder.
        backend: "journal" or "sqlite"; None keeps the recorded one (journal for a new sweep).
            Asking for another backend than the recorded one is an error.
        name: the study name's prefix; default the folder name.

    Returns:
        A `StudyStorage`; it unpacks as `(storage, study_name)`.

    Raises:
        ConfigError: a URI, an unknown backend, or a backend that contradicts the folder's record.
    """
    import optuna

    text = os.fspath(sweep_folder)
    if "://" in text:
        raise ConfigError(
            "the Optuna study needs a local folder (or a mounted shared one), got the URI "
            f"{text!r}"
        )
    if backend is not None and backend not in _BACKEND_FILES:
        raise ConfigError(f"study backend must be 'journal' or 'sqlite', got {backend!r}")
    folder = Path(text).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    record_path = folder / _STUDY_RECORD
    if record_path.exists():
        try:
            record = json.loads(record_path.read_text())
            recorded_backend, study_name = record["backend"], record["study_name"]
        except (ValueError, KeyError, OSError) as exc:
            raise ConfigError(f"{record_path}: unreadable study record ({exc})") from exc
        if backend is not None and backend != recorded_backend:
            raise ConfigError(
                f"{folder}: this sweep's Optuna study uses the {recorded_backend!r} backend, "
                f"not {backend!r}; leave the backend out to continue it"
            )
        backend = recorded_backend
    else:
        backend = backend or "journal"
        study_name = f"{name or folder.name}-{uuid.uuid4().hex[:8]}"
        record = json.dumps({"backend": backend, "study_name": study_name}) + "\n"
        atomic_write(record_path, lambda fh: fh.write(record), mode="w")
    path = folder / _BACKEND_FILES[backend]
    if backend == "journal":
        from optuna.storages.journal import JournalFileBackend

        storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    else:
        storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    return StudyStorage(storage=storage, study_name=study_name, path=path, backend=backend)


# ------------------------------------------------------------------------------ reconciliation
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
            _fail_trial(study, frozen, "the Tune trial errored or reported no value")
            report.failed_errored.append(frozen.number)
        else:
            _fail_trial(study, frozen, "no Tune trial accounts for it (lost with the driver)")
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
            out[metrics["trial_id"]] = _eval_attrs(metrics)
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

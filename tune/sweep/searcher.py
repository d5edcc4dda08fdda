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
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
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
    "write_journal",
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

    Extra keyword `mirror_path` (recommended; see `make_study_storage`): keep the study in memory,
    so that it is pickled with every Tune experiment snapshot and restored exactly as consistent
    with Tune's trials as the snapshot is, and rewrite the journal file `mirror_path` from it at
    each snapshot (atomically, one fsync), for optuna-dashboard and `reconcile_study`. With
    `storage=` instead, Optuna writes through at once and a restore finds the study ahead of
    Tune's snapshot: trials asked or finished after the snapshot stay in the study as FAIL or as
    COMPLETE trials no Tune trial accounts for.
    """

    def __init__(self, *args: Any, mirror_path: str | os.PathLike[str] | None = None, **kw: Any):
        if mirror_path is not None and kw.get("storage") is not None:
            raise ConfigError("SafeOptunaSearch: give either storage= or mirror_path=, not both")
        self._mirror_path = None if mirror_path is None else str(Path(mirror_path).resolve())
        super().__init__(*args, **kw)

    # --------------------------------------------------------------------------------- mirror
    def save(self, checkpoint_path: str) -> None:
        super().save(checkpoint_path)
        if getattr(self, "_mirror_path", None) and self._ot_study is not None:
            try:
                write_journal(self._ot_study, self._mirror_path)
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


# ------------------------------------------------------------------------------ study storage
def write_journal(study: Any, path: str | os.PathLike[str]) -> int:
    """Write `study` (any storage) as a fresh Optuna journal file, atomically.

    The journal is built in memory and written with one write, one fsync and one rename, so a
    reader (optuna-dashboard, `optuna.load_study`) sees the old or the new file, never a mix.

    Returns:
        The number of trials written.
    """
    import optuna
    from optuna.storages.journal import BaseJournalBackend

    class _Buffer(BaseJournalBackend):
        def __init__(self) -> None:
            self.logs: list[dict[str, Any]] = []

        def read_logs(self, log_number_from: int):  # type: ignore[override]
            yield from self.logs[log_number_from:]

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            self.logs.extend(logs)

    buffer = _Buffer()
    target = optuna.storages.JournalStorage(buffer)
    optuna.copy_study(
        from_study_name=study.study_name, from_storage=study._storage, to_storage=target
    )
    data = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in buffer.logs)
    atomic_write(path, lambda fh: fh.write(data.encode("utf-8")))
    return len(study.get_trials(deepcopy=False))


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

    Args:
        storage: an `optuna.storages.BaseStorage`, a storage URL, a `StudyStorage`, or a sweep
            folder holding the `optuna_study.json` record of `make_study_storage` (reopened
            here, so a journal rewritten by a mirroring searcher is read afresh).
        study_name: the study to fix; None takes the folder's (or the `StudyStorage`'s) study.
        outcomes: Tune trial id -> (values, config): values a float, a list of floats
            (multi-objective) or None (the trial errored or never reported the metric); config the
            trial's config (nested or "/"-flattened), used to find the parameters of a trial the
            searcher never suggested.
        keep_running: Tune trial ids whose RUNNING Optuna trials must stay RUNNING.

    Returns:
        A `ReconcileReport`.
    """
    import optuna
    from optuna.trial import TrialState, create_trial

    if isinstance(storage, (str, os.PathLike)) and Path(storage).is_dir():
        storage = make_study_storage(storage)
    if isinstance(storage, StudyStorage):
        study_name = study_name or storage.study_name
        storage = storage.storage
    if study_name is None:
        raise ConfigError("reconcile_study: give study_name, or a sweep folder or StudyStorage")
    study = optuna.load_study(study_name=study_name, storage=storage)
    report = ReconcileReport()
    outcomes = dict(outcomes or {})
    keep = set(keep_running)
    trials = study.get_trials(deepcopy=False)
    newest: dict[str, Any] = {}
    for frozen in trials:  # trials come in number order, so the last one wins
        ray_id = frozen.user_attrs.get(RAY_TRIAL_ID_ATTR)
        if ray_id is not None:
            newest[ray_id] = frozen

    for frozen in trials:
        if frozen.state != TrialState.RUNNING:
            continue
        ray_id = frozen.user_attrs.get(RAY_TRIAL_ID_ATTR)
        if ray_id in keep:
            continue
        values = outcomes.get(ray_id, (None, None))[0] if ray_id is not None else None
        if values is not None:
            try:
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

    for ray_id, (values, config) in outcomes.items():
        if values is None:
            continue
        frozen = newest.get(ray_id)
        if frozen is not None and frozen.state != TrialState.FAIL:
            continue  # COMPLETE or PRUNED already, or just told above
        source = frozen
        if source is None and config:
            flat = flatten(config)
            for cand in reversed(trials):
                if cand.params and all(
                    k in flat and same_value(flat[k], v) for k, v in cand.params.items()
                ):
                    source = cand
                    break
        if source is None:
            report.unmatched.append(ray_id)
            continue
        value_list = list(values) if isinstance(values, (list, tuple)) else [float(values)]
        try:
            new = create_trial(
                state=TrialState.COMPLETE,
                values=value_list,
                params=dict(source.params),
                distributions=dict(source.distributions),
                user_attrs={RAY_TRIAL_ID_ATTR: ray_id, "supersedes": source.number},
            )
            study.add_trial(new)
        except Exception as exc:
            log.warning("could not record Tune trial %s in Optuna: %s", ray_id, exc)
            report.unmatched.append(ray_id)
            continue
        report.added[ray_id] = len(study.get_trials(deepcopy=False)) - 1
    if report.changed or report.unmatched:
        log.info(
            "reconciled Optuna study %s: %d orphan(s) and %d errored trial(s) marked FAIL, "
            "%d value(s) recorded, %d unmatched",
            study_name,
            len(report.failed_orphans),
            len(report.failed_errored),
            len(report.added),
            len(report.unmatched),
        )
    return report


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

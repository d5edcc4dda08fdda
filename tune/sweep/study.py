"""Where a sweep's Optuna study lives: the folder's study record and the storage it names.

`make_study_storage` opens (or creates) the study of a sweep folder: `optuna_study.json` records
the backend and the study name, so a resume continues the same study. The default backend is an
append-only Optuna journal (`optuna.journal`, what optuna-dashboard follows; `journal.py` keeps it
in step with the searcher's study); `open_journal` refuses a damaged one in one line, before any
work, where Optuna would fail with a traceback (`UnicodeDecodeError` for bytes that are not UTF-8,
`JSONDecodeError` for a broken line) or silently drop what follows the damage.

Every Optuna trial a sweep creates carries the user attribute `ray_trial_id`
(`RAY_TRIAL_ID_ATTR`), the link between the study and Ray Tune's trials table.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tune.errors import ConfigError, DataFileError
from tune.train.checkpoint import atomic_write

RAY_TRIAL_ID_ATTR = "ray_trial_id"
"""User attribute on each Optuna trial holding the Ray Tune trial id it was suggested for."""

_STUDY_RECORD = "optuna_study.json"
_BACKEND_FILES = {"journal": "optuna.journal", "sqlite": "optuna.db"}


def check_journal(path: str | os.PathLike[str]) -> None:
    """Refuse a damaged Optuna journal file; a missing or empty one is fine.

    A journal is lines of UTF-8 JSON objects, each with an `op_code`, each ended by a newline.
    Optuna's reader raises a bare `UnicodeDecodeError` or `JSONDecodeError` on a damaged line and
    ignores an unfinished last line (the next append would then glue a record to it).

    Raises:
        DataFileError: the first damaged line, with its line number and byte offset, and how to
            recover (truncate the file there: every record before it is intact).
    """
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    offset = 0
    with fh:
        for number, line in enumerate(fh, 1):
            problem = _record_problem(line)
            if problem is not None:
                raise DataFileError(
                    f"{path}: damaged Optuna journal: line {number} (from byte {offset}) "
                    f"{problem}; the {number - 1} line(s) before it are intact: keep a copy, "
                    f"cut the file there (`truncate -s {offset} {path}`) and resume again"
                )
            offset += len(line)


def _record_problem(line: bytes) -> str | None:
    """What is wrong with one journal line (with its newline), or None."""
    if not line.endswith(b"\n"):
        return "is not ended by a newline (an interrupted write, or bytes appended)"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"is not UTF-8 text (byte {exc.start} of the line)"
    try:
        record = json.loads(text)
    except ValueError:
        return "is not a JSON record"
    if not isinstance(record, dict) or "op_code" not in record:
        return "is JSON but not an Optuna journal record (no op_code)"
    return None


def check_study(sweep_folder: str | os.PathLike[str]) -> None:
    """Refuse a sweep folder whose study journal is damaged (`check_journal`); creates nothing.

    What `sweep --resume` calls before any work (Ray, the data), so that a damaged journal is one
    line up front rather than a traceback after the cluster has started.

    Raises:
        DataFileError: the folder's `optuna.journal` is damaged.
    """
    check_journal(Path(sweep_folder) / _BACKEND_FILES["journal"])


def open_journal(path: str | os.PathLike[str]) -> Any:
    """An `optuna.storages.JournalStorage` on the file `path`, checked first (`check_journal`).

    Raises:
        DataFileError: a damaged journal.
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend

    check_journal(path)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


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
        DataFileError: a damaged journal (see `check_journal`).
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
        storage = open_journal(path)
    else:
        storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    return StudyStorage(storage=storage, study_name=study_name, path=path, backend=backend)


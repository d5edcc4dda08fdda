"""What makes a folder a sweep folder, and the lock that lets one driver at a time write it.

The marker. `mipet-tune sweep` writes `.mipet-sweep` (JSON: `format`, `name`, `created`) into
every sweep folder it creates; `--resume` accepts only a folder with that marker (or, for
folders made before the marker existed, a `sweep.yaml` carrying the `resolved` section the
driver writes, beside a `ray/` folder), never a folder that merely holds a file named
`sweep.yaml`.

The lock. `.mipet-sweep.lock` is created with `O_CREAT | O_EXCL` (atomic on local filesystems
and on NFSv3+), so exactly one driver gets it. It records the holder's pid, host, start time,
the kernel's boot id and the process's start time (`/proc/<pid>/stat`, field 22). Another driver
reads it and decides:

- same host, same boot: the holder is alive when its pid exists *and* that process started at
  the recorded time (a pid reused by another process after a crash does not count); otherwise
  the lock is stale.
- same host, another boot id: stale (the machine rebooted).
- another host (a shared filesystem across nodes, where a pid cannot be checked): the holder
  touches the lock every `HEARTBEAT_S` seconds while it runs; a lock whose modification time is
  older than `STALE_AFTER_S` is stale. This assumes the nodes' clocks agree to well within
  `STALE_AFTER_S` (NTP), and a driver frozen (SIGSTOP, a suspended VM) for longer than that
  loses its lock. Override the timeout with `MIPET_TUNE_LOCK_STALE_S`.

A held lock is refused with one line naming the holder; a stale one is taken over with a
WARNING naming the dead holder. Takeover renames the stale lock away first (one rename wins), so
two drivers that both find the same stale lock cannot both take it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tune.errors import ConfigError

log = logging.getLogger(__name__)

# The sweep folder's layout (docs/architecture.md, "The sweep folder").
SPEC_FILE = "sweep.yaml"  # the resolved spec, with the search space
RAY_DIR = "ray"  # Ray Tune's experiment folder
TRIALS_FILE = "trials.parquet"  # one row per trial and seed
STATE_FILE = "sweep_state.json"  # the driver's own notes (the data checksum, start time)
MARKER_FILE = ".mipet-sweep"
MARKER_FORMAT = 1
LOCK_FILE = ".mipet-sweep.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0


class SweepFolderError(ConfigError):
    """A folder that is not a sweep folder, or one another driver holds: one line, exit 2."""


# ---- the marker ------------------------------------------------------------------------------
def write_marker(folder: Path, name: str) -> Path:
    """Mark `folder` as a sweep folder (format version, sweep name, creation time)."""
    from analysis._files import atomic_write

    body = {"format": MARKER_FORMAT, "name": name, "created": _iso(time.time())}
    return atomic_write(folder / MARKER_FILE,
                        lambda fh: fh.write(json.dumps(body, indent=1).encode()))


def is_sweep_folder(folder: Path) -> bool:
    """True for a folder `mipet-tune sweep` made (see the module docstring)."""
    return (folder / MARKER_FILE).is_file() or _legacy_sweep(folder)


def check_sweep_folder(folder: Path) -> None:
    """Refuse, in one line, anything `--resume` must not touch.

    Raises:
        SweepFolderError: no such folder, no marker, or a marker of a newer format.
    """
    if not folder.is_dir():
        raise SweepFolderError(f"{folder}: no such sweep folder; nothing to resume")
    marker = folder / MARKER_FILE
    if marker.is_file():
        try:
            fmt = int(json.loads(marker.read_text()).get("format", 0))
        except (ValueError, AttributeError, TypeError, OSError) as exc:
            raise SweepFolderError(f"{marker}: unreadable sweep marker ({exc}); it should be "
                                   f"JSON with a 'format' number") from exc
        if fmt > MARKER_FORMAT:
            raise SweepFolderError(f"{folder}: sweep folder format {fmt} is newer than this "
                                   f"mipet-tune reads ({MARKER_FORMAT}); upgrade mipet-tune")
        return
    if not _legacy_sweep(folder):
        raise SweepFolderError(
            f"{folder}: not a sweep folder (no {MARKER_FILE} marker, which `mipet-tune sweep` "
            "writes); nothing to resume")


def _legacy_sweep(folder: Path) -> bool:
    """A sweep folder from before the marker: our `sweep.yaml` (with `resolved`) and `ray/`."""
    spec = folder / "sweep.yaml"
    if not (spec.is_file() and (folder / "ray").is_dir()):
        return False
    import yaml

    try:
        saved = yaml.safe_load(spec.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return False
    resolved = saved.get("resolved") if isinstance(saved, dict) else None
    return isinstance(resolved, dict) and "space" in resolved and "base" in resolved


# ---- the lock --------------------------------------------------------------------------------
class SweepLock:
    """One driver per sweep folder (see the module docstring for how staleness is decided).

    Use as a context manager; `acquire()` raises `SweepFolderError` naming the holder when
    another live driver has the folder.

    Args:
        folder: the sweep folder (it must exist).
        stale_after_s: how old another host's lock must be to count as stale (default
            `MIPET_TUNE_LOCK_STALE_S` or `STALE_AFTER_S`).
        heartbeat_s: how often the holder touches its lock.
    """

    def __init__(self, folder: Path, *, stale_after_s: float | None = None,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        self.path = Path(folder) / LOCK_FILE
        env = os.environ.get("MIPET_TUNE_LOCK_STALE_S")
        self.stale_after_s = float(stale_after_s if stale_after_s is not None
                                   else env if env else STALE_AFTER_S)
        self.heartbeat_s = heartbeat_s
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- acquire / release
    def acquire(self) -> SweepLock:
        body = json.dumps(self._record(), indent=1).encode()
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = read_lock(self.path)
                why = self._stale_reason(holder)
                if why is None:
                    raise SweepFolderError(_held_message(self.path.parent, holder)) from None
                self._take_over(holder, why)
                continue
            try:
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._thread = threading.Thread(target=self._beat, name="sweep-lock-heartbeat",
                                            daemon=True)
            self._thread.start()
            return self
        raise SweepFolderError(f"{self.path}: could not take the sweep lock (other drivers keep "
                               "taking it over); stop them and retry")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.owned():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def owned(self) -> bool:
        holder = read_lock(self.path)
        return holder is not None and holder.get("token") == self.token

    def __enter__(self) -> SweepLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- internals
    def _record(self) -> dict[str, Any]:
        pid = os.getpid()
        return {"pid": pid, "host": socket.gethostname(), "started": time.time(),
                "boot_id": _boot_id(), "proc_start": _proc_start(pid), "token": self.token}

    def _stale_reason(self, holder: dict[str, Any] | None) -> str | None:
        """Why the lock `holder` describes is stale, or None while its driver lives."""
        age = _age(self.path)
        if holder is None:  # unreadable: being written this instant, or left half-written
            return None if age is not None and age < 10 else "its lock file is unreadable"
        if holder.get("host") != socket.gethostname():
            if age is not None and age > self.stale_after_s:
                return (f"its heartbeat stopped {age:.0f} s ago "
                        f"(stale after {self.stale_after_s:.0f} s)")
            return None
        if holder.get("boot_id") and holder.get("boot_id") != _boot_id():
            return "this host has rebooted since"
        pid = int(holder.get("pid") or 0)
        now = _proc_start(pid)
        if now is None:
            return f"pid {pid} no longer runs"
        if holder.get("proc_start") is not None and now != holder["proc_start"]:
            return f"pid {pid} is now another process"
        return None

    def _take_over(self, holder: dict[str, Any] | None, why: str) -> None:
        aside = self.path.with_name(f"{LOCK_FILE}.stale-{self.token[:8]}")
        try:
            os.rename(self.path, aside)  # one rename wins if two drivers find it stale
        except FileNotFoundError:
            return  # someone else moved it first; try creating ours again
        moved = read_lock(aside)
        if holder is not None and (moved or {}).get("token") != holder.get("token"):
            # Another driver took over between our read and our rename: give its lock back.
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
            aside.unlink(missing_ok=True)
            return
        aside.unlink(missing_ok=True)
        h = holder or {}
        log.warning("%s: taking over a stale sweep lock of pid %s on %s (started %s): %s",
                    self.path.parent, h.get("pid", "?"), h.get("host", "?"),
                    _iso(h.get("started")), why)

    def _beat(self) -> None:
        warned = False
        while not self._stop.wait(self.heartbeat_s):
            try:
                if self.owned():
                    os.utime(self.path)
                    continue
            except OSError:
                pass
            if not warned:
                log.error("%s: this driver's sweep lock is gone or was taken over; another "
                          "driver may be writing the folder", self.path)
                warned = True


def read_lock(path: Path) -> dict[str, Any] | None:
    """The lock's record, or None when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _held_message(folder: Path, holder: dict[str, Any] | None) -> str:
    h = holder or {}
    return (f"{folder} is in use by another sweep driver (pid {h.get('pid', '?')} on "
            f"{h.get('host', '?')}, started {_iso(h.get('started'))}); wait for it to finish or "
            f"stop it (a dead driver's lock is taken over automatically)")


def _age(path: Path) -> float | None:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _proc_start(pid: int) -> int | None:
    """The start time of process `pid` (clock ticks since boot), or None if it does not run."""
    if pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:  # no /proc (macOS): existence only
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return -1
        return -1
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has finished
        return None
    return int(fields[19])


def _iso(t: Any) -> str:
    try:
        return datetime.fromtimestamp(float(t), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError):
        return "?"

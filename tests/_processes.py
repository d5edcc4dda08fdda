"""Stop exactly the processes a test started: a process tree by PID, or the processes whose
command line mentions a marker (a test's own Ray session folder). `ray stop` kills every Ray
process on the machine, other users' too; a test never does that."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterable, Mapping


def process_tree(pid: int) -> dict[int, str]:
    """The live descendants of `pid` (not `pid` itself): pid -> command line.

    Record this before killing a Ray driver: `ray::DashboardAgent` and `ray::RuntimeEnvAgent`
    survive a SIGKILL of the driver, re-parented to pid 1, and must be killed by pid.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out: dict[int, str] = {}
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        cmd = _cmdline(child)
        if cmd is None:
            continue
        out[child] = cmd
        todo.extend(children.get(child, []))
    return out


def processes_matching(text: str) -> dict[int, str]:
    """Processes whose command line contains `text`, with all their descendants: pid -> cmdline.

    With a session folder of your own (`ray start --temp-dir=/tmp/ray-me`), `text` =
    that folder finds exactly the Ray processes you started (raylets, gcs_server, monitors) and,
    through their descendants, the agents and workers, whose command lines do not name it.
    """
    if not text:
        raise ValueError("processes_matching needs a non-empty text")
    out: dict[int, str] = {}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            cmd = _cmdline(int(entry))
            if cmd and text in cmd:
                out[int(entry)] = cmd
    for pid in list(out):
        out.update(process_tree(pid))
    return out


def _cmdline(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None


def kill_processes(processes: Mapping[int, str] | Iterable[int], *, grace_s: float = 3.0) -> int:
    """SIGTERM, then after `grace_s` SIGKILL, exactly these processes; return how many were alive.

    With a mapping pid -> command line (from `process_tree`), a pid whose command line changed
    (the pid was reused) is left alone.
    """
    wanted = dict(processes) if isinstance(processes, Mapping) else {p: None for p in processes}

    def alive() -> list[int]:
        out = []
        for pid, cmd in wanted.items():
            now = _cmdline(pid)
            if now is None or (cmd is not None and now != cmd):
                continue
            try:
                with open(f"/proc/{pid}/stat", "rb") as fh:
                    if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                        continue  # a zombie; its parent will reap it
            except OSError:
                continue
            out.append(pid)
        return out

    first = alive()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not alive():
            break
    return len(first)


class ProcessReaper:
    """Track every descendant of a process while it runs; kill the survivors afterwards.

    For a driver that starts its own Ray instance: Ray's agents outlive a killed driver, so the
    tree must be recorded while the driver is alive. `reap()` kills (by pid, checking each
    command line) whatever is still alive of what was seen, and returns how many it killed.

    Example:
        >>> proc = subprocess.Popen([sys.executable, "driver.py"])
        >>> with ProcessReaper(proc.pid) as reaper:
        ...     proc.wait()
        >>> reaper.killed  # stragglers killed on exit
    """

    def __init__(self, pid: int, *, interval_s: float = 0.5) -> None:
        self.pid = pid
        self.seen: dict[int, str] = {}
        self.killed = 0
        self._interval = interval_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)

    def sample(self) -> dict[int, str]:
        """Record the current descendants now (call it right before killing the root)."""
        tree = process_tree(self.pid)
        with self._lock:
            self.seen.update(tree)
        return tree

    def reap(self, *, grace_s: float = 3.0) -> int:
        """Stop tracking; kill the recorded processes still alive; return how many."""
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            seen = dict(self.seen)
        self.killed += kill_processes(seen, grace_s=grace_s)
        return self.killed

    def __enter__(self) -> ProcessReaper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reap()

"""Filling a cache file with rows in parallel worker processes (all cores).

The workers are fresh interpreters started as `python -c "... from tune.data._worker import
main; main()"` with our package root first on `sys.path`, not `multiprocessing` children. A
spawn (or forkserver) child re-imports the caller's `__main__` module before it runs anything:
a script without an `if __name__ == "__main__":` guard then calls `load_dataset` again and waits
forever on the build lock its parent holds, and from standard input (`python - < script.py`)
or a notebook the children die trying to open `<stdin>`. Hiding the main module's path while a
pool starts would mutate interpreter-wide state under other threads, and a fork would copy the
caller's threads' locks (torch, Ray). A plain subprocess knows nothing of the caller, so a
script, `python -c`, stdin, a notebook and a Ray worker all build the same way.

Workers import only numpy and the generator module, never torch or ray, and write their rows
straight into the temporary .npy through their own memory map, so no pixels cross a pipe.
"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable

import numpy as np

from models.errors import DataFileError

log = logging.getLogger(__name__)

# Keep freed temporaries in the heap: without this, glibc returns every large numpy temporary to
# the kernel and the workers spend as much time in page faults as in drawing (measured: 9 s of
# system time against 9 s of user time for all of dSprites; 0.2 s with these settings).
_MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(1 << 30),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
    "MALLOC_TOP_PAD_": str(1 << 28),
}
# the folder holding this very `tune` package, so the workers import the same code as the caller
_ROOT = str(Path(__file__).resolve().parents[2])
_BOOT = f"import sys; sys.path.insert(0, {_ROOT!r}); from tune.data._worker import main; main()"


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class _Worker:
    """One worker process and the two pipes to it."""

    def __init__(self, env: dict[str, str]) -> None:
        task_r, task_w = os.pipe()
        reply_r, reply_w = os.pipe()
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", _BOOT], stdin=task_r,
                                         stdout=reply_w, env=env, close_fds=True)
        finally:
            os.close(task_r)
            os.close(reply_w)
        self.tasks = Connection(task_w, readable=False)
        self.replies = Connection(reply_r, writable=False)
        self.task: tuple[int, int] | None = None

    def send(self, message: Any) -> None:
        try:
            self.tasks.send(message)
        except OSError:  # it died; its reply pipe is at EOF, reported by `receive`
            pass

    def receive(self) -> int:
        """Rows done in the current task; raises DataFileError if the worker failed."""
        try:
            status, value = self.replies.recv()
        except (EOFError, OSError):
            code = self.proc.wait()
            raise DataFileError(
                f"a dataset build worker (pid {self.proc.pid}) exited with code {code} while "
                f"drawing rows {self.task}; its error is above on stderr (out of memory? "
                "try again with fewer other jobs)") from None
        if status != "ok":
            log.error("dataset build worker %d failed:\n%s", self.proc.pid, value)
            last = value.strip().splitlines()[-1]
            raise DataFileError(f"a dataset build worker failed drawing rows {self.task}: {last}")
        return int(value)

    def close(self) -> None:
        self.tasks.close()
        self.replies.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _run_workers(count: int, header: tuple[Any, ...], bounds: list[tuple[int, int]],
                 progress: Callable[[int], None] | None) -> None:
    """Hand the tasks `bounds` to `count` workers, one at a time each, until all are done."""
    env = {**os.environ, **_MALLOC_ENV}  # read by the workers' C library at start-up
    todo = list(reversed(bounds))
    workers: list[_Worker] = []
    try:
        for _ in range(count):
            workers.append(_Worker(env))
        busy: dict[Any, _Worker] = {}
        for worker in workers:
            worker.send(header)
            worker.task = todo.pop()
            worker.send(worker.task)
            busy[worker.replies] = worker
        while busy:
            for conn in wait(list(busy)):
                worker = busy[conn]
                rows = worker.receive()
                if progress is not None:
                    progress(rows)
                if todo:
                    worker.task = todo.pop()
                    worker.send(worker.task)
                else:
                    del busy[conn]
                    worker.tasks.close()  # end of input: the worker exits
    finally:
        for worker in workers:
            worker.close()


def fill_rows(
    arr: np.memmap,
    module: str,
    func: str,
    args: tuple[Any, ...],
    *,
    chunk: int,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> None:
    """Write every row of `arr` with `module.func(start, stop, *args) -> rows`.

    Args:
        arr: the writable memory-mapped .npy (its file is reopened by the workers).
        module, func: an importable function producing rows [start, stop).
        args: extra picklable arguments (e.g. the DatasetInfo).
        chunk: rows per task.
        progress: called with the number of rows finished, after each task.
        workers: processes to use (default: all available cores).
    Raises:
        DataFileError: a worker failed or died.
    """
    n = arr.shape[0]
    bounds = [(s, min(s + chunk, n)) for s in range(0, n, chunk)]
    workers = min(workers or cpu_count(), len(bounds))
    if workers <= 1:
        fn = getattr(importlib.import_module(module), func)
        for start, stop in bounds:
            arr[start:stop] = fn(start, stop, *args)
            if progress is not None:
                progress(stop - start)
        return
    arr.flush()
    header = (module, func, args, os.path.abspath(arr.filename))
    _run_workers(workers, header, bounds, progress)

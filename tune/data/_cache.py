"""One cache file per dataset per machine: written once, atomically, checksummed, memory-mapped.

Layout under the cache folder (`$MIPET_TUNE_CACHE`, else `$XDG_CACHE_HOME/mipet-tune`, else
`~/.cache/mipet-tune`):

    <stem>.npy    the images as a plain .npy (uint8 (N, H, W, C), or bit-packed (N, H*W/8))
    <stem>.json   metadata, renamed into place last: its presence marks a complete cache
    <stem>.lock   flock'ed while one process builds (it holds the builder's pid, host and start
                  time); others wait, at most `LOCK_TIMEOUT_S`, and then open its result

Both files are first written under a temporary name in the same folder and then renamed, so a
reader never sees a half-written cache, and a crashed build leaves only a temporary file.

Checksums: `checksum` is the SHA-256 of the image bytes (the .npy body), computed once when the
cache is written. Opening checks the file size, the header and a `spot` hash of 64 blocks spread
over the file (milliseconds); `check(..., full=True)` (used by `prepare_dataset`) re-hashes it
all.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from models.errors import DataFileError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_BLOCK = 1 << 24
_SPOT_BLOCKS = 64
_SPOT_SIZE = 4096
# longest wait for another process's build of the same cache (real-file conversions take
# minutes; the generators seconds)
LOCK_TIMEOUT_S = 1800.0


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder (created if needed)."""
    if cache_dir is None:
        env = os.environ.get("MIPET_TUNE_CACHE")
        if env:
            cache_dir = env
        else:
            base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
            cache_dir = os.path.join(base, "mipet-tune")
    root = Path(cache_dir).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataFileError(
            f"{root}: cannot create the dataset cache folder ({exc.strerror}); "
            "set MIPET_TUNE_CACHE or --cache-dir to a writable folder"
        ) from exc
    return root


def _data_offset(path: Path) -> tuple[int, tuple[int, ...], np.dtype]:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(f)
        return f.tell(), tuple(shape), np.dtype(dtype)


def _spot_hash(path: Path, offset: int, size: int) -> str:
    h = hashlib.sha256(str(size).encode())
    body = size - offset
    with open(path, "rb") as f:
        for k in range(_SPOT_BLOCKS):
            step = (body - _SPOT_SIZE) * k // max(_SPOT_BLOCKS - 1, 1)
            f.seek(offset + step if body > _SPOT_SIZE else offset)
            h.update(f.read(_SPOT_SIZE))
    return h.hexdigest()


def _full_hash(path: Path, offset: int, progress: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(_BLOCK):
            h.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return h.hexdigest()


def _describe(holder: dict[str, Any]) -> str:
    if "pid" not in holder:
        return "a process that has not said who it is yet"
    host, since = holder.get("host", "?"), holder.get("since", "?")
    return f"pid {holder['pid']} on host {host} since {since}"


class Entry:
    """A cache entry: `<root>/<stem>.npy` plus its `.json` metadata."""

    def __init__(self, root: Path, stem: str) -> None:
        self.root = root
        self.stem = stem
        self.npy = root / f"{stem}.npy"
        self.meta_path = root / f"{stem}.json"
        self.lock_path = root / f"{stem}.lock"

    def read_meta(self) -> dict[str, Any] | None:
        try:
            meta = json.loads(self.meta_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("dataset cache %s: unreadable metadata (%s); rebuilding", self.meta_path,
                        exc)
            return None
        return meta if isinstance(meta, dict) else None

    def check(self, meta: dict[str, Any], *, full: bool = False) -> str | None:
        """None if the cache file matches its metadata, else what is wrong."""
        if meta.get("format_version") != FORMAT_VERSION:
            return f"format version {meta.get('format_version')} != {FORMAT_VERSION}"
        try:
            size = self.npy.stat().st_size
            if size != meta["file_bytes"]:
                return f"size {size} bytes, expected {meta['file_bytes']}"
            offset, shape, dtype = _data_offset(self.npy)
            if list(shape) != list(meta["shape"]) or str(dtype) != meta["dtype"]:
                return f"array {shape} {dtype}, expected {tuple(meta['shape'])} {meta['dtype']}"
            if _spot_hash(self.npy, offset, size) != meta["spot"]:
                return "spot checksum differs"
            if full and _full_hash(self.npy, offset) != meta["checksum"]:
                return "checksum differs"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"unreadable ({exc})"
        return None

    @contextlib.contextmanager
    def locked(self, timeout_s: float | None = None) -> Iterator[None]:
        """Exclusive build lock; waits at most `timeout_s` (default `LOCK_TIMEOUT_S`) for it.

        The holder writes its pid, host and start time into the lock file, so that a waiter that
        gives up can say who holds it. The kernel frees the lock when its holder exits.

        Raises:
            DataFileError: the lock is still held after `timeout_s`, or it is held by this
                process's parent (a child of a build must never wait for that build).
        """
        timeout_s = LOCK_TIMEOUT_S if timeout_s is None else timeout_s
        with open(self.lock_path, "a+") as fh:
            self._acquire(fh, timeout_s)
            try:
                fh.seek(0)
                fh.truncate()
                fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}))
                fh.flush()
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _acquire(self, fh: Any, timeout_s: float) -> None:
        start = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            holder = self._holder()
            waited = time.monotonic() - start
            if holder.get("pid") == os.getppid() and holder.get("host") == socket.gethostname():
                raise DataFileError(
                    f"dataset cache {self.npy}: its build lock is held by this process's parent "
                    f"(pid {holder['pid']}), which would wait for this process forever; a build "
                    "worker must not build a dataset itself")
            if waited >= timeout_s:
                raise DataFileError(
                    f"dataset cache {self.npy}: gave up after {waited:.0f} s waiting for the "
                    f"build lock {self.lock_path}, held by {_describe(holder)}; wait for that "
                    "build to finish, or end that process if it is stuck (its lock frees "
                    "itself when it exits), then try again")
            if not told and waited >= 5:
                log.warning("dataset cache %s is being built by %s; waiting for it (at most "
                            "%.0f s)", self.npy, _describe(holder), timeout_s)
                told = True
            time.sleep(min(0.2, max(timeout_s - waited, 0.01)))

    def _holder(self) -> dict[str, Any]:
        try:
            holder = json.loads(self.lock_path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def write(
        self,
        shape: tuple[int, ...],
        fill: Callable[[np.memmap], None],
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        """Create the .npy under a temporary name, let `fill` write it, hash, rename into place.

        Args:
            shape: shape of the uint8 array.
            fill: writes every row of the given writable memmap (may use worker processes that
                open `memmap.filename` themselves).
            extra: metadata to store beside the checksums.
        Returns:
            The metadata dict that was written.
        """
        start = time.perf_counter()
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.stem}.", suffix=".npy.tmp", dir=self.root)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            fill(arr)
            arr.flush()
            del arr
            offset, _, _ = _data_offset(tmp)
            size = tmp.stat().st_size
            meta = dict(extra)
            meta.update(
                format_version=FORMAT_VERSION,
                shape=list(shape),
                dtype="uint8",
                file_bytes=size,
                checksum=_full_hash(tmp, offset),
                spot=_spot_hash(tmp, offset, size),
                build_seconds=round(time.perf_counter() - start, 3),
            )
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o444)
            os.replace(tmp, self.npy)
            fd, meta_tmp = tempfile.mkstemp(prefix=f".{self.stem}.", suffix=".json.tmp",
                                            dir=self.root)
            with os.fdopen(fd, "w") as f:
                json.dump(meta, f, indent=1, sort_keys=True)
            os.chmod(meta_tmp, 0o644)
            os.replace(meta_tmp, self.meta_path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return meta

    def remove(self) -> None:
        for p in (self.meta_path, self.npy):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def open(self) -> np.ndarray:
        """The cached array, read-only and memory-mapped."""
        return np.load(self.npy, mmap_mode="r")


def ensure(
    entry: Entry,
    shape: tuple[int, ...],
    fill: Callable[[np.memmap], None],
    extra: dict[str, Any],
    *,
    full_check: bool = False,
) -> tuple[dict[str, Any], bool]:
    """Return (metadata, built) for a valid cache entry, building it if missing or corrupt.

    A cache that fails its checks is rebuilt with a warning. Concurrent callers serialise on the
    entry's lock; whoever comes second finds the finished cache and just checks it.
    """
    meta = entry.read_meta()
    if meta is not None:
        problem = entry.check(meta, full=full_check)
        if problem is None and list(meta["shape"]) == list(shape):
            return meta, False
    with entry.locked():
        meta = entry.read_meta()
        if meta is not None:
            problem = entry.check(meta, full=full_check)
            if problem is None and list(meta["shape"]) != list(shape):
                problem = f"shape {tuple(meta['shape'])}, expected {shape}"
            if problem is None:
                return meta, False
            log.warning("dataset cache %s is invalid (%s); rebuilding it", entry.npy, problem)
            entry.remove()
        elif entry.npy.exists():
            log.warning("dataset cache %s has no metadata; rebuilding it", entry.npy)
            entry.remove()
        for stale in entry.root.glob(f".{entry.stem}.*.tmp"):  # left by a build that died
            with contextlib.suppress(OSError):
                stale.unlink()
        return entry.write(shape, fill, extra), True

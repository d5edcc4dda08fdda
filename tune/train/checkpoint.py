"""Atomic checkpoint folders: a half-written checkpoint is never used.

`write_checkpoint` writes into a hidden temporary folder next to the final one, fsyncs every
file, writes the `COMPLETE` marker (a manifest of every file's size and SHA-256, and a checksum
of the manifest) last, then publishes the folder with one `rename` and fsyncs the parent. A crash
at any moment leaves either no visible checkpoint or a complete one. `is_complete` checks the
marker (and, with `verify=True`, every file's hash, which also catches a folder that a copy, for
example Ray Tune's upload to its storage, left half done); `latest_complete` picks the newest
complete checkpoint and skips the rest.

The trainer's state is one dict saved with `torch.save` (model and optimizer state dicts, step,
random-number states, ...). torch is imported inside the functions.

Example:
    >>> path = write_checkpoint(run_dir, f"step_{step:08d}", lambda d: save_state(d, state),
    ...                         step=step)
    >>> tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(path))
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from analysis._files import atomic_write
from tune.errors import DataFileError

__all__ = [
    "MARKER",
    "atomic_write",
    "STATE_FILE",
    "write_checkpoint",
    "is_complete",
    "latest_complete",
    "read_marker",
    "sha256",
    "save_state",
    "load_state",
]

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
"""Name of the marker file written last into every checkpoint folder."""

STATE_FILE = "state.pt"
"""Default file name of `save_state` inside a checkpoint folder."""

_FORMAT = 1


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # some filesystems do not open folders; nothing more can be done
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MARKER)


def _manifest_checksum(files: dict[str, dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def write_checkpoint(
    parent: str | os.PathLike[str],
    name: str,
    write_fn: Callable[[Path], Any],
    *,
    step: int | None = None,
) -> Path:
    """Write a checkpoint folder `parent/name` atomically.

    Args:
        parent: the folder that holds the checkpoints (created if missing).
        name: the checkpoint's folder name (no "/", not starting with ".").
        write_fn: called with a temporary folder to fill; its return value is ignored.
        step: the training step, recorded in the marker; `latest_complete` orders by it.

    Returns:
        The published folder `parent/name`. An older checkpoint of the same name is replaced.

    Raises:
        ValueError: a bad name.
        Whatever `write_fn` raises; the temporary folder is removed first.
    """
    if not name or "/" in name or os.sep in name or name.startswith(".") or name == MARKER:
        raise ValueError(f"checkpoint name must be a plain folder name, got {name!r}")
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / name
    tmp = parent / f".{name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    old = None
    try:
        write_fn(tmp)
        files: dict[str, dict[str, Any]] = {}
        for path in _files(tmp):
            _fsync_path(path)
            files[path.relative_to(tmp).as_posix()] = {
                "size": path.stat().st_size,
                "sha256": sha256(path),
            }
        marker = {
            "format": _FORMAT,
            "name": name,
            "step": step,
            "created": time.time(),
            "files": files,
            "checksum": _manifest_checksum(files),
        }
        with open(tmp / MARKER, "w") as fh:
            json.dump(marker, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        for sub in sorted({p.parent for p in tmp.rglob("*")}, key=lambda p: -len(p.parts)):
            _fsync_path(sub, directory=True)
        if final.exists():
            old = parent / f".{name}.old-{uuid.uuid4().hex[:12]}"
            os.rename(final, old)
        os.rename(tmp, final)
        _fsync_path(parent, directory=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not final.exists():
            os.rename(old, final)  # put the previous checkpoint back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_marker(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The parsed `COMPLETE` marker of a checkpoint folder, or None if absent or unreadable."""
    try:
        with open(Path(path) / MARKER) as fh:
            marker = json.load(fh)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def is_complete(path: str | os.PathLike[str], *, verify: bool = False) -> bool:
    """Whether `path` is a complete checkpoint folder.

    Checks the marker, its checksum, and that every listed file exists with its size; with
    `verify=True` also every file's SHA-256 (reads everything). Extra files are allowed (Ray may
    add metadata files to a checkpoint).
    """
    path = Path(path)
    marker = read_marker(path)
    if marker is None or not isinstance(marker.get("files"), dict):
        return False
    files = marker["files"]
    if marker.get("checksum") != _manifest_checksum(files):
        return False
    for rel, meta in files.items():
        file = path / rel
        try:
            if file.stat().st_size != meta.get("size"):
                return False
        except OSError:
            return False
        if verify and sha256(file) != meta.get("sha256"):
            return False
    return True


def _natural(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def latest_complete(
    parent: str | os.PathLike[str], *, verify: bool = False
) -> Path | None:
    """The newest complete checkpoint folder in `parent`, or None.

    Hidden folders (temporary or replaced ones) and folders without a valid marker are skipped.
    Newest means the highest `step` recorded in the marker, then the name in natural order
    (`step_10` after `step_9`).
    """
    parent = Path(parent)
    if not parent.is_dir():
        return None
    found = []
    for child in parent.iterdir():
        if child.name.startswith(".") or not child.is_dir():
            continue
        if not is_complete(child, verify=verify):
            log.debug("skipping incomplete checkpoint %s", child)
            continue
        step = (read_marker(child) or {}).get("step")
        found.append(((step if isinstance(step, int) else -1), _natural(child.name), child))
    if not found:
        return None
    return max(found, key=lambda t: (t[0], t[1]))[2]


def save_state(
    folder: str | os.PathLike[str], state: dict[str, Any], *, filename: str = STATE_FILE
) -> Path:
    """Save a training state dict into `folder/filename` with `torch.save`.

    Args:
        folder: an existing folder (typically the temporary one `write_checkpoint` passes).
        state: picklable values and tensors: model and optimizer state dicts, step, RNG states.

    Returns:
        The file written.

    Raises:
        OSError: the file cannot be written (a full disk, for example).
    """
    import torch

    def write(fh: Any) -> None:
        try:
            torch.save(state, fh)
        except RuntimeError as exc:
            # torch's zip writer reports a failed write (ENOSPC) as "unexpected pos ...": raise
            # the disk's error that it hides.
            if isinstance(exc.__context__, OSError):
                raise exc.__context__ from exc
            raise

    return atomic_write(Path(folder) / filename, write)


def load_state(
    path: str | os.PathLike[str],
    *,
    filename: str = STATE_FILE,
    map_location: Any = "cpu",
    verify: bool = True,
) -> dict[str, Any]:
    """Load a state dict saved by `save_state`.

    Args:
        path: a checkpoint folder (its `filename` is read) or the state file itself.
        map_location: passed to `torch.load`; tensors land on the CPU by default.
        verify: for a folder with a `COMPLETE` marker, check its files' hashes first.

    Returns:
        The dict. It is unpickled with `weights_only=False` (it holds numpy RNG states), so load
        only checkpoints you wrote.

    Raises:
        DataFileError: the folder is not a complete checkpoint, or the file is missing or corrupt.
    """
    import torch

    path = Path(path)
    if path.is_dir():
        if read_marker(path) is not None and not is_complete(path, verify=verify):
            raise DataFileError(
                f"{path}: incomplete or corrupt checkpoint (files differ from its {MARKER} "
                "marker); use an older checkpoint (`mipet-tune train --from CHECKPOINT`)"
            )
        path = path / filename
    try:
        with open(path, "rb") as fh:
            state = torch.load(fh, map_location=map_location, weights_only=False)
    except FileNotFoundError as exc:
        raise DataFileError(f"{path}: no checkpoint state file") from exc
    except Exception as exc:
        raise DataFileError(
            f"{path}: cannot read the checkpoint state ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(state, dict):
        raise DataFileError(
            f"{path}: expected a dict of training state, got {type(state).__name__}"
        )
    return state

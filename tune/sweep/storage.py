"""`resolve_storage`: turn a sweep's storage into an absolute path or pass a URI through, and
check that a local folder is creatable, writable and not full.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import uuid
from pathlib import Path

from tune.errors import ConfigError, ResourceError

log = logging.getLogger(__name__)

DEFAULT_MIN_FREE_BYTES = 1_000_000_000
"""`resolve_storage` refuses a local folder with less free space than this (1 GB)."""



def resolve_storage(
    path_or_uri: str | os.PathLike[str],
    *,
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
) -> str:
    """Resolve a sweep's storage location and check that it can take the sweep.

    Args:
        path_or_uri: a local path (`~` expanded, made absolute), or a URI that Ray's storage
            accepts (`s3://`, `gs://`, `abfs://`, ...), passed through unchecked. A `file://` URI
            is checked like a local path and returned as given.
        min_free_bytes: the least free space a local folder must have.

    Returns:
        The absolute path, or the URI.

    Raises:
        ConfigError: an empty value, or a path that names an existing file.
        ResourceError: the folder cannot be created, is not writable, or its disk is full.
    """
    text = os.fspath(path_or_uri).strip()
    if not text:
        raise ConfigError("storage must be a folder or a URI, got an empty value")
    if "://" in text:
        scheme, _, rest = text.partition("://")
        if scheme.lower() != "file":
            return text
        _check_local(Path(rest or "/"), min_free_bytes)
        return text
    folder = Path(text).expanduser().resolve()
    _check_local(folder, min_free_bytes)
    return str(folder)


def check_writable(
    folder: str | os.PathLike[str], *, min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
) -> Path:
    """Create `folder` if needed and check it takes a write and has `min_free_bytes` free.

    Returns:
        The folder, absolute.

    Raises:
        ConfigError: the path names a file.
        ResourceError: "disk full or not writable" cases, with the folder and the reason.
    """
    path = Path(folder).expanduser().resolve()
    _check_local(path, min_free_bytes)
    return path


def _check_local(folder: Path, min_free_bytes: int) -> None:
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"storage {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResourceError(
            f"storage folder {folder} cannot be created: {exc.strerror or exc} "
            f"(disk full or not writable?)"
        ) from exc
    probe = folder / f".mipet-write-test-{uuid.uuid4().hex}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"x" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        what = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "not writable"
        raise ResourceError(f"{what}: {folder}: {exc.strerror or exc}") from exc
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    free = shutil.disk_usage(folder).free
    if free < min_free_bytes:
        raise ResourceError(
            f"disk full: {folder} has {free / 1e9:.2f} GB free, the sweep needs at least "
            f"{min_free_bytes / 1e9:.2f} GB; free space or choose another storage folder"
        )


# ------------------------------------------------------------------------------------ data

"""The one atomic file write of mipet-tune (here because `analysis` imports nothing of ours and
every other package may import it): readers see the old file or the new one, never a mix."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], Any], *,
                 mode: str = "wb") -> Path:
    """Write one file so that readers see the old file or the new one, never a mix: `write(fh)`
    fills a hidden temporary file beside `path`, which is fsynced and then renamed over `path`.

    Returns:
        `path`. On any error the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path

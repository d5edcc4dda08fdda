"""What the real-file readers share: streaming .npz and HDF5 access, checks, `reader_for`.

Each dataset's readers live in its own module (`_dsprites.py`, ...) and are named by its record's
`sources`. They check keys, shapes and dtypes (and the row order, where the file has labels)
before any pixel is copied, and then fill the cache array chunk by chunk, never holding the
dataset whole (Cars3D, 206 MiB at 64x64, is the exception: its files are per object, not per row).
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from models.errors import DataFileError
from tune.data._info import DatasetInfo
from tune.data._record import Dataset, Reader, Source

ROWS = 8192  # rows per chunk while converting
READ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)


_MEMBER = re.compile(r"(?P<file>.+\.(?:h5|hdf5|npz|npy)):(?P<key>[^:/\\]+)", re.IGNORECASE)


def split_source(source: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """`FILE:KEY` (an array inside an .h5, .hdf5, .npz file) -> (FILE, KEY); else (path, None).

    A path that exists as written is never split.
    """
    text = os.fspath(source)
    path = Path(text).expanduser()
    match = _MEMBER.fullmatch(text)
    if match and not path.exists():
        return Path(match["file"]).expanduser(), match["key"]
    return path, None


def source_key(path: Path, key: str | None = None, *, content: bool = False) -> str:
    """Identity of a source file or folder, for the cache key.

    Args:
        path: the file or folder.
        key: the array inside the file, if one is named.
        content: hash the bytes of the file (a folder: of every file below it, by relative
            path) instead of the real path, sizes and modification times of the file (a
            folder: of its files).
    """
    h = hashlib.sha256(b"content" if content else str(path.resolve()).encode())
    if key is not None:
        h.update(f"|:{key}".encode())
    if path.is_file():
        paths = [path]
    elif content:
        paths = sorted(p for p in path.rglob("*") if p.is_file())
    else:
        paths = sorted(p for p in path.iterdir() if p.is_file())
    for p in paths:
        if content:
            h.update(f"|{p.relative_to(path) if p != path else p.name}|".encode())
            with open(p, "rb") as fh:
                while chunk := fh.read(1 << 24):
                    h.update(chunk)
        else:
            st = p.stat()
            h.update(f"|{p.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def found(shapes: dict[str, Any]) -> str:
    return ", ".join(f"'{k}' {v}" for k, v in shapes.items()) or "no arrays"


class NpzMember:
    """A streaming reader of one array inside an .npz (stored or deflated)."""

    def __init__(self, zf: zipfile.ZipFile, key: str) -> None:
        self.file = zf.open(f"{key}.npy")
        version = np.lib.format.read_magic(self.file)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(self.file)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(self.file)
        self.shape, self.fortran, self.dtype = tuple(shape), fortran, np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def read(self, rows: int) -> np.ndarray:
        want = rows * self.row_bytes
        buf = self.file.read(want)
        if len(buf) != want:
            raise EOFError(f"array ends after {len(buf)} of {want} bytes")
        return np.frombuffer(buf, dtype=self.dtype).reshape(rows, *self.shape[1:])


def npz_headers(path: Path) -> tuple[zipfile.ZipFile, dict[str, tuple[tuple[int, ...], str]]]:
    try:
        zf = zipfile.ZipFile(path)
        shapes = {}
        for name in zf.namelist():
            if name.endswith(".npy"):
                m = NpzMember(zf, name[:-4])
                shapes[name[:-4]] = (m.shape, str(m.dtype))
                m.file.close()
    except READ_ERRORS as exc:
        raise DataFileError(f"{path}: not a readable .npz file ({exc}); the file is truncated, "
                            "corrupt or of another format") from exc
    return zf, shapes


def h5_open(path: Path) -> Any:
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataFileError(f"{path}: not a readable HDF5 file ({exc}); the file is truncated, "
                            "corrupt or of another format") from exc


def h5_shapes(f: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    import h5py

    out: dict[str, tuple[tuple[int, ...], str]] = {}
    f.visititems(lambda name, obj: out.__setitem__(name, (obj.shape, str(obj.dtype)))
                 if isinstance(obj, h5py.Dataset) else None)
    return out


def expect(path: Path, what: str, shapes: dict[str, tuple[tuple[int, ...], str]],
           want: dict[str, tuple[tuple[int, ...], str]], hint: str) -> None:
    for key, (shape, dtype) in want.items():
        got = shapes.get(key)
        if got is None or tuple(got[0]) != shape or got[1] != dtype:
            expected = ", ".join(f"'{k}' {s} {d}" for k, (s, d) in want.items())
            seen = found({k: f"{tuple(s)} {d}" for k, (s, d) in shapes.items()})
            raise DataFileError(f"{path}: not a {what} file. Expected {expected}; found {seen}. "
                                f"{hint}")


def check_order(path: Path, info: DatasetInfo, classes: np.ndarray, what: str) -> None:
    idx = np.arange(info.num_images, dtype=np.int64)
    expected = (idx[:, None] // info.bases) % np.asarray(info.factor_sizes)
    if classes.shape != expected.shape or not np.array_equal(classes, expected):
        bad = int(np.argmax((classes != expected).any(axis=1))) if \
            classes.shape == expected.shape else 0
        raise DataFileError(f"{path}: {what} rows are not in the standard order (last factor "
                            f"fastest); first differing row {bad}: {classes[bad].tolist()} "
                            f"instead of {expected[bad].tolist()}")


def values_to_classes(path: Path, info: DatasetInfo, values: np.ndarray) -> np.ndarray:
    out = np.empty(values.shape, dtype=np.int64)
    for k, table in enumerate(info.factor_values):
        dist = np.abs(values[:, k, None] - table[None, :])
        out[:, k] = dist.argmin(axis=1)
        if dist.min(axis=1).max() > 1e-3:
            raise DataFileError(f"{path}: label column {k} ({info.factor_names[k]}) holds values "
                                f"outside {np.round(table, 4).tolist()}")
    return out


def chunked_fill(path: Path, n: int, write: Callable[[np.ndarray, int, int], None]
                 ) -> Callable[[np.ndarray, Callable[[int], None] | None], None]:
    """A reader's `fill`: `write(arr, start, stop)` per chunk of `ROWS` rows, read errors
    reported as one DataFileError naming the file and the first image of the chunk."""
    def fill(arr: np.ndarray, progress: Callable[[int], None] | None) -> None:
        for start in range(0, n, ROWS):
            stop = min(start + ROWS, n)
            try:
                write(arr, start, stop)
            except DataFileError:
                raise
            except READ_ERRORS as exc:
                raise DataFileError(f"{path}: truncated or corrupt at image {start} ({exc})") \
                    from exc
            if progress is not None:
                progress(stop - start)
    return fill


def h5_fill(path: Path, ds: Any, n: int) -> Callable[..., None]:
    """Fill the cache from an HDF5 dataset of uint8 images, in place (no extra copy)."""
    return chunked_fill(path, n, lambda arr, a, b: ds.read_direct(arr, np.s_[a:b], np.s_[a:b]))


def source_of(record: Dataset, path: Path, key: str | None) -> Source:
    """The record's source that reads `path` (and takes `key`, if one is named).

    Raises:
        DataFileError: `path` is of a format the dataset does not read, or names a key in a
            file whose source takes none.
    """
    source = record.source_for(path)
    if source is None:
        what = "a folder" if path.is_dir() else f"a file named {path.name!r}"
        raise DataFileError(f"{path}: {record.title} reads {', '.join(record.formats)}, not "
                            f"{what}. {record.source_hint}")
    if key is not None and not source.takes_key:
        raise DataFileError(f"{path}:{key}: {record.title} takes no ':KEY' after a file name; "
                            f"give the file alone. {record.source_hint}")
    return source


def reader_for(record: Dataset, path: Path, key: str | None = None) -> Reader:
    """Validate the real file or folder `path` (array `key` inside it) and return its reader.

    Raises:
        DataFileError: a format the dataset does not read, or a malformed file.
    """
    source = source_of(record, path, key)
    return source.read(path, record, key) if source.takes_key else source.read(path, record)

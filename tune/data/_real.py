"""Readers of the real dataset files (spec/datasets.md sections 1.1, 2.1, 3, 4).

Each reader checks keys, shapes and dtypes (and the row order, where the file has labels) before
any pixel is copied, and then fills the cache array chunk by chunk, never holding the dataset whole
(Cars3D, 206 MiB at 64x64, is the exception: its files are per object, not per row).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from models.errors import DataFileError
from tune.data import _info
from tune.data._info import DatasetInfo

_ROWS = 8192
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)

_DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz (or its .hdf5 twin)"


def source_key(path: Path) -> str:
    """Identity of a source file or folder: its real path, sizes and modification times."""
    h = hashlib.sha256(str(path.resolve()).encode())
    paths = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    for p in paths:
        st = p.stat()
        h.update(f"|{p.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _found(shapes: dict[str, Any]) -> str:
    return ", ".join(f"'{k}' {v}" for k, v in shapes.items()) or "no arrays"


class _NpzMember:
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


def _npz_headers(path: Path) -> tuple[zipfile.ZipFile, dict[str, tuple[tuple[int, ...], str]]]:
    try:
        zf = zipfile.ZipFile(path)
        shapes = {}
        for name in zf.namelist():
            if name.endswith(".npy"):
                m = _NpzMember(zf, name[:-4])
                shapes[name[:-4]] = (m.shape, str(m.dtype))
                m.file.close()
    except _READ_ERRORS as exc:
        raise DataFileError(f"{path}: not a readable .npz file ({exc}); the file is truncated, "
                            "corrupt or of another format") from exc
    return zf, shapes


def _h5_open(path: Path) -> Any:
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataFileError(f"{path}: not a readable HDF5 file ({exc}); the file is truncated, "
                            "corrupt or of another format") from exc


def _h5_shapes(f: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    import h5py

    out: dict[str, tuple[tuple[int, ...], str]] = {}
    f.visititems(lambda name, obj: out.__setitem__(name, (obj.shape, str(obj.dtype)))
                 if isinstance(obj, h5py.Dataset) else None)
    return out


def _expect(path: Path, what: str, shapes: dict[str, tuple[tuple[int, ...], str]],
            want: dict[str, tuple[tuple[int, ...], str]], hint: str) -> None:
    for key, (shape, dtype) in want.items():
        got = shapes.get(key)
        if got is None or tuple(got[0]) != shape or got[1] != dtype:
            expected = ", ".join(f"'{k}' {s} {d}" for k, (s, d) in want.items())
            found = _found({k: f"{tuple(s)} {d}" for k, (s, d) in shapes.items()})
            raise DataFileError(f"{path}: not a {what} file. Expected {expected}; found {found}. "
                                f"{hint}")


class Reader:
    """A validated real file: its factor table and a function that fills the cache rows."""

    def __init__(self, info: DatasetInfo, row_shape: tuple[int, ...], packed: bool,
                 fill: Callable[[np.ndarray, Callable[[int], None] | None], None]) -> None:
        self.info = info
        self.row_shape = row_shape
        self.packed = packed
        self.fill = fill


def _check_order(path: Path, info: DatasetInfo, classes: np.ndarray, what: str) -> None:
    idx = np.arange(info.num_images, dtype=np.int64)
    expected = (idx[:, None] // info.bases) % np.asarray(info.factor_sizes)
    if classes.shape != expected.shape or not np.array_equal(classes, expected):
        bad = int(np.argmax((classes != expected).any(axis=1))) if \
            classes.shape == expected.shape else 0
        raise DataFileError(f"{path}: {what} rows are not in the standard order (last factor "
                            f"fastest); first differing row {bad}: {classes[bad].tolist()} "
                            f"instead of {expected[bad].tolist()}")


def _values_to_classes(path: Path, info: DatasetInfo, values: np.ndarray) -> np.ndarray:
    out = np.empty(values.shape, dtype=np.int64)
    for k, table in enumerate(info.factor_values):
        dist = np.abs(values[:, k, None] - table[None, :])
        out[:, k] = dist.argmin(axis=1)
        if dist.min(axis=1).max() > 1e-3:
            raise DataFileError(f"{path}: label column {k} ({info.factor_names[k]}) holds values "
                                f"outside {np.round(table, 4).tolist()}")
    return out


def _pack_rows(rows: np.ndarray) -> np.ndarray:
    if rows.size and rows.max() > 1:
        raise DataFileError("dSprites pixels must be 0 or 1")
    return np.packbits(rows.reshape(len(rows), -1).astype(bool), axis=1)


def read_dsprites(path: Path) -> Reader:
    info = _info.DSPRITES
    n = info.num_images
    hint = f"Point --source at the original {_DSPRITES_FILE}, or leave it out for the generator."
    if path.suffix.lower() in (".h5", ".hdf5"):
        f = _h5_open(path)
        shapes = _h5_shapes(f)
        _expect(path, "dSprites", shapes, {"imgs": ((n, 64, 64), "uint8"),
                                           "latents/classes": ((n, 6), "int64")}, hint)
        classes = np.asarray(f["latents/classes"])

        def get(start: int, stop: int) -> np.ndarray:
            return f["imgs"][start:stop]
    else:
        zf, shapes = _npz_headers(path)
        _expect(path, "dSprites", shapes, {"imgs": ((n, 64, 64), "uint8"),
                                           "latents_classes": ((n, 6), "int64")}, hint)
        try:
            classes = np.asarray(np.load(path, mmap_mode=None)["latents_classes"])
        except _READ_ERRORS as exc:
            raise DataFileError(f"{path}: cannot read 'latents_classes' ({exc})") from exc
        member = _NpzMember(zf, "imgs")

        def get(start: int, stop: int) -> np.ndarray:
            return member.read(stop - start)
    _check_order(path, info, classes[:, 1:], "dSprites")
    if (classes[:, 0] != 0).any():
        raise DataFileError(f"{path}: dSprites colour class must be 0 in every row")

    def fill(arr: np.ndarray, progress: Callable[[int], None] | None) -> None:
        for start in range(0, n, _ROWS):
            stop = min(start + _ROWS, n)
            try:
                arr[start:stop] = _pack_rows(get(start, stop))
            except DataFileError as exc:
                raise DataFileError(f"{path}: {exc}") from exc
            except _READ_ERRORS as exc:
                raise DataFileError(f"{path}: truncated or corrupt at image {start} ({exc})") \
                    from exc
            if progress is not None:
                progress(stop - start)

    return Reader(info, (64 * 64 // 8,), True, fill)


def read_shapes3d(path: Path) -> Reader:
    info = _info.SHAPES3D
    n = info.num_images
    f = _h5_open(path)
    shapes = _h5_shapes(f)
    _expect(path, "3D Shapes", shapes, {"images": ((n, 64, 64, 3), "uint8"),
                                        "labels": ((n, 6), "float64")},
            "Point --source at the original 3dshapes.h5, or leave it out for the generator.")
    classes = _values_to_classes(path, info, np.asarray(f["labels"]))
    _check_order(path, info, classes, "3D Shapes")
    return Reader(info, (64, 64, 3), False, _h5_fill(path, f["images"], n))


def _h5_fill(path: Path, ds: Any, n: int) -> Callable[..., None]:
    def fill(arr: np.ndarray, progress: Callable[[int], None] | None) -> None:
        for start in range(0, n, _ROWS):
            stop = min(start + _ROWS, n)
            try:
                ds.read_direct(arr, np.s_[start:stop], np.s_[start:stop])
            except _READ_ERRORS as exc:
                raise DataFileError(f"{path}: truncated or corrupt at image {start} ({exc})") \
                    from exc
            if progress is not None:
                progress(stop - start)
    return fill


def read_mpi3d(path: Path, name: str) -> Reader:
    full, old = _info.mpi3d_info(name, 6), _info.mpi3d_info(name, 4)
    zf, shapes = _npz_headers(path)
    got = shapes.get("images")
    lengths = {full.num_images: full, old.num_images: old}
    if got is None or got[1] != "uint8" or tuple(got[0][1:]) != (64, 64, 3) or \
            got[0][0] not in lengths:
        raise DataFileError(
            f"{path}: not an MPI3D file. Expected 'images' ({full.num_images}, 64, 64, 3) uint8 "
            f"(6 colours x 6 shapes) or ({old.num_images}, 64, 64, 3) uint8 (the older 4 x 4 "
            f"toy/realistic release); "
            f"found {_found({k: f'{s} {d}' for k, (s, d) in shapes.items()})}"
            ". Point --source at mpi3d_toy.npz, mpi3d_realistic.npz or mpi3d_real.npz, or leave "
            "it out for the generator.")
    info = lengths[got[0][0]]
    member = _NpzMember(zf, "images")
    n = info.num_images

    def fill(arr: np.ndarray, progress: Callable[[int], None] | None) -> None:
        for start in range(0, n, _ROWS):
            stop = min(start + _ROWS, n)
            try:
                arr[start:stop] = member.read(stop - start)
            except _READ_ERRORS as exc:
                raise DataFileError(f"{path}: truncated or corrupt at image {start} ({exc})") \
                    from exc
            if progress is not None:
                progress(stop - start)

    return Reader(info, (64, 64, 3), False, fill)


def _resize64(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 128, 128, 3) -> (N, 64, 64, 3) with Lanczos (PIL), as dlib's thumbnail does."""
    from PIL import Image

    if images.shape[1:3] == (64, 64):
        return images
    return np.stack([np.asarray(Image.fromarray(im).resize((64, 64), Image.LANCZOS))
                     for im in images])


def read_cars3d(path: Path) -> Reader:
    info = _info.CARS3D
    n_elev, n_azim, n_obj = info.factor_sizes
    if not path.is_dir():
        raise DataFileError(f"{path}: Cars3D is a folder (data/cars of nips2015-analogy-data) "
                            "holding list.txt and car_*_mesh.mat files; found a file")
    listing = path / "list.txt"
    if not listing.is_file():
        mats = sorted(p.name for p in path.glob("*.mat"))
        raise DataFileError(f"{listing}: missing. Expected list.txt naming the {n_obj} Cars3D "
                            f"objects in order, plus their .mat files; found {len(mats)} .mat "
                            "files")
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if len(names) != n_obj:
        raise DataFileError(f"{listing}: expected {n_obj} object names, found {len(names)}")
    files = [path / (nm if nm.endswith(".mat") else f"{nm}.mat") for nm in names]
    missing = [p for p in files if not p.is_file()]
    if missing:
        raise DataFileError(f"{missing[0]}: missing ({len(missing)} of the {n_obj} .mat files "
                            f"named in list.txt are missing; found "
                            f"{len(list(path.glob('*.mat')))} .mat files in {path})")
    want = (128, 128, 3, n_azim, n_elev)

    def load(p: Path) -> np.ndarray:
        import scipy.io

        try:
            im = scipy.io.loadmat(p, variable_names=["im"]).get("im")
        except Exception as exc:  # noqa: BLE001  (scipy raises many kinds on garbage bytes)
            raise DataFileError(f"{p}: not a readable MATLAB file ({exc})") from exc
        shape_ok = im is not None and im.shape in (want, (64, 64, 3, n_azim, n_elev))
        if not shape_ok or im.dtype != np.uint8:
            found = "no 'im'" if im is None else f"'im' {im.shape} {im.dtype}"
            raise DataFileError(f"{p}: expected 'im' {want} uint8 (height, width, RGB, azimuth, "
                                f"elevation); found {found}")
        return im

    load(files[0])  # fail early on a wrong first file, before the cache is created

    def fill(arr: np.ndarray, progress: Callable[[int], None] | None) -> None:
        azim, elev = np.meshgrid(np.arange(n_azim), np.arange(n_elev), indexing="ij")
        for obj, p in enumerate(files):
            im = load(p)  # (H, W, 3, azimuth, elevation)
            views = np.einsum("hwcae->aehwc", im).reshape(n_azim * n_elev, *im.shape[:3])
            idx = elev.ravel() * (n_azim * n_obj) + azim.ravel() * n_obj + obj
            arr[idx] = _resize64(np.ascontiguousarray(views))
            if progress is not None:
                progress(n_azim * n_elev)

    return Reader(info, (64, 64, 3), False, fill)


def reader_for(name: str, path: Path) -> Reader:
    """Validate the real file or folder `path` of dataset `name` and return its reader."""
    if not os.path.exists(path):
        raise DataFileError(f"{path}: no such file or folder (the real {name} data); give an "
                            "existing path, or leave --source out for the built-in generator")
    if name == "dsprites":
        return read_dsprites(path)
    if name == "shapes3d":
        return read_shapes3d(path)
    if name == "cars3d":
        return read_cars3d(path)
    return read_mpi3d(path, name)

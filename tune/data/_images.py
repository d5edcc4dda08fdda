"""Your own images: a folder of PNG/JPEG files, an .npy/.npz array or an HDF5 dataset; no factors.

`data: {name: images, source: PATH}` with PATH one of
- a folder: every .png, .jpg and .jpeg below it (recursively), in sorted path order;
- `file.npy`, or `file.npz` / `file.npz:KEY` (its only array, or 'images', or KEY): uint8
  (N, H, W) or (N, H, W, C) with C = 1 or 3 (also bool, or floats in [0, 1]);
- `file.h5:KEY` (or `file.hdf5`; KEY may be left out when the file holds one dataset): the same
  array as an HDF5 dataset.

Each image is center-cropped to a square and resized to 64 x 64 with Pillow (Lanczos); images
smaller than 64 px on a side are refused. Grey data stays one channel, colour data three; a folder
that mixes both is converted to RGB with a warning. The result is built once into the shared
cache, keyed by a hash of the source's bytes, so an edited folder is rebuilt. There are no
factors (`num_factors == 0`): only the unsupervised metrics apply (the record's `has_factors`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from models.errors import DataFileError
from tune.data import _real
from tune.data._info import DatasetInfo
from tune.data._record import FOLDER, Dataset, ModelDefaults, Reader, Source

log = logging.getLogger(__name__)

SIDE = 64
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
_HINT = ("Point --source at a folder of PNG/JPEG images, an .npy/.npz array (N, H, W[, C]) or an "
         "HDF5 dataset given as file.h5:KEY.")

IMAGES = DatasetInfo(name="images", factor_names=(), factor_sizes=(), factor_values=(),
                     observation_shape=(SIDE, SIDE, 3))


def _info(n: int, channels: int) -> DatasetInfo:
    return DatasetInfo(name="images", factor_names=(), factor_sizes=(), factor_values=(),
                       observation_shape=(SIDE, SIDE, channels), size=n)


def _square64(image: Any) -> np.ndarray:
    """uint8 (64, 64, C): a PIL image center-cropped to a square and resized (Lanczos)."""
    from PIL import Image

    w, h = image.size
    s = min(w, h)
    if (w, h) != (SIDE, SIDE):
        left, top = (w - s) // 2, (h - s) // 2
        image = image.crop((left, top, left + s, top + s)).resize((SIDE, SIDE), Image.LANCZOS)
    arr = np.asarray(image, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


# --- a folder of files -------------------------------------------------------------------------
def image_files(folder: Path) -> list[Path]:
    """Every PNG/JPEG file below `folder`, in sorted path order."""
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and p.suffix.lower() in IMAGE_SUFFIXES)


def _scan(folder: Path) -> tuple[list[Path], int]:
    """The image files and the channels they will have (1 if all grey, else 3), from headers."""
    from PIL import Image

    files = image_files(folder)
    if not files:
        raise DataFileError(f"{folder}: no PNG or JPEG files in this folder or below it. "
                            f"{_HINT}")
    grey = 0
    for f in files:
        try:
            with Image.open(f) as im:
                size, mode = im.size, im.mode
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DataFileError(f"{f}: not a readable PNG or JPEG image ({exc})") from exc
        if min(size) < SIDE:
            raise DataFileError(f"{f}: {size[0]} x {size[1]} pixels, smaller than {SIDE} x "
                                f"{SIDE}; give images of at least {SIDE} px on each side")
        grey += mode in _GREY_MODES
    if 0 < grey < len(files):
        log.warning("%s: %d of the %d images are grey and the others colour; all are "
                    "converted to RGB", folder, grey, len(files))
    return files, 1 if grey == len(files) else 3


def read_folder(path: Path, record: Dataset) -> Reader:
    files, channels = _scan(path)
    mode = "L" if channels == 1 else "RGB"

    def fill(arr: np.ndarray, progress: Callable[[int], None] | None) -> None:
        from PIL import Image

        for i, f in enumerate(files):
            try:
                with Image.open(f) as im:
                    arr[i] = _square64(im.convert(mode))
            except (OSError, ValueError, SyntaxError) as exc:
                raise DataFileError(f"{f}: not a readable PNG or JPEG image ({exc})") from exc
            if progress is not None:
                progress(1)

    return Reader(_info(len(files), channels), fill)


# --- an array in a file ------------------------------------------------------------------------
class _Array:
    """The image array of an .npy, .npz or HDF5 file: its shape and dtype first, rows lazily."""

    def __init__(self, path: Path, key: str | None) -> None:
        self.path, suffix = path, path.suffix.lower()
        self._rows: Callable[[int, int], np.ndarray]
        if suffix == ".npy":
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise DataFileError(f"{path}: not a readable .npy file ({exc})") from exc
            self.where, self.shape, self.dtype = str(path), tuple(arr.shape), str(arr.dtype)
            self._rows = lambda a, b: np.asarray(arr[a:b])
        elif suffix == ".npz":
            _, shapes = _real.npz_headers(path)
            name = self._pick(key, shapes, "images")
            self.where = f"{path}:{name}"
            self.shape, self.dtype = tuple(shapes[name][0]), shapes[name][1]
            self._rows = lambda a, b: self._npz(name)[a:b]
        else:
            f = _real.h5_open(path)
            shapes = _real.h5_shapes(f)
            name = self._pick(key, shapes, None)
            self.where = f"{path}:{name}"
            self.shape, self.dtype = tuple(shapes[name][0]), shapes[name][1]
            self._rows = lambda a, b: np.asarray(f[name][a:b])
        self._check()
        self._loaded: np.ndarray | None = None

    def _pick(self, key: str | None, shapes: dict[str, Any], default: str | None) -> str:
        if key is not None:
            if key not in shapes:
                raise DataFileError(f"{self.path}: no array {key!r}; found "
                                    f"{_real.found({k: v[0] for k, v in shapes.items()})}")
            return key
        if len(shapes) == 1:
            return next(iter(shapes))
        if default in shapes:
            return default
        raise DataFileError(f"{self.path}: holds {len(shapes)} arrays "
                            f"({', '.join(sorted(shapes)) or 'none'}); name one as "
                            f"{self.path.name}:KEY")

    def _npz(self, name: str) -> np.ndarray:
        if self._loaded is None:
            try:
                self._loaded = np.load(self.path)[name]
            except _real.READ_ERRORS as exc:
                raise DataFileError(f"{self.where}: truncated or corrupt ({exc})") from exc
        return self._loaded

    def _check(self) -> None:
        shape, where = self.shape, self.where
        if len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3)):
            raise DataFileError(f"{where}: array {shape} is not images (N, H, W) or "
                                "(N, H, W, C) with C = 1 or 3")
        if shape[0] == 0:
            raise DataFileError(f"{where}: holds no images")
        if min(shape[1], shape[2]) < SIDE:
            raise DataFileError(f"{where}: images are {shape[2]} x {shape[1]} pixels, smaller "
                                f"than {SIDE} x {SIDE}")
        if self.dtype not in ("uint8", "bool") and not self.dtype.startswith("float"):
            raise DataFileError(f"{where}: dtype {self.dtype}; give uint8 (0..255), bool or "
                                "floats in [0, 1]")

    @property
    def channels(self) -> int:
        return 1 if len(self.shape) == 3 else self.shape[3]

    def rows(self, start: int, stop: int) -> np.ndarray:
        """uint8 (n, 64, 64, C) images [start, stop), cropped and resized."""
        from PIL import Image

        raw = self._rows(start, stop)
        if raw.dtype == bool:
            raw = raw.astype(np.uint8) * 255
        elif raw.dtype.kind == "f":
            if raw.size and (not np.isfinite(raw).all() or raw.min() < 0 or raw.max() > 1):
                raise DataFileError(f"{self.where}: float images must lie in [0, 1] (images "
                                    f"{start} to {stop - 1} do not)")
            raw = np.round(raw * 255).astype(np.uint8)
        if raw.ndim == 4 and raw.shape[3] == 1:
            raw = raw[..., 0]
        if raw.shape[1:3] == (SIDE, SIDE):
            return raw.reshape(len(raw), SIDE, SIDE, self.channels)
        return np.stack([_square64(Image.fromarray(im)) for im in raw])


def read_array(path: Path, record: Dataset, key: str | None = None) -> Reader:
    array = _Array(path, key)

    def write(arr: np.ndarray, start: int, stop: int) -> None:
        arr[start:stop] = array.rows(start, stop)

    return Reader(_info(array.shape[0], array.channels),
                        _real.chunked_fill(path, array.shape[0], write))


def peek(path: Path, key: str | None) -> DatasetInfo:
    """The number of images and their channels, from headers only (for the model defaults)."""
    if path.is_dir():
        files, channels = _scan(path)
        return _info(len(files), channels)
    array = _Array(path, key)
    return _info(array.shape[0], array.channels)


DATASET = Dataset(
    info=IMAGES,
    title="images",
    # image_channels and dataset_size are replaced by the source's (see `peek`)
    model=ModelDefaults(image_channels=3, dense_dim=(256, 256), recon_loss="mse",
                        dataset_size=1),
    generator=None,
    sources=(
        Source((FOLDER,), read_folder),
        Source((".npy",), read_array),
        Source((".npz",), read_array, takes_key=True),
        Source((".h5", ".hdf5"), read_array, takes_key=True),
    ),
    source_hint=_HINT,
    peek=peek,
    hash_content=True,
)
RECORDS = (DATASET,)

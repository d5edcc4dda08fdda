"""dSprites: its record, factor table, procedural generator and the readers of the real file.

The generator follows what is known of the original drawing (Love2D vector shapes, rasterised).

Pixel (row i, col j) is 1 iff its centre (j + 0.5, i + 0.5) lies inside the shape. The shape centre
is (16 + 32 posX, 16 + 32 posY) in pixels, the shape is rotated counter-clockwise on screen by the
orientation value, and scaled about its centre. Shapes never reach more than 13.6 * scale px from
their centre, so each image is evaluated in a window of at most 32 x 32 px around its centre and
scattered into 64 x 64. Fit to the 12 real images: 17 differing pixels in all (at most 5 each).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from models.errors import DataFileError
from tune.data import _real
from tune.data._info import DatasetInfo
from tune.data._record import Dataset, Generator, ModelDefaults, Reader, Source

VERSION = 1  # bump when the pixels change: it keys the cache file

# latents_classes[:, 1:] of the real file: colour (one class) is left out, as dlib does
DSPRITES = DatasetInfo(
    name="dsprites",
    factor_names=("shape", "scale", "orientation", "posX", "posY"),
    factor_sizes=(3, 6, 40, 32, 32),
    factor_values=(
        np.array([1.0, 2.0, 3.0]),
        np.linspace(0.5, 1.0, 6),
        np.linspace(0.0, 2 * np.pi, 40),
        np.linspace(0.0, 1.0, 32),
        np.linspace(0.0, 1.0, 32),
    ),
    observation_shape=(64, 64, 1),
    binary=True,
    hidden_sizes=(1,),
)

SQUARE_HALF = 9.6  # px at scale 1 (side 19.2)
ELLIPSE_AXES = (12.8, 7.2)  # semi-axes, major horizontal at orientation 0
HEART_R = 5.25  # lobe radius
HEART_DX = 4.3  # lobe centres at u = +-HEART_DX
HEART_TIP = 13.0  # tip this far below the lobe centres
_WIN = 32


def _heart_polygon() -> np.ndarray:
    """(5, 2) CCW polygon: tip, right tangent point, right centre, left centre, left tangent point.

    In local (u, v) coordinates with v up, at scale 1, centred on the bounding box.
    """
    v0 = (HEART_TIP - HEART_R) / 2.0  # lobe centres above the bbox centre
    tip = np.array([0.0, v0 - HEART_TIP])
    w = np.array([HEART_DX, HEART_TIP])
    d = np.hypot(*w)
    along = np.sqrt(d * d - HEART_R * HEART_R)
    alpha = np.arctan2(w[1], w[0]) - np.arcsin(HEART_R / d)
    p_r = tip + along * np.array([np.cos(alpha), np.sin(alpha)])
    p_l = p_r * np.array([-1.0, 1.0])
    return np.stack([tip, p_r, [HEART_DX, v0], [-HEART_DX, v0], p_l])


_HEART = _heart_polygon()


def _inside(shape: int, u: np.ndarray, v: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Boolean mask of local points (u, v) (v up) inside shape class `shape` at `scale`."""
    if shape == 0:
        half = SQUARE_HALF * scale
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if shape == 1:
        a, b = ELLIPSE_AXES
        return (u / (a * scale)) ** 2 + (v / (b * scale)) ** 2 <= 1.0
    # heart: two discs plus the convex polygon under their centres
    un = u / scale
    vn = v / scale
    v0 = _HEART[2, 1]
    r2 = HEART_R * HEART_R
    dv2 = (vn - v0) ** 2
    mask = ((un - HEART_DX) ** 2 + dv2 <= r2) | ((un + HEART_DX) ** 2 + dv2 <= r2)
    poly = np.ones_like(mask)
    for k in range(5):
        p, q = _HEART[k], _HEART[(k + 1) % 5]
        ex, ey = q - p
        poly &= ex * (vn - p[1]) - ey * (un - p[0]) >= 0.0
    return mask | poly


def render_bool(factors: np.ndarray, info: DatasetInfo = DSPRITES) -> np.ndarray:
    """Draw dSprites images from class indices.

    Args:
        factors: int (N, 5) classes of (shape, scale, orientation, posX, posY).
        info: factor table (value tables are looked up by class).
    Returns:
        bool (N, 64, 64) images, True where the shape covers the pixel centre.
    """
    factors = np.asarray(factors, dtype=np.int64).reshape(-1, 5)
    n = len(factors)
    out = np.zeros((n, 64, 64), dtype=bool)
    if n == 0:
        return out
    scale = info.factor_values[1][factors[:, 1]]
    # 0 and 2*pi must give the very same image: reduce the angle first
    theta = np.mod(info.factor_values[2][factors[:, 2]], 2 * np.pi)
    cx = 16.0 + 32.0 * info.factor_values[3][factors[:, 3]]
    cy = 16.0 + 32.0 * info.factor_values[4][factors[:, 4]]
    # window just large enough for the largest shape in this call (extent 13.6 px at scale 1)
    win_size = min(_WIN, 2 * int(np.ceil(13.6 * scale.max() + 1.5)))
    c0 = np.floor(cx).astype(np.int64) - win_size // 2  # window origin, column
    r0 = np.floor(cy).astype(np.int64) - win_size // 2  # window origin, row
    ar = np.arange(win_size)
    dx = (c0[:, None] + ar + 0.5 - cx[:, None])[:, None, :]  # (N, 1, W) column offsets
    dy_up = -(r0[:, None] + ar + 0.5 - cy[:, None])[:, :, None]  # (N, W, 1) upward offsets
    cos = np.cos(theta)[:, None, None]
    sin = np.sin(theta)[:, None, None]
    u = (cos * dx + sin * dy_up).astype(np.float64)
    v = -sin * dx + cos * dy_up
    win = np.zeros((n, win_size, win_size), dtype=bool)
    for shape in np.unique(factors[:, 0]):
        rows = factors[:, 0] == shape
        win[rows] = _inside(int(shape), u[rows], v[rows], scale[rows][:, None, None])
    rr = (r0[:, None] + ar)[:, :, None]
    cc = (c0[:, None] + ar)[:, None, :]
    out[np.arange(n)[:, None, None], rr, cc] = win
    return out


def render(factors: np.ndarray, info: DatasetInfo = DSPRITES) -> np.ndarray:
    """uint8 (N, 64, 64, 1) images with values 0/1 for class rows (N, 5)."""
    return render_bool(factors, info).view(np.uint8)[..., None]


def render_packed_rows(start: int, stop: int, info: DatasetInfo = DSPRITES) -> np.ndarray:
    """Cache rows [start, stop): uint8 (stop - start, 512), each image's 4096 bits packed."""
    idx = np.arange(start, stop, dtype=np.int64)
    factors = (idx[:, None] // info.bases) % np.asarray(info.factor_sizes)
    bits = render_bool(factors, info).reshape(len(idx), 64 * 64)
    return np.packbits(bits, axis=1)


# --- the real file -----------------------------------------------------------------------------
_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz (or its .hdf5 twin)"
_HINT = f"Point --source at the original {_FILE}, or leave it out for the generator."


def _reader(path: Path, info: DatasetInfo, classes: np.ndarray,
            get: Callable[[int, int], np.ndarray]) -> Reader:
    """Check the row order of `classes` (N, 6) and pack the pixels `get(start, stop)` to bits."""
    _real.check_order(path, info, classes[:, 1:], "dSprites")
    if (classes[:, 0] != 0).any():
        raise DataFileError(f"{path}: dSprites colour class must be 0 in every row")

    def write(arr: np.ndarray, start: int, stop: int) -> None:
        rows = get(start, stop)
        if rows.size and rows.max() > 1:
            raise DataFileError(f"{path}: dSprites pixels must be 0 or 1")
        arr[start:stop] = np.packbits(rows.reshape(len(rows), -1).astype(bool), axis=1)

    return Reader(info, _real.chunked_fill(path, info.num_images, write))


def read_npz(path: Path, record: Dataset) -> Reader:
    """The original .npz: 'imgs' (N, 64, 64) uint8 0/1 and 'latents_classes' (N, 6) int64."""
    info = record.info
    n = info.num_images
    zf, shapes = _real.npz_headers(path)
    _real.expect(path, "dSprites", shapes, {"imgs": ((n, 64, 64), "uint8"),
                                            "latents_classes": ((n, 6), "int64")}, _HINT)
    try:
        classes = np.asarray(np.load(path, mmap_mode=None)["latents_classes"])
    except _real.READ_ERRORS as exc:
        raise DataFileError(f"{path}: cannot read 'latents_classes' ({exc})") from exc
    member = _real.NpzMember(zf, "imgs")
    return _reader(path, info, classes, lambda start, stop: member.read(stop - start))


def read_hdf5(path: Path, record: Dataset) -> Reader:
    """The .hdf5 twin: datasets 'imgs' and 'latents/classes'."""
    info = record.info
    n = info.num_images
    f: Any = _real.h5_open(path)
    _real.expect(path, "dSprites", _real.h5_shapes(f), {"imgs": ((n, 64, 64), "uint8"),
                                                        "latents/classes": ((n, 6), "int64")},
                 _HINT)
    return _reader(path, info, np.asarray(f["latents/classes"]),
                   lambda start, stop: f["imgs"][start:stop])


DATASET = Dataset(
    info=DSPRITES,
    title="dSprites",
    model=ModelDefaults(image_channels=1, dense_dim=(256, 128), recon_loss="bce",
                        dataset_size=737_280),
    # 360 MiB bit-packed, drawn once into the cache by all cores (about a minute)
    generator=Generator(render=render, version=VERSION, cached=True,
                        cache_rows=render_packed_rows, rows_per_task=4096),
    sources=(Source((".npz",), read_npz), Source((".hdf5", ".h5"), read_hdf5)),
    source_hint=_HINT,
)
RECORDS = (DATASET,)

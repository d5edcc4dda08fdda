"""3D Shapes: its record, factor table, the reader of 3dshapes.h5 and a 2.5D stand-in.

The stand-in follows the layout measured from real images: a sky band (rows 0-16), a back wall
and a side wall whose corner moves with the azimuth (rows 17-40), a floor shaded from the front
left (rows 41-63), an object (cube, cylinder, sphere, capsule) with Lambert-like shading and a
soft shadow to its lower right. The image separates into a background (floor hue, wall hue,
orientation), a shadow (scale, shape, orientation) and an object layer (object hue, scale, shape,
orientation); these small tables (about 16 MB) are built once per process on first use and every
image is composed from them on demand, vectorised over the batch. The full 5.9 GB dataset is
never stored.
"""

from __future__ import annotations

import colorsys
import functools
from pathlib import Path

import numpy as np

from tune.data import _real
from tune.data._info import DatasetInfo, classes
from tune.data._record import Dataset, Generator, ModelDefaults, Reader, Source

VERSION = 2
SHAPES3D = DatasetInfo(
    name="shapes3d",
    factor_names=("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"),
    factor_sizes=(10, 10, 10, 8, 4, 15),
    factor_values=(
        np.arange(10) / 10.0,  # HSV hues 0.0 .. 0.9 (1.0 would be 0.0 again)
        np.arange(10) / 10.0,
        np.arange(10) / 10.0,
        np.linspace(0.75, 1.25, 8),
        classes(4),  # cube, cylinder, sphere, capsule
        np.linspace(-30.0, 30.0, 15),  # camera azimuth, degrees
    ),
    observation_shape=(64, 64, 3),
)
SKY = np.array([0.60, 0.89, 0.98], dtype=np.float32)
_SKY_ROWS = 17
_FLOOR_ROW = 41


def hue_rgb(hues: np.ndarray) -> np.ndarray:
    """float32 (K, 3) RGB of HSV(h, 1, 1)."""
    return np.array([colorsys.hsv_to_rgb(float(h), 1.0, 1.0) for h in hues], dtype=np.float32)


@functools.lru_cache(maxsize=4)
def _tables(sizes: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The per-process tables every image is composed from, for a factor table cut to `sizes`.

    `back`: uint8 background images per (floor hue, wall hue, orientation); `pix`, `alpha`,
    `oshade`, `shadow`: the object and its shadow as sparse pixel lists per (scale, shape,
    orientation).
    """
    info = SHAPES3D.with_sizes(sizes)
    angles = info.factor_values[5]
    rows, cols = np.mgrid[0:64, 0:64].astype(np.float32) + 0.5
    region, shade = _room(angles, rows, cols)
    alpha, oshade, shadow = _object_layers(info, rows, cols)
    return {"back": _backgrounds(info, region, shade), **_sparse(alpha, oshade, shadow)}


def _room(angles: np.ndarray, rows: np.ndarray,
          cols: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per orientation: int64 (64, 64) regions (0 sky, 1 back wall, 2 side wall, 3 floor) and
    float32 (64, 64) shading."""
    texture = np.random.default_rng(3).normal(0.0, 1.0, (64, 64)).astype(np.float32)
    texture = (texture + np.roll(texture, 1, 0) + np.roll(texture, 1, 1)) / 3.0
    region, shade = [], []
    for a in angles:
        t = float(a) / 30.0  # -1 .. 1
        reg = np.full((64, 64), 1, dtype=np.int64)
        reg[:_SKY_ROWS] = 0
        v = np.full((64, 64), 0.98, dtype=np.float32) - 0.03 * np.abs(texture)
        if t < 0:  # side wall on the right, corner moves from 64 to 40
            corner = 64.0 + 24.0 * t
            side = (cols > corner)
        else:
            corner = 18.0 + 46.0 * (1.0 - t) if t > 0 else -1.0  # from 64 to 18
            side = (cols < corner)
        top = _SKY_ROWS + np.clip(2.0 - 0.08 * np.abs(cols - (corner if t else 32.0)), 0, 2)
        side &= rows >= _SKY_ROWS
        reg[side] = 2
        v[side] = 0.8 - 0.03 * np.abs(texture[side])
        reg[(rows < top) & (rows >= _SKY_ROWS - 1) & (reg != 0)] = 0
        floor = rows >= _FLOOR_ROW
        reg[floor] = 3
        depth = (63.5 - rows) / (63.5 - _FLOOR_ROW)  # 0 front .. 1 back
        across = np.clip((cols - 12.0 * t) / 64.0, 0, 1)  # light from the front left
        v = np.where(floor, 1.0 - 0.2 * depth * across, v)
        v[reg == 0] = 1.0
        region.append(reg)
        shade.append(v.astype(np.float32))
    return region, shade


def _object_layers(info: DatasetInfo, rows: np.ndarray,
                   cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 (scale, shape, orientation, 64, 64) object coverage, object shading and shadow
    factor, with 2x2 supersampling."""
    angles = info.factor_values[5]
    n_scale, n_shape, n_orient = info.factor_sizes[3:]
    alpha = np.zeros((n_scale, n_shape, n_orient, 64, 64), dtype=np.float32)
    oshade = np.zeros_like(alpha)
    shadow = np.ones_like(alpha)
    sub = (np.arange(2) + 0.5) / 2.0 - 0.5  # 2x2 supersampling
    for i, s in enumerate(info.factor_values[3]):
        for k in range(n_shape):
            for o, a in enumerate(angles):
                m = np.zeros((64, 64), dtype=np.float32)
                sh = np.zeros((64, 64), dtype=np.float32)
                for dy in sub:
                    for dx in sub:
                        mm, ss = _object(k, float(s), float(a), rows + dy, cols + dx)
                        m += mm / 4.0
                        sh += ss / 4.0
                alpha[i, k, o] = m
                oshade[i, k, o] = np.where(m > 0, sh / np.maximum(m, 1e-6), 0)
                width = {0: 19.0, 1: 20.0, 2: 17.0, 3: 13.0}[k] * float(s)
                sx = 31.5 + 0.3 * width + 2.0 + 3.0 * float(a) / 30.0
                d = ((cols - sx) / (0.65 * width)) ** 2 + ((rows - 55.0) / 3.2) ** 2
                shadow[i, k, o] = 1.0 - 0.6 * np.clip(1.3 - d, 0, 1) * (rows >= _FLOOR_ROW)
    return alpha, oshade, shadow


def _backgrounds(info: DatasetInfo, region: list[np.ndarray],
                 shade: list[np.ndarray]) -> np.ndarray:
    """uint8 (floor hue * wall hue * orientation, 4096, 3) background images."""
    hues = hue_rgb(info.factor_values[0])
    region_a = np.stack(region).reshape(len(region), -1)
    shade_a = np.stack(shade).reshape(len(shade), -1)
    n_floor, n_wall = info.factor_sizes[:2]
    colours = np.empty((n_floor, n_wall, 4, 3), dtype=np.float32)
    colours[:, :, 0] = SKY
    colours[:, :, 1] = hues[None, :n_wall]
    colours[:, :, 2] = hues[None, :n_wall]
    colours[:, :, 3] = hues[:n_floor, None]
    back = colours[:, :, None, region_a] * shade_a[None, None, :, :, None]  # (F, W, O, 4096, 3)
    back = (np.clip(back, 0, 1) * 255 + 0.5).astype(np.uint8)
    return back.reshape(n_floor * n_wall * len(region), 64 * 64, 3)


def _sparse(alpha: np.ndarray, oshade: np.ndarray, shadow: np.ndarray) -> dict[str, np.ndarray]:
    """The object and shadow layers as sparse pixel lists per (scale, shape, orientation),
    padded with a sky pixel that they leave unchanged (alpha 0, shadow 1)."""
    alpha = alpha.reshape(-1, 64 * 64)
    oshade = oshade.reshape(-1, 64 * 64)
    shadow = shadow.reshape(-1, 64 * 64)
    touched = (alpha > 0) | (shadow < 1)
    width = int(touched.sum(1).max())
    pix = np.zeros((len(alpha), width), dtype=np.int64)
    for c in range(len(alpha)):
        where = np.flatnonzero(touched[c])
        pix[c, :len(where)] = where
    take = np.take_along_axis
    return {
        "pix": pix,
        "alpha": take(alpha, pix, 1) * (pix > 0),
        "oshade": take(oshade, pix, 1),
        "shadow": np.where(pix > 0, take(shadow, pix, 1), 1.0).astype(np.float32),
    }


def _object(shape: int, s: float, a: float, rows: np.ndarray,
            cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask, shade) float32 (64, 64) of one object seen from azimuth `a` degrees."""
    base = 55.0
    x = cols - 31.5
    lam = np.clip(0.95 - 0.25 * x / 12.0, 0.55, 1.1)  # light from the left
    if shape == 0:  # cube: front faces plus a lighter top face
        w, h = 19.0 * s, 17.0 * s
        top_h = 4.0 * s
        turn = np.radians(a * 1.5)
        c, sn = np.cos(turn), np.sin(turn)
        half_front = 0.5 * w * abs(c) / (abs(c) + abs(sn)) * 1.4
        body = (np.abs(x) <= w / 2) & (rows <= base) & (rows >= base - h + top_h)
        top = (np.abs(x) <= w / 2) & (rows < base - h + top_h) & (rows >= base - h)
        edge = half_front * np.sign(sn) if sn else w
        face = np.where(x * np.sign(sn or 1.0) > edge, 0.7, 1.0) if sn else 1.0
        mask = body | top
        shade = np.where(top, 1.1, 0.92 * face)
        return mask.astype(np.float32), (mask * shade).astype(np.float32)
    if shape == 1:  # cylinder with an elliptical top
        w, h = 20.0 * s, 24.0 * s
        e = 2.5 * s
        side = (np.abs(x) <= w / 2) & (rows <= base) & (rows >= base - h + e)
        top = (x / (w / 2)) ** 2 + ((rows - (base - h + e)) / e) ** 2 <= 1
        bottom = (x / (w / 2)) ** 2 + ((rows - base) / e) ** 2 <= 1
        mask = side | top | bottom
        shade = np.where(top & ~side, 1.1, lam * (1.0 - 0.35 * (x / (w / 2)) ** 2))
        return mask.astype(np.float32), (mask * shade).astype(np.float32)
    if shape == 2:  # sphere
        r = 8.5 * s
        cy = base - r
        d2 = (x / r) ** 2 + ((rows - cy) / r) ** 2
        mask = d2 <= 1
        nz = np.sqrt(np.clip(1 - d2, 0, 1))
        shade = 0.35 + 0.75 * np.clip(-0.45 * x / r - 0.45 * (rows - cy) / r + 0.77 * nz, 0, 1)
        return mask.astype(np.float32), (mask * shade).astype(np.float32)
    w, h = 13.0 * s, 27.0 * s  # capsule: a vertical pill
    r = w / 2
    top_c, bot_c = base - h + r, base - r
    yy = np.clip(rows, top_c, bot_c)
    d2 = (x / r) ** 2 + ((rows - yy) / r) ** 2
    mask = d2 <= 1
    nz = np.sqrt(np.clip(1 - d2, 0, 1))
    shade = 0.35 + 0.75 * np.clip(-0.5 * x / r - 0.3 * (rows - yy) / r + 0.8 * nz, 0, 1)
    return mask.astype(np.float32), (mask * shade).astype(np.float32)


def render(factors: np.ndarray, info: DatasetInfo = SHAPES3D) -> np.ndarray:
    """Draw images of factor classes.

    Args:
        factors: int (N, 6) classes (floor_hue, wall_hue, object_hue, scale, shape, orientation).
        info: the factor table.
    Returns:
        uint8 (N, 64, 64, 3).
    """
    f = np.asarray(factors, dtype=np.int64).reshape(-1, 6)
    n = len(f)
    t = _tables(tuple(info.factor_sizes))
    n_floor, n_wall, _, n_scale, n_shape, n_orient = info.factor_sizes
    img = t["back"][(f[:, 0] * n_wall + f[:, 1]) * n_orient + f[:, 5]]  # (N, 4096, 3) uint8
    combo = (f[:, 3] * n_shape + f[:, 4]) * n_orient + f[:, 5]
    flat = img.reshape(-1, 3)
    at = t["pix"][combo] + (np.arange(n) * 4096)[:, None]  # (N, P) flat pixel positions
    vals = flat[at].astype(np.float32)  # (N, P, 3)
    vals *= t["shadow"][combo][..., None]
    obj = hue_rgb(info.factor_values[2])[f[:, 2]][:, None, :] * (
        0.95 * 255.0 * t["oshade"][combo])[..., None]
    vals += t["alpha"][combo][..., None] * (obj - vals)
    np.clip(vals, 0.0, 255.0, out=vals)
    flat[at] = (vals + 0.5).astype(np.uint8)
    return img.reshape(n, 64, 64, 3)


_HINT = "Point --source at the original 3dshapes.h5, or leave it out for the generator."


def read_h5(path: Path, record: Dataset) -> Reader:
    """3dshapes.h5: 'images' (N, 64, 64, 3) uint8 and 'labels' (N, 6) float64 values."""
    info = record.info
    n = info.num_images
    f = _real.h5_open(path)
    _real.expect(path, "3D Shapes", _real.h5_shapes(f), {"images": ((n, 64, 64, 3), "uint8"),
                                                         "labels": ((n, 6), "float64")}, _HINT)
    found = _real.values_to_classes(path, info, np.asarray(f["labels"]))
    _real.check_order(path, info, found, "3D Shapes")
    return Reader(info, _real.h5_fill(path, f["images"], n))


DATASET = Dataset(
    info=SHAPES3D,
    title="3D Shapes",
    model=ModelDefaults(image_channels=3, dense_dim=(256, 256), recon_loss="mse",
                        dataset_size=480_000),
    # drawn on demand: the full cache would take 5.9 GB of disk
    generator=Generator(render=render, version=VERSION, cached=False),
    sources=(Source((".h5", ".hdf5"), read_h5),),
    source_hint=_HINT,
)
RECORDS = (DATASET,)

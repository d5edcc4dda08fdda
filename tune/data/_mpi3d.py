"""MPI3D (toy, realistic, real): their records, factor tables, the .npz reader and a stand-in.

The stand-in is a two-joint arm holding a coloured object before a dark background: not the real
robot images, a plausible scene with the exact factor
structure. The background colour and camera height set the backdrop (a darker table below a
horizon that moves with the camera); the horizontal and vertical axes turn the two arm joints;
the object (cone, cube, cylinder, hexagonal prism, pyramid, sphere; small or large; six colours)
sits at the end of the arm. Images are composed on demand from small tables built once per
process (arm masks, 2.4 MB bit-packed; object sprites; backdrops); the 12.7 GB dataset is never
stored.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from models.errors import DataFileError
from tune.data import _real
from tune.data._info import DatasetInfo, classes
from tune.data._record import Dataset, Generator, ModelDefaults, Reader, Source

VERSION = 1
_NAMES = ("object_color", "object_shape", "object_size", "camera_height", "background_color",
          "horizontal_axis", "vertical_axis")


def mpi3d_info(name: str, colors_shapes: int = 6) -> DatasetInfo:
    """MPI3D with 6x6 (final release) or 4x4 (older toy/realistic) colours and shapes."""
    sizes = (colors_shapes, colors_shapes, 2, 3, 3, 40, 40)
    return DatasetInfo(name=name, factor_names=_NAMES, factor_sizes=sizes,
                       factor_values=tuple(classes(s) for s in sizes),
                       observation_shape=(64, 64, 3))

OBJECT_RGB = np.array([[0.95, 0.95, 0.95], [0.15, 0.75, 0.2], [0.85, 0.12, 0.1],
                       [0.12, 0.25, 0.9], [0.55, 0.33, 0.15], [0.5, 0.55, 0.12]], np.float32)
BACKGROUND_RGB = np.array([[0.45, 0.25, 0.55], [0.18, 0.52, 0.40], [0.85, 0.45, 0.40]], np.float32)
_HEIGHT_SQUASH = (0.7, 0.85, 1.0)  # vertical foreshortening for top, center, bottom cameras
_HORIZON = (46, 38, 30)
_S = 20  # sprite size
_PAD = _S // 2 + 1


@functools.lru_cache(maxsize=4)
def _tables(sizes: tuple[int, ...]) -> dict[str, np.ndarray]:
    n_height, n_h, n_v = sizes[3], sizes[5], sizes[6]
    rows, cols = np.mgrid[0:64, 0:64].astype(np.float32) + 0.5
    back = np.empty((len(BACKGROUND_RGB), n_height, 64, 64, 3), dtype=np.uint8)
    for b, rgb in enumerate(BACKGROUND_RGB):
        for c in range(n_height):
            hor = _HORIZON[c % 3]
            v = np.where(rows < hor, 0.38 - 0.002 * rows, 0.22 + 0.004 * (rows - hor))
            back[b, c] = (np.clip(rgb * v[..., None], 0, 1) * 255 + 0.5).astype(np.uint8)
    # arm: base at the top centre; joint 1 swings with the horizontal axis, joint 2 with the
    # vertical axis; the camera height squashes the picture vertically
    th1 = np.radians(np.linspace(-55.0, 55.0, n_h)).astype(np.float32)
    th2 = np.radians(np.linspace(-70.0, 70.0, n_v)).astype(np.float32)
    arm = np.zeros((n_height, n_h, n_v, 512), dtype=np.uint8)
    tip = np.zeros((n_height, n_h, n_v, 2), dtype=np.int64)
    for c in range(n_height):
        k = _HEIGHT_SQUASH[c % 3]
        base = np.array([32.0, 2.0], dtype=np.float32)
        j = base + 20.0 * np.stack([np.sin(th1), k * np.cos(th1)], -1)  # (H, 2)
        ang = th1[:, None] + th2[None, :]
        end = j[:, None, :] + 17.0 * np.stack([np.sin(ang), k * np.cos(ang)], -1)  # (H, V, 2)
        px, py = cols.reshape(1, 1, -1), rows.reshape(1, 1, -1)
        d1 = _segment_distance2(px, py, base[0], base[1], j[:, 0, None, None], j[:, 1, None, None])
        d2 = _segment_distance2(px, py, j[:, 0, None, None], j[:, 1, None, None],
                                end[..., 0, None], end[..., 1, None])
        mask = (d1 <= 2.2 ** 2) | (d2 <= 1.7 ** 2)  # (H, V, 4096)
        arm[c] = np.packbits(mask.reshape(n_h, n_v, -1), axis=-1)
        tip[c] = np.round(end).astype(np.int64)
    n_shape, n_size = sizes[1], sizes[2]
    alpha = np.zeros((n_shape, n_size, _S, _S), dtype=np.float32)
    shade = np.zeros_like(alpha)
    y, x = np.mgrid[0:_S, 0:_S].astype(np.float32) + 0.5 - _S / 2
    for s in range(n_shape):
        for z in range(n_size):
            m, sh = _sprite(s % 6, (5.0, 8.5)[z % 2] * (1 + 0.2 * (z // 2)), x, y)
            alpha[s, z], shade[s, z] = m, sh
    return {"back": back, "arm": arm, "tip": tip, "alpha": alpha, "shade": shade}


def _segment_distance2(px: np.ndarray, py: np.ndarray, ax: np.ndarray, ay: np.ndarray,
                       bx: np.ndarray, by: np.ndarray) -> np.ndarray:
    """Squared distance (float32, broadcast) from points (px, py) to segments a-b."""
    abx, aby = np.float32(1) * (bx - ax), np.float32(1) * (by - ay)
    t = ((px - ax) * abx + (py - ay) * aby) / np.maximum(abx * abx + aby * aby, 1e-9)
    t = np.clip(t, 0, 1).astype(np.float32)
    dx = px - (ax + t * abx)
    dy = py - (ay + t * aby)
    return dx * dx + dy * dy


def _sprite(shape: int, r: float, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask, shade) float32 (S, S) of object `shape` with half-size r, centred."""
    lit = np.clip(0.9 - 0.25 * x / r - 0.15 * y / r, 0.45, 1.1)
    if shape == 0:  # cone: a triangle, apex up
        m = (y <= r) & (y >= -r) & (np.abs(x) <= (y + r) / 2)
    elif shape == 1:  # cube: a square with a lighter top band
        m = (np.abs(x) <= r * 0.85) & (np.abs(y) <= r * 0.85)
        lit = np.where(y < -0.45 * r, 1.1, lit)
    elif shape == 2:  # cylinder: a tall rectangle, shaded across
        m = (np.abs(x) <= r * 0.6) & (np.abs(y) <= r)
        lit = 1.05 - 0.5 * (x / (0.6 * r)) ** 2
    elif shape == 3:  # hexagonal prism: a hexagon
        ax, ay = np.abs(x), np.abs(y)
        m = (ay <= r * 0.87) & (ax * 0.87 + ay * 0.5 <= r * 0.87)
    elif shape == 4:  # pyramid: a triangle with a darker right face
        m = (y <= r * 0.8) & (y >= -r) & (np.abs(x) <= (y + r) * 0.6)
        lit = np.where(x > 0, 0.6, 1.0)
    else:  # sphere
        d2 = (x * x + y * y) / (r * r)
        m = d2 <= 1
        bulge = 0.8 * np.sqrt(np.clip(1 - d2, 0, 1))
        lit = 0.35 + 0.75 * np.clip(-0.4 * x / r - 0.4 * y / r + bulge, 0, 1)
    m = m.astype(np.float32)
    return m, (m * lit).astype(np.float32)


def render(factors: np.ndarray, info: DatasetInfo | None = None) -> np.ndarray:
    """Draw images of factor classes.

    Args:
        factors: int (N, 7) classes (object_color, object_shape, object_size, camera_height,
            background_color, horizontal_axis, vertical_axis).
        info: the factor table (6x6 or 4x4 colours and shapes).
    Returns:
        uint8 (N, 64, 64, 3).
    """
    info = info or TOY.info
    f = np.asarray(factors, dtype=np.int64).reshape(-1, 7)
    n = len(f)
    t = _tables(tuple(info.factor_sizes))
    img = np.zeros((n, 64 + 2 * _PAD, 64 + 2 * _PAD, 3), dtype=np.float32)
    inner = img[:, _PAD:_PAD + 64, _PAD:_PAD + 64]
    inner[...] = t["back"][f[:, 4], f[:, 3]]
    arm = np.unpackbits(t["arm"][f[:, 3], f[:, 5], f[:, 6]], axis=-1).reshape(n, 64, 64)
    inner[arm.astype(bool)] = (0.45 * 255, 0.45 * 255, 0.48 * 255)
    tip = t["tip"][f[:, 3], f[:, 5], f[:, 6]] + _PAD  # (N, 2) col, row
    a = t["alpha"][f[:, 1], f[:, 2]][..., None]  # (N, S, S, 1)
    colour = OBJECT_RGB[f[:, 0]][:, None, None, :] * t["shade"][f[:, 1], f[:, 2]][..., None] * 255
    rr = (tip[:, 1, None] - _S // 2 + np.arange(_S))[:, :, None]
    cc = (tip[:, 0, None] - _S // 2 + np.arange(_S))[:, None, :]
    nn = np.arange(n)[:, None, None]
    patch = img[nn, rr, cc]
    img[nn, rr, cc] = patch + a * (colour - patch)
    return (np.clip(inner, 0, 255) + 0.5).astype(np.uint8)


# --- the real files ----------------------------------------------------------------------------
def read_npz(path: Path, record: Dataset) -> Reader:
    """mpi3d_*.npz: 'images' (N, 64, 64, 3) uint8; N tells the 6 x 6 release from the 4 x 4."""
    tables = (record.info, *record.variants)
    by_length = {t.num_images: t for t in tables}
    zf, shapes = _real.npz_headers(path)
    got = shapes.get("images")
    if got is None or got[1] != "uint8" or tuple(got[0][1:]) != (64, 64, 3) or \
            got[0][0] not in by_length:
        wanted = " or ".join(f"'images' ({t.num_images}, 64, 64, 3) uint8 ({t.factor_sizes[0]} "
                             f"colours x {t.factor_sizes[1]} shapes)" for t in tables)
        raise DataFileError(
            f"{path}: not an MPI3D file. Expected {wanted}; "
            f"found {_real.found({k: f'{s} {d}' for k, (s, d) in shapes.items()})}. "
            f"{record.source_hint}")
    info = by_length[got[0][0]]
    member = _real.NpzMember(zf, "images")

    def write(arr: np.ndarray, start: int, stop: int) -> None:
        arr[start:stop] = member.read(stop - start)

    return Reader(info, _real.chunked_fill(path, info.num_images, write))


def _record(name: str, title: str) -> Dataset:
    return Dataset(
        info=mpi3d_info(name, 6),
        title=title,
        model=ModelDefaults(image_channels=3, dense_dim=(256, 256), recon_loss="mse",
                            dataset_size=1_036_800),
        # drawn on demand: the full cache would take 12.7 GB of disk
        generator=Generator(render=render, version=VERSION, cached=False),
        sources=(Source((".npz",), read_npz),),
        source_hint="Point --source at mpi3d_toy.npz, mpi3d_realistic.npz or mpi3d_real.npz, "
                    "or leave it out for the generator.",
        variants=(mpi3d_info(name, 4),),  # the older 4 x 4 toy/realistic release (460,800)
    )


TOY = _record("mpi3d_toy", "MPI3D toy")
RECORDS = (TOY, _record("mpi3d_realistic", "MPI3D realistic"), _record("mpi3d_real", "MPI3D real"))

"""Cars3D: its record, factor table, the reader of the real folder and a box-car stand-in.

The stand-in draws parametric box cars on white, 24 azimuths x 4 elevations x 183 cars. Not the
real car meshes (which have no procedural equivalent): each object type is a car of its own
proportions and paint (body, cabin with dark glass, two black wheel pairs), drawn in orthographic
projection with Lambert shading and a per-pixel depth test. The 17,568 images (206 MiB) are
generated once into the cache.
"""

from __future__ import annotations

import colorsys
import functools
from pathlib import Path
from typing import Callable

import numpy as np

from models.errors import DataFileError
from tune.data._info import DatasetInfo, classes
from tune.data._record import FOLDER, Dataset, Generator, ModelDefaults, Reader, Source

VERSION = 1
# object fastest: index = 4392 elevation + 183 azimuth + object
CARS3D = DatasetInfo(
    name="cars3d",
    factor_names=("elevation", "azimuth", "object_type"),
    factor_sizes=(4, 24, 183),
    factor_values=(classes(4), np.arange(24) * 15.0, classes(183)),
    observation_shape=(64, 64, 3),
)
ELEVATIONS_DEG = (10.0, 20.0, 30.0, 40.0)
_PX = 10.0  # pixels per world unit
_LIGHT = np.array([-0.4, -0.6, 0.7]) / np.linalg.norm([-0.4, -0.6, 0.7])


@functools.lru_cache(maxsize=4)
def _cars(n_obj: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (n_obj, 4, 6) as centre xyz + half extents, colours (n_obj, 4, 3)."""
    boxes = np.zeros((n_obj, 4, 6))
    colours = np.zeros((n_obj, 4, 3))
    for o in range(n_obj):
        rng = np.random.default_rng(1000 + o)
        length, width = rng.uniform(3.4, 4.8), rng.uniform(1.5, 2.0)
        body_h, clear = rng.uniform(0.45, 0.8), rng.uniform(0.25, 0.4)
        cab_l, cab_h = length * rng.uniform(0.35, 0.6), rng.uniform(0.35, 0.6)
        cab_x = length * rng.uniform(-0.2, 0.15)
        wheel = rng.uniform(0.3, 0.4)
        boxes[o, 0] = [0, 0, clear + body_h / 2, length / 2, width / 2, body_h / 2]
        boxes[o, 1] = [cab_x, 0, clear + body_h + cab_h / 2, cab_l / 2, width * 0.42, cab_h / 2]
        for k, sign in enumerate((-1, 1)):
            boxes[o, 2 + k] = [sign * length * 0.32, 0, wheel, wheel, width / 2 + 0.06, wheel]
        paint = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.3, 0.95),
                                    rng.uniform(0.45, 0.95))
        colours[o] = [paint, (0.22, 0.27, 0.33), (0.08, 0.08, 0.08), (0.08, 0.08, 0.08)]
    return boxes, colours


def render(factors: np.ndarray, info: DatasetInfo = CARS3D) -> np.ndarray:
    """Draw images of factor classes.

    Args:
        factors: int (N, 3) classes (elevation, azimuth, object_type).
        info: the factor table.
    Returns:
        uint8 (N, 64, 64, 3), white background.
    """
    f = np.asarray(factors, dtype=np.int64).reshape(-1, 3)
    n = len(f)
    boxes, colours = _cars(info.factor_sizes[2])
    el = np.radians(np.asarray(ELEVATIONS_DEG)[f[:, 0] % 4])
    az = np.radians(360.0 / info.factor_sizes[1] * f[:, 1] + 30.0)
    ca, sa, ce, se = np.cos(az), np.sin(az), np.cos(el), np.sin(el)
    zero = np.zeros(n)
    axes_u = np.stack([ca, -sa, zero], -1)  # world directions of screen right, up, depth
    axes_v = np.stack([sa * se, ca * se, ce], -1)
    axes_d = np.stack([sa * ce, ca * ce, -se], -1)
    grid = np.arange(64, dtype=np.float32) + 0.5
    u = ((grid - 32.0) / _PX)[None, None, :]  # (1, 1, 64) by column
    v = ((38.0 - grid) / _PX)[None, :, None]  # (1, 64, 1) by row
    zbuf = np.full((n, 64, 64), np.inf, dtype=np.float32)
    img = np.ones((n, 64, 64, 3), dtype=np.float32)
    box = boxes[f[:, 2]]  # (N, 4, 6)
    col = colours[f[:, 2]]
    for b in range(4):
        centre, half = box[:, b, :3], box[:, b, 3:]
        for axis in range(3):
            # the face of this axis that faces the camera (normal against the depth direction)
            sign = np.where(axes_d[:, axis] > 0, -1.0, 1.0)
            if axis == 2:
                sign = np.ones(n)
            normal = np.zeros((n, 3))
            normal[np.arange(n), axis] = sign
            dd = axes_d[:, axis]
            ok = np.abs(dd) > 1e-3
            plane = centre[:, axis] + sign * half[:, axis]  # the face: P[axis] = plane
            nu, nv = axes_u[:, axis], axes_v[:, axis]
            depth = ((plane[:, None, None] - nu[:, None, None] * u - nv[:, None, None] * v)
                     / np.where(ok, dd, 1.0)[:, None, None]).astype(np.float32)
            # P = u U + v V + d D; check the two other coordinates against the face extents
            inside = ok[:, None, None] & (depth < zbuf)
            for other in range(3):
                if other == axis:
                    continue
                p = (axes_u[:, other, None, None] * u + axes_v[:, other, None, None] * v
                     + axes_d[:, other, None, None] * depth)
                inside &= np.abs(p - centre[:, other, None, None]) <= half[:, other, None, None]
            lam = 0.45 + 0.55 * np.clip(normal @ _LIGHT, 0, 1)  # (N,)
            rgb = (col[:, b] * lam[:, None]).astype(np.float32)
            zbuf = np.where(inside, depth, zbuf)
            img = np.where(inside[..., None], rgb[:, None, None, :], img)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def cache_rows(start: int, stop: int, info: DatasetInfo = CARS3D) -> np.ndarray:
    """Cache rows [start, stop): uint8 (stop - start, 64, 64, 3) in storage order."""
    idx = np.arange(start, stop, dtype=np.int64)
    return render((idx[:, None] // info.bases) % np.asarray(info.factor_sizes), info)


# --- the real folder ---------------------------------------------------------------------------
def _resize64(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 128, 128, 3) -> (N, 64, 64, 3) with Lanczos (PIL), as dlib's thumbnail does."""
    from PIL import Image

    if images.shape[1:3] == (64, 64):
        return images
    return np.stack([np.asarray(Image.fromarray(im).resize((64, 64), Image.LANCZOS))
                     for im in images])


def read_folder(path: Path, record: Dataset) -> Reader:
    """data/cars of nips2015-analogy-data: list.txt and one car_*_mesh.mat per object, each with
    'im' (128, 128, 3, 24, 4) uint8 = (height, width, RGB, azimuth, elevation)."""
    info = record.info
    n_elev, n_azim, n_obj = info.factor_sizes
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

    return Reader(info, fill)


DATASET = Dataset(
    info=CARS3D,
    title="Cars3D",
    model=ModelDefaults(image_channels=3, dense_dim=(256, 256), recon_loss="mse",
                        dataset_size=17_568),
    # 206 MiB, drawn once into the cache
    generator=Generator(render=render, version=VERSION, cached=True, cache_rows=cache_rows,
                        rows_per_task=1098),
    sources=(Source((FOLDER,), read_folder),),
    source_hint="Point --source at the folder data/cars of nips2015-analogy-data (list.txt and "
                "the car_*_mesh.mat files), or leave it out for the generator.",
)
RECORDS = (DATASET,)

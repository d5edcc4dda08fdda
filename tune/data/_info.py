"""Factor tables of the benchmark datasets (spec/datasets.md sections 1.2, 2.2, 3, 4)."""

from __future__ import annotations

import dataclasses

import numpy as np

DATASETS: tuple[str, ...] = (
    "dsprites",
    "shapes3d",
    "cars3d",
    "mpi3d_toy",
    "mpi3d_realistic",
    "mpi3d_real",
)


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetInfo:
    """What a dataset is, independent of where its pixels come from.

    Attributes:
        name: registry name (one of `DATASETS`).
        factor_names: the latent factors, in storage order (last varies fastest).
        factor_sizes: number of classes of each latent factor.
        factor_values: value table of each factor, one float64 array per factor.
        observation_shape: (H, W, C) of one image.
        binary: pixels are black or white (dSprites): stored as bits, served as 0 or 255.
        hidden_sizes: sizes of non-latent factors that disentanglement_lib still draws with
            `randint(size, size=n)` on every observation call (dSprites: the size-1 colour).
    """

    name: str
    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    factor_values: tuple[np.ndarray, ...]
    observation_shape: tuple[int, int, int]
    binary: bool = False
    hidden_sizes: tuple[int, ...] = ()

    @property
    def num_images(self) -> int:
        return int(np.prod(self.factor_sizes))

    @property
    def bases(self) -> np.ndarray:
        """int64 (F,): index = factors @ bases (row-major, last factor fastest)."""
        sizes = np.asarray(self.factor_sizes, dtype=np.int64)
        return np.concatenate([np.cumprod(sizes[::-1])[::-1][1:], [1]]).astype(np.int64)

    def with_sizes(self, sizes: tuple[int, ...]) -> DatasetInfo:
        """The same dataset with fewer classes per factor: evenly spaced values of each table."""
        if len(sizes) != len(self.factor_sizes) or not all(
                1 <= s <= n for s, n in zip(sizes, self.factor_sizes)):
            raise ValueError(f"{self.name}: factor sizes {tuple(sizes)} must be between 1 and "
                             f"{self.factor_sizes}")
        values = tuple(v[np.round(np.linspace(0, len(v) - 1, s)).astype(np.int64)]
                       for v, s in zip(self.factor_values, sizes))
        return dataclasses.replace(self, factor_sizes=tuple(int(s) for s in sizes),
                                   factor_values=values)


def _classes(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


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

SHAPES3D = DatasetInfo(
    name="shapes3d",
    factor_names=("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"),
    factor_sizes=(10, 10, 10, 8, 4, 15),
    factor_values=(
        np.arange(10) / 10.0,
        np.arange(10) / 10.0,
        np.arange(10) / 10.0,
        np.linspace(0.75, 1.25, 8),
        _classes(4),
        np.linspace(-30.0, 30.0, 15),
    ),
    observation_shape=(64, 64, 3),
)

CARS3D = DatasetInfo(
    name="cars3d",
    factor_names=("elevation", "azimuth", "object_type"),
    factor_sizes=(4, 24, 183),
    factor_values=(_classes(4), np.arange(24) * 15.0, _classes(183)),
    observation_shape=(64, 64, 3),
)

_MPI3D_NAMES = (
    "object_color",
    "object_shape",
    "object_size",
    "camera_height",
    "background_color",
    "horizontal_axis",
    "vertical_axis",
)


def mpi3d_info(name: str, colors_shapes: int = 6) -> DatasetInfo:
    """MPI3D with 6x6 (final release) or 4x4 (older toy/realistic) colours and shapes."""
    sizes = (colors_shapes, colors_shapes, 2, 3, 3, 40, 40)
    return DatasetInfo(
        name=name,
        factor_names=_MPI3D_NAMES,
        factor_sizes=sizes,
        factor_values=tuple(_classes(s) for s in sizes),
        observation_shape=(64, 64, 3),
    )


def info_for(name: str) -> DatasetInfo:
    """The default (full-release) factor table of a dataset name."""
    if name == "dsprites":
        return DSPRITES
    if name == "shapes3d":
        return SHAPES3D
    if name == "cars3d":
        return CARS3D
    return mpi3d_info(name)

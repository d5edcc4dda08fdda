"""The ground-truth dataset interface (disentanglement_lib's `GroundTruthData`, vectorised)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from tune.data._info import DatasetInfo
from tune.data._loader import BatchLoader


class MemmapStore:
    """Images in a read-only memory-mapped .npy: uint8 (N, H, W, C) or bit-packed (N, H*W/8).

    Pickles as its path; the map is reopened in the receiving process.
    """

    def __init__(self, path: str | Path, shape: tuple[int, int, int], packed: bool) -> None:
        self.path = str(path)
        self.shape = shape
        self.packed = packed
        self.array = np.load(self.path, mmap_mode="r")

    def __reduce__(self) -> tuple[Any, ...]:
        return (MemmapStore, (self.path, self.shape, self.packed))

    def gather(self, indices: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) images at int64 (N,) indices (read in sorted order)."""
        n = len(indices)
        order = np.argsort(indices, kind="stable")
        rows = self.array[indices[order]]  # sorted gather: sequential page access
        if self.packed:
            h, w, _ = self.shape
            rows = np.unpackbits(rows, axis=1, count=h * w)
        out = np.empty((n, *self.shape), dtype=np.uint8)
        out.reshape(n, -1)[order] = rows.reshape(n, -1)
        return out


class RenderStore:
    """Images drawn on demand by a procedural generator from their factor classes."""

    def __init__(self, render: Callable[[np.ndarray, DatasetInfo], np.ndarray],
                 info: DatasetInfo) -> None:
        self.render = render
        self.info = info

    def gather(self, indices: np.ndarray) -> np.ndarray:
        factors = (indices[:, None] // self.info.bases) % np.asarray(self.info.factor_sizes)
        return self.render(factors, self.info)


class GroundTruthData:
    """A dataset of images indexed by discrete factors of variation.

    The disentanglement_lib interface (`num_factors`, `factors_num_values`, `observation_shape`,
    `sample_factors`, `sample_observations_from_factors`, `sample`, `sample_observations`) with
    the same random draws, plus vectorised index helpers and a training batch loader. Pixels stay
    uint8 (or bit-packed) in a shared read-only memory map; floats exist one batch at a time.

    Data without factors (your own images, `num_factors == 0`): `factors_num_values` and
    `factor_names` are empty, `sample_factors` gives (num, 0) classes and draws nothing,
    `sample`/`sample_observations` draw images uniformly by position, and `index_of` and
    `sample_observations_from_factors` raise ValueError (no factors pick an image); images,
    observations and the loader work as on any data.

    Attributes:
        name: dataset name, e.g. "dsprites".
        checksum: SHA-256 identifying the pixel content (for provenance).
        source: the real file or folder it was read from, or None for the built-in generator.
        cache_path: the cache file backing it, or None when images are drawn on demand.
    """

    def __init__(
        self,
        info: DatasetInfo,
        store: MemmapStore | RenderStore,
        *,
        checksum: str,
        source: str | None,
        cache_path: str | None,
    ) -> None:
        self.info = info
        self._store = store
        self.checksum = checksum
        self.source = source
        self.cache_path = cache_path
        self._bases = info.bases
        self._sizes = np.asarray(info.factor_sizes, dtype=np.int64)

    def __reduce__(self) -> tuple[Any, ...]:
        # the store pickles as a path (or a function name), never as the array
        return (_rebuild, (self.info, self._store, self.checksum, self.source, self.cache_path))

    def __repr__(self) -> str:
        where = self.source or "built-in generator"
        return f"GroundTruthData({self.name!r}, {len(self)} images, from {where})"

    # --- description -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.info.name

    @property
    def num_factors(self) -> int:
        return len(self.info.factor_sizes)

    @property
    def factors_num_values(self) -> list[int]:
        return list(self.info.factor_sizes)

    @property
    def factor_names(self) -> list[str]:
        return list(self.info.factor_names)

    @property
    def factor_values(self) -> list[np.ndarray]:
        """Value table of each factor: float64 (size_f,), e.g. dSprites scale 0.5..1.0."""
        return [v.copy() for v in self.info.factor_values]

    @property
    def observation_shape(self) -> list[int]:
        return list(self.info.observation_shape)

    def __len__(self) -> int:
        return self.info.num_images

    # --- indices -----------------------------------------------------------------------------
    def index_of(self, factors: np.ndarray) -> np.ndarray:
        """Image indices of factor classes.

        Args:
            factors: int (N, num_factors) class indices.
        Returns:
            int64 (N,) positions in storage order (last factor fastest).
        Raises:
            ValueError: if the shape is wrong or a class is out of range.
        """
        self._need_factors()
        f = np.asarray(factors)
        if f.ndim != 2 or f.shape[1] != self.num_factors:
            raise ValueError(f"{self.name}: factors must have shape (N, {self.num_factors}), "
                             f"got {f.shape}")
        f = f.astype(np.int64, copy=False)
        if f.size and ((f < 0).any() or (f >= self._sizes).any()):
            raise ValueError(f"{self.name}: factor classes out of range for sizes "
                             f"{self.factors_num_values}")
        return f @ self._bases

    def _need_factors(self) -> None:
        if not self.num_factors:
            raise ValueError(f"{self.name} has no factors: images are picked by position "
                             "(images_at, sample_observations), not by factor classes")

    def factors_of(self, indices: np.ndarray) -> np.ndarray:
        """Factor classes int64 (N, num_factors) of int (N,) image indices."""
        idx = self._check_indices(indices)
        return (idx[:, None] // self._bases) % self._sizes

    def _check_indices(self, indices: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices).astype(np.int64, copy=False).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise ValueError(f"{self.name}: indices must lie in [0, {len(self)})")
        return idx

    def images_at(self, indices: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) images with values 0..255 at int (N,) indices.

        Every dataset uses the 0..255 scale here, dSprites included (0 or 255, although its file
        and cache store 0/1 bits), so that uint8 / 255 is always the observation.
        """
        images = self._store.gather(self._check_indices(indices))
        if self.info.binary:
            images *= np.uint8(255)  # 0/1 -> 0/255, in place on the fresh array
        return images

    def observations_at(self, indices: np.ndarray) -> np.ndarray:
        """float32 (N, H, W, C) observations in [0, 1] at int (N,) indices."""
        return self.to_float(self.images_at(indices))

    @staticmethod
    def to_float(images: np.ndarray) -> np.ndarray:
        """uint8 images (0..255) as float32 in [0, 1]; 255 maps to exactly 1.0."""
        out = images.astype(np.float32)
        out /= np.float32(255.0)
        return out

    # --- disentanglement_lib sampling --------------------------------------------------------
    def sample_factors(self, num: int, random_state: np.random.RandomState) -> np.ndarray:
        """int64 (num, F): each factor column drawn with `randint(size_f, size=num)` in order."""
        factors = np.zeros((num, self.num_factors), dtype=np.int64)
        for i, size in enumerate(self.info.factor_sizes):
            factors[:, i] = random_state.randint(size, size=num)
        return factors

    def sample_observations_from_factors(
        self, factors: np.ndarray, random_state: np.random.RandomState
    ) -> np.ndarray:
        """float32 (N, H, W, C) in [0, 1] for int (N, F) factor classes.

        Draws the hidden factors (dSprites' size-1 colour) from `random_state` as
        disentanglement_lib does, so that the random stream stays aligned with it.
        """
        self._need_factors()
        factors = np.asarray(factors)
        for size in self.info.hidden_sizes:
            random_state.randint(size, size=factors.shape[0])
        return self.observations_at(self.index_of(factors))

    def sample(
        self, num: int, random_state: np.random.RandomState
    ) -> tuple[np.ndarray, np.ndarray]:
        """(factors int64 (num, F), observations float32 (num, H, W, C)), factors drawn first.

        Without factors: (num, 0) factors and images drawn with `randint(len, size=num)`.
        """
        factors = self.sample_factors(num, random_state)
        if not self.num_factors:
            return factors, self.observations_at(random_state.randint(len(self), size=num))
        return factors, self.sample_observations_from_factors(factors, random_state)

    def sample_observations(self, num: int, random_state: np.random.RandomState) -> np.ndarray:
        """float32 (num, H, W, C) observations of random factors."""
        return self.sample(num, random_state)[1]

    # --- training ----------------------------------------------------------------------------
    def loader(
        self, batch_size: int, seed: int | np.random.SeedSequence, device: str = "cpu",
        drop_last: bool = False, labels: list[int] | None = None,
    ) -> BatchLoader:
        """An endless iterator of float32 (B, C, H, W) torch batches in a seeded order (with
        the classes of the factor columns `labels`, for a conditional model)."""
        return BatchLoader(self, batch_size, seed, device=device, drop_last=drop_last,
                           labels=labels)


def _rebuild(info: DatasetInfo, store: Any, checksum: str, source: str | None,
             cache_path: str | None) -> GroundTruthData:
    return GroundTruthData(info, store, checksum=checksum, source=source, cache_path=cache_path)

"""`DatasetInfo`: a dataset's factor table and image shape, whatever makes its pixels."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetInfo:
    """What a dataset is, independent of where its pixels come from.

    Attributes:
        name: registry name (one of `tune.data.DATASETS`).
        factor_names: the latent factors, in storage order (last varies fastest).
        factor_sizes: number of classes of each latent factor.
        factor_values: value table of each factor, one float64 array per factor.
        observation_shape: (H, W, C) of one image.
        binary: pixels are black or white (dSprites): stored as bits, served as 0 or 255.
        hidden_sizes: sizes of non-latent factors that disentanglement_lib still draws with
            `randint(size, size=n)` on every observation call (dSprites: the size-1 colour).
        size: the number of images of a dataset without factors (your own images); 0 when
            there are factors (the number is then the product of their sizes).
    """

    name: str
    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    factor_values: tuple[np.ndarray, ...]
    observation_shape: tuple[int, int, int]
    binary: bool = False
    hidden_sizes: tuple[int, ...] = ()
    size: int = 0

    @property
    def num_images(self) -> int:
        return int(np.prod(self.factor_sizes)) if self.factor_sizes else self.size

    @property
    def bases(self) -> np.ndarray:
        """int64 (F,): index = factors @ bases (row-major, last factor fastest)."""
        if not self.factor_sizes:
            return np.zeros(0, dtype=np.int64)
        sizes = np.asarray(self.factor_sizes, dtype=np.int64)
        return np.concatenate([np.cumprod(sizes[::-1])[::-1][1:], [1]]).astype(np.int64)

    def with_sizes(self, sizes: tuple[int, ...]) -> DatasetInfo:
        """The same dataset with fewer classes per factor: evenly spaced values of each table."""
        if len(sizes) != len(self.factor_sizes) or not all(
                1 <= s <= n for s, n in zip(sizes, self.factor_sizes, strict=True)):
            raise ValueError(f"{self.name}: factor sizes {tuple(sizes)} must be between 1 and "
                             f"{self.factor_sizes}")
        values = tuple(v[np.round(np.linspace(0, len(v) - 1, s)).astype(np.int64)]
                       for v, s in zip(self.factor_values, sizes, strict=True))
        return dataclasses.replace(self, factor_sizes=tuple(int(s) for s in sizes),
                                   factor_values=values)


def classes(n: int) -> np.ndarray:
    """float64 (n,) value table 0, 1, ..., n - 1: a factor whose values are its class numbers."""
    return np.arange(n, dtype=np.float64)

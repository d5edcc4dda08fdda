"""Ground-truth datasets: real-format loaders, procedural stand-ins, one shared cache per machine.

    >>> from tune.data import load_dataset
    >>> data = load_dataset("dsprites")  # built-in generator; cached on first use
    >>> factors, x = data.sample(64, numpy.random.RandomState(0))  # x: (64, 64, 64, 1) float32

Where the pixels live:
- Real files (`source=PATH`) are validated (keys, shapes, dtypes, row order) and converted once
  into the cache, keyed by the file's path, size and modification time; later opens use the cache
  without reading the file again.
- Built-in dSprites (360 MiB bit-packed) and Cars3D (206 MiB) are generated once into the cache,
  with all cores.
- Built-in 3D Shapes and MPI3D are drawn on demand from small per-process tables (a batch of 256
  in tens of milliseconds): their full caches would take 5.9 GB and 12.7 GB of disk.
- Your own images (`images`, no factors: a folder of PNG/JPEG, an .npy/.npz array or an HDF5
  dataset `file.h5:KEY`) are cropped and resized to 64 x 64 once into the cache, keyed by a hash
  of their bytes.
Caches live under `$MIPET_TUNE_CACHE` or `~/.cache/mipet-tune`, are written under a temporary name
and renamed, carry a SHA-256 checksum and a format version, and are opened read-only memory-mapped,
so all processes on a machine share one copy of the pages. A pickled dataset is its path.

Each dataset is one `Dataset` record (factor table, model defaults, generator, real-file
readers) in its own module, listed by one line in the registry (`tune/data/_registry.py`;
docs/recipes/add_dataset.md). `model_defaults(name)` gives the ModelConfig fields a dataset sets.

Importing this package costs numpy and the error classes of `models` (no torch); the batch loader
imports torch when it is built, the real-file readers h5py, scipy or Pillow when they read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tune.data._info import DatasetInfo
from tune.data._record import Dataset, Generator, ModelDefaults, Reader, Source
from tune.data._registry import DATASETS, dataset_record, model_defaults, register_dataset

if TYPE_CHECKING:
    from tune.data._base import GroundTruthData
    from tune.data._loader import BatchLoader

__all__ = [
    "DATASETS",
    "BatchLoader",
    "Dataset",
    "DatasetInfo",
    "Generator",
    "GroundTruthData",
    "ModelDefaults",
    "Reader",
    "Source",
    "dataset_record",
    "load_dataset",
    "model_defaults",
    "prepare_dataset",
    "register_dataset",
    "small_dataset",
]


def load_dataset(name: str, source: Any = None, cache_dir: Any = None) -> GroundTruthData:
    """See `tune.data._prepare.load_dataset`."""
    from tune.data._prepare import load_dataset as _load

    return _load(name, source, cache_dir)


def prepare_dataset(name: str, source: Any = None, cache_dir: Any = None,
                    progress: bool = False) -> dict[str, Any]:
    """See `tune.data._prepare.prepare_dataset`."""
    from tune.data._prepare import prepare_dataset as _prepare

    return _prepare(name, source, cache_dir, progress)


def small_dataset(name: str, factor_sizes: tuple[int, ...]) -> GroundTruthData:
    """A built-in dataset cut to a few evenly spaced classes per factor, drawn on demand.

    For tests and smoke runs of the trainer, metrics and sweeps: no cache is written. For example
    `small_dataset("dsprites", (3, 2, 4, 4, 4))` has 384 images with the real dSprites geometry.

    Args:
        name: one of `DATASETS`.
        factor_sizes: classes per factor, each between 1 and the full size.
    """
    from tune.data._prepare import small_dataset as _small

    return _small(name, tuple(factor_sizes))


def __getattr__(name: str) -> Any:
    if name == "GroundTruthData":
        from tune.data._base import GroundTruthData

        return GroundTruthData
    if name == "BatchLoader":
        from tune.data._loader import BatchLoader

        return BatchLoader
    raise AttributeError(f"module 'tune.data' has no attribute {name!r}")

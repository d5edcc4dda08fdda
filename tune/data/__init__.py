"""Ground-truth datasets: real-format loaders, procedural stand-ins, one shared cache per machine.

    >>> from tune.data import load_dataset
    >>> data = load_dataset("dsprites")  # built-in generator; cached on first use
    >>> factors, x = data.sample(64, numpy.random.RandomState(0))  # x: (64, 64, 64, 1) float32

Importing this package costs numpy only; torch is imported by the batch loader when it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tune.data._info import DATASETS

if TYPE_CHECKING:
    from tune.data._base import GroundTruthData
    from tune.data._loader import BatchLoader

__all__ = ["DATASETS", "BatchLoader", "GroundTruthData", "load_dataset", "prepare_dataset"]


def load_dataset(name: str, source: Any = None, cache_dir: Any = None) -> GroundTruthData:
    """See `tune.data._prepare.load_dataset`."""
    from tune.data._prepare import load_dataset as _load

    return _load(name, source, cache_dir)


def prepare_dataset(name: str, source: Any = None, cache_dir: Any = None,
                    progress: bool = False) -> dict[str, Any]:
    """See `tune.data._prepare.prepare_dataset`."""
    from tune.data._prepare import prepare_dataset as _prepare

    return _prepare(name, source, cache_dir, progress)


def __getattr__(name: str) -> Any:
    if name == "GroundTruthData":
        from tune.data._base import GroundTruthData

        return GroundTruthData
    if name == "BatchLoader":
        from tune.data._loader import BatchLoader

        return BatchLoader
    raise AttributeError(f"module 'tune.data' has no attribute {name!r}")

"""The one registry of datasets: name -> `Dataset` record.

Adding a built-in dataset is one new module under tune/data/ defining `RECORDS` (a tuple of
`Dataset`) and one line in `BUILT_IN` below (docs/recipes/add_dataset.md). A dataset of your own
outside the package registers with `tune.data.register_dataset(record)`. Every lookup goes through
`dataset_record`: an unknown name is a ConfigError naming the nearest known one, never a
fallback to another dataset.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

from models.errors import ConfigError, DataFileError
from models.strict import nearest
from tune.data._info import DatasetInfo
from tune.data._real import source_of, split_source
from tune.data._record import Dataset

# one line per dataset module, in the order `DATASETS` lists them
BUILT_IN: tuple[str, ...] = (
    "tune.data._dsprites",
    "tune.data._shapes3d",
    "tune.data._cars3d",
    "tune.data._mpi3d",
    "tune.data._images",
)

REGISTRY: dict[str, Dataset] = {}


def register_dataset(record: Dataset) -> Dataset:
    """Add a dataset to the registry (and so to `DATASETS`, configs and the CLI).

    Raises:
        TypeError: `record` is not a `Dataset`.
        ValueError: a dataset of that name is registered already.
    """
    if not isinstance(record, Dataset):
        raise TypeError(f"register_dataset takes a tune.data.Dataset, got {type(record).__name__}")
    if record.name in REGISTRY:
        raise ValueError(f"dataset {record.name!r} is registered already")
    REGISTRY[record.name] = record
    return record


def _register_built_ins() -> None:
    for module in BUILT_IN:
        records = getattr(importlib.import_module(module), "RECORDS", None)
        if not isinstance(records, tuple) or not records:
            raise TypeError(f"{module} must define RECORDS, a non-empty tuple of Dataset records")
        for record in records:
            register_dataset(record)


class DatasetNames(Sequence[str]):
    """The registered dataset names, in registration order; always current (a live view)."""

    def __getitem__(self, index: Any) -> Any:
        return tuple(REGISTRY)[index]

    def __len__(self) -> int:
        return len(REGISTRY)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(REGISTRY))

    def __contains__(self, name: object) -> bool:
        return name in REGISTRY

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (DatasetNames, tuple, list)):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # it changes as datasets register

    def __repr__(self) -> str:
        return repr(tuple(REGISTRY))


DATASETS = DatasetNames()


def dataset_record(name: str) -> Dataset:
    """The record of a registered dataset.

    Raises:
        ConfigError: unknown name (one line: the nearest known name and the known ones).
    """
    record = REGISTRY.get(name) if isinstance(name, str) else None
    if record is None:
        hint = nearest(str(name), REGISTRY)
        if not hint.startswith("known"):
            hint += " Known: " + ", ".join(sorted(REGISTRY))
        raise ConfigError(f"unknown dataset {name!r}; {hint}")
    return record


def model_defaults(name: str, source: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The ModelConfig fields the paper code sets from the dataset.

    Args:
        name: a registered dataset, e.g. "dsprites".
        source: the real data (`data.source`). Only data without factors (your own images)
            reads it: the channels and the number of images come from its headers.
    Returns:
        A new dict with `image_channels` (1 or 3), `dense_dim` (tuple of 2 ints; dSprites
        (256, 128), the others (256, 256)), `recon_loss` ('bce' for dSprites, 'mse' otherwise)
        and `dataset_size` (N of the full training set).
    Raises:
        ConfigError: for an unknown dataset name, or no source for data that has no generator.
        DataFileError: a source that cannot be read (own images only).
    """
    record = dataset_record(name)
    if source is None:
        if record.generator is None:
            raise ConfigError(f"dataset {name!r} has no built-in generator: give data.source "
                              f"(--source). {record.source_hint}")
        return record.model.as_dict()
    if record.peek is None:
        return record.model.as_dict()
    path, key = split_source(source)
    if not path.exists():
        raise DataFileError(f"{path}: no such file or folder (the {record.title} data.source)")
    source_of(record, path, key)
    info = record.peek(path, key)
    return dataclasses.replace(record.model, image_channels=info.observation_shape[2],
                               dataset_size=info.num_images).as_dict()


def info_for(name: str) -> DatasetInfo:
    """The default (full-release) factor table of a dataset name."""
    return dataset_record(name).info


_register_built_ins()

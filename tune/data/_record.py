"""`Dataset`: the one record of everything the code asks about a dataset.

A record holds the factor table and image shape (`DatasetInfo`), the model settings the paper uses
on it (`ModelDefaults`), its built-in stand-in (`Generator`) and the real files it reads
(`Source`s). It is checked when it is built, so a record with a missing or inconsistent part fails
at import of its module; `tests/test_data_registry.py` walks the registry and checks what needs
pixels (generator shapes, reader formats). docs/recipes/add_dataset.md shows how to add one.

Importing this module costs numpy only: `tune.config` reads the model defaults through it.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Callable, NoReturn

import numpy as np

from tune.data._info import DatasetInfo

_NAME = re.compile(r"[a-z][a-z0-9_]*")
FOLDER = "folder"  # the format name of a source that is a folder, not a file


class RecordError(ValueError):
    """A dataset record that misses a part or contradicts itself (a programming error)."""


def _fail(name: str, text: str) -> NoReturn:
    raise RecordError(f"dataset record {name!r}: {text}")


@dataclasses.dataclass(frozen=True)
class ModelDefaults:
    """The ModelConfig fields the paper code sets from the dataset.

    Attributes:
        image_channels: 1 (grey) or 3 (RGB); must equal the observation's channels.
        dense_dim: (h0, h1) hidden sizes (dSprites (256, 128), the others (256, 256)).
        recon_loss: "bce" for binary images, "mse" otherwise.
        dataset_size: N of the full training set (the beta-TC estimator's N).
    """

    image_channels: int
    dense_dim: tuple[int, int]
    recon_loss: str
    dataset_size: int

    def as_dict(self) -> dict[str, Any]:
        """A new dict of the four fields, ready to merge into a ModelConfig dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Generator:
    """A procedural stand-in for the real data, drawn from factor classes.

    Attributes:
        render: `render(factors int64 (N, F), info) -> uint8 (N, H, W, C)`: a pure, vectorised
            function of the classes (0/1 pixels for a binary dataset, else 0..255).
        version: bump when the pixels change: it keys the cache file and the checksum.
        cached: True: drawn once into the shared cache by worker processes (worth it when
            drawing is slow and the cache small); False: drawn on demand per batch.
        cache_rows: `cache_rows(start, stop, info) -> uint8` rows [start, stop) of the cache
            (bit-packed (n, H*W/8) for a binary dataset, else (n, H, W, C)); a module-level
            function, since the build workers import it by name. Only for `cached`.
        rows_per_task: rows each build worker draws per task. Only for `cached`.
    """

    render: Callable[[np.ndarray, DatasetInfo], np.ndarray]
    version: int
    cached: bool
    cache_rows: Callable[[int, int, DatasetInfo], np.ndarray] | None = None
    rows_per_task: int = 0

    @property
    def module(self) -> str:
        """The module holding `render` (part of the checksum of on-demand data)."""
        return self.render.__module__


@dataclasses.dataclass(frozen=True)
class Reader:
    """A validated real file: its factor table and the function that converts it.

    Attributes:
        info: the factor table the file holds (the record's, or one of its variants).
        fill: `fill(arr, progress)` writes every row of the cache array `arr`, uint8 (N, H, W, C)
            (bit-packed (N, H*W/8) for a binary dataset), in storage order, and calls
            `progress(rows)` after each chunk unless `progress` is None; read errors are
            DataFileErrors naming the file.
    """

    info: DatasetInfo
    fill: Callable[[np.ndarray, Callable[[int], None] | None], None]


@dataclasses.dataclass(frozen=True)
class Source:
    """One accepted format of the real data and the function that reads it.

    Attributes:
        formats: file name endings it reads, lower case (".npz", ".h5"), or `("folder",)`.
        read: `read(path, record) -> Reader`: checks keys, shapes, dtypes and row order before
            any pixel is copied, and raises DataFileError naming the file otherwise.
        takes_key: the source may name an array inside the file, `FILE:KEY` (an HDF5 dataset);
            `read` is then called as `read(path, record, key)`, key None when not given.
    """

    formats: tuple[str, ...]
    read: Callable[..., Reader]
    takes_key: bool = False


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Everything about one dataset; registered by one line in `tune/data/_registry.py`.

    Attributes:
        info: name, factor table (names, sizes, values) and observation shape (H, W, C).
        title: the name people use ("dSprites"), for messages.
        model: the ModelConfig defaults the paper sets on this dataset.
        generator: the built-in stand-in, or None when only real files exist.
        sources: the real-file formats accepted by `--source`, each with its reader.
        source_hint: what `--source` should point at, for messages.
        variants: other factor tables a real file may hold (MPI3D's older 4 x 4 release); a
            cache built from one is reopened with the table of its recorded sizes.
        peek: for data whose size and channels only the source knows (your own images, which
            have no factors): `peek(path, key) -> DatasetInfo` reads just the headers, so that
            a config gets `image_channels` and `dataset_size` without converting anything.
        hash_content: key the cache by a hash of the source's bytes (a folder: of every image
            file), not by its path, size and modification time, so an edited folder is rebuilt.
    """

    info: DatasetInfo
    title: str
    model: ModelDefaults
    generator: Generator | None
    sources: tuple[Source, ...]
    source_hint: str
    variants: tuple[DatasetInfo, ...] = ()
    peek: Callable[[Path, str | None], DatasetInfo] | None = None
    hash_content: bool = False

    def __post_init__(self) -> None:
        info = self.info
        name = getattr(info, "name", "?")
        if not isinstance(info, DatasetInfo):
            _fail(name, f"info must be a DatasetInfo, got {type(info).__name__}")
        if not _NAME.fullmatch(name):
            _fail(name, "the name must be lower case letters, digits and '_'")
        _check_table(info)
        if not self.title:
            _fail(name, "title is empty")
        if not info.factor_sizes and (self.peek is None or self.generator is not None):
            _fail(name, "without factors it needs peek (its size and channels come from the "
                        "source) and no generator (which draws from factor classes)")
        self._check_model()
        self._check_generator()
        self._check_sources()
        for v in self.variants:
            if not isinstance(v, DatasetInfo) or (v.name, v.factor_names, v.observation_shape) \
                    != (name, info.factor_names, info.observation_shape):
                _fail(name, "a variant must be a DatasetInfo of the same name, factor names and "
                            "observation shape")
            _check_table(v)

    def _check_model(self) -> None:
        m, name = self.model, self.name
        if not isinstance(m, ModelDefaults):
            _fail(name, f"model must be ModelDefaults, got {type(m).__name__}")
        if m.image_channels != self.info.observation_shape[2]:
            _fail(name, f"model.image_channels {m.image_channels} differs from the observation "
                        f"shape {self.info.observation_shape}")
        if m.recon_loss not in ("bce", "mse"):
            _fail(name, f"model.recon_loss must be 'bce' or 'mse', got {m.recon_loss!r}")
        if len(m.dense_dim) != 2 or not all(isinstance(d, int) and d > 0 for d in m.dense_dim):
            _fail(name, f"model.dense_dim must be two positive ints, got {m.dense_dim!r}")
        if not isinstance(m.dataset_size, int) or m.dataset_size < 1:
            _fail(name, f"model.dataset_size must be a positive int, got {m.dataset_size!r}")

    def _check_generator(self) -> None:
        g, name = self.generator, self.name
        if g is None:
            if not self.sources:
                _fail(name, "neither a generator nor a source: nothing can make its images")
            return
        if not isinstance(g, Generator):
            _fail(name, f"generator must be a Generator or None, got {type(g).__name__}")
        if not callable(g.render) or not isinstance(g.version, int) or g.version < 1:
            _fail(name, "generator needs a callable render and an int version >= 1")
        if g.cached and (not callable(g.cache_rows) or g.rows_per_task < 1):
            _fail(name, "a cached generator needs cache_rows and rows_per_task >= 1")
        if not g.cached and g.cache_rows is not None:
            _fail(name, "cache_rows is given but the generator is not cached")

    def _check_sources(self) -> None:
        name, seen = self.name, set()
        for s in self.sources:
            if not isinstance(s, Source) or not callable(s.read) or not s.formats or \
                    not isinstance(s.formats, tuple):
                _fail(name, "each source must be a Source with formats and a callable read")
            for f in s.formats:
                if f != FOLDER and (not f.startswith(".") or f != f.lower()):
                    _fail(name, f"format {f!r} must be a lower-case ending like '.npz' or "
                                f"{FOLDER!r}")
                if f in seen:
                    _fail(name, f"format {f!r} is read by two sources")
                seen.add(f)
        if self.sources and not self.source_hint:
            _fail(name, "source_hint is empty: say what --source should point at")

    # --- questions the rest of the code asks ------------------------------------------------
    @property
    def name(self) -> str:
        return self.info.name

    @property
    def has_factors(self) -> bool:
        """False for data without ground-truth factors: supervised metrics cannot run on it."""
        return len(self.info.factor_sizes) > 0

    @property
    def formats(self) -> tuple[str, ...]:
        """Every accepted source format, e.g. ('.npz', '.h5', '.hdf5')."""
        return tuple(f for s in self.sources for f in s.formats)

    def source_for(self, path: Path) -> Source | None:
        """The source whose format matches `path` (a folder, or by file name ending)."""
        is_dir, file_name = path.is_dir(), path.name.lower()
        for s in self.sources:
            for f in s.formats:
                if (f == FOLDER) == is_dir and (is_dir or file_name.endswith(f)):
                    return s
        return None

    def with_sizes(self, sizes: tuple[int, ...]) -> Dataset:
        """The same record with its factor table cut to `sizes` (tests, smoke runs)."""
        return dataclasses.replace(self, info=self.info.with_sizes(tuple(sizes)), variants=())

    def info_for_sizes(self, sizes: tuple[int, ...]) -> DatasetInfo:
        """The factor table (the default or a variant) with these factor sizes."""
        for info in (self.info, *self.variants):
            if tuple(info.factor_sizes) == tuple(sizes):
                return info
        return self.info.with_sizes(tuple(sizes))


def _check_table(info: DatasetInfo) -> None:
    name, sizes = info.name, info.factor_sizes
    if not (len(info.factor_names) == len(sizes) == len(info.factor_values)):
        _fail(name, f"{len(info.factor_names)} factor names, {len(sizes)} sizes and "
                    f"{len(info.factor_values)} value tables: they must match")
    for n, s, v in zip(info.factor_names, sizes, info.factor_values, strict=True):
        if not isinstance(s, int) or s < 1 or np.shape(v) != (s,):
            _fail(name, f"factor {n!r}: size {s!r} needs a value table of shape ({s},), got "
                        f"{np.shape(v)}")
    shape = info.observation_shape
    if len(shape) != 3 or min(shape) < 1 or shape[2] not in (1, 3):
        _fail(name, f"observation_shape must be (H, W, 1 or 3), got {shape}")
    if info.binary and shape[2] != 1:
        _fail(name, "a binary dataset has one channel")

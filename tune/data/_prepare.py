"""`load_dataset` and `prepare_dataset`: real files or built-in generators, behind one cache."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import sys
import time
from typing import Any, Callable

import numpy as np

from models.errors import ConfigError, DataFileError
from tune.data import _build, _cache, _real
from tune.data._base import GroundTruthData, MemmapStore, RenderStore
from tune.data._info import DatasetInfo
from tune.data._record import Dataset, Generator
from tune.data._registry import dataset_record

log = logging.getLogger(__name__)


def _row_shape(info: DatasetInfo) -> tuple[int, ...]:
    h, w, c = info.observation_shape
    return (h * w // 8,) if info.binary else (h, w, c)


def _cached_info(record: Dataset, meta: dict[str, Any]) -> DatasetInfo:
    """The factor table of a converted cache, from its metadata."""
    info = record.info_for_sizes(tuple(meta["factor_sizes"]))
    if record.has_factors:
        return info
    return dataclasses.replace(info, size=int(meta["num_images"]),
                               observation_shape=tuple(meta["observation_shape"]))


def _sizes_tag(info: DatasetInfo) -> str:
    return hashlib.sha256(repr(info.factor_sizes).encode()).hexdigest()[:8]


class _Progress:
    """A tqdm bar on stderr when asked for and stderr is a terminal; else nothing."""

    def __init__(self, enabled: bool, total: int, desc: str) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="img", file=sys.stderr,
                            disable=not sys.stderr.isatty() and enabled != "always")

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _open(name: str, source: str | os.PathLike[str] | None, cache_dir: Any, *,
          progress: bool | str = False, full_check: bool = False
          ) -> tuple[GroundTruthData, bool, float]:
    record = dataset_record(name)
    start = time.perf_counter()
    if source is None:
        gen = _generator(record)
        info = record.info
        if not gen.cached:
            data = _on_demand(record, info)
            return data, False, time.perf_counter() - start
        entry = _cache.Entry(_cache.cache_root(cache_dir),
                             f"{name}-gen-v{gen.version}-{_sizes_tag(info)}")
        rows = gen.cache_rows
        assert rows is not None  # checked by the record

        def fill_from(arr: np.ndarray, prog: Callable[[int], None]) -> None:
            _build.fill_rows(arr, rows.__module__, rows.__name__, (info,),
                             chunk=gen.rows_per_task, progress=prog)

        extra: dict[str, Any] = {"name": name, "generator": gen.module, "version": gen.version}
        src = None
    else:
        path, key = _real.split_source(source)
        if not path.exists():
            other = ", or leave --source out for the built-in generator" if record.generator \
                else ""
            raise DataFileError(f"{path}: no such file or folder (the real {record.title} data); "
                                f"give an existing path{other}")
        src_key = _real.source_key(path, key, content=record.hash_content)
        entry = _cache.Entry(_cache.cache_root(cache_dir),
                             f"{name}-src-{src_key}-{_sizes_tag(record.info)}")
        src = str(path) if key is None else f"{path}:{key}"
        meta = entry.read_meta()
        if meta is not None and entry.check(meta, full=full_check) is None:
            # converted before from this very file (same path, size, mtime, or the same bytes):
            # no need to reread it
            info = _cached_info(record, meta)
            store = MemmapStore(entry.npy, info.observation_shape, packed=info.binary)
            data = GroundTruthData(info, store, checksum=meta["checksum"], source=src,
                                   cache_path=str(entry.npy))
            return data, False, time.perf_counter() - start
        reader = _real.reader_for(record, path, key)  # validates before anything is written
        info = reader.info
        fill_from = reader.fill
        extra = {"name": name, "source": str(path.resolve()), "key": key,
                 "factor_sizes": list(info.factor_sizes), "num_images": info.num_images,
                 "observation_shape": list(info.observation_shape)}
    shape = (info.num_images, *_row_shape(info))

    def fill(arr: np.ndarray) -> None:
        bar = _Progress(progress, info.num_images, f"{name}: building cache")
        try:
            fill_from(arr, bar)
        finally:
            bar.close()

    meta, built = _cache.ensure(entry, shape, fill, extra, full_check=full_check)
    if built:
        log.info("dataset %s cached at %s (%.1f s)", name, entry.npy, meta["build_seconds"])
    store = MemmapStore(entry.npy, info.observation_shape, packed=info.binary)
    data = GroundTruthData(info, store, checksum=meta["checksum"], source=src,
                           cache_path=str(entry.npy))
    return data, built, time.perf_counter() - start


def load_dataset(name: str, source: str | os.PathLike[str] | None = None,
                 cache_dir: str | os.PathLike[str] | None = None) -> GroundTruthData:
    """Open a ground-truth dataset, building its cache first if this machine has none.

    Args:
        name: one of `DATASETS` (dsprites, shapes3d, cars3d, mpi3d_toy, mpi3d_realistic,
            mpi3d_real, images).
        source: path of the real file (Cars3D and your own images: a folder; an array inside
            an HDF5 or .npz file: `FILE:KEY`), or None for the built-in generator.
        cache_dir: cache folder; default `$MIPET_TUNE_CACHE` or `~/.cache/mipet-tune`.
    Returns:
        The dataset, backed by a read-only memory map (or drawn on demand for the 3D Shapes
        and MPI3D generators).
    Raises:
        ConfigError: unknown name, or no source for data without a generator (images).
        DataFileError: a missing, malformed, truncated or corrupt source, or an unusable cache.
    """
    return _open(name, source, cache_dir)[0]


def prepare_dataset(name: str, source: str | os.PathLike[str] | None = None,
                    cache_dir: str | os.PathLike[str] | None = None,
                    progress: bool | str = False) -> dict[str, Any]:
    """Build (or fully verify) the cache of a dataset once, before any trial starts.

    A cache whose full checksum fails is rebuilt with a warning.

    Returns:
        {name, source, path (None when drawn on demand), bytes, checksum, seconds, built,
        images, factors}.
    """
    data, built, seconds = _open(name, source, cache_dir, progress=progress, full_check=True)
    path = data.cache_path
    return {
        "name": name,
        "source": data.source,
        "path": path,
        "bytes": os.path.getsize(path) if path else 0,
        "checksum": data.checksum,
        "seconds": round(seconds, 3),
        "built": built,
        "images": len(data),
        "factors": dict(zip(data.factor_names, data.factors_num_values, strict=True)),
    }


def small_dataset(name: str, factor_sizes: tuple[int, ...]) -> GroundTruthData:
    """See `tune.data.small_dataset`."""
    record = dataset_record(name)
    _generator(record)
    try:
        info = record.info.with_sizes(tuple(factor_sizes))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return _on_demand(record, info)


def _generator(record: Dataset) -> Generator:
    if record.generator is None:
        raise ConfigError(f"dataset {record.name!r} has no built-in generator; give its files "
                          f"with --source (data.source). {record.source_hint}")
    return record.generator


def _on_demand(record: Dataset, info: DatasetInfo) -> GroundTruthData:
    """Drawn on demand: the pixels are a pure function of (generator version, classes)."""
    gen = _generator(record)
    digest = hashlib.sha256(f"{record.name}:{gen.module}:v{gen.version}:{info.factor_sizes}"
                            .encode())
    return GroundTruthData(info, RenderStore(gen.render, info), checksum=digest.hexdigest(),
                           source=None, cache_path=None)


__all__ = ["load_dataset", "prepare_dataset", "small_dataset"]

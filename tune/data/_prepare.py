"""`load_dataset` and `prepare_dataset`: real files or built-in generators, behind one cache."""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from models.errors import ConfigError, DataFileError
from models.strict import nearest
from tune.data import _build, _cache, _info, _real
from tune.data._base import GroundTruthData, MemmapStore, RenderStore
from tune.data._info import DATASETS, DatasetInfo

log = logging.getLogger(__name__)

# name -> (module, cached?, cache-rows function, rows per task)
_GENERATORS: dict[str, tuple[str, bool, str, int]] = {
    "dsprites": ("tune.data._dsprites", True, "render_packed_rows", 4096),
    "cars3d": ("tune.data._cars3d", True, "cache_rows", 1098),
    "shapes3d": ("tune.data._shapes3d", False, "", 0),
    "mpi3d_toy": ("tune.data._mpi3d", False, "", 0),
    "mpi3d_realistic": ("tune.data._mpi3d", False, "", 0),
    "mpi3d_real": ("tune.data._mpi3d", False, "", 0),
}


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; {nearest(str(name), DATASETS)}")


def _row_shape(info: DatasetInfo) -> tuple[int, ...]:
    h, w, c = info.observation_shape
    return (h * w // 8,) if info.binary else (h, w, c)


def _info_from_sizes(name: str, sizes: tuple[int, ...]) -> DatasetInfo:
    info = _info.mpi3d_info(name, sizes[0]) if name.startswith("mpi3d") else _info.info_for(name)
    return info if tuple(info.factor_sizes) == sizes else info.with_sizes(sizes)


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
    _check_name(name)
    start = time.perf_counter()
    if source is None:
        module, cached, rows_fn, chunk = _GENERATORS[name]
        info = _info.info_for(name)
        mod = importlib.import_module(module)
        if not cached:
            # drawn on demand: the pixels are a pure function of (generator version, classes)
            store = RenderStore(mod.render, info)
            digest = hashlib.sha256(f"{name}:{module}:v{mod.VERSION}:{info.factor_sizes}".encode())
            data = GroundTruthData(info, store, checksum=digest.hexdigest(), source=None,
                                   cache_path=None)
            return data, False, time.perf_counter() - start
        entry = _cache.Entry(_cache.cache_root(cache_dir),
                             f"{name}-gen-v{mod.VERSION}-{_sizes_tag(info)}")
        def fill_from(arr: np.ndarray, prog: Callable[[int], None]) -> None:
            _build.fill_rows(arr, module, rows_fn, (info,), chunk=chunk, progress=prog)

        extra: dict[str, Any] = {"name": name, "generator": module, "version": mod.VERSION}
        src = None
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataFileError(f"{path}: no such file or folder (the real {name} data); give an "
                                "existing path, or leave --source out for the built-in generator")
        entry = _cache.Entry(_cache.cache_root(cache_dir), f"{name}-src-{_real.source_key(path)}"
                             f"-{_sizes_tag(_info.info_for(name))}")
        src = str(path)
        meta = entry.read_meta()
        if meta is not None and entry.check(meta, full=full_check) is None:
            # converted before from this very file (same path, size, mtime): no need to reread it
            info = _info_from_sizes(name, tuple(meta["factor_sizes"]))
            store = MemmapStore(entry.npy, info.observation_shape, packed=info.binary)
            data = GroundTruthData(info, store, checksum=meta["checksum"], source=src,
                                   cache_path=str(entry.npy))
            return data, False, time.perf_counter() - start
        reader = _real.reader_for(name, path)  # validates before anything is written
        info = reader.info
        fill_from = reader.fill
        extra = {"name": name, "source": str(path.resolve()),
                 "factor_sizes": list(info.factor_sizes)}
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
            mpi3d_real).
        source: path of the real file (Cars3D: the folder), or None for the built-in generator.
        cache_dir: cache folder; default `$MIPET_TUNE_CACHE` or `~/.cache/mipet-tune`.
    Returns:
        The dataset, backed by a read-only memory map (or drawn on demand for the 3D Shapes
        and MPI3D generators).
    Raises:
        ConfigError: unknown name.
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
        "factors": dict(zip(data.factor_names, data.factors_num_values)),
    }


def small_dataset(name: str, factor_sizes: tuple[int, ...]) -> GroundTruthData:
    """See `tune.data.small_dataset`."""
    _check_name(name)
    module = importlib.import_module(_GENERATORS[name][0])
    full = _info.info_for(name)
    try:
        info = full.with_sizes(tuple(factor_sizes))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    digest = hashlib.sha256(f"{name}:{module.__name__}:v{module.VERSION}:{info.factor_sizes}"
                            .encode())
    return GroundTruthData(info, RenderStore(module.render, info), checksum=digest.hexdigest(),
                           source=None, cache_path=None)


__all__ = ["load_dataset", "prepare_dataset", "small_dataset"]

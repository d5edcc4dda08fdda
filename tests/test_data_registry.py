"""The dataset registry's contract, walked over every registered record.

`check_record` is what docs/recipes/add_dataset.md promises a new dataset is checked against;
tests/test_recipe_dataset.py runs it on a toy dataset of its own.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

from models.errors import ConfigError, DataFileError
from tune.data import DATASETS, Dataset, dataset_record, load_dataset, model_defaults
from tune.data._record import FOLDER
from tune.data._registry import BUILT_IN, REGISTRY


def _sample_factors(record: Dataset, n: int = 5) -> np.ndarray:
    """The first and last class combination and a few random ones: int64 (n + 2, F)."""
    sizes = np.asarray(record.info.factor_sizes)
    rng = np.random.default_rng(0)
    rows = [np.zeros_like(sizes), sizes - 1, *(rng.integers(0, sizes) for _ in range(n))]
    return np.stack(rows).astype(np.int64)


def check_record(record: Dataset, tmp_path: Path) -> None:
    """Everything a registered dataset must satisfy (records are checked for missing or
    inconsistent parts when built; this checks what needs pixels or files)."""
    info, name = record.info, record.name
    tmp_path.mkdir(parents=True, exist_ok=True)
    assert name in DATASETS and dataset_record(name) is record
    if record.generator is not None:
        assert model_defaults(name) == record.model.as_dict()
    else:  # the defaults come from the data: no data, no defaults
        with pytest.raises(ConfigError, match="give data.source"):
            model_defaults(name)
    assert record.model.image_channels == info.observation_shape[2]
    if record.has_factors:
        assert record.model.dataset_size == info.num_images, "factor sizes product != N"
        assert len(set(info.factor_names)) == len(info.factor_names)
    for v in record.variants:
        assert v.factor_names == info.factor_names and v.num_images != info.num_images
    gen = record.generator
    if gen is not None:
        factors = _sample_factors(record)
        images = gen.render(factors, info)
        want = (len(factors), *info.observation_shape)
        assert images.dtype == np.uint8 and images.shape == want, \
            f"{name}: the generator drew {images.dtype} {images.shape}, not uint8 {want}"
        assert np.array_equal(gen.render(factors[::-1].copy(), info)[::-1], images)
        if info.binary:
            assert set(np.unique(images).tolist()) <= {0, 1}
        if gen.cached:
            # the build workers import cache_rows by name in a fresh interpreter
            rows_fn = gen.cache_rows
            module = importlib.import_module(rows_fn.__module__)
            assert getattr(module, rows_fn.__name__) is rows_fn
            n = min(3, info.num_images)
            rows = rows_fn(0, n, info)
            first = gen.render((np.arange(n)[:, None] // info.bases) %
                               np.asarray(info.factor_sizes), info)
            if info.binary:
                first = np.packbits(first.reshape(n, -1).astype(bool), axis=1)
            assert rows.dtype == np.uint8 and np.array_equal(rows, first)
    else:
        assert record.sources, "a dataset without a generator needs a source"
    # every named format is read by its source, and garbage in it is one DataFileError naming it
    assert record.formats and all(f == FOLDER or f.startswith(".") for f in record.formats)
    for fmt in record.formats:
        bad = tmp_path / f"garbage-{name}{'' if fmt == FOLDER else fmt}"
        if fmt == FOLDER:
            bad.mkdir()
        else:
            bad.write_bytes(b"not a dataset" * 64)
        assert record.source_for(bad) is not None
        with pytest.raises(DataFileError, match=bad.name) as err:
            load_dataset(name, source=bad, cache_dir=tmp_path / "cache")
        assert "\n" not in str(err.value)
    assert not list((tmp_path / "cache").glob("*.npy"))  # nothing half-built was kept


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_registered_dataset_keeps_the_contract(name: str, tmp_path: Path) -> None:
    check_record(dataset_record(name), tmp_path)


def test_the_built_in_registry() -> None:
    assert list(DATASETS) == ["dsprites", "shapes3d", "cars3d", "mpi3d_toy", "mpi3d_realistic",
                              "mpi3d_real", "images"]
    assert DATASETS == tuple(REGISTRY) and len(BUILT_IN) == 5
    for module in BUILT_IN:
        assert all(isinstance(r, Dataset) for r in importlib.import_module(module).RECORDS)
    assert model_defaults("dsprites") == {"image_channels": 1, "dense_dim": (256, 128),
                                          "recon_loss": "bce", "dataset_size": 737_280}
    assert dataset_record("mpi3d_real").variants[0].num_images == 460_800
    assert [getattr(dataset_record(n).generator, "cached", None) for n in DATASETS] == [
        True, False, True, False, False, False, None]
    assert [dataset_record(n).has_factors for n in DATASETS] == [True] * 6 + [False]
    assert dataset_record("cars3d").formats == (FOLDER,)
    assert dataset_record("dsprites").formats == (".npz", ".hdf5", ".h5")


@pytest.mark.parametrize(("typo", "nearest"), [("mpi3d_rea", "mpi3d_real"),
                                               ("shapes3D", "shapes3d"), ("cars", "cars3d")])
def test_an_unknown_name_never_falls_back(typo: str, nearest: str) -> None:
    for call in (model_defaults, dataset_record, load_dataset):
        with pytest.raises(ConfigError) as err:
            call(typo)
        text = str(err.value)
        assert f"did you mean '{nearest}'?" in text and "Known: cars3d, dsprites" in text
        assert "\n" not in text


def test_a_source_of_another_format_is_refused(tmp_path: Path) -> None:
    wrong = tmp_path / "3dshapes.npz"
    wrong.write_bytes(b"x")
    with pytest.raises(DataFileError, match=r"3dshapes.npz: 3D Shapes reads .h5, .hdf5, not a "
                                            r"file named '3dshapes.npz'"):
        load_dataset("shapes3d", source=wrong, cache_dir=tmp_path / "c")
    with pytest.raises(DataFileError, match="MPI3D real reads .npz, not a folder"):
        load_dataset("mpi3d_real", source=tmp_path, cache_dir=tmp_path / "c")

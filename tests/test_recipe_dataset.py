"""docs/recipes/add_dataset.md, followed: its example module, written to a temporary folder and
registered with one line, works everywhere a built-in dataset does."""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from test_data_registry import check_record

from models.errors import ConfigError, DataFileError
from tune.config.run import RunConfig
from tune.data import (
    DATASETS,
    Dataset,
    Generator,
    ModelDefaults,
    _registry,
    load_dataset,
    model_defaults,
    register_dataset,
)
from tune.data._record import RecordError

RECIPE = Path(__file__).resolve().parents[1] / "docs" / "recipes" / "add_dataset.md"


@pytest.fixture
def registry() -> Iterator[None]:
    """Whatever a test registers is forgotten after it."""
    saved = dict(_registry.REGISTRY)
    yield
    _registry.REGISTRY.clear()
    _registry.REGISTRY.update(saved)


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: None) -> ModuleType:
    """The recipe's example module, written as tmp_path/toy_bars.py and imported."""
    code = re.search(r"```python\n(.*?)```", RECIPE.read_text(), re.S)
    assert code is not None, "the recipe lost its example module"
    (tmp_path / "toy_bars.py").write_text(code.group(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "toy_bars", raising=False)
    return importlib.import_module("toy_bars")


def test_the_example_dataset_works_everywhere(toy: ModuleType, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    register_dataset(toy.DATASET)  # the one line
    assert "toy_bars" in DATASETS and DATASETS[-1] == "toy_bars"
    # load_dataset: the generator is drawn once into a cache
    cache = tmp_path / "cache"
    data = load_dataset("toy_bars", cache_dir=cache)
    assert len(data) == 24 and data.cache_path is not None
    assert Path(data.cache_path).parent == cache
    idx = np.arange(24)
    assert np.array_equal(data.images_at(idx), toy.render(data.factors_of(idx)))
    # the factor interface of disentanglement_lib
    assert data.num_factors == 2 and data.factors_num_values == [3, 8]
    assert data.factor_names == ["brightness", "position"]
    assert data.observation_shape == [64, 64, 1]
    factors, obs = data.sample(10, np.random.RandomState(0))
    assert factors.shape == (10, 2) and obs.shape == (10, 64, 64, 1)
    assert np.array_equal(obs, data.observations_at(data.index_of(factors)))
    assert np.isclose(obs.max(), 1.0) or (factors[:, 0] < 2).all()
    # the training loader
    batch = next(data.loader(8, seed=0))
    assert batch.shape == (8, 1, 64, 64) and batch.dtype == torch.float32
    assert 0.0 <= float(batch.min()) and float(batch.max()) <= 1.0 and float(batch.max()) > 0.3
    # the config's model defaults
    assert model_defaults("toy_bars") == {"image_channels": 1, "dense_dim": (256, 128),
                                          "recon_loss": "mse", "dataset_size": 24}
    cfg = RunConfig.from_dict({"data": {"name": "toy_bars"}, "model": {"name": "beta_vae"}})
    assert (cfg.model.image_channels, cfg.model.dataset_size, cfg.model.recon_loss) == \
        (1, 24, "mse")
    # its real file, read by its source
    real = tmp_path / "bars.npz"
    np.savez(real, images=toy.render(data.factors_of(idx))[..., 0])
    from_file = load_dataset("toy_bars", source=real, cache_dir=cache)
    assert from_file.source == str(real)
    assert np.array_equal(from_file.images_at(idx), data.images_at(idx))
    with pytest.raises(DataFileError, match=r"short.npz: expected 'images' \(24, 64, 64\)"):
        np.savez(tmp_path / "short.npz", images=np.zeros((5, 64, 64), np.uint8))
        load_dataset("toy_bars", source=tmp_path / "short.npz", cache_dir=cache)
    # and the contract every registered dataset keeps
    check_record(toy.DATASET, tmp_path / "contract")


def test_the_registry_line_of_a_built_in(toy: ModuleType, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    before = list(DATASETS)
    monkeypatch.setattr(_registry, "BUILT_IN", (*_registry.BUILT_IN, "toy_bars"))
    _registry.REGISTRY.clear()
    _registry._register_built_ins()
    assert list(DATASETS) == [*before, "toy_bars"]
    assert RunConfig.from_dict({"data": {"name": "toy_bars"}}).model.image_channels == 1
    with pytest.raises(ConfigError, match="did you mean 'toy_bars'"):
        RunConfig.from_dict({"data": {"name": "toy_bar"}})


def test_a_record_missing_a_part_fails_clearly(toy: ModuleType, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    rec = toy.DATASET
    parts = {f.name: getattr(rec, f.name) for f in dataclasses.fields(Dataset)}
    del parts["model"]
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'model'"):
        Dataset(**parts)
    bad_parts = [
        ({"model": ModelDefaults(3, (256, 128), "mse", 24)},
         r"'toy_bars': model.image_channels 3 differs from the observation shape \(64, 64, 1\)"),
        ({"model": ModelDefaults(1, (256, 128), "l1", 24)}, "recon_loss must be 'bce' or 'mse'"),
        ({"generator": Generator(toy.render, 1, cached=True)},
         "a cached generator needs cache_rows and rows_per_task"),
        ({"generator": None, "sources": ()}, "neither a generator nor a source"),
        ({"info": dataclasses.replace(toy.BARS, factor_sizes=(3, 9))},
         r"factor 'position': size 9 needs a value table of shape \(9,\), got \(8,\)"),
        ({"info": dataclasses.replace(toy.BARS, name="Toy-Bars")}, "lower case"),
        ({"source_hint": ""}, "source_hint is empty"),
    ]
    for change, message in bad_parts:
        with pytest.raises(RecordError, match=message):
            dataclasses.replace(rec, **change)
    register_dataset(rec)
    with pytest.raises(ValueError, match="'toy_bars' is registered already"):
        register_dataset(rec)
    with pytest.raises(TypeError, match="takes a tune.data.Dataset"):
        register_dataset({"name": "toy"})
    # a module listed in the registry without RECORDS fails at import, naming itself
    (tmp_path / "no_records.py").write_text("X = 1\n")
    monkeypatch.setattr(_registry, "BUILT_IN", ("no_records",))
    with pytest.raises(TypeError, match="no_records must define RECORDS"):
        _registry._register_built_ins()
    # what a record cannot know without drawing is the contract test's
    wrong = dataclasses.replace(rec, info=dataclasses.replace(rec.info, name="toy_wrong"),
                                generator=Generator(lambda f, info: np.zeros((len(f), 32, 32, 1),
                                                                             np.uint8), 1, False))
    register_dataset(wrong)
    with pytest.raises(AssertionError, match=r"drew uint8 \(7, 32, 32, 1\), not uint8 \(7, 64"):
        check_record(wrong, tmp_path / "wrong")

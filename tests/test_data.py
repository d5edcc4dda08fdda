"""tune.data: factor tables, generators, cache, sampling, loader (tiny data, CPU, seconds)."""

from __future__ import annotations

import argparse
import base64
import json
import logging
import pickle
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from models.errors import ConfigError, DataFileError
from tune.data import (
    DATASETS,
    DatasetInfo,
    _cars3d,
    _dsprites,
    _mpi3d,
    _registry,
    _shapes3d,
    load_dataset,
    prepare_dataset,
)
from tune.data._base import GroundTruthData, RenderStore
from tune.data._registry import info_for

# The 12 real dSprites images of amir-abdi/disentanglement-pytorch
# (data/test_dsets/dsprites/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz, also in
# shared/data/dsprites_real_12.npz): pixels bit-packed, zlib-compressed, base64; and their values.
REAL_12_PIXELS = (
    "eNrtmEFOwzAQRR2yCDtfAMkXQQ23YoNIToZ8lB4hK/AiygDx/y4epRJFgCKY2Ty1SRz1z/h7ps5ZXBqtxJVBppW9"
    "zCtFlnc0J0q+vXD5yLfrM5jwPNfL6/vlL6nWjOARKuYf67oZlEwvI3hUKicwfx5wXQojvh/xHNfB+6BmQ1UfwBvw"
    "2irbYmO3R9Qn6tZPZ/jsqno71fE2Q2G+PyTTetfG5VEAPRIOH2rAVrGDL3V0c+VH9D36oMVn4xGEoA4COwjOxLgh"
    "1eyhuOeJwx1nGbD47mOim+oiK20OudRtiWZpUxZV9bem9RfjHn7xMir/AAcS9x+sQfyN6EAf63M2THVjFJR9czwi"
    "uaM4SLSKjagddTDtfyJKn8RjF3oPQsZqgOvLgDehIU5olMgZeZ2RRxQAyRd5O8ctLo8rp+w/brNXtqGPB4t92RDy"
    "Ep5cPWefYTlO1HTA+Yz/WzmUg7szjXfZTiSVzzJ3x4qcz9syNnKfj/9IrVeXCtBe"
)
REAL_12_VALUES = np.array([
    (1.0, 2.0, 1.0, 3.222146311374147, 0.8387096774193549, 0.9032258064516129),
    (1.0, 1.0, 0.8, 2.5777170490993173, 0.3225806451612903, 0.22580645161290322),
    (1.0, 3.0, 0.8, 5.47764872933605, 0.25806451612903225, 0.9032258064516129),
    (1.0, 2.0, 0.7, 3.7054682580802685, 0.3870967741935484, 0.8387096774193549),
    (1.0, 2.0, 0.6, 2.5777170490993173, 0.7096774193548387, 0.3548387096774194),
    (1.0, 2.0, 0.6, 5.155434098198635, 0.06451612903225806, 1.0),
    (1.0, 3.0, 0.5, 6.283185307179586, 0.6451612903225806, 0.5483870967741935),
    (1.0, 2.0, 0.7, 2.0943951023931957, 0.5483870967741935, 0.25806451612903225),
    (1.0, 2.0, 0.9, 2.5777170490993173, 0.6129032258064516, 0.06451612903225806),
    (1.0, 3.0, 0.5, 4.027682889217684, 0.3870967741935484, 0.6129032258064516),
    (1.0, 3.0, 0.7, 0.0, 0.2903225806451613, 0.5483870967741935),
    (1.0, 2.0, 0.6, 5.960970676042172, 0.3548387096774194, 0.45161290322580644),
])
SHARED_12 = Path("/work/shared/data/dsprites_real_12.npz")


def real_12() -> tuple[np.ndarray, np.ndarray]:
    """(imgs uint8 (12, 64, 64) in {0, 1}, latents_values float64 (12, 6))."""
    bits = np.frombuffer(zlib.decompress(base64.b64decode(REAL_12_PIXELS)), np.uint8)
    imgs = np.unpackbits(bits.reshape(12, 512), axis=1).reshape(12, 64, 64)
    return imgs, REAL_12_VALUES


SMALL_DSPRITES = (3, 2, 3, 4, 4)  # 288 images: shapes, scales, orientations, posX, posY


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIPET_TUNE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def small_dsprites(monkeypatch: pytest.MonkeyPatch) -> DatasetInfo:
    """Cut dSprites to 288 images so that building its cache takes milliseconds."""
    small = _registry.REGISTRY["dsprites"].with_sizes(SMALL_DSPRITES)
    monkeypatch.setitem(_registry.REGISTRY, "dsprites", small)
    return small.info


def _renderer(name: str):  # noqa: ANN202
    return _registry.dataset_record(name).generator.render


def rendered(name: str) -> GroundTruthData:
    """A dataset drawn on demand by its generator (no cache), for index and sampling tests."""
    info = info_for(name)
    return GroundTruthData(info, RenderStore(_renderer(name), info), checksum="x", source=None,
                           cache_path=None)


# --- factor tables and indices -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "bases"),
    [
        ("dsprites", [245760, 40960, 1024, 32, 1]),
        ("shapes3d", [48000, 4800, 480, 60, 15, 1]),
        ("cars3d", [4392, 183, 1]),
        ("mpi3d_real", [172800, 28800, 14400, 4800, 1600, 40, 1]),
    ],
)
def test_index_formula_and_round_trip(name: str, bases: list[int]) -> None:
    data = rendered(name)
    assert list(data._bases) == bases
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(data), 1000)
    factors = data.factors_of(idx)
    assert factors.dtype == np.int64 and factors.shape == (1000, data.num_factors)
    assert np.array_equal(data.index_of(factors), idx)
    assert (factors < np.array(data.factors_num_values)).all()
    with pytest.raises(ValueError, match="out of range"):
        data.index_of(np.array([data.factors_num_values]))


def test_dsprites_known_indices() -> None:
    # disentanglement-pytorch's fixed images 87040, 332800, 578560 (with the colour factor, whose
    # only class is 0): scale 2, orientation 5, posX 0, posY 0 for square, ellipse, heart
    data = rendered("dsprites")
    rows = np.array([[0, 2, 5, 0, 0], [1, 2, 5, 0, 0], [2, 2, 5, 0, 0]])
    assert data.index_of(rows).tolist() == [87040, 332800, 578560]
    assert data.factor_names == ["shape", "scale", "orientation", "posX", "posY"]
    assert np.isclose(data.factor_values[2][1], 2 * np.pi / 39)


def test_all_datasets_have_tables() -> None:
    assert set(DATASETS) == {"dsprites", "shapes3d", "cars3d", "mpi3d_toy", "mpi3d_realistic",
                             "mpi3d_real", "images"}
    sizes = {n: info_for(n).num_images for n in DATASETS}
    assert sizes["dsprites"] == 737280 and sizes["shapes3d"] == 480000
    assert sizes["cars3d"] == 17568 and sizes["mpi3d_toy"] == 1036800
    assert _mpi3d.mpi3d_info("mpi3d_toy", 4).num_images == 460800


# --- dSprites generator ------------------------------------------------------------------------
def _classes_from_values(values: np.ndarray) -> np.ndarray:
    cols = [np.abs(values[:, k + 1, None] - t[None]).argmin(1)
            for k, t in enumerate(_dsprites.DSPRITES.factor_values)]
    return np.stack(cols, 1)


def test_dsprites_reproduces_the_twelve_real_images() -> None:
    imgs, values = real_12()
    if SHARED_12.exists():  # the embedded copy is the shared file
        shared = np.load(SHARED_12)
        assert np.array_equal(shared["imgs"], imgs)
        assert np.array_equal(shared["latents_values"], values)
    factors = _classes_from_values(values)
    assert sorted(np.bincount(factors[:, 0]).tolist()) == [1, 4, 7]  # squares, hearts, ellipses
    mine = _dsprites.render(factors)[..., 0]
    diff = (mine != imgs).reshape(12, -1).sum(1)
    assert diff.max() <= 10, diff
    assert diff.sum() <= 25, diff


def test_dsprites_whole_dataset_checks() -> None:
    info = _dsprites.DSPRITES
    rng = np.random.default_rng(1)
    cls = np.stack(np.meshgrid(np.arange(3), np.arange(6), np.arange(40), indexing="ij"),
                   -1).reshape(-1, 3)
    cls = np.repeat(cls, 3, axis=0)
    f = np.concatenate([cls, rng.integers(0, 32, (len(cls), 2))], 1)
    imgs = _dsprites.render(f)
    assert imgs.dtype == np.uint8 and set(np.unique(imgs)) <= {0, 1}
    assert abs(imgs.mean() - 0.0425) < 0.001
    # orientation 0 and 2*pi draw the same image
    f0 = f[f[:, 2] == 0]
    f39 = f0.copy()
    f39[:, 2] = 39
    assert np.array_equal(_dsprites.render(f0), _dsprites.render(f39))
    # neighbouring classes (one factor +1) almost always differ
    g = f[rng.choice(len(f), 400, replace=False)]
    same = 0
    for k in (1, 2, 3, 4):
        h = g.copy()
        h[:, k] = np.minimum(h[:, k] + 1, np.array(info.factor_sizes)[k] - 1)
        moved = (h != g).any(1)
        eq = (_dsprites.render(g[moved]) == _dsprites.render(h[moved])).reshape(moved.sum(), -1)
        same += int(eq.all(1).sum())
    assert same <= 4
    # shapes never touch the border
    assert imgs[:, 0].sum() == imgs[:, -1].sum() == imgs[:, :, 0].sum() == 0


# --- every generator ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["dsprites", "shapes3d", "cars3d", "mpi3d_toy"])
def test_generator_is_deterministic(name: str) -> None:
    info = info_for(name)
    rng = np.random.default_rng(5)
    f = np.stack([rng.integers(0, s, 40) for s in info.factor_sizes], 1)
    a = _renderer(name)(f, info)
    b = _renderer(name)(f[::-1].copy(), info)[::-1]
    assert a.shape == (40, *info.observation_shape) and a.dtype == np.uint8
    assert np.array_equal(a, b)


@pytest.mark.parametrize("name", ["shapes3d", "cars3d", "mpi3d_toy", "mpi3d_real"])
def test_every_factor_of_every_stand_in_changes_the_image(name: str) -> None:
    info = info_for(name)
    render = _renderer(name)
    base = np.array([s // 2 for s in info.factor_sizes])
    for k, size in enumerate(info.factor_sizes):
        rows = np.repeat(base[None], size, 0)
        rows[:, k] = np.arange(size)
        imgs = render(rows, info).astype(np.int16)
        ref = imgs[base[k]]
        for v in range(size):
            if v == base[k]:
                continue
            changed = (np.abs(imgs[v] - ref) > 8).any(-1).sum()
            assert changed >= 3, (info.factor_names[k], v, changed)


def test_shapes3d_statistics() -> None:
    info = _shapes3d.SHAPES3D
    rng = np.random.default_rng(2)
    f = np.stack([rng.integers(0, s, 3000) for s in info.factor_sizes], 1)
    imgs = _shapes3d.render(f)
    means = imgs.reshape(-1, 3).mean(0) / 255.0
    assert np.abs(means - np.array([0.5026, 0.5788, 0.6034])).max() < 0.02, means
    assert (imgs[:, :16] == imgs[0, :16]).all()  # the sky band is one colour everywhere


def test_mpi3d_is_dark_and_cars_on_white() -> None:
    info = _mpi3d.mpi3d_info("mpi3d_toy")
    rng = np.random.default_rng(3)
    f = np.stack([rng.integers(0, s, 300) for s in info.factor_sizes], 1)
    assert _mpi3d.render(f, info).mean() / 255 < 0.3
    cars = _cars3d.render(np.array([[0, 0, 0], [3, 11, 182]]))
    assert (cars[:, 0, 0] == 255).all() and (cars != 255).any(axis=(1, 2, 3)).all()


# --- sampling as disentanglement_lib does ------------------------------------------------------
def test_sampling_draws_like_disentanglement_lib() -> None:
    data = rendered("dsprites")
    rs = np.random.RandomState(7)
    factors, obs = data.sample(5, rs)
    ref = np.random.RandomState(7)
    expected = np.stack([ref.randint(s, size=5) for s in [3, 6, 40, 32, 32]], 1)
    ref.randint(1, size=5)  # dlib draws the size-1 colour factor on every observation call
    assert np.array_equal(factors, expected)
    assert rs.randint(1 << 30) == ref.randint(1 << 30)
    assert obs.dtype == np.float32 and obs.shape == (5, 64, 64, 1)
    assert np.array_equal(obs, data.observations_at(data.index_of(factors)))
    shapes = rendered("shapes3d")
    rs, ref = np.random.RandomState(3), np.random.RandomState(3)
    x = shapes.sample_observations(4, rs)
    [ref.randint(s, size=4) for s in shapes.factors_num_values]
    assert rs.randint(1 << 30) == ref.randint(1 << 30)  # no hidden factors for 3D Shapes
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5


# --- cache -------------------------------------------------------------------------------------
def test_generated_cache_is_built_once_and_shared(small_dsprites: DatasetInfo,
                                                  tmp_path: Path) -> None:
    summary = prepare_dataset("dsprites")
    assert summary["built"] and summary["images"] == 288
    assert summary["bytes"] >= 288 * 512 and len(summary["checksum"]) == 64
    data = load_dataset("dsprites")
    assert data.checksum == summary["checksum"] and data.source is None
    assert data.cache_path and data.cache_path.startswith(str(tmp_path / "cache"))
    idx = np.arange(288)
    # served on the 0..255 scale like every dataset (the cache stores bits)
    assert np.array_equal(data.images_at(idx), 255 * _dsprites.render(data.factors_of(idx),
                                                                       small_dsprites))
    obs = data.observations_at(idx)
    assert obs.dtype == np.float32 and set(np.unique(obs).tolist()) == {0.0, 1.0}
    blob = pickle.dumps(data)
    assert len(blob) < 10_000  # the path and tables, never the pixels
    again = pickle.loads(blob)
    assert np.array_equal(again.images_at([3, 200, 7]), data.images_at([3, 200, 7]))
    assert not prepare_dataset("dsprites")["built"]
    assert not np.load(data.cache_path, mmap_mode="r").flags.writeable


def test_corrupt_cache_is_rebuilt_with_a_warning(small_dsprites: DatasetInfo,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    path = Path(prepare_dataset("dsprites")["path"])
    good = path.read_bytes()
    path.chmod(0o644)
    bad = bytearray(good)
    bad[-1000] ^= 0xFF
    path.write_bytes(bytes(bad))
    with caplog.at_level(logging.WARNING):
        summary = prepare_dataset("dsprites")
    assert summary["built"] and "rebuilding" in caplog.text
    assert path.read_bytes() == good
    path.chmod(0o644)
    path.write_bytes(good[: len(good) // 2])  # truncated: caught on a plain load too
    data = load_dataset("dsprites")
    assert np.array_equal(data.images_at(np.arange(288)), 255 * _dsprites.render(
        data.factors_of(np.arange(288)), small_dsprites))


def test_concurrent_preparation_builds_one_copy(small_dsprites: DatasetInfo,
                                                tmp_path: Path) -> None:
    from tune.data import _prepare

    stem = f"dsprites-gen-v{_dsprites.VERSION}-{_prepare._sizes_tag(small_dsprites)}"
    (tmp_path / "cache").mkdir()
    stale = tmp_path / "cache" / f".{stem}.x1y2.npy.tmp"  # as left by a killed build
    stale.write_bytes(b"half")
    results: list[dict] = []
    threads = [threading.Thread(target=lambda: results.append(prepare_dataset("dsprites")))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and sum(r["built"] for r in results) == 1
    assert len({r["checksum"] for r in results}) == 1
    folder = Path(results[0]["path"]).parent
    assert not list(folder.glob(".*tmp"))  # no temporary files left behind, the stale one gone


def test_on_demand_generators_need_no_cache(tmp_path: Path) -> None:
    data = load_dataset("shapes3d")
    assert data.cache_path is None and len(data) == 480000
    assert data.images_at([0, 479999]).shape == (2, 64, 64, 3)
    assert len(pickle.dumps(data)) < 100_000
    assert load_dataset("shapes3d").checksum == data.checksum
    assert load_dataset("mpi3d_real").checksum != load_dataset("shapes3d").checksum


# --- loader ------------------------------------------------------------------------------------
def test_loader_epochs_and_exact_resume(small_dsprites: DatasetInfo) -> None:
    torch = pytest.importorskip("torch")
    data = load_dataset("dsprites")
    loader = data.loader(100, seed=11)
    batches = [next(loader) for _ in range(6)]  # 288 = 100 + 100 + 88 per epoch
    assert batches[0].shape == (100, 1, 64, 64) and batches[0].dtype == torch.float32
    assert batches[2].shape[0] == 88
    assert set(torch.unique(batches[0]).tolist()) <= {0.0, 1.0}
    assert loader.state_dict() == {"epoch": 1, "position": 288}
    epoch0 = torch.cat(batches[:3])
    every = torch.from_numpy(data.observations_at(np.arange(288))).permute(0, 3, 1, 2)
    assert torch.equal(epoch0.sum(0), every.sum(0))  # each image exactly once per epoch
    assert not torch.equal(epoch0, every)  # ... in shuffled order
    assert not torch.equal(torch.cat(batches[3:]), epoch0)  # a fresh permutation
    again = data.loader(100, seed=11)
    next(again)
    state = again.state_dict()
    resumed = data.loader(100, seed=11)
    resumed.load_state_dict(state)
    for want in batches[1:]:
        assert torch.equal(next(resumed), want)
    other = data.loader(100, seed=12)
    assert not torch.equal(next(other), batches[0])
    dropped = data.loader(100, seed=11, drop_last=True)
    assert [next(dropped).shape[0] for _ in range(3)] == [100, 100, 100]


def test_loader_scales_uint8_datasets() -> None:
    pytest.importorskip("torch")
    batch = next(load_dataset("mpi3d_toy").loader(8, seed=0))
    assert batch.shape == (8, 3, 64, 64) and 0.0 <= batch.min() and batch.max() <= 1.0
    assert batch.max() > 0.2


# --- errors and CLI ----------------------------------------------------------------------------
def test_unknown_name_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'dsprites'"):
        load_dataset("dsprite")
    missing = tmp_path / "nope.npz"
    with pytest.raises(DataFileError, match="nope.npz: no such file"):
        load_dataset("dsprites", source=missing)


def test_cli_prepare(small_dsprites: DatasetInfo, tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    from tune.data import cli

    parser = argparse.ArgumentParser(prog="mipet-tune")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "prepare", "dsprites", "--cache-dir", str(tmp_path / "c")])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 288 and out["path"].startswith(str(tmp_path / "c"))
    args = parser.parse_args(["data", "prepare", "shapes3d", "--source", str(tmp_path / "x.h5")])
    with pytest.raises(DataFileError, match="x.h5"):
        args.func(args)


def test_importing_tune_data_pulls_in_no_torch_or_ray() -> None:
    code = "import sys, tune.data, tune.data.cli; print(' '.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert not {"torch", "ray", "h5py", "scipy"} & set(done.stdout.split())


@pytest.mark.parametrize(("name", "sizes"), [("dsprites", (3, 2, 1, 4, 4)),  # 0 = 2 pi
                                             ("shapes3d", (2, 2, 2, 2, 4, 3)),
                                             ("cars3d", (2, 4, 3)),
                                             ("mpi3d_real", (2, 2, 2, 1, 1, 3, 3))])
def test_small_dataset_for_smoke_runs(name: str, sizes: tuple[int, ...]) -> None:
    from tune.data import small_dataset

    data = small_dataset(name, sizes)
    full = info_for(name)
    assert data.factors_num_values == list(sizes) and len(data) == int(np.prod(sizes))
    for k, vals in enumerate(data.factor_values):  # evenly spaced, ends included
        assert vals[0] == full.factor_values[k][0]
        assert vals[-1] == full.factor_values[k][-1] or sizes[k] == 1
    x = data.observations_at(np.arange(len(data)))
    assert x.shape == (len(data), *full.observation_shape) and x.dtype == np.float32
    assert len({im.tobytes() for im in x}) == len(data)  # every class combination differs
    assert pickle.loads(pickle.dumps(data)).checksum == data.checksum
    with pytest.raises(ConfigError, match="between 1 and"):
        small_dataset(name, tuple(s + 100 for s in sizes))

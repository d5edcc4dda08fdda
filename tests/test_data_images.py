"""Your own images (`data: {name: images, source: PATH}`), from generated PNGs and arrays."""

from __future__ import annotations

import argparse
import json
import logging
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from models.errors import ConfigError, DataFileError
from tune.config.run import RunConfig
from tune.data import dataset_record, load_dataset, model_defaults, prepare_dataset


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIPET_TUNE_CACHE", str(tmp_path / "cache"))


def _pictures(n: int, size: tuple[int, int] = (80, 64), seed: int = 0) -> np.ndarray:
    """uint8 (n, H, W, 3) with a distinct colour block per image (W = size[0], H = size[1])."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, size[1], size[0], 3), np.uint8)
    for i in range(n):
        out[i] = rng.integers(0, 256, 3, dtype=np.uint8)
        out[i, 20:40, 30:50] = 255 - out[i, 0, 0]
    return out


def _folder(root: Path, pictures: np.ndarray, grey: tuple[int, ...] = ()) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, pic in enumerate(pictures):
        sub = root / f"part{i % 2}"  # nested: the folder is read recursively
        sub.mkdir(exist_ok=True)
        im = Image.fromarray(pic)
        if i in grey:
            im = im.convert("L")
        path = sub / f"img{i:02d}.png"
        im.save(path)
        paths.append(path)
    return sorted(paths)


def _expected(pic: np.ndarray, mode: str) -> np.ndarray:
    im = Image.fromarray(pic).convert(mode)
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    arr = np.asarray(im.resize((64, 64), Image.LANCZOS))
    return arr[..., None] if arr.ndim == 2 else arr


def test_a_folder_of_pngs(tmp_path: Path) -> None:
    pictures = _pictures(6)
    files = _folder(tmp_path / "pics", pictures)
    data = load_dataset("images", source=tmp_path / "pics")
    assert len(data) == 6 and data.observation_shape == [64, 64, 3]
    assert data.num_factors == 0 and data.factors_num_values == [] and data.factor_names == []
    order = [int(p.stem[3:]) for p in files]  # sorted path order
    for row, i in enumerate(order):
        assert np.array_equal(data.images_at([row])[0], _expected(pictures[i], "RGB"))
    # no factors: sampling draws images by position; picking by factors is refused
    rs = np.random.RandomState(0)
    factors, obs = data.sample(5, rs)
    assert factors.shape == (5, 0) and obs.shape == (5, 64, 64, 3) and obs.dtype == np.float32
    ref = np.random.RandomState(0)
    assert np.array_equal(obs, data.observations_at(ref.randint(6, size=5)))
    assert data.sample_observations(3, rs).shape == (3, 64, 64, 3)
    with pytest.raises(ValueError, match="images has no factors"):
        data.sample_observations_from_factors(factors, rs)
    assert data.factors_of([0, 5]).shape == (2, 0)
    # the loader and pickling work as on any data
    torch = pytest.importorskip("torch")
    batch = next(data.loader(4, seed=1))
    assert batch.shape == (4, 3, 64, 64) and batch.dtype == torch.float32
    assert pickle.loads(pickle.dumps(data)).checksum == data.checksum
    # opened again from the cache, with the same size and channels
    again = load_dataset("images", source=tmp_path / "pics")
    assert again.cache_path == data.cache_path and len(again) == 6
    assert again.observation_shape == [64, 64, 3]
    # the config's model defaults come from the data
    assert model_defaults("images", tmp_path / "pics") == {
        "image_channels": 3, "dense_dim": (256, 256), "recon_loss": "mse", "dataset_size": 6}
    cfg = RunConfig.from_dict({"data": {"name": "images", "source": str(tmp_path / "pics")}})
    assert (cfg.model.image_channels, cfg.model.dataset_size) == (3, 6)
    assert not dataset_record("images").has_factors


def test_an_edited_folder_is_rebuilt(tmp_path: Path) -> None:
    files = _folder(tmp_path / "pics", _pictures(4))
    first = prepare_dataset("images", source=tmp_path / "pics")
    assert first["built"] and first["images"] == 4 and first["factors"] == {}
    assert not prepare_dataset("images", source=tmp_path / "pics")["built"]
    Image.fromarray(_pictures(1, seed=9)[0]).save(files[0])  # same name, other pixels
    second = prepare_dataset("images", source=tmp_path / "pics")
    assert second["built"] and second["checksum"] != first["checksum"]
    assert second["path"] != first["path"]  # the content hash is in the cache key


def test_grey_folder_and_mixed_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pictures = _pictures(4)
    _folder(tmp_path / "grey", pictures, grey=(0, 1, 2, 3))
    grey = load_dataset("images", source=tmp_path / "grey")
    assert grey.observation_shape == [64, 64, 1]
    assert model_defaults("images", tmp_path / "grey")["image_channels"] == 1
    _folder(tmp_path / "mixed", pictures, grey=(1,))
    with caplog.at_level(logging.WARNING):
        mixed = load_dataset("images", source=tmp_path / "mixed")
    assert mixed.observation_shape == [64, 64, 3]
    assert "1 of the 4 images are grey" in caplog.text and "converted to RGB" in caplog.text


def test_arrays_npy_npz_and_hdf5(tmp_path: Path) -> None:
    pictures = _pictures(5, size=(64, 96))  # taller than wide: cropped to the middle square
    np.save(tmp_path / "a.npy", pictures)
    data = load_dataset("images", source=tmp_path / "a.npy")
    assert len(data) == 5
    assert np.array_equal(data.images_at([2])[0], _expected(pictures[2], "RGB"))
    grey = pictures[..., 0]
    np.savez(tmp_path / "g.npz", labels=np.arange(5), images=grey)
    g = load_dataset("images", source=tmp_path / "g.npz")  # 'images' picked among two
    assert g.observation_shape == [64, 64, 1]
    assert np.array_equal(g.images_at([4])[0], _expected(grey[4], "L"))
    floats = pictures[:, 16:80].astype(np.float32) / 255  # 64 x 64 already, floats in [0, 1]
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("faces", data=floats)
        f.create_dataset("other", data=np.zeros(3))
    h = load_dataset("images", source=f"{tmp_path / 'f.h5'}:faces")
    assert h.source == f"{tmp_path / 'f.h5'}:faces"
    assert np.array_equal(h.images_at(np.arange(5)), pictures[:, 16:80])
    assert model_defaults("images", f"{tmp_path / 'f.h5'}:faces")["dataset_size"] == 5
    with pytest.raises(DataFileError, match=r"f.h5: holds 2 arrays \(faces, other\); name one as "
                                            r"f.h5:KEY"):
        load_dataset("images", source=tmp_path / "f.h5")
    with pytest.raises(DataFileError, match=r"f.h5: no array 'face'"):
        load_dataset("images", source=f"{tmp_path / 'f.h5'}:face")
    with pytest.raises(DataFileError, match="a.npy:x: images takes no ':KEY'"):
        load_dataset("images", source=f"{tmp_path / 'a.npy'}:x")


def test_bad_sources_are_one_line_naming_the_file(tmp_path: Path) -> None:
    def refused(source: object, match: str) -> None:
        with pytest.raises(DataFileError, match=match) as err:
            load_dataset("images", source=source)
        assert "\n" not in str(err.value)

    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    refused(tmp_path / "empty", "empty: no PNG or JPEG files in this folder or below it")
    _folder(tmp_path / "small", _pictures(2, size=(100, 40)))
    refused(tmp_path / "small", r"img0[01].png: 100 x 40 pixels, smaller than 64 x 64")
    files = _folder(tmp_path / "broken", _pictures(3))
    files[1].write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    refused(tmp_path / "broken", f"{files[1].name}: not a readable PNG or JPEG image")
    files = _folder(tmp_path / "cut", _pictures(3))
    files[2].write_bytes(files[2].read_bytes()[:120])  # header intact, pixels cut off
    refused(tmp_path / "cut", f"{files[2].name}: not a readable PNG or JPEG image")
    (tmp_path / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    refused(f"{tmp_path / 'corrupt.h5'}:images", "corrupt.h5: not a readable HDF5 file")
    np.save(tmp_path / "tiny.npy", np.zeros((3, 32, 32), np.uint8))
    refused(tmp_path / "tiny.npy", r"tiny.npy: images are 32 x 32 pixels, smaller than 64 x 64")
    np.save(tmp_path / "flat.npy", np.zeros((3, 4096), np.uint8))
    refused(tmp_path / "flat.npy", r"flat.npy: array \(3, 4096\) is not images")
    np.save(tmp_path / "wide.npy", np.full((2, 64, 64), 2.0, np.float32))
    refused(tmp_path / "wide.npy", r"wide.npy: float images must lie in \[0, 1\]")
    refused(tmp_path / "nope", "nope: no such file or folder")
    assert not list((tmp_path / "cache").glob("*.npy"))  # no half-built cache anywhere
    assert not list((tmp_path / "cache").glob(".*tmp"))
    with pytest.raises(ConfigError, match="'images' has no built-in generator"):
        load_dataset("images")


def test_cli_prepare_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tune.data import cli

    _folder(tmp_path / "pics", _pictures(3))
    parser = argparse.ArgumentParser(prog="mipet-tune")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "prepare", "images", "--source", str(tmp_path / "pics")])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 3 and out["built"] and out["factors"] == {}


def test_a_model_trains_on_a_grey_folder(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from conftest import tiny_run_dict

    from tune.train.loop import run_training

    _folder(tmp_path / "pics", _pictures(8), grey=tuple(range(8)))
    cfg = RunConfig.from_dict(tiny_run_dict(data={"name": "images",
                                                  "source": str(tmp_path / "pics")},
                                            train={"batch_size": 4}))  # at most the 8 images
    assert (cfg.model.image_channels, cfg.model.dataset_size) == (1, 8)
    reports: list[dict] = []
    result = run_training(cfg, report=lambda m, ck: reports.append(m),
                          checkpoint_root=tmp_path / "ckpt")
    assert result.step == 6 and len(reports) == 2
    assert all(np.isfinite(v) for r in reports for v in r.values()
               if isinstance(v, float))

"""tune.data: real file formats, written small in a tmp folder, and every bad-input case.

The real files hold fixed numbers of images (737,280 dSprites ...). To keep these files tiny the
factor tables are cut (monkeypatched) to a few classes per factor; the readers then expect exactly
those sizes, so keys, dtypes, axis orders and row orders are exercised as for the full files. The
full-size shape checks are tested separately with HDF5 datasets that are declared at full size but
never written (HDF5 stores no unwritten chunks, so the files stay a few KB).
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from models.errors import DataFileError
from tune.data import (
    DatasetInfo,
    _registry,
    load_dataset,
    prepare_dataset,
)


def _cut(monkeypatch: pytest.MonkeyPatch, name: str, sizes: tuple[int, ...]) -> DatasetInfo:
    """Replace a registered dataset by the same record with its factor table cut to `sizes`."""
    record = _registry.REGISTRY[name].with_sizes(sizes)
    monkeypatch.setitem(_registry.REGISTRY, name, record)
    return record.info


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIPET_TUNE_CACHE", str(tmp_path / "cache"))


def _grid(sizes: tuple[int, ...]) -> np.ndarray:
    idx = np.arange(int(np.prod(sizes)))
    bases = DatasetInfo("x", (), tuple(sizes), (), (1, 1, 1)).bases
    return (idx[:, None] // bases) % np.asarray(sizes)


# --- dSprites ----------------------------------------------------------------------------------
@pytest.fixture
def dsprites_small(monkeypatch: pytest.MonkeyPatch) -> DatasetInfo:
    return _cut(monkeypatch, "dsprites", (3, 2, 2, 2, 3))  # 72 images


def _dsprites_arrays(info: DatasetInfo) -> dict[str, np.ndarray]:
    latent = _grid(info.factor_sizes)
    classes = np.concatenate([np.zeros((len(latent), 1), np.int64), latent], 1)
    values = np.concatenate([np.ones((len(latent), 1)), np.stack(
        [t[latent[:, k]] for k, t in enumerate(info.factor_values)], 1)], 1)
    rng = np.random.default_rng(0)
    imgs = (rng.random((len(latent), 64, 64)) < 0.1).astype(np.uint8)
    return {"imgs": imgs, "latents_classes": classes, "latents_values": values}


def test_dsprites_npz(dsprites_small: DatasetInfo, tmp_path: Path) -> None:
    arrays = _dsprites_arrays(dsprites_small)
    path = tmp_path / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    meta = np.array({"latents_sizes": np.array([1, 3, 6, 40, 32, 32])}, dtype=object)
    np.savez_compressed(path, metadata=meta, **arrays)
    data = load_dataset("dsprites", source=path)
    assert data.source == str(path) and len(data) == 72
    assert np.array_equal(data.images_at(np.arange(72))[..., 0], 255 * arrays["imgs"])
    assert np.array_equal(data.factors_of(np.arange(72)), arrays["latents_classes"][:, 1:])
    obs = data.observations_at([5])
    assert obs.dtype == np.float32 and np.array_equal(obs[0, ..., 0], arrays["imgs"][5])
    summary = prepare_dataset("dsprites", source=path)
    assert not summary["built"] and summary["checksum"] == data.checksum


def test_dsprites_hdf5_twin(dsprites_small: DatasetInfo, tmp_path: Path) -> None:
    arrays = _dsprites_arrays(dsprites_small)
    path = tmp_path / "dsprites.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("imgs", data=arrays["imgs"], chunks=(8, 64, 64), compression="gzip")
        f.create_dataset("latents/classes", data=arrays["latents_classes"])
        f.create_dataset("latents/values", data=arrays["latents_values"])
    data = load_dataset("dsprites", source=path)
    assert np.array_equal(data.images_at([71, 0, 33])[..., 0], 255 * arrays["imgs"][[71, 0, 33]])


def test_dsprites_bad_files(dsprites_small: DatasetInfo, tmp_path: Path) -> None:
    arrays = _dsprites_arrays(dsprites_small)
    other = tmp_path / "other.npz"
    np.savez(other, images=arrays["imgs"])
    with pytest.raises(DataFileError, match=r"other.npz: not a dSprites file.*'imgs'.*found "
                                            r"'images' \(72, 64, 64\) uint8"):
        load_dataset("dsprites", source=other)
    wrong_dtype = tmp_path / "f32.npz"
    np.savez(wrong_dtype, imgs=arrays["imgs"].astype(np.float32),
             latents_classes=arrays["latents_classes"])
    with pytest.raises(DataFileError, match="float32"):
        load_dataset("dsprites", source=wrong_dtype)
    shuffled = tmp_path / "shuffled.npz"
    np.savez(shuffled, imgs=arrays["imgs"], latents_classes=arrays["latents_classes"][::-1])
    with pytest.raises(DataFileError, match="standard order"):
        load_dataset("dsprites", source=shuffled)
    good = tmp_path / "good.npz"
    np.savez(good, **arrays)
    blob = good.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataFileError, match="truncated.npz"):
        load_dataset("dsprites", source=truncated)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all" * 100)
    with pytest.raises(DataFileError, match="garbage.npz: not a readable .npz"):
        load_dataset("dsprites", source=garbage)
    # corrupt pixels inside a compressed member: the CRC or inflate fails while converting
    compressed = tmp_path / "compressed.npz"
    np.savez_compressed(compressed, **arrays)
    with zipfile.ZipFile(compressed) as zf:
        info = zf.getinfo("imgs.npy")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    raw = bytearray(compressed.read_bytes())
    for k in range(start, start + 64):
        raw[k] ^= 0x5A
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(bytes(raw))
    with pytest.raises(DataFileError, match="corrupt.npz"):
        load_dataset("dsprites", source=corrupt)
    assert not list((tmp_path / "cache").glob("*.npy"))  # nothing half-built was kept


# --- 3D Shapes ---------------------------------------------------------------------------------
def test_shapes3d_h5(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    info = _cut(monkeypatch, "shapes3d", (2, 2, 2, 2, 2, 3))
    classes = _grid(info.factor_sizes)
    labels = np.stack([t[classes[:, k]] for k, t in enumerate(info.factor_values)], 1)
    labels[:, 0] += 3e-16  # values like 0.30000000000000004 must still map to their class
    images = np.random.default_rng(1).integers(0, 256, (len(classes), 64, 64, 3), dtype=np.uint8)
    path = tmp_path / "3dshapes.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images, chunks=(4, 64, 64, 3), compression="gzip")
        f.create_dataset("labels", data=labels)
    data = load_dataset("shapes3d", source=path)
    assert np.array_equal(data.images_at(np.arange(len(classes))), images)
    x = data.observations_at([3])
    assert np.allclose(x[0], images[3] / 255.0) and x.dtype == np.float32
    labels[[0, 1]] = labels[[1, 0]]
    swapped = tmp_path / "swapped.h5"
    with h5py.File(swapped, "w") as f:
        f.create_dataset("images", data=images)
        f.create_dataset("labels", data=labels)
    with pytest.raises(DataFileError, match="swapped.h5: 3D Shapes rows are not in the standard"):
        load_dataset("shapes3d", source=swapped)


def test_full_size_shapes_are_checked_before_reading(tmp_path: Path) -> None:
    """Full-size datasets declared but never written: exact shapes, a few KB on disk."""
    path = tmp_path / "3dshapes.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", shape=(480000, 64, 64, 3), dtype=np.uint8,
                         chunks=(1, 64, 64, 3))
        f.create_dataset("labels", shape=(480000, 6), dtype=np.float32, chunks=(1000, 6))
    assert path.stat().st_size < 1_000_000
    with pytest.raises(DataFileError, match=r"'labels' \(480000, 6\) float64; found .*'labels' "
                                            r"\(480000, 6\) float32"):
        load_dataset("shapes3d", source=path)
    dsp = tmp_path / "dsprites.hdf5"
    with h5py.File(dsp, "w") as f:
        f.create_dataset("imgs", shape=(737280, 64, 64, 1), dtype=np.uint8, chunks=(1, 64, 64, 1))
        f.create_dataset("latents/classes", shape=(737280, 6), dtype=np.int64)
    with pytest.raises(DataFileError, match=r"'imgs' \(737280, 64, 64\) uint8.*found 'imgs' "
                                            r"\(737280, 64, 64, 1\)"):
        load_dataset("dsprites", source=dsp)
    not_h5 = tmp_path / "broken.h5"
    not_h5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(DataFileError, match="broken.h5: not a readable HDF5"):
        load_dataset("shapes3d", source=not_h5)


# --- MPI3D -------------------------------------------------------------------------------------
@pytest.fixture
def mpi3d_small(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("mpi3d_toy", "mpi3d_real"):  # both releases, 6 x 6 and 4 x 4, cut
        record = _registry.REGISTRY[name]
        tables = [t.with_sizes((c, c, 2, 1, 1, 2, 2))
                  for t, c in ((record.info, 6), (record.variants[0], 4))]
        monkeypatch.setitem(_registry.REGISTRY, name, dataclasses.replace(
            record, info=tables[0], variants=(tables[1],)))


@pytest.mark.parametrize(("cs", "n"), [(6, 288), (4, 128)])
def test_mpi3d_npz_6x6_and_4x4_told_apart_by_length(mpi3d_small: None, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     cs: int, n: int) -> None:
    images = np.random.default_rng(cs).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    path = tmp_path / "mpi3d_toy.npz"
    np.savez(path, images=images)
    data = load_dataset("mpi3d_toy", source=path)
    assert data.factors_num_values[:2] == [cs, cs] and len(data) == n
    assert np.array_equal(data.images_at([n - 1, 1]), images[[n - 1, 1]])
    # vertical_axis varies fastest
    assert data.factors_of([1]).tolist() == [[0, 0, 0, 0, 0, 0, 1]]
    # a second open uses the converted cache without reading the source again
    from tune.data import _real

    def unread(*_args: object) -> None:
        raise AssertionError("source reread")

    monkeypatch.setattr(_real, "reader_for", unread)
    again = load_dataset("mpi3d_toy", source=path)
    assert again.factors_num_values == data.factors_num_values and again.checksum == data.checksum


def test_mpi3d_wrong_length(mpi3d_small: None, tmp_path: Path) -> None:
    path = tmp_path / "mpi3d_real.npz"
    np.savez(path, images=np.zeros((100, 64, 64, 3), np.uint8))
    with pytest.raises(DataFileError, match=r"mpi3d_real.npz: not an MPI3D file. Expected "
                                            r"'images' \(288, 64, 64, 3\).*found 'images' "
                                            r"\(100, 64, 64, 3\)"):
        load_dataset("mpi3d_real", source=path)


# --- Cars3D ------------------------------------------------------------------------------------
@pytest.fixture
def cars_small(monkeypatch: pytest.MonkeyPatch) -> DatasetInfo:
    return _cut(monkeypatch, "cars3d", (4, 24, 3))


def _car_folder(folder: Path, names: list[str]) -> dict[str, np.ndarray]:
    folder.mkdir()
    ims = {}
    for k, name in enumerate(names):
        # a constant colour per (object, azimuth, elevation) survives resizing exactly
        im = np.zeros((128, 128, 3, 24, 4), dtype=np.uint8)
        im[:, :, 0] = (10 * k + 1)
        im[:, :, 1] = np.arange(24)[:, None] * 10
        im[:, :, 2] = np.arange(4)[None, :] * 50
        scipy.io.savemat(folder / f"{name}.mat", {"im": im, "mask": im[:, :, 0]},
                         do_compression=True)
        ims[name] = im
    # list.txt order differs from the directory order on purpose
    (folder / "list.txt").write_text("\n".join(names) + "\n")
    return ims


def test_cars3d_folder_follows_list_txt(cars_small: DatasetInfo, tmp_path: Path) -> None:
    names = ["car_009_mesh", "car_001_mesh", "car_004_mesh"]
    _car_folder(tmp_path / "cars", names)
    data = load_dataset("cars3d", source=tmp_path / "cars")
    assert data.observation_shape == [64, 64, 3] and len(data) == 4 * 24 * 3
    f = np.array([[2, 5, 0], [3, 23, 1], [0, 0, 2]])  # (elevation, azimuth, object)
    imgs = data.images_at(data.index_of(f))
    assert imgs[:, 10, 10].tolist() == [[1, 50, 100], [11, 230, 150], [21, 0, 0]]


def test_cars3d_bad_folders(cars_small: DatasetInfo, tmp_path: Path) -> None:
    names = ["car_a_mesh", "car_b_mesh", "car_c_mesh"]
    folder = tmp_path / "cars"
    _car_folder(folder, names)
    (folder / "car_b_mesh.mat").unlink()
    with pytest.raises(DataFileError, match=r"car_b_mesh.mat: missing \(1 of the 3"):
        load_dataset("cars3d", source=folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataFileError, match="list.txt: missing.*found 0 .mat files"):
        load_dataset("cars3d", source=empty)
    (folder / "car_b_mesh.mat").write_bytes(b"MATLAB 5.0 MAT-file garbage")
    with pytest.raises(DataFileError, match="car_b_mesh.mat"):
        load_dataset("cars3d", source=folder)
    scipy.io.savemat(folder / "car_a_mesh.mat", {"im": np.zeros((64, 64, 3), np.uint8)})
    with pytest.raises(DataFileError, match=r"car_a_mesh.mat: expected 'im' \(128, 128, 3, 24, "
                                            r"4\) uint8.*found 'im' \(64, 64, 3\)"):
        load_dataset("cars3d", source=folder)


def test_generated_cars3d_cache(cars_small: DatasetInfo) -> None:
    data = load_dataset("cars3d")
    assert len(data) == 288 and data.cache_path is not None
    imgs = data.images_at(np.arange(288))
    assert imgs.dtype == np.uint8 and len({im.tobytes() for im in imgs}) == 288

"""Atomic checkpoint folders (tune.checkpoint): no Ray, tiny files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tune.errors import DataFileError
from tune.train.checkpoint import (
    MARKER,
    is_complete,
    latest_complete,
    load_state,
    read_marker,
    save_state,
    write_checkpoint,
)


def _write_files(folder: Path, payload: bytes = b"weights") -> None:
    (folder / "model.bin").write_bytes(payload)
    (folder / "sub").mkdir()
    (folder / "sub" / "opt.bin").write_bytes(payload[::-1] + b"!")


def test_write_checkpoint_publishes_a_complete_folder(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path, "step_00000010", _write_files, step=10)
    assert path == tmp_path / "step_00000010"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000010"]  # no temp left
    marker = read_marker(path)
    assert marker is not None and marker["step"] == 10
    assert set(marker["files"]) == {"model.bin", "sub/opt.bin"}
    assert is_complete(path) and is_complete(path, verify=True)


def test_crash_inside_write_fn_leaves_no_visible_checkpoint(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, "step_1", _write_files, step=1)

    def crash(folder: Path) -> None:
        _write_files(folder)
        raise RuntimeError("disk went away")

    with pytest.raises(RuntimeError, match="disk went away"):
        write_checkpoint(tmp_path, "step_2", crash, step=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_1"]
    assert latest_complete(tmp_path) == tmp_path / "step_1"


def test_half_written_folders_are_skipped(tmp_path: Path) -> None:
    good = write_checkpoint(tmp_path, "step_5", _write_files, step=5)
    # A folder without a marker (a writer killed before it finished), with a higher step.
    half = tmp_path / "step_9"
    half.mkdir()
    _write_files(half)
    # A folder whose marker lists a file that was truncated (a copy cut short).
    cut = write_checkpoint(tmp_path, "step_7", _write_files, step=7)
    (cut / "model.bin").write_bytes(b"we")
    # A folder whose file kept its size but not its content: only verify=True sees it.
    flipped = write_checkpoint(tmp_path, "step_8", _write_files, step=8)
    (flipped / "model.bin").write_bytes(b"WEIGHTS")
    assert not is_complete(half)
    assert not is_complete(cut)
    assert is_complete(flipped) and not is_complete(flipped, verify=True)
    assert latest_complete(tmp_path) == flipped
    assert latest_complete(tmp_path, verify=True) == good


def test_tampered_marker_is_rejected(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path, "c", _write_files)
    marker = json.loads((path / MARKER).read_text())
    marker["files"]["model.bin"]["size"] = 3
    (path / MARKER).write_text(json.dumps(marker))
    assert not is_complete(path)


def test_latest_orders_by_step_then_natural_name(tmp_path: Path) -> None:
    for name in ["ck_9", "ck_10", "ck_2"]:
        write_checkpoint(tmp_path, name, _write_files)
    assert latest_complete(tmp_path) == tmp_path / "ck_10"
    write_checkpoint(tmp_path, "a", _write_files, step=3)
    write_checkpoint(tmp_path, "b", _write_files, step=12)
    assert latest_complete(tmp_path) == tmp_path / "b"
    assert latest_complete(tmp_path / "missing") is None


def test_rewriting_a_name_replaces_it(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, "last", lambda d: _write_files(d, b"old"))
    path = write_checkpoint(tmp_path, "last", lambda d: _write_files(d, b"new"))
    assert (path / "model.bin").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_bad_name_is_refused(tmp_path: Path) -> None:
    for name in ["", ".hidden", "a/b", MARKER]:
        with pytest.raises(ValueError, match="checkpoint name"):
            write_checkpoint(tmp_path, name, _write_files)


def test_state_round_trip_with_rng_states(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    rng = np.random.RandomState(7)
    state = {
        "step": 12,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": rng.get_state(),
        "generator": np.random.default_rng(3).bit_generator.state,
    }
    path = write_checkpoint(tmp_path, "s", lambda d: save_state(d, state), step=12)
    loaded = load_state(path)
    assert loaded["step"] == 12
    assert torch.equal(loaded["model"]["weight"], model.state_dict()["weight"])
    assert loaded["optimizer"]["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    restored = np.random.RandomState()
    restored.set_state(loaded["numpy_rng"])
    assert restored.randint(1 << 30) == rng.randint(1 << 30)
    assert loaded["generator"] == state["generator"]


def test_load_state_refuses_corrupt_or_missing(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    path = write_checkpoint(tmp_path, "s", lambda d: save_state(d, {"step": 1}))
    (path / "state.pt").write_bytes(b"\0" * (path / "state.pt").stat().st_size)
    with pytest.raises(DataFileError, match="incomplete or corrupt checkpoint"):
        load_state(path)
    with pytest.raises(DataFileError, match="cannot read the checkpoint state"):
        load_state(path, verify=False)
    with pytest.raises(DataFileError, match="no checkpoint state file"):
        load_state(tmp_path / "nothing")


def test_killed_writer_leaves_only_hidden_temp(tmp_path: Path) -> None:
    """A process SIGKILLed inside write_fn: no visible checkpoint, the old one stays latest."""
    write_checkpoint(tmp_path, "step_1", _write_files, step=1)
    code = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from tune.train.checkpoint import write_checkpoint
        def write(d):
            (d / "model.bin").write_bytes(b"partial")
            os.kill(os.getpid(), signal.SIGKILL)
        write_checkpoint(Path({str(tmp_path)!r}), "step_2", write, step=2)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == -9
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert visible == ["step_1"]
    assert any(p.name.startswith(".step_2.tmp-") for p in tmp_path.iterdir())
    assert latest_complete(tmp_path) == tmp_path / "step_1"
    assert os.listdir(tmp_path / "step_1")

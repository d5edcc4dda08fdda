"""Faults a run folder of `mipet-tune train` must survive: kill -9 and resume, truncated and
corrupted checkpoints, changed configs, reruns, bad config files, values past sane limits,
unwritable output folders. Each case is one line and exit 2, or a run that loses nothing.

One tiny 6-step run (checkpoints at steps 3 and 6) is trained once per module and copied into
each test's folder.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import tiny_run_dict

from tune.cli.commands import main
from tune.config.run import RunConfig, config_changes
from tune.train.command import run_folder

_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _write_config(path: Path, **sections) -> Path:
    path.write_text(yaml.safe_dump(tiny_run_dict(**sections)))
    return path


def _train(config: Path, out: Path, *extra: str) -> int:
    return main(["train", "--config", str(config), "--out", str(out), *extra])


def _losses(folder: Path) -> dict[str, float]:
    return yaml.safe_load((folder / "result.yaml").read_text())["losses"]


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("mipet-tune ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(config, out): a finished 6-step run with checkpoints at steps 3 and 6."""
    root = tmp_path_factory.mktemp("trained")
    config = _write_config(root / "run.yaml")
    assert _train(config, root / "out") == 0
    return config, root / "out"


@pytest.fixture
def run(trained, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(config, out, run folder): a copy of the trained run for one test to damage."""
    config, out = trained
    shutil.copytree(out, tmp_path / "out")
    folder = run_folder(tmp_path / "out", RunConfig.from_yaml(config))
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [
        "checkpoint_00000003", "checkpoint_00000006"]
    return config, tmp_path / "out", folder


def _state(folder: Path, step: int) -> Path:
    return folder / "checkpoints" / f"checkpoint_{step:08d}" / "state.pt"


# ---- a killed run resumes exactly ---------------------------------------------------------
def test_kill_9_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path: Path, capsys) -> None:
    config = _write_config(tmp_path / "run.yaml", train={"report_every": 4,
                                                         "checkpoint_every": 4})
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tune", "train", "--config", str(config), "--out", str(out),
         "--set", "train/steps=100000"],
        env=_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = run_folder(out, RunConfig.from_yaml(config))
    try:
        deadline = time.monotonic() + 60
        while not _state(folder, 4).parent.is_dir():  # published by a rename: complete
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    newest = max(int(p.name.split("_")[1]) for p in (folder / "checkpoints").glob("check*"))
    assert 4 <= newest < 24, newest
    # The killed run's steps were 100000; resuming with 24 is the same run, trained shorter.
    capsys.readouterr()
    assert _train(config, out, "--resume", "--set", "train/steps=24") == 0
    err = capsys.readouterr().err
    assert f"resuming from {folder}/checkpoints/checkpoint_{newest:08d}" in err
    assert f"step {newest + 4}/24" in err and "step 4/24" not in err  # no step trained twice
    straight = tmp_path / "straight"
    assert _train(config, straight, "--set", "train/steps=24") == 0
    assert _losses(folder) == _losses(run_folder(straight, RunConfig.from_yaml(config)))
    assert not list((folder / "checkpoints").glob(".*"))  # no unfinished write left behind


# ---- damaged checkpoints ------------------------------------------------------------------
def test_truncated_newest_checkpoint_falls_back_with_a_warning(run, trained, capsys) -> None:
    config, out, folder = run
    state = _state(folder, 6)
    state.write_bytes(state.read_bytes()[:1000])
    assert _train(config, out, "--resume") == 0
    err = capsys.readouterr().err
    assert "WARNING" in err and "checkpoint_00000006" in err and "truncated" in err
    assert "resuming from" in err and "checkpoint_00000003 (step 3)" in err
    assert "step 6/6" in err and "step 3/6" not in err
    # Resumed from step 3 to 6: the same losses as the run that was never damaged.
    original = run_folder(trained[1], RunConfig.from_yaml(config))
    assert _losses(folder) == _losses(original)


def test_same_size_corruption_refuses_then_from_chooses(run, trained, capsys) -> None:
    config, out, folder = run
    state = _state(folder, 6)
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    assert _train(config, out, "--resume") == 2
    line = _one_line(capsys.readouterr().err)
    assert "checkpoint_00000006" in line and "state.pt" in line and "--from" in line
    assert "checkpoint_00000003" in line  # the readable one to choose
    assert _train(config, out, "--from", str(_state(folder, 3).parent)) == 0
    original = run_folder(trained[1], RunConfig.from_yaml(config))
    assert _losses(folder) == _losses(original)


def test_every_checkpoint_unreadable_refuses_naming_them(run, capsys) -> None:
    config, out, folder = run
    for step in (3, 6):
        (_state(folder, step).parent / "COMPLETE").unlink()
    assert _train(config, out, "--resume") == 2
    line = _one_line(capsys.readouterr().err)
    assert "no readable checkpoint" in line
    assert "checkpoint_00000003" in line and "checkpoint_00000006" in line


def test_from_a_checkpoint_of_another_run_refuses(run, tmp_path: Path, capsys) -> None:
    config, out, folder = run
    other = _write_config(tmp_path / "other.yaml", model={"beta": 6.0})
    assert _train(other, out, "--from", str(_state(folder, 3).parent)) == 2
    assert "model/beta: 1.0 -> 6.0" in _one_line(capsys.readouterr().err)


# ---- changed configs and reruns ------------------------------------------------------------
def test_changed_steps_continue_the_same_run(run, tmp_path: Path, capsys) -> None:
    config, out, folder = run
    assert _train(config, out, "--resume", "--set", "train/steps=9") == 0
    err = capsys.readouterr().err
    assert "train/steps changed from 6 to 9" in err and "checkpoint_00000006 (step 6)" in err
    assert "step 9/9" in err and "step 6/9" not in err
    assert yaml.safe_load((folder / "result.yaml").read_text())["step"] == 9
    straight = tmp_path / "straight"
    assert _train(config, straight, "--set", "train/steps=9") == 0
    assert _losses(folder) == _losses(run_folder(straight, RunConfig.from_yaml(config)))
    # Shorter than the newest checkpoint: refused, not silently truncated.
    assert _train(config, out, "--resume", "--set", "train/steps=4") == 2
    assert "past train/steps=4" in _one_line(capsys.readouterr().err)


def test_changed_beta_refuses_listing_the_key(run, tmp_path: Path, capsys) -> None:
    config, out, folder = run
    before = sorted(p.name for p in out.iterdir())
    assert _train(config, out, "--resume", "--set", "model/beta=6") == 2
    line = _one_line(capsys.readouterr().err)
    assert "model/beta: 1.0 -> 6.0" in line and folder.name in line
    assert sorted(p.name for p in out.iterdir()) == before  # nothing created


def test_rerun_without_resume_refuses_and_keeps_the_checkpoints(run, capsys) -> None:
    config, out, folder = run
    saved = {p: p.read_bytes() for p in (folder / "checkpoints").rglob("*") if p.is_file()}
    assert _train(config, out) == 2
    line = _one_line(capsys.readouterr().err)
    assert "--resume" in line and "--restart" in line
    assert {p: p.read_bytes() for p in saved} == saved
    assert _train(config, out, "--restart") == 0
    err = capsys.readouterr().err
    assert "--restart: removing the earlier run" in err and "steps 3, 6" in err
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [
        "checkpoint_00000003", "checkpoint_00000006"]


def test_resume_with_nothing_to_resume_refuses(tmp_path: Path, capsys) -> None:
    config = _write_config(tmp_path / "run.yaml")
    assert _train(config, tmp_path / "out", "--resume") == 2
    assert "no checkpoint of this configuration" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
    folder = run_folder(tmp_path / "out", RunConfig.from_yaml(config))
    folder.mkdir(parents=True)  # a run killed before its first checkpoint
    assert _train(config, tmp_path / "out", "--resume") == 2
    assert "stopped before its first" in _one_line(capsys.readouterr().err)


def test_run_identity_leaves_out_steps_only() -> None:
    cfg = RunConfig.from_dict(tiny_run_dict())
    longer = RunConfig.from_dict(tiny_run_dict(train={"steps": 600}))
    assert longer.run_id() == cfg.run_id() and longer.config_id() != cfg.config_id()
    assert RunConfig.from_dict(tiny_run_dict(model={"beta": 4.0})).run_id() != cfg.run_id()
    assert config_changes(cfg.to_dict(), longer) == []
    other = RunConfig.from_dict(tiny_run_dict(model={"beta": 4.0}, seed=2))
    assert config_changes(cfg.to_dict(), other) == ["model/beta: 1.0 -> 4.0", "seed: 0 -> 2"]


# ---- bad config files and values ----------------------------------------------------------
@pytest.mark.parametrize("content, expected", [
    (b"", "is empty"),
    (b"# only a comment\n", "is empty"),
    (b"- a\n- b\n", "expected a YAML mapping of settings at the top, got list"),
    (b"just text\n", "got str"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not a text file"),
    (None, "is a directory"),
])
@pytest.mark.parametrize("command", ["train", "sweep"])
def test_bad_config_files_are_one_line(tmp_path: Path, capsys, command, content,
                                       expected) -> None:
    path = tmp_path / "config.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    out = tmp_path / "out"
    assert main([command, "--config", str(path), "--out", str(out)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert expected in line and str(path) in line
    assert not out.exists()


def test_a_binary_config_is_one_line_from_a_real_process(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(bytes(range(256)))
    done = subprocess.run([sys.executable, "-m", "tune", "train", "--config", str(path)],
                          env=_ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "not a text file" in _one_line(done.stderr)


@pytest.mark.parametrize("setting, expected", [
    ("train/steps=1e30", "train.steps=1e+30 is past the limit of 1e+09"),
    ("train/steps=1000000001", "is past the limit"),
    ("train/steps=2.5", "must be an integer"),
    ("train/batch_size=1000000", "train.batch_size=1000000 is larger than dataset 'dsprites'"),
])
def test_values_past_sane_limits_are_one_line(tmp_path: Path, capsys, setting,
                                              expected) -> None:
    config = _write_config(tmp_path / "run.yaml")
    assert _train(config, tmp_path / "out", "--set", setting) == 2
    assert expected in _one_line(capsys.readouterr().err)
    assert not list((tmp_path / "out").rglob("checkpoint_*"))


# ---- unwritable output folders --------------------------------------------------------------
def test_out_under_a_file_is_one_line_before_training(tmp_path: Path, capsys) -> None:
    config = _write_config(tmp_path / "run.yaml")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert _train(config, blocker / "sub") == 2
    line = _one_line(capsys.readouterr().err)
    assert "cannot write the run folder" in line and "a_file" in line


@pytest.mark.parametrize("options, expected", [
    ("ro", "cannot write the run folder .* \\(Read-only file system\\)"),
    ("rw", "checkpoint_00000003: cannot write the checkpoint \\(No space left on"),
])
def test_out_on_a_read_only_or_full_mount_is_one_line(tmp_path: Path, capsys, options,
                                                      expected) -> None:
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    mount = tmp_path / "mnt"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"{options},size=256k", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if done.returncode != 0:  # not root, or in a container that may not mount
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        config = _write_config(tmp_path / "run.yaml")
        assert _train(config, mount / "runs") == 2
        assert re.search(expected, _one_line(capsys.readouterr().err))
        assert not list(mount.rglob("checkpoint_*"))  # no half-written checkpoint published
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_changed_steps_under_a_decaying_lr_warn_that_the_curve_changes(tmp_path: Path,
                                                                       capsys) -> None:
    config = _write_config(tmp_path / "run.yaml", train={"lr_schedule": "cosine"})
    assert _train(config, tmp_path / "out") == 0
    capsys.readouterr()
    assert _train(config, tmp_path / "out", "--resume", "--set", "train/steps=9") == 0
    err = capsys.readouterr().err
    assert "WARNING" in err and "train/lr_schedule=cosine decays over train/steps" in err

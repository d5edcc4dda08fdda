"""`mipet-tune train`: a progress bar on a terminal, log lines otherwise, one TensorBoard run."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml
from conftest import tiny_run_dict

from tune.train.command import train_from_file


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_run_dict(train={"report_every": 2})))
    return path


def test_progress_bar_shows_steps_loss_and_speed(tmp_path: Path, capsys) -> None:
    train_from_file(_config(tmp_path), out=tmp_path / "out", progress=True)
    err = capsys.readouterr().err
    assert "6/6" in err and "loss=" in err and "img/s=" in err
    assert len(list((tmp_path / "out").glob("*/tb/events.out.tfevents.*"))) == 1


def test_without_a_terminal_plain_log_lines(tmp_path: Path, capsys, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="tune.train.command"):
        train_from_file(_config(tmp_path), out=tmp_path / "out", progress=False)
    assert "6/6" not in capsys.readouterr().err
    steps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [s.split()[1] for s in steps] == ["2/6", "3/6", "4/6", "6/6"]  # reports, checkpoints
    assert "train/loss=" in steps[0] and "img/s" in steps[0]

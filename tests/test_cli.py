"""The command line in-process on a synthetic sweep folder (no Ray), and the installed script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from _synthetic import synthetic_trials, write_sweep
from tune.cli.commands import main
from tune.config.run import RunConfig


@pytest.fixture()
def sweep(tmp_path: Path) -> Path:
    return write_sweep(synthetic_trials(), tmp_path / "sweep")


def test_rank_prints_the_ranked_table(sweep: Path, capsys) -> None:
    assert main(["rank", str(sweep), "--by", "mig"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Ranked by eval/mig (higher is better)")
    assert "left out:" in out and "| rank |" in out


def test_rank_by_two_metrics_has_a_pareto_front(sweep: Path, capsys) -> None:
    assert main(["rank", str(sweep), "--by", "mig", "recon"]) == 0
    out = capsys.readouterr().out
    assert "mean rank" in out and "front" in out


def test_unknown_metric_lists_the_known_ones(sweep: Path, capsys) -> None:
    assert main(["rank", str(sweep), "--by", "migg"]) == 2
    err = capsys.readouterr().err.strip()
    assert "migg" in err and "mig" in err and "\n" not in err


def test_not_a_sweep_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["rank", str(tmp_path / "empty")]) == 2
    assert "sweep" in capsys.readouterr().err


def test_export_writes_a_config_that_train_accepts(sweep: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "best.yaml"
    assert main(["export", str(sweep), "--to", str(target), "--by", "mig"]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    raw = yaml.safe_load(target.read_text())
    assert {"model", "data", "train", "eval", "seed", "metrics", "provenance"} <= set(raw)
    assert raw["provenance"]["trial_id"]
    RunConfig.from_dict(raw)  # the whole config validates


def test_report_and_ablate(sweep: Path, capsys) -> None:
    assert main(["report", str(sweep)]) == 0
    index = Path(capsys.readouterr().out.strip())
    assert index.is_file() and (index.parent / "index.html").stat().st_size > 10_000
    assert main(["ablate", str(sweep), "--format", "latex"]) == 0
    out = capsys.readouterr().out
    assert "\\toprule" in out and "\\bottomrule" in out


def test_ablate_needs_a_sweep_or_a_config(capsys) -> None:
    assert main(["ablate"]) == 2
    assert "sweep folder or --config" in capsys.readouterr().err


def test_train_with_a_bad_config_key(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: {stpes: 3}\n")
    assert main(["train", "--config", str(cfg)]) == 2
    assert "did you mean 'train/steps'" in capsys.readouterr().err


def test_installed_script_and_module_entry_point() -> None:
    script = shutil.which("mipet-tune") or str(Path(sys.executable).parent / "mipet-tune")
    done = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for command in ("sweep", "train", "rank", "ablate", "export", "report", "data"):
        assert command in done.stdout
    done = subprocess.run([sys.executable, "-m", "tune", "sweep", "--preset", "nope"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "unknown preset 'nope'" in done.stderr
    assert "Traceback" not in done.stderr


def test_version_is_the_installed_distributions(capsys) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"mipet-tune {version('mipet-tune')}\n"

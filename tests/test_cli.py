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


# ---- sweep --dry-run -----------------------------------------------------------------------
def test_sweep_dry_run_counts_trials_and_floor_and_estimates_hours(tmp_path: Path,
                                                                    capsys) -> None:
    before = set(sys.modules)
    assert main(["sweep", "--preset", "quick", "--dry-run", "--out", str(tmp_path / "runs"),
                 "--set", "num_samples=6", "--set", "seeds=2", "--throughput", "1000"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("quick: 6 configurations x 2 seeds = 12 trials\n")
    # the quick space picks betatcvae and mipet_betatcvae on dsprites: 2 floors of 3 seeds
    assert "noise floor: 2 model and dataset pairs x 3 seeds = up to 6 evaluations" in out
    # each trial: 500 steps x 64 images at 1,000 img/s = 32 s; 12 trials = 384 s
    assert "| dsprites betatcvae | 6 | 500 x 64 | 1,000 | 0.01 | --throughput |" in out
    assert "estimated training time: 0.11 device-hours" in out
    assert not (tmp_path / "runs").exists()  # nothing written
    assert not {m for m in set(sys.modules) - before if m == "ray" or m.startswith("ray.")}


def test_sweep_dry_run_weighs_each_model_equally(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        "base: {data: {name: dsprites}, train: {steps: 1000, batch_size: 100}}\n"
        "space:\n"
        "  params:\n"
        "    model/name: {choices: [beta_vae, mipet_vae]}\n"
        "    model/num_ipe: {low: 1, high: 4, type: int, when: {model/name: mipet_vae}}\n"
        "num_samples: 10\n"
        "scheduler: {kind: asha, metric: train/loss}\n"
    )
    assert main(["sweep", "--config", str(cfg), "--dry-run", "--throughput", "100",
                 "--throughput", "mipet_vae=50"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("s: 10 configurations x 1 seeds = 10 trials\n")
    assert "| dsprites beta_vae | 5 | 1000 x 100 | 100 | 0.28 | --throughput |" in out
    assert "| dsprites mipet_vae, num_ipe=1 | 2.5 | 1000 x 100 | 50 | 0.56 |" in out
    assert "| dsprites mipet_vae, num_ipe=4 | 2.5 |" in out
    # 5 x 1000 s + 5 x 2000 s = 15,000 s; all at the fastest 10,000 s, the slowest 20,000 s
    assert "estimated training time: 4.2 device-hours" in out
    assert "fastest corner: 2.8; at the slowest: 5.6 device-hours" in out
    assert "asha stops some trials early" in out


def test_sweep_dry_run_measures_here_without_throughput(capsys) -> None:
    assert main(["sweep", "--preset", "quick", "--dry-run", "--set", "train/batch_size=4"]) == 0
    out = capsys.readouterr().out
    assert "| 500 x 4 |" in out and "| measured here on cpu |" in out
    assert "measured on this machine's CPU, not a GPU" in out


def test_sweep_dry_run_refuses_resume_and_a_bad_space(tmp_path: Path, capsys) -> None:
    assert main(["sweep", "--resume", str(tmp_path), "--dry-run"]) == 2
    assert "--dry-run estimates a new sweep" in capsys.readouterr().err
    assert main(["sweep", "--preset", "quick", "--dry-run", "--throughput", "1",
                 "--set", "space=quik"]) == 2
    assert "unknown search space 'quik'" in capsys.readouterr().err


def test_a_directory_as_config_says_so(tmp_path: Path, capsys) -> None:
    for command in (["sweep", "--dry-run"], ["ablate"]):
        assert main([*command, "--config", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert f"--config {tmp_path}: is a directory" in err and "\n" not in err


# ---- rank, report: what a user gets wrong or the folder does -------------------------------
@pytest.mark.parametrize("top", ["-1", "0", "two"])
def test_rank_top_must_be_a_positive_integer(sweep: Path, top: str, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["rank", str(sweep), f"--top={top}"])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert f"argument --top: expected a positive integer, got '{top}'" in err
    assert "\n" not in err


def test_rank_top_one_prints_one_configuration(sweep: Path, capsys) -> None:
    assert main(["rank", str(sweep), "--by", "mig", "--top", "1"]) == 0
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("| 1 |") or ln.startswith("| 2 |")]
    assert [r[:5] for r in rows] == ["| 1 |"]


@pytest.mark.parametrize("damage", ["truncated", "not parquet"])
def test_rank_goes_on_without_an_unreadable_floor(sweep: Path, damage: str, capsys) -> None:
    floor = sweep / "floor.parquet"
    if damage == "truncated":
        floor.write_bytes(floor.read_bytes()[: floor.stat().st_size // 2])
    else:
        floor.write_text("not a table\n")
    assert main(["rank", str(sweep), "--by", "mig"]) == 0
    out, err = capsys.readouterr()
    assert "| rank |" in out and "No noise floor was computed" in out
    warnings = [ln for ln in err.splitlines() if ln.startswith("WARNING")]
    assert len(warnings) == 1
    assert f"{floor}: not a readable Parquet file" in warnings[0]
    assert "going on without the noise floor" in warnings[0]


def test_report_into_an_unwritable_place_is_one_line(sweep: Path, capsys) -> None:
    (sweep / "report").write_text("a file where the report folder goes\n")
    assert main(["-q", "report", str(sweep)]) == 2  # -q: no INFO lines around it
    err = capsys.readouterr().err.strip()
    assert err.startswith("mipet-tune report: error: ")
    assert f"{sweep / 'report'}" in err and "cannot write the report" in err
    assert "\n" not in err and "Traceback" not in err


@pytest.fixture()
def read_only_sweep(tmp_path: Path):
    """The synthetic sweep on a tmpfs remounted read-only (root with mount rights only: chmod
    does not stop root's writes)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root with mount rights)")
    try:
        folder = write_sweep(synthetic_trials(), mnt / "sweep")
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_report_on_a_read_only_mount_is_one_line(read_only_sweep: Path, capsys) -> None:
    assert main(["-q", "report", str(read_only_sweep)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mipet-tune report: error: {read_only_sweep / 'report'}")
    assert "Read-only file system" in err and "\n" not in err
    assert main(["rank", str(read_only_sweep), "--by", "mig"]) == 0  # reading still works


@pytest.mark.parametrize("section, typo, known", [
    ("model", "latnt_dim", "latent_dim"), ("train", "stpes", "steps"),
    ("data", "nmae", "name"), ("eval", "protocl", "protocol"),
])
def test_unknown_keys_are_named_as_set_names_them(tmp_path: Path, section: str, typo: str,
                                                  known: str, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"{section}: {{{typo}: 3}}\n")
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"unknown key '{section}/{typo}'; did you mean '{section}/{known}'?" in err
    cfg.write_text("seed: 0\n")
    assert main(["train", "--config", str(cfg), "--set", f"{section}/{typo}=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"'{section}/{typo}': unknown config path; did you mean '{section}/{known}'?" in err

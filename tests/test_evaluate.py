"""`mipet-tune evaluate`: a trained run scored again under another protocol, a transfer between
datasets of one image shape, a sweep's final/ columns, and each bad input (one line, exit 2,
nothing written). Tiny runs (6 steps, latent size 4) and MIG/SAP of the `fast` protocol."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import tiny_run_dict, tiny_train
from tune.cli.commands import main


def _train(out: Path, **sections) -> Path:
    """Train a tiny run with `mipet-tune train` into `out`; its run folder."""
    from tune.train.command import train_from_file

    out.mkdir(parents=True, exist_ok=True)
    config = out / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_run_dict(**sections)))
    train_from_file(config, out=out / "runs", progress=False)
    (folder,) = (out / "runs").iterdir()
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A dSprites run whose own final evaluation was fast MIG."""
    return _train(tmp_path_factory.mktemp("run"),
                  eval={"protocol": "fast", "metrics": ["mig"]})


def _written(root: Path) -> dict[str, float]:
    """Every eval_*.json and trials.parquet under `root`, with its modification time."""
    return {str(p): p.stat().st_mtime_ns for pattern in ("eval_*.json", "trials.parquet",
                                                         "final_floor.json")
            for p in root.rglob(pattern)}


def _one_line_exit_2(argv: list[str], capsys, *words: str) -> str:
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith(("INFO ", "WARNING "))]  # log lines
    assert len(err) == 1, err
    for word in words:
        assert word in err[0], err[0]
    return err[0]


# ---- a run ---------------------------------------------------------------------------------
def test_a_run_is_scored_under_another_protocol_beside_its_floor(run: Path, capsys) -> None:
    assert main(["evaluate", str(run), "--protocol", "fast", "--metrics", "mig", "sap"]) == 0
    out = capsys.readouterr().out
    (path,) = run.glob("checkpoints/*/eval_fast.json")
    record = json.loads(path.read_text())
    assert record["protocol"] == "fast" and record["data"] == {"name": "dsprites",
                                                                "source": None}
    assert set(record["metrics"]) == {"mig", "sap"}
    assert all(math.isfinite(v) for v in record["metrics"].values())
    assert set(record["floor"]["metrics"]) == {"mig", "sap"} and not record["floor"]["cached"]
    assert record["budgets"]["mig"]["num_train"] > 0 and record["version"]
    assert record["precision"] == "fp32" and record["step"] == 6
    assert "x floor" in out and "mig" in out and str(path) in out
    # The same protocol and metric seed as the run's own final evaluation give its value.
    recorded = yaml.safe_load((run / "result.yaml").read_text())["metrics"]["eval/mig"]
    assert main(["evaluate", str(run), "--protocol", "fast", "--metrics", "mig"]) == 0
    again = json.loads(path.read_text())
    assert again["metrics"]["mig"] == pytest.approx(recorded, rel=1e-6)
    assert again["floor"]["cached"] is False  # another metric set: another floor
    assert main(["evaluate", str(run), "--protocol", "fast", "--metrics", "mig"]) == 0
    cached = json.loads(path.read_text())
    assert cached["floor"]["cached"] is True
    assert cached["floor"]["metrics"] == again["floor"]["metrics"]


def test_bf16_encodes_close_to_fp32(run: Path) -> None:
    """The bf16 encoder pass: the same metric within bf16's rounding of the codes."""
    from tune.cli.evaluate import Settings, evaluate_checkpoint, find_targets

    (target,) = find_targets(run)
    values = {p: evaluate_checkpoint(target, Settings(protocol="fast", metrics=("mig",),
                                                      precision=p))
              for p in ("fp32", "bf16")}
    assert values["bf16"]["precision"] == "bf16"
    assert values["bf16"]["metrics"]["mig"] == pytest.approx(values["fp32"]["metrics"]["mig"],
                                                             abs=0.02)


def test_the_bf16_pass_returns_float32_codes_near_the_fp32_ones() -> None:
    import numpy as np
    import torch

    from models import ModelConfig, build_model
    from tune.train.evaluation import Encoder

    torch.manual_seed(0)
    model = build_model(ModelConfig(name="beta_vae", latent_dim=4, num_ipe=0))
    images = np.random.default_rng(0).integers(0, 256, (40, 64, 64, 1), dtype=np.uint8)
    cpu = torch.device("cpu")
    fp32 = Encoder(model, cpu, batch_size=16)(images)
    mu, logvar = Encoder(model, cpu, batch_size=16, precision="bf16", with_logvar=True)(images)
    assert mu.dtype == logvar.dtype == np.float32 and mu.shape == fp32.shape == (40, 4)
    assert not np.array_equal(mu, fp32)  # it did run in bf16
    np.testing.assert_allclose(mu, fp32, atol=0.05 * float(np.abs(fp32).max()) + 1e-3)
    assert model.training  # left in the mode it was in


# ---- transfer --------------------------------------------------------------------------------
def test_transfer_between_datasets_of_one_shape(tmp_path: Path, capsys) -> None:
    folder = _train(tmp_path, model={"name": "beta_vae", "latent_dim": 4, "num_ipe": 0},
                    data={"name": "shapes3d"}, train=tiny_train(4, 4, images=False))
    assert main(["evaluate", str(folder), "--protocol", "fast", "--metrics", "mig",
                 "--data", "mpi3d_toy"]) == 0
    (path,) = folder.glob("checkpoints/*/eval_fast_mpi3d_toy.json")
    record = json.loads(path.read_text())
    assert record["data"]["name"] == "mpi3d_toy" and record["trained_on"]["name"] == "shapes3d"
    assert math.isfinite(record["metrics"]["mig"]) and "mig" in record["floor"]["metrics"]
    assert "trained on shapes3d" in capsys.readouterr().out


def test_transfer_to_another_image_shape_is_one_line(run: Path, capsys) -> None:
    before = _written(run)
    _one_line_exit_2(["evaluate", str(run), "--protocol", "fast", "--metrics", "mig",
                      "--data", "shapes3d"], capsys, "64x64x3", "64x64x1")
    assert _written(run) == before


def test_a_conditional_model_needs_its_factors_on_the_new_data(tmp_path: Path, capsys) -> None:
    folder = _train(tmp_path, model={"name": "cvae", "latent_dim": 4, "num_ipe": 0,
                                     "condition_on": ["shape"]},
                    data={"name": "shapes3d"}, train=tiny_train(2, 2, images=False))
    _one_line_exit_2(["evaluate", str(folder), "--protocol", "fast", "--data", "mpi3d_toy"],
                     capsys, "conditional on shape", "mpi3d_toy", "object_shape")
    assert not list(folder.rglob("eval_*.json"))


# ---- a sweep ---------------------------------------------------------------------------------
def _sweep(root: Path, n: int = 2, *, failed: bool = True) -> Path:
    """A sweep folder without Ray: `n` trained trials (beta 1, 2, ...) with their checkpoints
    in `ray/trial_<id>/`, and a failed one; trials.parquet built by the trials table's row
    builder."""
    from analysis.trials import trial_rows
    from tune.config.run import RunConfig
    from tune.train.loop import run_training

    sweep = root / "sweep"
    rows = []
    for i in range(n):
        cfg = RunConfig.from_dict(tiny_run_dict(
            model={"name": "beta_vae", "latent_dim": 4, "num_ipe": 0, "beta": float(i + 1)},
            eval={"protocol": "fast", "metrics": ["mig"]}))
        trial_dir = sweep / "ray" / f"trial_t{i}"
        reports: list[dict] = []
        run_training(cfg, checkpoint_root=trial_dir,
                     report=lambda m, _c, reports=reports, cfg=cfg: reports.append(
                         {**m, "seed": cfg.seed, "config_id": cfg.config_id()}))
        ckpts = sorted(trial_dir.glob("checkpoint_*"))
        rows += trial_rows(trial_id=f"t{i}", config=cfg.to_dict(), reports=reports,
                           checkpoint_path=str(ckpts[-1]), trial_dir=str(trial_dir),
                           over=True)
    if failed:
        cfg = RunConfig.from_dict(tiny_run_dict(
            model={"name": "beta_vae", "latent_dim": 4, "num_ipe": 0}))
        rows += trial_rows(trial_id="bad", config=cfg.to_dict(), reports=[], error="boom",
                           over=True)
    sweep.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(sweep / "trials.parquet", index=False)
    (sweep / "sweep.yaml").write_text(yaml.safe_dump({"name": "s", "metric": ["eval/mig"],
                                                      "mode": ["max"]}))
    return sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return _sweep(tmp_path_factory.mktemp("sweep"))


def test_top_k_of_a_sweep_lands_in_trials_parquet(sweep: Path, capsys) -> None:
    from analysis import rank_table

    before = pd.read_parquet(sweep / "trials.parquet")
    assert main(["evaluate", str(sweep), "--top", "2", "--protocol", "fast", "--metrics",
                 "mig", "sap"]) == 0
    after = pd.read_parquet(sweep / "trials.parquet")
    assert len(after) == len(before) == 3
    assert list(after["trial_id"]) == list(before["trial_id"])
    pd.testing.assert_frame_equal(after[before.columns], before)  # nothing else changed
    scored = after.set_index("trial_id")
    for tid in ("t0", "t1"):
        record = json.loads(next((sweep / "ray" / f"trial_{tid}").glob(
            "checkpoint_*/eval_fast.json")).read_text())
        assert scored.loc[tid, "final/mig"] == pytest.approx(record["metrics"]["mig"])
        assert scored.loc[tid, "final_protocol"] == "fast"
    assert math.isnan(scored.loc["bad", "final/mig"])
    floors = json.loads((sweep / "final_floor.json").read_text())
    assert len(floors) == 1  # both trials are beta_vae on dSprites: one floor
    capsys.readouterr()
    table, text = rank_table(sweep, by=["final/mig"])
    assert table.attrs["by"] == ["final/mig"]
    best = scored.loc[["t0", "t1"], "final/mig"].idxmax()
    assert table["best_trial"].iloc[0] == best
    assert main(["rank", str(sweep), "--by", "final/mig"]) == 0
    assert "final/mig" in capsys.readouterr().out


def test_one_trial_of_a_sweep(tmp_path: Path, capsys) -> None:
    sweep = _sweep(tmp_path, n=1, failed=False)
    assert main(["evaluate", str(sweep), "--trial", "t0", "--protocol", "fast", "--metrics",
                 "mig"]) == 0
    df = pd.read_parquet(sweep / "trials.parquet")
    assert math.isfinite(df.loc[df["trial_id"] == "t0", "final/mig"].item())


# ---- bad input -------------------------------------------------------------------------------
def test_bad_sweep_input_is_one_line_and_writes_nothing(sweep: Path, tmp_path: Path,
                                                        capsys) -> None:
    before = _written(sweep)
    _one_line_exit_2(["evaluate", str(sweep), "--trial", "nope", "--protocol", "fast"], capsys,
                     "--trial nope", "t0")
    _one_line_exit_2(["evaluate", str(sweep), "--top", "5", "--protocol", "fast"], capsys,
                     "--top 5", "2 ranked")
    _one_line_exit_2(["evaluate", str(sweep), "--trial", "bad", "--protocol", "fast"], capsys,
                     "did not finish")
    _one_line_exit_2(["evaluate", str(sweep), "--protocol", "fast"], capsys, "--trial", "--top")
    assert _written(sweep) == before
    empty = tmp_path / "empty_sweep"
    empty.mkdir()
    shutil.copy(sweep / "trials.parquet", empty / "trials.parquet")
    df = pd.read_parquet(empty / "trials.parquet")
    df["status"] = "ERROR"
    df.to_parquet(empty / "trials.parquet", index=False)
    _one_line_exit_2(["evaluate", str(empty), "--top", "1"], capsys, "no finished trial")
    assert not list(empty.rglob("eval_*.json"))


def test_not_a_run_folder_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "junk").mkdir()
    _one_line_exit_2(["evaluate", str(tmp_path / "junk")], capsys, "not a run folder")
    _one_line_exit_2(["evaluate", str(tmp_path / "absent")], capsys, "no such folder")
    assert not list(tmp_path.rglob("*.json"))


def test_a_checkpoint_of_another_config_version_is_one_line(run: Path, tmp_path: Path,
                                                            capsys) -> None:
    from tune.train.checkpoint import load_state, save_state, write_checkpoint

    # a run whose recorded config id is not its checkpoint's
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    for old in copy.rglob("eval_*.json"):
        old.unlink()
    result = yaml.safe_load((copy / "result.yaml").read_text())
    result["config_id"] = "0123456789ab"
    (copy / "result.yaml").write_text(yaml.safe_dump(result))
    _one_line_exit_2(["evaluate", str(copy), "--protocol", "fast"], capsys,
                     "another configuration or config version", "0123456789ab")
    # a checkpoint whose config this version cannot read
    (ckpt,) = (run / "checkpoints").glob("checkpoint_00000006")
    state = load_state(ckpt)
    state["config"]["model"]["old_setting"] = 1
    other = write_checkpoint(tmp_path / "other", "checkpoint_00000006",
                             lambda tmp: save_state(tmp, state), step=6)
    _one_line_exit_2(["evaluate", str(other), "--protocol", "fast"], capsys,
                     "another mipet-tune config version", "old_setting")
    assert not list(tmp_path.rglob("eval_*.json"))

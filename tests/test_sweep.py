"""The sweep end to end on a real (session-wide) Ray: tiny models, the built-in dSprites."""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from _processes import process_tree
from conftest import tiny_sweep_base

from tune.cli.commands import main
from tune.config.sweep import SweepSpec
from tune.sweep.driver import run_sweep

pytestmark = pytest.mark.ray

TINY_BASE = tiny_sweep_base(4, 2)


def _spec(tmp_path: Path, **over) -> SweepSpec:
    d = {
        "name": "t",
        "base": TINY_BASE,
        "space": {"params": {"model/beta": {"low": 1.0, "high": 4.0, "log": True}}},
        "num_samples": 2,
        "metric": ["eval/mig"],
        "mode": ["max"],
        "resources": {"cpu": 1},
        "max_concurrent": 2,
        "storage": str(tmp_path),
        "sampler": {"kind": "random", "seed": 0},
        "max_failures": 0,
    }
    d.update(over)
    return SweepSpec.from_dict(d)


def _optuna_trials(folder: Path):
    import optuna

    from tune.sweep.searcher import make_study_storage

    storage, name = make_study_storage(folder)
    return optuna.load_study(study_name=name, storage=storage).trials


def test_two_trial_sweep_end_to_end_with_conditional_params(ray_session, tmp_path: Path,
                                                             capsys) -> None:
    space = {"params": {
        "model/name": {"choices": ["mipet_vae", "mipet_commutative"]},
        "model/beta": {"low": 1.0, "high": 4.0, "log": True, "when": {"model/name": "mipet_vae"}},
        "model/hy_rec": {"low": 0.01, "high": 1.0, "log": True,
                         "when": {"model/name": "mipet_commutative"}},
    }}
    base = {**TINY_BASE, "model": {"latent_dim": 10},
            "train": {**TINY_BASE["train"], "images": True}}
    spec = _spec(tmp_path, space=space, base=base, num_samples=4,
                 sampler={"kind": "random", "seed": 3})
    folder = run_sweep(spec, verbose=0).folder
    df = pd.read_parquet(folder / "trials.parquet")
    assert len(df) == 4 and (df["status"] == "TERMINATED").all() and not df["failed"].any()
    for col in ("trial_id", "config_id", "seed", "config/model/name", "config/model/beta",
                "config/model/hy_rec", "config/train/steps", "config/seed", "eval/mig",
                "eval/mig", "train/loss", "time_total_s", "node", "checkpoint_path",
                "artifact_dir"):
        assert col in df.columns, col
    assert df["eval/mig"].between(0, 1).all()
    assert (df["config/train/steps"] == 4).all()
    assert set(df["config/model/name"]) == {"mipet_vae", "mipet_commutative"}
    floor = pd.read_parquet(folder / "floor.parquet")  # the untrained models the space picks
    assert set(floor["config/model/name"]) == {"mipet_vae", "mipet_commutative"}
    assert (floor["step"] == 0).all() and floor["eval/mig"].between(0, 1).all()

    # One configuration, one id: the table rebuilt from ray/ (a killed sweep) agrees with it.
    from analysis.sweep import rebuild_from_ray

    rebuilt = rebuild_from_ray(folder / "ray").set_index("trial_id")["config_id"]
    assert df.set_index("trial_id")["config_id"].to_dict() == rebuilt.to_dict()

    # Conditional parameters exist only where they belong: in Optuna and in the trial configs.
    for t in _optuna_trials(folder):
        name = t.params["model/name"]
        assert ("model/beta" in t.params) == (name == "mipet_vae")
        assert ("model/hy_rec" in t.params) == (name == "mipet_commutative")
        assert t.state.name == "COMPLETE"
    for trial_dir in (folder / "ray").glob("trial_*"):
        params = yaml.safe_load((trial_dir / "params.json").read_text())
        assert ("hy_rec" in params["model"]) == (params["model"]["name"] == "mipet_commutative")

    # The analysis ran: ranked table, report and a best config that `train` reproduces.
    best = folder / "report" / "best_config.yaml"
    assert (folder / "report" / "index.md").is_file() and best.is_file()
    assert (Path(df["artifact_dir"].iloc[0]) / "traversal.png").is_file()
    # TensorBoard: one run per trial and seed, under trials/ (none of Ray's copies under ray/)
    runs = sorted(p.parent.parent for p in folder.rglob("events.out.tfevents.*"))
    assert runs == sorted(Path(a) for a in df["artifact_dir"])
    assert list((folder / "report" / "gifs").glob("*.gif"))
    exported = yaml.safe_load(best.read_text())
    assert main(["train", "--config", str(best), "--out", str(tmp_path / "rerun")]) == 0
    out = capsys.readouterr().out
    assert "train/loss" in out and "differs" not in out
    rerun = next((tmp_path / "rerun").iterdir())
    result = yaml.safe_load((rerun / "result.yaml").read_text())
    assert math.isclose(result["losses"]["train/loss"], exported["metrics"]["trial"]["train/loss"],
                        rel_tol=1e-5)


def test_fractional_gpus_pack_eight_trials_on_two_logical_gpus(ray_session, tmp_path) -> None:
    # No evaluation (the packing is under test, not the metrics). The eight workers start
    # within about 3 s of each other (after ~35 s of imports on 2 cores); 20 steps, ~15 s with
    # eight sharing the cores, keep all of them alive until the last has started.
    base = {**TINY_BASE, "train": {**TINY_BASE["train"], "steps": 20, "report_every": 10,
                                    "checkpoint_every": 20}, "eval": {"protocol": "none"}}
    spec = _spec(tmp_path, base=base, num_samples=8, max_concurrent=8, metric=["train/loss"],
                 mode=["min"], resources={"cpu": 0.5, "gpu": 0.25})
    folder = run_sweep(spec, verbose=0).folder
    df = pd.read_parquet(folder / "trials.parquet")
    assert (df["status"] == "TERMINATED").all()
    assert sorted(df["gpu_ids"].value_counts().to_dict().items()) == [("0", 4), ("1", 4)]
    spans = sorted((r.started_at, r.finished_at) for r in df.itertuples())
    peak = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert peak == 8, spans


def test_a_nan_trial_is_recorded_as_failed_and_the_sweep_finishes(ray_session, tmp_path) -> None:
    # An absurd learning rate of the IPE maps makes the loss NaN within a few steps.
    space = {"params": {"train/sub_lr": {"choices": [4.0e-4, 1.0e30]}},
             "fixed": {"train/max_grad_norm": 0.0}}
    spec = _spec(tmp_path, space=space, num_samples=4, sampler={"kind": "random", "seed": 1})
    folder = run_sweep(spec, verbose=0).folder
    df = pd.read_parquet(folder / "trials.parquet")
    bad = df[df["config/train/sub_lr"] > 1]
    good = df[df["config/train/sub_lr"] < 1]
    assert len(bad) and len(good), df["config/train/sub_lr"].tolist()
    assert bad["failed"].all() and bad["nonfinite"].all() and (bad["status"] == "ERROR").all()
    assert not good["failed"].any()
    states = {t.params["train/sub_lr"]: t.state.name for t in _optuna_trials(folder)}
    assert states[1.0e30] == "FAIL" and states[4.0e-4] == "COMPLETE"

    from analysis import load_sweep, rank

    ranked = rank(load_sweep(folder), by="mig")
    excluded = ranked.attrs["excluded"]
    assert excluded["failed"] + excluded["nonfinite"] == len(bad)
    assert ranked["n_trials"].sum() == len(good)


def _trial_worker_pids() -> list[int]:
    """The trial workers of this test session's own Ray instance, and no one else's.

    `ray.init()` in this process started the raylet as our child, and the raylet starts the
    workers, so they are among our descendants; other people's Ray trials on this machine are not.
    """
    return [pid for pid, cmd in process_tree(os.getpid()).items()
            if cmd.startswith(("ray::ImplicitFunc", "ray::train_trial"))]


def test_a_trial_that_crashes_resumes_from_its_checkpoint(ray_session, tmp_path) -> None:
    base = {**TINY_BASE, "train": {**TINY_BASE["train"], "steps": 60, "report_every": 10,
                                    "checkpoint_every": 10}}
    spec = _spec(tmp_path, base=base, num_samples=1, max_failures=2)
    killed: list[int] = []

    def kill_after_checkpoints() -> None:
        # Two checkpoints in storage: the driver has registered at least the first one.
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            if len(list((tmp_path / "t" / "ray").glob("trial_*/checkpoint_*"))) >= 2:
                for pid in _trial_worker_pids():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.1)

    killer = threading.Thread(target=kill_after_checkpoints, daemon=True)
    killer.start()
    folder = run_sweep(spec, verbose=0).folder
    killer.join(timeout=5)
    assert killed, "the trial finished before it could be killed"
    df = pd.read_parquet(folder / "trials.parquet")
    assert df["status"].tolist() == ["TERMINATED"]
    assert int(df["resumed_from_step"].iloc[0]) >= 10
    assert int(df["step"].iloc[0]) == 60


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sweep", "--preset", "quik"], "unknown preset 'quik'; did you mean 'quick'"),
        (["sweep", "--preset", "quick", "--set", "num_sampels=2"], "did you mean 'num_samples'"),
        (["sweep", "--preset", "quick", "--set", "train/stesp=2"], "did you mean 'train/steps'"),
        (["rank", "/nonexistent/sweep"], "/nonexistent/sweep"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(argv, message, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_cli_bad_yaml_and_impossible_resources(ray_session, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_samples: [2\n")
    assert main(["sweep", "--config", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    good = tmp_path / "sweep.yaml"
    good.write_text(yaml.safe_dump({"base": TINY_BASE, "space": "quick",
                                    "resources": {"cpu": 1, "gpu": 3}}))
    assert main(["sweep", "--config", str(good), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gpu" in err[0].lower()
    # Nothing of the sweep that never started is left (no folder holding only sweep.yaml).
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_the_quick_start_commands_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """The README's main job, shortened: the installed CLI in new processes (its own Ray)."""
    import subprocess
    import sys

    sweep = [sys.executable, "-m", "tune", "sweep", "--preset", "quick", "--out", str(tmp_path),
             "--set", "num_samples=2", "--set", "train/steps=4", "--set", "train/batch_size=16",
             "--set", "train/report_every=2", "--set", "train/checkpoint_every=2",
             "--set", "eval/metrics=[mig]"]
    done = subprocess.run(sweep, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("Ranked by eval/mig")
    best = tmp_path / "quick" / "report" / "best_config.yaml"
    assert f"best config:  {best}" in done.stdout
    train = [sys.executable, "-m", "tune", "train", "--config", str(best),
             "--out", str(tmp_path / "rerun")]
    done = subprocess.run(train, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "train/loss" in done.stdout and "(exported:" in done.stdout
    assert "differs" not in done.stdout

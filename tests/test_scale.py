"""Large sweeps: per-trial rows folded into trials.parquet, TPE's settings, the large preset, the
importance cap and (ray) a tiny run of benchmarks/scale.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

import tune.sweep.table as table
from analysis import load_sweep
from analysis.sweep import PENDING_DIR
from models.errors import ConfigError
from tune.config.sweep import SweepSpec

ROOT = Path(__file__).resolve().parents[1]


def _trial(tid: str, mig: float) -> SimpleNamespace:
    """What `record_trial` reads of a Tune Trial that finished."""
    return SimpleNamespace(trial_id=tid, config={}, checkpoint=None, path=None,
                           last_result={"trial_id": tid, "eval/mig": mig, "step": 10,
                                        "seed": 0})


@pytest.fixture()
def active(tmp_path):
    table.ACTIVE.update(folder=tmp_path, checksum="c")
    yield tmp_path
    table.ACTIVE.clear()
    table._FOLDS.pop(str(tmp_path), None)


def _parquet(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / "trials.parquet")


def test_ended_trials_are_pending_rows_folded_every_twentieth_and_load_sweep_sees_them(
        active) -> None:
    folder = active
    table.write_trials(folder, table.sorted_table(
        [r for i in range(40) for r in table.trial_rows_of(
            trial_id=f"t{i:02d}", config={}, metrics={"eval/mig": 0.1, "step": 10, "seed": 0},
            error=None, checkpoint_path=None, trial_dir=None, over=True, data_checksum="c")]))
    table.record_trial(_trial("t00", 0.9), error="boom")  # a newer end of a folded trial
    # 1 pending < 5% of 40 rows: not folded yet, but in the folder and seen by readers
    assert [p.name for p in (folder / PENDING_DIR).iterdir()] == ["t00.parquet"]
    assert len(_parquet(folder)) == 40
    df = load_sweep(folder)
    assert len(df) == 40 and df.attrs["pending_rows"] == 1
    row = df.set_index("trial_id").loc["t00"]
    assert row["status"] == "ERROR" and row["eval/mig"] == 0.9  # the pending row wins
    assert table.finished_count(folder) == 39
    table.record_trial(_trial("new", 0.5), error=None)  # 2 pending >= 2: folded
    assert not (folder / PENDING_DIR).exists()
    folded = _parquet(folder).set_index("trial_id")
    assert len(folded) == 41 and folded.loc["t00", "status"] == "ERROR"
    assert folded.loc["new", "status"] == "TERMINATED"
    assert load_sweep(folder).attrs["pending_rows"] == 0
    assert table.finished_count(folder) == 40


def test_a_failed_fold_keeps_the_table_and_the_pending_rows(active, monkeypatch) -> None:
    folder = active
    table.record_trial(_trial("a", 0.2), error=None)  # the first row is folded at once
    assert len(_parquet(folder)) == 1 and not (folder / PENDING_DIR).exists()
    monkeypatch.setattr(table, "FOLD_FRACTION", 100.0)
    table.record_trial(_trial("b", 0.3), error=None)
    before = (folder / "trials.parquet").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(table, "merge_trials", broken)
    with pytest.raises(OSError, match="disk full"):
        table.write_trials(folder)
    assert (folder / "trials.parquet").read_bytes() == before
    assert [p.name for p in (folder / PENDING_DIR).iterdir()] == ["b.parquet"]
    assert sorted(load_sweep(folder)["trial_id"]) == ["a", "b"]  # no row lost meanwhile
    monkeypatch.undo()
    table.write_trials(folder)
    assert sorted(_parquet(folder)["trial_id"]) == ["a", "b"]


def test_tpe_settings_reach_the_sampler_and_are_refused_elsewhere(tmp_path) -> None:
    from tune.sweep.tuner import build_searcher, load_space_for

    spec = SweepSpec.from_dict({"space": "quick", "sampler": {"kind": "tpe", "n_ei_candidates": 8,
                                                              "constant_liar": False}})
    searcher = build_searcher(spec, load_space_for(spec, spec.run_config()), tmp_path)
    assert searcher._sampler._n_ei_candidates == 8 and not searcher._sampler._constant_liar
    plain = SweepSpec.from_dict({"space": "quick"})
    assert plain.sampler.tpe_options() == {}  # OptunaSearch's own TPESampler(seed=)
    with pytest.raises(ConfigError, match="TPE's settings"):
        SweepSpec.from_dict({"sampler": {"kind": "random", "n_ei_candidates": 8}})
    with pytest.raises(ConfigError, match="n_startup_trials must be >= 0"):
        SweepSpec.from_dict({"sampler": {"n_startup_trials": -1}})


def test_large_preset_dry_run_counts_trials_and_device_hours() -> None:
    from tune.sweep.estimate import sweep_dry_run_text

    spec = SweepSpec.load(preset="large")
    assert spec.num_samples == 10000 and spec.max_concurrent == 400
    assert spec.resources.gpu == 0.25 and spec.sampler.constant_liar
    text = sweep_dry_run_text(spec, ["20000"])
    assert "10000 trials" in text and "device-hours" in text


def test_importance_of_a_large_table_is_subsampled(monkeypatch) -> None:
    from _synthetic import synthetic_trials

    import tune.sweep.importance as importance

    df = synthetic_trials(n_seeds=3, broken=False)
    full = importance.sweep_importance(df, "mig", n_boot=3, max_trials=None)
    assert full.attrs["subsample"] is None and (full["n_trials"] == len(df)).all()
    small = importance.sweep_importance(df, "mig", max_trials=20)
    assert small.attrs["subsample"] == (20, len(df))
    assert (small["n_trials"] == 20).all() and small.attrs["n_boot"] == importance.LARGE_N_BOOT


def test_two_objective_pareto_fronts_match_the_general_sort() -> None:
    import importlib

    import numpy as np

    pareto_fronts = importlib.import_module("analysis.rank").pareto_fronts
    rng = np.random.default_rng(0)
    for _ in range(200):
        v = rng.integers(0, 6, size=(int(rng.integers(1, 50)), 2)).astype(float)  # many ties
        maximize = [bool(rng.integers(2)), bool(rng.integers(2))]
        general = pareto_fronts(np.column_stack([v, np.zeros(len(v))]), [*maximize, True])
        assert (pareto_fronts(v, maximize) == general).all(), (v, maximize)


@pytest.mark.ray
def test_scale_benchmark_writes_its_figures(tmp_path) -> None:
    out = tmp_path / "scale.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--trials", "20",
         "--concurrent", "4", "--train-s", "0.01", "--window", "10", "--folder",
         str(tmp_path / "runs"), "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(out.read_text())
    assert [w["trials"] for w in got["windows"]] == [10, 20]
    for w in got["windows"]:
        for key in ("driver_s_per_trial", "suggest_s", "wait_s_max", "rss_mib", "folder_mib"):
            assert isinstance(w[key], float) and w[key] >= 0, (key, w)
    assert got["finished"] == 20
    for key in ("rank_s", "report_s", "export_s"):
        assert got[key] > 0
    assert len(pd.read_parquet(Path(got["folder"]) / "trials.parquet")) == 20


def test_an_ended_trial_keeps_only_its_objectives_statistics() -> None:
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    from tune.sweep.callbacks import slim_trial

    def meta():
        m = _TrainingRunMetadata()
        for step in (1, 2):
            for key in ("eval/mig", "eval/sap", "train/loss", "config/model/beta", "step"):
                m.update_metric(key, 0.5 * step, step=step)
        return m

    m = meta()
    before = len(m.get_json_state())
    assert slim_trial(SimpleNamespace(run_metadata=m, trial_id="t"), ("train/loss",)) == 4
    assert list(m.metric_analysis) == ["train/loss"] and list(m.metric_n_steps) == ["train/loss"]
    assert m.metric_analysis["train/loss"]["max"] == 1.0
    assert len(m.get_json_state()) < before / 2  # the snapshot's copy shrinks too
    m = meta()
    table.ACTIVE.clear()  # no running sweep: every eval/* number is kept
    assert slim_trial(SimpleNamespace(run_metadata=m, trial_id="t")) == 3
    assert sorted(m.metric_analysis) == ["eval/mig", "eval/sap"]
    assert slim_trial(SimpleNamespace(trial_id="odd")) == 0  # never raises


def test_bounded_tpe_models_the_best_and_the_most_recent_trials_only() -> None:
    import optuna

    from tune.sweep.searcher import _StudyWindow, bounded_tpe_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = bounded_tpe_sampler(40, seed=0, n_startup_trials=5)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for _ in range(120):
        t = study.ask()
        x = t.suggest_float("x", 0.0, 1.0)
        study.tell(t, -abs(x - 0.3))
    best = study.best_trial.number
    running = study.ask()
    window = _StudyWindow(study, 40)._get_trials(deepcopy=False)
    finished = [t for t in window if t.state.is_finished()]
    assert len(finished) == 40 and window[-1].number == running.number
    numbers = [t.number for t in finished]
    assert best in numbers and numbers[-1] == 119  # the best of all, then the most recent
    assert len(set(numbers) & set(range(80, 120))) < 40  # not merely the last 40
    assert len(study.trials) == 121  # the study itself keeps everything
    xs = [t.params["x"] for t in study.trials[-41:-1]]
    assert sum(abs(x - 0.3) < 0.1 for x in xs) > 12  # learns where the optimum is (random: 8)
    with pytest.raises(ConfigError, match="max_history must be >= 1"):
        bounded_tpe_sampler(0)
    spec = SweepSpec.from_dict({"space": "quick", "sampler": {"max_history": 500}})
    assert spec.sampler.max_history == 500

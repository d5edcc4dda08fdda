"""analysis.sweep: reading a sweep folder (parquet or rebuilt from Ray folders), the vocabulary."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from _synthetic import synthetic_trials, table, write_sweep

from analysis.errors import AnalysisError
from analysis.sweep import (
    direction,
    load_sweep,
    resolve_metric,
    resolve_param,
    searched_params,
    usable_trials,
)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    root = tmp_path_factory.mktemp("sweeps")
    write_sweep(synthetic_trials(n_seeds=2), root / "full", images=False)
    write_sweep(synthetic_trials(n_seeds=2), root / "killed", parquet=False, images=False)
    return {"parquet": load_sweep(root / "full"), "ray": load_sweep(root / "killed")}


def test_parquet_table_is_typed_and_flags_broken_trials(sweeps: dict[str, pd.DataFrame]) -> None:
    df = sweeps["parquet"]
    assert df.attrs["source"] == "parquet"
    assert df.attrs["spec"]["name"] == "synthetic"
    assert len(df) == 3 * 3 * 2 * 2 + 3
    assert df["failed"].dtype == bool and df["nonfinite"].dtype == bool
    assert df["seed"].dtype == "Int64"
    assert df["eval/mig"].dtype == float
    # tuples come back hashable (parquet gives numpy arrays)
    assert set(df["config/eval/metrics"]) == {("mig", "dci")}
    broken = df[~df["usable"]].sort_values("trial_id")
    assert list(broken["status"]) == ["ERROR", "ERROR", "RUNNING"]
    assert list(broken["nonfinite"]) == [False, True, False]
    assert list(broken["failed"]) == [True, True, False]
    assert df["usable"].sum() == 36


def test_rebuilt_from_ray_matches_the_parquet(sweeps: dict[str, pd.DataFrame]) -> None:
    a, b = sweeps["parquet"], sweeps["ray"]
    assert b.attrs["source"] == "ray"
    a, b = (
        a.sort_values("trial_id").reset_index(drop=True),
        b.sort_values("trial_id").reset_index(drop=True),
    )
    for col in ("trial_id", "status", "failed", "nonfinite", "config_id", "seed", "usable"):
        assert a[col].tolist() == b[col].tolist(), col
    cfg = [c for c in a.columns if c.startswith("config/")]
    assert sorted(cfg) == sorted(c for c in b.columns if c.startswith("config/"))
    for col in cfg:
        assert a[col].astype(str).tolist() == b[col].astype(str).tolist(), col
    ok = a["usable"]
    for col in ("eval/mig", "eval/sap", "train/recon", "train/loss"):
        np.testing.assert_allclose(a.loc[ok, col], b.loc[ok, col])
    assert "fast/mig" in b.columns  # intermediate metrics survive the rebuild
    assert b.loc[b["status"] == "ERROR", "error"].str.contains("Error").all()
    assert searched_params(a) == searched_params(b)


def test_ray_rebuild_reads_a_cut_off_result_line_and_missing_params(tmp_path) -> None:
    trial = tmp_path / "ray" / "train_trial_abc12_00001_beta=4_2026-11-23_10-00-00"
    trial.mkdir(parents=True)
    config = {"model": {"name": "mipet_vae", "beta": 4.0}, "train": {"steps": 10}, "seed": 3}
    lines = [
        {"step": 5, "train/loss": 3.0, "config": config, "trial_id": "abc12"},
        {
            "step": 10,
            "train/loss": 2.0,
            "eval/mig": 0.4,
            "config": config,
            "trial_id": "abc12",
            "done": True,
        },
    ]
    (trial / "result.json").write_text(
        "".join(json.dumps(r) + "\n" for r in lines) + '{"step": 11, "tra'
    )
    df = load_sweep(tmp_path)
    row = df.iloc[0]
    assert row["trial_id"] == "abc12" and row["status"] == "TERMINATED" and row["usable"]
    assert row["config/model/beta"] == 4.0 and row["seed"] == 3 and row["step"] == 10
    assert row["train/loss"] == 2.0 and row["eval/mig"] == 0.4


def test_ray_rebuild_flags_a_reported_nan_loss(tmp_path) -> None:
    trial = tmp_path / "ray" / "train_trial_x1_00001_2026"
    trial.mkdir(parents=True)
    cfg = {"model": {"beta": 1.0}, "seed": 0}
    (trial / "result.json").write_text(
        json.dumps({"step": 1, "train/loss": float("nan"), "config": cfg}) + "\n"
    )
    df = load_sweep(tmp_path)
    assert bool(df["nonfinite"].iloc[0]) and bool(df["failed"].iloc[0])
    assert not df["usable"].iloc[0]


def test_stopped_early_trials_are_flagged() -> None:
    df = table(
        [
            {"config/train/steps": 100, "step": 100, "eval/mig": 0.1},
            {"config/train/steps": 100, "step": 30, "eval/mig": 0.9, "config/model/beta": 2.0},
        ]
    )
    assert df["stopped"].tolist() == [False, True]
    used, excluded = usable_trials(df)
    assert len(used) == 1 and excluded["stopped"] == 1
    used, excluded = usable_trials(df, include_stopped=True)
    assert len(used) == 2 and excluded["stopped"] == 0


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: None, "no such sweep folder"),
        (lambda p: p.mkdir(), "not a sweep folder"),
        (lambda p: (p.mkdir(), (p / "trials.parquet").write_text("junk")), "not a readable"),
        (lambda p: (p.mkdir(), (p / "ray").mkdir()), "no Ray trial folders"),
    ],
)
def test_not_a_sweep_is_one_clear_error(tmp_path, make, match) -> None:
    folder = tmp_path / "sweep"
    make(folder)
    with pytest.raises(AnalysisError, match=match):
        load_sweep(folder)


def test_metric_names_and_directions() -> None:
    df = table(
        [
            {
                "config/model/beta": 1.0,
                "eval/mig": 0.1,
                "train/recon": 3.0,
                "eval/gaussian_total_correlation": 0.2,
            }
        ]
    )
    assert resolve_metric(df, "mig") == "eval/mig"
    assert resolve_metric(df, "recon") == "train/recon"
    assert resolve_metric(df, "train/recon") == "train/recon"
    assert direction("eval/mig") == "max"
    assert direction("train/recon") == "min"
    assert direction("eval/gaussian_total_correlation") == "min"
    with pytest.raises(AnalysisError, match=r"unknown metric 'mgi'.*mig.*train/recon"):
        resolve_metric(df, "mgi")


def test_param_names() -> None:
    df = table(
        [
            {
                "config/model/beta": 1.0,
                "config/train/lr": 1e-3,
                "config/model/lr": 1.0,
                "eval/mig": 0.1,
            }
        ]
    )
    assert resolve_param(df, "beta") == "config/model/beta"
    assert resolve_param(df, "model.beta") == "config/model/beta"
    assert resolve_param(df, "config/train/lr") == "config/train/lr"
    with pytest.raises(AnalysisError, match=r"ambiguous.*train/lr, model/lr"):
        resolve_param(df, "lr")
    with pytest.raises(AnalysisError, match=r"unknown config parameter 'gamma'.*model/beta"):
        resolve_param(df, "gamma")


def test_searched_params_include_conditional_ones_and_exclude_the_seed() -> None:
    df = table(
        [
            {
                "config/model/name": "a",
                "config/model/k": np.nan,
                "config/train/lr": 1.0,
                "seed": 0,
            },
            {"config/model/name": "b", "config/model/k": 3, "config/train/lr": 1.0, "seed": 1},
        ]
    )
    assert searched_params(df) == ["config/model/name", "config/model/k"]


def test_analysis_pulls_in_no_torch_ray_or_optuna() -> None:
    code = (
        "import importlib, pkgutil, sys, analysis\n"
        "for m in pkgutil.walk_packages(analysis.__path__, 'analysis.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(' '.join(sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(done.stdout.split())
    assert not {"torch", "ray", "optuna", "models", "tune", "search_spaces"} & loaded
    assert "matplotlib.pyplot" not in loaded


def _write_trial(folder, name: str, lines: list[dict], error: str | None = None) -> None:
    trial = folder / "ray" / name
    trial.mkdir(parents=True)
    (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if error:
        (trial / "error.txt").write_text(error)


def test_ray_rebuild_gives_one_row_per_seed(tmp_path) -> None:
    cfg = {"model": {"beta": 2.0}, "train": {"steps": 10}, "seed": 5}
    per_seed = [
        {
            "seed": 5,
            "step": 10,
            "eval/mig": 0.2,
            "train/loss": 3.0,
            "artifact_dir": "/x/trials/aa/seed_5",
        },
        {
            "seed": 6,
            "step": 10,
            "eval/mig": 0.4,
            "train/loss": 2.0,
            "artifact_dir": "/x/trials/aa/seed_6",
        },
    ]
    finished = [
        {
            "seed": 5,
            "step": 10,
            "eval/mig": 0.2,
            "train/loss": 3.0,
            "config": cfg,
            "trial_id": "aa",
        },
        {
            "seed": 6,
            "step": 10,
            "eval/mig": 0.3,
            "train/loss": 2.5,
            "config": cfg,
            "trial_id": "aa",
            "seed_results": json.dumps(per_seed),
            "done": True,
        },
    ]
    _write_trial(tmp_path, "trial_aa", finished)
    # killed while training its third seed: two seeds finished, one cut off
    killed = [
        {
            "seed": 5,
            "step": 10,
            "eval/mig": 0.5,
            "train/loss": 1.0,
            "config": cfg,
            "trial_id": "bb",
        },
        {
            "seed": 6,
            "step": 10,
            "eval/mig": 0.7,
            "train/loss": 1.5,
            "config": cfg,
            "trial_id": "bb",
        },
        {"seed": 7, "step": 4, "train/loss": 9.0, "config": cfg, "trial_id": "bb"},
    ]
    _write_trial(tmp_path, "trial_bb", killed)
    _write_trial(
        tmp_path,
        "trial_cc",
        [{"seed": 5, "step": 2, "train/loss": 1.0, "config": cfg, "trial_id": "cc"}],
        error="Traceback...\nNonFiniteLossError: non-finite loss at step 3",
    )
    df = load_sweep(tmp_path).set_index(["trial_id", "seed"])
    assert df.loc[("aa", 6), "eval/mig"] == 0.4  # the seed's own value, not the mean 0.3
    assert df.loc[("aa", 6), "artifact_dir"] == "/x/trials/aa/seed_6"
    assert df.loc[("aa", 5), "config/seed"] == 5 and df.loc[("aa", 6), "config/seed"] == 6
    assert df.loc["bb", "status"].tolist() == ["TERMINATED", "TERMINATED", "RUNNING"]
    assert df.loc["bb", "usable"].tolist() == [True, True, False]
    assert df.loc[("cc", 5), "status"] == "ERROR" and df.loc[("cc", 5), "nonfinite"]
    assert df["config_id"].nunique() == 1  # seeds of one configuration


def test_missing_config_id_is_filled_per_config() -> None:
    df = table(
        [
            {"config/model/beta": 1.0, "config_id": None, "eval/mig": 0.1},
            {"config/model/beta": 1.0, "config_id": None, "eval/mig": 0.2, "seed": 1},
            {"config/model/beta": 2.0, "config_id": None, "eval/mig": 0.3},
        ]
    )
    ids = df["config_id"].tolist()
    assert ids[0] == ids[1] != ids[2] and ids[0].startswith("cfg-")


def test_runs_missing_from_a_stale_parquet_are_added_from_ray(tmp_path) -> None:
    df = synthetic_trials(n_seeds=1)
    folder = write_sweep(df, tmp_path / "s", images=False)
    full = pd.read_parquet(folder / "trials.parquet")
    full.iloc[:10].to_parquet(folder / "trials.parquet", index=False)  # as if resumed, killed
    merged = load_sweep(folder)
    assert merged.attrs["source"] == "parquet+ray"
    assert sorted(merged["trial_id"]) == sorted(df["trial_id"])
    assert merged["usable"].sum() == 18


def test_trial_ids_from_folder_names(tmp_path) -> None:
    from analysis.sweep import _trial_id_from_name

    assert _trial_id_from_name(tmp_path / "trial_8e2f1_00003") == "8e2f1_00003"
    assert _trial_id_from_name(tmp_path / "train_trial_8e2f1_00003_3_beta=4_2026") == "8e2f1_00003"
    assert _trial_id_from_name(tmp_path / "odd") == "odd"


def test_the_reported_config_id_wins_and_an_unreported_one_is_the_same_for_both_builders(
    tmp_path,
) -> None:
    from analysis.trials import config_hash, trial_rows

    cfg = {"model": {"beta": 2.0}, "seed": 0}  # Ray's config: not the resolved RunConfig
    reports = [{"step": 1, "train/loss": 1.0, "config": cfg, "config_id": "0123456789ab"}]
    _write_trial(tmp_path, "trial_aa", reports)
    _write_trial(tmp_path, "trial_bb", [])  # never reported: only params.json
    (tmp_path / "ray" / "trial_bb" / "params.json").write_text(json.dumps(cfg))
    df = load_sweep(tmp_path).set_index("trial_id")
    assert df.loc["aa", "config_id"] == "0123456789ab" != config_hash(cfg)
    assert df.loc["bb", "config_id"] == "cfg-" + config_hash(cfg)
    assert df.loc["bb", "status"] == "PENDING"
    # the sweep engine's call for the same trials (after fit(): `over`) gives the same ids
    engine = [trial_rows(trial_id=t, config=cfg, reports=r, over=True)[0]
              for t, r in (("aa", reports), ("bb", []))]
    assert [r["config_id"] for r in engine] == ["0123456789ab", "cfg-" + config_hash(cfg)]
    assert [r["status"] for r in engine] == ["TERMINATED", "TERMINATED"]

"""`mipet-tune confirm`: the statistics of the confirmed table (no Ray), its bad inputs, and a
real confirmation of 2 configurations x 2 seeds whose driver is killed (SIGKILL, a real
subprocess) and resumed.

The sweep folder confirmed here is built without training (`_tiny_sweep`): its trials table
holds three real run configurations (tiny, `fast` protocol, MIG) with made-up search values, so
the ranking, and hence which configurations are confirmed, is known."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from _processes import ProcessReaper
from conftest import tiny_sweep_base
from scipy import stats

from analysis.confirm import (
    MORE_SEEDS,
    POWER,
    confirmed_table,
    detectable_difference,
    holm,
)
from analysis.trials import trial_rows
from tune.cli.commands import build_parser, main
from tune.config.run import RunConfig
from tune.sweep.folder import LOCK_FILE, write_marker

STEPS = 6
# (model, beta, num_ipe) -> the search's MIG and the seeds the search used
CONFIGS = [
    (("mipet_vae", 1.0, 1), 0.30, [0, 1]),
    (("beta_vae", 1.0, 0), 0.20, [0]),
    (("beta_vae", 4.0, 0), 0.10, [0]),
]


# ---- a sweep folder --------------------------------------------------------------------------
def _run_config(model: str, beta: float, num_ipe: int, seed: int) -> RunConfig:
    d = tiny_sweep_base(STEPS, 3, images=False)
    d["model"].update(name=model, beta=beta, num_ipe=num_ipe)
    return RunConfig.from_dict({**d, "seed": seed})


def _tiny_sweep(folder: Path, *, status: str = "TERMINATED") -> Path:
    """A sweep folder (marker, sweep.yaml, trials.parquet, floor.parquet) of `CONFIGS`."""
    folder.mkdir(parents=True)
    spec = {"name": folder.name, "base": tiny_sweep_base(STEPS, 3, images=False),
            "space": {"params": {"model/beta": {"low": 1.0, "high": 4.0}}},
            "num_samples": 4, "metric": ["eval/mig"], "mode": ["max"],
            "resources": {"cpu": 1}, "max_concurrent": 1, "max_failures": 0,
            "storage": str(folder.parent)}
    spec["resolved"] = {"space": spec["space"], "base": spec["base"]}
    (folder / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    write_marker(folder, folder.name)
    rows = []
    for n, (key, mig, seeds) in enumerate(CONFIGS):
        for seed in seeds:
            cfg = _run_config(*key, seed)
            report = {"step": STEPS, "eval/mig": mig + 0.01 * seed, "train/loss": 50.0,
                      "config_id": cfg.config_id(), "seed": seed}
            rows += trial_rows(trial_id=f"t{n}{seed}", config=cfg.to_dict(), reports=[report],
                               resolved=cfg.to_dict(), over=True,
                               error="RuntimeError: boom" if status == "ERROR" else None)
    pd.DataFrame(rows).to_parquet(folder / "trials.parquet", index=False)
    from analysis.floor import floor_rows

    floor = [floor_rows(model, "dsprites", s, protocol, {"mig": m + 0.001 * s})
             for model in ("beta_vae", "mipet_vae") for s in range(3)
             for protocol, m in (("fast", 0.01), ("dlib", 0.5))]
    pd.DataFrame(floor).to_parquet(folder / "floor.parquet", index=False)
    return folder


def _listing(folder: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime)
            for p in folder.rglob("*")}


def _cli(*args: str, timeout: float = 400) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-m", "tune", "confirm", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)


def _terminated(folder: Path) -> pd.DataFrame:
    try:
        df = pd.read_parquet(folder / "confirm" / "trials.parquet")
    except Exception:
        return pd.DataFrame()
    return df[df["status"] == "TERMINATED"]


# ---- a real confirmation, killed and resumed ---------------------------------------------------
@pytest.fixture(scope="module")
def confirmed(tmp_path_factory):
    """The confirmation of `_tiny_sweep` (top 2, 2 seeds, `fast`): its driver SIGKILLed after
    the first run's row was written, then resumed to the end. Returns (folder, the rows at the
    kill, the resume's CompletedProcess)."""
    folder = _tiny_sweep(tmp_path_factory.mktemp("confirm") / "tiny")
    proc = _cli(str(folder), "--top", "2", "--seeds", "2", "--protocol", "fast")
    with ProcessReaper(proc.pid) as reaper:
        deadline = time.time() + 300
        while _terminated(folder).empty and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        reaper.sample()
        os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err[-3000:]
    first = _terminated(folder)
    again = _cli(str(folder), "--resume")
    with ProcessReaper(again.pid):
        out, err = again.communicate(timeout=400)
    done = subprocess.CompletedProcess(again.args, again.returncode, out, err)
    assert done.returncode == 0, err[-3000:]
    return folder, first, done


@pytest.mark.ray
def test_kill_9_then_resume_runs_each_configuration_and_seed_once(confirmed) -> None:
    folder, first, done = confirmed
    assert 1 <= len(first) < 4
    plan = json.loads((folder / "confirm" / "plan.json").read_text())
    # The top two by the search's MIG, each with seeds the search never used.
    assert [c["seeds"] for c in plan["configs"]] == [[2, 3], [1, 2]]
    ids = [c["config_id"] for c in plan["configs"]]
    df = pd.read_parquet(folder / "confirm" / "trials.parquet")
    assert len(df) == 4 and (df["status"] == "TERMINATED").all(), df[["trial_id", "status"]]
    assert sorted(zip(df["config_id"], df["seed"], strict=True)) == sorted(
        [(ids[0], 2), (ids[0], 3), (ids[1], 1), (ids[1], 2)])
    assert (df["config/eval/protocol"] == "fast").all() and df["eval/mig"].notna().all()
    # What finished before the kill was kept, not run again: the resumed Ray run has only the rest.
    kept = df.set_index("trial_id").loc[first["trial_id"], "ray_trial_id"]
    assert list(kept) == list(first["ray_trial_id"])
    resumed = list((folder / "confirm" / "ray" / "run_1").glob("trial_*"))
    assert len(resumed) == 4 - len(first)
    assert not {p.name.removeprefix("trial_") for p in resumed} & set(first["ray_trial_id"])
    assert "taking over a stale sweep lock" in done.stderr
    assert not (folder / LOCK_FILE).exists()
    # Only the fast floor of the sweep was taken (the confirmation's protocol).
    floor = pd.read_parquet(folder / "confirm" / "floor.parquet")
    assert set(floor["eval/protocol"]) == {"fast"} and len(floor) == 6


@pytest.mark.ray
def test_the_confirmed_p_values_are_welch_of_its_own_seed_values(confirmed) -> None:
    folder, _, done = confirmed
    table = pd.read_parquet(folder / "confirm" / "confirmed.parquet")
    runs = pd.read_parquet(folder / "confirm" / "trials.parquet")
    assert len(table) == 2 and list(table["confirm_rank"]) == [1, 2]
    for _, r in table.iterrows():  # the per-seed values are the runs' own
        mine = runs[runs["config_id"] == r["config_id"]].sort_values("seed")
        assert list(r["seeds"]) == list(mine["seed"])
        assert np.allclose(r["eval/mig/values"], mine["eval/mig"])
        assert r["eval/mig/mean"] == pytest.approx(mine["eval/mig"].mean())
        assert r["eval/mig/std"] == pytest.approx(mine["eval/mig"].std(ddof=1))
    a, b = (np.asarray(v, dtype=float) for v in table["eval/mig/values"])
    assert a.mean() >= b.mean()
    p = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert table["p_value"].iloc[1] == pytest.approx(p, rel=1e-12)
    assert table["p_holm"].iloc[1] == pytest.approx(p, rel=1e-12)  # one comparison
    assert np.isnan(table["p_value"].iloc[0])
    assert "eval/mig/floor" in table.columns and (table["eval/mig/floor"] > 0).all()
    csv = pd.read_csv(folder / "confirm" / "confirmed.csv")
    assert csv["p_value"].iloc[1] == pytest.approx(p)
    label = table["label"].iloc[0]
    assert f"Confirmed: {label} " in done.stdout
    assert (f"(p = {p:.2g}" in done.stdout) or p < 0.001


@pytest.mark.ray
def test_rank_export_and_report_lead_with_the_confirmed_result(confirmed, tmp_path,
                                                               capsys) -> None:
    folder, _, _ = confirmed
    table = pd.read_parquet(folder / "confirm" / "confirmed.parquet")
    assert main(["rank", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Confirmed: ") and out.index("Confirmed") < out.index("Search: Ranked")
    target = tmp_path / "best.yaml"
    assert main(["export", str(folder), "--to", str(target)]) == 0
    raw = yaml.safe_load(target.read_text())
    metrics = raw["metrics"]
    assert metrics["confirmed"] is True and metrics["protocol"] == "fast"
    assert raw["provenance"]["config_id"] == table["config_id"].iloc[0]
    assert raw["seed"] in list(table["seeds"].iloc[0])
    mig = metrics["over_seeds"]["eval/mig"]
    assert mig["n"] == 2 and mig["mean"] == pytest.approx(table["eval/mig/mean"].iloc[0])
    assert mig["floor"] == pytest.approx(0.011) and "margin" in mig
    assert metrics["against"][0]["welch_p"] == pytest.approx(table["p_value"].iloc[1])
    RunConfig.from_dict(raw)
    # The confirmation wrote the report again: its first line is the confirmed verdict.
    lines = (folder / "report" / "index.md").read_text().splitlines()
    assert lines[2].startswith("Confirmed with fresh seeds: "), lines[:4]


# ---- bad input: one line, exit 2, nothing written -----------------------------------------------
@pytest.mark.parametrize("case", ["top too large", "no finished trial", "not a sweep",
                                  "one seed", "resume without a plan"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, case) -> None:
    if case == "not a sweep":
        folder = tmp_path / "plain"
        folder.mkdir()
        (folder / "trials.parquet").write_bytes(b"")
    else:
        folder = _tiny_sweep(tmp_path / "tiny",
                             status="ERROR" if case == "no finished trial" else "TERMINATED")
    args = {"top too large": ["--top", "4", "--seeds", "2"],
            "no finished trial": ["--top", "1", "--seeds", "2"],
            "not a sweep": ["--top", "1", "--seeds", "2"],
            "one seed": ["--top", "1", "--seeds", "1"],
            "resume without a plan": ["--resume"]}[case]
    before = _listing(folder)
    try:
        rc = main(["confirm", str(folder), *args])
    except SystemExit as exc:  # argparse's own usage errors
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    word = {"top too large": "only 3 ranked", "no finished trial": "no finished trial",
            "not a sweep": "not a sweep folder", "one seed": ">= 2",
            "resume without a plan": "no confirmation to resume"}[case]
    assert word in err
    assert _listing(folder) == before


def test_sweep_takes_confirm_as_top_and_seeds() -> None:
    parser = build_parser()
    assert parser.parse_args(["sweep", "--preset", "quick", "--confirm", "2,3"]).confirm == (2, 3)
    for bad in ("2", "2,1", "0,3", "a,b"):
        with pytest.raises(SystemExit):
            parser.parse_args(["sweep", "--preset", "quick", "--confirm", bad])


def test_sweep_with_confirm_confirms_the_finished_sweep(tmp_path, monkeypatch, capsys) -> None:
    import tune.sweep.confirm as confirm
    import tune.sweep.driver as driver

    folder = _tiny_sweep(tmp_path / "tiny")
    asked = {}

    def fake_sweep(spec, **kw):
        asked["sweep"] = spec.name
        return driver.SweepResult(folder=folder, ranked_text="ranked", finished=4, planned=4,
                                  best_config=folder / "report" / "best_config.yaml")

    def fake_confirm(where, **kw):
        asked["confirm"] = (where, kw["top"], kw["seeds"], kw["resume"])
        return confirm.ConfirmResult(where, "Confirmed: settled", 6, 6)

    monkeypatch.setattr(driver, "run_sweep", fake_sweep)
    monkeypatch.setattr(confirm, "run_confirm", fake_confirm)
    assert main(["sweep", "--preset", "quick", "--confirm", "2,3"]) == 0
    assert asked == {"sweep": "quick", "confirm": (folder, 2, 3, False)}
    out = capsys.readouterr().out
    assert out.index("ranked") < out.index("Confirmed: settled")


# ---- the statistics, no Ray ---------------------------------------------------------------------
def _runs(values: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"trial_id": f"{c}-s{i}", "config_id": c, "seed": i,
                          "status": "TERMINATED", "eval/mig": v}
                         for c, vs in values.items() for i, v in enumerate(vs)])


def test_holm_is_the_step_down_adjustment() -> None:
    p = [0.01, 0.04, 0.03, 0.20]
    # sorted: 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08 -> 0.09 (monotone), 0.20*1=0.20
    assert np.allclose(holm(p), [0.04, 0.09, 0.09, 0.20])
    assert np.allclose(holm([0.5, 0.6]), [1.0, 1.0])
    out = holm([np.nan, 0.02, 0.03])
    assert np.isnan(out[0]) and np.allclose(out[1:], [0.04, 0.04])


def test_the_table_tests_the_first_against_each_other_with_holm() -> None:
    values = {"a": [0.50, 0.52, 0.51, 0.53], "b": [0.30, 0.33, 0.31, 0.32],
              "c": [0.49, 0.51, 0.50, 0.47], "d": [0.10, 0.40, 0.20, 0.45]}
    table, verdict, _ = confirmed_table(_runs(values), ["eval/mig"])
    assert list(table["config_id"]) == ["a", "c", "b", "d"]
    raw = [stats.ttest_ind(values["a"], values[c], equal_var=False).pvalue for c in "cbd"]
    assert np.allclose(table["p_value"].iloc[1:], raw)
    assert np.allclose(table["p_holm"].iloc[1:], holm(raw))
    assert table["eval/mig/ci_low"].iloc[0] == pytest.approx(
        np.mean(values["a"]) - stats.t.ppf(0.975, 3) * np.std(values["a"], ddof=1) / 2)
    assert verdict.second == "c" and verdict.comparisons == 3


def test_the_verdict_of_a_separable_pair() -> None:
    _, verdict, _ = confirmed_table(
        _runs({"A": [0.50, 0.52, 0.51, 0.53, 0.50], "B": [0.30, 0.33, 0.31, 0.32, 0.30]}),
        ["eval/mig"])
    p = stats.ttest_ind([0.50, 0.52, 0.51, 0.53, 0.50], [0.30, 0.33, 0.31, 0.32, 0.30],
                        equal_var=False).pvalue
    assert verdict.separable
    assert verdict.sentence() == f"A is ahead of B on MIG (p = {p:.1e}, 5 seeds each)."


def test_the_verdict_of_a_pair_the_seeds_cannot_separate() -> None:
    a, b = [0.164, 0.008, 0.012], [0.098, 0.044, 0.039]  # the beta-TCVAE and MIPET
    _, verdict, _ = confirmed_table(_runs({"A": a, "B": b}), ["eval/mig"])
    p = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert not verdict.separable and p > 0.9
    sd = np.sqrt((np.var(a, ddof=1) * 2 + np.var(b, ddof=1) * 2) / 4)
    m = 3 + MORE_SEEDS
    d = (stats.t.ppf(0.975, 2 * m - 2) + stats.t.ppf(POWER, 2 * m - 2)) * sd * np.sqrt(2 / m)
    assert verdict.detectable == pytest.approx(d)
    assert detectable_difference(sd, 3) == pytest.approx(d)
    assert verdict.sentence() == (
        f"A and B are not separable on MIG at 3 seeds (p = {p:.2g}); the smallest difference "
        f"5 more seeds could detect is about {d:.3g}.")


def test_too_few_finished_seeds_make_the_verdict_unknown() -> None:
    _, verdict, _ = confirmed_table(_runs({"A": [0.5], "B": [0.3, 0.2]}), ["eval/mig"])
    assert "unknown" in verdict.sentence() and "at least 2 each" in verdict.sentence()

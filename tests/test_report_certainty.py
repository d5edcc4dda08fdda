"""Every number in the report says how sure it is: importance by Optuna's evaluators with a
bootstrap interval, Spearman rho with n and an interval, "too early" below the minimum,
continuous parameters binned in ablation tables, the Pareto front on the reconstruction term."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
from _synthetic import synthetic_trials, table, write_sweep
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.importance import (
    FanovaImportanceEvaluator,
    PedAnovaImportanceEvaluator,
    get_param_importances,
)

from analysis.ablation import ablation_table
from analysis.importance import metric_agreement, spearman_interval
from analysis.rank import pareto_metrics
from analysis.report import write_report
from tune.sweep.importance import report_importance, study_of, sweep_importance


def _driven(n: int = 30, seed: int = 0):
    """`a` drives MIG; `b` and `c` do nothing."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        a, b, c = float(rng.uniform(0, 1)), float(rng.uniform(0, 1)), str(rng.choice(["x", "y"]))
        rows.append({"config/model/a": a, "config/model/b": b, "config/model/c": c, "seed": i,
                     "eval/mig": 2.0 * a + 0.05 * float(rng.normal())})
    return table(rows), rows


def _optuna_study(rows: list[dict], direction: str = "maximize") -> optuna.Study:
    """The study built by hand, as Optuna's documentation does."""
    a = [r["config/model/a"] for r in rows]
    b = [r["config/model/b"] for r in rows]
    dists = {
        "model/a": FloatDistribution(min(a), max(a)),
        "model/b": FloatDistribution(min(b), max(b)),
        "model/c": CategoricalDistribution(["x", "y"]),
    }
    study = optuna.create_study(direction=direction)
    for r in rows:
        study.add_trial(optuna.trial.create_trial(
            params={"model/a": r["config/model/a"], "model/b": r["config/model/b"],
                    "model/c": r["config/model/c"]},
            distributions=dists, value=r["eval/mig"]))
    return study


@pytest.mark.parametrize(
    ("method", "evaluator", "n"),
    # PED-ANOVA contrasts the best 10% with the rest: its resamples vary more, it needs more
    [("fanova", FanovaImportanceEvaluator(seed=0), 30),
     ("ped_anova", PedAnovaImportanceEvaluator(), 60)],
)
def test_importance_is_optunas_evaluator_with_an_interval(method, evaluator, n) -> None:
    df, rows = _driven(n)
    imp = sweep_importance(df, "mig", method=method, n_boot=20, seed=0)
    expected = get_param_importances(_optuna_study(rows), evaluator=evaluator)
    got = dict(zip(imp["parameter"], imp["importance"], strict=True))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert imp.attrs["method"] == method and (imp["n_trials"] == n).all()
    by = imp.set_index("parameter")
    assert (by["low"] <= by["boot_mean"]).all() and (by["boot_mean"] <= by["high"]).all()
    # `a` drives the metric: it ranks first and its interval lies above every other's
    assert by["importance"].idxmax() == "model/a"
    others = by.drop(index="model/a")
    assert by.loc["model/a", "low"] > others["high"].max()
    assert by.loc["model/a", "low"] > 0.5


def test_distributions_come_from_the_saved_search_space() -> None:
    df, _ = _driven(12)
    df.loc[df.index[:4], "config/model/c"] = None  # conditional: absent in 4 trials
    df.attrs["spec"] = {"resolved": {"space": {"params": {
        "model/a": {"low": 0.0, "high": 5.0, "log": False},
        "model/b": {"low": 0.0, "high": 1.0},
        "model/c": {"choices": ["x", "y", "z"]},
    }}}}
    from tune.sweep.importance import _distributions

    dists, left_out = _distributions(df, df, ["config/model/a", "config/model/b",
                                              "config/model/c"])
    assert dists["config/model/a"] == FloatDistribution(0.0, 5.0)
    assert dists["config/model/c"] == CategoricalDistribution(["x", "y", "z", None])
    assert left_out == {}
    study = study_of(df, "eval/mig", dists)
    assert len(study.trials) == 12 and study.trials[0].params["model/c"] is None
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE


def _sweep_of_four(tmp_path: Path) -> Path:
    df = synthetic_trials(n_seeds=1, broken=False)
    four = df.iloc[[0, 5, 8, 13]].copy()
    four.attrs = df.attrs
    return write_sweep(four, tmp_path / "four", images=False)


def test_four_trials_are_too_early(tmp_path: Path) -> None:
    folder = _sweep_of_four(tmp_path)
    imp = report_importance(folder)
    assert imp is not None and imp.empty and set(imp.attrs["too_early"].values()) == {4}
    md = write_report(folder, importance=imp).read_text()
    section = md[md.index("## Hyperparameter importance"):md.index("## Agreement")]
    assert "Too early for importance: it needs at least 10 finished trials" in section
    assert "this sweep has 4" in section
    assert "|" not in section and "![" not in section and not re.search(r"0\.\d", section)
    assert not (folder / "report" / "importance.csv").exists()
    assert not (folder / "report" / "plots" / "importance.png").exists()
    agreement = md[md.index("## Agreement"):md.index("## Metrics against")]
    assert "Too early for the agreement" in agreement and "![" not in agreement
    panels = md[md.index("## Metrics against"):md.index("## Best trials")]
    assert "Too early for metric-against-parameter panels: 4 finished trials" in panels
    assert "![" not in panels


def test_spearman_interval_by_hand() -> None:
    x = np.arange(12, dtype=float)
    y = np.array([1, 0, 2, 4, 3, 5, 7, 6, 9, 8, 11, 10], dtype=float)  # no ties
    df = table([{"config/model/a": float(i), "eval/mig": x[i], "eval/sap": y[i], "seed": 0}
                for i in range(12)])
    pairs = metric_agreement(df, ["mig", "sap"])
    row = pairs.iloc[0]
    d = x - y  # ranks are the values themselves
    rho = 1 - 6 * (d**2).sum() / (12 * (12**2 - 1))
    half = 1.959963984540054 * math.sqrt(1.06 / (12 - 3))
    assert row["rho"] == pytest.approx(rho, abs=1e-12) and row["n"] == 12 and row["shown"]
    assert row["low"] == pytest.approx(math.tanh(math.atanh(rho) - half), abs=1e-12)
    assert row["high"] == pytest.approx(math.tanh(math.atanh(rho) + half), abs=1e-12)
    assert spearman_interval(rho, 12) == (row["low"], row["high"])
    few = metric_agreement(df.iloc[:9], ["mig", "sap"])
    assert few.iloc[0]["n"] == 9 and not few.iloc[0]["shown"]


def test_ablation_bins_a_continuous_parameter() -> None:
    rows = [{"config/model/beta": float(b), "config/model/k": int(b) % 3, "eval/mig": b / 100,
             "seed": 0} for b in range(1, 13)]
    df = table(rows)
    t = ablation_table(df, rows="beta", metrics="mig")
    assert list(t.binned) == ["config/model/beta"]
    md = t.to_markdown()
    labels = re.findall(r"^\| (\[[^|]+[)\]]) \|", md, flags=re.M)
    assert labels == ["[1, 3.75)", "[3.75, 6.5)", "[6.5, 9.25)", "[9.25, 12]"]
    assert t.stats["n"].tolist() == [3, 3, 3, 3]
    assert t.stats["mean"].tolist() == pytest.approx([0.02, 0.05, 0.08, 0.11])
    assert "[9.25, 12]" in t.to_csv() and "[9.25, 12]" in t.to_latex()
    assert len(ablation_table(df, rows="beta", metrics="mig", bins=0).stats) == 12
    assert len(ablation_table(df, rows="beta", metrics="mig", bins=2).stats) == 2
    ints = ablation_table(df, rows="k", metrics="mig")  # an integer keeps one row per value
    assert not ints.binned and sorted(ints.stats["config/model/k"]) == [0, 1, 2]
    # the saved search space says beta is a range: four sampled values make two bins
    few = table(rows[:4])
    few.attrs["spec"] = {"resolved": {"space": {"params": {
        "model/beta": {"low": 1.0, "high": 10.0, "log": True}}}}}
    binned = ablation_table(few, rows="beta", metrics="mig")
    assert [str(b) for b in binned.binned["config/model/beta"]] == ["[1, 2.5)", "[2.5, 4]"]
    assert binned.stats["n"].tolist() == [2, 2]
    grid = table(rows)  # an ablation grid's values are chosen: one row each, however many
    grid.attrs["spec"] = {"kind": "ablation", "grid": {"model/beta": [float(b) for b in
                                                                     range(1, 13)]}}
    assert len(ablation_table(grid, rows="beta", metrics="mig").stats) == 12


def test_pareto_front_is_on_the_reconstruction_term(tmp_path: Path) -> None:
    # by train/loss (beta-weighted) C would join the front; by train/rec it is dominated
    runs = {"A": (0.3, 10.0, 107.0), "B": (0.2, 5.0, -50.0), "C": (0.1, 20.0, -54.0)}
    rows = [{"config/model/name": name, "config/model/beta": beta, "eval/mig": mig,
             "train/rec": rec, "train/loss": loss, "seed": 0}
            for (name, (mig, rec, loss)), beta in zip(runs.items(), (1.0, 4.0, 16.0),
                                                       strict=True)]
    df = table(rows)
    assert pareto_metrics(df, ["eval/mig"]) == ["eval/mig", "train/rec"]
    assert pareto_metrics(df, ["eval/mig", "train/loss"]) == ["eval/mig", "train/rec"]
    folder = write_sweep(df, tmp_path / "p", ray=False, images=False, floor=False)
    md = write_report(folder, by=["mig"]).read_text()
    front = md[md.index("## Pareto front"):md.index("## Ablation")]
    assert "2 of 3 configurations are not beaten on both eval/mig and train/rec" in front
    assert "| A |" in front and "| B |" in front and "| C |" not in front
    assert "train/loss" not in front

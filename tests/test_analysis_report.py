"""analysis.importance, analysis.plots and analysis.report on synthetic sweeps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _synthetic import synthetic_trials, table, write_sweep

from analysis.errors import AnalysisError
from analysis.importance import importance, metric_correlation
from analysis.plots import (
    plot_best_images,
    plot_correlation,
    plot_importance,
    plot_metric_vs_params,
    plot_pareto,
)
from analysis.rank import rank
from analysis.report import write_report
from analysis.sweep import load_sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path: Path | None) -> bool:
    return (
        path is not None
        and path.is_file()
        and path.stat().st_size > 2000
        and (path.read_bytes()[:8] == PNG_MAGIC)
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sweep(synthetic_trials(n_seeds=2), tmp_path_factory.mktemp("s") / "sweep")


def test_importance_finds_the_parameter_that_matters() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        a, b, c = rng.choice([1.0, 2.0, 4.0, 8.0]), rng.random(), rng.choice(["x", "y"])
        rows.append(
            {
                "config/model/a": a,
                "config/model/b": b,
                "config/model/c": c,
                "seed": i,
                "eval/mig": np.log2(a) + 0.01 * rng.random(),
                "train/recon": 5.0 * b,
            }
        )
    df = table(rows)
    for method in ("forest", "permutation"):
        imp = importance(df, ["mig", "recon"], method=method)
        assert list(imp.index) == ["model/a", "model/b", "model/c"]
        np.testing.assert_allclose(imp.sum(axis=0), 1.0)
        assert imp.loc["model/a", "eval/mig"] > 0.8, method
        assert imp.loc["model/b", "train/recon"] > 0.8, method
    with pytest.raises(AnalysisError, match="importance method"):
        importance(df, method="fanova")


def test_importance_is_nan_with_too_few_trials() -> None:
    df = table([{"config/model/a": float(i), "eval/mig": float(i), "seed": 0} for i in range(3)])
    assert importance(df, "mig")["eval/mig"].isna().all()


def test_metric_correlation_is_oriented_by_direction() -> None:
    x = np.arange(6, dtype=float)
    df = table(
        [
            {"config/model/a": v, "eval/mig": v, "eval/sap": -v, "train/recon": v**2, "seed": 0}
            for v in x
        ]
    )
    raw = metric_correlation(df, ["mig", "sap", "recon"], oriented=False)
    assert raw.loc["eval/mig", "eval/sap"] == pytest.approx(-1.0)
    assert raw.loc["eval/mig", "train/recon"] == pytest.approx(1.0)
    oriented = metric_correlation(df, ["mig", "sap", "recon"])
    # a better MIG comes with a worse reconstruction here: the metrics disagree
    assert oriented.loc["eval/mig", "train/recon"] == pytest.approx(-1.0)
    assert oriented.attrs["n_points"] == 6
    with pytest.raises(AnalysisError, match="two or more metrics"):
        metric_correlation(df, ["mig"])


def test_every_plot_is_a_non_empty_png(sweep: Path, tmp_path: Path) -> None:
    df = load_sweep(sweep)
    ranked = rank(df, "mig")
    both = rank(df, ["mig", "recon"])
    paths = [
        plot_metric_vs_params(df, "mig", tmp_path / "vs.png"),
        plot_metric_vs_params(df, "recon", tmp_path / "vs_recon.png", params=["beta"]),
        plot_pareto(both, tmp_path / "pareto.png"),
        plot_importance(importance(df, ["mig", "recon"]), tmp_path / "imp.png"),
        plot_correlation(metric_correlation(df), tmp_path / "corr.png"),
        plot_best_images(df, ranked, tmp_path / "trav.png", kind="traversal", top=2),
        plot_best_images(df, ranked, tmp_path / "rec.png", kind="reconstruction", top=2),
    ]
    for path in paths:
        assert is_png(path), path
    with pytest.raises(AnalysisError, match="two metrics"):
        plot_pareto(ranked, tmp_path / "p1.png")


def test_best_images_without_saved_images_is_none(tmp_path: Path) -> None:
    folder = write_sweep(synthetic_trials(n_seeds=1, broken=False), tmp_path / "s", images=False)
    df = load_sweep(folder)
    assert plot_best_images(df, rank(df, "mig"), tmp_path / "t.png") is None
    assert not (tmp_path / "t.png").exists()


def test_write_report(sweep: Path) -> None:
    index = write_report(sweep, metrics=["mig", "sap", "recon"])
    out = sweep / "report"
    assert index == out / "index.md"
    md = index.read_text()
    for heading in (
        "# Sweep report: synthetic",
        "## Ranking",
        "## Pareto front",
        "## Ablation tables",
        "## Hyperparameter importance",
        "## Agreement between metrics",
        "## Metrics against the searched parameters",
        "## Best trials",
    ):
        assert heading in md, heading
    assert "1 failed, 1 nonfinite, 1 unfinished" in md
    assert "| mipet_vae | 3 | **" in md  # the model x num_ipe ablation, best in bold
    images = [line.split("(")[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    assert len(images) >= 8
    for rel in images:
        assert is_png(out / rel), rel
    html = (out / "index.html").read_text()
    assert html.count("data:image/png;base64,") == len(images)
    assert 'src="plots/' not in html and "<table>" in html and "<b>" in html
    for name in (
        "ranked.csv",
        "ranked.md",
        "best_config.yaml",
        "importance.csv",
        "metric_correlation.csv",
        "ablation_model-name_model-num_ipe.tex",
        "ablation_model-beta.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    imp = pd.read_csv(out / "importance.csv")  # without Optuna: the forest, with intervals
    assert "the fallback without Optuna" in md and len(imp) == 3 * 4  # metrics x parameters
    assert (imp["low"] <= imp["high"]).all() and (imp["n_boot"] == 100).all()
    recon = imp[imp["metric"] == "train/recon"].set_index("parameter")
    assert recon["importance"].idxmax() == "model/beta" and recon.loc["model/beta", "low"] > 0.5
    pairs = pd.read_csv(out / "metric_correlation.csv")
    assert pairs["n"].tolist() == [18, 18, 18] and pairs["shown"].all()
    ranked = pd.read_csv(out / "ranked.csv")
    configs = ranked[ranked["config_id"] != "noise floor"]
    assert len(configs) == 18 and ranked.loc[0, "eval/mig/mean"] == pytest.approx(0.418)
    floors = ranked[ranked["config_id"] == "noise floor"]  # one reference row per model
    assert sorted(floors["config/model/name"]) == ["beta_vae", "mipet_vae"]
    assert floors["rank"].isna().all() and floors["eval/mig/mean"].tolist() == pytest.approx(
        [0.045, 0.045])


def test_report_of_a_sweep_with_nothing_finished(tmp_path: Path) -> None:
    df = synthetic_trials(n_seeds=1)
    df = df[df["status"] != "TERMINATED"]
    folder = write_sweep(df, tmp_path / "dead", images=False)
    with pytest.raises(AnalysisError, match="no finished trial"):
        write_report(folder)


def test_report_of_a_single_configuration(tmp_path: Path) -> None:
    df = synthetic_trials(n_seeds=2, broken=False)
    one = df[df["config_id"] == df["config_id"].iloc[0]]
    index = write_report(write_sweep(one, tmp_path / "one"), metrics=["mig", "recon"])
    md = index.read_text()
    assert "(No importance: no searched parameters" in md
    assert "Too early for the agreement between metrics: a rank correlation needs at least 10 " \
        "configurations with both values, and this sweep has 1." in md
    assert "metric_correlation.png" not in md
    assert "![Pareto front](plots/pareto.png)" in md
    assert (index.parent / "best_config.yaml").is_file()

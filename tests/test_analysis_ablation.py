"""analysis.ablation: mean ± std (n) cells, the best per column, Markdown, LaTeX and CSV."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from _synthetic import table

from analysis.ablation import ablation_table, write_ablation
from analysis.errors import AnalysisError


def run(name: str, k: float, beta: float, seed: int, mig: float, recon: float, **kw: object):
    return {
        "config/model/name": name,
        "config/model/num_ipe": k,
        "config/model/beta": beta,
        "seed": seed,
        "eval/mig": mig,
        "train/recon": recon,
        **kw,
    }


@pytest.fixture()
def grid() -> pd.DataFrame:
    return table(
        [
            run("beta_vae", np.nan, 1.0, 0, 0.10, 30.0),
            run("beta_vae", np.nan, 1.0, 1, 0.20, 32.0),
            run("beta_vae", np.nan, 4.0, 0, 0.30, 40.0),
            run("mipet_vae", 3, 1.0, 0, 0.40, 33.0),
            run("mipet_vae", 3, 1.0, 1, 0.60, 35.0),
            run("mipet_vae", 3, 4.0, 0, 0.50, 50.0),
            run("mipet_vae", 3, 4.0, 1, 0.99, 10.0, status="ERROR", failed=True),
        ]
    )


def test_cells_and_best_marks(grid: pd.DataFrame) -> None:
    t = ablation_table(
        grid, rows=["model/name", "num_ipe"], columns="beta", metrics=["mig", "recon"]
    )
    s = t.stats.set_index(["config/model/name", "column", "metric"])
    cell = s.loc[("mipet_vae", 1.0, "eval/mig")]
    assert cell["mean"] == pytest.approx(0.5) and cell["n"] == 2
    assert cell["std"] == pytest.approx(np.std([0.4, 0.6], ddof=1))
    assert cell["cell"] == "0.5 ± 0.14 (2)"
    one = s.loc[("mipet_vae", 4.0, "eval/mig")]
    assert one["n"] == 1 and one["cell"] == "0.5 (1)"  # the failed seed is left out
    assert t.excluded["failed"] == 1
    best = t.stats[t.stats["best"]].set_index(["metric", "column"])["config/model/name"]
    assert best.to_dict() == {
        ("eval/mig", 1.0): "mipet_vae",
        ("eval/mig", 4.0): "mipet_vae",
        ("train/recon", 1.0): "beta_vae",
        ("train/recon", 4.0): "beta_vae",  # lower is better
    }


def test_markdown(grid: pd.DataFrame) -> None:
    md = ablation_table(
        grid, rows=["model/name", "num_ipe"], columns="beta", metrics=["mig", "recon"]
    ).to_markdown()
    lines = md.strip().splitlines()
    assert lines[0] == (
        "| model/name | model/num_ipe | mig @ 1 ↑ | mig @ 4 ↑ | train/recon @ 1 ↓ "
        "| train/recon @ 4 ↓ |"
    )
    assert lines[2] == (
        "| beta_vae | — | 0.15 ± 0.071 (2) | 0.3 (1) | **31 ± 1.4 (2)** | **40 (1)** |"
    )
    assert lines[3] == (
        "| mipet_vae | 3 | **0.5 ± 0.14 (2)** | **0.5 (1)** | 34 ± 1.4 (2) | 50 (1) |"
    )


def test_latex_is_booktabs_with_bold_best(grid: pd.DataFrame) -> None:
    tex = ablation_table(grid, rows="model/name", columns="beta", metrics=["mig"]).to_latex(
        caption="MIPET vs baseline", label="tab:x"
    )
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"\begin{tabular}{lrr}" in tex
    assert r"\multicolumn{2}{c}{mig $\uparrow$}" in tex and r"\cmidrule(lr){2-3}" in tex
    assert r"model/beta=1 & model/beta=4" in tex
    assert r"mipet\_vae & \textbf{0.5 $\pm$ 0.14 (2)} & \textbf{0.5 (1)} \\" in tex
    assert r"beta\_vae & 0.15 $\pm$ 0.071 (2) & 0.3 (1) \\" in tex
    assert r"\caption{MIPET vs baseline}" in tex and r"\label{tab:x}" in tex


def test_csv_is_long_and_machine_readable(grid: pd.DataFrame) -> None:
    text = ablation_table(grid, rows="model/name", metrics=["mig", "recon"]).to_csv()
    back = pd.read_csv(io.StringIO(text))
    assert list(back.columns) == [
        "model/name",
        "metric",
        "mean",
        "std",
        "n",
        "n_configs",
        "cell",
        "best",
    ]
    row = back[(back["model/name"] == "beta_vae") & (back["metric"] == "eval/mig")].iloc[0]
    assert row["mean"] == pytest.approx(0.2) and row["n"] == 3 and row["n_configs"] == 2
    assert back["best"].sum() == 2


def test_write_ablation_writes_three_files(grid: pd.DataFrame, tmp_path) -> None:
    paths = write_ablation(ablation_table(grid, rows="model/name"), tmp_path, "k")
    assert sorted(p.name for p in paths.values()) == ["k.csv", "k.md", "k.tex"]
    assert all(p.stat().st_size > 50 for p in paths.values())


def test_bad_names_are_one_clear_error(grid: pd.DataFrame) -> None:
    with pytest.raises(AnalysisError, match="unknown config parameter 'model/gamma'"):
        ablation_table(grid, rows="model/gamma")
    with pytest.raises(AnalysisError, match="unknown metric 'fid'"):
        ablation_table(grid, rows="model/name", metrics=["fid"])
    with pytest.raises(AnalysisError, match="used twice"):
        ablation_table(grid, rows="model/beta", columns="beta")
    dead = table([run("a", 1, 1.0, 0, 0.1, 1.0, status="ERROR", failed=True)])
    with pytest.raises(AnalysisError, match=r"no finished trials among 1.*1 failed"):
        ablation_table(dead, rows="model/name")


def test_several_column_parameters(grid: pd.DataFrame) -> None:
    grid = grid.copy()
    grid["config/train/lr"] = [1e-3, 1e-4] * 3 + [1e-3]
    t = ablation_table(grid, rows="model/name", columns=["beta", "lr"], metrics="mig")
    md = t.to_markdown()
    assert "mig @ model/beta=1, train/lr=0.0001 ↑" in md.splitlines()[0]
    back = pd.read_csv(io.StringIO(t.to_csv()))
    assert {"model/beta", "train/lr"} <= set(back.columns)
    assert r"model/beta=4, train/lr=0.001" in t.to_latex()


def test_ablation_text_of_a_sweep_folder(tmp_path) -> None:
    from _synthetic import synthetic_trials, write_sweep

    from analysis.ablation import ablation_text

    folder = write_sweep(synthetic_trials(n_seeds=2), tmp_path / "s", images=False)
    text = ablation_text(folder, rows=["model/name", "num_ipe"], metrics=["mig"], fmt="latex")
    assert r"\toprule" in text and r"mipet\_vae & 3 & \textbf{" in text
    assert (folder / "report" / "ablation.csv").is_file()
    default = ablation_text(folder, columns="model/name", fmt="md", write=False)
    # rows: the other searched parameters, one per configuration of each model
    assert default.splitlines()[0].startswith("| model/beta | train/weight_decay | model/num_ipe")
    with pytest.raises(AnalysisError, match="unknown table format 'html'"):
        ablation_text(folder, fmt="html")

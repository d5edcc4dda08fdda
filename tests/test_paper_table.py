"""examples/paper_table.yaml: its grid, its dry run, its table in the paper's layout, and a run of
the file itself at 20 steps on the built-in dSprites."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.floor import floor_rows
from analysis.paper_table import paper_table
from models.errors import ConfigError
from tune.cli.commands import main
from tune.sweep.ablate import AblationSpec
from tune.sweep.estimate import parse_throughput

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "paper_table.yaml"
MODELS = ["beta_vae", "mipet_vae", "betatcvae", "mipet_betatcvae", "commutative",
          "mipet_commutative"]


def test_the_paper_grid_has_every_model_on_every_dataset_with_its_settings() -> None:
    spec = AblationSpec.load(EXAMPLE)
    configs = spec.configs()
    assert spec.table == "paper" and len(configs) == 6 * 3 * 3
    cells = {(c.data.name, c.model.name) for c in configs}
    assert cells == {(d, m) for d in ("dsprites", "shapes3d", "cars3d") for m in MODELS}
    by = {(c.data.name, c.model.name): c for c in configs}
    assert by[("dsprites", "mipet_betatcvae")].model.num_ipe == 3
    assert by[("dsprites", "mipet_commutative")].model.num_ipe == 1
    assert by[("shapes3d", "betatcvae")].model.beta == 6.0
    assert by[("dsprites", "commutative")].model.hy_hes == 40.0
    assert by[("cars3d", "commutative")].model.hy_hes == 20.0
    assert {c.eval.protocol for c in configs} == {"dlib"}
    assert sorted({c.seed for c in configs}) == [0, 1, 2]


def test_dry_run_prints_cells_trials_and_time(capsys) -> None:
    assert main(["ablate", "--config", str(EXAMPLE), "--dry-run", "--throughput", "5000",
                 "--throughput", "mipet_vae@cars3d=2560"]) == 0
    out = capsys.readouterr().out
    assert "18 cells x 3 seeds = 54 trials" in out
    # every (model, dataset) pair's untrained model at 3 seeds, after the trials
    assert "noise floor: 18 model and dataset pairs x 3 seeds = up to 54 evaluations" in out
    assert "| dsprites beta_vae, beta=4.0 | 3 | 100000 x 256 | 5,000 | 1.42 | --throughput |" \
        in out
    assert "| cars3d mipet_vae | 3 | 100000 x 256 | 2,560 | 2.78 |" in out
    assert "estimated training time: 80.9 device-hours" in out  # 51 x 1.422 h + 3 x 2.778 h
    assert "packs 4 trials per GPU" in out


def test_dry_run_needs_a_grid_file(tmp_path: Path, capsys) -> None:
    assert main(["ablate", str(tmp_path), "--dry-run"]) == 2
    assert "--dry-run estimates an ablation grid" in capsys.readouterr().err


def test_throughput_values_are_checked() -> None:
    assert parse_throughput(["3000", "beta_vae=10"]) == {"*": 3000.0, "beta_vae": 10.0}
    for bad in ("fast", "beta_vae=-1", "beta_vae="):
        with pytest.raises(ConfigError, match="--throughput"):
            parse_throughput([bad])


def _trials() -> pd.DataFrame:
    rows = []
    values = {"beta_vae": [0.10, 0.12], "mipet_vae": [0.20, 0.22], "betatcvae": [0.30, 0.32],
              "mipet_betatcvae": [0.25, 0.27]}
    for model, vals in values.items():
        for seed, v in enumerate(vals):
            rows.append({"trial_id": f"{model}-{seed}", "config_id": model, "seed": seed,
                         "status": "TERMINATED", "config/model/name": model,
                         "config/data/name": "dsprites", "eval/mig": v, "eval/sap": v / 2})
    return pd.DataFrame(rows)


def test_the_paper_layout_bolds_the_better_of_each_pair_and_daggers_the_floor() -> None:
    floor = pd.DataFrame([floor_rows(m, "dsprites", 0, "dlib", {"mig": 0.09, "sap": 0.01})
                          for m in ("beta_vae", "betatcvae")])
    table = paper_table(_trials(), floor, metrics=["eval/mig", "eval/sap"])
    md = table.to_markdown().splitlines()
    assert md[0] == "| Dataset | Model | MIG | SAP |"
    assert md[2] == "| dSprites | β-VAE | 0.110 ± 0.014 † | 0.055 ± 0.007 |"  # 1.2x the floor
    assert md[3] == "|  | MIPET-β-VAE | **0.210 ± 0.014** | **0.105 ± 0.007** |"
    assert md[4].startswith("|  | β-TCVAE | **0.310 ± 0.014** |")
    assert md[5].startswith("|  | MIPET-β-TCVAE | 0.260 ± 0.014 |")
    assert md[6] == "|  | *noise floor* | 0.090 | 0.010 |"
    tex = table.to_latex()
    assert r"\begin{tabular}{llrr}" in tex and r"\toprule" in tex
    assert r"MIPET-$\beta$-VAE & \textbf{0.210 $\pm$ 0.014}" in tex
    assert r"0.110 $\pm$ 0.014$^\dagger$" in tex and r"\textit{noise floor} & 0.090" in tex


def test_the_paper_layout_refuses_two_configurations_of_one_cell() -> None:
    from analysis.errors import AnalysisError

    df = _trials()
    df.loc[df["seed"] == 1, "config_id"] = df["config_id"] + "-other"
    with pytest.raises(AnalysisError, match="one configuration per model and dataset"):
        paper_table(df, None, metrics=["eval/mig"])


@pytest.mark.ray
def test_the_paper_file_runs_at_20_steps_and_prints_the_paper_table(ray_session, tmp_path: Path,
                                                                    capsys, monkeypatch) -> None:
    monkeypatch.setattr("tune.sweep.floor.FLOOR_SEEDS", 1)  # the table, not the floor, is tested
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["variants"] = [v for v in raw["variants"] if v["data/name"] == "dsprites"]
    raw.update(seeds=1, storage=str(tmp_path), resources={"cpu": 1, "gpu": 0}, max_concurrent=2)
    path = tmp_path / "paper_table.yaml"
    path.write_text(yaml.safe_dump(raw))
    sets = ["train/steps=20", "train/batch_size=32", "train/report_every=10",
            "train/checkpoint_every=20", "train/images=false", "train/num_threads=1",
            "eval/protocol=fast"]
    argv = ["-q", "ablate", "--config", str(path)] + [a for s in sets for a in ("--set", s)]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| Dataset | Model | FactorVAE | MIG | SAP | DCI |"
    labels = [line.split("|")[2].strip() for line in out[2:9]]
    assert labels == ["β-VAE", "MIPET-β-VAE", "β-TCVAE", "MIPET-β-TCVAE", "CLG-VAE",
                      "MIPET-CLG-VAE", "*noise floor*"]
    floor_cells = out[8].split("|")[3:7]
    assert all(0 <= float(c) <= 1 for c in floor_cells)  # the untrained models were evaluated
    report = tmp_path / "paper_table" / "report"
    assert (report / "paper_table.md").read_text().splitlines()[0] == out[0]
    assert r"\begin{tabular}{llrrrr}" in (report / "paper_table.tex").read_text()

"""Ablation grids through Ray (no searcher) and the example files of the README."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import tiny_sweep_base

from models.errors import ConfigError
from tune.cli.commands import main
from tune.config.sweep import SweepSpec
from tune.sweep.ablate import AblationSpec, run_ablation
from tune.sweep.driver import prepare

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_example_sweep_file_validates_completely() -> None:
    spec = SweepSpec.load(config=EXAMPLES / "sweep.yaml")
    base, space = prepare(spec)  # space corners, objectives, scheduler: all checked
    assert spec.seeds == 2 and len(spec.metric) == 2 and base.train.steps == 20000


def test_example_ablation_file_expands_to_every_cell() -> None:
    spec = AblationSpec.load(EXAMPLES / "ablation.yaml")
    configs = spec.configs()
    assert len(configs) == 2 * 2 * 3  # variants x beta x seeds
    assert {c.model.name for c in configs} == {"beta_vae", "mipet_vae"}
    assert {c.model.num_ipe for c in configs if c.model.name == "beta_vae"} == {0}


def test_an_impossible_cell_fails_before_anything_runs(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump({"variants": [{"model/name": "beta_vae"}],
                                    "grid": {"model/num_ipe": [1, 2]}}))
    with pytest.raises(ConfigError,
                       match=r"ablation cell \{model/name=beta_vae, model/num_ipe=1\}"):
        AblationSpec.load(path).configs()
    path.write_text(yaml.safe_dump({"grid": {"model/nm_ipe": [1]}}))
    with pytest.raises(ConfigError, match="did you mean 'model/num_ipe'"):
        AblationSpec.load(path)


def test_ablate_dry_run_applies_set_and_counts_cells_trials_and_floor(capsys) -> None:
    assert main(["ablate", "--config", str(EXAMPLES / "ablation.yaml"), "--dry-run",
                 "--set", "train/steps=1000", "--throughput", "256"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("k-ablation: 4 cells x 3 seeds = 12 trials\n")
    assert "noise floor: 2 model and dataset pairs x 3 seeds = up to 6 evaluations" in out
    # 1000 steps x 256 images at 256 img/s = 1000 s a trial; 12 trials = 3.33 h
    assert "| dsprites mipet_vae, beta=4.0 | 3 | 1000 x 256 | 256 | 0.28 | --throughput |" in out
    assert "estimated training time: 3.3 device-hours" in out


@pytest.mark.ray
def test_an_ablation_grid_runs_and_writes_its_table(ray_session, tmp_path: Path) -> None:
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump({
        "name": "abl",
        "base": tiny_sweep_base(3, 3, images=False),
        "variants": [{"model/name": "beta_vae"}, {"model/name": "mipet_vae"}],
        "seeds": 2,
        "rows": ["model/name"],
        "metrics": ["eval/mig"],
        "resources": {"cpu": 1},
        "max_concurrent": 2,
        "storage": str(tmp_path),
    }))
    folder = run_ablation(AblationSpec.load(path), verbose=0)
    df = pd.read_parquet(folder / "trials.parquet")
    assert len(df) == 4 and not df["failed"].any()
    assert sorted(df["config/seed"]) == [0, 0, 1, 1]
    from analysis.floor import load_floor

    floor = load_floor(folder)  # the untrained models, three seeds each, as the trials evaluate
    assert sorted(set(floor["config/model/name"])) == ["beta_vae", "mipet_vae"]
    assert len(floor) == 6 and floor["eval/mig"].between(0, 1).all()
    from tune.sweep.results import ablation_text

    text = ablation_text(folder, rows=["model/name"], metrics=["eval/mig"])
    assert "beta_vae" in text and "mipet_vae" in text and "(2)" in text

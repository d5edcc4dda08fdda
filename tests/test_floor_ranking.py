"""The noise floor and the seed verdict in the ranking, the report and the export, with known
answers on the synthetic sweep (its floor: MIG 0.045 +- 0.01, three seeds, per model)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from _synthetic import synthetic_floor, synthetic_trials, table, write_sweep

from analysis import load_sweep, rank, rank_table
from analysis.export import best_config
from analysis.rank import FLOOR_LABEL, NOT_ABOVE, summary_sentence
from tune.cli.commands import main

BEST = 0.42  # mipet_vae, K 3, beta 16, no weight decay: 0.10 + 0.15 + 0.09 + 0.08
NOT_ABOVE_CONFIGS = {(16.0, 1e-4), (4.0, 1e-4), (1.0, 1e-4)}  # beta_vae with weight decay


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return write_sweep(synthetic_trials(), tmp_path_factory.mktemp("f") / "s", images=False)


@pytest.fixture(scope="module")
def old(tmp_path_factory) -> Path:
    return write_sweep(synthetic_trials(n_seeds=1), tmp_path_factory.mktemp("f") / "old",
                       images=False, floor=False)


def test_the_ranking_marks_what_is_not_clearly_above_the_floor(sweep: Path) -> None:
    ranked = rank(load_sweep(sweep), "mig")
    assert ranked.loc[0, "eval/mig/floor"] == pytest.approx(0.045)
    assert ranked.loc[0, "eval/mig/margin"] == pytest.approx(BEST / 0.045)
    below = ranked[~ranked["eval/mig/above_floor"]]
    assert set(below["config/model/name"]) == {"beta_vae"}
    pairs = zip(below["config/model/beta"], below["config/train/weight_decay"], strict=True)
    assert set(pairs) == NOT_ABOVE_CONFIGS
    assert [f["config/model/name"] for f in ranked.attrs["floor"]] == ["beta_vae", "mipet_vae"]
    verdict = ranked.attrs["seed_verdict"]  # 0.42 vs 0.38, each +- 0.004 over 3 seeds
    assert verdict.verdict == "differ" and verdict.second == ranked.loc[1, "config_id"]


def test_rank_text_has_the_floor_row_the_marks_and_the_footnotes(sweep: Path) -> None:
    _, text = rank_table(sweep, "mig")
    lines = text.splitlines()
    rows = [line for line in lines
            if line.startswith("| ") and "config" not in line and "---" not in line]
    floors = [r for r in rows if FLOOR_LABEL in r]
    assert len(floors) == 2 and "0.045 ± 0.01 (3)" in floors[0]
    assert sum(f" {NOT_ABOVE} |" in r for r in rows) == 3
    assert "| × floor |" in text and "9.33 |" in rows[0]
    assert any(line.startswith("× floor:") and "at least 2x" in line for line in lines)
    assert any(line.startswith("Seeds: The best configuration beats the second") for line in lines)


def test_a_best_that_does_not_clear_the_floor_is_called_noise(tmp_path: Path) -> None:
    folder = write_sweep(synthetic_trials(), tmp_path / "s", images=False,
                         floor=synthetic_floor(mig=(0.30, 0.35, 0.40)))
    ranked = rank(load_sweep(folder), "mig")
    assert not ranked["eval/mig/above_floor"].any()  # 0.42 is 1.2x a floor of 0.35
    sentence = summary_sentence(ranked)
    assert "1.2x the noise floor of 0.35: not clearly above it" in sentence
    assert "may be noise" in sentence


def test_an_old_sweep_without_a_floor_still_ranks(old: Path) -> None:
    ranked, text = rank_table(old, "mig")
    assert len(ranked) == 18 and ranked.attrs["floor"] is None
    assert "eval/mig/floor" not in ranked.columns and "× floor" not in text
    assert FLOOR_LABEL + " (" not in text
    assert "No noise floor was computed for this sweep" in text
    # one seed each: the order of the first two cannot be told from seed spread
    assert "it needs at least 2 seeds each" in text
    assert "no noise floor was computed" in summary_sentence(ranked)


def test_first_and_second_within_their_seed_spread() -> None:
    rows = [{"config/model/beta": b, "eval/mig": v, "seed": s}
            for b, vals in ((1.0, (0.30, 0.20, 0.25)), (4.0, (0.22, 0.31, 0.24)))
            for s, v in enumerate(vals)]
    ranked = rank(table(rows), "mig")
    verdict = ranked.attrs["seed_verdict"]
    assert verdict.verdict == "within seed spread" and verdict.p_value > 0.5
    assert "coin toss" in summary_sentence(ranked)
    assert ranked.attrs["floor"] is None  # an in-memory table has no sweep folder


def test_the_export_carries_the_floor_and_the_margin(sweep: Path, old: Path) -> None:
    block = best_config(load_sweep(sweep), by="mig")["metrics"]
    mig = block["over_seeds"]["eval/mig"]
    assert mig["floor"] == pytest.approx(0.045) and mig["floor_std"] == pytest.approx(0.01)
    assert mig["margin"] == pytest.approx(BEST / 0.045) and mig["above_floor"] is True
    assert block["noise_floor"] == "computed" and block["against_second"]["verdict"] == "differ"
    bare = best_config(load_sweep(old), by="mig")["metrics"]
    assert bare["over_seeds"]["eval/mig"]["floor"] is None
    assert bare["over_seeds"]["eval/mig"]["above_floor"] is None
    assert bare["noise_floor"].startswith("not computed")


def test_the_report_says_it_at_the_top_and_the_cli_prints_it(sweep: Path, tmp_path: Path,
                                                              capsys) -> None:
    assert main(["report", str(sweep)]) == 0
    index = Path(capsys.readouterr().out.strip())
    top = index.read_text().split("\n\n")[1]
    assert top.startswith("The best configuration,") and "9.33x the noise floor" in top
    assert "clearly above it; the best configuration beats the second" in top
    assert FLOOR_LABEL in (index.parent / "ranked.md").read_text()
    csv = pd.read_csv(index.parent / "ranked.csv")
    assert (csv["config_id"] == FLOOR_LABEL).sum() == 2
    assert main(["rank", str(sweep), "--by", "mig"]) == 0
    out = capsys.readouterr().out
    assert f"| — | {FLOOR_LABEL} (beta_vae, dsprites) |" in out and NOT_ABOVE in out
    target = tmp_path / "best.yaml"
    assert main(["export", str(sweep), "--to", str(target), "--by", "mig"]) == 0
    raw = yaml.safe_load(target.read_text())
    assert raw["metrics"]["over_seeds"]["eval/mig"]["margin"] == pytest.approx(BEST / 0.045)


def test_positional_ablate_prints_the_paper_layout_of_a_paper_run(tmp_path: Path,
                                                                   capsys) -> None:
    """A finished ablation run whose file said `table: paper` (no Ray: its folder is written
    here as run_ablation leaves it)."""
    folder = tmp_path / "paper_run"
    folder.mkdir()
    rows = [{"config/model/name": m, "config/data/name": "dsprites", "eval/mig": v + 0.02 * s,
             "seed": s} for m, v in (("beta_vae", 0.10), ("mipet_vae", 0.20)) for s in (0, 1)]
    table(rows).to_parquet(folder / "trials.parquet", index=False)
    (folder / "sweep.yaml").write_text(yaml.safe_dump(
        {"name": "paper_run", "kind": "ablation", "table": "paper", "metrics": ["eval/mig"]}))
    assert main(["ablate", str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| Dataset | Model | MIG |"
    assert out[2] == "| dSprites | β-VAE | 0.110 ± 0.014 |"
    assert out[3] == "|  | MIPET-β-VAE | **0.210 ± 0.014** |"
    assert (folder / "report" / "paper_table.md").is_file()
    (folder / "sweep.yaml").write_text(yaml.safe_dump({"name": "grid_run", "kind": "ablation"}))
    assert main(["ablate", str(folder)]) == 0
    assert "| Dataset | Model |" not in capsys.readouterr().out  # the plain ablation table


def test_a_metric_the_floor_lacks_gets_no_mark(sweep: Path) -> None:
    ranked, text = rank_table(sweep, "recon")  # the floor has eval/* metrics only
    assert ranked["train/recon/floor"].isna().all()
    assert NOT_ABOVE + " |" not in text.split("× floor:")[0]
    assert "the noise floor has no recon for its model and dataset" in summary_sentence(ranked)


def test_the_quick_sweep_knows_which_untrained_models_make_its_floor() -> None:
    """The configs the driver evaluates untrained (no Ray; this once failed on a moved import,
    and the sweep then ranked without a floor)."""
    from tune.config.sweep import SweepSpec
    from tune.sweep.driver import prepare
    from tune.sweep.floor import floor_configs, sweep_configs

    spec = SweepSpec.load(preset="quick")
    configs = floor_configs(sweep_configs(spec, *prepare(spec)))
    assert sorted(c.model.name for c in configs) == ["betatcvae", "mipet_betatcvae"]
    assert {(c.train.steps, c.train.lr, c.eval.protocol) for c in configs} == {
        (500, 1e-3, "fast")}

"""analysis.rank on tables with known answers: seeds, ties, directions, exclusions, Pareto."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _synthetic import synthetic_trials, table

from analysis.errors import AnalysisError
from analysis.rank import pareto_fronts, rank, rank_table


def trial(beta: float, seed: int, mig: float, recon: float = 10.0, **extra: object) -> dict:
    return {
        "config/model/beta": beta,
        "config/train/lr": 1e-3,
        "seed": seed,
        "eval/mig": mig,
        "train/recon": recon,
        **extra,
    }


@pytest.fixture()
def three_configs():
    return table(
        [
            trial(1.0, 0, 0.3),
            trial(1.0, 1, 0.5),  # A: mean 0.4, std sqrt(0.02)
            trial(4.0, 0, 0.6),  # B: one seed
            trial(16.0, 0, 0.2),
            trial(16.0, 1, 0.2),
            trial(16.0, 2, 0.2),  # C
        ]
    )


def test_seeds_are_aggregated_per_config(three_configs) -> None:
    ranked = rank(three_configs, "mig")
    assert ranked["config/model/beta"].tolist() == [4.0, 1.0, 16.0]
    assert ranked["rank"].tolist() == [1, 2, 3]
    a = ranked.iloc[1]
    assert a["n_trials"] == 2 and a["eval/mig/n"] == 2
    assert a["eval/mig/mean"] == pytest.approx(0.4)
    assert a["eval/mig/std"] == pytest.approx(math.sqrt(0.02))
    half = 12.706204736 * math.sqrt(0.02) / math.sqrt(2)  # t(0.975, 1 dof)
    assert a["eval/mig/ci_low"] == pytest.approx(0.4 - half, rel=1e-6)
    assert a["eval/mig/ci_high"] == pytest.approx(0.4 + half, rel=1e-6)
    assert a["best_trial"] == "t001"  # the seed with MIG 0.5
    b = ranked.iloc[0]
    assert b["eval/mig/n"] == 1
    assert math.isnan(b["eval/mig/std"]) and math.isnan(b["eval/mig/ci_low"])
    c = ranked.iloc[2]
    assert c["eval/mig/std"] == pytest.approx(0.0, abs=1e-12)
    assert c["eval/mig/ci_low"] == pytest.approx(0.2)
    assert ranked.attrs["by"] == ["eval/mig"] and ranked.attrs["directions"] == {"eval/mig": "max"}


def test_a_loss_ranks_lowest_first(three_configs) -> None:
    df = table(
        [
            trial(1.0, 0, 0.1, recon=5.0),
            trial(2.0, 0, 0.1, recon=3.0),
            trial(3.0, 0, 0.1, recon=9.0),
        ]
    )
    ranked = rank(df, "recon")
    assert ranked["config/model/beta"].tolist() == [2.0, 1.0, 3.0]
    assert ranked.attrs["directions"] == {"train/recon": "min"}


def test_ties_share_the_smallest_rank_despite_float_noise() -> None:
    df = table([trial(1.0, 0, 0.1 + 0.2), trial(2.0, 0, 0.3), trial(3.0, 0, 0.1)])
    assert 0.1 + 0.2 != 0.3
    ranked = rank(df, "mig")
    assert ranked["rank"].tolist() == [1, 1, 3]
    assert ranked["config/model/beta"].tolist()[2] == 3.0


def test_failed_nonfinite_unfinished_and_nan_trials_are_left_out_and_counted() -> None:
    df = table(
        [
            trial(1.0, 0, 0.2),
            trial(1.0, 1, 0.4),
            trial(1.0, 2, 0.99, status="ERROR", failed=True),
            trial(2.0, 0, 0.95, status="ERROR", failed=True, nonfinite=True),
            trial(3.0, 0, 0.97, status="RUNNING"),
            trial(4.0, 0, np.nan),
            trial(5.0, 0, 0.1),
        ]
    )
    ranked = rank(df, "mig")
    assert ranked["config/model/beta"].tolist() == [1.0, 5.0]
    assert ranked.iloc[0]["eval/mig/mean"] == pytest.approx(0.3)
    assert ranked.iloc[0]["n_trials"] == 2
    assert ranked.attrs["excluded"] == {
        "failed": 1,
        "nonfinite": 1,
        "unfinished": 1,
        "stopped": 0,
        "missing_metric": 1,
    }
    assert ranked.attrs["n_trials"] == 7 and ranked.attrs["n_used"] == 3
    _, text = rank_table(df, "mig")
    line = "7 trials, 3 used; left out: 1 failed, 1 nonfinite, 1 unfinished, 1 missing metric"
    assert line in text


def test_no_finished_trial_is_one_clear_error() -> None:
    df = table([trial(1.0, 0, 0.5, status="ERROR", failed=True), trial(2.0, 0, np.nan)])
    with pytest.raises(AnalysisError, match=r"no finished trial with a finite eval/mig.*1 failed"):
        rank(df, "mig")


def test_unknown_metric_lists_the_known_ones(three_configs) -> None:
    with pytest.raises(AnalysisError, match=r"unknown metric 'dci'.*mig, train/recon"):
        rank(three_configs, "dci")
    with pytest.raises(AnalysisError, match="sort must be"):
        rank(three_configs, "mig", sort="best")


def test_pareto_fronts_known_answer() -> None:
    pts = np.array([[1, 1], [2, 0], [0, 2], [0.5, 0.5], [0, 0], [1, 1]], dtype=float)
    fronts = pareto_fronts(pts, [True, True])
    assert fronts.tolist() == [1, 1, 1, 2, 3, 1]
    # minimising the second objective instead
    assert pareto_fronts(pts, [True, False]).tolist() == [2, 1, 3, 2, 2, 2]


def test_several_metrics_mean_rank_and_pareto() -> None:
    df = table(
        [
            trial(1.0, 0, 0.5, recon=10.0),  # P
            trial(2.0, 0, 0.4, recon=5.0),  # Q
            trial(3.0, 0, 0.3, recon=20.0),  # R: dominated by Q
            trial(4.0, 0, 0.5, recon=10.0),  # S: equal to P
        ]
    )
    ranked = rank(df, ["mig", "recon"])
    by_beta = ranked.set_index("config/model/beta")
    # mig ranks 1.5, 3, 4, 1.5; recon ranks 2.5, 1, 4, 2.5 -> mean 2, 2, 4, 2
    assert by_beta["mean_rank"].to_dict() == {1.0: 2.0, 2.0: 2.0, 3.0: 4.0, 4.0: 2.0}
    assert by_beta["rank"].to_dict() == {1.0: 1, 2.0: 1, 3.0: 4, 4.0: 1}
    assert by_beta["pareto_front"].to_dict() == {1.0: 1, 2.0: 1, 3.0: 2, 4.0: 1}
    assert ranked.iloc[-1]["config/model/beta"] == 3.0
    assert ranked.attrs["directions"] == {"eval/mig": "max", "train/recon": "min"}


def test_sort_by_pareto_front_first() -> None:
    df = table(
        [
            trial(1.0, 0, 0.9, recon=9.0),  # front 1 (best mig)
            trial(2.0, 0, 0.1, recon=1.0),  # front 1 (best recon)
            trial(3.0, 0, 0.8, recon=2.0),  # front 1
            trial(4.0, 0, 0.7, recon=3.0),  # front 2 (dominated by beta 3)
        ]
    )
    ranked = rank(df, ["mig", "recon"], sort="pareto")
    assert ranked["pareto_front"].tolist() == [1, 1, 1, 2]
    assert ranked.iloc[0]["config/model/beta"] == 3.0  # best mean rank on the front


def test_synthetic_sweep_known_best() -> None:
    df = table(synthetic_trials(n_seeds=3).to_dict("records"))
    ranked, text = rank_table(df, "mig", top=3)
    best = ranked.iloc[0]
    assert (
        best["config/model/name"],
        best["config/model/num_ipe"],
        best["config/model/beta"],
        best["config/train/weight_decay"],
    ) == ("mipet_vae", 3.0, 16.0, 0.0)
    assert best["eval/mig/mean"] == pytest.approx(0.42)
    assert best["eval/mig/std"] == pytest.approx(0.004)
    assert len(ranked) == 18 and ranked.attrs["excluded"]["failed"] == 1
    table_lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table_lines) == 2 + 3  # header, rule, the top 3 rows
    assert "| 1 | " in table_lines[2] and "0.42 ± 0.004 (3)" in table_lines[2]


def test_the_text_renders_a_ranking_without_changing_it(three_configs) -> None:
    """analysis.rank_text only renders: the same ranking gives the text rank_table prints, the
    table is left as it was, and the first line says how it was ranked."""
    from analysis.rank_text import ranked_text

    ranked = rank(three_configs, "mig")
    before = ranked.copy()
    text = ranked_text(ranked, top=2)
    assert text == rank_table(three_configs, "mig", top=2)[1]
    assert ranked.equals(before)
    assert text.startswith("Ranked by eval/mig (higher is better); mean over seeds; 3 config")
    assert text.rstrip().endswith("(the first 2 of 3 configurations)")

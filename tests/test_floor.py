"""The noise floor: the rule, the seed verdict (known answers), and the untrained models' table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.floor import (
    FLOOR_FILE,
    clearly_above,
    floor_rows,
    floor_verdicts,
    load_floor,
    margin,
    seed_verdict,
)
from tests.conftest import tiny_run_dict


def _trials(values: dict[str, list[float]], model: str = "betatcvae") -> pd.DataFrame:
    rows = []
    for cid, vals in values.items():
        for seed, v in enumerate(vals):
            rows.append({"trial_id": f"{cid}-{seed}", "config_id": cid, "seed": seed,
                         "status": "TERMINATED", "failed": False, "nonfinite": False,
                         "config/model/name": model, "config/data/name": "dsprites",
                         "eval/mig": v, "eval/gaussian_total_correlation": 1.0 - v})
    return pd.DataFrame(rows)


def _floor(mig: list[float], model: str = "betatcvae") -> pd.DataFrame:
    return pd.DataFrame([
        floor_rows(model, "dsprites", s, "fast", {"mig": v, "gaussian_total_correlation": 1.0 - v})
        for s, v in enumerate(mig)])


@pytest.mark.parametrize("value, floor, spread, floor_spread, expected", [
    (0.10, 0.02, 0.0, 0.0, True),      # 5x, no spread known
    (0.039, 0.02, 0.0, 0.0, False),    # under 2x
    (0.10, 0.02, 0.05, 0.0, False),    # 5x but the lead (0.08) is under 2 seed sds (0.10)
    (0.10, 0.02, 0.01, 0.045, False),  # the floor's own spread counts too
    (0.10, 0.02, 0.03, 0.01, True),    # lead 0.08 > 2 x 0.03
    (0.01, 0.0, 0.0, 0.0, True),       # a zero floor: only the lead decides
    (0.0, 0.0, 0.0, 0.0, False),
    (float("nan"), 0.02, 0.0, 0.0, False),
    (0.1, float("nan"), 0.0, 0.0, False),
    (0.1, 0.02, float("nan"), float("nan"), True),  # one seed: NaN spread counts as none
])
def test_the_rule_for_clearly_above_the_floor(value, floor, spread, floor_spread, expected):
    assert clearly_above(value, floor, spread=spread, floor_spread=floor_spread) is expected


def test_the_rule_mirrors_for_lower_is_better_and_the_margin() -> None:
    assert clearly_above(0.2, 1.0, mode="min") and not clearly_above(0.6, 1.0, mode="min")
    assert margin(0.06, 0.02) == pytest.approx(3.0)
    assert margin(0.2, 1.0, mode="min") == pytest.approx(5.0)
    assert math.isnan(margin(0.06, 0.0)) and math.isnan(margin(float("nan"), 0.02))


def test_floor_verdicts_put_each_configuration_beside_its_floor() -> None:
    df = _trials({"a": [0.10, 0.12, 0.11], "b": [0.02, 0.04, 0.03], "c": [0.2]})
    floor = _floor([0.01, 0.02, 0.03])  # mean 0.02, sd 0.01
    out = floor_verdicts(df, floor, ["eval/mig", "eval/gaussian_total_correlation"])
    out = out.set_index("config_id")
    assert out.loc["a", "eval/mig/floor"] == pytest.approx(0.02)
    assert out.loc["a", "eval/mig/floor_std"] == pytest.approx(0.01)
    assert out.loc["a", "eval/mig/margin"] == pytest.approx(5.5)
    assert list(out["eval/mig/above_floor"]) == [True, False, True]  # b: 1.5x
    assert out.loc["c", "eval/mig/n"] == 1 and np.isnan(out.loc["c", "eval/mig/std"])
    # lower is better: 1 - v against a floor of 0.98: nobody halves it
    assert not out["eval/gaussian_total_correlation/above_floor"].any()


def test_floor_verdicts_without_a_floor_or_with_another_model_mark_nothing() -> None:
    df = _trials({"a": [0.5, 0.5]})
    none = floor_verdicts(df, None, ["eval/mig"])
    assert not none["eval/mig/above_floor"].any() and none["eval/mig/floor"].isna().all()
    other = floor_verdicts(df, _floor([0.01], model="commutative"), ["eval/mig"])
    assert other["eval/mig/floor"].isna().all()


def test_failed_rows_are_left_out_of_the_verdicts() -> None:
    df = _trials({"a": [0.10, 0.12], "b": [0.9]})
    df.loc[df["config_id"] == "b", "failed"] = True
    out = floor_verdicts(df, _floor([0.01]), ["eval/mig"])
    assert list(out["config_id"]) == ["a"]


def test_seed_verdict_known_answers() -> None:
    apart = _trials({"a": [0.30, 0.31, 0.29], "b": [0.10, 0.11, 0.09]})
    v = seed_verdict(apart, "eval/mig")
    assert (v.first, v.second, v.verdict) == ("a", "b", "differ")
    assert v.p_value < 1e-3 and "beats the second" in v.sentence()

    close = _trials({"a": [0.30, 0.10, 0.20], "b": [0.19, 0.21, 0.17]})
    v = seed_verdict(close, "eval/mig")
    assert v.first == "a" and v.verdict == "within seed spread" and v.p_value > 0.5
    assert "coin toss" in v.sentence()

    one_seed = _trials({"a": [0.3], "b": [0.1]})
    v = seed_verdict(one_seed, "eval/mig")
    assert v.verdict == "unknown" and math.isnan(v.p_value) and "at least 2 seeds" in v.sentence()

    lone = seed_verdict(_trials({"a": [0.3, 0.2]}), "eval/mig")
    assert lone.second is None and "no second" in lone.sentence()


def test_seed_verdict_follows_the_metric_direction() -> None:
    df = _trials({"a": [0.30, 0.31, 0.29], "b": [0.10, 0.11, 0.09]})
    df["eval/gaussian_total_correlation"] = df["eval/mig"]
    assert seed_verdict(df, "eval/mig").first == "a"
    v = seed_verdict(df, "eval/gaussian_total_correlation")  # lower is better: b first
    assert v.first == "b" and v.verdict == "differ"


def test_load_floor_reads_the_table_and_warns_about_a_wrong_one(tmp_path: Path,
                                                                 caplog) -> None:
    assert load_floor(tmp_path) is None
    _floor([0.01, 0.02]).to_parquet(tmp_path / FLOOR_FILE)
    assert list(load_floor(tmp_path)["eval/mig"]) == [0.01, 0.02]
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / FLOOR_FILE)
    with caplog.at_level("WARNING", logger="analysis.floor"):
        assert load_floor(tmp_path) is None  # ranks without it, one line saying why
    [record] = caplog.records
    assert "not a noise-floor table" in record.getMessage()
    assert "going on without the noise floor" in record.getMessage()


def test_write_floor_evaluates_untrained_models_once_per_model_and_dataset(tmp_path: Path) -> None:
    from tune.config.run import RunConfig
    from tune.sweep.floor import evaluate_untrained, write_floor

    def cfg(name: str, seed: int = 0, **model) -> RunConfig:
        return RunConfig.from_dict(tiny_run_dict(
            model={"name": name, "latent_dim": 4, **model},
            eval={"protocol": "fast", "metrics": ["mig"]}, seed=seed))

    configs = [cfg("mipet_vae", num_ipe=1), cfg("mipet_vae", seed=5, num_ipe=2),
               cfg("beta_vae", num_ipe=0)]
    path = write_floor(tmp_path, configs)
    floor = load_floor(tmp_path)
    assert path == tmp_path / FLOOR_FILE
    assert len(floor) == 2 * 3  # two models, three seeds each, starting at the first config's
    assert sorted(set(floor["config/model/name"])) == ["beta_vae", "mipet_vae"]
    assert sorted(floor["config/seed"])[:3] == [0, 0, 1] and (floor["step"] == 0).all()
    assert floor["eval/mig"].between(0, 1).all() and (floor["eval/protocol"] == "fast").all()
    # the same number a direct evaluation of the step-0 model gives
    first = floor[(floor["config/model/name"] == "mipet_vae") & (floor["config/seed"] == 0)]
    assert first["eval/mig"].iloc[0] == pytest.approx(evaluate_untrained(configs[0])["mig"])
    # a resumed sweep does not evaluate the same pairs again; protocol none writes nothing
    assert write_floor(tmp_path, configs[:1]) == path and len(load_floor(tmp_path)) == 6
    none = RunConfig.from_dict(tiny_run_dict())
    assert write_floor(tmp_path / "none", [none]) is None

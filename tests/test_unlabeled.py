"""Without labels: your own images (no factors), UDR over a trial's seeds and over a whole sweep,
and the config-time refusals of what needs factors or more than one model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from models.errors import ConfigError
from tune.config.run import RunConfig, check_one_model
from tune.config.sweep import SweepSpec

pytest.importorskip("torch")


def shapes_folder(folder: Path, n: int = 64, seed: int = 0) -> Path:
    """`n` procedural 64x64 grey PNGs: a bright square or disc of random size at a random
    position on a dark background (two factors the data does not record)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:64, :64]
    for i in range(n):
        r = int(rng.integers(6, 14))
        cy, cx = rng.integers(r, 64 - r, size=2)
        if i % 2:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
        pic = np.where(mask, 230, 20).astype(np.uint8)
        Image.fromarray(pic, mode="L").save(folder / f"img_{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def pics(tmp_path_factory) -> Path:
    return shapes_folder(tmp_path_factory.mktemp("own") / "pics")


def _run(pics: Path, **sections) -> dict:
    from conftest import tiny_run_dict

    return tiny_run_dict(data={"name": "images", "source": str(pics)}, **sections)


# ---- config time --------------------------------------------------------------------------------
def test_metrics_that_need_factors_are_refused_on_own_images(pics: Path) -> None:
    with pytest.raises(ConfigError, match=r"mig needs ground-truth factors.*'images'.*"
                                          r"work here: unsupervised, udr_lasso, udr_spearman"):
        RunConfig.from_dict(_run(pics, eval={"protocol": "fast", "metrics": ["mig"]}))
    with pytest.raises(ConfigError, match="eval.fast_metrics: dci needs"):
        RunConfig.from_dict(_run(pics, eval={"protocol": "fast", "fast_metrics": ["dci"]}))
    with pytest.raises(ConfigError, match="eval.protocol=mipet scores only metrics that need"):
        RunConfig.from_dict(_run(pics, eval={"protocol": "mipet"}))
    # the defaults become the unsupervised ones; dSprites keeps its own
    cfg = RunConfig.from_dict(_run(pics, eval={"protocol": "dlib"}))
    assert cfg.eval.metrics == ("unsupervised",) and cfg.eval.fast_metrics == ("unsupervised",)
    assert RunConfig.from_dict({}).eval.fast_metrics == ("mig", "dci", "factor_vae")
    # a sweep's objective is checked the same way
    base = _run(pics, eval={"protocol": "fast"})
    with pytest.raises(ConfigError, match="metric 'eval/mig' needs ground-truth factors.*"
                                          "eval/udr_lasso"):
        SweepSpec.from_dict({"base": base, "metric": "eval/mig", "seeds": 2})


def test_udr_needs_two_seeds_and_is_named_udr_or_udr_lasso(pics: Path) -> None:
    base = _run(pics, eval={"protocol": "fast"})
    with pytest.raises(ConfigError, match="one model cannot form a group; set seeds >= 2"):
        SweepSpec.from_dict({"base": base, "metric": "eval/udr", "seeds": 1})
    with pytest.raises(ConfigError, match="'fast/udr_lasso' with seeds: 1"):
        SweepSpec.from_dict({"base": base, "metric": "eval/mutual_info_score", "seeds": 1,
                             "mode": "min",
                             "scheduler": {"kind": "asha", "metric": "fast/udr_lasso"}})
    with pytest.raises(ConfigError, match="no trial can report it"):
        SweepSpec.from_dict({"base": base, "metric": "eval/udr_a2a", "seeds": 3})
    spec = SweepSpec.from_dict({"base": base, "metric": "eval/udr", "seeds": 2})
    assert spec.metric == ("eval/udr_lasso",)
    cfg = RunConfig.from_dict(_run(pics, eval={"protocol": "fast", "metrics": ["udr"]}))
    assert cfg.eval.metrics == ("udr_lasso",)
    with pytest.raises(ConfigError, match="one train run makes one model"):
        check_one_model(cfg)
    # a sweep's best config: UDR dropped, the defaults of data without factors instead
    assert check_one_model(cfg, exported=True).eval.metrics == ("unsupervised",)
    with pytest.raises(ConfigError, match="not during training"):
        RunConfig.from_dict(_run(pics, eval={"fast_metrics": ["udr_spearman"]}))


def test_the_train_command_refuses_udr(pics: Path, tmp_path: Path) -> None:
    from tune.cli.commands import main

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_run(pics, eval={"protocol": "fast",
                                                    "metrics": ["udr_spearman"]})))
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "o")]) == 2


# ---- the group computation, without Ray ---------------------------------------------------------
@pytest.fixture(scope="module")
def trained(pics: Path, tmp_path_factory) -> list:
    """Two models trained 6 steps on the pictures (seeds 0 and 7): an untrained encoder's latents
    all have a KL below UDR's 0.01, so UDR keeps none of them."""
    from tune.data import load_dataset
    from tune.sweep.udr import model_from_state
    from tune.train.checkpoint import load_state
    from tune.train.loop import run_training

    data = load_dataset("images", source=pics)
    out = []
    for seed in (0, 7):
        cfg = RunConfig.from_dict(_run(pics, seed=seed, eval={"protocol": "fast"}))
        result = run_training(cfg, checkpoint_root=tmp_path_factory.mktemp("ck"), data=data)
        out.append(model_from_state(load_state(result.checkpoint), data, "cpu"))
    return out


def test_two_identical_models_score_the_identical_model_answer(pics: Path, trained) -> None:
    from analysis.metrics import udr_from_codes
    from tune.data import load_dataset
    from tune.sweep.udr import group_scores
    from tune.train.evaluation import Encoder

    data = load_dataset("images", source=pics)
    model, other = trained[0], trained[1]
    device = next(model.parameters()).device
    same = group_scores([model, model], data, "fast", device, ["udr_lasso", "udr_spearman"],
                        seed=3)
    # The answer for identical codes, computed here from the model's codes on the same sample
    # (fast budgets: 500 points in batches of 100, drawn from RandomState(3)).
    rs = np.random.RandomState(3)
    obs = np.concatenate([data.sample_observations(100, rs) for _ in range(5)])
    mu, logvar = Encoder(model, device, with_logvar=True)(obs)
    kl = (0.5 * (mu**2 + np.exp(logvar) - logvar - 1)).mean(0)
    for corr in ("lasso", "spearman"):
        want = udr_from_codes([mu, mu], [kl, kl], correlation=corr)["model_scores"]
        got = [s[f"eval/udr_{corr}"] for s in same]
        assert np.allclose(got, want, atol=1e-6), corr
    assert same[0] == same[1]
    diff = group_scores([model, other], data, "fast", device, ["udr_spearman"], seed=3)
    assert diff[0]["eval/udr_spearman"] < same[0]["eval/udr_spearman"]


def test_a_trials_seeds_form_a_group_and_train_on_own_images(pics: Path, tmp_path: Path) -> None:
    """What the trainable does with S = 2 seeds: each seed's final model kept at its final report
    (and saved to its artifact folder), then scored as a group into the seed rows. The runs
    evaluate during training (unsupervised fast metrics only) and write pictures."""
    from conftest import tiny_train

    from tune.sweep.trainable import _seed_means
    from tune.sweep.udr import FINAL_MODEL, TrialUDR, load_final_model
    from tune.train.loop import run_training

    cfg = RunConfig.from_dict(_run(pics, train=tiny_train(6, 3, eval_every=3, images=True),
                                   eval={"protocol": "fast",
                                         "metrics": ["udr_spearman", "unsupervised"]}))
    group = TrialUDR(cfg, 2)
    assert group.names == ["udr_lasso", "udr_spearman"]
    rows = []
    for index in range(2):
        run = cfg.replace(seed=cfg.seed + index)
        adir = tmp_path / f"seed_{run.seed}"
        finals: list = []
        reported: set = set()

        def report(metrics, ckpt, finals=finals, reported=reported):
            reported.update(metrics)
            if metrics["step"] >= 6:
                finals.append(ckpt)

        result = run_training(run, report=report, checkpoint_root=tmp_path / f"ck{index}",
                              artifact_dir=adir)
        assert "fast/gaussian_total_correlation" in reported
        assert not any(k.startswith("fast/mig") for k in reported)
        assert (adir / "traversal.png").is_file() and (adir / "reconstruction.png").is_file()
        group.keep(index, finals[-1], adir)
        assert load_final_model(adir)["config"]["seed"] == run.seed
        rows.append({"artifact_dir": str(adir), **{f"eval/{k}": v
                                                   for k, v in result.metrics.items()}})
    group.score(rows)
    for row in rows:
        assert 0 <= row["eval/udr_spearman"] <= 1 and np.isfinite(row["eval/udr_lasso"])
        assert "eval/gaussian_total_correlation" in row
    # the trial's value is the mean of its models' scores; a resumed trial reloads the models
    means = _seed_means(rows)
    assert means["eval/udr_lasso"] == pytest.approx(np.mean([r["eval/udr_lasso"] for r in rows]))
    again = [{"artifact_dir": r["artifact_dir"]} for r in rows]
    TrialUDR(cfg, 2).score(again)
    assert [r["eval/udr_lasso"] for r in again] == [r["eval/udr_lasso"] for r in rows]
    assert all((Path(r["artifact_dir"]) / FINAL_MODEL).is_file() for r in rows)
    assert TrialUDR(cfg, 1).names == []  # one seed: no group


def test_the_trainable_reports_the_groups_udr_per_seed_and_as_the_objective(
        pics: Path, tmp_path: Path, monkeypatch) -> None:
    """`train_trial` outside Ray (its reports captured): the last report carries each seed's
    own UDR in `seed_results` and their mean as the objective."""
    import json

    from conftest import tiny_train
    from ray import tune as ray_tune

    from tune.sweep.trainable import train_trial

    reports: list[dict] = []
    monkeypatch.setattr(ray_tune, "report", lambda m, checkpoint=None: reports.append(m))
    monkeypatch.setattr(ray_tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(ray_tune, "get_context",
                        lambda: type("C", (), {"get_trial_id": lambda self: "t1"})())
    config = RunConfig.from_dict(_run(pics, train=tiny_train(6, 3),
                                      eval={"protocol": "fast"})).to_dict()
    train_trial(config, context={"sweep_dir": str(tmp_path), "seeds": 2,
                                 "objectives": ["eval/udr_lasso"]})
    last = reports[-1]
    rows = json.loads(last["seed_results"])
    assert [r["seed"] for r in rows] == [0, 1]
    scores = [r["eval/udr_lasso"] for r in rows]
    assert last["eval/udr_lasso"] == pytest.approx(np.mean(scores))
    assert all((tmp_path / "trials" / "t1" / f"seed_{s}" / "final_model.pt").is_file()
               for s in (0, 1))


def test_the_noise_floor_of_udr_is_the_untrained_models_udr(pics: Path) -> None:
    from tune.sweep.floor import floor_table

    cfg = RunConfig.from_dict(_run(pics, eval={"protocol": "fast"}))
    floor = floor_table([cfg], seeds=2)
    # untrained latents carry no information (KL <= 0.01 each): no latent agrees, UDR 0
    assert len(floor) == 2 and (floor["eval/udr_lasso"] == 0).all()
    assert (floor["eval/udr_a2a"] == 0).all()
    assert "eval/gaussian_total_correlation" in floor and "eval/mig" not in floor
    assert floor_table([cfg], seeds=1).filter(like="udr").empty  # one seed: no group


def test_adding_columns_keeps_every_row(tmp_path: Path) -> None:
    from tune.sweep.udr import add_trial_columns

    table = pd.DataFrame({"trial_id": ["b", "a", "a", "c"], "seed": [0, 0, 1, 0],
                          "eval/x": [1.0, 2.0, 3.0, 4.0]})
    table.to_parquet(tmp_path / "trials.parquet", index=False)
    add_trial_columns(tmp_path, pd.DataFrame({"trial_id": ["a", "b"], "seed": [1, 0],
                                              "eval/udr_a2a": [0.5, 0.25]}))
    out = pd.read_parquet(tmp_path / "trials.parquet")
    assert out[["trial_id", "seed", "eval/x"]].equals(table)
    assert np.isnan(out["eval/udr_a2a"][1]) and np.isnan(out["eval/udr_a2a"][3])
    assert out["eval/udr_a2a"][0] == 0.25 and out["eval/udr_a2a"][2] == 0.5


def test_all_to_all_on_a_folder_without_models_is_one_line(tmp_path: Path, capsys) -> None:
    from tune.cli.commands import main

    assert main(["udr", str(tmp_path)]) == 2
    assert "no trials.parquet" in capsys.readouterr().err
    pd.DataFrame({"trial_id": ["a"], "seed": [0], "status": ["TERMINATED"], "failed": [False],
                  "artifact_dir": [str(tmp_path)]}).to_parquet(tmp_path / "trials.parquet")
    assert main(["rank", str(tmp_path), "--by", "udr_a2a"]) == 2
    err = capsys.readouterr().err
    assert "needs at least 2 finished models" in err and len(err.strip().splitlines()) == 1


# ---- a sweep through the CLI --------------------------------------------------------------------
def test_a_two_trial_sweep_on_own_images_ranked_by_udr(ray_session, pics: Path, tmp_path: Path,
                                                      capsys) -> None:
    from conftest import tiny_train

    from tune.cli.commands import main

    sweep = {
        "name": "own", "storage": str(tmp_path / "runs"), "num_samples": 2, "seeds": 2,
        "metric": "eval/udr", "mode": "max", "sampler": {"kind": "random", "seed": 1},
        "space": {"params": {"model/beta": {"low": 1.0, "high": 8.0, "log": True}}},
        "base": _run(pics, train=tiny_train(20, 10, images=True), eval={"protocol": "fast"}),
    }
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(sweep))
    assert main(["sweep", "--config", str(path)]) == 0
    folder = tmp_path / "runs" / "own"
    df = pd.read_parquet(folder / "trials.parquet")
    assert len(df) == 4 and (df["status"] == "TERMINATED").all()
    assert df["eval/udr_lasso"].notna().all() and "eval/mig" not in df
    assert "eval/gaussian_total_correlation" in df
    floor = pd.read_parquet(folder / "floor.parquet")
    assert floor["eval/udr_lasso"].notna().all()
    capsys.readouterr()
    assert main(["rank", str(folder), "--by", "udr_lasso"]) == 0
    assert "udr_lasso" in capsys.readouterr().out
    # the all-to-all UDR over the sweep's 4 models, computed on demand by rank
    assert main(["rank", str(folder), "--by", "udr_a2a"]) == 0
    assert "udr_a2a" in capsys.readouterr().out
    df = pd.read_parquet(folder / "trials.parquet")
    assert len(df) == 4 and df["eval/udr_a2a"].notna().all()
    # `udr` names udr_lasso; `mipet-tune udr` recomputes the all-to-all with other budgets
    assert main(["rank", str(folder), "--by", "udr"]) == 0
    assert "udr_lasso" in capsys.readouterr().out
    assert main(["udr", str(folder), "--protocol", "dlib"]) == 0
    again = pd.read_parquet(folder / "trials.parquet")
    assert again.drop(columns="eval/udr_a2a").equals(df.drop(columns="eval/udr_a2a"))
    assert again["eval/udr_a2a"].notna().all()

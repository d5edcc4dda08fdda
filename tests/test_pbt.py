"""Population-based training: the scheduler's config-time refusals (no Ray), an exploit's
restore of a donor checkpoint under a perturbed config (no Ray), and a 4-trial PBT sweep that
exploits with the donor's state restored exactly and the perturbed values in effect."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_run_dict, tiny_sweep_base, tiny_train

from models.errors import ConfigError
from tune.config import RunConfig
from tune.config.sweep import SweepSpec

BASE = tiny_sweep_base(30, 10, images=False)  # perturbations at steps 10 and 20
BASE["eval"] = {"protocol": "none"}
MUTATIONS = {"model/beta": {"low": 1.0, "high": 64.0, "log": True},
             "train/lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}}


def _spec_dict(tmp_path: Path | None = None, **over) -> dict:
    d = {
        "name": "pbt",
        "base": BASE,
        "space": {"params": {"model/beta": {"low": 1.0, "high": 64.0, "log": True},
                             "train/lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}}},
        "num_samples": 4,
        "metric": ["train/loss"],
        "mode": ["min"],
        "resources": {"cpu": 1},
        "scheduler": {"kind": "pbt", "metric": "train/loss", "mode": "min",
                      "perturbation_interval": 10, "mutations": MUTATIONS,
                      "resample_probability": 0.0, "synch": True},  # an exploit per round
        "sampler": {"seed": 3},
        "max_failures": 0,
        "checkpoints_to_keep": 10,  # the test reads the donors' checkpoints afterwards
        "storage": str(tmp_path or "/tmp"),
    }
    d.update(over)
    return d


def _sched(**over) -> dict:
    return {**_spec_dict()["scheduler"], **over}


# ---- refused at config time, one line each, without Ray -------------------------------------
@pytest.mark.parametrize(("over", "message"), [
    ({"scheduler": _sched(mutatons=MUTATIONS)}, "unknown key 'scheduler/mutatons'; did you mean "
                                                "'scheduler/mutations'?"),
    ({"scheduler": _sched(mutations={})}, "scheduler.mutations must name at least one parameter"),
    ({"scheduler": _sched(mutations={"model/bta": {"low": 1.0, "high": 2.0}})},
     "'model/bta' is not a run-config path; did you mean 'model/beta'?"),
    ({"scheduler": _sched(mutations={"model/latent_dim": {"low": 2, "high": 8, "type": "int"}})},
     "'model/latent_dim' cannot change while a run trains"),
    ({"scheduler": _sched(mutations={"model/beta": {"low": 4.0, "high": 2.0}})},
     "model/beta: empty range: low=4 must be below high=2"),
    ({"scheduler": {**_sched(kind="pb2", bounds={"model/beta": [8.0, 1.0]}), "mutations": {},
                    "resample_probability": 0.25}}, "model/beta: empty range"),
    ({"scheduler": {**_sched(kind="pb2", bounds={"model/beta": ["a", 1.0]}), "mutations": {},
                    "resample_probability": 0.25}}, "expected [low, high]"),
    ({"scheduler": _sched(kind="pb2", bounds={"model/beta": [1.0, 8.0]})},
     "scheduler.mutations is read by kind pbt, not by kind 'pb2'"),
    ({"scheduler": _sched(perturbation_interval=5)},
     "perturbation_interval=5 is below train/report_every=10"),
    ({"scheduler": _sched(perturbation_interval=15)},
     "perturbation_interval=15 must be a multiple of train/checkpoint_every=10"),
    ({"scheduler": _sched(perturbation_interval=0)}, "perturbation_interval must be >= 1"),
    ({"scheduler": _sched(metric="eval/mig", mode="max")}, "needs a value reported during"),
    ({"scheduler": _sched(metric="fast/mig", mode="max")},
     "must be evaluated at every perturbation: set train/eval_every"),
    ({"scheduler": _sched(metric="fast/mgi")}, "'fast/mgi' is not computed during training"),
    ({"scheduler": _sched(quantile_fraction=0.7)}, "quantile_fraction must be in (0, 0.5]"),
    ({"scheduler": _sched(grace_period=4)}, "scheduler.grace_period is read by kind asha"),
    ({"seeds": 2}, "seeds=2 with scheduler.kind=pbt: a population member is one training run"),
    ({"base": {**BASE, "train": {**BASE["train"], "schedules": {
        "model/beta": {"kind": "linear", "start": 1.0, "end": 4.0, "steps": 20}}}}},
     "'model/beta' has a schedule in train/schedules"),
])
def test_population_schedulers_refuse_bad_settings_in_one_line(over, message) -> None:
    with pytest.raises(ConfigError) as info:
        SweepSpec.from_dict(_spec_dict(**over))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_conditional_space_is_refused_before_ray_starts(tmp_path) -> None:
    from tune.sweep.driver import prepare

    space = {"params": {"model/name": {"choices": ["beta_vae", "mipet_vae"]},
                        "model/beta": {"low": 1.0, "high": 8.0,
                                       "when": {"model/name": "mipet_vae"}}}}
    with pytest.raises(ConfigError, match="model/beta is conditional.*Ray's sampling"):
        prepare(SweepSpec.from_dict(_spec_dict(tmp_path, space=space)))


def test_the_population_is_ray_domains_and_mutations_are_nested_for_pbt() -> None:
    from ray import tune

    from search_spaces import read_space
    from tune.sweep.pbt import (
        ClipToRanges,
        hyperparam_bounds,
        hyperparam_mutations,
        population_space,
    )

    spec = SweepSpec.from_dict(_spec_dict(
        space={"params": {"train/lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
                          "model/num_ipe": {"low": 1, "high": 3, "type": "int"}},
               "fixed": {"train/weight_decay": 0.0}},
        scheduler=_sched(mutations={**MUTATIONS, "model/rec_weight": {"choices": [0.5, 1.0]}})))
    space = population_space(spec, read_space(spec.space))
    assert isinstance(space["train"]["lr"], tune.search.sample.Float)
    assert space["train"]["lr"].lower == 1.0e-4 and space["train"]["steps"] == 30
    ipe = space["model"]["num_ipe"]
    assert isinstance(ipe, tune.search.sample.Integer) and (ipe.lower, ipe.upper) == (1, 4)
    assert space["train"]["weight_decay"] == 0.0
    # model/beta: not searched, not in base: drawn from its mutation range
    assert isinstance(space["model"]["beta"], tune.search.sample.Float)
    mutations = hyperparam_mutations(spec.scheduler)
    assert mutations["model"]["rec_weight"] == [0.5, 1.0]
    assert isinstance(mutations["model"]["beta"], tune.search.sample.Float)
    clip = ClipToRanges({"model/beta": (1.0, 64.0, False)})
    assert clip({"model": {"beta": 80.0}})["model"]["beta"] == 64.0
    pb2 = SweepSpec.from_dict(_spec_dict(scheduler={
        "kind": "pb2", "perturbation_interval": 10, "bounds": {"model/beta": [1, 8]}}))
    assert hyperparam_bounds(pb2.scheduler) == {"model": {"beta": [1.0, 8.0]}}
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.schedulers.pb2 import PB2

    from tune.sweep.pbt import TIME_KEY, build_scheduler

    pbt = build_scheduler(spec)
    assert type(pbt) is PopulationBasedTraining and pbt._time_attr == TIME_KEY
    assert pbt._perturbation_interval == 10 and isinstance(pbt._custom_explore_fn, ClipToRanges)
    assert isinstance(build_scheduler(pb2), PB2)


def test_a_sampler_beside_pbt_is_one_warning_and_the_population_seeded(caplog) -> None:
    from tune.sweep.pbt import population_searcher

    spec = SweepSpec.from_dict(_spec_dict(sampler={"kind": "nsga2", "seed": 5}))
    with caplog.at_level("WARNING", logger="tune.sweep.pbt"):
        searcher = population_searcher(spec)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "sampler.kind=nsga2 is not used" in lines[0]
    assert "seed sampler.seed=5" in lines[0]
    caplog.clear()
    population_searcher(SweepSpec.from_dict(_spec_dict()))
    assert not caplog.records
    assert searcher is not None


# ---- an exploit: the donor's state under the perturbed config, without Ray -------------------
def _train(cfg: RunConfig, root: Path, resume: Path | None = None) -> list[dict]:
    from tune.train.loop import run_training

    reports: list[dict] = []
    run_training(cfg, report=lambda m, c: reports.append({**m, "ckpt": c}), resume_from=resume,
                 checkpoint_root=root)
    return reports


def test_an_exploit_takes_the_donors_state_and_the_new_lr_and_beta(tmp_path) -> None:
    from tune.sweep.pbt import model_sha256, restore_exploit
    from tune.train.checkpoint import load_state

    donor_cfg = RunConfig.from_dict(tiny_run_dict(
        model={"beta": 2.0}, train=tiny_train(30, 10, lr=1.0e-3, lr_schedule="cosine")))
    reports = _train(donor_cfg, tmp_path / "donor")
    donor_ckpt = next(r["ckpt"] for r in reports if r["step"] == 10)
    new = RunConfig.from_dict(tiny_run_dict(
        model={"beta": 3.0}, train=tiny_train(30, 10, lr=2.0e-3, lr_schedule="cosine")))
    adapted, entry = restore_exploit(donor_ckpt, new, paths=["model/beta", "train/lr"],
                                     trial_id="b", donor="a", history=[], into=tmp_path)
    assert entry["step"] == 10 and entry["from_trial"] == "a"
    assert entry["changes"] == {"model/beta": [2.0, 3.0], "train/lr": [1.0e-3, 2.0e-3]}
    before, after = load_state(donor_ckpt), load_state(adapted)
    assert model_sha256(after["model"]) == model_sha256(before["model"]) == entry["model_sha256"]
    # the cosine schedule goes on from the donor's step at twice the rate
    assert math.isclose(after["optimizer"]["param_groups"][0]["lr"],
                        2 * before["optimizer"]["param_groups"][0]["lr"])
    assert after["scheduler"]["scheduler"]["base_lrs"][0] == 2.0e-3
    assert after["step"] == 10 and after["loader"] == before["loader"]
    resumed = _train(new, tmp_path / "b", resume=adapted)
    donor_on = _train(donor_cfg, tmp_path / "a", resume=donor_ckpt)
    # the cosine decay goes on from step 10 of 30: at step 20 both runs are at the same factor
    assert resumed[0]["step"] == donor_on[0]["step"] == 20
    assert 0 < resumed[0]["lr"] < 2.0e-3
    assert math.isclose(resumed[0]["lr"], 2 * donor_on[0]["lr"], rel_tol=1e-9)
    assert resumed[0]["train/rec"] != donor_on[0]["train/rec"]  # beta 3 trains otherwise

    other = RunConfig.from_dict(tiny_run_dict(model={"beta": 3.0, "latent_dim": 6},
                                              train=tiny_train(30, 10)))
    with pytest.raises(ConfigError, match="only the perturbed paths.*model/latent_dim"):
        restore_exploit(donor_ckpt, other, paths=["model/beta"], trial_id="b", donor="a",
                        history=[], into=tmp_path)


# ---- a PBT sweep on Ray ------------------------------------------------------------------------
def _reports(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]


def _checkpoints(trial_dir: Path, step: int) -> list[tuple[Path, list]]:
    """A trial's checkpoints of `step`, each with the exploit history it was written with."""
    out = []
    for folder in sorted(trial_dir.glob("checkpoint_*")):
        meta = json.loads((folder / "meta.json").read_text())
        if meta["step"] == step:
            out.append((folder, meta.get("pbt_history") or []))
    return out


@pytest.mark.ray
def test_a_pbt_sweep_exploits_with_the_donors_state_and_the_perturbed_values(
        ray_session, tmp_path) -> None:
    from tune.sweep.driver import run_sweep
    from tune.sweep.pbt import model_sha256, read_policy_logs, restore_exploit
    from tune.train.checkpoint import load_state

    spec = SweepSpec.from_dict(_spec_dict(tmp_path))
    folder = run_sweep(spec, verbose=0, analyse=False).folder
    df = pd.read_parquet(folder / "trials.parquet")
    assert len(df) == 4 and (df["status"] == "TERMINATED").all(), df["status"].tolist()
    assert read_policy_logs(folder / "ray"), "Ray's PBT logged no exploit"
    own = [(row["trial_id"], e) for _, row in df.iterrows()
           for e in json.loads(row["pbt/history"]) if e["trial"] == row["trial_id"]]
    assert own, "no trial recorded an exploit of its own"
    trial_id, entry = own[0]
    ray_dir, step, donor = folder / "ray", entry["step"], entry["from_trial"]
    assert donor != trial_id and step in (10, 20)

    # The donor's checkpoint of that step holds the weights the trial went on from.
    donor_ckpt = next(f for f, _ in _checkpoints(ray_dir / f"trial_{donor}", step)
                      if model_sha256(load_state(f)["model"]) == entry["model_sha256"])

    # After the exploit the trial reports from the donor's step on, with the perturbed values
    # (Ray's result.json of a trial restarts at an exploit, so it holds only what came after).
    after = next(r for r in _reports(ray_dir / f"trial_{trial_id}")
                 if entry in json.loads(r.get("pbt/history", "[]")))
    assert after["step"] == step + 10
    new_lr, new_beta = entry["changes"]["train/lr"][1], entry["changes"]["model/beta"][1]
    assert math.isclose(after["lr"], new_lr, rel_tol=1e-9)  # in the optimizer, not just config
    assert after["pbt/train/lr"] == new_lr and after["pbt/model/beta"] == new_beta

    # TensorBoard: the schedule PBT found, in the trial's own run: its values before the exploit
    # (its own draw), the perturbed ones after
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(folder / "trials" / trial_id / "seed_0" / "tb"))
    tb.Reload()
    betas = {e.step: e.value for e in tb.Scalars("pbt/model/beta")}
    lrs = {e.step: e.value for e in tb.Scalars("pbt/train/lr")}
    assert math.isclose(betas[step + 10], new_beta, rel_tol=1e-6)
    assert math.isclose(lrs[step + 10], new_lr, rel_tol=1e-6)
    assert 10 in lrs and not math.isclose(lrs[10], new_lr, rel_tol=1e-3)

    # Exactly the donor's state: training on from the donor's checkpoint under the new config
    # gives the trial's own checkpoint of the next step, bit for bit.
    mine = next(load_state(f) for f, h in _checkpoints(ray_dir / f"trial_{trial_id}", step + 10)
                if h and h[-1] == entry)
    cfg = RunConfig.from_dict(mine["config"])
    adapted, _ = restore_exploit(donor_ckpt, cfg, paths=["model/beta", "train/lr"],
                                 trial_id=trial_id, donor=donor, history=[], into=tmp_path)
    short = cfg.replace(train=dataclasses.replace(cfg.train, steps=step + 10))
    _train(short, tmp_path / "again", resume=adapted)
    again = load_state(sorted((tmp_path / "again").glob("checkpoint_*"))[-1])
    assert again["step"] == mine["step"] == step + 10
    assert model_sha256(again["model"]) == model_sha256(mine["model"])

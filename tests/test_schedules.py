"""Loss-weight schedules and the lr scheduler: values, exact resume, logging, one-line errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import tiny_run_dict

from models.errors import ConfigError
from tune.config.run import RunConfig, apply_overrides
from tune.config.schedules import Schedule
from tune.train.loop import run_training


@pytest.mark.parametrize("spec, expected", [
    ({"kind": "constant", "start": 2.0}, {0: 2.0, 50: 2.0, 10_000: 2.0}),
    ({"kind": "linear", "start": 0.0, "end": 4.0, "steps": 100},
     {0: 0.0, 25: 1.0, 100: 4.0, 500: 4.0}),
    ({"kind": "linear", "start": 1.0, "end": 3.0, "steps": 10, "warmup": 5},
     {0: 1.0, 5: 1.0, 10: 2.0, 15: 3.0}),
    ({"kind": "cosine", "start": 0.0, "end": 2.0, "steps": 100},
     {0: 0.0, 50: 1.0, 100: 2.0, 200: 2.0}),
    # 4 cycles of 25 steps, ramp over the first 10 (ratio 0.4), flat at end after the ramp
    ({"kind": "cyclic", "start": 0.0, "end": 1.0, "steps": 100, "cycles": 4, "ratio": 0.4},
     {0: 0.0, 5: 0.5, 10: 1.0, 24: 1.0, 25: 0.0, 30: 0.5, 99: 1.0, 100: 1.0, 1000: 1.0}),
    ({"kind": "step", "start": 8.0, "factor": 0.5, "every": 10},
     {0: 8.0, 9: 8.0, 10: 4.0, 35: 1.0}),
    ({"kind": "step", "start": 8.0, "factor": 0.5, "every": 10, "end": 2.0},
     {10: 4.0, 20: 2.0, 90: 2.0}),
])
def test_each_kind_at_chosen_steps(spec, expected) -> None:
    schedule = Schedule(spec)
    for step, value in expected.items():
        assert math.isclose(schedule.value(step), value, abs_tol=1e-12), (step, spec)


def _scheduled(**train) -> dict:
    return tiny_run_dict(
        model={"name": "beta_vae", "num_ipe": 0},
        train={"steps": 8, "report_every": 2, "checkpoint_every": 4,
               "schedules": {"model/beta": {"kind": "linear", "start": 0.0, "end": 4.0,
                                            "steps": 6},
                             "model/rec_weight": {"kind": "cyclic", "start": 0.5, "end": 1.0,
                                                  "steps": 8, "cycles": 2}},
               "lr_scheduler": {"name": "ReduceLROnPlateau", "factor": 0.5, "patience": 0,
                                "threshold": 10.0, "window": 3},
               **train})


def test_resume_under_schedules_and_plateau_is_exact(dsprites, tmp_path: Path) -> None:
    cfg = RunConfig.from_dict(_scheduled())
    saved = []  # (report, checkpoint) of one uninterrupted run
    run_training(cfg, data=dsprites, report=lambda m, ck: saved.append((m, ck)),
                 checkpoint_root=tmp_path / "a")
    straight = [m for m, _ in saved]
    ckpt = next(ck for m, ck in saved if ck is not None)  # step 4: mid plateau window (3)
    resumed = []
    run_training(cfg, data=dsprites, report=lambda m, ck: resumed.append(m), resume_from=ckpt,
                 checkpoint_root=tmp_path / "b")
    keys = ("step", "train/loss", "lr", "schedule/model/beta")
    later = [tuple(r[k] for k in keys) for r in straight if r["step"] > 4]
    assert [tuple(r[k] for k in keys) for r in resumed] == later
    # the plateau scheduler was fed: no window improves 10-fold, so the lr halves per window
    lrs = [r["lr"] for r in straight]
    assert lrs[0] == pytest.approx(4e-4) and lrs[-1] == pytest.approx(4e-4 * 0.5 ** 2)


def test_the_loop_feeds_the_plateau_its_monitor(dsprites) -> None:
    # the loop hands the step's loss terms to the lr scheduler: with `monitor: rec` the plateau
    # is fed the reconstruction (no window improves 10-fold, so the lr halves per window)
    plateau = {"name": "ReduceLROnPlateau", "factor": 0.5, "patience": 0, "threshold": 10.0,
               "window": 3, "monitor": "rec"}
    reports = []
    run_training(RunConfig.from_dict(_scheduled(lr_scheduler=plateau)), data=dsprites,
                 report=lambda m, ck: reports.append(m))
    assert reports[-1]["lr"] == pytest.approx(4e-4 * 0.5 ** 2)


def test_scheduled_weights_are_logged_and_used(dsprites) -> None:
    cfg = RunConfig.from_dict(_scheduled(lr_scheduler=None))
    reports = []
    run_training(cfg, data=dsprites, report=lambda m, ck: reports.append(m))
    beta = Schedule(cfg.train.schedules["model/beta"])
    rec = Schedule(cfg.train.schedules["model/rec_weight"])
    for r in reports:
        assert r["schedule/model/beta"] == pytest.approx(beta.value(r["step"] - 1))
        assert r["schedule/model/rec_weight"] == pytest.approx(rec.value(r["step"] - 1))
    assert reports[0]["schedule/model/beta"] == pytest.approx(4.0 / 6)
    plain = []
    run_training(RunConfig.from_dict(_scheduled(lr_scheduler=None, schedules={})), data=dsprites,
                 report=lambda m, ck: plain.append(m))
    assert "schedule/model/beta" not in plain[0]
    # first window: beta 0 then 2/3 and rec weight 0.5, 0.625 instead of 1: a smaller loss
    assert reports[0]["train/loss"] < plain[0]["train/loss"]


def test_a_capacity_run_logs_and_uses_its_schedules(dsprites) -> None:
    # capacity_gamma 0 for the first window (4 steps), then 100; C = capacity_max(step), a
    # linear ramp 0 -> 8 over 8 steps (capacity_steps 1: C is capacity_max from step 1 on)
    cfg = RunConfig.from_dict(tiny_run_dict(
        model={"name": "annealed_vae", "num_ipe": 0, "capacity_steps": 1},
        train={"steps": 8, "report_every": 4, "checkpoint_every": 8, "schedules": {
            "model/capacity_gamma": {"kind": "linear", "start": 0.0, "end": 100.0, "steps": 1,
                                     "warmup": 3},
            "model/capacity_max": {"kind": "linear", "start": 0.0, "end": 8.0, "steps": 8}}}))
    reports = []
    run_training(cfg, data=dsprites, report=lambda m, ck: reports.append(m))
    first, second = reports
    assert first["schedule/model/capacity_gamma"] == 0.0  # step 3, still warming up
    assert second["schedule/model/capacity_gamma"] == 100.0  # from step 4 on
    assert second["schedule/model/capacity_max"] == pytest.approx(7.0)
    # gamma 0: the objective is the reconstruction alone; then the capacity term counts
    assert first["train/loss"] == pytest.approx(first["train/rec"], rel=1e-6)
    assert second["train/loss"] > second["train/rec"] + 1.0
    # C of each step is the scheduled capacity_max: mean of 0, 1, 2, 3 and of 4, 5, 6, 7
    assert first["train/capacity_c"] == pytest.approx(1.5)
    assert second["train/capacity_c"] == pytest.approx(5.5)


def test_schedule_fields_are_config_paths() -> None:
    d = apply_overrides(_scheduled(), ["train/schedules/model/beta/end=8",
                                       "train/lr_scheduler/factor=0.25"])
    cfg = RunConfig.from_dict(d)
    assert cfg.train.schedules["model/beta"]["end"] == 8.0
    assert cfg.train.lr_scheduler["factor"] == 0.25
    assert cfg.flat()["train/schedules/model/beta/end"] == 8.0
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def _plateau_lrs(monitor: str) -> list[float]:
    """The lr after each of 6 windows of a ReduceLROnPlateau (patience 0) watching `monitor`,
    fed a loss that rises (a beta ramp) while its reconstruction term falls."""
    import torch

    from tune.train.scheduling import LRStepper

    plateau = {"name": "ReduceLROnPlateau", "factor": 0.5, "patience": 0, "window": 2,
               "monitor": monitor}
    cfg = RunConfig.from_dict(tiny_run_dict(model={"name": "beta_vae", "num_ipe": 0},
                                            train={"lr_scheduler": plateau}))
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    stepper = LRStepper(cfg, optimizer, lambda step: 1.0)
    lrs = []
    for step in range(12):
        stepper.step(torch.tensor(100.0 + step), {"rec": torch.tensor(90.0 - step)})
        if step % 2 == 1:
            lrs.append(stepper.lr)
    return lrs


def test_plateau_watches_the_loss_or_the_reconstruction() -> None:
    assert RunConfig.from_dict(tiny_run_dict(train={"lr_scheduler": {
        "name": "ReduceLROnPlateau"}})).train.lr_scheduler["monitor"] == "loss"
    assert _plateau_lrs("loss") == [1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125]  # rising: cut
    assert _plateau_lrs("rec") == [1.0] * 6  # falling reconstruction: kept


@pytest.mark.parametrize("train, message", [
    ({"schedules": {"model/betaa": {"kind": "constant", "start": 1}}},
     "'model/betaa' is not a loss weight of model 'beta_vae'; did you mean 'model/beta'"),
    ({"schedules": {"model/hy_hes": {"kind": "constant", "start": 1}}},
     "'model/hy_hes' is not a loss weight of model 'beta_vae'"),
    ({"schedules": {"model/beta": {"kind": "linearly", "start": 1}}},
     "kind must be one of constant, linear, cosine, cyclic, step, got 'linearly'"),
    ({"schedules": {"model/beta": {"kind": "linear", "start": 0, "end": 1}}},
     "a linear schedule needs steps"),
    ({"schedules": {"model/beta": {"kind": "cyclic", "start": 0, "end": 1, "steps": 10,
                                   "ratio": 1.5}}}, "ratio must be in (0, 1], got 1.5"),
    ({"schedules": {"model/beta": {"kind": "constant", "start": 1, "every": 3}}},
     "'every' is not a field of a constant schedule"),
    ({"schedules": {"model/beta": {"kind": "linear", "start": -1, "end": 1, "steps": 3}}},
     "start must be >= 0"),
    ({"lr_scheduler": {"name": "ReduceLROnPlatoo"}}, "did you mean 'ReduceLROnPlateau'"),
    ({"lr_scheduler": {"name": "StepLR", "step_size": 2, "gama": 0.5}},
     "StepLR has no argument 'gama'; its arguments are step_size, gamma, window"),
    ({"lr_scheduler": {"name": "StepLR"}}, "StepLR() is refused by torch"),
    ({"lr_scheduler": {"name": "ReduceLROnPlateau", "monitor": "kld"}},
     "monitor must be one of loss, rec, got 'kld'"),
    ({"lr_scheduler": {"name": "StepLR", "step_size": 2, "monitor": "rec"}},
     "monitor is for ReduceLROnPlateau only"),
    ({"lr_scheduler": {"name": "ReduceLROnPlateau", "mode": "sideways"}}, "refused by torch"),
    ({"lr_scheduler": {"name": "StepLR", "step_size": 2}, "lr_schedule": "cosine"},
     "replaces train.lr_schedule"),
])
def test_bad_schedules_and_schedulers_are_one_line(train, message) -> None:
    d = tiny_run_dict(model={"name": "beta_vae", "num_ipe": 0}, train=train)
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(d)
    assert message in str(info.value)
    assert "\n" not in str(info.value)

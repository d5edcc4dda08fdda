"""The plain training loop (no Ray): determinism, exact resume, NaN handling, evaluation,
images."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from conftest import tiny_run_dict
from models.errors import ConfigError, NonFiniteLossError
from tune.config.run import RunConfig
from tune.train.loop import run_training, seed_streams


def _losses(reports):
    return [(r["step"], r["train/loss"]) for r in reports if "train/loss" in r]


def test_seed_streams_are_distinct_and_stable() -> None:
    assert seed_streams(0) == seed_streams(0)
    assert len(set(seed_streams(0))) == 3
    assert seed_streams(0) != seed_streams(1)


def test_same_seed_same_losses_and_other_seed_differs(dsprites) -> None:
    cfg = RunConfig.from_dict(tiny_run_dict())
    runs = []
    for c in (cfg, cfg, cfg.replace(seed=1)):
        reports = []
        run_training(c, data=dsprites, report=lambda m, ck: reports.append(m))
        runs.append(_losses(reports))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert [s for s, _ in runs[0]] == [3, 6]
    assert all(math.isfinite(v) for _, v in runs[0])


def test_resume_from_a_checkpoint_continues_exactly(dsprites, tmp_path: Path) -> None:
    cfg = RunConfig.from_dict(tiny_run_dict())
    straight, saved = [], []
    run_training(cfg, data=dsprites, report=lambda m, ck: straight.append(m),
                 checkpoint_root=tmp_path / "a")
    run_training(cfg, data=dsprites, report=lambda m, ck: saved.append((m, ck)),
                 checkpoint_root=tmp_path / "b")
    first_ckpt = saved[0][1]
    assert first_ckpt is not None and (Path(first_ckpt) / "state.pt").is_file()
    resumed = []
    result = run_training(cfg, data=dsprites, report=lambda m, ck: resumed.append(m),
                          resume_from=first_ckpt, checkpoint_root=tmp_path / "c")
    assert result.step == 6
    assert _losses(resumed) == _losses(straight)[1:]


def test_checkpoint_of_another_config_is_refused(dsprites, tmp_path: Path) -> None:
    cfg = RunConfig.from_dict(tiny_run_dict())
    saved = []
    run_training(cfg, data=dsprites, report=lambda m, ck: saved.append(ck),
                 checkpoint_root=tmp_path)
    other = RunConfig.from_dict(tiny_run_dict(model={"beta": 3.0}))
    with pytest.raises(ConfigError, match="checkpoint of another configuration"):
        run_training(other, data=dsprites, resume_from=saved[0])


def test_a_diverging_run_raises_and_never_reports_nan(dsprites) -> None:
    cfg = RunConfig.from_dict(tiny_run_dict(train={"lr": 1e30, "sub_lr": 1e30, "steps": 30,
                                                   "report_every": 1, "max_grad_norm": 0.0}))
    reports = []
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        run_training(cfg, data=dsprites, report=lambda m, ck: reports.append(m))
    for r in reports:
        assert all(math.isfinite(v) for k, v in r.items() if isinstance(v, float))


def test_channels_must_match_the_data(dsprites) -> None:
    cfg = RunConfig.from_dict(tiny_run_dict(model={"image_channels": 3}))
    with pytest.raises(ConfigError, match="image_channels=3 but dataset 'dsprites' has 1"):
        run_training(cfg, data=dsprites)


def test_final_evaluation_images_and_tensorboard(dsprites, tmp_path: Path) -> None:
    cfg = RunConfig.from_dict(tiny_run_dict(
        eval={"protocol": "fast", "metrics": ["mig", "dci"]}, train={"images": True}))
    reports = []
    result = run_training(cfg, data=dsprites, report=lambda m, ck: reports.append(m),
                          artifact_dir=tmp_path)
    final = reports[-1]
    assert {"eval/mig", "eval/dci_disentanglement", "eval/dci_completeness"} <= set(final)
    assert 0.0 <= final["eval/mig"] <= 1.0
    assert result.metrics["mig"] == final["eval/mig"]
    for name in ("reconstruction.png", "traversal.png"):
        assert (tmp_path / name).stat().st_size > 500
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_fast_metrics_during_training(dsprites) -> None:
    cfg = RunConfig.from_dict(tiny_run_dict(train={"eval_every": 3},
                                            eval={"fast_metrics": ["mig"]}))
    reports = []
    run_training(cfg, data=dsprites, report=lambda m, ck: reports.append(m))
    assert "fast/mig" in reports[0] and reports[0]["step"] == 3

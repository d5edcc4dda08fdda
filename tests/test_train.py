"""The plain training loop (no Ray): determinism, exact resume, NaN handling, evaluation,
images."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
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
        run_training(c, data=dsprites, report=lambda m, ck, r=reports: r.append(m))
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


def _tiny_model(dsprites, cfg: RunConfig):
    import torch

    from models import build_model
    from tune.train.loop import model_config_for

    torch.manual_seed(0)
    return build_model(model_config_for(cfg, dsprites))


def test_a_diverged_encoder_is_caught_on_its_codes(dsprites) -> None:
    import torch

    from tune.train.evaluation import evaluate_model

    cfg = RunConfig.from_dict(tiny_run_dict())
    model = _tiny_model(dsprites, cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    for cache in (True, False):
        c = cfg.replace(eval=dataclasses.replace(cfg.eval, cache=cache))
        with pytest.raises(NonFiniteLossError, match="codes are not finite: .* NaN or infinite"):
            evaluate_model(model, dsprites, c, torch.device("cpu"), protocol="fast",
                           metrics=("mig",), seed=0)


def test_a_sampling_scale_that_overflows_is_not_finite() -> None:
    from tune.train.evaluation import _check_codes

    mu = np.zeros((4, 2), np.float32)
    _check_codes(mu, np.full((4, 2), 170.0, np.float32))  # exp(85) fits in float32
    with pytest.raises(NonFiniteLossError, match="log-variance"):
        _check_codes(mu, np.full((4, 2), 200.0, np.float32))  # exp(100) does not


def test_a_metrics_error_about_informativeness_is_not_a_divergence(dsprites,
                                                                    monkeypatch) -> None:
    # The word "informativeness" holds "inf": such an error once became a NonFiniteLossError.
    import torch

    import analysis.metrics
    from analysis.errors import AnalysisError
    from tune.train.evaluation import evaluate_model

    def refuse(*args, **kwargs):
        raise AnalysisError("dci: informativeness needs at least 2 test points")

    monkeypatch.setattr(analysis.metrics, "evaluate_encoder", refuse)
    cfg = RunConfig.from_dict(tiny_run_dict())
    with pytest.raises(AnalysisError, match="informativeness") as caught:
        evaluate_model(_tiny_model(dsprites, cfg), dsprites, cfg, torch.device("cpu"),
                       protocol="fast", metrics=("dci",), seed=0)
    assert not isinstance(caught.value, NonFiniteLossError)

"""The CUDA paths: pinned batches, non-blocking copies, bf16 on a GPU, fractional GPUs through Ray.

Skipped without CUDA (every test here is marked `cuda`); `benchmarks/gpu_check.sh` runs them with
MIPET_REQUIRE_CUDA=1, which turns the skip into a failure so that a GPU check never passes on a
machine whose GPU torch cannot see.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import tiny_run_dict

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.cuda


def _require_cuda() -> None:
    if not torch.cuda.is_available():
        if os.environ.get("MIPET_REQUIRE_CUDA") == "1":
            pytest.fail("MIPET_REQUIRE_CUDA=1 but torch sees no CUDA device")
        pytest.skip("needs a CUDA device")


@pytest.fixture(autouse=True)
def _needs_cuda() -> None:
    _require_cuda()


def _data():
    from tune.data import load_dataset

    return load_dataset("dsprites")


def test_batches_on_cuda_are_pinned_copies_equal_to_the_cpu_batches() -> None:
    data = _data()
    gpu = data.loader(32, seed=3, device="cuda")
    cpu = data.loader(32, seed=3, device="cpu")
    assert gpu._pin, "a CUDA loader builds its batches in pinned memory"
    for _ in range(3):
        a, b = next(gpu), next(cpu)
        assert a.is_cuda and a.dtype == torch.float32 and a.shape == (32, 1, 64, 64)
        torch.cuda.synchronize()  # the copy was non-blocking
        assert torch.equal(a.cpu(), b)


def test_the_encoder_on_cuda_gives_the_cpu_codes() -> None:
    from models import ModelConfig, build_model
    from tune.train.loop import Encoder

    data = _data()
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="beta_vae", latent_dim=10))
    images = data.images_at(np.arange(256))
    on_cpu = Encoder(model, torch.device("cpu"))(images)
    on_gpu = Encoder(model.to("cuda"), torch.device("cuda"), batch_size=64)(images)
    assert on_gpu.shape == (256, 10)
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_on_cuda_gives_finite_losses_and_metrics(precision: str) -> None:
    from tune.config.run import RunConfig
    from tune.train.loop import run_training

    cfg = RunConfig.from_dict(tiny_run_dict(
        model={"name": "mipet_betatcvae", "latent_dim": 10, "num_ipe": 2},
        train={"steps": 20, "batch_size": 64, "report_every": 10, "checkpoint_every": 20,
               "device": "cuda", "precision": precision},
        eval={"protocol": "fast", "metrics": ["mig"]}))
    reports: list[dict] = []
    result = run_training(cfg, report=lambda m, c: reports.append(m))
    assert result.step == 20 and np.isfinite(list(result.losses.values())).all()
    assert 0 <= result.metrics["mig"] <= 1 and result.images_per_s > 0
    assert reports[0]["train/loss"] > reports[-1]["train/loss"] * 0.2  # sane, not exploded


@pytest.fixture(scope="module")
def gpu_ray():
    """Ray with the real GPU count (the session fixture fakes 2 GPUs, which one GPU cannot
    back)."""
    _require_cuda()  # before Ray starts (this fixture is set up before the autouse one)
    from tune.sweep.driver import set_ray_env

    set_ray_env()
    import ray

    gpus = torch.cuda.device_count()
    if ray.is_initialized():
        if ray.cluster_resources().get("GPU", 0) != gpus:
            pytest.skip("a Ray with another GPU count is already running in this session")
        yield ray
        return
    ray.init(num_cpus=4, num_gpus=gpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=300_000_000, logging_level="warning")
    yield ray
    ray.shutdown()


def test_two_trials_share_one_gpu_through_ray(gpu_ray, tmp_path: Path) -> None:
    from tune.config.sweep import SweepSpec
    from tune.sweep.driver import run_sweep

    base = tiny_run_dict(train={"steps": 10, "batch_size": 64, "report_every": 5,
                                "checkpoint_every": 10},
                         eval={"protocol": "fast", "metrics": ["mig"]})
    base.pop("seed")
    spec = SweepSpec.from_dict({
        "name": "gpu", "base": base,
        "space": {"params": {"model/beta": {"low": 1.0, "high": 4.0, "log": True}}},
        "num_samples": 2, "metric": ["eval/mig"], "mode": ["max"],
        "resources": {"cpu": 1, "gpu": 0.5}, "max_concurrent": 2, "storage": str(tmp_path),
        "sampler": {"kind": "random", "seed": 0}, "max_failures": 0})
    folder = run_sweep(spec, verbose=0, analyse=False).folder
    df = pd.read_parquet(folder / "trials.parquet")
    assert len(df) == 2 and not df["failed"].any()
    assert (df["gpu_ids"].astype(str) != "").all(), "each trial was given a share of the GPU"
    assert df["eval/mig"].between(0, 1).all()

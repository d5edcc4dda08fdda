"""Shared fixtures and configs: one Ray instance per test session, the built-in dSprites, tiny
run and sweep configs."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _root_log_handlers():
    """`mipet-tune`'s `main` points the root logger at the stderr of the moment, a test's captured
    stream that is closed after the test; put the root logger back after every test, so that no
    later test logs into a closed stream."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 4 logical CPUs and 2 logical GPUs (Ray does not check them against the
    hardware), shared by every Ray test of the session."""
    from tune.sweep.driver import set_ray_env

    set_ray_env()
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",  # a private instance, never a cluster someone else started here
            num_cpus=4,
            num_gpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=300_000_000,
            logging_level="warning",
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def dsprites():
    """The built-in dSprites (generated into the cache on first use), opened once per module."""
    from tune.data import load_dataset

    return load_dataset("dsprites")


def tiny_train(steps: int, every: int, **more) -> dict:
    """The `train` section of a tiny run: `steps` steps of batch 16 on one torch thread, a report
    and a checkpoint every `every` steps, plus `more`."""
    return {"steps": steps, "batch_size": 16, "report_every": every, "checkpoint_every": every,
            "num_threads": 1, **more}


def tiny_sweep_base(steps: int, every: int, **train) -> dict:
    """A sweep's (or an ablation grid's) `base`: latent size 4, `tiny_train(steps, every,
    **train)`, MIG alone with the `fast` protocol."""
    return {"model": {"latent_dim": 4}, "train": tiny_train(steps, every, **train),
            "eval": {"protocol": "fast", "metrics": ["mig"]}}


def tiny_run_dict(**sections) -> dict:
    """A run config small enough to train in about a second on one core; each section given
    updates the default one (`train=tiny_train(30, 10)` gives a longer run)."""
    d = {
        "model": {"name": "mipet_vae", "latent_dim": 4, "num_ipe": 1},
        "data": {"name": "dsprites"},
        "train": tiny_train(6, 3, images=False),
        "eval": {"protocol": "none"},
        "seed": 0,
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            d.setdefault(key, {}).update(value)
        else:
            d[key] = value
    return d

"""Shared fixtures: one Ray instance per test session, tiny run configs."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MPLBACKEND", "Agg")


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


def tiny_run_dict(**sections) -> dict:
    """A run config small enough to train in about a second on one core."""
    d = {
        "model": {"name": "mipet_vae", "latent_dim": 4, "num_ipe": 1},
        "data": {"name": "dsprites"},
        "train": {"steps": 6, "batch_size": 16, "report_every": 3, "checkpoint_every": 3,
                  "images": False, "num_threads": 1},
        "eval": {"protocol": "none"},
        "seed": 0,
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            d.setdefault(key, {}).update(value)
        else:
            d[key] = value
    return d

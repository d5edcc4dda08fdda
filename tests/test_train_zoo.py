"""Every objective of the zoo, with and without MIPET, through the plain training loop: it trains
and lowers its loss, and a run resumed from a checkpoint (adversary and its optimizer included)
goes on exactly as the straight run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import tiny_run_dict, tiny_train

from models._facts import MODEL_FACTS
from tune.config.run import RunConfig
from tune.train.checkpoint import load_state
from tune.train.loop import run_training

ZOO = sorted(n for n, f in MODEL_FACTS.items() if f.objective not in ("beta_vae", "betatcvae",
                                                                       "commutative")
             and not f.needs_labels)  # the conditional models: tests/test_conditional.py


def _config(name: str) -> RunConfig:
    model = {"name": name, "latent_dim": 4, "num_ipe": 1 if name.startswith("mipet_") else 0}
    if "annealed" in name:
        model.update(capacity_steps=20, capacity_max=5.0)  # the capacity moves within the run
    return RunConfig.from_dict(tiny_run_dict(model=model, train=tiny_train(30, 10, lr=1e-3)))


def test_the_zoo_is_every_new_model() -> None:
    assert len(ZOO) == 11 and "vae" in ZOO and "mipet_info_vae" in ZOO


def train_and_resume(cfg: RunConfig, data, tmp_path: Path) -> tuple[list[dict], dict]:
    """Train `cfg` (30 steps, reports every 10) straight, check that its loss went down and that
    a run resumed from the step-20 checkpoint ends with the same losses; the straight run's
    reports and the checkpoint's state."""
    straight: list[tuple[dict, Path | None]] = []
    run_training(cfg, data=data, report=lambda m, ck: straight.append((m, ck)),
                 checkpoint_root=tmp_path / "a")
    losses = [m["train/loss"] for m, _ in straight]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses
    ckpt = straight[1][1]  # step 20
    assert ckpt is not None and straight[1][0]["step"] == 20
    resumed: list[dict] = []
    run_training(cfg, data=data, report=lambda m, ck: resumed.append(m), resume_from=ckpt,
                 checkpoint_root=tmp_path / "b")
    keys = [k for k in straight[-1][0] if k.startswith("train/")]
    assert {k: resumed[-1][k] for k in keys} == {k: straight[-1][0][k] for k in keys}
    return [m for m, _ in straight], load_state(Path(ckpt), filename="state.pt")


@pytest.mark.parametrize("name", ZOO)
def test_trains_lowers_its_loss_and_resumes_exactly(name: str, dsprites, tmp_path: Path) -> None:
    reports, state = train_and_resume(_config(name), dsprites, tmp_path)
    factor = "factor" in name
    assert set(state["adversaries"]) == ({"factor"} if factor else set())
    if factor:
        assert "train/factor_disc" in reports[-1]
        assert any(k.startswith("adversaries.factor.") for k in state["model"])


def test_stacked_factor_term_trains_its_discriminator(dsprites, tmp_path: Path) -> None:
    d = _config("dip_vae_ii").to_dict()
    d["model"]["loss_terms"] = ["factor_vae"]
    d["train"]["steps"] = 10
    reports: list[dict] = []
    run_training(RunConfig.from_dict(d), data=dsprites, report=lambda m, ck: reports.append(m),
                 checkpoint_root=tmp_path)
    assert {"train/factor_disc", "train/factor_tc", "train/dip"} <= set(reports[-1])

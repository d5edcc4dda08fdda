"""The `zoo` preset: each objective with and without MIPET, each knob only where it is read."""

from __future__ import annotations

import optuna
import pytest

import models
from models import ConfigError
from models._facts import MODEL_FACTS
from search_spaces import load_space
from search_spaces._space import SearchSpace

RANGES = {"model/beta": (1.0, 16.0), "model/capacity_max": (5.0, 100.0),
          "model/factor_gamma": (10.0, 100.0), "model/dip_lambda_od": (1.0, 50.0)}
BETA_TC = {"betatcvae", "mipet_betatcvae"}  # the study's beta-TCVAE range is 1-10, not 1-16


def expected_range(path: str, name: str) -> tuple[float, float]:
    return (1.0, 10.0) if path == "model/beta" and name in BETA_TC else RANGES[path]


def test_zoo_preset_has_every_unsupervised_objective_with_and_without_mipet() -> None:
    space = load_space("zoo")
    params = {p.path: p for p in space.params}
    names = set(params["model/name"].choices)
    want = {n for n, f in MODEL_FACTS.items()
            if f.objective != "commutative" and not f.needs_labels}  # cvae, ifcvae: labels
    assert names == want and len(names) == 15
    for path in RANGES:
        readers = {n for n in names if path[6:] in models.used_fields(n)}
        alts = space.alternatives(path)
        assert {n for p in alts for n in p.when["model/name"]} == readers, path
        for name in readers:
            p = space.active(path, {"model/name": name})
            assert p is not None and (p.low, p.high) == expected_range(path, name), (path, name)
    assert len(space.alternatives("model/beta")) == 2
    assert set(params["model/num_ipe"].when["model/name"]) == {n for n in names
                                                              if n.startswith("mipet_")}


def test_zoo_asks_beta_in_1_to_10_for_betatcvae_and_1_to_16_for_beta_vae() -> None:
    space = load_space("zoo")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    betas: dict[str, list[float]] = {}
    for _ in range(300):
        trial = study.ask()
        config = space.suggest(trial)
        name = config["model/name"]
        if "model/beta" not in config:
            continue
        dist = trial.distributions["model/beta"]  # what Optuna was asked: the path's name
        assert (dist.low, dist.high) == expected_range("model/beta", name), name
        betas.setdefault(name, []).append(config["model/beta"])
    assert set(betas) == {"beta_vae", "mipet_vae", "betatcvae", "mipet_betatcvae"}
    for name in BETA_TC:
        assert all(1.0 <= b <= 10.0 for b in betas[name]), name
    above_10 = [b for n in ("beta_vae", "mipet_vae") for b in betas[n] if b > 10.0]
    assert above_10 and all(b <= 16.0 for n in ("beta_vae", "mipet_vae") for b in betas[n])


def test_zoo_corners_put_each_beta_range_under_its_models() -> None:
    betas: dict[str, set[float]] = {}
    for corner in load_space("zoo").corners():
        if "model/beta" in corner:
            betas.setdefault(corner["model/name"], set()).add(corner["model/beta"])
    assert betas == {"beta_vae": {1.0, 16.0}, "mipet_vae": {1.0, 16.0},
                     "betatcvae": {1.0, 10.0}, "mipet_betatcvae": {1.0, 10.0}}


def test_zoo_suggests_each_knob_only_for_its_readers() -> None:
    space = load_space("zoo")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        config = space.suggest(study.ask())
        name = config["model/name"]
        seen.add(name)
        for path in RANGES:
            assert (path in config) == (path[6:] in models.used_fields(name)), (name, path)
        models.ModelConfig.from_dict({k[6:]: v for k, v in config.items()
                                      if k.startswith("model/")})
    assert len(seen) >= 12


def test_stacked_knobs_are_read_when_loss_terms_are_fixed() -> None:
    params = {"model/name": {"choices": ["vae", "beta_vae"]},
              "model/factor_gamma": {"low": 10.0, "high": 100.0}}
    with pytest.raises(ConfigError, match="model/factor_gamma: the models vae, beta_vae ignore"):
        SearchSpace.from_dict({"params": params}).validate()
    stacked = {"params": params, "fixed": {"model/loss_terms": ["factor_vae"]}}
    SearchSpace.from_dict(stacked).validate()  # read by both once factor_vae is stacked

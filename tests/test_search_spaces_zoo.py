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


def test_zoo_preset_has_every_unsupervised_objective_with_and_without_mipet() -> None:
    space = load_space("zoo")
    params = {p.path: p for p in space.params}
    names = set(params["model/name"].choices)
    want = {n for n, f in MODEL_FACTS.items()
            if f.objective != "commutative" and not f.needs_labels}  # cvae, ifcvae: labels
    assert names == want and len(names) == 15
    for path, (low, high) in RANGES.items():
        assert (params[path].low, params[path].high) == (low, high)
        readers = set(params[path].when["model/name"])
        assert readers == {n for n in names if path[6:] in models.used_fields(n)}, path
    assert set(params["model/num_ipe"].when["model/name"]) == {n for n in names
                                                              if n.startswith("mipet_")}


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

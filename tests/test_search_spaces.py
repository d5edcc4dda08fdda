"""search_spaces: presets, validation at load time, define-by-run with Optuna, round trips."""

from __future__ import annotations

import math
import pickle
import sys
import textwrap
from pathlib import Path
from typing import Any

import optuna
import pytest

from models.errors import ConfigError
from models.strict_yaml import loads
from search_spaces import (
    DefineByRun,
    FrozenMap,
    Param,
    SearchSpace,
    define_by_run,
    load_space,
    preset_names,
)
from tune.config.run import RunConfig, known_paths, set_path

optuna.logging.set_verbosity(optuna.logging.WARNING)


def build(flat: dict[str, Any]) -> RunConfig:
    """What the sweep does with a trial's "/"-path dict."""
    nested: dict[str, Any] = {}
    for path, value in flat.items():
        set_path(nested, path, value)
    return RunConfig.from_dict(nested)


def load(source: Any, **kwargs: Any) -> SearchSpace:
    return load_space(source, known_paths=known_paths(), check=build, **kwargs)


def value_at(cfg: RunConfig, path: str) -> Any:
    node: Any = cfg
    for part in path.split("/"):
        node = getattr(node, part)
    return node


# ---- presets ---------------------------------------------------------------------------------
def test_the_presets_are_there() -> None:
    assert {"paper", "quick", "ablation_k", "baselines", "beta_grid"} <= set(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_every_corner_of_every_preset_builds_a_run_config(name: str) -> None:
    space = load(name)
    corners = space.corners()
    assert corners
    for corner in corners:
        cfg = build(corner)
        for path, value in corner.items():
            got = value_at(cfg, path)
            assert got == (tuple(value) if isinstance(value, list) else value), path
    # every value of every parameter is reached at some corner
    for p in space.params:
        reached = [c[p.path] for c in corners if p.path in c]
        assert set(p.corner_values()) <= set(reached), p.path


def test_paper_preset_holds_the_paper_knobs() -> None:
    space = load("paper")
    params = {p.path: p for p in space.params}
    assert params["model/name"].choices == ("mipet_vae", "mipet_betatcvae", "mipet_commutative")
    beta = params["model/beta"]
    assert (beta.kind, beta.low, beta.high, beta.log) == ("float", 1.0, 16.0, True)
    assert set(beta.when["model/name"]) == {"mipet_vae", "mipet_betatcvae"}
    k = params["model/num_ipe"]
    assert (k.kind, k.low, k.high) == ("int", 1, 5)
    assert params["model/hy_rec"].when["model/name"] == ("mipet_commutative",)
    assert params["model/hy_rec"].log
    assert params["train/weight_decay"].choices == (0.0, 1e-4)
    assert dict(space.fixed) == {
        "model/latent_dim": 10,
        "model/alpha": 1.0,
        "model/gamma": 1.0,
        "train/optimizer": "adam",
        "train/lr": 4e-4,
        "train/sub_lr": 4e-4,
        "train/batch_size": 256,
    }
    corners = space.corners()
    # 2 models x (beta 2 x K 2 x wd 2) + commutative x (hy_rec 2 x wd 2)
    assert len(corners) == 20
    for c in corners:
        assert ("model/hy_rec" in c) == (c["model/name"] == "mipet_commutative")
        assert ("model/beta" in c) == (c["model/name"] != "mipet_commutative")


def test_quick_preset_is_small_and_fast() -> None:
    space = load("quick")
    fixed = dict(space.fixed)
    # the budget (steps, protocol) is the sweep preset's, tested in test_config
    assert "train/steps" not in fixed and "eval/protocol" not in fixed
    assert fixed["model/latent_dim"] == 10
    assert len(space.corners()) <= 8


def test_ablation_k_is_a_grid() -> None:
    grid = load("ablation_k").grid()
    assert len(grid) == 12
    assert sorted({(g["model/name"], g["model/num_ipe"]) for g in grid}) == sorted(
        (m, k) for m in ("mipet_betatcvae", "mipet_vae") for k in range(6)
    )
    for g in grid:
        assert build(g).model.num_ipe == g["model/num_ipe"]


def test_grid_refuses_a_continuous_range() -> None:
    with pytest.raises(ConfigError, match="model/beta is a continuous range"):
        load("paper").grid()


# ---- validation ------------------------------------------------------------------------------
NAMES = {"choices": ["mipet_vae", "mipet_betatcvae", "mipet_commutative"]}
BETA_WHEN = {"model/name": ["mipet_vae", "mipet_betatcvae"]}


@pytest.mark.parametrize(
    ("params", "fixed", "match"),
    [
        ({"model/betta": {"low": 1.0, "high": 4.0}}, {}, "did you mean 'model/beta'"),
        ({"train/weight_decy": {"choices": [0.0]}}, {}, "did you mean 'train/weight_decay'"),
        ({}, {"train/lrr": 1e-3}, "did you mean 'train/lr'"),
        ({"model/beta": {"low": 4.0, "high": 4.0}}, {}, "model/beta: empty range"),
        ({"model/beta": {"low": 8.0, "high": 2.0}}, {}, "empty range: low=8 must be below high=2"),
        ({"model/beta": {"low": 0.0, "high": 4.0, "log": True}}, {}, "log range must stay above"),
        ({"model/hy_rec": {"low": -1.0, "high": 1.0, "log": True}}, {}, "above zero, got low=-1"),
        ({"model/num_ipe": {"low": 0, "high": 5, "type": "int", "log": True}}, {}, "above zero"),
        (
            {"model/num_ipe": {"low": 1, "high": 6, "type": "int", "step": 2}},
            {},
            r"step 2 does not fit .* use high: 5",
        ),
        ({"model/beta": {"low": 1.0, "high": 2.0, "step": 0.3}}, {}, "step 0.3 does not fit"),
        ({"model/num_ipe": {"low": 1.5, "high": 5, "type": "int"}}, {}, "whole number"),
        (
            {"model/beta": {"low": 1.0, "high": 4.0, "step": 1.0, "log": True}},
            {},
            "cannot be combined with `log: true`",
        ),
        ({"model/beta": {"choices": []}}, {}, "non-empty list"),
        ({"model/beta": {"choices": [1.0, 2.0, 1.0]}}, {}, "choice 1.0 is listed twice"),
        ({"model/beta": {"choices": [1.0], "low": 1.0}}, {}, "cannot be combined with low"),
        ({"model/beta": {"lo": 1.0, "high": 4.0}}, {}, "unknown key 'lo'; did you mean 'low'"),
        ({"model/beta": {"high": 4.0}}, {}, "needs `low` and `high`"),
        ({"model/beta": 4.0}, {}, "a constant goes under `fixed:`"),
        ({"model/name": {"choices": ["mipet_vae", "mipet_vea"]}}, {}, "did you mean 'mipet_vae'"),
        # a parameter the model ignores
        (
            {"model/hy_rec": {"low": 0.01, "high": 1.0}},
            {"model/name": "mipet_vae"},
            "model/hy_rec: mipet_vae ignores it",
        ),
        (
            {"model/name": NAMES, "model/beta": {"low": 1.0, "high": 4.0}},
            {},
            (
                r"model/beta: mipet_commutative ignores it; add `when: \{model/name: "
                r"\[mipet_vae, mipet_betatcvae\]\}`"
            ),
        ),
        (
            {
                "model/name": NAMES,
                "model/hy_rec": {"low": 0.01, "high": 1.0, "when": {"model/name": "mipet_vae"}},
            },
            {},
            "model/hy_rec: mipet_vae ignores it",
        ),
        (
            {
                "model/name": {"choices": ["mipet_vae", "beta_vae"]},
                "model/num_ipe": {"choices": [1, 2]},
            },
            {},
            "beta_vae ignores it",
        ),
        # conditions
        (
            {
                "model/name": NAMES,
                "model/beta": {"low": 1.0, "high": 4.0, "when": {"model/nmae": "mipet_vae"}},
            },
            {},
            "when 'model/nmae': no such parameter or fixed value; did you mean 'model/name'",
        ),
        (
            {
                "model/name": NAMES,
                "model/beta": {"low": 1.0, "high": 4.0, "when": {"model/name": "mipet_vea"}},
            },
            {},
            "when model/name = 'mipet_vea': model/name never takes that value",
        ),
        (
            {
                "model/beta": {"low": 1.0, "high": 4.0, "when": {"model/name": "mipet_vae"}},
                "model/name": NAMES,
            },
            {},
            "model/name must be declared before model/beta",
        ),
        (
            {"model/beta": {"low": 1.0, "high": 4.0, "when": {"model/name": "beta_vae"}}},
            {"model/name": "mipet_vae"},
            "never true, model/name is fixed to mipet_vae",
        ),
        (
            {
                "model/beta": {"low": 1.0, "high": 4.0},
                "model/alpha": {"low": 1.0, "high": 4.0, "when": {"model/beta": 2.0}},
            },
            {"model/name": "mipet_betatcvae"},
            "needs a categorical or int parameter",
        ),
        (
            {
                "model/num_ipe": {"low": 1, "high": 3, "type": "int"},
                "model/beta": {"low": 1.0, "high": 4.0, "when": {"model/num_ipe": 4}},
            },
            {"model/name": "mipet_vae"},
            r"model/num_ipe never takes that value; its domain is int \[1, 3\]",
        ),
        # duplicates and types
        (
            {"model/beta": {"low": 1.0, "high": 4.0}},
            {"model/beta": 2.0},
            "both a parameter and a fixed value",
        ),
        (
            {"model/beta": {"low": 1.0, "high": 4.0}, "model.beta": {"low": 1.0, "high": 2.0}},
            {},
            "'model/beta' is declared twice",
        ),
        (
            {"model/num_ipe": {"low": 1, "high": 5}},
            {"model/name": "mipet_vae"},
            "model/num_ipe takes whole numbers; declare the range with `type: int`",
        ),
        # corners that the run config rejects
        (
            {"model/name": NAMES, "model/latent_dim": {"choices": [4, 10]}},
            {},
            r"\{model/name='mipet_commutative', model/latent_dim=4\} fails: "
            r"model.latent_dim must equal",
        ),
        ({"train/weight_decay": {"low": -1.0, "high": 0.0}}, {}, "weight_decay must be >= 0"),
        (
            {"train/steps": {"low": 100.0, "high": 200.0}},
            {},
            r"train/steps=13\d\.\d+ \(inside the range\) fails: "
            r".*declare the range with `type: int`",
        ),
        (
            {"train/optimizer": {"choices": ["adam", "adamw"]}},
            {},
            "train/optimizer must be one of",
        ),
    ],
)
def test_bad_spaces_fail_at_load_time(params: dict, fixed: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load({"name": "bad", "params": params, "fixed": fixed})


def test_conditions_are_checked_only_against_the_model_they_name() -> None:
    space = load(
        {
            "params": {
                "model/name": NAMES,
                "model/beta": {
                    "low": 1.0,
                    "high": 4.0,
                    "when": {"model/name": BETA_WHEN["model/name"]},
                },
                "model/hy_rec": {
                    "low": 0.01,
                    "high": 1.0,
                    "when": {"model/name": "mipet_commutative"},
                },
            }
        }
    )
    assert [p.path for p in space.params] == ["model/name", "model/beta", "model/hy_rec"]


def test_model_names_from_the_caller_are_checked() -> None:
    space = {"params": {"model/hy_rec": {"low": 0.01, "high": 1.0}}}
    assert load(space, model_names=["mipet_commutative"]).params[0].path == "model/hy_rec"
    with pytest.raises(ConfigError, match="model/hy_rec: mipet_betatcvae ignores it"):
        load(space, model_names=["mipet_betatcvae"])


def test_unknown_preset_and_missing_file() -> None:
    with pytest.raises(ConfigError, match="unknown search space 'quik'; did you mean 'quick'"):
        load_space("quik")
    with pytest.raises(ConfigError, match="no such search-space file"):
        load_space("no/such/space.yaml")
    with pytest.raises(ConfigError, match="cannot import 'no_such_module_x'"):
        load_space("no_such_module_x:SPACE")


def test_yaml_duplicated_keys_and_syntax_errors(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(
        "params:\n  model/beta: {low: 1.0, high: 4.0}\n  model/beta: {choices: [1.0]}\n"
    )
    with pytest.raises(
        ConfigError, match=r"duplicated key 'model/beta' at line 3 \(first at line 2\)"
    ):
        load_space(path)
    path.write_text("params:\n  model/beta: {low: 1.0, high: 4.0\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: not valid YAML \(line 3\)"):
        load_space(path)
    path.write_text("parms: {}\n")
    with pytest.raises(ConfigError, match="unknown key 'parms'; did you mean 'params'"):
        load_space(path)


def test_numbers_read_as_strings_by_plain_pyyaml_become_floats() -> None:
    import yaml

    data = yaml.safe_load(
        "params:\n  train/weight_decay: {choices: [0.0, 1e-4]}\n"
        "  model/beta: {low: 1e0, high: 1e1}\nfixed:\n  train/lr: 4e-4\n"
    )
    assert data["fixed"]["train/lr"] == "4e-4"  # PyYAML's YAML 1.1
    space = load(data)
    assert space.params[0].choices == (0.0, 1e-4)
    assert (space.params[1].low, space.params[1].high) == (1.0, 10.0)
    assert space.fixed["train/lr"] == 4e-4


def test_yaml_reads_1e_minus_4_as_a_float() -> None:
    data = loads("a: 1e-4\nb: [0.0, 1e-4]\nc: 4.0e-4\nd: 1e4\ne: '1e-4'\n", "test")
    assert data == {"a": 1e-4, "b": [0.0, 1e-4], "c": 4e-4, "d": 1e4, "e": "1e-4"}
    assert isinstance(data["a"], float) and isinstance(data["d"], float)


# ---- Optuna ----------------------------------------------------------------------------------
def _check_trial_config(space: SearchSpace, config: dict[str, Any], trial_params: dict) -> None:
    model = config["model/name"]
    assert ("model/hy_rec" in config) == (model == "mipet_commutative")
    assert ("model/beta" in config) == (model != "mipet_commutative")
    assert ("model/num_ipe" in config) == (model != "mipet_commutative")
    # Optuna records exactly the suggested parameters
    assert set(trial_params) == set(config) - set(space.fixed)
    assert config["train/lr"] == 4e-4 and config["train/batch_size"] == 256
    if "model/beta" in config:
        assert 1.0 <= config["model/beta"] <= 16.0
    if "model/num_ipe" in config:
        assert isinstance(config["model/num_ipe"], int) and 1 <= config["model/num_ipe"] <= 5
    if "model/hy_rec" in config:
        assert 0.01 <= config["model/hy_rec"] <= 1.0
    build(config)


def test_define_by_run_suggests_conditional_params_only_where_they_belong() -> None:
    space = load("paper")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    models_seen = set()
    for _ in range(24):
        trial = study.ask()
        config = space.suggest(trial)
        _check_trial_config(space, config, trial.params)
        models_seen.add(config["model/name"])
        study.tell(trial, 0.0)
    assert models_seen == {"mipet_vae", "mipet_betatcvae", "mipet_commutative"}


def test_define_by_run_pickles_and_runs_under_study_optimize() -> None:
    fn = define_by_run(load("paper"))
    blob = pickle.dumps(fn)
    again = pickle.loads(blob)
    assert isinstance(again, DefineByRun) and again == fn and again.space == fn.space
    configs: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        config = again(trial)
        configs.append((config, dict(trial.params)))
        return float(config.get("model/beta", 1.0))

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=4))
    study.optimize(objective, n_trials=12)
    assert len(configs) == 12 and all(t.state.name == "COMPLETE" for t in study.trials)
    for config, params in configs:
        _check_trial_config(again.space, config, params)


def test_ray_optuna_search_takes_the_define_by_run_space(tmp_path: Path) -> None:
    pytest.importorskip("ray.tune.search.optuna")
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(define_by_run(load("paper")), metric="loss", mode="min", seed=0)
    configs = [searcher.suggest(f"t{i}") for i in range(8)]
    for config in configs:  # Ray unflattens the "/"-paths into the nested run config
        cfg = RunConfig.from_dict(config)
        assert ("hy_rec" in config["model"]) == (cfg.model.name == "mipet_commutative")
        assert config["train"]["lr"] == 4e-4
    searcher.save(str(tmp_path / "searcher.pkl"))  # Ray's checkpoint: plain pickle
    assert (tmp_path / "searcher.pkl").stat().st_size > 0


def test_distributions_serialise_with_optuna() -> None:
    space = load("paper")
    dists = space.distributions()
    assert list(dists) == [p.path for p in space.params]
    assert isinstance(dists["model/num_ipe"], optuna.distributions.IntDistribution)
    beta = dists["model/beta"]
    assert isinstance(beta, optuna.distributions.FloatDistribution) and beta.log
    for path, dist in dists.items():
        text = optuna.distributions.distribution_to_json(dist)
        assert optuna.distributions.json_to_distribution(text) == dist, path


# ---- round trips and other sources -----------------------------------------------------------
@pytest.mark.parametrize("name", preset_names())
def test_yaml_round_trip(name: str, tmp_path: Path) -> None:
    space = load_space(name)
    assert SearchSpace.from_dict(space.to_dict()) == space
    path = tmp_path / f"{name}.yaml"
    path.write_text(space.to_yaml())
    again = load(path)
    assert again == space and again.to_dict() == space.to_dict()
    assert pickle.loads(pickle.dumps(space)) == space


def test_a_python_module_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_spaces_mod.py").write_text(
        textwrap.dedent("""
        from optuna.distributions import (
            CategoricalDistribution, FloatDistribution, IntDistribution)
        from search_spaces import SearchSpace

        BETA_SPACE = {
            "model/beta": FloatDistribution(1.0, 16.0, log=True),
            "model/num_ipe": IntDistribution(1, 5),
            "train/weight_decay": CategoricalDistribution([0.0, 1e-4]),
        }
        AS_DATA = {"params": {"model/beta": {"low": 1.0, "high": 2.0}}}
        OBJECT = SearchSpace.from_dict(AS_DATA, name="object")

        def FUNCTION(trial):
            return {}
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    space = load("my_spaces_mod:BETA_SPACE")
    assert [p.kind for p in space.params] == ["float", "int", "categorical"]
    assert space.params[0].log and space.name == "my_spaces_mod:BETA_SPACE"
    assert load("my_spaces_mod:AS_DATA").params[0].high == 2.0
    assert load("my_spaces_mod:OBJECT").name == "object"
    with pytest.raises(ConfigError, match="FUNCTION is a function; give the space as data"):
        load("my_spaces_mod:FUNCTION")
    with pytest.raises(ConfigError, match="has no 'BETA_SPAC'; did you mean 'BETA_SPACE'"):
        load("my_spaces_mod:BETA_SPAC")
    sys.modules.pop("my_spaces_mod", None)


def test_fixed_accepts_nested_sections_and_lists() -> None:
    space = load({"params": {}, "fixed": {"train": {"lr": 1e-3}, "eval/metrics": ["mig", "dci"]}})
    assert dict(space.fixed) == {"train/lr": 1e-3, "eval/metrics": ("mig", "dci")}
    config = space.suggest(optuna.create_study().ask())
    assert config == {"train/lr": 1e-3, "eval/metrics": ["mig", "dci"]}
    assert build(config).eval.metrics == ("mig", "dci")


def test_corners_cover_each_value_when_the_product_is_too_big() -> None:
    params = {
        f"train/{k}": {"low": 1, "high": 9, "type": "int"}
        for k in ("warmup_steps", "report_every", "checkpoint_every", "eval_every")
    }
    params["train/lr"] = {"choices": [1e-4, 2e-4, 3e-4]}
    space = load({"params": params})
    assert len(space.corners()) == 2**4 * 3
    few = space.corners(limit=10)
    assert len(few) == 3  # stepped together: the longest list sets the count
    for p in space.params:
        assert {c[p.path] for c in few} == set(p.corner_values())


def test_describe_and_paths() -> None:
    space = load_space("paper")
    text = space.describe()
    assert "search space 'paper': 5 parameters, 7 fixed" in text
    assert "model/hy_rec" in text and "model/name = mipet_commutative" in text
    assert "float [1, 16] log" in text and "train/lr         = 0.0004" in text
    assert space.paths[:5] == (
        "model/name",
        "model/beta",
        "model/num_ipe",
        "model/hy_rec",
        "train/weight_decay",
    )
    assert "train/batch_size" in space.paths


def test_interior_value_is_inside_and_not_whole() -> None:
    for p in load_space("paper").params:
        if p.kind == "float":
            v = p.interior_value()
            assert p.low < v < p.high and not float(v).is_integer() and math.isfinite(v)


# ---- alternatives: one path, a range per condition -------------------------------------------
TC = ["betatcvae", "mipet_betatcvae"]
VAE = ["beta_vae", "mipet_vae"]
FOUR = {"choices": VAE + TC}
BETA_VAE = {"low": 1.0, "high": 16.0, "log": True, "when": {"model/name": VAE}}
ON_TC = {"model/name": TC}
BETA_TC = {"low": 1.0, "high": 10.0, "log": True, "when": ON_TC}


def alternatives_space(**params: Any) -> dict[str, Any]:
    return {"params": {"model/name": FOUR, "model/beta": [BETA_VAE, BETA_TC], **params}}


def test_alternatives_suggest_only_the_active_range_under_the_path_name() -> None:
    space = load(alternatives_space())
    assert [(p.path, p.high) for p in space.params[1:]] == [
        ("model/beta", 16.0),
        ("model/beta", 10.0),
    ]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    highs = set()
    for _ in range(40):
        trial = study.ask()
        config = space.suggest(trial)
        dist = trial.distributions["model/beta"]
        assert dist.high == (10.0 if config["model/name"] in TC else 16.0)
        assert list(trial.params) == ["model/name", "model/beta"]
        highs.add(dist.high)
        build(config)
    assert highs == {10.0, 16.0}


@pytest.mark.parametrize(
    "beta, match",
    [
        ([BETA_VAE, {**BETA_TC, "when": None}], r"model/beta: alternative 2 has no `when`"),
        (
            [BETA_VAE, {**BETA_TC, "when": {"model/name": ["betatcvae", "mipet_vae"]}}],
            r"model/beta: alternatives 1 and 2 can be active in the same trial \(both apply "
            r"when model/name in \{mipet_vae\}\)",
        ),
        (
            [BETA_VAE, {**BETA_TC, "when": {"train/weight_decay": 0.0}}],
            r"model/beta: alternatives 1 and 2 can be active in the same trial \(their `when`s "
            "share no parent",
        ),
        (
            [BETA_VAE, {**BETA_TC, "log": False}],
            r"model/beta: alternative 2 has log: false but alternative 1 has log: true; "
            "alternatives must agree on `log`",
        ),
        (
            [BETA_VAE, {"low": 1, "high": 10, "type": "int", "log": True, "when": ON_TC}],
            "model/beta: alternative 2 is an int range but alternative 1 is a float range",
        ),
        (
            [{"choices": [1.0, 4.0], "when": {"model/name": VAE}},
             {"choices": [1.0, 2.0], "when": {"model/name": TC}}],
            r"model/beta: alternative 2 has choices \[1, 2\] but alternative 1 has \[1, 4\]; "
            "alternatives need the same choices",
        ),
        ([BETA_VAE], "model/beta: a list with a single alternative; declare it as one mapping"),
        ([], "model/beta: an empty list declares nothing; declare it as one mapping"),
        ([BETA_VAE, 4.0], "model/beta: alternative 2 is 4.0, not a mapping"),
        (
            [BETA_VAE, {**BETA_TC, "low": 0.0}],
            r"model/beta \(alternative 2\): a log range must stay above zero",
        ),
        (
            [BETA_VAE, {**BETA_TC, "when": {"model/name": ["betatcvae", "factor_vae"]}}],
            "model/beta: when model/name = 'factor_vae': model/name never takes that value",
        ),
    ],
)
def test_bad_alternatives_fail_at_load_time_in_one_line(beta: list, match: str) -> None:
    params = {"model/name": FOUR, "train/weight_decay": {"choices": [0.0, 1e-4]},
              "model/beta": beta}
    with pytest.raises(ConfigError, match=match) as err:
        load({"params": params})
    assert "\n" not in str(err.value)


def test_alternatives_read_by_no_model_they_apply_to_fail() -> None:
    names = {"choices": VAE + TC + ["factor_vae"]}
    beta = [{**BETA_VAE, "when": {"model/name": VAE + ["factor_vae"]}}, BETA_TC]  # not the last
    with pytest.raises(ConfigError, match=r"model/beta: factor_vae ignores it; add `when: "
                                          r"\{model/name: \[beta_vae, mipet_vae\]\}`"):
        load({"params": {"model/name": names, "model/beta": beta}})


def test_a_path_declared_twice_without_conditions_is_refused() -> None:
    name = Param("model/name", "categorical", choices=("beta_vae", "betatcvae"))
    beta = Param("model/beta", "float", low=1.0, high=16.0)
    with pytest.raises(ConfigError, match="parameter 'model/beta' is declared twice; declare it "
                                          "once, or give each alternative a `when`"):
        SearchSpace((name, beta, beta))
    apart = [Param("model/beta", "float", low=1.0, high=h, when=FrozenMap({"model/name": (n,)}))
             for h, n in ((16.0, "beta_vae"), (10.0, "betatcvae"))]
    other = Param("train/lr", "float", low=1e-4, high=1e-3)
    with pytest.raises(ConfigError, match="'model/beta' is declared twice apart; declare "
                                          "alternatives of a path one after another"):
        SearchSpace((name, apart[0], other, apart[1]))
    assert len(SearchSpace((name, *apart, other)).alternatives("model/beta")) == 2


def test_an_alternative_that_can_never_apply_is_refused_beside_one_that_can() -> None:
    params = {
        "model/name": FOUR,
        "train/weight_decay": {"choices": [0.0, 1e-4], "when": {"model/name": VAE}},
        "model/beta": [BETA_VAE, {**BETA_TC, "when": {**ON_TC, "train/weight_decay": 0.0}}],
    }
    with pytest.raises(ConfigError, match=r"model/beta: its conditions \(model/name in "
                                          r"\{betatcvae, mipet_betatcvae\} and "
                                          r"train/weight_decay = 0\) can never all hold"):
        SearchSpace.from_dict({"params": params})


def test_alternatives_round_trip_through_to_dict_and_yaml(tmp_path: Path) -> None:
    space = load(alternatives_space())
    data = space.to_dict()
    beta = data["params"]["model/beta"]
    assert isinstance(beta, list) and [b["high"] for b in beta] == [16.0, 10.0]
    assert SearchSpace.from_dict(data) == space
    path = tmp_path / "alt.yaml"
    path.write_text(space.to_yaml())
    assert load(path).params == space.params
    assert pickle.loads(pickle.dumps(space)) == space


def test_grid_and_corners_enumerate_each_alternative_under_its_own_condition() -> None:
    stepped = [{"low": 1.0, "high": 16.0, "step": 5.0, "when": {"model/name": VAE}},
               {"low": 1.0, "high": 10.0, "step": 3.0, "when": {"model/name": TC}}]
    space = load({"params": {"model/name": FOUR, "model/beta": stepped}})

    def by_model(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for row in rows:
            out.setdefault(row["model/name"], []).append(row["model/beta"])
        return out

    grid = by_model(space.grid())
    assert grid == {"beta_vae": [1.0, 6.0, 11.0, 16.0], "mipet_vae": [1.0, 6.0, 11.0, 16.0],
                    "betatcvae": [1.0, 4.0, 7.0, 10.0], "mipet_betatcvae": [1.0, 4.0, 7.0, 10.0]}
    corners = by_model(space.corners())
    assert corners == {"beta_vae": [1.0, 16.0], "mipet_vae": [1.0, 16.0],
                       "betatcvae": [1.0, 10.0], "mipet_betatcvae": [1.0, 10.0]}


def test_a_condition_on_a_path_with_alternatives_sees_every_alternative() -> None:
    params = {
        "model/name": {"choices": ["mipet_vae", "mipet_betatcvae"]},
        "model/num_ipe": [
            {"low": 1, "high": 3, "type": "int", "when": {"model/name": "mipet_vae"}},
            {"low": 2, "high": 5, "type": "int", "when": {"model/name": "mipet_betatcvae"}},
        ],
        "model/beta": {"low": 1.0, "high": 4.0, "when": {"model/num_ipe": 5}},
    }
    space = load({"params": params})  # 5 is only in the second alternative's range
    with_beta = [c["model/name"] for c in space.corners() if "model/beta" in c]
    assert with_beta == ["mipet_betatcvae"] * 2
    params["model/beta"] = {"low": 1.0, "high": 4.0, "when": {"model/num_ipe": 6}}
    with pytest.raises(ConfigError, match=r"model/num_ipe never takes that value; its domain is "
                                          r"int \[1, 3\] or int \[2, 5\]"):
        load({"params": params})


def test_describe_lists_each_alternative_with_its_condition() -> None:
    text = load(alternatives_space()).describe()
    assert "2 parameters, 0 fixed; model/beta (2 alternatives)" in text
    lines = [line.split() for line in text.splitlines() if line.strip().startswith("model/beta")]
    assert [line[:5] for line in lines] == [["model/beta", "float", "[1,", "16]", "log"],
                                            ["model/beta", "float", "[1,", "10]", "log"]]
    assert text.count("model/name in {betatcvae, mipet_betatcvae}") == 1


def test_distributions_of_alternatives_are_their_union_and_optuna_accepts_it() -> None:
    space = load(alternatives_space())
    union = space.distributions()["model/beta"]
    assert union == optuna.distributions.FloatDistribution(1.0, 16.0, log=True)
    assert list(space.distributions()) == ["model/name", "model/beta"]
    for p in space.alternatives("model/beta"):
        optuna.distributions.check_distribution_compatibility(union, p.distribution())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: space.suggest(t)["model/beta"], n_trials=6)
    study.add_trial(optuna.trial.create_trial(  # a record under the union, beside the asked ones
        params={"model/name": "beta_vae", "model/beta": 12.0},
        distributions=space.distributions(), value=12.0,
    ))
    assert study.get_trials()[-1].params["model/beta"] == 12.0
    ints = SearchSpace.from_dict({"params": {
        "a": {"choices": [0, 1]},
        "k": [{"low": 2, "high": 8, "type": "int", "step": 2, "when": {"a": 0}},
              {"low": 3, "high": 9, "type": "int", "step": 3, "when": {"a": 1}}],
    }})
    k = ints.distributions()["k"]
    assert (k.low, k.high, k.step) == (2, 9, 1)  # holds 2, 4, 6, 8 and 3, 6, 9
    floats = SearchSpace.from_dict({"params": {
        "a": {"choices": [0, 1]},
        "x": [{"low": 0.0, "high": 1.0, "step": 0.5, "when": {"a": 0}},
              {"low": 0.5, "high": 2.0, "step": 0.5, "when": {"a": 1}}],
    }})
    x = floats.distributions()["x"]
    assert x == optuna.distributions.FloatDistribution(0.0, 2.0, step=0.5)
    text = optuna.distributions.distribution_to_json(union)
    assert optuna.distributions.json_to_distribution(text) == union


@pytest.mark.parametrize("multivariate", [False, True])
def test_tpe_runs_a_study_over_alternatives(multivariate: bool) -> None:
    space = load(alternatives_space())
    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=5, multivariate=multivariate)
    study = optuna.create_study(sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        config = space.suggest(trial)
        return abs(math.log(config["model/beta"]) - (1.0 if config["model/name"] in TC else 2.0))

    study.optimize(objective, n_trials=20)
    trials = study.get_trials()
    assert len(trials) == 20
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials:
        high = 10.0 if t.params["model/name"] in TC else 16.0
        assert 1.0 <= t.params["model/beta"] <= high
        assert t.distributions["model/beta"].high == high

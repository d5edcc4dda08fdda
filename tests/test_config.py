"""RunConfig and SweepSpec: strict reading, round trips, overrides, clear errors."""

from __future__ import annotations

import pickle

import pytest
import yaml

from models.errors import ConfigError
from tune.config.run import RunConfig, apply_overrides, known_paths, read_yaml
from tune.config.sweep import SweepSpec, preset_names


def test_defaults_follow_the_dataset() -> None:
    cfg = RunConfig.from_dict({"data": {"name": "shapes3d"}})
    assert cfg.model.image_channels == 3
    cfg = RunConfig.from_dict({"data": {"name": "dsprites"}})
    assert cfg.model.image_channels == 1


def test_yaml_and_pickle_round_trip() -> None:
    cfg = RunConfig.from_dict({"model": {"name": "mipet_betatcvae", "beta": 4.0},
                               "train": {"steps": 10}, "seed": 3})
    again = RunConfig.from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert again.config_id() == cfg.config_id()
    assert cfg.replace(seed=4).config_id() == cfg.config_id()
    assert RunConfig.from_dict({"model": {"beta": 2.0}}).config_id() != RunConfig().config_id()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"trian": {}}, "did you mean 'train'"),
        ({"train": {"stesp": 3}}, "'train/stesp'; did you mean 'train/steps'"),
        ({"train": {"steps": 0}}, "train.steps must be >= 1"),
        ({"train": {"lr": "fast"}}, "train/lr must be a number"),
        ({"data": {"name": "dsprite"}}, "did you mean 'dsprites'"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"model": {"betaa": 1.0}}, "betaa"),
        ({"train": 5}, "train must be a mapping"),
    ],
)
def test_bad_run_configs_fail_with_one_clear_line(data, match) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        RunConfig.from_dict(data)
    assert "\n" not in str(info.value)


def test_exported_extras_are_ignored() -> None:
    cfg = RunConfig.from_dict({"train": {"steps": 5}, "metrics": {"eval/mig": 0.1},
                               "provenance": {"sweep": "x"}})
    assert cfg.train.steps == 5


def test_overrides_parse_values_and_reject_unknown_paths() -> None:
    d = apply_overrides({}, ["model/beta=4", "train/steps=12", "train.weight_decay=1e-4"])
    cfg = RunConfig.from_dict(d)
    assert cfg.model.beta == 4.0 and cfg.train.steps == 12 and cfg.train.weight_decay == 1e-4
    with pytest.raises(ConfigError, match="did you mean 'train/steps'"):
        apply_overrides({}, ["train/step=3"])
    with pytest.raises(ConfigError, match="PATH=VALUE"):
        apply_overrides({}, ["train/steps"])
    assert "model/beta" in known_paths() and "seed" in known_paths()


def test_presets_load_and_validate() -> None:
    assert {"quick", "paper"} <= set(preset_names())
    for name in preset_names():
        spec = SweepSpec.load(preset=name)
        assert spec.num_samples >= 1
        spec.run_config()


@pytest.mark.parametrize("name", ["quick", "paper"])
def test_a_preset_sets_each_key_in_one_layer(name: str) -> None:
    """The sweep preset and its search space never both set a key (the quick space once said
    300 steps while the sweep's 200 silently won)."""
    from analysis.trials import flatten
    from search_spaces import read_space

    assert name in preset_names()
    spec = SweepSpec.load(preset=name)
    space = read_space(spec.space)
    in_space = set(space.fixed) | {p.path for p in space.params}
    twice = sorted(set(flatten(spec.base)) & in_space)
    assert not twice, (
        f"preset {name!r}: {twice} set by both the sweep and its space {spec.space!r}"
    )


def test_presets_keep_their_effective_budgets() -> None:
    from analysis.trials import flatten
    from search_spaces import read_space

    def effective(name: str) -> RunConfig:
        spec = SweepSpec.load(preset=name)  # the space's fixed values, then the sweep's base
        return spec.run_config({**read_space(spec.space).fixed_dict(), **flatten(spec.base)})

    quick = effective("quick")
    assert (quick.train.steps, quick.train.batch_size, quick.train.report_every,
            quick.train.checkpoint_every) == (500, 64, 100, 250)
    assert (quick.train.lr, quick.train.sub_lr) == (1e-3, 1e-3)
    assert quick.model.latent_dim == 10 and quick.eval.protocol == "fast"
    assert list(quick.eval.metrics) == ["mig", "dci", "factor_vae", "sap"]
    paper = effective("paper")
    assert (paper.train.steps, paper.train.batch_size, paper.train.optimizer, paper.train.lr,
            paper.train.sub_lr) == (300000, 256, "adam", 4.0e-4, 4.0e-4)
    assert (paper.model.latent_dim, paper.model.alpha, paper.model.gamma) == (10, 1.0, 1.0)
    assert paper.eval.protocol == "dlib" and paper.train.checkpoint_every == 10000


def test_sweep_spec_errors() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'quik'.*'quick'"):
        SweepSpec.load(preset="quik")
    with pytest.raises(ConfigError, match="num_sampels.*num_samples"):
        SweepSpec.from_dict({"num_sampels": 3})
    with pytest.raises(ConfigError, match="resources.gpu=1.5"):
        SweepSpec.from_dict({"resources": {"gpu": 1.5}})
    with pytest.raises(ConfigError, match="equal"):
        SweepSpec.from_dict({"metric": ["eval/mig", "eval/sap"], "mode": ["max"]})
    with pytest.raises(ConfigError, match="train/stesp"):
        SweepSpec.load(preset="quick", overrides=["train/stesp=3"])
    spec = SweepSpec.load(preset="quick", overrides=["train/steps=7", "num_samples=3",
                                                     "resources/cpu=0.5"])
    assert spec.run_config().train.steps == 7
    assert spec.num_samples == 3 and spec.resources.cpu == 0.5


def test_bad_yaml_file(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnum_samples: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        SweepSpec.load(config=bad)
    with pytest.raises(ConfigError, match="no such config file"):
        SweepSpec.load(config=tmp_path / "missing.yaml")


def test_one_yaml_loader_reads_1e_minus_4_as_a_float_everywhere(tmp_path) -> None:
    # PyYAML (YAML 1.1) reads `1e-4` as the string "1e-4"; every reader here is YAML 1.2.
    from search_spaces import load_space
    from tune.sweep.ablate import AblationSpec

    assert apply_overrides({}, ["train/lr=1e-4"])["train"]["lr"] == 1e-4
    assert isinstance(apply_overrides({}, ["train/lr=1e-4"])["train"]["lr"], float)
    run = tmp_path / "run.yaml"
    run.write_text("train: {lr: 1e-4, steps: 3}\n")
    assert read_yaml(run)["train"]["lr"] == 1e-4 and RunConfig.from_yaml(run).train.lr == 1e-4
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("base: {train: {lr: 1e-4}}\n"
                     "space: {params: {train/weight_decay: {low: 1e-6, high: 1e-2, log: true}}}\n")
    spec = SweepSpec.load(config=sweep)
    assert spec.base["train"]["lr"] == 1e-4 and isinstance(spec.base["train"]["lr"], float)
    space = tmp_path / "space.yaml"
    space.write_text("params: {train/lr: {low: 1e-5, high: 1e-3, log: true}}\n")
    assert load_space(str(space)).params[0].low == 1e-5
    ablation = tmp_path / "ablation.yaml"
    ablation.write_text("grid: {train/lr: [1e-4, 1e-3]}\nbase: {train: {steps: 2}}\n")
    assert list(AblationSpec.load(ablation).grid["train/lr"]) == [1e-4, 1e-3]
    run.write_text("train: {lr: 1e-4}\ntrain: {steps: 3}\n")
    with pytest.raises(ConfigError, match="duplicated key 'train'"):
        read_yaml(run)


def test_one_list_of_dataset_names() -> None:
    from tune.data import DATASETS, dataset_record, model_defaults

    built_in = [n for n in DATASETS if dataset_record(n).generator is not None]
    assert set(DATASETS) - set(built_in) == {"images"}  # your own images need data.source
    for name in built_in:  # the model defaults cover every dataset
        assert set(model_defaults(name)) == {"image_channels", "dense_dim", "recon_loss",
                                             "dataset_size"}
        assert RunConfig.from_dict({"data": {"name": name}}).data.name == name
    with pytest.raises(ConfigError, match="'images' has no built-in generator: give data.source"):
        RunConfig.from_dict({"data": {"name": "images"}})
    with pytest.raises(ConfigError, match="did you mean 'cars3d'"):
        RunConfig.from_dict({"data": {"name": "cars3"}})

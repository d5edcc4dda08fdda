"""The conditional models of the zoo (cvae, ifcvae): the condition's channels and decoder input,
gradients to every parameter, training and exact resumption through the loop (the IFCVAE
auxiliary and its optimizer included), bad `condition_on` refused in one line, the loader's
classes, traversals of the condition, and metrics that score only the free factors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_run_dict, tiny_train
from test_models import _one_thread  # noqa: F401  (the autouse fixture applies)
from test_train_zoo import train_and_resume

import models
from models import ConfigError, ModelConfig
from models.objectives import label_cross_entropy
from tune.config.run import RunConfig
from tune.train.loop import evaluate_model, model_config_for

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
CONDITIONAL = ["cvae", "ifcvae"]
SIZES = (3, 6)  # dSprites' shape and scale


def make(name: str, seed: int = 0, **kw) -> models.VAE:
    torch.manual_seed(seed)
    cfg = {"name": name, "latent_dim": 4, "condition_on": ["shape", "scale"],
           "condition_classes": list(SIZES), **kw}
    return models.build_model(ModelConfig.from_dict(cfg))


def batch(b: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(b, 1, 64, 64, generator=g) > 0.5).float()
    y = torch.stack([torch.randint(0, s, (b,), generator=g) for s in SIZES], 1)
    return x, y


def test_condition_channels_and_decoder_input() -> None:
    cvae, ifc = make("cvae"), make("ifcvae")
    x, y = batch()
    inp = cvae._encoder_input(x, y)
    assert inp.shape == (8, 1 + 9, 64, 64)
    assert torch.equal(inp[:, :1], x)
    onehot = torch.cat([torch.nn.functional.one_hot(y[:, 0], 3),
                        torch.nn.functional.one_hot(y[:, 1], 6)], 1).float()
    assert torch.equal(inp[:, 1:, 17, 40], onehot) and torch.equal(inp[:, 1:, 0, 0], onehot)
    assert cvae.encoder.features[0].in_channels == 10
    assert cvae.decoder.dense1.in_features == ifc.decoder.dense1.in_features == 4 + 9
    assert ifc.encoder.features[0].in_channels == 1  # the ifcvae predicts the labels from x
    assert ifc.label_encoder(x).shape == (8, 9)
    z = torch.zeros(8, 4)
    other = torch.stack([(y[:, 0] + 1) % 3, y[:, 1]], 1)
    assert not torch.allclose(cvae.decode(z, y), cvae.decode(z, other))  # the decoder reads it


@pytest.mark.parametrize("name", CONDITIONAL)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    model = make(name)
    x, y = batch()
    out = model(x, labels=y)
    assert torch.allclose(out.loss, sum(w * out.terms[n] for n, w in out.weights.items()))
    out.loss.backward()
    adversarial = [n for n, _ in model.named_parameters() if n.startswith("adversaries.")]
    assert bool(adversarial) == (name == "ifcvae")
    assert all(model.get_parameter(n).grad is None for n in adversarial)
    for adv in model.adversaries:
        model.adversary_loss(adv, out).backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n
    if name == "ifcvae":
        assert set(out.weights) == {"rec", "kld", "ifc_le", "ifc_le_recon", "ifc_aux"}
        assert float(out.terms["ifc_aux"]) < 0 < float(out.terms["ifc_le"])
        main = {id(p) for g in models.param_groups(model, 1e-3, 1e-3, 0.0) for p in g["params"]}
        assert all(id(p) in main for p in model.label_encoder.parameters())


def test_label_cross_entropy_and_the_detached_condition() -> None:
    logits, y = torch.zeros(5, 9), torch.tensor([[0, 5]] * 5)
    value = label_cross_entropy(logits, y, SIZES)  # uniform: log 3 + log 6
    assert math.isclose(float(value), math.log(3) + math.log(6), rel_tol=1e-6)
    logits[:, 0], logits[:, 3 + 5] = 50.0, 50.0
    assert float(label_cross_entropy(logits, y, SIZES)) < 1e-6
    model = make("ifcvae")
    x, y = batch()
    model(x, labels=y).terms["rec"].backward()  # the decoder's condition carries no gradient
    assert all(p.grad is None for p in model.label_encoder.parameters())


def test_missing_labels_fail_clearly() -> None:
    x, y = batch()
    with pytest.raises(ValueError, match=r"pass labels of shape \(8, 2\)"):
        make("cvae")(x)
    with pytest.raises(ValueError, match="out of range"):
        make("ifcvae")(x, labels=y + 6)


@pytest.mark.parametrize(("data", "match"), [
    ({"name": "cvae"}, "is conditional: set model.condition_on"),
    ({"name": "beta_vae", "condition_on": ["shape"]}, "'beta_vae' takes no labels"),
    ({"name": "cvae", "condition_on": ["shape", "shape"]}, "a factor twice"),
    ({"name": "cvae", "condition_on": ["shape"], "condition_classes": [3, 6]}, "class count"),
    ({"name": "ifcvae", "condition_on": ["shape"], "ifc_w_aux": -1.0}, "model.ifc_w_aux"),
    ({"name": "beta_vae", "loss_terms": ["cvae"]}, "adds no regulariser"),
])
def test_bad_condition_fails_in_one_line(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        ModelConfig.from_dict(data)
    assert "\n" not in str(err.value)


def test_condition_on_is_resolved_against_the_dataset(dsprites) -> None:
    def cfg(**model):
        return RunConfig.from_dict(tiny_run_dict(model={"num_ipe": 0, **model}))

    mcfg = model_config_for(cfg(name="ifcvae", condition_on=["scale", "shape"]), dsprites)
    assert mcfg.condition_classes == (6, 3) and mcfg.dataset_size == len(dsprites)
    unknown = "'colour' is not a factor of dataset 'dsprites'; its factors are shape, scale, "
    with pytest.raises(ConfigError, match=unknown) as err:  # at config time
        cfg(name="cvae", condition_on=["shape", "colour"])
    assert "\n" not in str(err.value)
    good = cfg(name="cvae", condition_on=["shape"])
    bad = good.replace(model=good.model.replace(condition_on=("shape", "colour")))
    with pytest.raises(ConfigError, match=unknown):  # and at run start, against the data
        model_config_for(bad, dsprites)
    every = ["shape", "scale", "orientation", "posX", "posY"]
    with pytest.raises(ConfigError, match="every factor"):
        model_config_for(cfg(name="cvae", condition_on=every), dsprites)
    with pytest.raises(ConfigError, match="condition_classes=.3, 3. but"):
        model_config_for(cfg(name="cvae", condition_on=["shape", "scale"],
                             condition_classes=[3, 3]), dsprites)


def test_loader_adds_the_classes_and_keeps_the_images(dsprites) -> None:
    plain, labelled = dsprites.loader(5, seed=3), dsprites.loader(5, seed=3, labels=[1, 0])
    for _ in range(3):
        x = next(plain)
        assert isinstance(x, torch.Tensor)
        x2, y = next(labelled)
        assert torch.equal(x, x2)
    idx = dsprites.loader(5, seed=3)
    for _ in range(3):
        rows = idx.next_indices()
    assert torch.equal(y, torch.from_numpy(dsprites.factors_of(rows)[:, [1, 0]]))


def _config(name: str, **train) -> RunConfig:
    model = {"name": name, "latent_dim": 4, "num_ipe": 0, "condition_on": ["shape", "scale"]}
    train = tiny_train(30, 10, lr=1e-3, **train)
    return RunConfig.from_dict(tiny_run_dict(model=model, train=train))


@pytest.mark.parametrize("name", CONDITIONAL)
def test_trains_lowers_its_loss_and_resumes_exactly(name: str, dsprites, tmp_path: Path) -> None:
    reports, state = train_and_resume(_config(name), dsprites, tmp_path)
    assert reports[-1]["train/rec"] < reports[0]["train/rec"]
    assert set(state["adversaries"]) == ({"ifc_aux"} if name == "ifcvae" else set())
    if name == "ifcvae":
        assert "train/ifc_aux_disc" in reports[-1]
        assert any(k.startswith("adversaries.ifc_aux.") for k in state["model"])
        assert any(k.startswith("label_encoder.") for k in state["model"])


@pytest.mark.parametrize("cache", [True, False])
def test_metrics_score_only_the_free_factors(cache: bool, dsprites, monkeypatch) -> None:
    import analysis.metrics

    cfg = RunConfig.from_dict(tiny_run_dict(
        model={"name": "cvae", "num_ipe": 0, "condition_on": ["scale", "shape"]},
        eval={"protocol": "fast", "cache": cache}))
    model = models.build_model(model_config_for(cfg, dsprites))
    given: list[torch.Tensor] = []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda x, y=None: (given.append(y), encode(x, y))[1])
    seen: dict = {}

    def fake_evaluate(data, represent, **kw):
        factors, rows = data.sample(7, np.random.RandomState(0))
        seen.update(num=data.num_factors, sizes=list(data.factors_num_values),
                    factors=factors, rows=rows, codes=represent(rows))
        return {"mig": 0.25}

    monkeypatch.setattr(analysis.metrics, "evaluate", fake_evaluate)
    out = evaluate_model(model, dsprites, cfg, torch.device("cpu"), protocol="fast",
                         metrics=("mig",), seed=0)
    assert out == {"mig": 0.25}
    assert seen["num"] == 3 and seen["sizes"] == [40, 32, 32]  # orientation, posX, posY
    full = dsprites.factors_of(seen["rows"].reshape(-1))
    assert np.array_equal(full[:, 2:], seen["factors"])  # the rows have the sampled factors
    assert torch.equal(given[-1], torch.from_numpy(full[:, [1, 0]]))  # and their true classes
    assert seen["codes"].shape == (7, 4)


def test_traversals_move_the_condition(dsprites, tmp_path: Path) -> None:
    from tune.train.images import _traverse, write_images

    model = make("cvae").eval()
    mu = torch.zeros(2, 4)
    labels = torch.tensor([[0, 0], [2, 5]])
    with torch.no_grad():
        tiles = _traverse(model, mu, torch.linspace(-2, 2, 5)[:, None].repeat(1, 4), labels)
        assert tiles.shape == (2, 4 + 2, 5, 64, 64, 1)
        shape_row = model.decode(mu[:1].repeat(5, 1), torch.tensor([[0, 0], [0, 0], [1, 0],
                                                                    [2, 0], [2, 0]]))
    assert np.allclose(tiles[0, 4], shape_row.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    pics = write_images(model, dsprites, tmp_path, device=torch.device("cpu"), seed=0, steps=3)
    assert pics.paths["traversal_gif"].is_file() and "reconstruction" in pics.images


def test_the_throughput_estimate_runs_a_conditional_model() -> None:
    from tune.sweep.estimate import measure

    cfg = RunConfig.from_dict(tiny_run_dict(
        model={"name": "ifcvae", "num_ipe": 0, "condition_on": ["shape"]}))
    rate, _ = measure(cfg, steps=1)
    assert rate > 0

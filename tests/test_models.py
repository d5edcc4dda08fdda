"""Contract suite over every registered model, plus the config, registry and optimizer groups."""

from __future__ import annotations

import pickle

import pytest
import torch
import yaml

import models
from models import ConfigError, ModelConfig, NonFiniteLossError
from models._facts import MODEL_FACTS
from tune.data import model_defaults

# The conditional models (cvae, ifcvae) take labels: their contract is tests/test_conditional.py.
NAMES = sorted(n for n in models.MODELS if not MODEL_FACTS[n].needs_labels)
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is faster than two on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(name: str, dataset: str = "dsprites", seed: int = 0, **kw: object) -> models.VAE:
    torch.manual_seed(seed)
    d = model_defaults(dataset)
    d.update(kw)
    return models.build_model(ModelConfig.from_dict({"name": name, **d}))


def images(channels: int, b: int = 8, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, channels, 64, 64, generator=g)
    return (x > 0.5).float() if channels == 1 else x


# -- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trips_through_yaml_and_pickle(name: str) -> None:
    cfg = ModelConfig.from_dict({"name": name, **model_defaults("shapes3d")})
    assert ModelConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert cfg.num_ipe == models.MODELS[name].default_num_ipe


def test_defaults_are_the_paper_run() -> None:
    assert ModelConfig(name="mipet_vae").num_ipe == 3
    assert ModelConfig(name="mipet_betatcvae").num_ipe == 3
    assert ModelConfig(name="mipet_commutative").num_ipe == 1
    cfg = ModelConfig(name="mipet_betatcvae")
    assert (cfg.alpha, cfg.beta, cfg.gamma, cfg.tc_estimator) == (1.0, 1.0, 1.0, "paper")
    assert cfg.recon_loss == "bce"
    assert ModelConfig(image_channels=3, dense_dim=(256, 256)).recon_loss == "mse"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"bta": 2.0}, "unknown key 'model/bta'; did you mean 'model/beta'"),
        ({"name": "mipet_vea"}, "did you mean 'mipet_vae'"),
        ({"beta": -1}, r"model.beta must be > 0, got -1"),
        ({"image_channels": 2}, "model.image_channels"),
        ({"dense_dim": [128, 128]}, "model.dense_dim"),
        ({"name": "beta_vae", "num_ipe": 3}, "model.num_ipe must be 0"),
        ({"name": "mipet_commutative", "latent_dim": 8}, "model.latent_dim"),
        ({"name": "mipet_commutative", "subgroup_sizes": [99]}, "squares"),
        ({"forward_eq_prob": 1.5}, "model.forward_eq_prob"),
        ({"tc_estimator": "chen"}, "model.tc_estimator"),
        ({"num_ipe": -1}, "model.num_ipe"),
    ],
)
def test_bad_config_names_the_field(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ModelConfig.from_dict(data)


def test_dataset_defaults() -> None:
    assert model_defaults("dsprites")["dense_dim"] == (256, 128)
    for ds in ("shapes3d", "cars3d", "mpi3d_toy", "mpi3d_realistic", "mpi3d_real"):
        d = model_defaults(ds)
        assert (d["image_channels"], d["dense_dim"], d["recon_loss"]) == (3, (256, 256), "mse")
    with pytest.raises(ConfigError, match="shapes3d"):
        model_defaults("shapes3D")


def test_used_fields() -> None:
    fields = set(ModelConfig.__dataclass_fields__)
    for name in NAMES:
        assert models.used_fields(name) <= fields
    assert "hy_rec" not in models.used_fields("mipet_vae")
    assert "alpha" not in models.used_fields("mipet_vae")
    assert {"beta", "num_ipe"} <= models.used_fields("mipet_vae")
    betatc = models.used_fields("mipet_betatcvae")
    assert {"alpha", "gamma", "tc_estimator", "dataset_size"} <= betatc
    assert {"hy_rec", "forward_eq_prob", "num_ipe"} <= models.used_fields("mipet_commutative")
    assert "num_ipe" not in models.used_fields("commutative")
    with pytest.raises(ConfigError):
        models.used_fields("nope")


# -- contract over every model --------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dataset", ["dsprites", "shapes3d"])
def test_shapes_terms_and_gradients(name: str, dataset: str) -> None:
    model = make(name, dataset)
    c, d, b = model.cfg.image_channels, model.cfg.latent_dim, 8
    x = images(c, b)
    out = model(x)
    assert out.recon.shape == (b, c, 64, 64)
    assert 0 <= float(out.recon.detach().min()) and float(out.recon.detach().max()) <= 1
    assert out.mu.shape == out.logvar.shape == out.z.shape == (b, d)
    k = model.num_ipe
    assert (out.z_hat is None) if k == 0 else (out.z_hat.shape == (k, b, d))
    total = sum(w * out.terms[n] for n, w in out.weights.items())
    assert torch.allclose(out.loss, total)
    assert all(t.ndim == 0 and torch.isfinite(t) for t in out.terms.values())
    out.loss.backward()
    adversarial = [n for n, _ in model.named_parameters() if n.startswith("adversaries.")]
    assert all(model.get_parameter(n).grad is None for n in adversarial)  # the main loss: none
    for name in model.adversaries:  # each adversary's own loss reaches its every parameter
        model.adversary_loss(name, out).backward()
    dead = set(model.dead_parameter_names())
    for n, p in model.named_parameters():
        if n in dead:
            assert p.grad is None, n
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), n
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (b, d)
    assert model.decode(mu).shape == (b, c, 64, 64)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_loss(name: str) -> None:
    x = images(1)
    losses = []
    for _ in range(2):
        model = make(name, seed=3)
        torch.manual_seed(4)
        losses.append(model(x).loss.item())
    other = make(name, seed=5)
    torch.manual_seed(4)
    assert losses[0] == losses[1]
    assert other(x).loss.item() != losses[0]


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trips(name: str) -> None:
    x, eps = images(1), torch.randn(8, 10)
    src, dst = make(name, seed=1).eval(), make(name, seed=2).eval()
    dst.load_state_dict(src.state_dict())
    assert all(torch.equal(v, dst.state_dict()[k]) for k, v in src.state_dict().items())
    torch.manual_seed(0)
    a = src(x, eps).loss.item()
    torch.manual_seed(0)
    assert dst(x, eps).loss.item() == a


@pytest.mark.parametrize("name", NAMES)
def test_nan_input_raises(name: str) -> None:
    model = make(name)
    x = images(1)
    x[0, 0, 3, 3] = float("nan")
    with pytest.raises(NonFiniteLossError, match="NaN"):
        model(x)


@pytest.mark.parametrize("name", NAMES)
def test_adam_lowers_the_loss(name: str) -> None:
    model = make(name)
    x = torch.zeros(4, 1, 64, 64)  # tiny data: a bright square at four places
    for i in range(4):
        x[i, 0, 8 + 10 * i : 20 + 10 * i, 12:24] = 1.0
    eps = torch.zeros(4, model.cfg.latent_dim)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(model(x, eps).loss)

    before = eval_loss()
    opt = torch.optim.Adam(models.param_groups(model, 1e-3, 1e-3, 0.0))
    adversaries = model.build_adversaries()
    model.train()
    for step in range(50):
        opt.zero_grad()
        out = model(x, step=step)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        adversaries.step(out)
    after = eval_loss()
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize(
    ("mipet", "base"),
    [
        ("mipet_vae", "beta_vae"), ("mipet_betatcvae", "betatcvae"),
        ("mipet_commutative", "commutative"),
        *((f"mipet_{o}", o) for o in ("annealed_vae", "factor_vae", "dip_vae_i", "dip_vae_ii",
                                     "info_vae")),
    ],
)
def test_zero_ipe_maps_is_the_baseline(mipet: str, base: str) -> None:
    x = images(1)
    eps = torch.randn(8, 10)
    a, b = make(mipet, seed=7, num_ipe=0), make(base, seed=7)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    a.eval()
    b.eval()
    torch.manual_seed(0)  # InfoVAE draws prior samples
    oa = a(x, eps)
    torch.manual_seed(0)
    ob = b(x, eps)
    assert oa.terms.keys() == ob.terms.keys() and oa.loss.item() == ob.loss.item()


# -- parameter counts (spec 8.1) ------------------------------------------------------------------

SPEC_COUNTS = [
    ("mipet_vae", "dsprites", 1, 409_011, 5_000),
    ("mipet_betatcvae", "dsprites", 3, 427_631, 15_000),
    ("mipet_vae", "dsprites", 5, 446_251, 25_000),
    ("mipet_betatcvae", "shapes3d", 1, 578_997, 5_000),
    ("mipet_vae", "shapes3d", 3, 597_617, 15_000),
    ("mipet_betatcvae", "cars3d", 5, 616_237, 25_000),
    ("mipet_commutative", "dsprites", 1, 745_843, 40_476),
    ("mipet_commutative", "shapes3d", 1, 783_349, 75_932),
]


@pytest.mark.parametrize(("name", "dataset", "k", "total", "dead"), SPEC_COUNTS)
def test_parameter_counts_match_the_paper_code(
    name: str, dataset: str, k: int, total: int, dead: int
) -> None:
    model = make(name, dataset, num_ipe=k)
    params = dict(model.named_parameters())
    assert sum(p.numel() for p in params.values()) == total
    assert sum(params[n].numel() for n in model.dead_parameter_names()) == dead
    lean = make(name, dataset, num_ipe=k, keep_dead_params=False)
    assert sum(p.numel() for p in lean.parameters()) == total - dead
    assert lean.dead_parameter_names() == []


def test_param_groups_follow_names() -> None:
    model = make("mipet_commutative")
    groups = models.param_groups(model, 4e-4, 1e-4, 1e-4)
    assert [g["name"] for g in groups] == ["encoder_decoder", "ipe"]
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["lr"] == 1e-4
    assert sum(p.numel() for p in groups[1]["params"]) == 9_310
    assert any(p is model.decoder.lie_basis for p in groups[0]["params"])
    assert len(models.param_groups(make("beta_vae"), 1e-3, 1e-3, 0.0)) == 1

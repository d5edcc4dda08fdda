"""The objective zoo: known answers for every new term, stacking, the registry facts, loss weights
and the networks by name."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from test_models import _one_thread, images, make  # noqa: F401  (the autouse fixture applies)
from torch import nn

import models
from models import ConfigError, ModelConfig
from models._adversary import FactorDiscriminator, factor_discriminator_loss, permute_dims
from models._facts import MODEL_FACTS, OBJECTIVES
from models.objectives import (
    CapacityTerm,
    DipTerm,
    FactorTC,
    LossInputs,
    capacity_target,
    dip_covariance,
    dip_penalty,
    gaussian_kl,
    mmd,
)

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def inputs(mu: torch.Tensor, logvar: torch.Tensor | None = None, step: int = 0) -> LossInputs:
    logvar = torch.zeros_like(mu) if logvar is None else logvar
    return LossInputs(
        x=torch.zeros(1), recon=torch.zeros(1), mu=mu, logvar=logvar, z=mu,
        kl_gauss=gaussian_kl(mu, logvar), step=step,
    )


# -- DIP-VAE --------------------------------------------------------------------------------------

SIGNS = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])  # mean 0, cov I


def test_dip_covariance_of_a_known_batch() -> None:
    assert torch.allclose(dip_covariance(SIGNS, torch.zeros(4, 2), "i"), torch.eye(2))
    scaled = SIGNS * torch.tensor([2.0, 1.0]) + 5.0  # a shift does not change the covariance
    assert torch.allclose(dip_covariance(scaled, torch.zeros(4, 2), "i"), torch.diag(
        torch.tensor([4.0, 1.0])))
    tied = torch.tensor([[1.0, 1.0], [1.0, 1.0], [-1.0, -1.0], [-1.0, -1.0]])
    assert torch.allclose(dip_covariance(tied, torch.zeros(4, 2), "i"), torch.ones(2, 2))
    # II adds the mean posterior variance: exp(log 0.5) = 0.5 on the diagonal
    cov = dip_covariance(SIGNS, torch.full((4, 2), math.log(0.5)), "ii")
    assert torch.allclose(cov, 1.5 * torch.eye(2))


def test_dip_penalty_known_values() -> None:
    assert float(dip_penalty(torch.eye(2), 10.0, 100.0)) == 0.0
    assert math.isclose(float(dip_penalty(torch.diag(torch.tensor([4.0, 1.0])), 10.0, 3.0)), 27.0)
    assert math.isclose(float(dip_penalty(torch.ones(2, 2), 10.0, 3.0)), 20.0)  # 2 off entries
    tied = torch.tensor([[1.0, 1.0], [1.0, 1.0], [-1.0, -1.0], [-1.0, -1.0]])
    term = DipTerm("i", lambda_od=2.0)  # lambda_d defaults to 10 x lambda_od for DIP-VAE-I
    assert term.lambda_d == 20.0 and DipTerm("ii", lambda_od=2.0).lambda_d == 2.0
    assert math.isclose(float(term(inputs(tied))["dip"]), 2.0 * 2)
    ii = DipTerm("ii", lambda_od=1.0, lambda_d=4.0)(
        inputs(SIGNS, torch.full((4, 2), math.log(0.5)))
    )
    assert math.isclose(float(ii["dip"]), 4.0 * 2 * 0.25)


# -- InfoVAE's MMD --------------------------------------------------------------------------------


def test_mmd_is_zero_on_itself_and_grows_with_a_shift() -> None:
    torch.manual_seed(0)
    a = torch.randn(64, 4)
    assert abs(float(mmd(a, a))) < 1e-6
    values = [float(mmd(a, a + s)) for s in (0.5, 1.0, 2.0, 4.0)]
    assert all(lo < hi for lo, hi in zip(values, values[1:], strict=False)) and values[0] > 0
    # one point each, d = 1: k(a, a) = k(b, b) = 1, k(a, b) = exp(-1)
    assert math.isclose(float(mmd(torch.zeros(1, 1), torch.ones(1, 1))), 2 - 2 * math.exp(-1),
                        rel_tol=1e-6)
    # d = 2 divides the squared distance by d^2 = 4
    assert math.isclose(float(mmd(torch.zeros(1, 2), torch.tensor([[2.0, 0.0]]))),
                        2 - 2 * math.exp(-1), rel_tol=1e-6)


def test_info_vae_weights() -> None:
    out = make("info_vae", info_alpha=0.5, info_lambda=3.0)(images(1))
    assert out.weights["kld"] == 0.5 and out.weights["mmd"] == 2.5
    assert make("info_vae")(images(1)).weights == {"rec": 1.0, "kld": 1.0, "mmd": 1.0}
    with pytest.raises(ConfigError, match="model.info_alpha"):
        ModelConfig(name="info_vae", info_alpha=-2.0, info_lambda=2.0)


# -- controlled capacity --------------------------------------------------------------------------


def test_capacity_term_at_start_half_way_and_past_the_threshold() -> None:
    assert capacity_target(0, 25.0, 100) == 0.0
    assert capacity_target(50, 25.0, 100) == 12.5
    assert capacity_target(100, 25.0, 100) == capacity_target(500, 25.0, 100) == 25.0
    mu = torch.full((4, 2), 2.0)  # KL per sample = 0.5 * (4 + 4) = 4
    term = CapacityTerm(gamma=1000.0, capacity_max=10.0, capacity_steps=100)
    got = [float(term(inputs(mu, step=s))["capacity"]) for s in (0, 20, 50, 100, 10_000)]
    assert got == pytest.approx([4.0, 2.0, 1.0, 6.0, 6.0])
    assert term.weights == {"capacity": 1000.0}


def test_annealed_model_reads_the_step() -> None:
    model = make("annealed_vae", capacity_max=20.0, capacity_steps=10).eval()
    x, eps = images(1), torch.randn(8, 10)
    c = [float(model(x, eps, step=s).terms["capacity_c"]) for s in (0, 5, 10, 99)]
    assert c == [0.0, 10.0, 20.0, 20.0]
    out = model(x, eps, step=5)
    assert math.isclose(float(out.terms["capacity"]), abs(float(out.terms["kld"]) - 10.0),
                        rel_tol=1e-6)
    assert "kld" not in out.weights  # the capacity term replaces the KL


# -- Factor-VAE -----------------------------------------------------------------------------------


class FixedLogits(nn.Module):
    """A discriminator whose logits are fixed: [3, 1] for every sample (plus 0 * z)."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([3.0, 1.0]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(z.shape[0], 2) + 0.0 * z[:, :1]


def test_factor_tc_from_fixed_logits_reaches_the_codes_only() -> None:
    disc = FixedLogits()
    z = torch.randn(6, 3, requires_grad=True)
    inp = inputs(torch.zeros(6, 3))
    inp.z = z
    out = FactorTC(gamma=7.0, discriminator=disc)(inp)
    assert float(out["factor_tc"]) == 2.0
    out["factor_tc"].backward()
    assert disc.bias.grad is None and z.grad is not None


def test_factor_discriminator_loss_known_values() -> None:
    class Zero(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.zeros(z.shape[0], 2)

    assert math.isclose(float(factor_discriminator_loss(Zero(), torch.randn(5, 3))), math.log(2),
                        rel_tol=1e-6)
    # logits [3, 1]: log p_true = log sigmoid(2), log p_perm = log sigmoid(-2)
    got = float(factor_discriminator_loss(FixedLogits(), torch.randn(5, 3)))
    want = -(0.5 * math.log(1 / (1 + math.exp(-2))) + 0.5 * math.log(1 / (1 + math.exp(2))))
    assert math.isclose(got, want, rel_tol=1e-6)


def test_permutation_keeps_each_columns_values() -> None:
    torch.manual_seed(0)
    z = torch.randn(64, 5)
    p = permute_dims(z)
    assert torch.equal(p.sort(0).values, z.sort(0).values)
    assert not torch.equal(p, z)
    moved = (p != z).float().mean(0)
    assert (moved > 0.8).all()  # every column is shuffled on its own
    same = permute_dims(torch.arange(64.0).unsqueeze(1).expand(64, 5))  # equal columns in
    assert all(not torch.equal(same[:, 0], same[:, j]) for j in range(1, 5))  # differ out


def test_factor_discriminator_shape_and_size() -> None:
    disc = FactorDiscriminator(10)
    assert disc(torch.zeros(3, 10)).shape == (3, 2)
    linears = [m for m in disc.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [1000] * 6 + [2]
    assert sum(p.numel() for p in disc.parameters()) == 11_000 + 5 * 1_001_000 + 2_002


def test_factor_vae_discriminator_is_outside_the_main_optimizer() -> None:
    model = make("factor_vae")
    groups = models.param_groups(model, 1e-3, 1e-3, 0.0)
    main = {id(p) for g in groups for p in g["params"]}
    disc = list(model.adversaries["factor"].parameters())
    assert not main & {id(p) for p in disc}
    assert main == {id(p) for p in model.main_parameters()}
    adv = model.build_adversaries()
    (opt,) = adv.optimizers.values()
    assert opt.defaults["lr"] == 1e-4 and opt.defaults["betas"] == (0.5, 0.9)
    before = [p.detach().clone() for p in disc]
    out = model(images(1))
    losses = adv.step(out)
    assert set(losses) == {"factor_disc"} and math.isfinite(float(losses["factor_disc"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, disc, strict=True))
    assert all(p.grad is None for p in disc)  # zeroed after the step
    assert not make("beta_vae").build_adversaries()


# -- MIPET on the zoo -----------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["factor_vae", "dip_vae_i", "dip_vae_ii", "info_vae"])
def test_mipet_uses_the_ef_kl_and_the_pre_ipe_posterior(objective: str) -> None:
    model = make(f"mipet_{objective}").eval()
    assert model.num_ipe == 3
    torch.manual_seed(0)
    out = model(images(1), torch.randn(8, 10))
    assert float(out.terms["kld"]) == float(out.terms["ef_kld"])
    assert float(out.terms["kld"]) != float(out.terms["origin_kld"])
    assert {"reg", "ef", "cal"} <= set(out.terms) and out.weights["reg"] == 1.0
    if objective.startswith("dip"):
        kind = "i" if objective == "dip_vae_i" else "ii"
        want = dip_penalty(dip_covariance(out.mu, out.logvar, kind), 10.0, 100.0 if kind == "i"
                           else 10.0)
        assert torch.allclose(out.terms["dip"], want)


def test_mipet_annealed_capacity_reads_the_ef_kl() -> None:
    out = make("mipet_annealed_vae").eval()(images(1), torch.randn(8, 10), step=0)
    assert math.isclose(float(out.terms["capacity"]), abs(float(out.terms["ef_kld"])),
                        rel_tol=1e-6)


@pytest.mark.parametrize("knob", [{"ef_conversion": False}, {"calibration": False},
                                  {"ipe_symmetric": False}, {"keep_dead_params": False},
                                  {"num_ipe": 1}])
def test_ablation_knobs_work_on_the_zoo(knob: dict) -> None:
    out = make("mipet_dip_vae_ii", **knob)(images(1))
    assert torch.isfinite(out.loss)
    if knob == {"ef_conversion": False}:
        assert "reg" not in out.terms and float(out.terms["kld"]) == float(out.terms["origin_kld"])


# -- stacking -------------------------------------------------------------------------------------


def test_stacked_terms_add_their_regulariser() -> None:
    model = make("dip_vae_i", loss_terms=["betatcvae", "factor_vae"], beta=4.0)
    out = model(images(1))
    assert out.weights == {"rec": 1.0, "kld": 1.0, "dip": 1.0, "tc": 3.0, "factor_tc": 10.0}
    assert "factor" in model.adversaries
    assert {"mi", "dwkl"} <= set(out.terms)  # diagnostics of the stacked beta-TC
    assert "loss_terms" in models.used_fields("dip_vae_i")
    assert {"factor_gamma", "beta"} <= models.used_fields("dip_vae_i", ["factor_vae", "betatcvae"])
    cfg = ModelConfig.from_dict({"name": "mipet_vae", "loss_terms": "annealed_vae"})
    assert cfg.loss_terms == ("annealed_vae",)


@pytest.mark.parametrize(
    ("name", "terms", "both"),
    [
        ("dip_vae_i", ["dip_vae_ii"], ("dip_vae_ii", "dip_vae_i")),
        ("annealed_vae", ["annealed_vae"], ("annealed_vae", "own objective")),
        ("vae", ["annealed_vae", "annealed_vae"], ("annealed_vae", "twice")),
        ("beta_vae", ["betatcvae"], ("betatcvae", "beta_vae")),
        ("mipet_betatcvae", ["dip_vae_i", "dip_vae_ii"], ("dip_vae_ii", "dip_vae_i")),
        ("factor_vae", ["vae"], ("vae", "no regulariser")),
        ("vae", ["dip_vae_3"], ("dip_vae_3", "did you mean")),
    ],
)
def test_bad_stacks_fail_at_config_time_with_one_line(name: str, terms: list, both: tuple) -> None:
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_dict({"name": name, "loss_terms": terms})
    message = str(info.value)
    assert "\n" not in message and message.startswith("model.loss_terms")
    assert all(part in message for part in both), message


# -- registry facts, loss weights -----------------------------------------------------------------


def test_every_fact_has_a_class_and_the_class_its_facts() -> None:
    assert set(MODEL_FACTS) == set(models.MODELS)
    for name, fact in MODEL_FACTS.items():
        cls = models.MODELS[name]
        assert (cls.objective, cls.default_num_ipe, cls.config_fields) == (
            fact.objective, fact.default_num_ipe, fact.fields)
        assert fact.objective in OBJECTIVES
    for objective in ("annealed_vae", "factor_vae", "dip_vae_i", "dip_vae_ii", "info_vae"):
        assert MODEL_FACTS[f"mipet_{objective}"].default_num_ipe == 3
        assert MODEL_FACTS[objective].default_num_ipe == 0
    assert MODEL_FACTS["mipet_vae"].objective == "beta_vae" and "mipet_beta_vae" not in MODEL_FACTS


def test_a_config_and_the_field_facts_import_no_torch() -> None:
    code = (
        "import sys, models\n"
        "models.ModelConfig.from_dict({'name': 'mipet_factor_vae', 'loss_terms': ['dip_vae_i']})\n"
        "models.used_fields('info_vae'); models.loss_weight_fields('annealed_vae')\n"
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_loss_weight_fields() -> None:
    lwf = models.loss_weight_fields
    assert lwf("beta_vae") == {"rec_weight", "beta"}
    assert lwf("mipet_betatcvae") == {"rec_weight", "alpha", "beta", "gamma"}
    assert lwf("annealed_vae") == {"rec_weight", "capacity_gamma", "capacity_max"}
    assert lwf("factor_vae", ["dip_vae_ii"]) == {
        "rec_weight", "factor_gamma", "dip_lambda_od", "dip_lambda_d"}
    assert lwf("info_vae") == {"rec_weight", "info_alpha", "info_lambda"}
    assert {"hy_rec", "hy_hes", "hy_commute"} <= lwf("commutative")
    assert lwf("vae") == {"rec_weight"}
    for name in MODEL_FACTS:
        assert lwf(name) <= models.used_fields(name)
    with pytest.raises(ConfigError, match="model.name"):
        lwf("factor_vea")


def test_set_loss_weights_is_the_config_with_those_values() -> None:
    x, eps = images(1), torch.randn(8, 10)
    model = make("dip_vae_i", seed=2).eval()
    params = {k: v.clone() for k, v in model.state_dict().items()}
    model.set_loss_weights({"dip_lambda_od": 3.0, "rec_weight": 0.5})
    other = make("dip_vae_i", seed=2, dip_lambda_od=3.0, rec_weight=0.5).eval()
    assert model(x, eps).loss.item() == other(x, eps).loss.item()
    assert model(x, eps).weights["rec"] == 0.5
    assert all(torch.equal(params[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="model.beta is not a loss weight of 'dip_vae_i'"):
        model.set_loss_weights({"beta": 2.0})
    with pytest.raises(ConfigError, match="model.rec_weight"):
        model.set_loss_weights({"rec_weight": -1.0})
    factor = make("factor_vae")
    disc = factor.adversaries["factor"]
    factor.set_loss_weights({"factor_gamma": 40.0})
    assert factor(x).weights["factor_tc"] == 40.0
    assert factor.adversaries["factor"] is disc  # the adversary survives


def test_rec_weight_default_keeps_the_paper_losses() -> None:
    x, eps = images(1), torch.randn(8, 10)
    a, b = make("mipet_vae", seed=1).eval(), make("mipet_vae", seed=1, rec_weight=2.0).eval()
    oa, ob = a(x, eps), b(x, eps)
    assert oa.weights["rec"] == 1.0 and ob.weights["rec"] == 2.0
    assert math.isclose(ob.loss.item() - oa.loss.item(), oa.terms["rec"].item(), rel_tol=1e-5)


# -- encoders and decoders by name ----------------------------------------------------------------


def _conv64_counts(c: int, d: int) -> tuple[int, int]:
    """disentanglement_lib's conv_encoder / deconv_decoder parameter counts, by hand from the
    layer sizes (weights + biases; kernels 4, 4, 2, 2 in the encoder, 4 in the decoder)."""
    enc = (
        (c * 32 * 4 * 4 + 32) + (32 * 32 * 4 * 4 + 32) + (32 * 64 * 2 * 2 + 64)
        + (64 * 64 * 2 * 2 + 64) + (1024 * 256 + 256) + 2 * (256 * d + d)
    )
    dec = (
        (d * 256 + 256) + (256 * 1024 + 1024) + (64 * 64 * 4 * 4 + 64) + (64 * 32 * 4 * 4 + 32)
        + (32 * 32 * 4 * 4 + 32) + (32 * c * 4 * 4 + c)
    )
    return enc, dec


def test_conv64_parameter_counts_equal_disentanglement_libs() -> None:
    assert _conv64_counts(1, 10) == (309_204, 381_313)  # dSprites, 10 latents
    assert _conv64_counts(3, 10) == (310_228, 382_339)
    for dataset, d in (("dsprites", 10), ("shapes3d", 10), ("shapes3d", 6)):
        model = make("beta_vae", dataset, encoder="conv64", decoder="conv64", latent_dim=d)
        enc, dec = _conv64_counts(model.cfg.image_channels, d)
        assert sum(p.numel() for p in model.encoder.parameters()) == enc
        assert sum(p.numel() for p in model.decoder.parameters()) == dec


def test_mlp_networks() -> None:
    model = make("factor_vae", "shapes3d", encoder="mlp", decoder="mlp", latent_dim=7)
    c = 3
    enc = (4096 * c * 1200 + 1200) + (1200 * 1200 + 1200) + 2 * (1200 * 7 + 7)
    dec = (7 * 1200 + 1200) + 2 * (1200 * 1200 + 1200) + (1200 * 4096 * c + 4096 * c)
    assert sum(p.numel() for p in model.encoder.parameters()) == enc
    assert sum(p.numel() for p in model.decoder.parameters()) == dec


@pytest.mark.parametrize(("encoder", "decoder"), [("conv64", "mlp"), ("mlp", "conv64"),
                                                  ("conv64", "paper")])
@pytest.mark.parametrize("dataset", ["dsprites", "shapes3d"])
def test_any_encoder_with_any_decoder_and_objective(encoder: str, decoder: str,
                                                    dataset: str) -> None:
    model = make("mipet_dip_vae_i", dataset, encoder=encoder, decoder=decoder, latent_dim=5,
                 num_ipe=2)
    c = model.cfg.image_channels
    out = model(images(c, 6))
    assert out.recon.shape == (6, c, 64, 64) and out.mu.shape == (6, 5)
    out.loss.backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())
    assert model.decode(out.mu).shape == (6, c, 64, 64)


def test_bad_network_names_fail_with_one_line() -> None:
    with pytest.raises(ConfigError, match=r"model.encoder must be one of \['paper', 'conv64'"):
        ModelConfig.from_dict({"name": "vae", "encoder": "resnet"})
    with pytest.raises(ConfigError, match="model.decoder='mlp': 'commutative' has its own"):
        ModelConfig.from_dict({"name": "commutative", "decoder": "mlp"})

"""Known answers for the maths: beta-TC estimators, IPE maps, EF regulariser, loss magnitudes at
initialisation (the paper code's, measured on its modules), paper checkpoint parity, ablation
switches, bf16 autocast."""

from __future__ import annotations

import math

import pytest
import torch

import models
from models import ConfigError
from models._ipe import IPEBank
from models.objectives import (
    EFRegulariser,
    LossInputs,
    betatc_terms,
    gaussian_kl,
    log_importance_weights,
)

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


from test_models import _one_thread, make  # noqa: E402,F401  (the autouse fixture applies here too)


def images(channels: int, b: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, channels, 64, 64, generator=g)
    return (x > 0.5).float() if channels == 1 else x


# -- beta-TC --------------------------------------------------------------------------------------


@pytest.mark.parametrize("b", [64, 256])
def test_paper_betatc_signature(b: int) -> None:
    """Near-prior posteriors: mi = +(d-1) log(B-1), tc = -(d-1) log(B-1) (37.3 at B=64, 49.9 at
    B=256); the mss estimator gives about zero for both."""
    torch.manual_seed(0)
    d = 10
    mu, logvar, z = torch.zeros(b, d), torch.zeros(b, d), torch.randn(b, d)
    log_w = log_importance_weights(b, 737_280, z.device, layout="paper")
    mi, tc, dwkl = betatc_terms(z, mu, logvar, log_w, "paper")
    target = (d - 1) * math.log(b - 1)
    assert abs(float(mi) - target) < 0.05 and abs(float(tc) + target) < 0.05
    log_w = log_importance_weights(b, 737_280, z.device, layout="mss")
    mi, tc, _ = betatc_terms(z, mu, logvar, log_w, "mss")
    assert abs(float(mi)) < 1e-3 and abs(float(tc)) < 1e-3


def test_mss_terms_sum_to_the_kl_estimate() -> None:
    torch.manual_seed(0)
    b, d = 256, 10
    mu, logvar = 0.7 * torch.randn(b, d), 0.3 * torch.randn(b, d) - 0.5
    log_w = log_importance_weights(b, 480_000, mu.device, layout="mss")
    sums = []
    for _ in range(20):
        z = mu + torch.exp(0.5 * logvar) * torch.randn(b, d)
        mi, tc, dwkl = betatc_terms(z, mu, logvar, log_w, "mss")
        log_qzx = -0.5 * (math.log(2 * math.pi) + logvar) - 0.5 * (z - mu) ** 2 / logvar.exp()
        log_qzx = log_qzx.sum(1)
        log_pz = (-0.5 * (math.log(2 * math.pi) + z**2)).sum(1)
        assert torch.allclose(mi + tc + dwkl, (log_qzx - log_pz).mean(), atol=1e-4)
        sums.append(float(mi + tc + dwkl))
    kl = float(gaussian_kl(mu, logvar).mean())
    assert abs(sum(sums) / len(sums) - kl) < 0.05 * kl


def test_importance_weights_layouts() -> None:
    n, b = 100, 6
    strat = (n - b + 1) / (n * (b - 1))
    w = log_importance_weights(b, n, torch.device("cpu"), layout="paper").exp()
    # the paper code's flat stride of B fills the first two columns, not the diagonals
    assert torch.allclose(w[:, 0], torch.tensor([0.01] * 4 + [strat, 0.01]))
    assert torch.allclose(w[:, 1], torch.full((b,), strat))
    assert math.isclose(float(w[3, 3]), 1 / 5, rel_tol=1e-6)
    w = log_importance_weights(b, n, torch.device("cpu"), layout="mss").exp()
    assert torch.allclose(torch.diagonal(w), torch.full((b,), 1 / n))
    assert math.isclose(float(w[5, 0]), strat, rel_tol=1e-6)
    assert math.isclose(float(w[2, 3]), strat, rel_tol=1e-6)
    assert torch.allclose(w.sum(1), torch.ones(b))


def test_betatc_rejects_a_batch_larger_than_the_dataset() -> None:
    model = make("mipet_betatcvae", dataset_size=4)
    with pytest.raises(ConfigError, match="model.dataset_size"):
        model(images(1, 8))


# -- IPE maps and EF conversion -------------------------------------------------------------------


@pytest.mark.parametrize("symmetric", [True, False])
def test_ipe_maps_are_invertible_with_positive_determinant(symmetric: bool) -> None:
    torch.manual_seed(0)
    bank = IPEBank(5, 10, symmetric=symmetric, ef_conversion=True, keep_dead=False).double()
    m = bank.matrices().detach()
    assert (torch.linalg.det(m) > 0).all()
    assert (torch.linalg.cond(m) < 1e4).all()
    z = torch.randn(7, 10, dtype=torch.double)
    back = torch.linalg.solve(m.transpose(1, 2), bank.transform(z).transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(back, z.expand(5, 7, 10), atol=1e-9)
    if symmetric:  # the exponentials of symmetric matrices are symmetric positive definite
        w = 0.5 * (bank.w1 + bank.w1.transpose(1, 2))
        e = torch.linalg.matrix_exp(w).detach()
        assert torch.allclose(e, e.transpose(1, 2)) and (torch.linalg.eigvalsh(e) > 0).all()


def test_log_norm_mask_keeps_about_half_in_training_only() -> None:
    torch.manual_seed(0)
    bank = IPEBank(3, 10, symmetric=True, ef_conversion=True, keep_dead=False)
    for w in (bank.ln_u, bank.ln_v):
        keep = (w.abs() >= w.abs().mean(dim=(1, 2), keepdim=True)).float().mean()
        assert 0.4 < float(keep) < 0.6
    train = bank.log_norm_matrix()
    bank.eval()
    assert torch.equal(bank.log_norm_matrix(), torch.bmm(bank.ln_u, bank.ln_v))
    assert not torch.allclose(train, bank.log_norm_matrix())


def test_k_maps_are_independent_copies_of_one_map() -> None:
    """The batched bank gives, for each k, what a single map with the k-th parameters gives."""
    torch.manual_seed(0)
    bank = IPEBank(3, 10, symmetric=True, ef_conversion=True, keep_dead=False).double()
    z, eps = torch.randn(16, 10, dtype=torch.double), torch.randn(16, 10, dtype=torch.double)
    out = bank(z, eps)
    for k in range(3):
        one = IPEBank(1, 10, symmetric=True, ef_conversion=True, keep_dead=False).double()
        with torch.no_grad():
            for name, p in one.named_parameters():
                p.copy_(getattr(bank, name)[k : k + 1])
        single = one(z, eps)
        assert torch.allclose(single.z_hat[0], out.z_hat[k])
        assert torch.allclose(single.ef[0], out.ef[k]) and torch.allclose(single.kl[0], out.kl[k])


def test_ef_regulariser_grows_with_the_batch() -> None:
    """The batch-summed T term makes the regulariser grow ~linearly with B (spec 2.3)."""
    torch.manual_seed(0)
    bank = IPEBank(3, 10, symmetric=True, ef_conversion=True, keep_dead=False)
    regs = []
    for b in (16, 256):
        z, eps = 0.3 * torch.randn(b, 10), torch.randn(b, 10)
        inp = LossInputs(
            x=torch.zeros(1), recon=torch.zeros(1), mu=z, logvar=torch.zeros(b, 10), z=z,
            kl_gauss=torch.zeros(b), num_ipe=3, ipe=bank(z, eps),
        )
        regs.append(EFRegulariser()(inp)["reg"].item())
    assert regs[1] > 4 * regs[0]


# -- loss magnitudes at initialisation (spec 8.3) -------------------------------------------------


def test_loss_magnitudes_at_init_dsprites() -> None:
    x = images(1, 64)
    t = make("mipet_betatcvae", num_ipe=1)(x).terms
    assert 2.4e3 < float(t["rec"]) < 3.3e3
    assert 0.005 < float(t["origin_kld"]) < 0.5
    assert -3 < float(t["ef_kld"]) < 3
    assert 100 < float(t["reg"]) < 1000  # spec: 235-360 for K = 1 at B = 64
    assert abs(float(t["mi"]) - 9 * math.log(63)) < 2
    assert abs(float(t["tc"]) + 9 * math.log(63)) < 2
    t = make("mipet_commutative")(x).terms
    assert 0.1 < float(t["origin_kld"]) < 5  # the Lie encoder's posterior is wider
    assert 0.1 < float(t["hessian"]) < 1 and 0.1 < float(t["commute"]) < 2


def test_loss_magnitudes_at_init_shapes3d() -> None:
    t = make("mipet_vae", "shapes3d")(images(3, 64)).terms
    assert 0.95e3 < float(t["rec"]) < 1.1e3
    assert -3 < float(t["kld"]) < 3
    assert 300 < float(t["reg"]) < 3000  # K = 3 at B = 64: spec ~970


# -- paper checkpoints ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "dataset", "keys"),
    [
        ("mipet_betatcvae", "dsprites", [
            "encoder.hidden_layers.0.conv.weight", "encoder.dense.weight", "encoder.logvar.bias",
            "decoder.dense2.bias", "decoder.hidden_layers.2.conv.weight",
            "decoder.hidden_layers.3.weight", "inv_equ.2.w1",
            "inv_equ.0.subobj.z_parameter_generator.layers.1",
            "inv_equ.1.subobj.post_carrier.layers.0", "inv_equ.2.subobj.log_norm.w2",
            "inv_equ.0.subobj.lambda_.bias",
        ]),
        ("mipet_commutative", "shapes3d", [
            "encoder.dense1.weight", "encoder.to_means.0.2.weight", "encoder.to_logvar.0.0.bias",
            "encoder.mu.weight", "decoder.lie_alg_basis_ls.9", "inv_equ.w2",
            "inv_equ.subobj.nu.layers.0", "decoder.hidden_layers.3.bias",
        ]),
    ],
)
def test_paper_state_dict_round_trip(name: str, dataset: str, keys: list[str]) -> None:
    src = make(name, dataset, seed=1)
    paper = models.to_paper_state_dict(src)
    assert set(keys) <= set(paper)
    assert sum(v.numel() for v in paper.values()) == sum(p.numel() for p in src.parameters())
    if name == "mipet_commutative":
        assert paper["decoder.lie_alg_basis_ls.3"].shape == (1, 10, 10)
        assert paper["inv_equ.subobj.post_carrier.layers.0"].shape == (20, 100)
    assert paper["encoder.hidden_layers.0.conv.weight"].shape[1] == src.cfg.image_channels
    dst = make(name, dataset, seed=2)
    models.load_paper_state_dict(dst, paper)
    x = images(src.cfg.image_channels, 8)
    eps = torch.randn(8, 10)
    for train in (True, False):
        src.train(train)
        dst.train(train)
        torch.manual_seed(0)
        a = src(x, eps)
        torch.manual_seed(0)
        b = dst(x, eps)
        assert a.loss.item() == b.loss.item()
    lean = make(name, dataset, seed=3, keep_dead_params=False)
    models.load_paper_state_dict(lean, paper)  # the dead parameters are skipped
    assert torch.equal(lean.decoder.dense1.weight, src.decoder.dense1.weight)


def test_paper_state_dict_mismatch_is_a_config_error() -> None:
    paper = models.to_paper_state_dict(make("mipet_vae"))
    with pytest.raises(ConfigError, match="shape"):
        models.load_paper_state_dict(make("mipet_vae", "shapes3d"), paper)
    with pytest.raises(ConfigError, match="inv_equ.2"):
        models.load_paper_state_dict(make("mipet_vae", num_ipe=2), paper)
    with pytest.raises(ConfigError, match="lacks"):
        models.load_paper_state_dict(make("mipet_vae", num_ipe=4), paper)


# -- ablations and modes --------------------------------------------------------------------------


def test_ablation_switches() -> None:
    x, eps = images(1, 8), torch.randn(8, 10)
    out = make("mipet_vae", ef_conversion=False).eval()(x, eps)
    assert "reg" not in out.terms and out.z_hat.shape == (3, 8, 10)
    assert float(out.terms["kld"]) == float(out.terms["origin_kld"])
    lean = make("mipet_vae", ef_conversion=False, keep_dead_params=False)
    assert sum(p.numel() for p in lean.ipe.parameters()) == 3 * 2 * 100
    out = make("mipet_vae", calibration=False)(x, eps)
    assert float(out.terms["reg"]) == float(out.terms["ef"]) and float(out.terms["cal"]) > 0
    sym, raw = make("mipet_vae"), make("mipet_vae", ipe_symmetric=False)
    assert sym.state_dict().keys() == raw.state_dict().keys()
    assert not torch.allclose(sym.ipe.matrices(), raw.ipe.matrices())
    beta = make("mipet_vae", beta=4.0)
    assert beta(x, eps).weights["kld"] == 4.0


def test_decode_is_the_reconstruction_path() -> None:
    model = make("mipet_vae").eval()
    x, eps = images(1, 4), torch.randn(4, 10)
    out = model(x, eps)
    assert torch.allclose(model.decode(out.z), out.recon, atol=1e-6)


def test_commutative_forward_eq_prob_switches_the_decode_source() -> None:
    x, eps = images(1, 4), torch.randn(4, 10)
    from_e = make("mipet_commutative", forward_eq_prob=1.0)(x, eps)
    from_d = make("mipet_commutative", forward_eq_prob=0.0)(x, eps)
    model = make("mipet_commutative", forward_eq_prob=1.0)
    g_e = model.encoder(x)[2]
    assert torch.allclose(from_e.recon, torch.sigmoid(model.decoder.logits(g_e)), atol=1e-6)
    assert not torch.allclose(from_e.recon, from_d.recon)
    assert float(from_e.terms["group_rec"]) == float(from_d.terms["group_rec"])


def test_bf16_autocast_keeps_losses_in_float32() -> None:
    model = make("mipet_betatcvae")
    x, eps = images(1, 8), torch.randn(8, 10)
    ref = model(x, eps)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, eps)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert abs(float(out.terms["rec"]) / float(ref.terms["rec"]) - 1) < 0.05
    out.loss.backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())

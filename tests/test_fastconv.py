"""The decoder's transposed convolutions as phase convolutions (models/_fastconv.py): the same
values and gradients as torch's ConvTranspose2d(k4, s2, p1), the same parameters."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models._fastconv import (
    PhaseConvTranspose2d,
    phase_conv_transpose2d,
    phase_kernel,
    phase_kernel_grad,
    set_fast_deconv,
)
from models._nets import deconv_head

# (Cin, Cout, H) of every transposed convolution of the decoders: 64->64 at 4x4, 64->32 at 8x8,
# 32->32 at 16x16, and the image layer 32->C at 32x32 for C = 1 (dSprites) and 3 (3D Shapes, Cars)
SHAPES = [(64, 64, 4, True), (64, 32, 8, True), (32, 32, 16, True), (32, 1, 32, False),
          (32, 3, 32, False)]
FORMATS = [torch.channels_last, torch.contiguous_format]


def _reference(x, w, b, relu):
    y = F.conv_transpose2d(x, w, b, stride=2, padding=1)
    return torch.relu(y) if relu else y


def _inputs(cin, cout, h, dtype, fmt, n=3):
    gen = torch.Generator().manual_seed(cin * 100 + cout + h)
    x = torch.randn(n, cin, h, h, generator=gen, dtype=dtype).contiguous(memory_format=fmt)
    w = torch.randn(cin, cout, 4, 4, generator=gen, dtype=dtype) / 8
    b = torch.randn(cout, generator=gen, dtype=dtype)
    g = torch.randn(n, cout, 2 * h, 2 * h, generator=gen, dtype=dtype)
    return x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), g


@pytest.mark.parametrize("fmt", FORMATS, ids=["channels_last", "nchw"])
@pytest.mark.parametrize(("cin", "cout", "h", "relu"), SHAPES)
def test_forward_and_gradients_equal_conv_transpose2d(cin, cout, h, relu, fmt):
    x, w, b, g = _inputs(cin, cout, h, torch.float32, fmt)
    y0 = _reference(x, w, b, relu)
    ref = (y0, *torch.autograd.grad(y0, (x, w, b), g))
    y1 = phase_conv_transpose2d(x, w, b, relu)
    got = (y1, *torch.autograd.grad(y1, (x, w, b), g))
    for name, r, o in zip(("output", "grad x", "grad weight", "grad bias"), ref, got,
                          strict=True):
        assert o.shape == r.shape and o.dtype == r.dtype, name
        # float32 sums of up to 3*32*32 terms: equal to 1e-5 of the largest entry
        o, r = o.detach(), r.detach()
        assert float((o - r).abs().max()) <= 1e-5 * float(r.abs().max()), name
    assert y1.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize(("cin", "cout", "h", "relu"), SHAPES)
def test_float64_agrees_to_rounding(cin, cout, h, relu):
    x, w, b, g = _inputs(cin, cout, h, torch.float64, torch.channels_last)
    y0 = _reference(x, w, b, relu)
    y1 = phase_conv_transpose2d(x, w, b, relu)
    for r, o in zip((y0, *torch.autograd.grad(y0, (x, w, b), g)),
                    (y1, *torch.autograd.grad(y1, (x, w, b), g)), strict=True):
        torch.testing.assert_close(o, r, atol=1e-11, rtol=1e-11)


def test_phase_kernel_round_trip_and_taps():
    w = torch.randn(5, 3, 4, 4)
    k = phase_kernel(w)
    assert k.shape == (12, 5, 2, 2)
    assert torch.equal(phase_kernel_grad(k), w)
    # phase (a, b) = (1, 0), output channel co = 2, tap (dy, dx) = (0, 1) reads w[., 2, 2, 1]
    assert torch.equal(k[(2 * 1 + 0) * 3 + 2, :, 0, 1], w[:, 2, 3 - 0 - 1, 3 - 2 - 0])


def test_module_keeps_conv_transpose2d_parameters_and_switch():
    torch.manual_seed(0)
    plain = nn.ConvTranspose2d(32, 32, 4, 2, 1)
    fast = PhaseConvTranspose2d(32, 32, relu=True)
    assert isinstance(fast, nn.ConvTranspose2d)
    fast.load_state_dict(plain.state_dict())
    assert list(fast.state_dict()) == ["weight", "bias"]
    x = torch.randn(2, 32, 16, 16)
    ref = torch.relu(plain(x))
    torch.testing.assert_close(fast(x), ref, atol=1e-5, rtol=1e-5)
    set_fast_deconv(fast, False)
    assert not fast.fast
    torch.testing.assert_close(fast(x), ref, atol=0, rtol=0)


def test_deconv_head_state_dict_is_the_paper_layout():
    head = deconv_head(1)
    paper = nn.Sequential(
        nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(64, 32, 4, 2, 1),
        nn.ReLU(), nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, 1, 4, 2, 1),
    )
    assert {k: v.shape for k, v in head.state_dict().items()} == {
        k: v.shape for k, v in paper.state_dict().items()
    }
    head.load_state_dict(paper.state_dict())
    z = torch.randn(3, 64, 4, 4)
    torch.testing.assert_close(head(z), paper(z), atol=1e-5, rtol=1e-5)


def test_scratch_buffer_survives_batch_size_changes_and_is_not_copied():
    m = PhaseConvTranspose2d(32, 32, relu=True)
    for n in (4, 2, 4):  # a smaller last batch, then the training size again
        x = torch.randn(n, 32, 16, 16, requires_grad=True)
        g = torch.randn(n, 32, 32, 32)
        gx, gw = torch.autograd.grad(m(x), (x, m.weight), g)
        rx, rw = torch.autograd.grad(_reference(x, m.weight, m.bias, True), (x, m.weight), g)
        torch.testing.assert_close(gx, rx, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gw, rw, atol=1e-5, rtol=1e-5)
    assert m._scratch.buf is not None
    assert copy.deepcopy(m)._scratch.buf is None


def test_autocast_bf16_matches_torch_dtypes_and_values():
    x, w, b, g = _inputs(32, 32, 16, torch.float32, torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y0 = _reference(x, w, b, True)
        y1 = phase_conv_transpose2d(x, w, b, True)
    assert y1.dtype == y0.dtype == torch.bfloat16
    ref = torch.autograd.grad(y0, (x, w, b), g.bfloat16())
    got = torch.autograd.grad(y1, (x, w, b), g.bfloat16())
    torch.testing.assert_close(y1.detach().float(), y0.detach().float(), atol=0.05, rtol=0.02)
    for r, o in zip(ref, got, strict=True):
        assert o.dtype == r.dtype == torch.float32
        scale = float(r.abs().max())
        assert float((o - r).abs().max()) < 0.02 * scale


@pytest.mark.parametrize(("cin", "cout", "h", "relu"), [SHAPES[2], SHAPES[3]])
def test_strided_incoming_gradients(cin, cout, h, relu):
    """The backward reads the output gradient through strided views: an expanded gradient (from
    `.sum()`) and one of a slice must give torch's result too."""
    x, w, b, _ = _inputs(cin, cout, h, torch.float32, torch.channels_last)
    for loss in (lambda y: y.sum(), lambda y: y[:, :, 1:, :-3].square().sum()):
        ref = torch.autograd.grad(loss(_reference(x, w, b, relu)), (x, w, b))
        got = torch.autograd.grad(loss(phase_conv_transpose2d(x, w, b, relu)), (x, w, b))
        for r, o in zip(ref, got, strict=True):
            assert float((o - r).abs().max()) <= 1e-5 * float(r.abs().max())

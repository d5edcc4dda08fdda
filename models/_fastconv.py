"""The decoder's transposed convolution ConvTranspose2d(k=4, s=2, p=1), computed faster on CPU.

A stride-2, kernel-4, padding-1 transposed convolution is four stride-1 convolutions with 2x2
kernels, one per output phase (a, b) in {0, 1}^2, interleaved:

    y[n, co, 2m+a, 2l+b] = bias[co] + sum_{ci, dy, dx} xp[n, ci, m+a+dy, l+b+dx]
                                                   * w[ci, co, 3-2dy-a, 3-2dx-b]

with xp the input padded by 1 on each side and w the ConvTranspose2d weight (Cin, Cout, 4, 4).
Stacking the four phase kernels gives one Conv2d(Cin, 4*Cout, k=2, p=1) whose (H+1, W+1) output
holds phase (a, b) at rows a..a+H-1 and columns b..b+W-1 of its channel block (a, b).

oneDNN (torch's CPU convolutions) computes the weight gradient of a transposed convolution in
channels_last slowly (measured on one core: 245 ms for the 32->32 layer on 768 16x16 maps, 3x its
forward); the same gradient through the 2x2 phase convolution takes 64 ms. So
`PhaseConvTranspose2d` runs the forward as torch's transposed convolution and the whole backward
(input, weight and bias gradients) through the phase convolution, with the following ReLU's
backward fused into the one pass that lays the output gradient out by phase (into a buffer kept
between steps, see `Scratch`). For outputs of at most `PHASE_FORWARD_MAX_OUT` channels (the image
layer, 1 or 3 channels) the forward runs as the phase convolution too (oneDNN's transposed
convolution with one output channel is 3x slower). Same values up to float rounding (tested to
1e-5 in tests/test_fastconv.py); the parameters and state-dict entries are those of
`nn.ConvTranspose2d`. On other devices, or with `fast = False`, the module is torch's
transposed convolution (then ReLU).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

PHASE_FORWARD_MAX_OUT = 4  # output channels up to which the forward runs as the phase conv


def phase_kernel(weight: Tensor) -> Tensor:
    """ConvTranspose2d weight (Cin, Cout, 4, 4) -> the phase convolution's weight
    (4*Cout, Cin, 2, 2), output channel (2a + b) * Cout + co, tap (dy, dx) = w[., ., 3-2dy-a,
    3-2dx-b]."""
    cin, cout = weight.shape[:2]
    k = weight.flip(2, 3).reshape(cin, cout, 2, 2, 2, 2)  # (ci, co, dy, a, dx, b)
    return k.permute(3, 5, 1, 0, 2, 4).reshape(4 * cout, cin, 2, 2)


def phase_kernel_grad(grad: Tensor) -> Tensor:
    """Inverse of `phase_kernel`: (4*Cout, Cin, 2, 2) -> (Cin, Cout, 4, 4)."""
    cout, cin = grad.shape[0] // 4, grad.shape[1]
    g = grad.reshape(2, 2, cout, cin, 2, 2).permute(3, 2, 4, 0, 5, 1)  # (ci, co, dy, a, dx, b)
    return g.reshape(cin, cout, 4, 4).flip(2, 3)


def _format(x: Tensor) -> torch.memory_format:
    if x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _image_view(img: Tensor) -> Tensor:
    """(N, C, 2H, 2W) -> the view (N, H, 2, W, 2, C) of img[n, c, 2m+a, 2l+b] at
    [n, m, a, l, b, c]."""
    n, c, h2, w2 = img.shape
    s_n, s_c, s_y, s_x = img.stride()
    return img.as_strided(
        (n, h2 // 2, 2, w2 // 2, 2, c), (s_n, 2 * s_y, s_y, 2 * s_x, s_x, s_c),
        img.storage_offset(),
    )


def _phase_view(y2: Tensor) -> Tensor:
    """Phase-conv layout (N, 4*Cout, H+1, W+1) -> the view (N, H, 2, W, 2, Cout) of
    y2[n, (2a+b)*Cout + c, m+a, l+b] at [n, m, a, l, b, c] (the offset is linear in the indices,
    so the whole interleave is one strided copy)."""
    n, c4, h1, w1 = y2.shape
    c = c4 // 4
    s_n, s_c, s_p, s_q = y2.stride()
    return y2.as_strided(
        (n, h1 - 1, 2, w1 - 1, 2, c),
        (s_n, s_p, s_p + 2 * c * s_c, s_q, s_q + c * s_c, s_c),
        y2.storage_offset(),
    )


def _phases_to_image(y2: Tensor, fmt: torch.memory_format) -> Tensor:
    """Phase-conv output (N, 4*Cout, H+1, W+1) -> the interleaved image (N, Cout, 2H, 2W)."""
    n, c4, h1, w1 = y2.shape
    out = torch.empty(
        (n, c4 // 4, 2 * (h1 - 1), 2 * (w1 - 1)), dtype=y2.dtype, device=y2.device,
        memory_format=fmt,
    )
    _image_view(out).copy_(_phase_view(y2))
    return out


class Scratch:
    """A reusable zeroed buffer for `_PhaseDeconv.backward` (fresh 100 MB tensors cost page
    faults on every step). Not copied by `copy.deepcopy` or pickling: a copy starts empty."""

    def __init__(self) -> None:
        self.buf: Tensor | None = None

    def zeros(self, shape: tuple[int, ...], like: Tensor, fmt: torch.memory_format) -> Tensor:
        """A tensor of `shape`, `like`'s dtype and device, in `fmt`; zero where the last caller
        did not write (callers write the same positions each time)."""
        b = self.buf
        if (
            b is None or tuple(b.shape) != shape or b.dtype != like.dtype
            or b.device != like.device or not b.is_contiguous(memory_format=fmt)
        ):
            b = torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)
            self.buf = b.zero_()
        return b

    def __deepcopy__(self, memo: dict) -> Scratch:
        return Scratch()

    def __reduce__(self) -> tuple:
        return (Scratch, ())


def _image_to_phases(
    g: Tensor, y: Tensor | None, scratch: Scratch, fmt: torch.memory_format
) -> Tensor:
    """Adjoint of `_phases_to_image`: (N, Cout, 2H, 2W) -> (N, 4*Cout, H+1, W+1), zeros where no
    output pixel reads the phase conv. With `y` (the ReLU output) it also applies the ReLU's
    backward (g where y > 0, else 0) in the same pass."""
    n, cout, h2, w2 = g.shape
    g2 = scratch.zeros((n, 4 * cout, h2 // 2 + 1, w2 // 2 + 1), g, fmt)
    if y is None:
        _phase_view(g2).copy_(_image_view(g))
    else:
        torch.ops.aten.threshold_backward.grad_input(
            _image_view(g), _image_view(y), 0.0, grad_input=_phase_view(g2)
        )
    return g2


_S1, _S2, _P1, _P0 = [1, 1], [2, 2], [1, 1], [0, 0]


class _PhaseDeconv(torch.autograd.Function):
    """y = conv_transpose2d(x, w, bias, stride 2, padding 1), optionally followed by ReLU, with the
    backward (and, for few output channels, the forward) through the phase convolution."""

    @staticmethod
    def forward(  # noqa: D102
        ctx, x: Tensor, weight: Tensor, bias: Tensor | None, relu: bool, scratch: Scratch
    ) -> Tensor:
        fmt = _format(x)
        x = x.contiguous(memory_format=fmt)
        ctx.has_bias, ctx.scratch = bias is not None, scratch
        if weight.shape[1] <= PHASE_FORWARD_MAX_OUT:
            k = phase_kernel(weight).contiguous(memory_format=fmt)
            b4 = bias.repeat(4) if bias is not None else None
            y2 = torch.ops.aten.convolution(x, k, b4, _S1, _P1, _S1, False, _P0, 1)
            y = _phases_to_image(y2, fmt)
        else:
            y = torch.ops.aten.convolution(x, weight, bias, _S2, _P1, _S1, True, _P0, 1)
        if relu:
            y.relu_()
        ctx.save_for_backward(x, weight, y if relu else None)
        return y

    @staticmethod
    @once_differentiable  # no double backward (nothing in the package needs one)
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # noqa: D102
        x, weight, y = ctx.saved_tensors
        fmt = _format(x)
        k = phase_kernel(weight).contiguous(memory_format=fmt)
        g2 = _image_to_phases(grad, y, ctx.scratch, fmt)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx, gk, gb4 = torch.ops.aten.convolution_backward(
            g2, x, k, [k.shape[0]] if ctx.has_bias else None, _S1, _P1, _S1, False, _P0, 1,
            [need_x, need_w, need_b and ctx.has_bias],
        )
        gw = phase_kernel_grad(gk) if need_w else None
        gb = gb4.view(4, -1).sum(0) if gb4 is not None and need_b else None
        return gx if need_x else None, gw, gb, None, None


def phase_conv_transpose2d(
    x: Tensor, weight: Tensor, bias: Tensor | None, relu: bool = False,
    scratch: Scratch | None = None,
) -> Tensor:
    """conv_transpose2d(x, weight, bias, stride=2, padding=1) for 4x4 kernels (then ReLU if
    `relu`), x (N, Cin, H, W) -> (N, Cout, 2H, 2W), with the backward through the phase
    convolution; `scratch` keeps the backward's buffer between calls. Under autocast the inputs
    are cast to the autocast dtype, as torch's conv_transpose2d does."""
    scratch = Scratch() if scratch is None else scratch
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        x, weight = x.to(dt), weight.to(dt)
        bias = bias.to(dt) if bias is not None else None
        with torch.autocast(dev, enabled=False):
            return _PhaseDeconv.apply(x, weight, bias, relu, scratch)
    return _PhaseDeconv.apply(x, weight, bias, relu, scratch)


class PhaseConvTranspose2d(nn.ConvTranspose2d):
    """`nn.ConvTranspose2d(cin, cout, 4, 2, 1)` (same parameters and state-dict keys), followed
    by ReLU if `relu`, that runs as `phase_conv_transpose2d` on CPU while `fast` is set (the
    default) and as torch's transposed convolution otherwise."""

    def __init__(self, in_channels: int, out_channels: int, relu: bool = False) -> None:
        super().__init__(in_channels, out_channels, 4, 2, 1)
        self.relu, self.fast = relu, True
        self._scratch = Scratch()

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        """x (N, Cin, H, W) -> (N, Cout, 2H, 2W)."""
        if self.fast and output_size is None and x.device.type == "cpu" and x.dim() == 4:
            return phase_conv_transpose2d(x, self.weight, self.bias, self.relu, self._scratch)
        y = super().forward(x, output_size)
        return torch.relu_(y) if self.relu else y

    def extra_repr(self) -> str:
        return super().extra_repr() + (", relu=True" if self.relu else "")


def set_fast_deconv(module: nn.Module, flag: bool) -> None:
    """Switch every `PhaseConvTranspose2d` in `module` to the phase path (True) or to torch's
    transposed convolution (False; the previous code, for comparisons)."""
    for m in module.modules():
        if isinstance(m, PhaseConvTranspose2d):
            m.fast = flag

"""Fast forms of the FIR resampling in `mmfs/nn/ops.py`: the same maths, no inserted zeros.

`blur`, `blur_down` and `upsample_2x` are `upfirdn2d` (no resampling, 2x down, 2x up) as one depthwise
convolution (strided for down-sampling, a strided transposed convolution for up-sampling);
`polyphase_weight` and `pixel_shuffle_2x` turn a stride-2 transposed convolution into one regular
convolution at the input resolution plus a shuffle. `tests/test_ops.py` proves each equal to the
reference. Only `mmfs/nn/fast.py` uses them.

The depthwise blurs back-propagate through `ConstantDepthwise`: the gradient of a depthwise convolution
with a constant kernel is itself one depthwise (transposed) convolution, which PyTorch's CPU backends run
several times faster as a forward call than as `convolution_backward` (measured in docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mmfs.nn.ops import pad_pair


def _depthwise(kernel: Tensor, channels: int, dtype: torch.dtype) -> Tensor:
    # conv2d correlates, so flip to convolve as upfirdn2d does (a no-op for the symmetric blur kernels)
    return torch.flip(kernel, [0, 1]).to(dtype)[None, None].expand(channels, 1, *kernel.shape)


class ConstantDepthwise(torch.autograd.Function):
    """`F.conv2d(x, weight, bias, stride, padding, groups=C)` for a constant `weight` [C, 1, k, k].

    Same forward; the backward computes the input's gradient as one depthwise convolution of the output
    gradient with the flipped kernel (stride 1) or one depthwise transposed convolution (stride 2), both
    differentiable again (R1's double backward), and the bias's as a sum. `weight` must not require grad.
    """

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int) -> Tensor:
        return F.conv2d(x, weight, bias, stride=stride, padding=padding, groups=x.shape[1])

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: ANN001 (autograd's signature)
        x, weight, _, stride, padding = inputs
        ctx.weight, ctx.stride, ctx.padding = weight, stride, padding
        ctx.x_shape, ctx.x_dtype = x.shape, x.dtype

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: ANN001, ANN205
        grad_x = grad_bias = None
        if ctx.needs_input_grad[0]:
            weight, stride, padding = ctx.weight.to(grad.dtype), ctx.stride, ctx.padding
            k = weight.shape[-1]
            if stride == 1:
                grad_x = depthwise(grad, weight.flip(2, 3), None, 1, k - 1 - padding)
            else:
                h, w = ctx.x_shape[-2:]
                skipped = ((h + 2 * padding - k) % stride, (w + 2 * padding - k) % stride)  # rows past the last tap
                grad_x = F.conv_transpose2d(
                    grad, weight, stride=stride, padding=padding, output_padding=skipped, groups=grad.shape[1]
                )
            grad_x = grad_x.to(ctx.x_dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=(0, 2, 3))
        return grad_x, None, grad_bias, None, None


def depthwise(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int) -> Tensor:
    """Depthwise conv with a constant kernel, back-propagated by `ConstantDepthwise` where that is exact.

    Autograd's own backward is kept where it must be: a kernel that trains, padding beyond `k - 1` (the
    gradient would need cropping), a stride other than 1 and 2, or nothing to differentiate.
    """
    k = weight.shape[-1]
    wanted = x.requires_grad or (bias is not None and bias.requires_grad)
    custom = wanted and torch.is_grad_enabled() and not weight.requires_grad
    if custom and stride in (1, 2) and 0 <= padding <= k - 1 and weight.shape[-2] == k:
        return ConstantDepthwise.apply(x, weight, bias, stride, padding)
    return F.conv2d(x, weight, bias, stride=stride, padding=padding, groups=x.shape[1])


def blur(x: Tensor, kernel: Tensor, pad: int | Sequence[int], bias: Tensor | None = None) -> Tensor:
    """Fast `upfirdn2d(x, kernel, pad=pad)` (+ optional per-channel bias): one depthwise convolution."""
    p0, p1 = pad_pair(pad)
    c = x.shape[1]
    if bias is not None:
        bias = bias.to(x.dtype)
    if p0 == p1 and p0 >= 0:
        return depthwise(x, _depthwise(kernel, c, x.dtype), bias, 1, p0)
    out = upfirdn2d_fast_pad(x, kernel, p0, p1, stride=1)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def blur_down(x: Tensor, kernel: Tensor, pad: int | Sequence[int]) -> Tensor:
    """Fast `upfirdn2d(x, kernel, down=2, pad=pad)`: a stride-2 depthwise convolution (only kept samples)."""
    p0, p1 = pad_pair(pad)
    c = x.shape[1]
    if p0 == p1 and p0 >= 0:
        return depthwise(x, _depthwise(kernel, c, x.dtype), None, 2, p0)
    return upfirdn2d_fast_pad(x, kernel, p0, p1, stride=2)


def upfirdn2d_fast_pad(x: Tensor, kernel: Tensor, p0: int, p1: int, stride: int) -> Tensor:
    """Depthwise filter with asymmetric padding (F.pad then a plain strided depthwise conv)."""
    c = x.shape[1]
    x = F.pad(x, [p0, p1, p0, p1])
    return depthwise(x, _depthwise(kernel, c, x.dtype), None, stride, 0)


def upsample_2x(x: Tensor, kernel: Tensor, pad: int | Sequence[int]) -> Tensor:
    """Fast `upfirdn2d(x, kernel, up=2, pad=pad)`: a stride-2 depthwise transposed convolution, no zeros."""
    p0, p1 = pad_pair(pad)
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    k = kernel.shape[0]
    # upfirdn2d output n equals full transposed-conv output n + (k - 1 - p0); crop the rest
    crop = k - 1 - p0
    out_h, out_w = h * 2 + p0 + p1 - k + 1, w * 2 + p0 + p1 - k + 1
    if crop < 0:
        x_pad = -((crop - 1) // 2)  # whole input samples of zero padding; each adds two output samples
        x = F.pad(x, [x_pad, x_pad, x_pad, x_pad])
        crop += 2 * x_pad
    # conv_transpose2d scatters (a true convolution), so the kernel is used unflipped
    weight = kernel.to(x.dtype)[None, None].expand(c, 1, k, k)
    if crop * 2 + out_h == (x.shape[2] - 1) * 2 + k and out_h == out_w and h == w:
        return F.conv_transpose2d(x, weight, stride=2, padding=crop, groups=c)
    out = F.conv_transpose2d(x, weight, stride=2, groups=c)
    return out[:, :, crop : crop + out_h, crop : crop + out_w]


def _phase_selection(k: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """0/1 matrix [k*k, 4*T*T]: column (dy, dx, a, b) picks kernel tap (2(T-1-a) + dy, 2(T-1-b) + dx) if it exists."""
    t = (k + 1) // 2
    sel = torch.zeros(k * k, 4 * t * t, device=device, dtype=dtype)
    col = 0
    for dy in range(2):
        for dx in range(2):
            for a in range(t):
                for b in range(t):
                    i, j = 2 * (t - 1 - a) + dy, 2 * (t - 1 - b) + dx
                    if i < k and j < k:
                        sel[i * k + j, col] = 1
                    col += 1
    return sel


def polyphase_weight(weight: Tensor) -> Tensor:
    """Weights [4, out, in, T, T] of the 4 output phases (dy, dx) of a stride-2 transposed conv.

    `weight` is [out, in, k, k] as the transposed conv applies it (`w[out, in]` scattered from every input
    sample). Phase (dy, dx) of output sample (2m + dy, 2n + dx) only sees the taps 2j + dy of the kernel, so
    one T x T regular convolution (T = ceil(k / 2)) at the input resolution with 4 * out channels, then a
    pixel shuffle, replaces the transposed convolution, which CPU backends run several times slower.
    """
    out_ch, in_ch, k, _ = weight.shape
    t = (k + 1) // 2
    phases = weight.reshape(out_ch, in_ch, k * k) @ _phase_selection(k, weight.device, weight.dtype)
    return phases.reshape(out_ch, in_ch, 4, t, t).permute(2, 0, 1, 3, 4)


def conv_transpose_2x_polyphase(x: Tensor, weight: Tensor) -> Tensor:
    """`conv_transpose2d(x, weight.transpose(0, 1), stride=2)` for weight [out, in, k, k], without zero insertion.

    The result has 2 * (H + T - 1) samples per side: the transposed conv's 2H - 2 + k, then zeros.
    """
    out_ch, in_ch, k, _ = weight.shape
    t = (k + 1) // 2
    y = F.conv2d(x, polyphase_weight(weight).reshape(4 * out_ch, in_ch, t, t), padding=t - 1)
    return pixel_shuffle_2x(y)


def pixel_shuffle_2x(x: Tensor, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Phase-major pixel shuffle, padded: out[b, c, p0 + 2i + dy, p0 + 2j + dx] = x[b, (2 dy + dx) C + c, i, j].

    One copy, into a buffer of x's memory format (channels-last stays channels-last) whose border of
    `pad` = (before, after) samples is zero. With phase-major channels a channels-last copy moves whole
    C-runs, which is several times faster than `F.pixel_shuffle`'s channel-minor order.
    """
    b, c4, h, w = x.shape
    c = c4 // 4
    p0, p1 = pad
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty(b, c, 2 * h + p0 + p1, 2 * w + p0 + p1, dtype=x.dtype, device=x.device, memory_format=fmt)
    if p0 or p1:  # zero only the border, not the whole buffer
        out[:, :, :p0].zero_()
        out[:, :, out.shape[2] - p1 :].zero_()
        out[:, :, :, :p0].zero_()
        out[:, :, :, out.shape[3] - p1 :].zero_()
    inner = out[:, :, p0 : p0 + 2 * h, p0 : p0 + 2 * w].unflatten(2, (h, 2)).unflatten(4, (w, 2))
    inner.copy_(x.reshape(b, 2, 2, c, h, w).permute(0, 3, 4, 1, 5, 2))  # -> [b, c, i, dy, j, dx]
    return out

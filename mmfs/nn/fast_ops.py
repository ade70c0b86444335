"""Fast forms of the FIR resampling in `mmfs/nn/ops.py`: the same maths, no inserted zeros.

`blur`, `blur_down` and `upsample_2x` are `upfirdn2d` (no resampling, 2x down, 2x up) as one depthwise
convolution (strided for down-sampling, a strided transposed convolution for up-sampling).
`tests/test_ops.py` proves each equal to the reference. Only `mmfs/nn/fast.py` uses them.

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

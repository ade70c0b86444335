"""The reference StyleGAN2 ops in pure PyTorch (no custom kernels): FIR resampling and the fused leaky ReLU.

`upfirdn2d` inserts `up - 1` zeros between samples, pads or crops, convolves every channel with the
flipped FIR kernel and keeps every `down`-th sample: what the official code computes on the CPU.
The fast forms of the same maths, which never touch an inserted zero, are in `mmfs/nn/fast_ops.py`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

SQRT2 = math.sqrt(2.0)


def make_kernel(k: Sequence[float] | Tensor) -> Tensor:
    """2-D FIR kernel from a 1-D one (outer product), normalised to sum 1."""
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def fused_leaky_relu(
    x: Tensor, bias: Tensor | None = None, negative_slope: float = 0.2, scale: float = SQRT2
) -> Tensor:
    """`leaky_relu(x + bias, 0.2) * sqrt(2)`, bias broadcast over channel dim 1."""
    if bias is not None:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        x = x + bias.to(x.dtype).view(shape)
    return F.leaky_relu(x, negative_slope) * scale


def pad_pair(pad: int | Sequence[int]) -> tuple[int, int]:
    """`pad` as (before, after); an int pads both sides alike."""
    if isinstance(pad, int):
        return pad, pad
    return int(pad[0]), int(pad[1])


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: int | Sequence[int] = (0, 0)) -> Tensor:
    """Reference up-sample (zero insertion), FIR filter (flipped kernel), down-sample; pad is (before, after)."""
    p0, p1 = pad_pair(pad)
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    out = x.reshape(b * c, 1, h, 1, w, 1)
    out = F.pad(out, [0, up - 1, 0, 0, 0, up - 1])  # zeros after every sample, in both axes
    out = out.reshape(b * c, 1, h * up, w * up)
    out = F.pad(out, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    # negative pads crop
    out = out[:, :, max(-p0, 0) : out.shape[2] - max(-p1, 0), max(-p0, 0) : out.shape[3] - max(-p1, 0)]
    weight = torch.flip(kernel, [0, 1]).to(out.dtype)[None, None]
    out = F.conv2d(out, weight)
    out = out[:, :, ::down, ::down]
    return out.reshape(b, c, out.shape[2], out.shape[3])

"""Pure-PyTorch resampling and activation ops of StyleGAN2 (no custom kernels).

Two forms of every resampling op live here:

* the *reference* form (`upfirdn2d`): insert `up - 1` zeros between samples, pad or crop, convolve every
  channel with the flipped FIR kernel, keep every `down`-th sample. It is what the official code computes
  on the CPU (reference-implementation.md §9), kept for parity tests and the benchmark's naive path;
* the *fast* forms (`blur`, `blur_down`, `upsample_2x`): the same maths as one depthwise convolution that
  never touches an inserted zero (a strided convolution for down-sampling, a strided transposed convolution
  for up-sampling). Tests prove them equal to `upfirdn2d`.
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


def _pad2(pad: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(pad, int):
        return pad, pad
    return int(pad[0]), int(pad[1])


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: int | Sequence[int] = (0, 0)) -> Tensor:
    """Reference up-sample (zero insertion), FIR filter (flipped kernel), down-sample; pad is (before, after)."""
    p0, p1 = _pad2(pad)
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


def _depthwise(kernel: Tensor, channels: int, dtype: torch.dtype) -> Tensor:
    # conv2d correlates, so flip to convolve as upfirdn2d does (a no-op for the symmetric blur kernels)
    return torch.flip(kernel, [0, 1]).to(dtype)[None, None].expand(channels, 1, *kernel.shape)


def blur(x: Tensor, kernel: Tensor, pad: int | Sequence[int], bias: Tensor | None = None) -> Tensor:
    """Fast `upfirdn2d(x, kernel, pad=pad)` (+ optional per-channel bias): one depthwise convolution."""
    p0, p1 = _pad2(pad)
    c = x.shape[1]
    if bias is not None:
        bias = bias.to(x.dtype)
    if p0 == p1 and p0 >= 0:
        return F.conv2d(x, _depthwise(kernel, c, x.dtype), bias, padding=p0, groups=c)
    out = upfirdn2d_fast_pad(x, kernel, p0, p1, stride=1)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def blur_down(x: Tensor, kernel: Tensor, pad: int | Sequence[int]) -> Tensor:
    """Fast `upfirdn2d(x, kernel, down=2, pad=pad)`: a stride-2 depthwise convolution (only kept samples)."""
    p0, p1 = _pad2(pad)
    c = x.shape[1]
    if p0 == p1 and p0 >= 0:
        return F.conv2d(x, _depthwise(kernel, c, x.dtype), padding=p0, stride=2, groups=c)
    return upfirdn2d_fast_pad(x, kernel, p0, p1, stride=2)


def upfirdn2d_fast_pad(x: Tensor, kernel: Tensor, p0: int, p1: int, stride: int) -> Tensor:
    """Depthwise filter with asymmetric padding (F.pad then a plain strided depthwise conv)."""
    c = x.shape[1]
    x = F.pad(x, [p0, p1, p0, p1])
    return F.conv2d(x, _depthwise(kernel, c, x.dtype), stride=stride, groups=c)


def upsample_2x(x: Tensor, kernel: Tensor, pad: int | Sequence[int]) -> Tensor:
    """Fast `upfirdn2d(x, kernel, up=2, pad=pad)`: a stride-2 depthwise transposed convolution, no zeros."""
    p0, p1 = _pad2(pad)
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


def reuse_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of unmapping it; True if it applied (Linux/glibc only).

    Activations at 512 px are 32-64 MB each. glibc serves blocks above 32 MB with mmap and unmaps them on
    free, so every such tensor is page-faulted in afresh (~2 ms per 10 MB). With mmap off and a high trim
    threshold, freed blocks are reused: 10-20 % faster CPU inference. Process-wide, so only entry points
    (CLI commands, benchmarks) should call it, never the library on import.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 1 << 30))

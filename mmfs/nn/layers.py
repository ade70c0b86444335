"""StyleGAN2 building blocks: the reference maths, with rosinality's parameter names.

The blocks compute what rosinality's `model.py` and the official code compute, written the same way:
equalised learning rate; a modulated convolution as per-sample modulated (and demodulated) weights in one
grouped convolution; up-sampling as a stride-2 transposed convolution followed by an `upfirdn2d` blur;
down-sampling as a blur followed by a stride-2 convolution. `mmfs/nn/fast.py` holds faster forms of the
same blocks (same parameters and state-dict keys); a network takes them when it is built (`fast=True`, the
default of `Stylizer`, `Generator` and `Discriminator`), and tests hold both paths equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfs.nn import ops
from mmfs.utils.device import at_least_fp32, fp32_maths

BLUR_KERNEL = (1, 3, 3, 1)


class PixelNorm(nn.Module):
    """x * rsqrt(mean(x^2) + 1e-8) over the feature dim."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weight N(0,1)/lr_mul, run-time scale lr_mul/sqrt(in)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: str | None = None,  # "fused_lrelu" or None
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            return ops.fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate: weight N(0,1), run-time scale 1/sqrt(in*k*k)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1 / math.sqrt(in_ch * kernel_size**2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class FusedLeakyReLU(nn.Module):
    """Per-channel bias, leaky ReLU 0.2, gain sqrt(2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return ops.fused_leaky_relu(x, self.bias)


class ScaledLeakyReLU(nn.Module):
    """Leaky ReLU 0.2 with gain sqrt(2), no bias."""

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, 0.2) * ops.SQRT2


def _drop_saved_kernel(module: nn.Module, state_dict, prefix, error_msgs) -> None:
    """Accept (and check) the blur kernel that rosinality/official checkpoints saved, though we do not save it."""
    saved = state_dict.pop(prefix + "kernel", None)
    if saved is not None and (
        saved.shape != module.kernel.shape or not torch.allclose(saved.float().cpu(), module.kernel.float().cpu())
    ):
        error_msgs.append(f"{prefix}kernel: the checkpoint's blur kernel differs from [1, 3, 3, 1]")


class Blur(nn.Module):
    """FIR low-pass `upfirdn2d(x, k, pad=pad)`; the kernel is a non-persistent buffer (derived constant)."""

    def __init__(self, kernel: Sequence[int], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", ops.make_kernel(kernel) * upsample_factor**2, persistent=False)
        self.pad = pad

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, error_msgs):
        _drop_saved_kernel(self, state_dict, prefix, error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, error_msgs)

    def forward(self, x: Tensor) -> Tensor:
        return ops.upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR up-sampling of the RGB skip (`upfirdn2d(x, 4k, up=2, pad=(2, 1))` for the 4-tap kernel)."""

    def __init__(self, kernel: Sequence[int], factor: int = 2):
        super().__init__()
        self.register_buffer("kernel", ops.make_kernel(kernel) * factor**2, persistent=False)
        p = len(kernel) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, error_msgs):
        _drop_saved_kernel(self, state_dict, prefix, error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, error_msgs)

    def forward(self, x: Tensor) -> Tensor:
        return ops.upfirdn2d(x, self.kernel, up=2, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Style-modulated (and optionally demodulated) convolution; optional 2x up-sampling (transposed conv + blur).

    For sample i: `w_i = scale * w * s_i[in]`, demodulated `w_i / sqrt(sum_{in,k,k} w_i^2 + 1e-8)` per output
    channel, with `s = modulation(style)`; the batch runs as the groups of one convolution.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[int] = BLUR_KERNEL,
    ) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_ch * kernel_size**2)
        self.padding = kernel_size // 2
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1)
        if upsample:
            p = (len(blur_kernel) - 2) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        b, _, h, w = x.shape
        k = self.kernel_size
        s = self.modulation(style)
        weight = self.scale * self.weight * s.view(b, 1, self.in_ch, 1, 1)  # [B, out, in, k, k]
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        x = x.reshape(1, b * self.in_ch, h, w)
        if self.upsample:
            # a transposed conv takes its weight as [in, out, k, k] per group
            weight = weight.transpose(1, 2).reshape(b * self.in_ch, self.out_ch, k, k)
            out = F.conv_transpose2d(x, weight, stride=2, groups=b)
            return self.blur(out.reshape(b, self.out_ch, out.shape[-2], out.shape[-1]))
        weight = weight.reshape(b * self.out_ch, self.in_ch, k, k)
        out = F.conv2d(x, weight, padding=self.padding, groups=b)
        return out.reshape(b, self.out_ch, h, w)


class NoiseInjection(nn.Module):
    """x + weight * noise, weight a learned scalar initialised to 0; noise [B or 1, 1, H, W]."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor | None) -> Tensor:
        if noise is None:
            return x
        return x + (self.weight * noise).to(x.dtype)


class StyledConv(nn.Module):
    """Modulated conv -> noise -> bias + leaky ReLU (x sqrt 2)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[int] = BLUR_KERNEL,
        demodulate: bool = True,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, kernel_size, style_dim, demodulate, upsample, blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None = None) -> Tensor:
        out = self.conv(x, style)
        out = self.noise(out, noise)
        return self.activate(out)


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB + bias, plus the 2x up-sampled RGB skip."""

    def __init__(self, in_ch: int, style_dim: int, upsample: bool = True, blur_kernel: Sequence[int] = BLUR_KERNEL):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, style).float() + self.bias  # the RGB sum is kept in fp32 under autocast
        if skip is not None:
            out = out + self.upsampled_skip(skip)
        return out

    def upsampled_skip(self, skip: Tensor) -> Tensor:
        """The 2x up-sampled RGB skip in fp32, also under autocast (which would run its convolution in bf16)."""
        with fp32_maths(skip.device):
            return self.upsample(at_least_fp32(skip))


class ConvLayer(nn.Module):
    """[Blur] -> EqualConv2d -> [leaky ReLU]; a down-sampling conv blurs, then convolves with stride 2.

    rosinality builds this layer as an `nn.Sequential`, so checkpoints key its parts by position
    (`convs.0.0.weight`, `convs.1.conv2.1.weight`, `convs.1.conv2.2.bias`). The parts are registered under
    the same names, "0", "1", "2", and read through `blur`, `conv` and `act`.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        downsample: bool = False,
        blur_kernel: Sequence[int] = BLUR_KERNEL,
        bias: bool = True,
        activate: bool = True,
    ) -> None:
        super().__init__()
        self.downsample = downsample
        self.activate = activate
        parts: list[nn.Module] = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            parts.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        # with an activation the bias is the activation's (rosinality's FusedLeakyReLU), not the conv's
        parts.append(EqualConv2d(in_ch, out_ch, kernel_size, stride, padding, bias=bias and not activate))
        if activate:
            parts.append(FusedLeakyReLU(out_ch) if bias else ScaledLeakyReLU())
        for i, part in enumerate(parts):
            self.add_module(str(i), part)

    @property
    def blur(self) -> Blur | None:
        """The blur before a down-sampling conv (part 0), or None."""
        return getattr(self, "0") if self.downsample else None

    @property
    def conv(self) -> EqualConv2d:
        """The convolution (part 1 after a blur, else part 0)."""
        return getattr(self, "1" if self.downsample else "0")

    @property
    def act(self) -> FusedLeakyReLU | ScaledLeakyReLU | None:
        """The activation (the last part), or None."""
        return getattr(self, "2" if self.downsample else "1") if self.activate else None

    def forward(self, x: Tensor) -> Tensor:
        if self.blur is not None:
            x = self.blur(x)
        x = self.conv(x)
        return self.act(x) if self.act is not None else x


class ResBlock(nn.Module):
    """StyleGAN2 discriminator block: two 3x3 convs (second down-samples) + 1x1 down-sampled skip, / sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int, blur_kernel: Sequence[int] = BLUR_KERNEL):
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_ch, out_ch, 1, downsample=True, blur_kernel=blur_kernel, activate=False, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        return (out + self.skip(x)) / math.sqrt(2)


def draw_noise(
    shapes: Sequence[tuple[int, int]],
    batch: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> list[Tensor]:
    """N(0,1) maps [batch, 1, H, W], one per (H, W), drawn in order from `generator` (or the global RNG)."""
    gen_device = generator.device if generator is not None else device
    # `generator=` only when there is one: torch.compile cannot trace randn(..., generator=None) once the
    # batch size becomes symbolic (the recompile for a second batch size), and the call would fail.
    rng = {"generator": generator} if generator is not None else {}
    out = []
    for h, w in shapes:
        n = torch.randn(batch, 1, h, w, device=gen_device, dtype=dtype, **rng)
        out.append(n.to(device) if device is not None else n)
    return out


def resolve_noise(
    noise: str | Sequence[Tensor] | None,
    shapes: Sequence[tuple[int, int]],
    batch: int,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> list[Tensor | None]:
    """Turn the `noise=` argument (None / "zero" / list of maps) into one map (or None) per styled conv."""
    if noise is None:
        return list(draw_noise(shapes, batch, generator, device, dtype))
    if isinstance(noise, str):
        if noise != "zero":
            raise ValueError(f"noise must be None, 'zero' or a list of tensors, got {noise!r}")
        return [None] * len(shapes)
    noise = list(noise)
    if len(noise) != len(shapes):
        raise ValueError(f"expected {len(shapes)} noise maps, got {len(noise)}")
    return noise

"""StyleGAN2 building blocks with rosinality's parameter names (equalised learning rate, modulated convs).

Every block takes explicit primitive arguments. Two run-time switches, set per module with
`set_implementation` (defaults chosen by measurement, see `mmfs/nn/__init__.py`):

* `modconv`: "fused" modulates the weights per sample and runs one grouped convolution (the official
  form); "unfused" scales the input by the style, runs one shared convolution and scales the output by the
  demodulation coefficients (same maths, one weight for the whole batch); "auto" picks fused for a batch of
  one and unfused otherwise (at batch 1 the fused conv is a plain conv with no extra passes over the data).
* `resample`: "fast" (depthwise/strided/transposed FIR convolutions, no zero insertion) or "reference"
  (`upfirdn2d` as the official code computes it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfs.nn import ops

BLUR_KERNEL = (1, 3, 3, 1)
MODCONV_IMPLS = ("fused", "unfused", "auto")
RESAMPLE_IMPLS = ("fast", "reference")


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
    if saved is not None and (saved.shape != module.kernel.shape or not torch.allclose(saved.float().cpu(), module.kernel.float().cpu())):
        error_msgs.append(f"{prefix}kernel: the checkpoint's blur kernel differs from [1, 3, 3, 1]")


class Blur(nn.Module):
    """FIR low-pass (`upfirdn2d(x, k, pad=pad)`); kernel is a non-persistent buffer (derived constant)."""

    def __init__(self, kernel: Sequence[int], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", ops.make_kernel(kernel) * upsample_factor**2, persistent=False)
        self.pad = pad
        self.resample = "fast"

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, error_msgs):
        _drop_saved_kernel(self, state_dict, prefix, error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, error_msgs)

    def forward(self, x: Tensor) -> Tensor:
        if self.resample == "reference":
            return ops.upfirdn2d(x, self.kernel, pad=self.pad)
        return ops.blur(x, self.kernel, self.pad)


class Upsample(nn.Module):
    """2x FIR up-sampling of the RGB skip (`upfirdn2d(x, 4k, up=2, pad=(2, 1))` for the 4-tap kernel)."""

    def __init__(self, kernel: Sequence[int], factor: int = 2):
        super().__init__()
        self.register_buffer("kernel", ops.make_kernel(kernel) * factor**2, persistent=False)
        p = len(kernel) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)
        self.resample = "fast"

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, error_msgs):
        _drop_saved_kernel(self, state_dict, prefix, error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, error_msgs)

    def forward(self, x: Tensor) -> Tensor:
        if self.resample == "reference":
            return ops.upfirdn2d(x, self.kernel, up=2, pad=self.pad)
        return ops.upsample_2x(x, self.kernel, self.pad)


class ModulatedConv2d(nn.Module):
    """Style-modulated (and optionally demodulated) convolution; optional 2x up-sampling (transposed conv + blur)."""

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
        self.modconv = "auto"

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        s = self.modulation(style)  # [B, in_ch]
        impl = self.modconv
        if impl == "auto":
            impl = "fused" if x.shape[0] == 1 else "unfused"
        out = self._fused(x, s) if impl == "fused" else self._unfused(x, s)
        if self.upsample:
            out = self.blur(out)
        return out

    def _fused(self, x: Tensor, s: Tensor) -> Tensor:
        b, _, h, w = x.shape
        weight = self.weight * (self.scale * s.to(self.weight.dtype)[:, None, :, None, None])  # [B, out, in, k, k]
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        if b == 1:  # a plain conv: no grouping, keeps the input's memory format
            weight = weight[0]
            if self.upsample:
                return F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            return F.conv2d(x, weight, padding=self.padding)
        x = x.reshape(1, b * self.in_ch, h, w)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(b * self.in_ch, self.out_ch, self.kernel_size, self.kernel_size)
            out = F.conv_transpose2d(x, weight, stride=2, groups=b)
        else:
            weight = weight.reshape(b * self.out_ch, self.in_ch, self.kernel_size, self.kernel_size)
            out = F.conv2d(x, weight, padding=self.padding, groups=b)
        return out.reshape(b, self.out_ch, out.shape[2], out.shape[3])

    def _unfused(self, x: Tensor, s: Tensor) -> Tensor:
        weight = self.weight[0] * self.scale  # [out, in, k, k], shared by the batch
        x = x * s.to(x.dtype)[:, :, None, None]
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # sum_{in,k,k} (w * s)^2 = (s^2) @ (sum_{k,k} w^2)^T: one small GEMM instead of a per-sample weight
            w2 = weight.square().sum(dim=(2, 3))  # [out, in]
            demod = torch.rsqrt(s.float().square() @ w2.float().t() + 1e-8)  # [B, out]
            out = out * demod.to(out.dtype)[:, :, None, None]
        return out


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
    """Modulated conv -> noise -> bias + leaky ReLU."""

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
        return self.activate(self.noise(self.conv(x, style), noise))


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
            out = out + self.upsample(skip).float()
        return out


class ConvLayer(nn.Sequential):
    """[Blur] -> EqualConv2d -> [FusedLeakyReLU]; down-sampling convs are blur + stride 2 (rosinality indices)."""

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
        layers: list[nn.Module] = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_ch, out_ch, kernel_size, stride, padding, bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_ch) if bias else ScaledLeakyReLU())
        super().__init__(*layers)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        if self.downsample:
            blur, conv = self[0], self[1]
            if blur.resample == "fast" and conv.weight.shape[-1] == 1:
                # a 1x1 stride-2 conv only reads every second blurred sample: blur straight to those
                x = ops.blur_down(x, blur.kernel, blur.pad)
                x = F.conv2d(x, conv.weight * conv.scale, conv.bias)
            else:
                x = conv(blur(x))
            return self[2](x) if len(self) > 2 else x
        return super().forward(x)


class ResBlock(nn.Module):
    """StyleGAN2 discriminator block: two 3x3 convs (second down-samples) + 1x1 down-sampled skip, / sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int, blur_kernel: Sequence[int] = BLUR_KERNEL):
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_ch, out_ch, 1, downsample=True, blur_kernel=blur_kernel, activate=False, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        return (out + self.skip(x)) * (1 / math.sqrt(2))


def set_implementation(module: nn.Module, *, modconv: str | None = None, resample: str | None = None) -> None:
    """Switch every modulated conv (fused/unfused/auto) and every resampler (fast/reference) under `module`."""
    if modconv is not None and modconv not in MODCONV_IMPLS:
        raise ValueError(f"modconv must be one of {MODCONV_IMPLS}, got {modconv!r}")
    if resample is not None and resample not in RESAMPLE_IMPLS:
        raise ValueError(f"resample must be one of {RESAMPLE_IMPLS}, got {resample!r}")
    for m in module.modules():
        if modconv is not None and isinstance(m, ModulatedConv2d):
            m.modconv = modconv
        if resample is not None and isinstance(m, (Blur, Upsample)):
            m.resample = resample


def draw_noise(
    shapes: Sequence[tuple[int, int]],
    batch: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> list[Tensor]:
    """N(0,1) maps [batch, 1, H, W], one per (H, W), drawn in order from `generator` (or the global RNG)."""
    gen_device = generator.device if generator is not None else device
    out = []
    for h, w in shapes:
        n = torch.randn(batch, 1, h, w, generator=generator, device=gen_device, dtype=dtype)
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

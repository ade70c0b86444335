"""StyleGAN2 building blocks with rosinality's parameter names (equalised learning rate, modulated convs).

Every block takes explicit primitive arguments. Two run-time switches, set per module with
`set_implementation` (defaults chosen by measurement, see `mmfs/nn/__init__.py`):

* `modconv`: "fused" modulates the weights per sample and runs one grouped convolution (the official
  form); "unfused" scales the input by the style, runs one shared convolution and scales the output by the
  demodulation coefficients (same maths, one weight for the whole batch); "auto" picks fused for a batch of
  one (a plain conv with no extra passes over the data) and when training in fp32 outside autocast
  (grouped convs train faster there), unfused otherwise.
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
    if saved is not None and (
        saved.shape != module.kernel.shape or not torch.allclose(saved.float().cpu(), module.kernel.float().cpu())
    ):
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
    """Style-modulated (and optionally demodulated) convolution; optional 2x up-sampling (transposed conv + blur).

    `forward(x, style, gain, bias)` returns `gain * modconv(x, style) + bias`: callers fold their constant
    gains and the following bias into the convolution so no extra pass over the activations is needed.
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
        self.modconv = "auto"

    def forward(self, x: Tensor, style: Tensor, gain: float = 1.0, bias: Tensor | None = None) -> Tensor:
        b, _, h, w = x.shape
        s = self.modulation(style)  # [B, in_ch]
        impl = self.modconv
        if impl == "auto":
            impl = "fused" if b == 1 or _fp32_training(self.weight) else "unfused"
        coef = self._out_coef(s, gain)  # [B, out]: demodulation x gain, or None
        fast_up = self.upsample and self.blur.resample == "fast"
        # [out, in, k, k], or the 4 output phases [4, out, in, T, T] of the transposed conv
        base = ops.polyphase_weight(self.weight[0]) if fast_up else self.weight[0]
        if impl == "fused":
            # per-sample weights w * scale * s[in] * coef[out]: one pass over the weights
            mod = s.to(base.dtype)[:, None, :] * self.scale
            if coef is not None:
                mod = mod * coef.to(base.dtype)[:, :, None]
            weight = base[None] * mod.reshape((b, *([1] if fast_up else []), mod.shape[1], self.in_ch, 1, 1))
            groups, out_coef = b, None
        else:
            # one shared weight: the style scales the input, the demodulation scales the output
            weight = (base * self.scale)[None]
            x = x * s.to(x.dtype)[:, :, None, None]
            groups, out_coef = 1, coef
        if self.upsample:
            return self._up(x, weight, groups, out_coef, bias)
        k = self.kernel_size
        if groups == 1:
            out = F.conv2d(x, weight[0], _cast(bias, x) if out_coef is None else None, padding=self.padding)
        else:
            out = F.conv2d(
                x.reshape(1, b * self.in_ch, h, w),
                weight.reshape(b * self.out_ch, self.in_ch, k, k),
                _cast(bias.repeat(b), x) if bias is not None else None,
                padding=self.padding,
                groups=b,
            ).reshape(b, self.out_ch, h, w)
        if out_coef is None:
            return out
        out_coef = out_coef.to(out.dtype)[:, :, None, None]
        if bias is None:
            return out * out_coef
        return torch.addcmul(_cast(bias, out).view(1, -1, 1, 1), out, out_coef)

    def _out_coef(self, s: Tensor, gain: float) -> Tensor | None:
        """gain * rsqrt(sum_{in,k,k} (scale * w * s)^2 + 1e-8) per (sample, out) via one small GEMM, or None."""
        if not self.demodulate:
            return None if gain == 1.0 else torch.full((s.shape[0], self.out_ch), gain, device=s.device)
        w2 = self.weight[0].float().square().sum(dim=(2, 3)) * self.scale**2  # [out, in]
        return torch.rsqrt(s.float().square() @ w2.t() + 1e-8) * gain

    def _up(self, x: Tensor, weight: Tensor, groups: int, coef: Tensor | None, bias: Tensor | None) -> Tensor:
        """Stride-2 transposed conv, output scale `coef` [B, out], blur, bias: H x W -> 2H x 2W.

        `weight` is [G, out, in, k, k] (reference) or its phases [G, 4, out, in, T, T] (fast), G = groups.
        """
        b, _, h, w = x.shape
        k = self.kernel_size
        if groups > 1:
            x = x.reshape(1, b * self.in_ch, h, w)
        if self.blur.resample == "reference":
            wt = weight.transpose(1, 2).reshape(groups * self.in_ch, self.out_ch, k, k)
            out = F.conv_transpose2d(x, wt, stride=2, groups=groups).reshape(b, self.out_ch, 2 * h + k - 2, -1)
            if coef is not None:
                out = out * coef.to(out.dtype)[:, :, None, None]
            out = ops.upfirdn2d(out, self.blur.kernel, pad=self.blur.pad)
            return out if bias is None else out + _cast(bias, out).view(1, -1, 1, 1)
        # fast: the 4 output phases from one regular conv at the input resolution (no zero insertion)
        t = (k + 1) // 2
        y = F.conv2d(x, weight.reshape(groups * 4 * self.out_ch, self.in_ch, t, t), padding=t - 1, groups=groups)
        y = y.reshape(b, 4 * self.out_ch, y.shape[-2], y.shape[-1])
        if coef is not None:
            y = y * coef.to(y.dtype).repeat(1, 4)[:, :, None, None]
        # the shuffled phases hold the transposed conv's 2H + k - 2 samples, then 2T - k zeros: write them into
        # a buffer with the blur's padding around them, so the blur is one dense, unpadded depthwise conv
        p0, p1 = self.blur.pad
        extra = 2 * t - k
        if extra > p1:
            y_full = ops.pixel_shuffle_2x(y)[:, :, : 2 * h + k - 2, : 2 * w + k - 2]
            return ops.blur(y_full, self.blur.kernel, (p0, p1), bias=_cast(bias, y))
        padded = ops.pixel_shuffle_2x(y, pad=(p0, p1 - extra))
        return ops.blur(padded, self.blur.kernel, 0, bias=_cast(bias, y))


def _fp32_training(weight: Tensor) -> bool:
    """True when a graph is recorded for this layer outside autocast (where grouped convs train faster)."""
    return weight.requires_grad and torch.is_grad_enabled() and not torch.is_autocast_enabled(weight.device.type)


def _cast(t: Tensor | None, like: Tensor) -> Tensor | None:
    return None if t is None else t.to(like.dtype)


def _is_dense(x: Tensor) -> bool:
    return x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)


def _leaky_relu(x: Tensor) -> Tensor:
    """Leaky ReLU 0.2 (its sqrt 2 gain is folded into the conv before); in place when no graph needs x."""
    return F.leaky_relu(x, 0.2, inplace=_is_dense(x) and not x.requires_grad)


class NoiseInjection(nn.Module):
    """x + weight * noise, weight a learned scalar initialised to 0; noise [B or 1, 1, H, W]."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor | None, gain: float = 1.0) -> Tensor:
        if noise is None:
            return x
        noise = (self.weight * gain * noise).to(x.dtype)
        # in place when no graph needs x: an out-of-place add costs a fresh (page-faulting) buffer
        return x + noise if x.requires_grad or not _is_dense(x) else x.add_(noise)


class StyledConv(nn.Module):
    """Modulated conv -> noise -> bias + leaky ReLU (x sqrt 2); gain and bias folded into the conv."""

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
        # lrelu(y + n + b) * sqrt2 == lrelu(sqrt2 * y + sqrt2 * n + sqrt2 * b): the gain rides on the weights
        out = self.conv(x, style, gain=ops.SQRT2, bias=self.activate.bias * ops.SQRT2)
        return _leaky_relu(self.noise(out, noise, gain=ops.SQRT2))


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB + bias, plus the 2x up-sampled RGB skip."""

    def __init__(self, in_ch: int, style_dim: int, upsample: bool = True, blur_kernel: Sequence[int] = BLUR_KERNEL):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, style, bias=self.bias.view(3)).float()  # the RGB sum is kept in fp32 under autocast
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
        self.activate = activate

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        """`gain * layer(x)`, with every constant folded into the convolution (lrelu is positively homogeneous)."""
        conv: EqualConv2d = self[1] if self.downsample else self[0]
        act = self[-1] if self.activate else None
        if act is not None:
            gain = gain * ops.SQRT2
        bias = act.bias if isinstance(act, FusedLeakyReLU) else conv.bias
        weight = conv.weight * (conv.scale * gain)
        bias = bias * gain if bias is not None else None
        stride, padding = conv.stride, conv.padding
        if self.downsample:
            blur: Blur = self[0]
            if blur.resample == "fast" and conv.weight.shape[-1] == 1:
                # a 1x1 stride-2 conv only reads every second blurred sample: blur straight to those
                x, stride = ops.blur_down(x, blur.kernel, blur.pad), 1
            else:
                x = blur(x)
        out = F.conv2d(x, weight, bias, stride=stride, padding=padding)
        return _leaky_relu(out) if act is not None else out


class ResBlock(nn.Module):
    """StyleGAN2 discriminator block: two 3x3 convs (second down-samples) + 1x1 down-sampled skip, / sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int, blur_kernel: Sequence[int] = BLUR_KERNEL):
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_ch, out_ch, 1, downsample=True, blur_kernel=blur_kernel, activate=False, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        g = 1 / math.sqrt(2)  # folded into both branches' convolutions
        out = self.conv2(self.conv1(x), gain=g)
        skip = self.skip(x, gain=g)
        return out + skip if out.requires_grad else out.add_(skip)


def set_implementation(
    module: nn.Module,
    *,
    modconv: str | None = None,
    resample: str | None = None,
    channels_last: bool | None = None,
) -> None:
    """Switch every modulated conv (fused/unfused/auto), every resampler (fast/reference) and the memory
    format the top-level networks run in (channels-last or NCHW) under `module`; None leaves a switch alone."""
    if modconv is not None and modconv not in MODCONV_IMPLS:
        raise ValueError(f"modconv must be one of {MODCONV_IMPLS}, got {modconv!r}")
    if resample is not None and resample not in RESAMPLE_IMPLS:
        raise ValueError(f"resample must be one of {RESAMPLE_IMPLS}, got {resample!r}")
    for m in module.modules():
        if modconv is not None and isinstance(m, ModulatedConv2d):
            m.modconv = modconv
        if resample is not None and isinstance(m, (Blur, Upsample)):
            m.resample = resample
        if channels_last is not None and hasattr(m, "channels_last"):
            m.channels_last = channels_last


def to_memory_format(x: Tensor, channels_last: bool) -> Tensor:
    """x in channels-last (NHWC in memory) or NCHW layout; a no-op when it already is."""
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


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

"""Fast forms of the StyleGAN2 blocks in `mmfs/nn/layers.py`: the same parameters and results, in less time.

A fast block is its reference block with another `forward`: it subclasses it and adds no parameter or
buffer. `to_fast(model)` re-classes every reference block of a model in place, so the parameters (and
whatever holds them), their initial values and the state-dict keys stay exactly as built. `Stylizer`,
`Generator` and `Discriminator` call it when they are built, unless given `fast=False`; nothing switches
between the two paths afterwards. What the fast blocks do differently:

* resampling without inserted zeros (`mmfs/nn/fast_ops.py`): depthwise blurs, the RGB skip as a depthwise
  transposed conv, a blur followed by a 1x1 stride-2 conv as a blur straight to the kept samples; the
  modulated up-sampling conv stays a transposed conv (oneDNN's deconvolution inserts no zeros either);
* the modulated conv picks, per call, one of two forms of the same maths, by the layer's shape and which
  gradients flow (`FastModulatedConv2d.prefers_fused`, measured in docs/benchmarks.md): *fused*
  (per-sample weights, the batch as the groups of one convolution: the official form) for a batch of one,
  which is then a plain conv, and when training through an up-sampling conv or a 1x1 ToRGB on a small
  input (outside autocast, unless only the style wants a gradient); *unfused* otherwise (the style
  scales the input, one conv with the shared weight runs over the whole batch, the demodulation scales
  the output);
* constants folded into the convolutions: the sqrt(2) gain of the leaky ReLU and the bias before it
  (leaky ReLU is positively homogeneous), and the 1/sqrt(2) of the residual sum;
* activations in channels-last memory (`to_fast(model, channels_last=False)` keeps NCHW);
* in place, by one rule: a block adds the noise, applies the leaky ReLU or sums the residual in place only
  into a tensor it has itself just produced, and only when that tensor does not require grad (`_fresh_add`,
  `_fresh_leaky_relu`). No other code holds such a tensor and no backward pass reads it, so the result
  cannot change; while autograd records, the blocks allocate as the reference does.

`tests/test_layers.py` holds every fast block to its reference; `tests/test_stylizer.py` and
`tests/test_stylegan2.py` hold whole networks built both ways to each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfs.nn import fast_ops, layers
from mmfs.nn.ops import SQRT2
from mmfs.utils.device import fp32_maths

# Training a 1x1 ToRGB-like modulated conv (out_ch * k * k below 32) on an input of fewer elements than this,
# the fused form is faster: the unfused form's extra scaling operators cost more than such a small conv.
SMALL_INPUT = 2**20


def _cast(t: Tensor | None, like: Tensor) -> Tensor | None:
    return None if t is None else t.to(like.dtype)


def _in_place_ok(fresh: Tensor) -> bool:
    """May `fresh`, a tensor the calling block has just produced, be overwritten? (see the module docstring)"""
    dense = fresh.is_contiguous() or fresh.is_contiguous(memory_format=torch.channels_last)
    return dense and not fresh.requires_grad


def _fresh_add(fresh: Tensor, other: Tensor) -> Tensor:
    """`fresh + other`, in place when allowed: an out-of-place add costs a new (page-faulting) buffer."""
    return fresh.add_(other) if _in_place_ok(fresh) else fresh + other


def _fresh_leaky_relu(fresh: Tensor) -> Tensor:
    """Leaky ReLU 0.2 (its sqrt(2) gain folded into the conv before), in place when allowed."""
    return F.leaky_relu(fresh, 0.2, inplace=_in_place_ok(fresh))


class FastBlur(layers.Blur):
    """`Blur` as one depthwise convolution."""

    def forward(self, x: Tensor) -> Tensor:
        return fast_ops.blur(x, self.kernel, self.pad)


class FastUpsample(layers.Upsample):
    """`Upsample` as one stride-2 depthwise transposed convolution."""

    def forward(self, x: Tensor) -> Tensor:
        return fast_ops.upsample_2x(x, self.kernel, self.pad)


class FastModulatedConv2d(layers.ModulatedConv2d):
    """`ModulatedConv2d` returning `gain * modconv(x, style) + bias`, so callers fold their constants into it.

    `forward` picks `fused` or `unfused` (see the module docstring); both are public so tests can hold each
    to the reference.
    """

    memory_format = torch.channels_last  # of the input; `to_fast` sets it per instance

    def forward(self, x: Tensor, style: Tensor, gain: float = 1.0, bias: Tensor | None = None) -> Tensor:
        x = x.contiguous(memory_format=self.memory_format)
        if self.prefers_fused(x, style):
            return self.fused(x, style, gain, bias)
        return self.unfused(x, style, gain, bias)

    def prefers_fused(self, x: Tensor, style: Tensor) -> bool:
        """The form measured faster for this call (docs/benchmarks.md, "Training steps").

        Fused for a batch of one (a plain conv) and, when gradients flow outside autocast, for the
        up-sampling convs and a 1x1 ToRGB on a small input; unfused otherwise: in inference, under autocast,
        and when of all three only the style wants a gradient (the mapper), which the fused form would
        reach through per-sample weight gradients.
        """
        if x.shape[0] == 1:
            return True
        if not torch.is_grad_enabled() or torch.is_autocast_enabled(x.device.type):
            return False
        if not self.weight.requires_grad and (style.requires_grad or not x.requires_grad):
            return False
        if self.upsample:
            return True
        return self.out_ch * self.kernel_size**2 < 32 and x.numel() < SMALL_INPUT

    def fused(self, x: Tensor, style: Tensor, gain: float = 1.0, bias: Tensor | None = None) -> Tensor:
        """Per-sample weights `w * scale * s[in] * coef[out]` (one pass over the weights), batch as groups."""
        b = x.shape[0]
        s, coef = self._style_and_coef(style, gain)
        base = self.weight[0]
        mod = s.to(base.dtype)[:, None, :] * self.scale  # [B, 1, in]
        if coef is not None:
            mod = mod * coef.to(base.dtype)[:, :, None]  # [B, out, in]
        weight = base[None] * mod.reshape(b, mod.shape[1], self.in_ch, 1, 1)
        return self._conv(x, weight, groups=b, out_coef=None, bias=bias)

    def unfused(self, x: Tensor, style: Tensor, gain: float = 1.0, bias: Tensor | None = None) -> Tensor:
        """One shared weight for the batch: the style scales the input, the demodulation the output."""
        s, coef = self._style_and_coef(style, gain)
        weight = (self.weight[0] * self.scale)[None]
        return self._conv(x * s.to(x.dtype)[:, :, None, None], weight, groups=1, out_coef=coef, bias=bias)

    def _style_and_coef(self, style: Tensor, gain: float) -> tuple[Tensor, Tensor | None]:
        """s = modulation(style) [B, in], and the output scale [B, out]: demodulation x gain (None for 1).

        The demodulation `rsqrt(sum_{in,k,k} (scale * w * s)^2 + 1e-8)` is one small GEMM of s^2 with the
        squared weights summed over the taps, in fp32.
        """
        s = self.modulation(style)
        if not self.demodulate:
            coef = None if gain == 1.0 else torch.full((s.shape[0], self.out_ch), gain, device=s.device)
            return s, coef
        w2 = self.weight[0].float().square().sum(dim=(2, 3)) * self.scale**2  # [out, in]
        with fp32_maths(s.device):  # autocast would run this matmul in bf16
            return s, torch.rsqrt(s.float().square() @ w2.t() + 1e-8) * gain

    def _conv(self, x: Tensor, weight: Tensor, groups: int, out_coef: Tensor | None, bias: Tensor | None) -> Tensor:
        """Convolve with `weight` [G, out, in, k, k] (G = groups), scale the output by `out_coef`, add `bias`."""
        if self.upsample:
            return self._up(x, weight, groups, out_coef, bias)
        b, _, h, w = x.shape
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

    def _up(self, x: Tensor, weight: Tensor, groups: int, coef: Tensor | None, bias: Tensor | None) -> Tensor:
        """Stride-2 transposed conv with `weight` [G, out, in, k, k] (G = groups), scale by `coef`, blur, bias.

        The transposed conv runs as itself: oneDNN's CPU deconvolution, measured faster than its polyphase
        form (four regular convs at the input resolution and a shuffle) at the shapes the presets train
        (docs/benchmarks.md); the blur after it is the fast depthwise one.
        """
        b, _, h, w = x.shape
        k = self.kernel_size
        if groups > 1:
            x = x.reshape(1, b * self.in_ch, h, w)
        # conv_transpose2d's weight is [in, out, k, k] per group
        weight = weight.transpose(1, 2).reshape(groups * self.in_ch, self.out_ch, k, k)
        y = F.conv_transpose2d(x, weight, stride=2, groups=groups)
        if groups > 1:  # (a reshape to the same shape could give the batch dim a stride oneDNN copies for)
            y = y.reshape(b, self.out_ch, y.shape[-2], y.shape[-1])
        if coef is not None:
            y = y * coef.to(y.dtype)[:, :, None, None]
        return fast_ops.blur(y, self.blur.kernel, self.blur.pad, bias=_cast(bias, y))


class FastStyledConv(layers.StyledConv):
    """`StyledConv` with the activation's gain and bias folded into the modulated conv."""

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None = None) -> Tensor:
        # lrelu(y + n + b) * sqrt2 == lrelu(sqrt2 * y + sqrt2 * n + sqrt2 * b): the gain rides on the weights
        out = self.conv(x, style, gain=SQRT2, bias=self.activate.bias * SQRT2)
        if noise is not None:
            out = _fresh_add(out, (self.noise.weight * SQRT2 * noise).to(out.dtype))
        return _fresh_leaky_relu(out)


class FastToRGB(layers.ToRGB):
    """`ToRGB` with the bias added by the convolution."""

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, style, bias=self.bias.view(3)).float()  # the RGB sum is kept in fp32 under autocast
        if skip is not None:
            out = out + self.upsampled_skip(skip)
        return out


class FastConvLayer(layers.ConvLayer):
    """`ConvLayer` computing `gain * layer(x)` with every constant folded into the one convolution."""

    memory_format = torch.channels_last  # of the input; `to_fast` sets it per instance

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        x = x.contiguous(memory_format=self.memory_format)
        blur, conv, act = self.blur, self.conv, self.act
        if act is not None:
            gain = gain * SQRT2
        # with an activation the bias is FusedLeakyReLU's (ScaledLeakyReLU has none, nor then the conv)
        bias = act.bias if isinstance(act, layers.FusedLeakyReLU) else conv.bias
        weight = conv.weight * (conv.scale * gain)
        bias = bias * gain if bias is not None else None
        stride = conv.stride
        if blur is not None and conv.weight.shape[-1] == 1:
            # a 1x1 stride-2 conv only reads every second blurred sample: blur straight to those
            x, stride = fast_ops.blur_down(x, blur.kernel, blur.pad), 1
        elif blur is not None:
            x = blur(x)
        out = F.conv2d(x, weight, bias, stride=stride, padding=conv.padding)
        return _fresh_leaky_relu(out) if act is not None else out


class FastResBlock(layers.ResBlock):
    """`ResBlock` with the residual's 1/sqrt(2) folded into both branches' convolutions."""

    def forward(self, x: Tensor) -> Tensor:
        g = 1 / SQRT2
        out = self.conv2(self.conv1(x), gain=g)
        return _fresh_add(out, self.skip(x, gain=g))


FAST_FORMS: dict[type[nn.Module], type[nn.Module]] = {
    layers.Blur: FastBlur,
    layers.Upsample: FastUpsample,
    layers.ModulatedConv2d: FastModulatedConv2d,
    layers.StyledConv: FastStyledConv,
    layers.ToRGB: FastToRGB,
    layers.ConvLayer: FastConvLayer,
    layers.ResBlock: FastResBlock,
}


def to_fast(model: nn.Module, *, channels_last: bool = True) -> nn.Module:
    """Turn every reference block under `model` (itself included) into its fast form, in place; returns `model`.

    Only exact reference types are turned (a subclass may have its own forward); parameters, buffers and
    keys are untouched. `channels_last` chooses the memory format the fast convolutions run in.
    """
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for module in model.modules():
        fast_form = FAST_FORMS.get(type(module))
        if fast_form is not None:
            module.__class__ = fast_form
        if isinstance(module, (FastModulatedConv2d, FastConvLayer)):
            module.memory_format = memory_format
    return model

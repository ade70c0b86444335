"""StyleGAN2 blocks: formulas, initialisation, and agreement of the fused/unfused and fast/reference paths."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmfs.nn import ops
from mmfs.nn.layers import (
    ConvLayer,
    EqualConv2d,
    EqualLinear,
    ModulatedConv2d,
    NoiseInjection,
    ResBlock,
    StyledConv,
    ToRGB,
    resolve_noise,
    set_implementation,
)


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Give zero-initialised parameters (biases, noise weights) non-trivial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)


def test_equal_linear_formula_and_init():
    torch.manual_seed(0)
    lin = EqualLinear(64, 32, lr_mul=0.01, bias_init=0.5)
    assert torch.all(lin.bias == 0.5)
    assert 80 < float(lin.weight.detach().std()) < 120  # N(0,1) / lr_mul
    x = torch.randn(3, 64)
    want = x @ (lin.weight * 0.01 / 8).t() + lin.bias * 0.01
    torch.testing.assert_close(lin(x), want)
    act = EqualLinear(64, 32, lr_mul=0.01, activation="fused_lrelu")
    want = F.leaky_relu(x @ (act.weight * 0.01 / 8).t() + act.bias * 0.01, 0.2) * math.sqrt(2)
    torch.testing.assert_close(act(x), want)


def test_equal_conv_formula():
    conv = EqualConv2d(4, 6, 3, padding=1)
    assert conv.bias is not None and torch.all(conv.bias == 0)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight / math.sqrt(36), conv.bias, padding=1))


def test_modulated_conv_init():
    m = StyledConv(8, 16, 3, 12, upsample=True)
    assert torch.all(m.conv.modulation.bias == 1)
    assert torch.all(m.noise.weight == 0)
    assert torch.all(m.activate.bias == 0)
    assert m.conv.weight.shape == (1, 16, 8, 3, 3)
    assert "conv.blur.kernel" not in m.state_dict()  # derived constant, not saved


def _modconv_formula(m: ModulatedConv2d, x, style):
    """Per-sample conv with explicitly modulated/demodulated weights (reference §2.3 formulas)."""
    s = m.modulation(style)
    outs = []
    for i in range(x.shape[0]):
        w = m.weight[0] / math.sqrt(m.in_ch * m.kernel_size**2) * s[i][None, :, None, None]
        if m.demodulate:
            w = w * torch.rsqrt(w.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        if m.upsample:
            o = F.conv_transpose2d(x[i : i + 1], w.transpose(0, 1), stride=2)
            o = ops.upfirdn2d(o, m.blur.kernel, pad=m.blur.pad)
        else:
            o = F.conv2d(x[i : i + 1], w, padding=m.kernel_size // 2)
        outs.append(o)
    return torch.cat(outs)


@pytest.mark.parametrize("impl", ["fused", "unfused"])
@pytest.mark.parametrize("resample", ["fast", "reference"])
@pytest.mark.parametrize("kind", ["conv", "up", "rgb"])
@pytest.mark.parametrize("batch", [1, 3])
def test_modulated_conv_matches_formula(impl, resample, kind, batch):
    torch.manual_seed(0)
    if kind == "rgb":
        m = ModulatedConv2d(6, 3, 1, 10, demodulate=False)
    else:
        m = ModulatedConv2d(6, 5, 3, 10, upsample=kind == "up")
    _randomise(m)
    set_implementation(m, modconv=impl, resample=resample)
    x, style = torch.randn(batch, 6, 8, 8), torch.randn(batch, 10)
    want = _modconv_formula(m, x, style)
    got = m(x, style)
    assert got.shape == want.shape == (batch, m.out_ch, 16 if kind == "up" else 8, 16 if kind == "up" else 8)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("upsample", [False, True])
def test_styled_conv_fused_equals_unfused(upsample):
    torch.manual_seed(1)
    m = StyledConv(8, 6, 3, 12, upsample=upsample)
    _randomise(m)
    x, style = torch.randn(4, 8, 8, 8), torch.randn(4, 12)
    noise = torch.randn(4, 1, 16 if upsample else 8, 16 if upsample else 8)
    set_implementation(m, modconv="fused")
    a = m(x, style, noise)
    set_implementation(m, modconv="unfused")
    b = m(x, style, noise)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # noise formula: x + w * n before the activation
    set_implementation(m, modconv="fused")
    pre = m.conv(x, style) + m.noise.weight * noise
    torch.testing.assert_close(a, F.leaky_relu(pre + m.activate.bias[None, :, None, None], 0.2) * math.sqrt(2))


def test_to_rgb_skip_fast_equals_reference():
    torch.manual_seed(2)
    m = ToRGB(8, 12)
    _randomise(m)
    x, style, skip = torch.randn(2, 8, 16, 16), torch.randn(2, 12), torch.randn(2, 3, 8, 8)
    want = _modconv_formula(m.conv, x, style) + m.bias + ops.upfirdn2d(skip, m.upsample.kernel, up=2, pad=(2, 1))
    for impl in ("fused", "unfused"):
        for resample in ("fast", "reference"):
            set_implementation(m, modconv=impl, resample=resample)
            torch.testing.assert_close(m(x, style, skip), want, rtol=1e-4, atol=1e-5)


def test_conv_layer_keys_and_downsample_paths():
    layer = ConvLayer(4, 8, 3, downsample=True)
    assert [k for k in layer.state_dict()] == ["1.weight", "2.bias"]
    skip = ConvLayer(4, 8, 1, downsample=True, activate=False, bias=False)
    assert list(skip.state_dict()) == ["1.weight"]
    torch.manual_seed(3)
    _randomise(layer)
    x = torch.randn(2, 4, 16, 16)
    for mod, pad in ((layer, (2, 2)), (skip, (1, 1))):
        conv = mod[1]
        ref = F.conv2d(ops.upfirdn2d(x, ops.make_kernel([1, 3, 3, 1]), pad=pad), conv.weight * conv.scale, stride=2)
        if len(mod) > 2:
            ref = ops.fused_leaky_relu(ref, mod[2].bias)
        for resample in ("fast", "reference"):
            set_implementation(mod, resample=resample)
            out = mod(x)
            assert out.shape == (2, 8, 8, 8)
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_resblock_fast_equals_reference():
    torch.manual_seed(4)
    block = ResBlock(4, 6)
    _randomise(block)
    x = torch.randn(2, 4, 16, 16)
    set_implementation(block, resample="reference")
    ref = block(x)
    set_implementation(block, resample="fast")
    assert ref.shape == (2, 6, 8, 8)
    torch.testing.assert_close(block(x), ref, rtol=1e-4, atol=1e-5)
    cl = block(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-5)


def test_noise_injection():
    n = NoiseInjection()
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(n(x, torch.randn(2, 1, 4, 4)), x)  # weight starts at 0
    with torch.no_grad():
        n.weight.fill_(0.5)
    noise = torch.randn(1, 1, 4, 4)
    torch.testing.assert_close(n(x, noise), x + 0.5 * noise)
    assert n(x, None) is x


def test_set_implementation_and_noise_argument_validation():
    with pytest.raises(ValueError, match="modconv"):
        set_implementation(ToRGB(4, 4), modconv="magic")
    with pytest.raises(ValueError, match="resample"):
        set_implementation(ToRGB(4, 4), resample="magic")
    shapes = [(4, 4), (8, 8)]
    with pytest.raises(ValueError, match="noise"):
        resolve_noise("const", shapes, 1, None, torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="expected 2 noise maps"):
        resolve_noise([torch.zeros(1, 1, 4, 4)], shapes, 1, None, torch.device("cpu"), torch.float32)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = resolve_noise(None, shapes, 2, g1, torch.device("cpu"), torch.float32)
    b = resolve_noise(None, shapes, 2, g2, torch.device("cpu"), torch.float32)
    assert [t.shape for t in a] == [(2, 1, 4, 4), (2, 1, 8, 8)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert resolve_noise("zero", shapes, 2, None, torch.device("cpu"), torch.float32) == [None, None]

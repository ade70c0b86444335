"""StyleGAN2 blocks: formulas, initialisation, and every fast block (fused and unfused forms) against the reference."""

from __future__ import annotations

import copy
import math
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from mmfs.nn import ops
from mmfs.nn.fast import FastModulatedConv2d, to_fast
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
    """Per-sample conv with explicitly modulated/demodulated weights (the StyleGAN2 formulas)."""
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


def _fast_copy(module: torch.nn.Module) -> torch.nn.Module:
    """The same block, same parameter values, in its fast form."""
    return to_fast(copy.deepcopy(module))


def _modconv_forms(m: ModulatedConv2d):
    """The reference forward, and the fast block's fused and unfused forms, as callables (x, style) -> out."""
    fast = _fast_copy(m)
    assert isinstance(fast, FastModulatedConv2d)
    return {"reference": m, "fused": fast.fused, "unfused": fast.unfused, "fast": fast}


@pytest.mark.parametrize("form", ["reference", "fused", "unfused", "fast"])
@pytest.mark.parametrize("kind", ["conv", "up", "rgb"])
@pytest.mark.parametrize("batch", [1, 3])
def test_modulated_conv_matches_formula(form, kind, batch):
    torch.manual_seed(0)
    if kind == "rgb":
        m = ModulatedConv2d(6, 3, 1, 10, demodulate=False)
    else:
        m = ModulatedConv2d(6, 5, 3, 10, upsample=kind == "up")
    _randomise(m)
    x, style = torch.randn(batch, 6, 8, 8), torch.randn(batch, 10)
    want = _modconv_formula(m, x, style)
    got = _modconv_forms(m)[form](x, style)
    assert got.shape == want.shape == (batch, m.out_ch, 16 if kind == "up" else 8, 16 if kind == "up" else 8)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("form", ["fused", "unfused"])
@pytest.mark.parametrize("upsample", [False, True])
def test_fast_modulated_conv_folds_gain_and_bias(form, upsample):
    torch.manual_seed(5)
    m = ModulatedConv2d(4, 5, 3, 6, upsample=upsample)
    _randomise(m)
    x, style, bias = torch.randn(2, 4, 8, 8), torch.randn(2, 6), torch.randn(5)
    want = 1.7 * m(x, style) + bias[None, :, None, None]
    got = getattr(_fast_copy(m), form)(x, style, gain=1.7, bias=bias)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_fast_modulated_conv_picks_its_form_by_shape_and_graph():
    convs = {
        "conv": _fast_copy(ModulatedConv2d(4, 5, 3, 6)),
        "up": _fast_copy(ModulatedConv2d(4, 3, 3, 6, upsample=True)),
        "to_rgb": _fast_copy(ModulatedConv2d(4, 3, 1, 6, demodulate=False)),
    }
    picked: dict[str, list[str]] = {}
    cls = type(convs["conv"])
    for name, m in convs.items():
        forms = picked.setdefault(name, [])
        with (
            mock.patch.object(cls, "fused", lambda self, *a, forms=forms: forms.append("fused")),
            mock.patch.object(cls, "unfused", lambda self, *a, forms=forms: forms.append("unfused")),
        ):
            m(torch.randn(1, 4, 8, 8), torch.randn(1, 6))  # batch of one: a plain conv
            m(torch.randn(3, 4, 8, 8), torch.randn(3, 6))  # training: by the shape
            with torch.no_grad():
                m(torch.randn(3, 4, 8, 8), torch.randn(3, 6))  # batched inference: one shared weight
            with torch.autocast("cpu", dtype=torch.bfloat16):
                m(torch.randn(3, 4, 8, 8), torch.randn(3, 6))  # training under autocast: one shared weight
            m(torch.randn(3, 4, 256, 512), torch.randn(3, 6))  # training on a large input
            m.requires_grad_(False)
            m(torch.randn(3, 4, 8, 8), torch.randn(3, 6))  # frozen weights, nothing else needing a graph
            m(torch.randn(3, 4, 8, 8), torch.randn(3, 6, requires_grad=True))  # frozen, only the style trains (mapper)
            m(torch.randn(3, 4, 8, 8, requires_grad=True), torch.randn(3, 6))  # frozen, the input trains (Stage I)
    assert picked == {
        "conv": ["fused", "unfused", "unfused", "unfused", "unfused", "unfused", "unfused", "unfused"],
        "up": ["fused", "fused", "unfused", "unfused", "fused", "unfused", "unfused", "fused"],
        "to_rgb": ["fused", "fused", "unfused", "unfused", "unfused", "unfused", "unfused", "fused"],
    }


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_styled_conv_fast_equals_reference(upsample, grad):
    torch.manual_seed(1)
    m = StyledConv(8, 6, 3, 12, upsample=upsample)
    _randomise(m)
    fast = _fast_copy(m)
    x, style = torch.randn(4, 8, 8, 8), torch.randn(4, 12)
    noise = torch.randn(4, 1, 16 if upsample else 8, 16 if upsample else 8)
    with torch.set_grad_enabled(grad):
        want = m(x, style, noise)
        got = fast(x, style, noise)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # noise formula: x + w * n before the activation
    pre = m.conv(x, style) + m.noise.weight * noise
    torch.testing.assert_close(want, F.leaky_relu(pre + m.activate.bias[None, :, None, None], 0.2) * math.sqrt(2))
    if grad:  # the same gradients for every parameter
        want.square().sum().backward()
        got.square().sum().backward()
        for (name, p), q in zip(m.named_parameters(), fast.parameters(), strict=True):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-4, msg=name)


def test_to_rgb_skip_fast_equals_reference():
    torch.manual_seed(2)
    m = ToRGB(8, 12)
    _randomise(m)
    x, style, skip = torch.randn(2, 8, 16, 16), torch.randn(2, 12), torch.randn(2, 3, 8, 8)
    want = _modconv_formula(m.conv, x, style) + m.bias + ops.upfirdn2d(skip, m.upsample.kernel, up=2, pad=(2, 1))
    torch.testing.assert_close(m(x, style, skip), want, rtol=1e-4, atol=1e-5)
    fast = _fast_copy(m)
    torch.testing.assert_close(fast(x, style, skip), want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast(x[:1], style[:1], skip[:1]), want[:1], rtol=1e-4, atol=1e-5)


def test_under_bf16_autocast_the_rgb_skip_and_the_demodulation_stay_fp32():
    """Autocast would run the skip's transposed conv and the demodulation's matmul in bf16: both are kept fp32."""
    torch.manual_seed(3)
    m = ToRGB(8, 12)
    _randomise(m)
    x, style, skip = torch.randn(2, 8, 16, 16), torch.randn(2, 12), torch.randn(2, 3, 8, 8)
    seen = []
    for rgb in (m, _fast_copy(m)):
        want = rgb.upsample(skip)  # fp32, no autocast
        rgb.upsample.register_forward_hook(lambda mod, args, out: seen.append(out))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rgb(x, style, skip)
        assert seen[-1].dtype == torch.float32
        torch.testing.assert_close(seen[-1], want, rtol=0, atol=0)

    conv = _fast_copy(ModulatedConv2d(8, 16, 3, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s, coef = conv._style_and_coef(style, 1.0)
    assert s.dtype == torch.bfloat16 and coef.dtype == torch.float32  # the style is autocast's; its demod is not
    w2 = conv.weight[0].float().square().sum(dim=(2, 3)) * conv.scale**2
    torch.testing.assert_close(coef, torch.rsqrt(s.float().square() @ w2.t() + 1e-8), rtol=0, atol=0)


def test_conv_layer_keys_and_downsample_paths():
    layer = ConvLayer(4, 8, 3, downsample=True)
    assert [k for k in layer.state_dict()] == ["1.weight", "2.bias"]  # rosinality's nn.Sequential positions
    skip = ConvLayer(4, 8, 1, downsample=True, activate=False, bias=False)
    assert list(skip.state_dict()) == ["1.weight"]
    assert list(ConvLayer(4, 8, 3).state_dict()) == ["0.weight", "1.bias"]
    assert list(ConvLayer(4, 8, 3, bias=False).state_dict()) == ["0.weight"]
    assert ConvLayer(4, 8, 3).blur is None and skip.act is None
    assert skip.blur is getattr(skip, "0") and skip.conv is getattr(skip, "1")
    torch.manual_seed(3)
    _randomise(layer)
    x = torch.randn(2, 4, 16, 16)
    for mod, pad in ((layer, (2, 2)), (skip, (1, 1))):
        ref = F.conv2d(
            ops.upfirdn2d(x, ops.make_kernel([1, 3, 3, 1]), pad=pad), mod.conv.weight * mod.conv.scale, stride=2
        )
        if mod.activate:
            ref = ops.fused_leaky_relu(ref, mod.act.bias)
        fast = _fast_copy(mod)
        for out in (mod(x), fast(x), fast(x, gain=0.5) / 0.5):
            assert out.shape == (2, 8, 8, 8)
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_resblock_fast_equals_reference():
    torch.manual_seed(4)
    block = ResBlock(4, 6)
    _randomise(block)
    x = torch.randn(2, 4, 16, 16)
    ref = block(x)
    fast = _fast_copy(block)
    assert ref.shape == (2, 6, 8, 8)
    x_before = x.clone()
    with torch.no_grad():  # in place inside the fast blocks, never on the caller's tensor
        torch.testing.assert_close(fast(x), ref, rtol=1e-4, atol=1e-5)
        cl = fast(x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(x, x_before)
    torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-5)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    nchw = to_fast(copy.deepcopy(block), channels_last=False)(x)
    assert nchw.is_contiguous()
    torch.testing.assert_close(nchw, ref, rtol=1e-4, atol=1e-5)


def test_to_fast_keeps_parameters_keys_and_leaves_subclasses_alone():
    block = StyledConv(4, 6, 3, 8, upsample=True)
    params = list(block.parameters())
    keys = list(block.state_dict())
    assert to_fast(block) is block
    assert type(block).__name__ == "FastStyledConv" and type(block.conv).__name__ == "FastModulatedConv2d"
    assert type(block.conv.blur).__name__ == "FastBlur"
    assert all(p is q for p, q in zip(params, block.parameters(), strict=True))
    assert list(block.state_dict()) == keys

    class OwnForward(ConvLayer):
        pass

    assert type(to_fast(OwnForward(3, 4, 3))) is OwnForward


def test_noise_injection():
    n = NoiseInjection()
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(n(x, torch.randn(2, 1, 4, 4)), x)  # weight starts at 0
    with torch.no_grad():
        n.weight.fill_(0.5)
    noise = torch.randn(1, 1, 4, 4)
    torch.testing.assert_close(n(x, noise), x + 0.5 * noise)
    assert n(x, None) is x


def test_noise_argument_validation():
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

"""StyleGAN2 prior generator and discriminator: sizes, rosinality keys, noise handling, layer/slot layout."""

from __future__ import annotations

import pytest
import torch

from mmfs.config import PRESETS
from mmfs.nn import Discriminator, Generator, Stylizer, ops
from support.tiny import TINY


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def big():
    with torch.device("meta"):
        return Generator(PRESETS["ffhq512"]), Discriminator(PRESETS["ffhq512"])


def test_parameter_counts_at_512(big):
    g, d = big
    assert _count(g) == 30_276_583
    assert _count(d) == 28_982_849
    assert g.num_ws == 16


def test_rosinality_keys_and_shapes(big):
    g, d = big
    gs, ds = g.state_dict(), d.state_dict()
    expect_g = {
        "style.1.weight": (512, 512),
        "style.8.bias": (512,),
        "input.input": (1, 512, 4, 4),
        "conv1.conv.weight": (1, 512, 512, 3, 3),
        "conv1.conv.modulation.weight": (512, 512),
        "conv1.noise.weight": (1,),
        "to_rgb1.conv.weight": (1, 3, 512, 1, 1),
        "convs.6.conv.weight": (1, 512, 512, 3, 3),
        "convs.13.activate.bias": (64,),
        "to_rgbs.6.bias": (1, 3, 1, 1),
        "noises.noise_0": (1, 1, 4, 4),
        "noises.noise_14": (1, 1, 512, 512),
    }
    for key, shape in expect_g.items():
        assert tuple(gs[key].shape) == shape, key
    assert "noises.noise_15" not in gs and "style.9.weight" not in gs
    assert not any(k.endswith("kernel") for k in gs) and not any(k.endswith("kernel") for k in ds)
    expect_d = {
        "convs.0.0.weight": (64, 3, 1, 1),
        "convs.0.1.bias": (64,),
        "convs.1.conv1.0.weight": (64, 64, 3, 3),
        "convs.1.conv2.1.weight": (128, 64, 3, 3),
        "convs.1.conv2.2.bias": (128,),
        "convs.1.skip.1.weight": (128, 64, 1, 1),
        "convs.7.conv2.1.weight": (512, 512, 3, 3),
        "final_conv.0.weight": (512, 513, 3, 3),
        "final_linear.0.weight": (512, 8192),
        "final_linear.1.bias": (1,),
    }
    for key, shape in expect_d.items():
        assert tuple(ds[key].shape) == shape, key
    assert len(ds) == 43  # the reference's 57 minus 14 blur kernels


def test_discriminator_feature_shapes_at_512(big):
    _, d = big
    feats = d.features(torch.empty(2, 3, 512, 512, device="meta"))
    assert [tuple(f.shape) for f in feats] == [(2, 128, 256, 256), (2, 512, 64, 64), (2, 512, 32, 32), (2, 512, 16, 16)]
    assert tuple(d(torch.empty(2, 3, 512, 512, device="meta")).shape) == (2, 1)


def test_discriminator_tiny_features_and_logits():
    torch.manual_seed(0)
    d = Discriminator(TINY)
    assert d.feature_blocks == (1, 3)  # blocks 4 and 5 do not exist at 32 px
    x = torch.randn(3, 3, 32, 32)  # batch 3: stddev group falls back to 3
    assert d(x).shape == (3, 1)
    feats = d.features(x)
    assert [f.shape for f in feats] == [(3, 16, 16, 16), (3, 32, 4, 4)]
    # features are the outputs of the same blocks forward() runs through
    h = d.convs[1](d.convs[0](x))
    torch.testing.assert_close(feats[0], h)


def test_generator_noise_modes_and_strict_rosinality_load():
    torch.manual_seed(0)
    g = Generator(TINY).eval()
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.5)
    z = torch.randn(2, TINY.z_dim)
    with torch.no_grad():
        a = g(z, generator=torch.Generator().manual_seed(1))
        b = g(z, generator=torch.Generator().manual_seed(1))
        c = g(z, generator=torch.Generator().manual_seed(2))
        const1, const2 = g(z, noise="const"), g(z, noise="const")
        replay = g(z, noise=g.make_noise(2, generator=torch.Generator().manual_seed(1)))
    assert a.shape == (2, 3, 32, 32)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.equal(const1, const2)
    torch.testing.assert_close(replay, a)
    # a rosinality g_ema also carries blur kernels: they are accepted and checked
    sd = g.state_dict()
    sd["convs.0.conv.blur.kernel"] = ops.make_kernel([1, 3, 3, 1]) * 4
    sd["to_rgbs.0.upsample.kernel"] = ops.make_kernel([1, 3, 3, 1]) * 4
    g.load_state_dict(sd, strict=True)
    sd["to_rgbs.1.upsample.kernel"] = torch.ones(4, 4)
    with pytest.raises(RuntimeError, match="blur kernel differs"):
        g.load_state_dict(sd, strict=True)


def test_stylizer_decoder_is_the_prior_from_feature_resolution_up():
    """Copying prior layers into the Stylizer (the reference's phase-1 import) reproduces the prior's image.

    At the tiny preset the prior has 8 w slots and the Stylizer 6 with offset 2: decoder0 stands where
    convs[1] is, to_rgb0 where to_rgbs[0] is (its 4 px RGB skip is zeroed here), decoder1a/b = convs[2]/[3], ...
    """
    torch.manual_seed(0)
    cfg = TINY
    g, s = Generator(cfg).eval(), Stylizer(cfg).eval()
    offset = cfg.prior_ws_offset
    assert offset == 2
    with torch.no_grad():
        g.to_rgb1.conv.weight.zero_()
        g.to_rgb1.bias.zero_()
        for _, p in g.named_parameters():
            if p.numel() == 1:
                p.fill_(0.7)  # noise weights
    gs = g.state_dict()
    sd = {}
    rename = {"convs.1.": "decoder0.", "to_rgbs.0.": "to_rgb0."}
    for i in range(2, 2 * cfg.log2_resolution - 4):
        rename[f"convs.{i}."] = f"decoder{i // 2}{'a' if i % 2 == 0 else 'b'}."
    for i in range(1, cfg.num_upsamples + 1):
        rename[f"to_rgbs.{i}."] = f"to_rgb{i}."
    for key, value in gs.items():
        for src, dst in rename.items():
            if key.startswith(src):
                sd[dst + key[len(src) :]] = value
    missing = s.load_state_dict(sd, strict=False).missing_keys
    assert all(k.startswith(("encoder.", "mapping_z.")) for k in missing)
    ws = torch.randn(2, g.num_ws, cfg.w_dim)
    maps = g.make_noise(2, generator=torch.Generator().manual_seed(3))
    feats = {}
    g.convs[0].register_forward_hook(lambda m, i, o: feats.setdefault("h", o))
    with torch.no_grad():
        want = g.synthesis(ws, noise=maps)
        got = s.decode(feats["h"], ws[:, offset:], noise=maps[offset:])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def _assert_grads_close(ref: torch.nn.Module, fast: torch.nn.Module) -> None:
    names = [name for name, _ in ref.named_parameters()]
    pairs = list(zip(names, ref.parameters(), fast.parameters(), strict=True))
    assert [p.grad is None for _, p, _ in pairs] == [q.grad is None for _, _, q in pairs]
    assert sum(p.grad is not None for _, p, _ in pairs) > len(pairs) // 2
    for name, p, q in pairs:
        if p.grad is not None:  # sums over many pixels cancel: rounding is relative to the largest entry
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-4 * float(p.grad.abs().max()), msg=name)


def _weighting(t: torch.Tensor) -> torch.Tensor:
    return torch.randn(t.shape, generator=torch.Generator().manual_seed(9))


def test_fast_and_reference_generators_agree():
    """Built with and without the fast blocks from one state dict: the same keys, images and gradients."""
    torch.manual_seed(0)
    fast = Generator(TINY)
    with torch.no_grad():
        for p in fast.parameters():
            p.add_(torch.randn_like(p) * 0.2)  # non-zero noise weights and biases
    ref = Generator(TINY, fast=False)
    assert list(ref.state_dict()) == list(fast.state_dict())
    ref.load_state_dict(fast.state_dict())
    ws = torch.randn(3, fast.num_ws, TINY.w_dim)
    with torch.no_grad():
        for batch in (1, 3):  # fused and unfused modulated convs
            want = ref.synthesis(ws[:batch], noise="const")
            torch.testing.assert_close(fast.synthesis(ws[:batch], noise="const"), want, rtol=1e-4, atol=1e-4)
    for net in (ref, fast):
        out = net(torch.randn(3, TINY.z_dim, generator=torch.Generator().manual_seed(1)), noise="const")
        (out * _weighting(out)).sum().backward()
    _assert_grads_close(ref, fast)


def test_fast_and_reference_discriminators_agree():
    """Logits, features, parameter gradients and the R1 input gradient, from one state dict."""
    torch.manual_seed(0)
    fast = Discriminator(TINY)
    with torch.no_grad():
        for p in fast.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    ref = Discriminator(TINY, fast=False)
    assert list(ref.state_dict()) == list(fast.state_dict())
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-4, atol=1e-5)
        for a, b in zip(fast.features(x), ref.features(x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    input_grads = []
    for net in (ref, fast):
        real = x.clone().requires_grad_(True)
        logits = net(real)
        (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)  # R1, as training differentiates it
        (logits.sum() + grad.square().sum()).backward()
        input_grads.append(grad.detach())
    torch.testing.assert_close(input_grads[1], input_grads[0], rtol=1e-3, atol=1e-5)
    _assert_grads_close(ref, fast)

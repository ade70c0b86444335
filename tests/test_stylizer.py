"""The Stylizer: reference sizes and keys, style helpers, noise semantics, precision, compile, gradients."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mmfs.config import PRESETS
from mmfs.errors import CheckpointError
from mmfs.nn import Stylizer, to_fast
from mmfs.nn.encoder import encoder_channels
from support.tiny import TINY

# a mid-size network: 64 px from 16 px, 64..32 channels (every code path of the 512 px model)
MID = dataclasses.replace(
    TINY, resolution=64, feature_resolution=16, channel_base=2048, channel_max=64, encoder_channels=16
)


def _count(params) -> int:
    return sum(p.numel() for p in params)


def _noisy(cfg, seed=0, **kw) -> Stylizer:
    """A Stylizer whose zero-initialised noise weights / biases are non-zero, so every path matters."""
    torch.manual_seed(seed)
    s = Stylizer(cfg, **kw).eval()
    with torch.no_grad():
        for name, p in s.named_parameters():
            if name.endswith(("noise.weight", "activate.bias", "to_rgb0.bias")) or ".bias" in name:
                p.add_(torch.randn_like(p) * 0.2)
    return s


@pytest.fixture(scope="module")
def big():
    with torch.device("meta"):
        return Stylizer(PRESETS["ffhq512"], with_mapper=True)


def test_parameter_counts_at_512(big):
    assert _count(big.parameters()) == 31_291_032
    assert _count(big.parameters()) - _count(big.clip_mapper.parameters()) == 18_676_376
    assert _count(big.encoder.parameters()) == 4_935_360
    assert _count(big.mapping_z.parameters()) == 2_101_248
    assert _count(big.decoder_parameters()) == 11_639_768
    assert _count(big.stage1_parameters()) == 7_822_020
    assert (big.num_ws, big.num_noises) == (10, 9)


def test_reference_keys_and_shapes_at_512(big):
    sd = big.state_dict()
    assert len(sd) == 154  # the reference's 170 minus 16 blur-kernel buffers (105 without the mapper)
    expect = {
        "encoder.0.0.weight": (64, 3, 3, 3),
        "encoder.0.1.bias": (64,),
        "encoder.4.conv2.1.weight": (512, 256, 3, 3),
        "encoder.4.skip.1.weight": (512, 256, 1, 1),
        "encoder.5.0.weight": (512, 512, 3, 3),
        "mapping_z.1.weight": (512, 512),
        "mapping_z.8.bias": (512,),
        "decoder0.conv.weight": (1, 512, 512, 3, 3),
        "decoder0.conv.modulation.weight": (512, 512),
        "decoder0.conv.modulation.bias": (512,),
        "decoder0.noise.weight": (1,),
        "decoder0.activate.bias": (512,),
        "to_rgb0.conv.weight": (1, 3, 512, 1, 1),
        "to_rgb0.bias": (1, 3, 1, 1),
        "decoder2a.conv.weight": (1, 256, 512, 3, 3),
        "decoder4b.conv.weight": (1, 64, 64, 3, 3),
        "to_rgb4.conv.modulation.weight": (64, 512),
        "clip_mapper.position_embedding": (10, 512),
        "clip_mapper.transformer.layers.3.self_attn.in_proj_weight": (1536, 512),
        "clip_mapper.transformer.layers.0.linear1.weight": (2048, 512),
        "clip_mapper.transformer.layers.0.linear2.weight": (512, 2048),
        "clip_mapper.transformer.layers.0.norm2.bias": (512,),
    }
    for key, shape in expect.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.endswith("kernel") for k in sd)
    assert "mapping_z.9.weight" not in sd and "decoder5a.conv.weight" not in sd


def test_encoder_shapes(big):
    assert encoder_channels(PRESETS["ffhq512"]) == [64, 64, 128, 256, 512]
    assert encoder_channels(PRESETS["ffhq256"]) == [64, 128, 256, 512]
    assert encoder_channels(PRESETS["ffhq1024"]) == [64, 64, 64, 128, 256, 512]
    assert tuple(big.encode(torch.empty(1, 3, 512, 512, device="meta")).shape) == (1, 512, 32, 32)


def test_forward_shapes_range_and_decode():
    s = _noisy(TINY)
    x, ws = torch.randn(2, 3, 32, 32), torch.randn(2, s.num_ws, TINY.w_dim) * 3
    with torch.no_grad():
        feat = s.encode(x)
        raw = s.decode(feat, ws, noise="zero")
        out = s(x, ws, noise="zero")
    assert feat.shape == (2, 32, 8, 8)
    assert raw.shape == out.shape == (2, 3, 32, 32)
    torch.testing.assert_close(out, raw.clamp(-1, 1))
    with pytest.raises(ValueError, match="ws must be"):
        s(x, ws[:, :-1])


def test_style_helpers():
    s = _noisy(TINY, with_mapper=True)
    z1, z2 = torch.randn(3, TINY.z_dim), torch.randn(3, TINY.z_dim)
    with torch.no_grad():
        w1 = s.z_to_w(z1)
        ws = s.ws_from_z(z1)
        mixed = s.mixed_ws(z1, z2, crossover=2)
        emb = torch.nn.functional.normalize(torch.randn(3, TINY.clip_dim), dim=-1)
        wc = s.ws_from_clip(emb)
    assert w1.shape == (3, TINY.w_dim) and ws.shape == (3, 6, TINY.w_dim)
    assert all(torch.equal(ws[:, i], w1) for i in range(6))
    assert torch.equal(mixed[:, :2], ws[:, :2])
    torch.testing.assert_close(mixed[:, 2:], s.ws_from_z(z2)[:, 2:])
    assert wc.shape == (3, 6, TINY.w_dim)
    with pytest.raises(ValueError, match="crossover"):
        s.mixed_ws(z1, z2, 7)
    with pytest.raises(CheckpointError, match="this checkpoint has no CLIP mapper; train one with `mmfs train-mapper`"):
        Stylizer(TINY).ws_from_clip(emb)


def test_noise_seeding_zero_and_replay():
    s = _noisy(TINY)
    x, ws = torch.randn(2, 3, 32, 32), torch.randn(2, s.num_ws, TINY.w_dim)
    gen = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    with torch.no_grad():
        a, b, c = s(x, ws, generator=gen(7)), s(x, ws, generator=gen(7)), s(x, ws, generator=gen(8))
        z1, z2 = s(x, ws, noise="zero"), s(x, ws, noise="zero")
        maps = s.make_noise(2, generator=gen(7))
        replay = s(x, ws, noise=maps)
        one = s.make_noise(1, generator=gen(9))
        broadcast = s(x, ws, noise=one)
        per_sample = torch.cat([s(x[i : i + 1], ws[i : i + 1], noise=one) for i in range(2)])
    assert [m.shape[-1] for m in maps] == [8, 16, 16, 32, 32] and len(maps) == s.num_noises
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.equal(z1, z2) and not torch.allclose(a, z1)
    torch.testing.assert_close(replay, a)
    torch.testing.assert_close(broadcast, per_sample, rtol=1e-4, atol=1e-5)
    # the global RNG is used when no generator is given
    torch.manual_seed(11)
    with torch.no_grad():
        g1 = s(x, ws)
    torch.manual_seed(11)
    with torch.no_grad():
        g2 = s(x, ws)
    assert torch.equal(g1, g2)


@pytest.mark.parametrize("cfg", [TINY, MID], ids=["tiny", "mid"])
def test_fast_and_reference_stylizers_agree(cfg):
    """Built with and without the fast blocks from one state dict: the same keys, images and gradients."""
    fast = _noisy(cfg)
    ref = Stylizer(cfg, fast=False).eval()
    assert list(ref.state_dict()) == list(fast.state_dict())
    ref.load_state_dict(fast.state_dict())
    nchw = to_fast(Stylizer(cfg, fast=False), channels_last=False).eval()
    nchw.load_state_dict(fast.state_dict())
    x, ws = torch.randn(3, 3, cfg.resolution, cfg.resolution), torch.randn(3, fast.num_ws, cfg.w_dim)
    with torch.no_grad():  # batched inference: the unfused modulated convs, in place
        want = ref.decode(ref.encode(x), ws, noise="zero")
        for net in (fast, nchw):
            torch.testing.assert_close(net.decode(net.encode(x), ws, noise="zero"), want, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(fast(x[:1], ws[:1], noise="zero"), ref(x[:1], ws[:1], noise="zero"))
    # training: fused modulated convs, gradients of every parameter and of the styles
    grads = []
    for net in (ref, fast):
        net.zero_grad()
        ws_in = ws.clone().requires_grad_(True)
        out = net.decode(net.encode(x), ws_in, generator=torch.Generator().manual_seed(3))  # no clamp: smooth
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append([p.grad for p in net.parameters()] + [ws_in.grad])
    names = [name for name, _ in ref.named_parameters()] + ["ws"]
    # the same parameters take part (the mapping networks do not: ws are given)
    assert [g is None for g in grads[0]] == [g is None for g in grads[1]]
    assert sum(g is not None for g in grads[0]) > len(names) // 2
    for name, g_ref, g_fast in zip(names, grads[0], grads[1], strict=True):
        if g_ref is None:
            continue
        # sums over many pixels cancel: float rounding is relative to the gradient's largest entry
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-3, atol=1e-4 * float(g_ref.abs().max()), msg=name)


@pytest.mark.parametrize("cfg", [TINY, MID], ids=["tiny", "mid"])
def test_bf16_autocast_close_to_fp32(cfg):
    """bf16 has an 8-bit mantissa: we require mean |diff| < 0.01 and max |diff| < 0.1 on images in [-1, 1]."""
    s = _noisy(cfg)
    x, ws = torch.rand(2, 3, cfg.resolution, cfg.resolution) * 2 - 1, torch.randn(2, s.num_ws, cfg.w_dim)
    with torch.no_grad():
        ref = s(x, ws, noise="zero")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = s(x, ws, noise="zero")
    assert low.dtype == torch.float32  # the RGB sum stays fp32
    diff = (low - ref).abs()
    assert float(ref.std()) > 0.05
    assert float(diff.mean()) < 0.01 and float(diff.max()) < 0.1, (float(diff.mean()), float(diff.max()))


def test_gradients_reach_every_stage1_parameter():
    s = _noisy(TINY)
    s.train()
    s.requires_grad_(False)
    params = s.stage1_parameters()
    for p in params:
        p.requires_grad_(True)
    x, ws = torch.randn(2, 3, 32, 32), torch.randn(2, s.num_ws, TINY.w_dim)
    out = s(x, ws, generator=torch.Generator().manual_seed(0))
    (out - torch.randn_like(out)).square().mean().backward()
    names = {id(p): n for n, p in s.named_parameters()}
    dead = [names[id(p)] for p in params if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not dead, dead
    assert all(p.grad is None for p in s.decoder1a.parameters())


def test_compile_has_no_graph_breaks():
    s = _noisy(TINY)
    x, ws = torch.randn(1, 3, 32, 32), torch.randn(1, s.num_ws, TINY.w_dim)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(s.forward)(x, ws)  # noise drawn inside from the global RNG
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_compiled_forward_survives_a_new_batch_size():
    """The second batch size makes the batch dimension symbolic; drawing noise must still trace."""
    s = _noisy(TINY)
    torch._dynamo.reset()
    compiled = torch.compile(s.forward, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        for batch in (1, 3, 2):
            x, ws = torch.randn(batch, 3, 32, 32), torch.randn(batch, s.num_ws, TINY.w_dim)
            assert compiled(x, ws).shape == (batch, 3, 32, 32)


def test_compiled_forward_matches_eager():
    """fullgraph=True fails on any graph break; aot_eager traces forward and backward graphs without codegen
    (the Inductor build of the same graphs runs in benchmarks/generator_throughput.py)."""
    s = _noisy(TINY)
    x, ws = torch.randn(1, 3, 32, 32), torch.randn(1, s.num_ws, TINY.w_dim)
    torch._dynamo.reset()
    compiled = torch.compile(s.forward, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        maps = s.make_noise(1)
        torch.testing.assert_close(compiled(x, ws, noise=maps), s(x, ws, noise=maps), rtol=1e-4, atol=1e-4)

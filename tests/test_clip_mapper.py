"""The CLIP -> w+ mapper: reference size, keys, initialisation, and maths equal to the sequence-first reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmfs.config import PRESETS
from mmfs.nn import ClipMapper
from support.tiny import TINY


def test_size_and_keys_at_512():
    with torch.device("meta"):
        m = ClipMapper(PRESETS["ffhq512"])
    assert sum(p.numel() for p in m.parameters()) == 12_614_656
    sd = m.state_dict()
    assert tuple(sd["position_embedding"].shape) == (10, 512)
    assert tuple(sd["transformer.layers.0.self_attn.in_proj_weight"].shape) == (1536, 512)
    assert tuple(sd["transformer.layers.3.self_attn.out_proj.weight"].shape) == (512, 512)
    assert tuple(sd["transformer.layers.2.linear1.weight"].shape) == (2048, 512)
    assert "transformer.layers.4.linear1.weight" not in sd and "transformer.norm.weight" not in sd
    layer = m.transformer.layers[0]
    assert layer.norm_first and layer.activation_relu_or_gelu == 1 and layer.dropout.p == 0.1


def test_initialisation():
    torch.manual_seed(0)
    m = ClipMapper(PRESETS["ffhq512"])
    std = float(m.position_embedding.detach().std())
    assert abs(std - 512**-0.5) < 0.1 * 512**-0.5
    a, b = m.transformer.layers[0].state_dict(), m.transformer.layers[3].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # deep copies of one layer, as in the reference
    assert torch.all(m.transformer.layers[0].self_attn.in_proj_bias == 0)


def test_forward_matches_sequence_first_reference():
    torch.manual_seed(0)
    m = ClipMapper(TINY).eval()
    ref_layer = torch.nn.TransformerEncoderLayer(
        TINY.w_dim, TINY.mapper_heads, TINY.mapper_ffn_dim, TINY.mapper_dropout, norm_first=True
    )
    ref = torch.nn.TransformerEncoder(ref_layer, TINY.mapper_layers, enable_nested_tensor=False).eval()
    ref.load_state_dict(m.transformer.state_dict())
    emb = F.normalize(torch.randn(3, TINY.clip_dim), dim=-1)
    with torch.no_grad():
        got = m(emb)
        tokens = emb.view(3, 1, -1) + m.position_embedding  # [B, N, D]
        want = F.leaky_relu(ref(tokens.permute(1, 0, 2)), 0.2).permute(1, 0, 2)
    assert got.shape == (3, TINY.num_ws, TINY.w_dim)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert float(got.min()) < 0  # leaky, not ReLU


def test_dropout_active_only_in_train_mode():
    torch.manual_seed(0)
    m = ClipMapper(TINY)
    emb = torch.randn(2, TINY.clip_dim)
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(emb), m(emb))
    m.train()
    with torch.no_grad():
        assert not torch.equal(m(emb), m(emb))

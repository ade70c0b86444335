"""`mmfs convert`: upstream key layouts in, the same network outputs out."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
from typer.testing import CliRunner

from mmfs.checkpoint import load_checkpoint, load_state_strict
from mmfs.config import PRESETS, ModelConfig
from mmfs.errors import CheckpointError
from mmfs.models import load_stylizer
from mmfs.nn import Discriminator, Generator, Stylizer
from mmfs.nn.convert import prior_config, stylizer_init_from_prior
from mmfs_cli.app import app

runner = CliRunner()

# The official MMFS layout always hands over at 32 px; a small network with that property.
SMALL_MMFS = ModelConfig(
    resolution=64,
    feature_resolution=32,
    z_dim=32,
    w_dim=32,
    mapping_layers=2,
    channel_base=1024,
    channel_max=32,
    encoder_channels=8,
    clip_dim=32,
    mapper_layers=2,
    mapper_ffn_dim=64,
)


def _with_upstream_kernels(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state dict as upstream saves it: our weights plus the blur-kernel buffers rosinality persists."""
    state = dict(module.state_dict())
    for name, buf in module.named_buffers():
        if name.endswith("kernel"):
            state[name] = buf.clone()
    return state


def _invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result


def test_rosinality_round_trip_gives_identical_outputs(tmp_path):
    cfg = PRESETS["tiny"]
    g_ema, g, d = Generator(cfg), Generator(cfg), Discriminator(cfg)
    src = tmp_path / "stylegan2.pt"
    torch.save(
        {
            "g": _with_upstream_kernels(g),
            "g_ema": _with_upstream_kernels(g_ema),
            "d": _with_upstream_kernels(d),
            "latent_avg": torch.zeros(cfg.w_dim),
        },
        src,
    )
    result = _invoke("convert", str(src), str(tmp_path / "prior.safetensors"), "--feature-resolution", "8")
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(tmp_path / "prior.safetensors", kind="prior")
    assert ckpt.config.resolution == cfg.resolution and ckpt.config.w_dim == cfg.w_dim
    assert ckpt.config.mapping_layers == cfg.mapping_layers
    assert [ckpt.config.channels(r) for r in (4, 8, 16, 32)] == [cfg.channels(r) for r in (4, 8, 16, 32)]

    g2, d2 = Generator(ckpt.config).eval(), Discriminator(ckpt.config).eval()
    load_state_strict(g2, ckpt.subset("g."))
    load_state_strict(d2, ckpt.subset("d."))
    z = torch.randn(2, cfg.z_dim)
    with torch.no_grad():
        assert torch.equal(g_ema.eval()(z, noise="zero"), g2(z, noise="zero"))
        x = torch.randn(2, 3, cfg.resolution, cfg.resolution)
        assert torch.equal(d.eval()(x), d2(x))

    # the non-EMA generator on request, as the reference's Stage-I teacher
    result = _invoke(
        "convert", str(src), str(tmp_path / "prior_g.safetensors"), "--generator-key", "g", "--feature-resolution", "8"
    )
    assert result.exit_code == 0, result.output
    g_raw = load_checkpoint(tmp_path / "prior_g.safetensors").subset("g.")
    assert all(torch.equal(g_raw[k], v) for k, v in g.state_dict().items())


def test_full_size_rosinality_512_layout_converts(tmp_path):
    cfg = PRESETS["ffhq512"]
    g, d = Generator(cfg), Discriminator(cfg)
    assert sum(p.numel() for p in g.parameters()) == 30_276_583
    src = tmp_path / "ffhq512.pt"
    torch.save({"g_ema": _with_upstream_kernels(g), "d": _with_upstream_kernels(d)}, src)
    result = _invoke("convert", str(src), str(tmp_path / "p.safetensors"))
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(tmp_path / "p.safetensors", kind="prior")
    assert ckpt.config == cfg  # every inferred field equals the paper preset
    assert torch.equal(ckpt.tensors["g.convs.6.conv.weight"], g.state_dict()["convs.6.conv.weight"])

    # Stage-I initialisation: the decoder from 64 px up and the mapping come from the prior (reference §2.3)
    init = stylizer_init_from_prior(ckpt.subset("g."), cfg)
    gs = g.state_dict()
    assert torch.equal(init["decoder1a.conv.weight"], gs["convs.6.conv.weight"])
    assert torch.equal(init["decoder1b.noise.weight"], gs["convs.7.noise.weight"])
    assert torch.equal(init["to_rgb1.conv.weight"], gs["to_rgbs.3.conv.weight"])
    assert torch.equal(init["to_rgb4.bias"], gs["to_rgbs.6.bias"])
    assert torch.equal(init["mapping_z.8.weight"], gs["style.8.weight"])
    stylizer = Stylizer(cfg)
    missing, unexpected = stylizer.load_state_dict(init, strict=False)
    assert not unexpected
    assert {k.split(".")[0] for k in missing} == {"encoder", "decoder0", "to_rgb0"}


def test_official_mmfs_checkpoint_converts_and_stylizes_identically(tmp_path):
    torch.manual_seed(1)
    g_ema, g, d = (
        Stylizer(SMALL_MMFS, with_mapper=True),
        Stylizer(SMALL_MMFS, with_mapper=True),
        Discriminator(SMALL_MMFS),
    )
    src = tmp_path / "phase3_pretrain_10000.pth"
    torch.save(
        {
            "G_ema_model": _with_upstream_kernels(g_ema),
            "G_model": _with_upstream_kernels(g),
            "D_model": _with_upstream_kernels(d),
            "optimizer_0": {"state": {}, "param_groups": []},
            "epoch": 3,
        },
        src,
    )
    out = tmp_path / "mmfs.safetensors"
    result = _invoke("convert", str(src), str(out))
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(out, kind="training")
    assert ckpt.config == SMALL_MMFS
    assert {k.split(".")[0] for k in ckpt.tensors} == {"stylizer_ema", "stylizer", "disc"}

    loaded = load_stylizer(out)  # EMA weights, as the official inference uses
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    ws = g_ema.ws_from_z(torch.randn(2, SMALL_MMFS.z_dim))
    g_ema.eval()
    with torch.no_grad():
        assert torch.equal(g_ema(x, ws, noise="zero"), loaded(x, ws, noise="zero"))
        emb = torch.nn.functional.normalize(torch.randn(2, SMALL_MMFS.clip_dim), dim=1)
        assert torch.equal(g_ema.ws_from_clip(emb), loaded.ws_from_clip(emb))


# --- the official ffhq512 layout, written out from reference-implementation.md §2.1-§2.5 and §4 -------------
# (not from our modules' state dicts, so the tests below can catch a drift between the two)
def _conv_layer(prefix: str, cin: int, cout: int, k: int, *, down: bool = False, activate: bool = True) -> dict:
    """rosinality ConvLayer, an nn.Sequential: [Blur (kernel buffer)], EqualConv2d (no bias), [FusedLeakyReLU]."""
    keys, i = {}, 0
    if down:
        keys[f"{prefix}.{i}.kernel"] = (4, 4)
        i += 1
    keys[f"{prefix}.{i}.weight"] = (cout, cin, k, k)
    if activate:
        keys[f"{prefix}.{i + 1}.bias"] = (cout,)
    return keys


def _res_block(prefix: str, cin: int, cout: int) -> dict:
    return {
        **_conv_layer(f"{prefix}.conv1", cin, cin, 3),
        **_conv_layer(f"{prefix}.conv2", cin, cout, 3, down=True),
        **_conv_layer(f"{prefix}.skip", cin, cout, 1, down=True, activate=False),  # bias=False, no activation
    }


def _modulated(prefix: str, cin: int, cout: int, k: int) -> dict:
    return {
        f"{prefix}.weight": (1, cout, cin, k, k),
        f"{prefix}.modulation.weight": (cin, 512),
        f"{prefix}.modulation.bias": (cin,),
    }


def _styled_conv(prefix: str, cin: int, cout: int, *, up: bool) -> dict:
    keys = _modulated(f"{prefix}.conv", cin, cout, 3)
    if up:
        keys[f"{prefix}.conv.blur.kernel"] = (4, 4)
    return {**keys, f"{prefix}.noise.weight": (1,), f"{prefix}.activate.bias": (cout,)}


def _to_rgb(prefix: str, cin: int, *, up: bool) -> dict:
    keys = {**_modulated(f"{prefix}.conv", cin, 3, 1), f"{prefix}.bias": (1, 3, 1, 1)}
    if up:
        keys[f"{prefix}.upsample.kernel"] = (4, 4)
    return keys


def official_stylizer_shapes(with_mapper: bool) -> dict[str, tuple[int, ...]]:
    """Every key of the official 512 px Stylizer's state dict and its shape (§2.1 encoder, §2.2, §2.3, §4)."""
    keys = _conv_layer("encoder.0", 3, 64, 3)
    for i, (cin, cout) in enumerate([(64, 64), (64, 128), (128, 256), (256, 512)], start=1):
        keys.update(_res_block(f"encoder.{i}", cin, cout))
    keys.update(_conv_layer("encoder.5", 512, 512, 3))
    for i in range(1, 9):  # mapping_z.0 is the PixelNorm
        keys.update({f"mapping_z.{i}.weight": (512, 512), f"mapping_z.{i}.bias": (512,)})
    keys.update(_styled_conv("decoder0", 512, 512, up=False))
    keys.update(_to_rgb("to_rgb0", 512, up=False))
    channels = {32: 512, 64: 512, 128: 256, 256: 128, 512: 64}
    for k in range(1, 5):
        cin, cout = channels[16 * 2**k], channels[32 * 2**k]
        keys.update(_styled_conv(f"decoder{k}a", cin, cout, up=True))
        keys.update(_styled_conv(f"decoder{k}b", cout, cout, up=False))
        keys.update(_to_rgb(f"to_rgb{k}", cout, up=True))
    if with_mapper:
        keys["clip_mapper.position_embedding"] = (10, 512)
        for n in range(4):
            layer = f"clip_mapper.transformer.layers.{n}"
            keys.update(
                {
                    f"{layer}.self_attn.in_proj_weight": (1536, 512),
                    f"{layer}.self_attn.in_proj_bias": (1536,),
                    f"{layer}.self_attn.out_proj.weight": (512, 512),
                    f"{layer}.self_attn.out_proj.bias": (512,),
                    f"{layer}.linear1.weight": (2048, 512),
                    f"{layer}.linear1.bias": (2048,),
                    f"{layer}.linear2.weight": (512, 2048),
                    f"{layer}.linear2.bias": (512,),
                    **{f"{layer}.norm{j}.{p}": (512,) for j in (1, 2) for p in ("weight", "bias")},
                }
            )
    return keys


def official_discriminator_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of the official 512 px discriminator (§2.5): rosinality's at 512 px, min_feats_size 4."""
    keys = _conv_layer("convs.0", 3, 64, 1)
    pairs = [(64, 128), (128, 256), (256, 512)] + [(512, 512)] * 4
    for i, (cin, cout) in enumerate(pairs, start=1):
        keys.update(_res_block(f"convs.{i}", cin, cout))
    keys.update(_conv_layer("final_conv", 513, 512, 3))
    keys.update({"final_linear.0.weight": (512, 512 * 16), "final_linear.0.bias": (512,)})
    keys.update({"final_linear.1.weight": (1, 512), "final_linear.1.bias": (1,)})
    return keys


def _params(shapes: dict) -> int:
    return sum(math.prod(s) for k, s in shapes.items() if not k.endswith("kernel"))


def _official_tensors(shapes: dict, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random weights with the statistics of rosinality's init, and the blur kernels' true values."""
    k1 = torch.tensor([1.0, 3.0, 3.0, 1.0])
    blur = torch.outer(k1, k1) / 64  # a down-sampling Blur; the up-sampling ones carry the factor**2 = 4
    out = {}
    for key, shape in shapes.items():
        if key.endswith("kernel"):
            up = key.endswith(("blur.kernel", "upsample.kernel"))
            out[key] = blur * (4 if up else 1)
        elif key.startswith("mapping_z.") and key.endswith("weight"):
            out[key] = torch.randn(shape, generator=gen) * 100  # EqualLinear stores randn / lr_mul (0.01)
        elif key.endswith("modulation.bias") or key.endswith(("norm1.weight", "norm2.weight")):
            out[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
        elif key.startswith("clip_mapper."):
            out[key] = 0.05 * torch.randn(shape, generator=gen)
        elif key.endswith("bias"):
            out[key] = 0.1 * torch.randn(shape, generator=gen)
        elif key.startswith("to_rgb") and key.endswith("conv.weight"):
            out[key] = 0.1 * torch.randn(shape, generator=gen)  # no demodulation: keep the image inside [-1, 1]
        else:
            out[key] = torch.randn(shape, generator=gen)
    return out


@pytest.fixture(scope="module")
def official512(tmp_path_factory):
    """A full-size official phase-3 release (random weights, official keys), saved as upstream and converted."""
    root = tmp_path_factory.mktemp("official512")
    gen = torch.Generator().manual_seed(0)
    g_ema = _official_tensors(official_stylizer_shapes(with_mapper=True), gen)
    d = _official_tensors(official_discriminator_shapes(), gen)
    src = root / "phase3_pretrain_10000.pth"
    # G_model: a copy of G_ema (which one is picked is tested on SMALL_MMFS above). Separate tensors, as in a
    # real release: the converter writes both, and safetensors refuses tensors that share memory.
    torch.save(
        {
            "G_model": {k: v.clone() for k, v in g_ema.items()},
            "G_ema_model": g_ema,
            "D_model": d,
            "optimizer_0": {"state": {}, "param_groups": []},
            "epoch": 1,
            "total_iters": 10_000,
        },
        src,
    )
    out = root / "mmfs.safetensors"
    result = _invoke("convert", str(src), str(out))
    assert result.exit_code == 0, result.output
    return {"g_ema": g_ema, "d": d, "out": out}


def test_official_key_lists_are_the_reference_ones(official512):
    stylizer, with_mapper, disc = (
        official_stylizer_shapes(False),
        official_stylizer_shapes(True),
        official_discriminator_shapes(),
    )
    kernels = [k for k in stylizer if k.endswith("kernel")]
    assert (len(stylizer), len(kernels), len(with_mapper), len(disc)) == (121, 16, 170, 57)
    assert {"encoder.1.conv2.0.kernel", "decoder1a.conv.blur.kernel", "to_rgb1.upsample.kernel"} <= set(kernels)
    # the table reproduces the reference's measured parameter counts
    assert _params(stylizer) == 18_676_376 and _params(with_mapper) - _params(stylizer) == 12_614_656
    assert _params(disc) == 28_982_849

    # our modules: the same keys and shapes, counting the blur kernels we keep as non-persistent buffers
    def layout(module: torch.nn.Module) -> dict:
        return {k: tuple(v.shape) for k, v in _with_upstream_kernels(module).items()}

    cfg = PRESETS["ffhq512"]
    assert layout(Stylizer(cfg, with_mapper=True)) == with_mapper
    assert layout(Discriminator(cfg)) == disc
    # the converted file: every official weight (no kernels, which we rebuild) under its role's prefix
    tensors = load_checkpoint(official512["out"], kind="training").tensors
    for prefix, expected in (("stylizer_ema.", with_mapper), ("stylizer.", with_mapper), ("disc.", disc)):
        got = {k[len(prefix) :]: tuple(v.shape) for k, v in tensors.items() if k.startswith(prefix)}
        assert got == {k: s for k, s in expected.items() if not k.endswith("kernel")}, prefix


def test_full_size_official_mmfs_round_trip_stylizes_identically(official512):
    cfg = PRESETS["ffhq512"]
    ckpt = load_checkpoint(official512["out"], kind="training")
    assert ckpt.config == cfg  # 512 px, 10 w, 4 mapper layers: every inferred field is the paper's
    loaded = load_stylizer(official512["out"])
    direct = Stylizer(cfg, with_mapper=True)
    weights = {k: v for k, v in official512["g_ema"].items() if not k.endswith("kernel")}
    direct.load_state_dict(weights, strict=True)
    direct.eval()
    for name, buf in direct.named_buffers():  # the kernels we rebuild are the ones upstream saved
        if name.endswith("kernel"):
            assert torch.equal(buf, official512["g_ema"][name]), name
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(1, 3, 512, 512, generator=gen) * 2 - 1
    emb = torch.nn.functional.normalize(torch.randn(1, 512, generator=gen), dim=1)
    with torch.no_grad():
        ws = direct.ws_from_clip(emb)
        assert torch.equal(ws, loaded.ws_from_clip(emb))
        ws = ws + direct.ws_from_z(torch.randn(1, 512, generator=gen))  # a style the mapper alone would not give
        expected = direct(x, ws, noise="zero")
        got = loaded(x, ws, noise="zero")
    assert expected.shape == (1, 3, 512, 512)
    assert 0.05 < expected.std() and (expected.abs() < 1).float().mean() > 0.5  # not a saturated image
    assert torch.equal(expected, got)
    d = Discriminator(cfg).eval()
    load_state_strict(d, {k[len("disc.") :]: v for k, v in ckpt.tensors.items() if k.startswith("disc.")})
    assert all(torch.equal(d.state_dict()[k], v) for k, v in official512["d"].items() if not k.endswith("kernel"))


def test_refusals_are_one_line(tmp_path):
    untrusted = tmp_path / "namespace.pt"
    cfg = PRESETS["tiny"]
    torch.save({"g_ema": Generator(cfg).state_dict(), "args": argparse.Namespace(size=32)}, untrusted)
    result = _invoke("convert", str(untrusted), str(tmp_path / "x.safetensors"))
    assert result.exit_code == 1
    assert "--trust-pickle" in result.output and result.output.count("\n") == 1
    result = _invoke(
        "convert", str(untrusted), str(tmp_path / "x.safetensors"), "--trust-pickle", "--feature-resolution", "8"
    )
    assert result.exit_code == 0, result.output

    result = _invoke("convert", str(untrusted), str(tmp_path / "x.safetensors"))
    assert result.exit_code == 1 and "already exists" in result.output

    bad = tmp_path / "other.pt"
    torch.save({"model": {"w": torch.zeros(1)}}, bad)
    result = _invoke("convert", str(bad), str(tmp_path / "y.safetensors"))
    assert result.exit_code == 1 and "unrecognised checkpoint layout" in result.output

    wrong = dict(Generator(cfg).state_dict())
    wrong["conv1.conv.weight"] = torch.zeros(1, 32, 16, 3, 3)
    torch.save({"g_ema": wrong}, tmp_path / "wrong.pt")
    result = _invoke("convert", str(tmp_path / "wrong.pt"), str(tmp_path / "z.safetensors"))
    assert result.exit_code == 1 and "conv1.conv.weight" in result.output
    assert not (tmp_path / "z.safetensors").exists()

    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    result = _invoke("convert", str(tmp_path / "junk.pt"), str(tmp_path / "j.safetensors"))
    assert result.exit_code == 1 and "not a readable PyTorch checkpoint" in result.output


def test_prior_config_rejects_non_generator():
    with pytest.raises(CheckpointError, match="not a rosinality StyleGAN2 generator"):
        prior_config({"foo": torch.zeros(1)})

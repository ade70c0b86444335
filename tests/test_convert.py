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
from mmfs.inference.models import load_stylizer
from mmfs.nn import Discriminator, Generator, Stylizer
from mmfs.nn.convert import first_layers_from_prior, prior_config, stylizer_init_from_prior
from mmfs_cli.app import app
from support.official_layout import official_discriminator_shapes, official_stylizer_shapes, official_tensors

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

    # Stage-I initialisation: the decoder from 64 px up and the mapping come from the prior (official key map)
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


def _params(shapes: dict) -> int:
    return sum(math.prod(s) for k, s in shapes.items() if not k.endswith("kernel"))


@pytest.fixture(scope="module")
def official512(tmp_path_factory):
    """A full-size official phase-3 release (random weights, official keys), saved as upstream and converted."""
    root = tmp_path_factory.mktemp("official512")
    gen = torch.Generator().manual_seed(0)
    g_ema = official_tensors(official_stylizer_shapes(with_mapper=True), gen)
    d = official_tensors(official_discriminator_shapes(), gen)
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


def test_first_layers_from_prior_take_the_prior_layers_at_feature_resolution(tmp_path):
    # At 512 px (F = 32) decoder0 stands for the prior's second 32 px conv, convs[5], and to_rgb0 for its
    # 32 px ToRGB, to_rgbs[2]; at tiny (32 px, F = 8) they are convs[1] and to_rgbs[0].
    for name, conv, rgb in (("ffhq512", 5, 2), ("tiny", 1, 0)):
        cfg = PRESETS[name]
        fake = {f"convs.{i}.conv.weight": torch.full((1,), float(i)) for i in range(2 * cfg.log2_resolution - 4)}
        fake |= {f"to_rgbs.{i}.bias": torch.full((1,), 100.0 + i) for i in range(cfg.log2_resolution - 2)}
        out = first_layers_from_prior(fake, cfg)
        assert out.keys() == {"decoder0.conv.weight", "to_rgb0.bias"}
        assert out["decoder0.conv.weight"].item() == conv and out["to_rgb0.bias"].item() == 100 + rgb
    with pytest.raises(CheckpointError, match="no convs.1 "):
        first_layers_from_prior({}, PRESETS["tiny"])
    # a real prior through Stage I: with the option, decoder0 / to_rgb0 start as the prior's layers
    from mmfs.checkpoint import module_state, save_checkpoint
    from mmfs.train import make_config
    from mmfs.train.stages import get_stage

    cfg = PRESETS["tiny"]
    torch.manual_seed(0)
    g = Generator(cfg)
    prior = save_checkpoint(tmp_path / "prior.safetensors", {**module_state(g, "g."), **module_state(Discriminator(cfg),
                            "d.")}, kind="prior", config=cfg)  # fmt: skip
    for on in (True, False):
        options = {"prior": str(prior), "first_layers_from_prior": on}
        stage = get_stage("pretrain-encoder")(
            make_config("pretrain-encoder", cfg, options=options), torch.device("cpu")
        )
        stylizer = stage.nets["stylizer"]
        for mine, theirs in ((stylizer.decoder0.conv.weight, g.convs[1].conv.weight),
                             (stylizer.to_rgb0.conv.weight, g.to_rgbs[0].conv.weight)):  # fmt: skip
            assert torch.equal(mine, theirs) == on


def test_an_upstream_file_named_safetensors_is_converted_or_named_in_one_line(tmp_path):
    """A .pth renamed .safetensors: convert reads it by its bytes, not its name; info and stylize -c say what it is
    and suggest a convert whose output is not the input."""
    mislabelled = tmp_path / "prior.safetensors"
    with open(mislabelled, "wb") as fh:  # torch.save to a path would choose the format by its name too
        torch.save({"g_ema": Generator(PRESETS["tiny"]).state_dict()}, fh)
    target = tmp_path / "prior-converted.safetensors"
    out = tmp_path / "out"
    for args in (
        ("info", str(mislabelled)),
        ("stylize", "x.png", "-c", str(mislabelled), "--seed", "1", "-o", str(out)),
    ):
        result = _invoke(*args)
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert result.output.startswith(f"error: {mislabelled}: is an upstream PyTorch file named .safetensors")
        assert result.output.split("convert it first: ")[1].split() == [
            "mmfs",
            "convert",
            str(mislabelled),
            str(target),
        ]
    result = _invoke("convert", str(mislabelled), str(target), "--feature-resolution", "8")
    assert result.exit_code == 0 and result.output.count("\n") == 1, result.output
    assert load_checkpoint(target, kind="prior").config.resolution == 32
    unknown = tmp_path / "other.safetensors"
    with open(unknown, "wb") as fh:
        torch.save({"model": {"w": torch.zeros(1)}}, fh)
    result = _invoke("convert", str(unknown), str(tmp_path / "o.safetensors"))
    assert (
        result.exit_code == 1 and result.output.count("\n") == 1 and "unrecognised checkpoint layout" in result.output
    )

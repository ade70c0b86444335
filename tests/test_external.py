"""External-network wrappers on tiny random models: preprocessing, shapes, gradients, file loading, errors."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a missing HF file must fail at once, not after retries

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mmfs.errors import MissingWeightsError
from mmfs.external import DinoViT, ImageTextEncoder, Lpips, OpenClipEncoder, TokenEncoder
from mmfs.external.lpips import ALEXNET_FILE, alexnet_to_lpips_keys
from mmfs.external.tiny import register_tiny_clip, tiny_clip, tiny_clip_config, tiny_dino, tiny_dino_kwargs, tiny_lpips

# The official code's constants, written out again so a typo in the library cannot hide.
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
IMNET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMNET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def clip() -> OpenClipEncoder:
    return tiny_clip()


@pytest.fixture(scope="module")
def dino() -> DinoViT:
    return tiny_dino()


def images(b: int = 2, size: int = 40, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


def assert_one_line_error(exc: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg


# ---------------------------------------------------------------- CLIP


def test_clip_shapes_and_normalisation(clip):
    assert isinstance(clip, ImageTextEncoder)
    assert clip.embed_dim == 32 and clip.image_size == (32, 32)
    for size in (32, 57):  # any input size
        emb = clip.encode_image(images(3, size))
        assert emb.shape == (3, 32) and emb.dtype == torch.float32
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    text = clip.encode_text(["a photo", "pop art", "watercolor painting"])
    assert text.shape == (3, 32)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(clip.encode_text("pop art"), text[1:2])  # a bare string is one prompt
    assert not torch.allclose(text[0], text[1])
    assert clip.image_tokens(images(), 3).shape == (2, 16, 64)  # (32/8)^2 patches, CLS dropped, width 64


def test_clip_preprocessing_matches_reference(clip):
    x = images(2, 48)
    ref = F.interpolate(x * 0.5 + 0.5, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    ref = F.normalize(clip.model.encode_image((ref - CLIP_MEAN) / CLIP_STD), dim=-1)
    torch.testing.assert_close(clip.encode_image(x), ref, rtol=0, atol=1e-6)


def test_clip_tokens_equal_forward_hook(clip):
    x = images()
    captured = []
    handle = clip.model.visual.transformer.resblocks[3].register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        emb = F.normalize(clip.model.encode_image(clip.prepare(x)), dim=-1)
    finally:
        handle.remove()
    hooked = captured[0][:, 1:]  # open_clip is batch-first: [B, 1 + N, C]; drop CLS
    torch.testing.assert_close(clip.image_tokens(x, 3), hooked, rtol=0, atol=0)
    torch.testing.assert_close(clip.image_tokens(x, -1), hooked, rtol=0, atol=0)  # 4 blocks: -1 is block 3
    both_emb, both_tokens = clip.encode_image_with_tokens(x, 3)
    torch.testing.assert_close(both_emb, emb, rtol=0, atol=1e-6)
    torch.testing.assert_close(both_tokens, hooked, rtol=0, atol=0)
    assert not torch.allclose(clip.image_tokens(x, 0), hooked)
    with pytest.raises(ValueError, match="out of range"):
        clip.image_tokens(x, 4)


def test_clip_reference_image_uses_clip_preprocess(clip):
    from PIL import Image
    from torchvision import transforms as T

    array = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    # OpenAI CLIP's `clip_preprocess` at this model's size: bicubic short side, center crop, CLIP norm.
    reference = T.Compose([T.Resize(32, T.InterpolationMode.BICUBIC), T.CenterCrop(32), T.ToTensor()])
    pixels = (reference(Image.fromarray(array))[None] - CLIP_MEAN) / CLIP_STD
    expected = F.normalize(clip.model.encode_image(pixels), dim=-1)
    emb = clip.encode_reference_image(array)
    torch.testing.assert_close(emb, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(clip.encode_reference_image(Image.fromarray(array)), emb, rtol=0, atol=0)
    emb2, tokens = clip.encode_reference_image_with_tokens(array, 3)
    torch.testing.assert_close(emb2, emb, rtol=0, atol=1e-6)
    assert tokens.shape == (1, 16, 64)


def test_clip_gradients_reach_inputs_not_params(clip):
    x = images().requires_grad_(True)
    emb, tokens = clip.encode_image_with_tokens(x, 3)
    (emb.sum() + tokens.square().mean()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in clip.parameters())
    clip.train()  # a parent switching to training mode must not un-freeze the wrapper
    assert not clip.training and not clip.model.training


def test_clip_local_file_is_bit_identical(clip, tmp_path):
    name = register_tiny_clip()
    path = tmp_path / "tiny_clip.safetensors"
    save_file(clip.model.state_dict(), str(path))
    loaded = OpenClipEncoder.from_pretrained(path, model_name=name)
    x = images()
    torch.testing.assert_close(loaded.encode_image(x), clip.encode_image(x), rtol=0, atol=0)
    torch.testing.assert_close(loaded.image_tokens(x, 3), clip.image_tokens(x, 3), rtol=0, atol=0)
    prompts = ["a photo", "sketch"]
    torch.testing.assert_close(loaded.encode_text(prompts), clip.encode_text(prompts), rtol=0, atol=0)
    assert all(not p.requires_grad for p in loaded.parameters()) and not loaded.training


def test_clip_local_dir_is_bit_identical(clip, tmp_path):
    cfg = {"model_cfg": tiny_clip_config(), "preprocess_cfg": {"mean": CLIP_MEAN.flatten().tolist()}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(cfg))
    save_file(clip.model.state_dict(), str(tmp_path / "open_clip_model.safetensors"))
    loaded = OpenClipEncoder.from_pretrained(model_name=f"local-dir:{tmp_path}")
    x = images()
    torch.testing.assert_close(loaded.encode_image(x), clip.encode_image(x), rtol=0, atol=0)
    torch.testing.assert_close(loaded.encode_text(["sketch"]), clip.encode_text(["sketch"]), rtol=0, atol=0)


def test_clip_missing_weights(tmp_path):
    with pytest.raises(MissingWeightsError) as exc:
        OpenClipEncoder.from_pretrained()  # ViT-B-32 openai, offline, not cached
    assert_one_line_error(exc, "--clip-weights", "vit_base_patch32_clip_224.openai")
    with pytest.raises(MissingWeightsError) as exc:
        OpenClipEncoder.from_pretrained(tmp_path / "nope.safetensors")
    assert_one_line_error(exc, "--clip-weights", "nope.safetensors")
    with pytest.raises(MissingWeightsError) as exc:
        OpenClipEncoder.from_pretrained(model_name=f"local-dir:{tmp_path}")
    assert_one_line_error(exc, "open_clip_config.json")


def test_clip_quick_gelu_follows_the_tag(monkeypatch, tmp_path):
    """The OpenAI weights need QuickGELU; from_pretrained must ask open_clip for it (checked without a download)."""
    import open_clip

    seen = {}

    def fake_create(name, **kwargs):
        seen.update(kwargs, name=name)
        raise RuntimeError("Failed to download weights for tag: offline")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake_create)
    with pytest.raises(MissingWeightsError):
        OpenClipEncoder.from_pretrained()
    assert seen == {"name": "ViT-B-32", "pretrained": "openai", "force_quick_gelu": True}
    with pytest.raises(MissingWeightsError):
        OpenClipEncoder.from_pretrained(tag="laion2b_s34b_b79k")
    assert seen["force_quick_gelu"] is False


def test_clip_unknown_model_or_tag_is_one_line_before_any_download(monkeypatch, tmp_path):
    import open_clip

    def no_build(*args, **kwargs):
        raise AssertionError("a bad name or tag must be refused before open_clip builds or downloads anything")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", no_build)
    with pytest.raises(MissingWeightsError) as exc:
        OpenClipEncoder.from_pretrained(model_name="no-such-model")
    assert_one_line_error(exc, "'no-such-model'", "--clip-model", "ViT-B-32", "open_clip.list_models()", "local-dir:")
    with pytest.raises(MissingWeightsError) as exc:
        OpenClipEncoder.from_pretrained(model_name="vit-b-32")  # the close spelling is suggested first
    assert "try ViT-B-32," in str(exc.value)
    with pytest.raises(MissingWeightsError) as exc:
        OpenClipEncoder.from_pretrained(tag="opnai")
    assert_one_line_error(exc, "'opnai'", "--clip-tag", "ViT-B-32", "try openai,", "laion2b_s34b_b79k")
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"")
    with pytest.raises(MissingWeightsError) as exc:  # the tag also matters for a local file (QuickGELU)
        OpenClipEncoder.from_pretrained(weights, tag="no_such_tag")
    assert_one_line_error(exc, "'no_such_tag'", "--clip-tag")
    with pytest.raises(MissingWeightsError) as exc:  # an empty tag would silently build random weights
        OpenClipEncoder.from_pretrained(tag="")
    assert_one_line_error(exc, "--clip-tag", "--clip-weights")
    with pytest.raises(MissingWeightsError) as exc:
        OpenClipEncoder.from_pretrained(model_name="convnext_tiny")  # an architecture without pretrained weights
    assert_one_line_error(exc, "convnext_tiny", "--clip-weights")


# ---------------------------------------------------------------- DINO


def reference_keys(model, x: torch.Tensor, block: int) -> torch.Tensor:
    """Splice's recipe, one image at a time: hook qkv, (N, 3, heads, d) -> keys [heads, N, d] -> [N, heads*d]."""
    x = F.interpolate(x * 0.5 + 0.5, size=(32, 32), mode="bilinear", align_corners=False, antialias=False)
    x = (x - IMNET_MEAN) / IMNET_STD
    out, captured = [], []
    handle = model.blocks[block].attn.qkv.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        for img in x:
            model.forward_features(img[None])
    finally:
        handle.remove()
    for qkv in captured:
        qkv = qkv[0]  # [N, 3C]
        n, heads = qkv.shape[0], model.blocks[block].attn.num_heads
        k = qkv.reshape(n, 3, heads, -1).permute(1, 2, 0, 3)[1]  # [heads, N, d]
        out.append(k.transpose(0, 1).reshape(n, -1))
    return torch.stack(out)


def test_dino_keys_match_reference_recipe(dino):
    assert isinstance(dino, TokenEncoder)
    x = images(2, 48)
    keys = dino.keys(x)
    assert keys.shape == (2, 17, 48)  # (32/8)^2 patches + CLS, heads concatenated
    torch.testing.assert_close(keys, reference_keys(dino.model, x, 1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dino.keys(x, 0), reference_keys(dino.model, x, 0), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(dino.keys(x, 0), keys)
    with pytest.raises(ValueError, match="out of range"):
        dino.keys(x, 2)


def test_dino_input_size_comes_from_the_model():
    small = tiny_dino(img_size=16, embed_dim=24, heads=3)
    assert small.image_size == (16, 16)
    assert small.keys(images(1, 40)).shape == (1, 5, 24)


@pytest.mark.parametrize("size", [32, 64])
def test_the_tiny_dino_of_dino_tiny_sees_the_training_size_as_a_16x16_grid(size):
    from mmfs.external.build import build_dino

    dino = build_dino("tiny", image_size=size)
    assert dino.image_size == (size, size)
    assert dino.keys(images(1, size)).shape[1] == 1 + 16 * 16  # CLS + patches


def test_dino_gradients_reach_inputs_not_params(dino):
    x = images().requires_grad_(True)
    dino.keys(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in dino.parameters())


def test_dino_local_file_is_bit_identical(dino, tmp_path):
    path = tmp_path / "tiny_dino.safetensors"
    save_file(dino.model.state_dict(), str(path))
    loaded = DinoViT.from_pretrained(path, **tiny_dino_kwargs())
    x = images()
    torch.testing.assert_close(loaded.keys(x), dino.keys(x), rtol=0, atol=0)
    assert all(not p.requires_grad for p in loaded.parameters()) and not loaded.training


def test_dino_missing_weights(tmp_path):
    with pytest.raises(MissingWeightsError) as exc:
        DinoViT.from_pretrained(tmp_path / "dino.pth")
    assert_one_line_error(exc, "--dino-weights", "dino.pth")
    with pytest.raises(MissingWeightsError) as exc:  # by name, offline: built tiny so the failure is quick
        DinoViT.from_pretrained(**tiny_dino_kwargs())
    assert_one_line_error(exc, "--dino-weights", "vit_base_patch8_224.dino")


# ---------------------------------------------------------------- LPIPS


def test_lpips_distance_shapes_and_gradients():
    lp = tiny_lpips()
    x, y = images(3, 32, seed=1), images(3, 32, seed=2)
    x.requires_grad_(True)
    d = lp.distance(x, y)
    assert d.shape == (3,) and (d > 0).all()
    torch.testing.assert_close(lp.distance(y, y), torch.zeros(3))
    d.sum().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in lp.parameters())
    with pytest.raises(ValueError, match="equal shape"):
        lp.distance(x, images(3, 48))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_lpips_loads_backbone_like_the_lpips_package(tmp_path, monkeypatch):
    import lpips
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError) as exc:
        Lpips.from_pretrained()
    assert_one_line_error(exc, ALEXNET_FILE, "--lpips-weights")
    with pytest.raises(MissingWeightsError) as exc:
        Lpips.from_pretrained(tmp_path / "alex.safetensors")
    assert_one_line_error(exc, "--lpips-weights")

    # Stand in for torchvision's file: a seeded random AlexNet state dict at the torch hub cache path.
    torch.manual_seed(3)
    state = torchvision.models.alexnet().state_dict()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / ALEXNET_FILE)  # torchvision's own format (a test fixture, not mmfs output)
    ours = Lpips.from_pretrained()
    reference = lpips.LPIPS(net="alex", verbose=False)  # lpips' own loading path reads the same cached file
    x, y = images(2, 64, seed=4), images(2, 64, seed=5)
    torch.testing.assert_close(ours.distance(x, y), reference(x, y).flatten(), rtol=0, atol=0)

    save_file(alexnet_to_lpips_keys(state), str(tmp_path / "alex.safetensors"))
    explicit = Lpips.from_pretrained(tmp_path / "alex.safetensors")
    torch.testing.assert_close(explicit.distance(x, y), ours.distance(x, y), rtol=0, atol=0)


def test_tiny_stand_ins_are_seeded_without_touching_any_generator(monkeypatch):
    """`torch.manual_seed` would re-seed every CUDA generator (a running job's streams): the builders seed the CPU alone."""
    from mmfs.external.tiny import tiny_dino, tiny_lpips
    from mmfs.external.tiny_metrics import tiny_arcface_net, tiny_inception

    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseeded.append)
    monkeypatch.setattr(torch.cuda, "manual_seed", reseeded.append)
    before = torch.get_rng_state()
    nets = [tiny_dino(seed=1), tiny_inception(8, seed=1), tiny_arcface_net(seed=1), tiny_lpips(seed=1)]
    assert reseeded == [] and torch.equal(torch.get_rng_state(), before)
    again = [tiny_dino(seed=1), tiny_inception(8, seed=1), tiny_arcface_net(seed=1), tiny_lpips(seed=1)]
    for a, b in zip(nets, again, strict=True):  # still seeded: the same weights each time
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(p, q), name

"""The demo's tiny CLIP: captions, the multi-positive CLIP loss, training, the file, and the shipped model."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from mmfs.checkpoint import load_checkpoint
from mmfs.demo.clip import (
    PHRASES,
    ClipRecipe,
    caption,
    colour_name,
    contrastive_loss,
    make_captioned_images,
    region_colours,
    shipped_clip,
    style_accuracy,
    train_tiny_clip,
)
from mmfs.errors import CheckpointError
from mmfs.external.build import build_clip

pytestmark = pytest.mark.usefixtures("one_thread")


def test_colour_names_and_the_regions_of_a_rendered_face():
    from mmfs.demo.synthetic import FaceParams, render_face

    assert [colour_name(c) for c in ((250, 40, 150), (0, 190, 255), (245, 245, 245), (25, 20, 20))] == [
        "magenta", "cyan", "white", "black"
    ]  # fmt: skip
    image, labels = render_face(FaceParams.sample(np.random.default_rng(3)), 64)
    image = image.copy()
    image[labels == 0] = (250, 220, 30)  # a yellow background, whatever the face's own
    colours = region_colours(image, labels)
    assert colours["background"] == "yellow" and set(colours) <= {"background", "hair", "face"} and "face" in colours


def test_captions_start_with_a_style_phrase_and_name_only_known_colours():
    rng = random.Random(0)
    colours = {"background": "cyan", "face": "magenta", "hair": "black"}
    captions = [caption("popart", colours, rng) for _ in range(200)]
    assert all(c.split(",")[0] in PHRASES["popart"] for c in captions)
    tails = {part.strip() for c in captions for part in c.split(",")[1:]}
    assert tails == {"cyan background", "magenta face", "black hair"}  # every colour appears, nothing else
    assert "pop art" in captions  # the bare phrase a user types


def test_make_captioned_images_gives_each_face_as_a_photo_and_in_every_style():
    images, domains, colours = make_captioned_images(3, 32, seed=1)
    assert images.shape == (15, 3, 32, 32) and images.dtype == torch.uint8
    assert domains == list(PHRASES) * 3 and len(colours) == 15
    sketch = images[domains.index("sketch")].float()
    assert (sketch[0] == sketch[1]).all() and (sketch[1] == sketch[2]).all()  # a pencil sketch is grey


def test_the_loss_is_open_clips_for_unique_captions_and_counts_repeated_captions_as_positives():
    from open_clip.loss import ClipLoss

    torch.manual_seed(0)
    image, text = (torch.nn.functional.normalize(torch.randn(6, 8), dim=-1) for _ in range(2))
    scale = torch.tensor(np.log(10.0))
    unique = [f"caption {i}" for i in range(6)]
    expected = ClipLoss()(image, text, logit_scale=scale.exp())
    assert torch.allclose(contrastive_loss(image, text, unique, scale), expected, atol=1e-6)
    # two images with one caption: each row's target is split over both, by the formula
    repeated = ["a", "a", "b", "c", "d", "e"]
    logits = 10.0 * image @ text.T
    targets = torch.eye(6)
    targets[:2, :2] = 0.5
    manual = 0.5 * (
        -(targets * logits.log_softmax(1)).sum(1).mean() - (targets * logits.T.log_softmax(1)).sum(1).mean()
    )
    assert torch.allclose(contrastive_loss(image, text, repeated, scale), manual, atol=1e-6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.safetensors"
    recipe = ClipRecipe(faces=12, steps=60, batch_size=20, lr=2e-3, embed_dim=32, image_size=32, patch_size=8)
    return train_tiny_clip(path, recipe, progress=False), recipe


def test_training_lowers_the_loss_and_writes_an_fp16_clip_file_with_its_recipe(trained):
    path, recipe = trained
    ckpt = load_checkpoint(path, kind="clip")
    assert {v.dtype for v in ckpt.tensors.values()} == {torch.float16}
    assert json.loads(ckpt.meta["tiny_clip"]) == {"embed_dim": 32, "image_size": 32, "patch_size": 8}
    assert json.loads(ckpt.meta["recipe"])["steps"] == recipe.steps
    loss = json.loads(ckpt.meta["loss"])
    assert loss["last"] < 0.8 * loss["first"], loss


def test_clip_model_tiny_with_weights_loads_the_trained_file_exactly(trained):
    path, _ = trained
    clip = build_clip("tiny", path, embed_dim=32)
    stored = load_checkpoint(path).tensors
    state = clip.model.state_dict()
    assert set(state) == set(stored) and all(torch.equal(state[k], stored[k].float()) for k in stored)
    random_clip = build_clip("tiny", embed_dim=32)
    assert not torch.equal(random_clip.model.visual.conv1.weight, clip.model.visual.conv1.weight)


def test_a_wrong_file_or_size_is_a_one_line_error(trained):
    from mmfs.demo.prior import shipped_prior

    with pytest.raises(CheckpointError, match="'prior' checkpoint, expected 'clip'"):
        build_clip("tiny", shipped_prior(), embed_dim=64)
    with pytest.raises(CheckpointError, match="gives 32-d embeddings but this checkpoint's mapper reads 64-d"):
        build_clip("tiny", trained[0], embed_dim=64)


@pytest.mark.slow  # about 5 s: 100 faces in five looks through the 64 px CLIP
def test_the_shipped_clip_tells_photos_and_the_four_styles_apart_where_a_random_one_cannot():
    shipped = build_clip("tiny", shipped_clip(), embed_dim=64)
    assert shipped.image_size == (64, 64)
    assert style_accuracy(shipped) >= 0.9  # unseen faces, named by the short phrases a user types
    # the baseline: a random CLIP of the same architecture is near chance (1/5), so the measure discriminates
    assert style_accuracy(build_clip("tiny", embed_dim=64)) < 0.5


@pytest.mark.slow
def test_the_demo_references_read_as_their_styles(tmp_path):
    from mmfs.demo.synthetic import STYLES, make_dataset
    from mmfs.external.clip import reference_embeddings

    refs = make_dataset(tmp_path, n_photos=0, n_art_per_style=1, size=64, seed=2000)  # the demo's references
    clip = build_clip("tiny", shipped_clip(), embed_dim=64)
    names = {"cel": "cel shading", "popart": "pop art", "sketch": "sketch", "watercolor": "watercolor"}
    text = clip.encode_text([names[s] for s in STYLES] + ["photo"])
    image = reference_embeddings(clip, [next(refs[s].iterdir()) for s in STYLES])
    assert (image @ text.T).argmax(1).tolist() == list(range(len(STYLES)))


@pytest.mark.slow
def test_the_shipped_clips_reference_tokens_leave_room_for_the_projection_loss(tmp_path):
    """One-shot adapt projects the fakes' tokens onto the reference tokens' span: that span must not be everything."""
    from mmfs.demo.synthetic import make_dataset
    from mmfs.external.clip import load_reference
    from mmfs.losses import projector_from_tokens, token_projection_loss

    data = make_dataset(tmp_path, n_photos=4, n_art_per_style=1, size=64, seed=2000, styles=("sketch",))
    clip = build_clip("tiny", shipped_clip(), embed_dim=64)
    _, ref_tokens = clip.encode_reference_image_with_tokens(load_reference(next(data["sketch"].iterdir())))
    tokens, width = ref_tokens.shape[1:]
    assert tokens <= width // 4  # 16 tokens of width 64 (ViT-B/32: 49 of 768)
    photos = torch.stack([torch.from_numpy(load_reference(p)).permute(2, 0, 1) for p in data["photos"].iterdir()])
    photo_tokens = clip.image_tokens(photos.float() / 127.5 - 1)
    assert token_projection_loss(photo_tokens, projector_from_tokens(ref_tokens)) > 0.01


def test_stylize_and_adapt_default_to_the_clip_file_recorded_with_the_mapper(trained, tmp_path):
    from mmfs.checkpoint import save_checkpoint
    from mmfs.external.build import resolve_clip_weights

    clip_file = trained[0]
    mapper = save_checkpoint(
        tmp_path / "mapper.safetensors", {"x": torch.zeros(1)}, kind="stylizer",
        meta={"clip_model": "tiny", "clip_tag": "openai", "clip_weights": str(clip_file)},
    )  # fmt: skip
    assert resolve_clip_weights(None, mapper, "tiny") == str(clip_file)  # recorded: used
    assert resolve_clip_weights("mine.safetensors", mapper, "tiny") == "mine.safetensors"  # given: wins
    assert resolve_clip_weights(None, mapper, "ViT-B-32") is None  # recorded for another model: not used
    moved = save_checkpoint(
        tmp_path / "moved.safetensors", {"x": torch.zeros(1)}, kind="stylizer",
        meta={"clip_model": "tiny", "clip_weights": str(tmp_path / "gone.safetensors")},
    )  # fmt: skip
    assert resolve_clip_weights(None, moved, "tiny") is None  # the file is gone: the random stand-in


def test_a_missing_shipped_clip_is_one_line_naming_train_clip_before_the_demo_writes_anything(tmp_path, monkeypatch):
    import mmfs.demo.clip as demo_clip
    from mmfs.config.demo import DemoRequest
    from mmfs.demo.run import run_demo

    monkeypatch.setattr(demo_clip, "SHIPPED_CLIP", tmp_path / "gone.safetensors")
    with pytest.raises(CheckpointError, match=r"tiny CLIP is missing .* run `mmfs demo --train-clip`"):
        run_demo(DemoRequest(tmp_path / "out", quick=True), device="cpu", progress=False, echo=lambda _: None)
    assert not (tmp_path / "out").exists()

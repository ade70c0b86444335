"""A prior larger than the Stylizer (the public 1024 px FFHQ for the paper's 512 px model), in miniature.

The tiny preset (32 px) is trained on a 64 px prior with the same mapping and channel table: the
Stylizer takes the prior's layers up to 32 px, Stage I compares it with the teacher's 64 px images
resampled to 32 px, and Stage II keeps the prior discriminator's blocks from 32 px down.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mmfs.checkpoint import load_checkpoint
from mmfs.config import PRESETS
from mmfs.errors import CheckpointError
from mmfs.nn import Discriminator
from mmfs.nn.convert import check_prior_covers, discriminator_down_to
from mmfs.train import make_config, train
from mmfs.train.loop import Trainer
from mmfs.train.stages.encoder import resample
from support.tiny import TINY, random_prior, save_prior, write_images

TINY64 = dataclasses.replace(TINY, resolution=64)  # the tiny table one octave further: 4 channels at 64 px


@pytest.fixture(scope="module")
def prior64(tmp_path_factory):
    g, d = random_prior(TINY64, seed=4)
    path = save_prior(tmp_path_factory.mktemp("larger") / "prior64.safetensors", g, d)
    return {"path": path, "g": g.eval(), "d": d.eval()}


def test_a_larger_prior_fits_and_a_smaller_or_different_one_is_refused():
    check_prior_covers(PRESETS["ffhq1024"], PRESETS["ffhq512"])
    check_prior_covers(TINY64, TINY)
    with pytest.raises(CheckpointError, match="prior: a 32 px prior cannot make a 64 px Stylizer: drop --preset"):
        check_prior_covers(TINY, TINY64)
    with pytest.raises(CheckpointError, match=r"channels at 4 px 16 vs 32, prior vs preset"):
        check_prior_covers(dataclasses.replace(TINY64, channel_max=16), TINY)


def test_the_discriminator_keeps_the_larger_one_s_blocks_from_its_size_down(prior64):
    small = Discriminator(TINY)
    own_from_rgb = {k: v.clone() for k, v in small.state_dict().items() if k.startswith("convs.0.")}
    fitted = discriminator_down_to(prior64["d"].state_dict(), small)
    small.load_state_dict(fitted, strict=True)
    big = prior64["d"].state_dict()
    assert len(prior64["d"].convs) == len(small.convs) + 1
    for key, value in small.state_dict().items():
        if key.startswith("convs.0."):
            assert torch.equal(value, own_from_rgb[key]), key  # no counterpart: the new from-RGB layer
        elif key.startswith("convs."):
            i, rest = key[len("convs.") :].split(".", 1)
            assert torch.equal(value, big[f"convs.{int(i) + 1}.{rest}"]), key
        else:
            assert torch.equal(value, big[key]), key
    same_size = Discriminator(TINY).state_dict()
    assert discriminator_down_to(same_size, small) is same_size


def test_stage1_on_a_larger_prior_learns_from_its_resampled_images(prior64, tmp_path):
    cfg = make_config(
        "pretrain-encoder",
        TINY,
        options={"prior": str(prior64["path"])},
        steps=1,
        batch_size=2,
        log_every=1,
        preview_every=1,
        preview_count=2,
    )
    trainer = Trainer(cfg, tmp_path, progress=False)
    stage = trainer.stage
    # the frozen decoder from 2F px up is the prior's 16 and 32 px layers (convs.2-5, to_rgbs.1-2)
    stylizer = stage.nets["stylizer"].state_dict()
    big_g = prior64["g"].state_dict()
    assert torch.equal(stylizer["decoder1a.conv.weight"], big_g["convs.2.conv.weight"])
    assert torch.equal(stylizer["to_rgb2.conv.weight"], big_g["to_rgbs.2.conv.weight"])
    # the teacher is the whole 64 px prior; its images reach the loss resampled to 32 px
    z = torch.randn(2, TINY.z_dim)
    with torch.no_grad():
        full = prior64["g"](z, noise="zero")
        got = stage.teacher_images(stage.teacher, z, noise="zero")
    assert full.shape[-1] == 64 and got.shape == (2, 3, 32, 32)
    # antialiased bilinear halving: the separable [1, 3, 3, 1] / 8 tent at stride 2 (checked away from the border)
    tent = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    kernel = torch.outer(tent, tent).expand(3, 1, 4, 4)
    expected = torch.nn.functional.conv2d(full.clamp(-1, 1), kernel, stride=2, padding=1, groups=3)
    assert torch.allclose(got[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-5)
    # the prior's discriminator compares both at its own size, at the scales the 32 px blocks would see
    assert stage.disc.feature_blocks == tuple(b + 1 for b in TINY.disc_feature_blocks if b + 1 < 5)
    trainer.run()
    assert (tmp_path / "previews" / "step-000001.png").is_file()  # teacher row resampled like the loss sees it
    final = load_checkpoint(tmp_path / "final.safetensors", kind="stylizer")
    assert final.config == TINY and final.meta["prior"] == str(prior64["path"])


def test_stage2_after_a_larger_prior_finds_and_fits_its_discriminator(prior64, tmp_path):
    stage1 = make_config(
        "pretrain-encoder", TINY, options={"prior": str(prior64["path"])}, steps=1, batch_size=1, preview_every=0
    )
    stage1_dir = train(stage1, outdir=tmp_path / "runs", progress=False)
    rng = np.random.default_rng(0)
    for folder in ("photos", "art"):
        write_images(tmp_path / folder, 2, (36, 36), rng)
    options = {
        "photos": str(tmp_path / "photos"),
        "art": str(tmp_path / "art"),
        "init": str(stage1_dir / "final.safetensors"),
        "dino": "tiny",
    }
    cfg = make_config("finetune", TINY, options=options, steps=1, batch_size=1, preview_every=0, workers=0)
    (tmp_path / "s2").mkdir()
    trainer = Trainer(cfg, tmp_path / "s2", progress=False)
    disc = trainer.stage.nets["disc"].state_dict()
    assert torch.equal(disc["convs.1.conv1.0.weight"], prior64["d"].state_dict()["convs.2.conv1.0.weight"])
    trainer.run()
    assert load_checkpoint(tmp_path / "s2" / "final.safetensors", kind="stylizer").config == TINY


def test_resample_is_the_identity_at_the_same_size():
    x = torch.rand(1, 3, 8, 8)
    assert resample(x, 8) is x

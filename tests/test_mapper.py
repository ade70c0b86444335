"""`mmfs train-mapper` (phase 3): the mapper's output, the stage's initial weights and loss wiring, a short run, the CLI."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from mmfs.checkpoint import load_checkpoint, module_state, save_checkpoint
from mmfs.inference.models import load_stylizer
from mmfs.nn import Discriminator, Stylizer
from mmfs.train import StepContext, make_config, train
from mmfs.train.log import read_log
from mmfs.train.stages.mapper import MapperStage
from mmfs_cli.app import app
from support.tiny import CPU, TINY, write_images

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A Stage II training checkpoint (stylizer_ema + disc, no mapper) and 6 photos."""
    root = tmp_path_factory.mktemp("mapper")
    torch.manual_seed(0)
    tensors = {**module_state(Stylizer(TINY), "stylizer_ema."), **module_state(Discriminator(TINY), "disc.")}
    save_checkpoint(root / "stage2.safetensors", tensors, kind="training", config=TINY)
    write_images(root / "photos", 6)
    return root


@pytest.fixture(scope="module")
def clip():
    from mmfs.external.tiny import tiny_clip

    return tiny_clip(embed_dim=TINY.clip_dim)


def mapper_config(files, init=None, **loop):
    init = init or files / "stage2.safetensors"
    options = {"photos": str(files / "photos"), "init": str(init), "clip_model": "tiny"}
    return make_config("train-mapper", TINY, options=options, **{"batch_size": 4, "workers": 0, **loop})


def test_mapper_output_shapes_and_position_embedding():
    torch.manual_seed(0)
    g = Stylizer(TINY, with_mapper=True).eval()
    emb = F.normalize(torch.randn(3, TINY.clip_dim), dim=-1)
    with torch.no_grad():
        ws = g.ws_from_clip(emb)
        assert ws.shape == (3, TINY.num_ws, TINY.w_dim)
        assert torch.equal(ws, g.ws_from_clip(emb))  # eval: no dropout
        # one embedding, ten different style vectors: the slots differ only through the position embedding
        assert all(not torch.allclose(ws[0, i], ws[0, i + 1]) for i in range(TINY.num_ws - 1))
        g.clip_mapper.position_embedding.zero_()
        flat = g.ws_from_clip(emb)
    torch.testing.assert_close(flat, flat[:, :1].expand_as(flat))
    # the decoder consumes them: [B, num_ws, w_dim] in, image out
    assert g(torch.zeros(3, 3, 32, 32), ws, noise="zero").shape == (3, 3, 32, 32)


def test_stage_starts_from_stage2_with_the_reference_mapper_init(files, clip, tmp_path):
    torch.manual_seed(0)
    stage = MapperStage(mapper_config(files), CPU, clip=clip)
    init = load_checkpoint(files / "stage2.safetensors")
    g = stage.nets["stylizer"]
    state = g.state_dict()
    for key, value in init.subset("stylizer_ema.").items():
        assert torch.equal(state[key], value), key
    for key, value in init.subset("disc.").items():
        assert torch.equal(stage.nets["disc"].state_dict()[key], value), key
    assert not stage.mapper_from_init
    layers = g.clip_mapper.transformer.layers
    first = layers[0].state_dict()
    assert all(torch.equal(first[k], layer.state_dict()[k]) for layer in layers for k in first)  # deep copies
    std = float(g.clip_mapper.position_embedding.detach().std())
    assert abs(std - TINY.w_dim**-0.5) < 0.25 * TINY.w_dim**-0.5
    # only the mapper is optimised, the stylizer trains with the mapper's dropout on, the EMA copy is in eval
    trained = {id(p) for p in stage.trainable_parameters()}
    assert trained == {id(p) for p in g.clip_mapper.parameters()}
    assert g.clip_mapper.training and not stage.nets["stylizer_ema"].training

    # an init that already has a mapper continues from it
    phase3 = {**module_state(g, "stylizer_ema."), **{"disc." + k: v for k, v in init.subset("disc.").items()}}
    path = save_checkpoint(tmp_path / "phase3.safetensors", phase3, kind="training", config=TINY)
    torch.manual_seed(1)
    again = MapperStage(mapper_config(files, init=path), CPU, clip=clip)
    assert again.mapper_from_init
    assert torch.equal(again.nets["stylizer"].clip_mapper.position_embedding, g.clip_mapper.position_embedding)


def test_loss_reconstructs_a_random_style_from_its_clip_embedding(files, clip):
    torch.manual_seed(0)
    stage = MapperStage(mapper_config(files), CPU, clip=clip)
    photo = torch.rand(4, 3, 32, 32) * 2 - 1
    torch.manual_seed(3), random.seed(3)
    got = stage.g_loss(StepContext(step=1, micro=0, size=4, batch={"photo": photo}))

    ema, g, disc = stage.nets["stylizer_ema"], stage.nets["stylizer"], stage.nets["disc"]
    torch.manual_seed(3), random.seed(3)
    random.random()  # the mixing decision (probability 0)
    with torch.no_grad():
        real = ema(photo, ema.ws_from_z(torch.randn(4, TINY.z_dim)))  # a random Stage-II style
        emb = clip.encode_image(real)
    fake = g(photo, g.ws_from_clip(emb))  # same dropout masks and noise as the stage's draws
    l1 = (fake - real).abs().mean()
    feat = sum((f - r).abs().mean() for f, r in zip(disc.features(fake), disc.features(real), strict=True))
    torch.testing.assert_close(got["l1"], l1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["feat"], feat, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["total"], l1 + 4 * feat, rtol=1e-5, atol=1e-6)
    assert set(got) == {"l1", "feat", "total"}


def test_train_mapper_lowers_its_loss_and_trains_only_the_mapper(files, clip, tmp_path):
    cfg = mapper_config(files, steps=40, log_every=1, preview_every=40, checkpoint_every=0)
    run = train(cfg, outdir=tmp_path, externals={"clip": clip}, progress=False)
    totals = [line["G/total"] for line in read_log(run / "log.jsonl")]
    assert len(totals) == 40
    assert np.mean(totals[-8:]) < 0.85 * np.mean(totals[:8])  # 0.70 here
    assert (run / "previews" / "step-000040.png").is_file()

    final = load_checkpoint(run / "final.safetensors", kind="stylizer")
    init = load_checkpoint(files / "stage2.safetensors").subset("stylizer_ema.")
    mapper_keys = [k for k in final.tensors if k.startswith("clip_mapper.")]
    assert mapper_keys and set(final.tensors) == set(init) | set(mapper_keys)
    assert all(torch.equal(final.tensors[k], v) for k, v in init.items())  # the Stage II model is untouched
    assert load_stylizer(run / "final.safetensors").clip_mapper is not None
    # the training checkpoint holds everything adapt or a resumed run needs: EMA stylizer with mapper, D
    ckpt = load_checkpoint(run / "checkpoints" / "step-000040.safetensors", kind="training")
    assert {k.split(".")[0] for k in ckpt.tensors} == {"stylizer", "stylizer_ema", "disc"}
    assert "stylizer_ema.clip_mapper.position_embedding" in ckpt.tensors


def test_cli_trains_from_a_run_directory_and_reports_missing_options(files, tmp_path):
    run = tmp_path / "00000-finetune"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "checkpoints" / "step-000002.safetensors").write_bytes((files / "stage2.safetensors").read_bytes())
    (run / "latest.json").write_text('{"step": 2, "weights": "checkpoints/step-000002.safetensors", "state": "x"}')
    args = ["train-mapper", "--photos", str(files / "photos"), "--init", str(run), "--tiny", "--steps", "2",
            "--batch-size", "2", "--workers", "0", "--preview-every", "0", "--quiet", "-o", str(tmp_path / "runs")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    final = result.stdout.strip().splitlines()[-1]
    assert final.endswith("train-mapper/final.safetensors") and load_stylizer(final).clip_mapper is not None
    assert load_checkpoint(final).meta["clip_tag"] == "openai"  # stylize and adapt default to it

    tagged = CliRunner().invoke(app, [*args, "--clip-tag", "laion2b_s34b_b79k", "--dry-run"])
    assert tagged.exit_code == 0 and '"clip_tag": "laion2b_s34b_b79k"' in tagged.stdout
    bad = CliRunner().invoke(app, [a for a in args if a != "--tiny"] + ["--clip-tag", "nope"])
    assert bad.exit_code == 1 and "Traceback" not in bad.output, bad.output
    assert "'nope'" in bad.stderr.strip().splitlines()[-1] and "--clip-tag" in bad.stderr

    missing = CliRunner().invoke(app, ["train-mapper", "--photos", str(files / "photos")])
    assert missing.exit_code == 2 and "needs --init" in missing.output  # a usage error, as adapt's and evaluate's


def test_resume_is_bit_exact(files, clip, tmp_path):
    straight = train(mapper_config(files, steps=4, preview_every=0, checkpoint_every=2), outdir=tmp_path / "a",
                     externals={"clip": clip}, progress=False)  # fmt: skip
    half = train(mapper_config(files, steps=2, preview_every=0, checkpoint_every=2), outdir=tmp_path / "b",
                 externals={"clip": clip}, progress=False)  # fmt: skip
    torch.manual_seed(123), random.seed(5)  # resume must restore the RNG (dropout, z, noise) itself
    train(resume=half, steps=4, externals={"clip": clip}, progress=False)
    a = load_checkpoint(straight / "checkpoints" / "step-000004.safetensors").tensors
    b = load_checkpoint(half / "checkpoints" / "step-000004.safetensors").tensors
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

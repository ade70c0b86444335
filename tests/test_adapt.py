"""`mmfs adapt` (phase 4): loss wiring against hand-computed values, what trains, the adapted file, the CLI."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from mmfs.checkpoint import load_checkpoint, module_state, save_checkpoint
from mmfs.data.images import load_image, save_image
from mmfs.inference.models import load_stylizer
from mmfs.nn import Stylizer
from mmfs.train import StepContext, make_config
from mmfs.train.adapt import run_adapt
from mmfs.train.log import read_log
from mmfs.train.stages.adapt import AdaptStage, adapt_losses
from mmfs_cli.app import app
from support.tiny import CPU, TINY, write_images

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A base Stylizer with a mapper, 6 photos and a style reference image."""
    root = tmp_path_factory.mktemp("adapt")
    torch.manual_seed(0)
    base = Stylizer(TINY, with_mapper=True)
    save_checkpoint(root / "base.safetensors", module_state(base), kind="stylizer", config=TINY)
    write_images(root / "photos", 6)
    ramp = np.linspace(0, 255, 48 * 40 * 3).reshape(40, 48, 3).astype(np.uint8)
    save_image(ramp, root / "ref.png")
    return root


@pytest.fixture(scope="module")
def externals():
    from mmfs.external.tiny import tiny_clip, tiny_dino

    return {"clip": tiny_clip(embed_dim=TINY.clip_dim), "dino": tiny_dino()}


def adapt_config(files, **options):
    opts = {"checkpoint": str(files / "base.safetensors"), "photos": str(files / "photos"), **options}
    return make_config("adapt", TINY, options=opts, batch_size=4, workers=0, log_every=1, preview_every=0)


def test_reference_recipe_defaults(files):
    cfg = adapt_config(files, text="pop art")
    loop = cfg.loop
    assert (loop.lr, loop.betas, loop.ema_decay, loop.steps) == (2e-4, (0.9, 0.999), 0.99, 200)
    opts = cfg.options
    weights = (opts.structure, opts.clip_dir, opts.proj)
    assert weights == (0.5, 1.0, 100.0) and (opts.proj_block, opts.source_text) == (3, "photo")
    with pytest.raises(ValueError, match="exactly one style"):
        adapt_config(files, text="pop art", ref=str(files / "ref.png"))
    with pytest.raises(ValueError, match="exactly one style"):
        adapt_config(files)


def self_similarity_by_hand(keys):
    k = F.normalize(keys, dim=-1)
    return k @ k.transpose(1, 2)


def test_one_shot_step_equals_hand_computed_losses(files, externals):
    clip, dino = externals["clip"], externals["dino"]
    torch.manual_seed(0)
    stage = AdaptStage(adapt_config(files, ref=str(files / "ref.png"), mapper_dropout=False), CPU, **externals)
    photo = torch.rand(4, 3, 32, 32) * 2 - 1
    torch.manual_seed(1)
    got = stage.g_loss(StepContext(step=1, micro=0, size=4, batch={"photo": photo}))

    with torch.no_grad():
        ref_emb, ref_tokens = clip.encode_reference_image_with_tokens(load_image(files / "ref.png"), block=3)
        a = F.normalize(ref_tokens[0], dim=-1).T  # [C, N]
        projector = a @ torch.linalg.pinv(a)  # orthogonal projector onto the reference tokens' span
        g = stage.nets["stylizer"]
        torch.manual_seed(1)  # same noise draws as the stage
        photo_emb = clip.encode_image(photo)
        fake = g(photo, g.ws_from_clip(ref_emb.expand(4, -1)))
        fake_emb, tokens = clip.encode_image_with_tokens(fake, block=3)
        direction = fake_emb - photo_emb
        target = (ref_emb - photo_emb.mean(0, keepdim=True)).expand_as(direction)  # batch-mean source anchor
        clip_dir = (1 - F.cosine_similarity(direction, target, dim=1)).mean()
        t = F.normalize(tokens, dim=-1).reshape(-1, tokens.shape[-1]).T
        proj = (projector @ t - t).abs().mean()
        sim_fake, sim_real = self_similarity_by_hand(dino.keys(fake)), self_similarity_by_hand(dino.keys(photo))
        structure = ((sim_fake - sim_real) ** 2).mean(dim=(1, 2)).sum()  # summed over the batch
    assert set(got) == {"structure", "clip_dir", "proj", "total"}
    torch.testing.assert_close(got["clip_dir"].detach(), clip_dir, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got["proj"].detach(), proj, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got["structure"].detach(), structure, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got["total"].detach(), 0.5 * structure + clip_dir + 100 * proj, rtol=1e-4, atol=1e-5)
    # the projector is exact: the reference's own tokens lose nothing, and the fakes' do
    from mmfs.losses import token_projection_loss

    assert float(token_projection_loss(ref_tokens, stage.projector)) < 1e-5
    torch.testing.assert_close(stage.projector, projector, rtol=0, atol=1e-4)
    assert float(proj) > 1e-3


def test_clip_losses_and_the_frozen_mapper_run_in_fp32_under_bf16_autocast(files, externals):
    torch.manual_seed(0)
    stage = AdaptStage(adapt_config(files, ref=str(files / "ref.png"), mapper_dropout=False), CPU, **externals)
    mapper = stage.nets["stylizer"].clip_mapper
    seen = []
    hook = mapper.register_forward_hook(lambda module, args, out: seen.append((args[0], out)))
    photo = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = stage.g_loss(StepContext(step=1, micro=0, size=2, batch={"photo": photo}))
    hook.remove()
    ((emb, ws),) = seen
    assert emb.dtype == ws.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(ws, mapper(emb))  # the same style code as without autocast
    assert got["clip_dir"].dtype == got["proj"].dtype == torch.float32
    assert all(torch.isfinite(v) for v in got.values())


def test_zero_shot_anchors_are_text_and_there_is_no_projection_term(files, externals):
    clip = externals["clip"]
    torch.manual_seed(0)
    stage = AdaptStage(adapt_config(files, text="pop art"), CPU, **externals)
    with torch.no_grad():
        torch.testing.assert_close(stage.target, clip.encode_text(["pop art"]))
        torch.testing.assert_close(stage.source, clip.encode_text(["photo"]))
    assert stage.projector is None
    got = stage.g_loss(StepContext(step=1, micro=0, size=4, batch={"photo": torch.rand(4, 3, 32, 32) * 2 - 1}))
    assert set(got) == {"structure", "clip_dir", "total"}
    torch.testing.assert_close(got["total"], 0.5 * got["structure"] + got["clip_dir"])
    # the frozen mapper's dropout is active while adapting (reference): two calls give two style codes
    mapper = stage.nets["stylizer"].clip_mapper
    assert mapper.training
    with torch.no_grad():
        assert not torch.equal(mapper(stage.target), mapper(stage.target))


def test_structure_term_is_the_reference_sum_over_the_full_batch():
    emb = F.normalize(torch.randn(2, 8), dim=-1)
    # half a batch of 8 (accumulation / a second GPU): its sum counts as 8 / 2 of itself
    got = adapt_losses(emb, emb.flip(0), emb[:1], emb[1:], torch.tensor(0.3), 2, 8, structure=0.5, clip_dir=1.0)
    assert float(got["structure"]) == pytest.approx(1.2)
    assert "proj" not in got


def test_adapt_lowers_its_loss_and_changes_only_the_decoder(files, externals, tmp_path):
    cfg = make_config(
        "adapt", TINY, options={"checkpoint": str(files / "base.safetensors"), "photos": str(files / "photos"),
                                "ref": str(files / "ref.png")},
        steps=40, batch_size=4, workers=0, log_every=1, preview_every=0,
    )  # fmt: skip
    out, run = run_adapt(
        cfg, tmp_path / "style.safetensors", run_dir=tmp_path / "runs", externals=externals, progress=False
    )
    totals = [line["G/total"] for line in read_log(run / "log.jsonl")]
    assert len(totals) == 40
    assert np.mean(totals[-5:]) < 0.95 * np.mean(totals[:5])  # 0.90 here

    base = load_checkpoint(files / "base.safetensors").tensors
    final = load_checkpoint(run / "final.safetensors", kind="stylizer").tensors
    decoder = ("decoder", "to_rgb")
    for key, value in base.items():
        if key.startswith(decoder):
            continue
        assert torch.equal(final[key], value), key  # encoder, mapping_z and clip_mapper bit-identical
    assert any(not torch.equal(final[k], base[k]) for k in base if k.startswith("decoder0."))
    assert any(not torch.equal(final[k], base[k]) for k in base if k.startswith("to_rgb2."))

    adapted = load_checkpoint(out, kind="adapted")
    assert adapted.tensors and all(k.startswith(decoder) for k in adapted.tensors)
    assert all(torch.equal(adapted.tensors[k], final[k]) for k in adapted.tensors)
    assert adapted.meta["base"] == os.path.relpath(files / "base.safetensors", tmp_path)  # relative to the file
    assert adapted.meta["reference"] == str(files / "ref.png") and adapted.meta["steps"] == "40"
    assert out.stat().st_size < (files / "base.safetensors").stat().st_size

    # it loads with its base and renders differently from the base for the same style and noise
    model, base_model = load_stylizer(out), load_stylizer(files / "base.safetensors")
    photo = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        ws = base_model.ws_from_clip(F.normalize(torch.randn(2, TINY.clip_dim), dim=-1))
        a, b = model(photo, ws, noise="zero"), base_model(photo, ws, noise="zero")
    assert (a - b).abs().max() > 1e-3


def test_adapt_needs_a_mapper(files, externals, tmp_path):
    from mmfs.errors import CheckpointError

    no_mapper = save_checkpoint(
        tmp_path / "plain.safetensors", module_state(Stylizer(TINY)), kind="stylizer", config=TINY
    )
    cfg = adapt_config(files, text="pop art")
    cfg = make_config("adapt", TINY, options={**cfg.options.__dict__, "checkpoint": str(no_mapper)}, workers=0)
    with pytest.raises(CheckpointError, match="no CLIP mapper; train one with `mmfs train-mapper`"):
        AdaptStage(cfg, CPU, **externals)


def test_cli_adapts_then_stylizes_inputs(files, tmp_path):
    out = tmp_path / "pop.safetensors"
    args = ["adapt", "-c", str(files / "base.safetensors"), "--text", "pop art", "--photos", str(files / "photos"),
            "--steps", "2", "--batch-size", "2", "--tiny", "--quiet", "--out", str(out),
            str(files / "photos" / "0.png"), "--aligned", "-o", str(tmp_path / "styled")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out).kind == "adapted" and load_checkpoint(out).meta["clip_tag"] == "openai"
    assert (tmp_path / "styled" / "0_pop-art.png").is_file()
    again = CliRunner().invoke(app, args)  # the adapted file exists: refused before any work
    assert again.exit_code == 1 and "already exists; pass --overwrite" in again.output


def test_cli_usage_errors(files):
    both = CliRunner().invoke(app, ["adapt", "-c", str(files / "base.safetensors"), "--text", "x", "--ref", "y.png"])
    assert both.exit_code == 2 and "exactly one style" in both.output
    no_photos = CliRunner().invoke(app, ["adapt", "-c", str(files / "base.safetensors"), "--text", "x"])
    said = " ".join(no_photos.output.replace("│", " ").split())  # Typer's usage box wraps the line
    assert no_photos.exit_code == 2 and "needs --photos (or INPUTS): face photos to adapt on" in said
    assert "or photos as INPUTS (detected and aligned as `mmfs stylize` does)" in said
    base = ["adapt", "-c", str(files / "base.safetensors"), "--text", "x", "--tiny"]
    one_file = CliRunner().invoke(app, [*base, str(files / "photos" / "0.png"), "--aligned"])
    assert one_file.exit_code == 1 and "must be one folder of aligned crops" in one_file.output


def test_cli_adapts_on_whole_photos_detected_and_aligned_as_stylize_does(files, tmp_path):
    """Without --photos, INPUTS that are ordinary photos are detected and aligned, then adapted on and stylized."""
    import numpy as np
    from skimage.data import astronaut

    from mmfs.data.images import save_image

    save_image(np.ascontiguousarray(astronaut()), tmp_path / "me.jpg")
    out = tmp_path / "pop.safetensors"
    args = ["adapt", "-c", str(files / "base.safetensors"), "--text", "pop art", "--steps", "1", "--batch-size", "1",
            "--tiny", "--quiet", "--out", str(out), str(tmp_path / "me.jpg"), "-o", str(tmp_path / "styled")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out).kind == "adapted"
    assert [p.name for p in (tmp_path / "styled").iterdir()] == ["me_face0_pop-art.png"]


def test_cli_adapts_on_aligned_inputs_without_photos(files, tmp_path):
    out = tmp_path / "pop.safetensors"
    args = ["adapt", "-c", str(files / "base.safetensors"), "--text", "pop art", "--steps", "1", "--batch-size", "2",
            "--tiny", "--quiet", "--out", str(out), str(files / "photos"), "--aligned", "-o", str(tmp_path / "styled")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out).kind == "adapted"
    assert sorted(p.name for p in (tmp_path / "styled").iterdir()) == [f"{i}_pop-art.png" for i in range(6)]


def test_cli_clip_tag_reaches_the_clip(files, tmp_path):
    args = ["adapt", "-c", str(files / "base.safetensors"), "--text", "x", "--photos", str(files / "photos"),
            "--clip-tag", "nope", "--quiet", "--out", str(tmp_path / "x.safetensors")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'nope'" in lines[0] and "--clip-tag" in lines[0]
    assert not (tmp_path / "x.safetensors").exists()


def test_under_torchrun_rank_zero_alone_writes_and_the_temporary_run_outlives_every_rank(tmp_path, monkeypatch):
    """Two ranks as two threads (a real barrier and broadcast between them): the training itself is faked."""
    import threading
    from dataclasses import dataclass
    from pathlib import Path

    import mmfs.train.adapt as adapt_mod
    import mmfs.train.distributed as dist_mod
    from mmfs.train.distributed import Dist

    wall, box, saves, at_barrier = threading.Barrier(2, timeout=20), {}, [], []

    @dataclass(frozen=True)
    class ThreadRank(Dist):
        def barrier(self) -> None:
            at_barrier.append((self.rank, sorted(p.name for p in tmp_path.glob(".mmfs-adapt-*/*/*"))))
            wall.wait()

        def broadcast_object(self, obj):
            if self.rank == 0:
                box["obj"] = obj
            wall.wait()
            return box["obj"]

    def rank_of_thread() -> ThreadRank:
        return ThreadRank(rank=int(threading.current_thread().name), world_size=2)

    def fake_train(cfg, *, outdir, **kwargs):  # like the loop: rank 0 writes final.safetensors, then a barrier
        run = Path(outdir) / "00000-adapt"
        d = rank_of_thread()
        if d.is_main:
            run.mkdir(parents=True)
            (run / "final.safetensors").write_bytes(b"weights")
        d.barrier()
        return run

    def fake_save(final, cfg, out):
        assert final.read_bytes() == b"weights"
        saves.append(threading.current_thread().name)
        Path(out).write_bytes(b"adapted")
        return Path(out)

    monkeypatch.setattr(dist_mod, "init_distributed", lambda device="auto": (rank_of_thread(), torch.device("cpu")))
    monkeypatch.setattr(adapt_mod, "train", fake_train)
    monkeypatch.setattr(adapt_mod, "save_adapted", fake_save)
    cfg = make_config("adapt", TINY, options={"checkpoint": "base.safetensors", "photos": "p", "text": "x"})
    results, errors = {}, []

    def rank_main() -> None:
        try:
            results[threading.current_thread().name] = run_adapt(cfg, tmp_path / "style.safetensors", progress=False)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            wall.abort()

    threads = [threading.Thread(target=rank_main, name=str(rank)) for rank in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert saves == ["0"]  # rank 0 alone wrote --out
    assert (tmp_path / "style.safetensors").read_bytes() == b"adapted"
    assert results["0"] == results["1"] == (tmp_path / "style.safetensors", None)
    # Each rank reached its last barrier while the temporary run still held final.safetensors; then it was removed.
    assert len(at_barrier) == 4 and dict(at_barrier) == {0: ["final.safetensors"], 1: ["final.safetensors"]}
    assert not list(tmp_path.glob(".mmfs-adapt-*"))

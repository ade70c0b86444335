"""Stage I and Stage II on the tiny preset: loss weights, learning, R1 interval, frozen sets, exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmfs.checkpoint import load_checkpoint, module_state, save_checkpoint
from mmfs.errors import CheckpointError, MMFSError
from mmfs.train import make_config, train
from mmfs.train.log import read_log
from mmfs.train.loop import Trainer
from mmfs.train.stages.common import r1_losses, reconstruction_losses
from mmfs.train.stages.finetune import discriminator_losses, generator_losses
from support.tiny import TINY, random_prior, same_tensors, save_prior, write_images


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A random tiny prior (generator + discriminator) and small photo / art folders."""
    root = tmp_path_factory.mktemp("stages")
    prior = save_prior(root / "prior.safetensors", *random_prior(seed=1))
    rng = np.random.default_rng(0)
    for folder in ("photos", "art"):
        write_images(root / folder, 5, (36, 36), rng)
    return {"root": root, "prior": prior, "photos": root / "photos", "art": root / "art"}


def stage1_config(files, **loop):
    # a high learning rate so a few dozen steps show learning; every Stage I run here uses it
    settings = {"steps": 4, "batch_size": 4, "lr": 1e-2, "log_every": 1, "preview_every": 0, "checkpoint_every": 2}
    settings.update(loop)
    return make_config("pretrain-encoder", TINY, options={"prior": str(files["prior"])}, **settings)


@pytest.fixture(scope="module")
def stage1_run(files):
    return train(stage1_config(files, steps=2), outdir=files["root"] / "runs1", progress=False)


def stage2_config(files, init, **loop):
    options = {
        "photos": str(files["photos"]),
        "art": str(files["art"]),
        "init": str(init),
        "dino": "tiny",
        "r1_every": 2,
    }
    settings = {
        "steps": 4,
        "batch_size": 4,
        "log_every": 1,
        "preview_every": 0,
        "checkpoint_every": 2,
        "workers": 0,
        **loop,
    }
    return make_config("finetune", TINY, options=options, **settings)


# --- the loss weightings the stages apply, against hand-computed values ------------------------------------
def test_reconstruction_weights_are_1_and_4():
    fake, real = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.0, 1.0]])
    feats_f = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    feats_r = [torch.tensor([0.0, 0.0]), torch.tensor([[1.0]])]
    out = reconstruction_losses(fake, real, feats_f, feats_r, l1=1.0, feat=4.0)
    assert out["l1"].item() == pytest.approx(1.25)  # (0.5 + 2) / 2
    assert out["feat"].item() == pytest.approx(3.5)  # (1 + 2) / 2 + 2
    assert out["total"].item() == pytest.approx(1.25 + 4 * 3.5)


def test_generator_loss_is_nonsaturating_plus_half_the_batch_summed_structure():
    logits = torch.tensor([[0.0], [2.0]])
    out = generator_losses(logits, torch.tensor(3.0), images=2, batch_size=8, adv=1.0, structure=0.5)
    adv = (math.log(2) + math.log1p(math.exp(-2))) / 2
    assert out["adv"].item() == pytest.approx(adv)
    assert out["structure"].item() == pytest.approx(12.0)  # a 2-image micro-batch summing 3 of a batch of 8
    assert out["total"].item() == pytest.approx(adv + 0.5 * 12.0)


def test_discriminator_loss_is_halved_logistic():
    out = discriminator_losses(torch.tensor([[1.0]]), torch.tensor([[-1.0]]), weight=0.5)
    expected = 2 * math.log1p(math.exp(-1))
    assert out["adv"].item() == pytest.approx(expected)
    assert out["total"].item() == pytest.approx(0.5 * expected)


def test_r1_is_scaled_by_gamma_over_two_times_the_interval():
    w = torch.tensor([1.0, -2.0, 0.5])
    real = torch.ones(2, 3, requires_grad=True)
    logits = (real * w).sum(1, keepdim=True)  # dD/dx = w for every image
    out = r1_losses(logits, real, gamma=10.0, every=16)
    assert out["r1"].item() == pytest.approx(5.25)  # |w|^2
    assert out["total"].item() == pytest.approx(5.25 * 10 / 2 * 16)


# --- Stage I ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stage1_long(files, tmp_path_factory):
    """20 steps straight, with a checkpoint at step 4; what moved and the reconstruction error before/after."""
    run_dir = tmp_path_factory.mktemp("stage1_long")
    trainer = Trainer(stage1_config(files, steps=20, checkpoint_every=4, keep_checkpoints=5), run_dir, progress=False)
    stage = trainer.stage
    z = torch.randn(8, TINY.z_dim, generator=torch.Generator().manual_seed(5))

    def error() -> float:
        with torch.no_grad():
            real = F.hardtanh(stage.teacher(z, noise="zero"))
            g = stage.nets["stylizer"]
            return F.l1_loss(g(real, g.ws_from_z(z), noise="zero"), real).item()

    before = {k: v.clone() for k, v in stage.nets["stylizer"].state_dict().items()}
    frozen = [module_state(stage.teacher), module_state(stage.disc)]
    start = error()
    trainer.run()
    return {"run_dir": run_dir, "stage": stage, "before": before, "frozen": frozen, "start": start, "end": error()}


def test_stage1_reduces_the_reconstruction_error_and_trains_only_the_new_layers(stage1_long):
    start, end, stage = stage1_long["start"], stage1_long["end"], stage1_long["stage"]
    assert end < 0.75 * start, (start, end)
    after = stage.nets["stylizer"].state_dict()
    ema = stage.nets["stylizer_ema"].state_dict()
    for key, value in stage1_long["before"].items():
        new_layer = key.startswith(("encoder.", "decoder0.", "to_rgb0."))
        if new_layer and key.endswith("weight") and "noise" not in key:
            assert not torch.equal(after[key], value), key
        if not new_layer:  # the prior's mapping and decoder from 2F px up stay frozen, also in the EMA
            assert torch.equal(after[key], value) and torch.equal(ema[key], value), key
    teacher, disc = stage1_long["frozen"]
    assert same_tensors(teacher, module_state(stage.teacher)) and same_tensors(disc, module_state(stage.disc))
    assert (stage1_long["run_dir"] / "final.safetensors").is_file()


def test_stage1_resume_is_bit_exact(files, stage1_run, stage1_long):
    import shutil

    # resume a copy of the 2-step run (the fixture's run stays at step 2 for the Stage II tests)
    half = files["root"] / "half1"
    shutil.copytree(stage1_run, half)
    train(resume=half, steps=4, progress=False)
    a = load_checkpoint(stage1_long["run_dir"] / "checkpoints/step-000004.safetensors").tensors
    b = load_checkpoint(half / "checkpoints/step-000004.safetensors").tensors
    assert same_tensors(a, b)
    final = load_checkpoint(half / "final.safetensors", kind="stylizer")
    assert final.meta["stage"] == "pretrain-encoder" and final.meta["prior"] == str(files["prior"].resolve())
    assert all(torch.equal(final.tensors[k], a["stylizer_ema." + k]) for k in final.tensors)


@pytest.mark.parametrize("with_prior", [True, False])
def test_stage1_uses_an_injected_teacher_and_discriminator(files, tmp_path, with_prior):
    """Injected nets replace the prior file's (given or not), are frozen, and are what the loss is computed with."""
    from mmfs.nn import Discriminator, Generator
    from mmfs.train.stage import StepContext

    torch.manual_seed(7)  # other weights than the prior file's (seed 1)
    teacher, disc = Generator(TINY), Discriminator(TINY)
    # an injected net is frozen in place: clone the weights before the stage sees them
    before = [module_state(teacher), module_state(disc)]
    prior = load_checkpoint(files["prior"])
    assert not torch.equal(before[0]["style.1.weight"], prior.tensors["g.style.1.weight"])
    options = {"prior": str(files["prior"]) if with_prior else ""}
    cfg = make_config("pretrain-encoder", TINY, options=options, steps=2, batch_size=2, log_every=1, preview_every=0)
    trainer = Trainer(cfg, tmp_path, externals={"teacher": teacher, "disc": disc}, progress=False)
    stage = trainer.stage
    assert stage.teacher is teacher and stage.disc is disc
    for net in (teacher, disc):
        assert not net.training and not any(p.requires_grad for p in net.parameters())
    # the Stylizer's frozen z-mapping is the injected teacher's (same z -> same w as the teacher)
    g = stage.nets["stylizer"]
    assert torch.equal(g.state_dict()["mapping_z.1.weight"], before[0]["style.1.weight"])

    # the loss, by hand with the injected nets, under the same RNG draws as the stage's closure
    torch.manual_seed(11)
    out = stage.g_loss(StepContext(step=1, micro=0, size=2, batch=None))
    torch.manual_seed(11)
    with torch.no_grad():
        z = torch.randn(2, TINY.z_dim)
        real = F.hardtanh(teacher(z))
        real_feats = disc.features(real)
        fake = g(real, g.ws_from_z(z))
        fake_feats = disc.features(fake)
    l1 = (fake - real).abs().mean()
    feat = sum((a - b).abs().mean() for a, b in zip(fake_feats, real_feats, strict=True))
    assert out["l1"].item() == pytest.approx(l1.item(), rel=1e-5)
    assert out["feat"].item() == pytest.approx(feat.item(), rel=1e-5)
    assert out["total"].item() == pytest.approx((l1 + 4.0 * feat).item(), rel=1e-5)

    trainer.run()  # two steps: the injected nets stay as they were
    assert same_tensors(before[0], module_state(teacher)) and same_tensors(before[1], module_state(disc))
    final = load_checkpoint(tmp_path / "final.safetensors", kind="stylizer")
    assert "prior" not in final.meta  # the prior file's D is not the one used: Stage II must not pick it up


def test_stage1_without_a_prior_or_both_injected_nets_is_a_clear_error(tmp_path):
    from mmfs.nn import Generator

    cfg = make_config("pretrain-encoder", TINY, options={"prior": ""})
    with pytest.raises(MMFSError, match="`mmfs pretrain-encoder` needs --prior"):
        Trainer(cfg, tmp_path, externals={"teacher": Generator(TINY)}, progress=False)


# --- Stage II -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stage2_straight(files, stage1_run, tmp_path_factory):
    """4 steps with R1 every 2 steps; the weights before, and the run directory."""
    run_dir = tmp_path_factory.mktemp("stage2_straight")
    cfg = stage2_config(files, stage1_run / "final.safetensors", steps=4, checkpoint_every=4, preview_every=4)
    trainer = Trainer(cfg, run_dir, progress=False)
    stage = trainer.stage
    nets = {name: {k: v.clone() for k, v in stage.nets[name].state_dict().items()} for name in ("stylizer", "disc")}
    dino = module_state(stage.dino)
    trainer.run()
    return {"run_dir": run_dir, "stage": stage, "before": nets, "dino": dino}


def test_stage2_runs_r1_on_its_interval_and_trains_g_and_d(files, stage2_straight):
    stage, before = stage2_straight["stage"], stage2_straight["before"]
    # D started from the prior's discriminator, found through the Stage I file's metadata
    assert same_tensors(before["disc"], load_checkpoint(files["prior"]).subset("d."))
    lines = read_log(stage2_straight["run_dir"] / "log.jsonl")
    assert [x["step"] for x in lines if "D_reg/r1" in x] == [2, 4]
    assert all({"G/adv", "G/structure", "D/adv"} <= x.keys() for x in lines)
    g0, d0 = before["stylizer"], before["disc"]
    g1, d1 = stage.nets["stylizer"].state_dict(), stage.nets["disc"].state_dict()
    changed_g = [k for k in g0 if not torch.equal(g0[k], g1[k])]
    assert any(k.startswith("mapping_z.") for k in changed_g) and any(k.startswith("encoder.") for k in changed_g)
    assert any(k.startswith("decoder2a.") for k in changed_g)
    assert sum(not torch.equal(d0[k], d1[k]) for k in d0) == len(d0)  # every D tensor moved
    assert same_tensors(stage2_straight["dino"], module_state(stage.dino))  # the DINO is frozen


def test_stage2_resume_is_bit_exact_and_the_preview_is_written(files, stage1_run, stage2_straight):
    init = stage1_run / "final.safetensors"
    half = train(stage2_config(files, init, steps=2), outdir=files["root"] / "s2b", progress=False)
    train(resume=half, steps=4, progress=False)
    a = load_checkpoint(stage2_straight["run_dir"] / "checkpoints/step-000004.safetensors").tensors
    b = load_checkpoint(half / "checkpoints/step-000004.safetensors").tensors
    assert {k.split(".")[0] for k in a} == {"stylizer", "stylizer_ema", "disc"}
    assert same_tensors(a, b)
    from PIL import Image

    with Image.open(
        stage2_straight["run_dir"] / "previews" / "step-000004.png"
    ) as img:  # 5 photos x (photo + 3 styles)
        assert img.size == (4 * 32, 5 * 32)


def test_stage2_without_a_discriminator_source_is_a_clear_error(files, tmp_path):
    from mmfs.nn import Stylizer

    bare = save_checkpoint(tmp_path / "bare.safetensors", module_state(Stylizer(TINY)), kind="stylizer", config=TINY)
    with pytest.raises(CheckpointError, match="no discriminator found.*pass --disc"):
        Trainer(stage2_config(files, bare), tmp_path, progress=False)
    options = {
        "photos": str(files["photos"]),
        "art": str(files["art"]),
        "init": str(bare),
        "disc": str(files["prior"]),
        "dino": "tiny",
    }
    trainer = Trainer(make_config("finetune", TINY, options=options, workers=0), tmp_path, progress=False)
    assert torch.equal(
        trainer.stage.nets["disc"].state_dict()["final_linear.1.bias"],
        load_checkpoint(files["prior"]).tensors["d.final_linear.1.bias"],
    )


def test_stage1_with_compile_compiles_static_graphs_and_matches_eager(files, tmp_path, monkeypatch):
    """`--compile` wires torch.compile (static shapes) into the trained and frozen nets; same losses as eager.

    aot_eager traces the same graphs as Inductor without generating code (Inductor is timed in
    benchmarks/train_throughput.py); both runs draw z and noise from the same seeded global RNG in the same
    order, so they see the same numbers.
    """
    real_compile, calls = torch.compile, []

    def recording_compile(fn, **kwargs):
        calls.append(kwargs)
        return real_compile(fn, backend="aot_eager", **kwargs)

    logs = {}
    for mode in ("eager", "compiled"):
        monkeypatch.setattr(torch, "compile", recording_compile if mode == "compiled" else real_compile)
        torch._dynamo.reset()
        cfg = stage1_config(files, steps=2, checkpoint_every=0, compile=mode == "compiled")
        run_dir = train(cfg, outdir=tmp_path / mode, progress=False)
        logs[mode] = [row for row in read_log(run_dir / "log.jsonl") if "G/total" in row]
    assert calls and all(kw.get("dynamic") is False for kw in calls)
    assert len(logs["compiled"]) == len(logs["eager"]) == 2
    for eager, compiled in zip(logs["eager"], logs["compiled"], strict=True):
        assert compiled["G/total"] == pytest.approx(eager["G/total"], rel=1e-3)


def test_preview_noise_zero_renders_without_noise_maps(files, stage1_run, tmp_path):
    """--preview-noise zero: the grid ignores the noise weights; seeded: the same maps in every grid."""
    init = stage1_run / "final.safetensors"

    def preview(mode: str, noise_weight: float) -> torch.Tensor:
        stage = Trainer(stage2_config(files, init, preview_noise=mode), tmp_path / mode, progress=False).stage
        with torch.no_grad():
            for name, param in stage.nets["stylizer_ema"].named_parameters():
                if name.endswith("noise.weight"):
                    param.fill_(noise_weight)
        return stage.preview()[0]

    assert torch.equal(preview("zero", 0.0), preview("zero", 2.0))
    seeded = preview("seeded", 2.0)
    assert torch.equal(seeded, preview("seeded", 2.0))
    assert not torch.allclose(seeded, preview("seeded", 0.0), atol=1e-3)

"""The shared training loop on a toy stage: resume, accumulation, phases, EMA, checkpoints, logs."""

from __future__ import annotations

import copy
import json
import math
import random
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from mmfs.checkpoint import load_checkpoint
from mmfs.config import PRESETS
from mmfs.config.train import StageOptions
from mmfs.data.datasets import UnpairedFolders
from mmfs.train import EmaSpec, Phase, Stage, adam, lazy_regularization, make_config, register_stage, train
from mmfs.train.ema import Ema
from mmfs.train.log import read_log
from mmfs.train.state import load_optimizer, optimizer_tensors
from support.tiny import write_images


@dataclass(frozen=True)
class ToyOptions(StageOptions):
    command: ClassVar[str] = "toy"
    loop_defaults: ClassVar[dict[str, Any]] = {
        "lr": 1e-2, "betas": (0.5, 0.99), "ema_decay": 0.9, "batch_size": 4, "workers": 0
    }  # fmt: skip

    photos: str = ""
    reg_every: int = 2


@register_stage
class ToyStage(Stage[ToyOptions]):
    """A conv 'generator', a linear 'discriminator', a lazy regulariser; uses torch, Python and NumPy RNGs."""

    def __init__(self, cfg, device, **externals):
        super().__init__(cfg, device)
        gen = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 1))
        self.frozen = gen[2]  # a layer no optimizer owns
        disc = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 1))
        self.nets = {"gen": gen, "gen_ema": copy.deepcopy(gen), "disc": disc}
        loop = cfg.loop
        self.optimizers = {
            "G": adam(list(gen[0].parameters()), loop.lr, loop.betas),
            "D": adam(list(disc.parameters()), loop.lr, loop.betas, reg_every=cfg.options.reg_every),
        }

    def dataset(self):
        return UnpairedFolders({"photo": self.cfg.options.photos}, 8)

    def phases(self):
        return [
            Phase("G", "G", self.g_loss, module="gen"),
            Phase("D", "D", self.d_loss, module="disc"),
            Phase("D_reg", "D", self.r_loss, every=self.cfg.options.reg_every, module="disc"),
        ]

    def ema(self):
        return [EmaSpec("gen", "gen_ema", self.cfg.loop.ema_decay)]

    def g_loss(self, ctx):
        x = ctx.batch["photo"]
        x = x + 0.1 * torch.randn_like(x) + 0.01 * random.random() + 0.01 * float(np.random.rand())
        fake = self.train_view("gen")(x)
        ctx.stash["fake"] = fake.detach()
        l2 = (fake - 0.5).pow(2).mean()
        adv = nn.functional.softplus(-self.nets["disc"](fake)).mean()
        return {"l2": l2, "adv": adv, "total": l2 + 0.1 * adv}

    def d_loss(self, ctx):
        fake, real = ctx.stash["fake"], ctx.batch["photo"]
        disc = self.train_view("disc")
        adv = nn.functional.softplus(disc(fake)).mean() + nn.functional.softplus(-disc(real)).mean()
        return {"adv": adv, "total": adv}

    def r_loss(self, ctx):
        w = self.nets["disc"][1].weight
        penalty = w.pow(2).sum()
        return {"r1": penalty, "total": penalty * self.cfg.options.reg_every}

    def preview(self):
        return self.nets["gen_ema"](torch.zeros(2, 3, 8, 8)), 2

    def final(self):
        from mmfs.checkpoint import module_state

        return module_state(self.nets["gen_ema"]), {}


@pytest.fixture
def photos(tmp_path):
    return write_images(tmp_path / "photos", 5, (12, 10))


def toy_config(photos, **loop):
    settings = {"steps": 4, "log_every": 1, "preview_every": 0, "checkpoint_every": 2, **loop}
    return make_config("toy", PRESETS["tiny"], options={"photos": str(photos)}, **settings)


def weights(run_dir, step):
    ckpt = load_checkpoint(run_dir / "checkpoints" / f"step-{step:06d}.safetensors", kind="training")
    return ckpt.tensors


def test_resume_continues_bit_for_bit(photos, tmp_path):
    straight = train(toy_config(photos), outdir=tmp_path / "a", progress=False)
    first = train(toy_config(photos, steps=2), outdir=tmp_path / "b", progress=False)
    assert json.loads((first / "latest.json").read_text())["step"] == 2
    # Scramble every global RNG: resume must restore them from the checkpoint.
    torch.manual_seed(123), random.seed(5), np.random.seed(7)
    resumed = train(resume=first, steps=4, progress=False)
    assert resumed == first
    a, b = weights(straight, 4), weights(first, 4)
    assert a.keys() == b.keys() and {k.split(".")[0] for k in a} == {"gen", "gen_ema", "disc"}
    for key in a:
        assert torch.equal(a[key], b[key]), key
    sa = load_checkpoint(straight / "checkpoints/step-000004.state.safetensors").tensors
    sb = load_checkpoint(first / "checkpoints/step-000004.state.safetensors").tensors
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # the resumed log continues where the first half stopped, with the same losses
    la, lb = read_log(straight / "log.jsonl"), read_log(first / "log.jsonl")
    assert [x["step"] for x in lb] == [1, 2, 3, 4]
    assert [x["G/total"] for x in la] == [x["G/total"] for x in lb]
    assert json.loads((first / "config.json").read_text())["loop"]["steps"] == 4


def test_on_step_follows_every_step_and_an_exception_in_it_stops_the_run(photos, tmp_path):
    seen = []
    train(toy_config(photos), outdir=tmp_path / "a", progress=False, on_step=lambda *a: seen.append(a))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]

    class Stop(Exception):
        pass

    def stop_at_3(step, total):
        if step == 3:
            raise Stop

    with pytest.raises(Stop) as stopped:
        train(toy_config(photos), outdir=tmp_path / "b", progress=False, on_step=stop_at_3)
    # the run's read-ahead thread ended with it, though the held error still reaches the trainer
    assert stopped.value is not None and not [t for t in threading.enumerate() if t.name == "mmfs-read-ahead"]
    (run,) = (tmp_path / "b").iterdir()
    assert not (run / "final.safetensors").exists()  # stopped before anything final was written
    assert json.loads((run / "latest.json").read_text())["step"] == 2  # the last checkpoint it reached


def test_lazy_phase_runs_on_its_interval_and_only_trains_its_parameters(photos, tmp_path):
    run = train(toy_config(photos, steps=6, checkpoint_every=0), outdir=tmp_path, progress=False)
    lines = read_log(run / "log.jsonl")
    assert [x["step"] for x in lines if "D_reg/r1" in x] == [2, 4, 6]
    assert all("G/l2" in x and "D/adv" in x for x in lines)
    assert lines[-1]["data/skipped"] == 0
    end = weights(run, 6)
    torch.manual_seed(0)  # the loop seeds with cfg.loop.seed before building the stage: same initial weights
    start = make_config("toy", PRESETS["tiny"], options={"photos": str(photos)})
    init = ToyStage(start, torch.device("cpu"))
    # The frozen layer (no optimizer) is bit-identical in both the net and its EMA; the trained ones moved.
    assert torch.equal(end["gen.2.weight"], init.nets["gen"][2].weight)
    assert torch.equal(end["gen_ema.2.weight"], init.nets["gen"][2].weight)
    assert not torch.equal(end["gen.0.weight"], init.nets["gen"][0].weight)
    assert not torch.equal(end["disc.1.weight"], init.nets["disc"][1].weight)
    final = load_checkpoint(run / "final.safetensors", kind="stylizer")
    assert torch.equal(final.tensors["0.weight"], end["gen_ema.0.weight"])
    assert final.meta["stage"] == "toy" and final.meta["step"] == "6"


def test_checkpoints_keep_the_newest_and_point_to_the_latest(photos, tmp_path):
    run = train(toy_config(photos, steps=5, checkpoint_every=1, keep_checkpoints=2), outdir=tmp_path, progress=False)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == [
        "step-000004.safetensors",
        "step-000004.state.safetensors",
        "step-000005.safetensors",
        "step-000005.state.safetensors",
    ]
    latest = json.loads((run / "latest.json").read_text())
    assert latest == {
        "step": 5,
        "weights": "checkpoints/step-000005.safetensors",
        "state": "checkpoints/step-000005.state.safetensors",
    }
    assert not [p for p in run.rglob("*partial*")]  # atomic writes leave no temporaries
    assert run.name == "00000-toy"
    assert train(toy_config(photos, steps=1), outdir=tmp_path, progress=False).name == "00001-toy"


def test_accumulation_matches_one_big_batch(photos, tmp_path):
    # Same images per step; micro-batches of 2 vs one batch of 4. Losses are means, so the update
    # is the same up to float rounding (the random noise draws differ in order, so compare without it).
    import mmfs.train.loop as loop_mod

    def no_noise_stage(cfg, device, **kw):
        stage = ToyStage(cfg, device)
        stage.g_loss = lambda ctx: _plain_g(stage, ctx)
        return stage

    def _plain_g(stage, ctx):
        fake = stage.train_view("gen")(ctx.batch["photo"])
        ctx.stash["fake"] = fake.detach()
        l2 = (fake - 0.5).pow(2).mean()
        return {"l2": l2, "total": l2}

    original = loop_mod.get_stage
    loop_mod.get_stage = lambda command: no_noise_stage
    try:
        one = train(toy_config(photos, steps=2), outdir=tmp_path / "one", progress=False)
        two = train(toy_config(photos, steps=2, accum=2), outdir=tmp_path / "two", progress=False)
    finally:
        loop_mod.get_stage = original
    a, b = weights(one, 2), weights(two, 2)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert not torch.equal(a["gen.0.weight"], weights(one, 2)["gen_ema.0.weight"])


def test_lazy_regularization_scaling_matches_the_reference():
    lr, betas = lazy_regularization(1e-3, (0.1, 0.999), 16)
    assert lr == pytest.approx(1e-3 * 16 / 17)
    assert betas == pytest.approx((0.1 ** (16 / 17), 0.999 ** (16 / 17)))
    assert betas[0] == pytest.approx(0.1145, abs=1e-4) and betas[1] == pytest.approx(
        0.99906, abs=1e-5
    )  # the official Stage II settings
    opt = adam([nn.Parameter(torch.zeros(1))], 1e-3, (0.1, 0.999), reg_every=16)
    assert opt.param_groups[0]["lr"] == pytest.approx(9.41176e-4, rel=1e-5)


def test_ema_follows_the_reference_formula_and_leaves_frozen_parameters():
    src, dst = nn.Linear(3, 2), nn.Linear(3, 2)
    dst.load_state_dict(src.state_dict())
    ema = Ema(src, dst, 0.9, trainable=[src.weight])
    before = dst.weight.detach().clone()
    with torch.no_grad():
        src.weight.add_(1.0)
        src.bias.add_(1.0)
    ema.update()
    torch.testing.assert_close(dst.weight, 0.9 * before + 0.1 * src.weight, rtol=0, atol=1e-7)
    assert not torch.equal(dst.bias, src.bias)  # not trained -> never averaged or copied


def test_optimizer_state_round_trips_through_tensors_and_json():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(4))
    opt = adam([p], 1e-2, (0.1, 0.999))
    for _ in range(3):
        opt.zero_grad()
        p.pow(2).sum().backward()
        opt.step()
    tensors, meta = optimizer_tensors("G", opt)
    assert set(tensors) == {"opt.G.state.0.step", "opt.G.state.0.exp_avg", "opt.G.state.0.exp_avg_sq"}
    q = nn.Parameter(p.detach().clone())
    other = adam([q], 1.0, (0.5, 0.5))
    load_optimizer("G", other, tensors, json.loads(json.dumps(meta)))
    for opt_ in (opt, other):
        opt_.zero_grad()
    p.pow(2).sum().backward()
    q.pow(2).sum().backward()
    opt.step(), other.step()
    assert torch.equal(p, q)


def test_bf16_autocast_runs_on_cpu_and_fp16_is_refused(photos, tmp_path):
    from mmfs.errors import OptionError
    from mmfs.train import LoopConfig
    from mmfs.train.loop import resolve_dtype

    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(OptionError, match="must be one of fp32, bf16, got 'fp16'") as refused:
        LoopConfig(dtype="fp16")  # fp16 would need loss scaling: not a training dtype
    assert refused.value.flag == "--dtype"
    run = train(toy_config(photos, steps=2, dtype="bf16", checkpoint_every=0), outdir=tmp_path, progress=False)
    lines = read_log(run / "log.jsonl")
    assert all(math.isfinite(x["G/total"]) for x in lines) and len(lines) == 2
    assert load_checkpoint(run / "final.safetensors").tensors["0.weight"].dtype == torch.float32  # weights stay fp32


def _tf32_allowed() -> tuple[bool, bool]:
    """(matmul, convolution) TF32 state as torch reports it publicly (torch >= 2.9 API, else the old flags)."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision"):
        return matmul.fp32_precision == "tf32", cudnn.conv.fp32_precision == "tf32"
    return matmul.allow_tf32, cudnn.allow_tf32


class PrecisionOptions(ToyOptions):
    command = "toy-precision"


@register_stage
class PrecisionStage(ToyStage):
    """The toy stage, recording the autocast dtype (None: off) and the TF32 state its G loss runs under."""

    Options = PrecisionOptions
    seen: list[tuple[torch.dtype | None, tuple[bool, bool]]] = []

    def g_loss(self, ctx):
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        PrecisionStage.seen.append((dtype, _tf32_allowed()))
        return super().g_loss(ctx)


@pytest.fixture
def restore_tf32():
    from mmfs.utils.device import keeping_backend_settings

    with keeping_backend_settings():
        yield


def test_training_defaults_to_fp32_without_tf32_and_both_are_opt_ins(photos, tmp_path, restore_tf32):
    from mmfs.errors import OptionError
    from mmfs.utils.device import set_tf32

    def run(name, **loop):
        PrecisionStage.seen.clear()
        cfg = make_config("toy-precision", PRESETS["tiny"], options={"photos": str(photos)}, steps=1, **loop)
        train(cfg, outdir=tmp_path / name, progress=False)
        return cfg.loop, list(PrecisionStage.seen)

    set_tf32(True)  # allowed before the run (PyTorch allows it for convolutions by default): the run turns it off
    loop, seen = run("default")
    assert (loop.dtype, loop.tf32) == ("fp32", False)
    assert seen == [(None, (False, False))]  # no autocast, no TF32: the reference's fp32
    assert _tf32_allowed() == (True, True)  # the process's own setting is back after the run
    set_tf32(False)
    loop, seen = run("opt-in", dtype="bf16", tf32=True)
    assert seen == [(torch.bfloat16, (True, True))] and _tf32_allowed() == (False, False)
    with pytest.raises(OptionError, match="dtype: must be one of fp32, bf16, got 'auto'"):
        make_config("toy", PRESETS["tiny"], options={"photos": str(photos)}, dtype="auto")  # only old runs resume it


class KernelOptions(ToyOptions):
    command = "toy-kernels"


@register_stage
class KernelStage(ToyStage):
    """The toy stage, recording the kernel policy its G loss runs under."""

    Options = KernelOptions
    seen: list[tuple[bool, bool, bool]] = []

    def g_loss(self, ctx):
        cudnn = torch.backends.cudnn
        KernelStage.seen.append((torch.are_deterministic_algorithms_enabled(), cudnn.deterministic, cudnn.benchmark))
        return super().g_loss(ctx)


def test_deterministic_training_and_otherwise_cudnn_autotuning_for_the_runs_fixed_shapes(
    photos, tmp_path, restore_tf32
):
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    runs = {}
    for deterministic in (False, True):
        KernelStage.seen.clear()
        cfg = make_config("toy-kernels", PRESETS["tiny"], options={"photos": str(photos)}, steps=2,
                          checkpoint_every=1, deterministic=deterministic)  # fmt: skip
        runs[deterministic] = train(cfg, outdir=tmp_path / str(deterministic), progress=False)
        assert set(KernelStage.seen) == {(deterministic, deterministic, not deterministic)}
        assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
                torch.backends.cudnn.benchmark) == before  # fmt: skip
    assert json.loads((runs[True] / "config.json").read_text())["loop"]["deterministic"] is True
    # on the CPU the kernels were deterministic already: the same weights either way
    a, b = (load_checkpoint(runs[d] / "final.safetensors").tensors for d in (False, True))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_runs_saved_before_the_fp32_default_resume_as_they_ran(photos):
    from mmfs.train import TrainConfig

    old = json.loads(toy_config(photos).to_json())
    old["loop"]["dtype"] = "auto"
    del old["loop"]["tf32"]  # not written then: every CUDA run had TF32 on
    loop = TrainConfig.from_dict(old).loop
    assert (loop.dtype, loop.tf32) == ("auto", True)
    assert TrainConfig.from_json(toy_config(photos).to_json()).loop.tf32 is False


class NanOptions(ToyOptions):
    command = "toy-nan"


@register_stage
class NanStage(ToyStage):
    """The toy stage whose generator loss turns NaN from step 3 on (as a too-high learning rate would)."""

    Options = NanOptions

    def g_loss(self, ctx):
        losses = super().g_loss(ctx)
        if ctx.step >= 3:
            losses["total"] = losses["total"] * float("nan")
        return losses


@pytest.mark.parametrize("log_every", [1, 0])  # caught at the next log line, or else at the next checkpoint
def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(photos, tmp_path, log_every):
    from mmfs.train.loop import TrainingDiverged

    cfg = make_config("toy-nan", PRESETS["tiny"], options={"photos": str(photos)}, steps=6, log_every=log_every,
                      preview_every=0, checkpoint_every=2)  # fmt: skip
    with pytest.raises(TrainingDiverged, match=r"G loss became NaN or infinite by step (3|4); the last good "
                       r"checkpoint \(step 2\) is kept: .* --resume ") as caught:  # fmt: skip
        train(cfg, outdir=tmp_path / "runs", progress=False)
    assert "\n" not in str(caught.value)
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "latest.json").read_text())["step"] == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-000002.safetensors", "step-000002.state.safetensors"
    ]  # fmt: skip
    assert all(torch.isfinite(t).all() for t in weights(run, 2).values())
    assert not (run / "final.safetensors").exists()
    if log_every:
        assert [x["step"] for x in read_log(run / "log.jsonl")] == [1, 2]  # no NaN line logged

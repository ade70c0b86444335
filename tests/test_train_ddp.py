"""Two CPU processes under torchrun (gloo): DDP, the rank-split data, rank-0 checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmfs.checkpoint import load_checkpoint, module_state, save_checkpoint
from mmfs.config import PRESETS
from mmfs.train import train
from support.tiny import save_prior, write_images

TORCHRUN = Path(sys.executable).with_name("torchrun")
pytestmark = pytest.mark.skipif(not TORCHRUN.exists() and shutil.which("torchrun") is None, reason="no torchrun")


def torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    exe = str(TORCHRUN) if TORCHRUN.exists() else "torchrun"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [exe, "--standalone", "--nproc_per_node", "2", *args]
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


SCRIPT = """
import sys, copy, torch
from dataclasses import dataclass
from typing import ClassVar
from torch import nn
from mmfs.config import PRESETS
from mmfs.config.train import StageOptions
from mmfs.train import train
from mmfs.data.datasets import UnpairedFolders
from mmfs.train import EmaSpec, Phase, Stage, adam, make_config, register_stage, train


@dataclass(frozen=True)
class Opts(StageOptions):
    command: ClassVar[str] = "det"
    loop_defaults: ClassVar[dict] = {"lr": 1e-2, "betas": (0.5, 0.99), "ema_decay": 0.5, "workers": 0}

    photos: str = ""


@register_stage
class Det(Stage[Opts]):
    \"\"\"Deterministic (no random draws): 2 ranks x 2 images must compute the update of 1 rank x 4 images.\"\"\"


    def __init__(self, cfg, device, **kw):
        super().__init__(cfg, device)
        net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 1))
        self.nets = {"gen": net, "gen_ema": copy.deepcopy(net)}
        self.optimizers = {"G": adam(list(net.parameters()), cfg.loop.lr, cfg.loop.betas)}

    def dataset(self):
        return UnpairedFolders({"photo": self.cfg.options.photos}, 8)

    def phases(self):
        return [Phase("G", "G", self.loss, module="gen")]

    def ema(self):
        return [EmaSpec("gen", "gen_ema", self.cfg.loop.ema_decay)]

    def loss(self, ctx):
        out = self.train_view("gen")(ctx.batch["photo"])
        l2 = (out - 0.25).pow(2).mean()
        return {"l2": l2, "total": l2}

    def preview(self):
        return torch.zeros(1, 3, 8, 8), 1

    def final(self):
        from mmfs.checkpoint import module_state

        return module_state(self.nets["gen_ema"]), {}


def det_config(photos):
    return make_config("det", PRESETS["tiny"], options={"photos": photos}, steps=3, batch_size=4, log_every=1,
                       preview_every=0, checkpoint_every=0, seed=3)


if __name__ == "__main__":
    train(det_config("photos"), outdir="det2", progress=False)
    from mmfs_cli.app import app

    app(sys.argv[1:], standalone_mode=False)  # the finetune command, exactly as `-m mmfs_cli.app` runs it
"""


def test_two_processes_train_like_one_and_rank_zero_writes(tmp_path):
    """One torchrun (2 ranks, gloo): the deterministic toy stage, then `mmfs finetune` with accumulation and R1."""
    import runpy

    from mmfs.nn import Discriminator, Generator, Stylizer

    tiny = PRESETS["tiny"]
    torch.manual_seed(0)
    init = save_checkpoint(tmp_path / "init.safetensors", module_state(Stylizer(tiny)), kind="stylizer", config=tiny)
    prior = save_prior(tmp_path / "prior.safetensors", Generator(tiny), Discriminator(tiny))
    write_images(tmp_path / "photos", 6, rng=0)
    write_images(tmp_path / "art", 4, rng=1)
    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT)
    result = torchrun(
        [str(script), "finetune", "--photos", "photos", "--art", "art", "--init", str(init), "--disc", str(prior),
         "--tiny", "--steps", "2", "--batch-size", "4", "--accum", "2", "--r1-every", "2", "--log-every", "1",
         "--preview-every", "2", "--workers", "0", "--outdir", "runs", "--quiet"],
        tmp_path,
    )  # fmt: skip

    # 1. the toy stage: 2 ranks x 2 images == 1 rank x 4 images (this process), up to float rounding
    det_config = runpy.run_path(str(script))["det_config"]
    one = train(det_config(str(tmp_path / "photos")), outdir=tmp_path / "det1", progress=False)
    a = load_checkpoint(one / "final.safetensors").tensors
    b = load_checkpoint(tmp_path / "det2/00000-det/final.safetensors").tensors
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    step3 = load_checkpoint(one / "checkpoints/step-000003.safetensors").tensors
    assert not torch.equal(step3["gen.0.weight"], step3["gen_ema.0.weight"])  # it did train

    # 2. finetune: one run dir (rank 0 made it, rank 1 was told), one checkpoint, every rank's RNG in it
    runs = list((tmp_path / "runs").iterdir())
    assert [r.name for r in runs] == ["00000-finetune"]
    run = runs[0]
    assert result.stdout.strip().splitlines() == [str(Path("runs") / run.name / "final.safetensors")]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-000002.safetensors",
        "step-000002.state.safetensors",
    ]
    state = load_checkpoint(run / "checkpoints/step-000002.state.safetensors", kind="train_state")
    assert state.meta["world_size"] == "2"
    assert {"rng.0.torch", "rng.1.torch"} <= state.tensors.keys()
    assert not torch.equal(state.tensors["rng.0.torch"], state.tensors["rng.1.torch"])  # each rank its own stream
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2] and "D_reg/r1" in lines[1] and "D_reg/r1" not in lines[0]
    assert (run / "final.safetensors").is_file() and (run / "previews/step-000002.png").is_file()

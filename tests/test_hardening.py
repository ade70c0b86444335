"""Crashes and hostile environments: SIGKILL while a checkpoint is written, a full disk, wrong or broken checkpoints.

The kill and disk-full cases run real processes: the killed writer is a training run in a child process,
and "disk full" is a real failed write, produced by a file-size limit (RLIMIT_FSIZE gives EFBIG; a full
disk gives ENOSPC through the very same code path).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mmfs.checkpoint import load_checkpoint, module_state, save_checkpoint
from mmfs.config import PRESETS
from mmfs.data.images import save_image
from mmfs.nn import Discriminator, Generator, Stylizer
from mmfs_cli.app import app
from support.tiny import TINY, write_images

TESTS = Path(__file__).parent
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and RLIMIT_FSIZE")


def child_env() -> dict[str, str]:
    root = str(TESTS.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, str(TESTS), os.environ.get("PYTHONPATH", "")]),
            "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1"}  # fmt: skip


def limit_file_size(max_bytes: int):
    """preexec_fn: writes beyond `max_bytes` fail with EFBIG (SIGXFSZ ignored, as a full disk fails them)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


# ---- SIGKILL while a checkpoint is being written ----------------------------------------------------------

KILLED_TRAINER = """
import os, sys, time
from pathlib import Path
import test_train_loop as toy

photos, out, marker = map(Path, sys.argv[1:4])
fsync = os.fsync

def fsync_then_hang(fd):
    # The writer of step 4 has written its temporary file and is about to rename it: hang there.
    name = os.readlink(f"/proc/self/fd/{fd}")
    if "step-000004" in name:
        marker.write_text(name)
        time.sleep(600)
    fsync(fd)

os.fsync = fsync_then_hang
toy.train(toy.toy_config(photos, steps=6), outdir=out, progress=False)
"""


def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one_and_resume_is_exact(tmp_path):
    import test_train_loop as toy

    photos = write_images(tmp_path / "photos", 5, (12, 10))
    script, marker = tmp_path / "killed.py", tmp_path / "writing"
    script.write_text(KILLED_TRAINER)
    child = subprocess.Popen([sys.executable, str(script), str(photos), str(tmp_path / "runs"), str(marker)],
                             env=child_env(), stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), child.stderr.read() if child.poll() is not None else "the child never reached step 4"
    child.send_signal(signal.SIGKILL)
    child.wait()

    (run,) = (tmp_path / "runs").iterdir()
    folder = run / "checkpoints"
    assert json.loads((run / "latest.json").read_text())["step"] == 2
    assert Path(marker.read_text()).parent == folder and Path(marker.read_text()).exists()  # the orphaned temp
    assert not (folder / "step-000004.safetensors").exists()
    # The previous checkpoint is whole, and the run resumes from it to the same weights as an unbroken run.
    load_checkpoint(folder / "step-000002.safetensors", kind="training")
    toy.train(resume=run, steps=4, progress=False)
    assert not list(folder.glob(".*.partial*"))  # resuming cleared the orphan
    straight = toy.train(toy.toy_config(photos, steps=4), outdir=tmp_path / "straight", progress=False)
    a, b = toy.weights(straight, 4), toy.weights(run, 4)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- disk full ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(path, module_state(Stylizer(TINY)), kind="stylizer", config=TINY)


def test_disk_full_stops_a_stylize_batch_with_one_line_and_no_partial_files(tmp_path, tiny_ckpt):
    rng = np.random.default_rng(1)
    for i in range(3):  # FFHQ-aligned stand-ins: no detection needed
        save_image(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), tmp_path / "in" / f"{i}.png")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mmfs_cli.app", "stylize", str(tmp_path / "in"), "-c", str(tiny_ckpt),
           "--seed", "1", "--aligned", "-o", str(out), "--device", "cpu", "--quiet"]  # fmt: skip
    # Each stylized 32 px PNG of these noisy faces is a few kB: a 1 kB limit fails the first write.
    done = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=300,
                          preexec_fn=limit_file_size(1024))  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr  # no traceback, stopped at once
    assert "cannot write output (File too large); free some space or choose another output folder" in lines[0]
    assert not [p for p in out.rglob("*") if p.is_file()]  # nothing half-written


SAVE_TWICE = """
import sys, torch
from mmfs.checkpoint import save_checkpoint
from mmfs.errors import MMFSError
path = sys.argv[1]
save_checkpoint(path, {"w": torch.ones(8)}, kind="stylizer")  # small: fits under the limit
try:
    save_checkpoint(path, {"w": torch.zeros(1 << 20)}, kind="stylizer")  # 4 MB: does not
except MMFSError as exc:
    print(type(exc).__name__, exc)
"""


def test_disk_full_while_saving_a_checkpoint_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.safetensors"
    done = subprocess.run([sys.executable, "-c", SAVE_TWICE, str(path)], env=child_env(), capture_output=True,
                          text=True, timeout=120, preexec_fn=limit_file_size(64 * 1024))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"OutputError {path}: cannot write checkpoint (File too large); free some space")
    assert torch.equal(load_checkpoint(path).tensors["w"], torch.ones(8))  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


# ---- wrong and broken checkpoints --------------------------------------------------------------------------


def one_line_error(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_a_truncated_checkpoint_is_one_line(tmp_path, tiny_ckpt):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(tiny_ckpt.read_bytes()[: tiny_ckpt.stat().st_size // 2])
    save_image(np.zeros((32, 32, 3), np.uint8), tmp_path / "face.png")
    line = one_line_error(["stylize", str(tmp_path / "face.png"), "-c", str(broken), "--seed", "1", "--aligned"])
    assert str(broken) in line and "truncated" in line


def test_a_checkpoint_of_the_wrong_kind_or_preset_is_one_line(tmp_path, tiny_ckpt):
    save_image(np.zeros((32, 32, 3), np.uint8), tmp_path / "face.png")
    face = str(tmp_path / "face.png")
    # A StyleGAN2 prior where a Stylizer is expected.
    tiny64 = PRESETS["tiny64"]
    prior_state = {**module_state(Generator(tiny64), "g."), **module_state(Discriminator(tiny64), "d.")}
    prior = save_checkpoint(tmp_path / "prior64.safetensors", prior_state, kind="prior", config=tiny64)
    line = one_line_error(["stylize", face, "-c", str(prior), "--seed", "1", "--aligned"])
    assert "prior" in line and "stylizer" in line
    # A tiny64 prior for a Stage I run told to build the tiny preset: the first mismatching keys are named.
    line = one_line_error(["pretrain-encoder", "--prior", str(prior), "--preset", "tiny", "--steps", "1",
                           "-o", str(tmp_path / "runs")])  # fmt: skip
    assert str(prior) in line and "z, w, mapping layers (64, 64, 4) vs (32, 32, 2)" in line
    # A stylizer file whose stored config does not match its tensors (tiny weights labelled tiny64).
    mislabelled = save_checkpoint(tmp_path / "mislabelled.safetensors", load_checkpoint(tiny_ckpt).tensors,
                                  kind="stylizer", config=tiny64)  # fmt: skip
    line = one_line_error(["stylize", face, "-c", str(mislabelled), "--seed", "1", "--aligned"])
    assert str(mislabelled) in line and ("shape" in line or "missing" in line)

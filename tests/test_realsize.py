"""The real-size tier: the documented commands, run on stand-ins of every public weight file at full size.

`mmfs.testing.doc_commands` says which lines run and what changes in them (file names and one-step
budgets only). docs/cli.md's quick start runs first and whole. Not part of `make test`: run it with
`make test-realsize` (its cost is in docs/benchmarks.md); only the check of the docs themselves runs
in `make test`, so a doc line naming a file the tier has no stand-in for fails there at once. The stand-ins are written once into
`.cache/standins` (or `$MMFS_STANDINS`).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mmfs.testing.doc_commands import (
    QUICK_START,
    REPO,
    STANDIN_FOR,
    doc_commands,
    folder_for,
    runnable,
    tier_commands,
    user_files,
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return user_files(tmp_path_factory.mktemp("realsize"))


@pytest.fixture(scope="module")
def standins():
    from mmfs.testing.standins import ensure_standins

    folder = Path(os.environ.get("MMFS_STANDINS", REPO / ".cache" / "standins"))
    ensure_standins(folder)
    return folder


def test_the_docs_name_only_files_the_tier_has_and_cover_every_stage_and_weight_flag():
    quick = " ".join(doc_commands(*QUICK_START))
    for step in ("convert", "pretrain-encoder", "finetune", "train-mapper", "stylize", "adapt", "evaluate"):
        assert f"mmfs {step} " in quick, step
    commands = " ".join(c for _, c in tier_commands())
    for flag in ("--clip-weights", "--dino-weights", "--inception-weights", "--arcface-weights", "--lpips-weights"):
        assert flag in commands, flag
    for pattern in ("stylize .*--text", "stylize .*--ref", "adapt .*--text", "adapt .*--ref"):
        assert any(re.search(pattern, c) for _, c in tier_commands()), pattern
    for doc, command in tier_commands():
        for name in re.findall(r"[\w.-]+\.(?:pt|pth|bin|onnx)\b", command):
            assert name in STANDIN_FOR, f"{doc}: {command}: no stand-in for {name}"


@pytest.mark.realsize
def test_every_documented_command_runs_on_real_size_files(workdir, standins):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
        "TORCH_HOME": str(workdir / "torch"),
        "MMFS_CACHE": str(workdir / "cache"),
    }
    done: set[tuple[str, ...]] = set()
    for doc, command in tier_commands():
        args = runnable(command, standins)
        if tuple(sorted(args)) in done:  # two docs show the same command (options in another order)
            continue
        done.add(tuple(sorted(args)))
        result = subprocess.run(args, cwd=folder_for(workdir, doc), env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{doc}: {command}\nran: {shlex.join(args)}\n{result.stderr[-3000:]}"


@pytest.mark.realsize
def test_every_official_release_converts(workdir, standins):
    from mmfs.checkpoint import load_checkpoint
    from mmfs.config import PRESETS

    mmfs = str(Path(sys.executable).with_name("mmfs"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name, mapper in (
        ("phase2_pretrain_90000.pth", False),
        ("phase3_pretrain_10000.pth", True),
        ("example_ref01.pth", True),
    ):
        out = workdir / "converted" / name.replace(".pth", ".safetensors")
        result = subprocess.run(
            [mmfs, "convert", str(standins / name), str(out), "--overwrite"], env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        ckpt = load_checkpoint(out, kind="training")
        assert ckpt.config == PRESETS["ffhq512"]
        assert any(k.startswith("stylizer_ema.clip_mapper.") for k in ckpt.tensors) == mapper

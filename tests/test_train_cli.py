"""`mmfs pretrain-encoder` and `mmfs finetune` end to end on the tiny preset, through the Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mmfs.checkpoint import load_checkpoint, module_state, save_checkpoint
from mmfs_cli.app import app
from support.tiny import TINY, random_prior, save_prior, write_images

runner = CliRunner()


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    return save_prior(tmp_path_factory.mktemp("cli") / "prior.safetensors", *random_prior(seed=2))


def images(folder: Path, n: int, seed: int = 0) -> Path:
    """`folder` with `n` JPEGs in a subfolder (the commands look into subfolders)."""
    write_images(folder / "sub", n, (48, 40), seed, suffix=".jpg")
    return folder


def invoke(args: list[str]):
    result = runner.invoke(app, args)
    return result


def test_stage1_then_stage2_then_resume(prior, tmp_path):
    out = tmp_path / "runs"
    r1 = invoke(
        [
            "pretrain-encoder",
            "--prior",
            str(prior),
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--preview-every",
            "2",
            "--log-every",
            "1",
            "-o",
            str(out),
            "--quiet",
        ]
    )
    assert r1.exit_code == 0, r1.output
    stage1 = out / "00000-pretrain-encoder"
    assert r1.stdout.strip() == str(stage1 / "final.safetensors")
    config = json.loads((stage1 / "config.json").read_text())
    assert config["model"] == json.loads(TINY.to_json())  # the preset came from the prior's metadata
    assert config["loop"]["lr"] == 2e-4 and config["loop"]["betas"] == [0.1, 0.999]
    from mmfs.inference.models import load_stylizer  # what `mmfs stylize` loads

    stylizer = load_stylizer(stage1 / "final.safetensors")
    assert stylizer(torch.zeros(1, 3, 32, 32), stylizer.ws_from_z(torch.zeros(1, 32))).shape == (1, 3, 32, 32)

    photos, art = images(tmp_path / "photos", 3), images(tmp_path / "art", 3, seed=1)
    (photos / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # sorted last: index 3
    from mmfs.data.datasets import draw_indices

    # a seed whose first 2 steps x 2 images draw the broken photo
    seed = next(s for s in range(100) if any(draw_indices(s, n, (4, 3))[0] == 3 for n in range(4)))
    args = [
        "finetune",
        "--photos",
        str(photos),
        "--art",
        str(art),
        "--init",
        str(stage1 / "final.safetensors"),
        "--tiny",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--preview-every",
        "0",
        "--log-every",
        "1",
        "--seed",
        str(seed),
        "-o",
        str(out),
        "--quiet",
    ]
    r2 = invoke(args)
    assert r2.exit_code == 0, r2.output
    stage2 = out / "00001-finetune"
    lines = [json.loads(x) for x in (stage2 / "log.jsonl").read_text().splitlines()]
    # the broken file is drawn by the seeded sampler, skipped, counted and reported once
    assert lines[-1]["data/skipped"] == 1
    assert r2.stderr.count("skipped unreadable image") == 1 and "broken.png" in r2.stderr
    r3 = invoke(["finetune", "--resume", str(stage2), "--steps", "3", "--quiet"])
    assert r3.exit_code == 0, r3.output
    assert json.loads((stage2 / "latest.json").read_text())["step"] == 3
    assert [x["step"] for x in (json.loads(x) for x in (stage2 / "log.jsonl").read_text().splitlines())] == [1, 2, 3]
    final = load_checkpoint(stage2 / "final.safetensors", kind="stylizer")
    assert final.meta["stage"] == "finetune" and final.meta["step"] == "3"


def test_dry_run_prints_the_reference_settings(prior, tmp_path):
    result = invoke(["finetune", "--photos", str(tmp_path), "--art", str(tmp_path), "--init", str(prior), "--dry-run"])
    assert result.exit_code == 0, result.output
    cfg = json.loads(result.stdout)
    assert cfg["command"] == "finetune"
    assert (cfg["loop"]["lr"], cfg["loop"]["betas"], cfg["loop"]["ema_decay"], cfg["loop"]["batch_size"]) == (
        1e-3,
        [0.1, 0.999],
        0.999,
        8,
    )
    opts = cfg["options"]
    assert (opts["adv"], opts["structure"], opts["d_adv"], opts["r1_gamma"], opts["r1_every"], opts["mixing_prob"]) == (
        1.0,
        0.5,
        0.5,
        10.0,
        16,
        0.5,
    )
    assert opts["dino"] == "dino_vitb8"
    enc = json.loads(invoke(["pretrain-encoder", "--prior", str(prior), "--preset", "tiny64", "--dry-run"]).stdout)
    assert enc["model"]["resolution"] == 64 and enc["options"] == {
        "prior": str(prior),
        "l1": 1.0,
        "feat": 4.0,
        "first_layers_from_prior": False,
    }
    # fp32 without TF32 is the default, as the reference; bf16 and TF32 are asked for.
    assert (cfg["loop"]["dtype"], cfg["loop"]["tf32"]) == (enc["loop"]["dtype"], enc["loop"]["tf32"]) == ("fp32", False)
    fast = json.loads(
        invoke(["pretrain-encoder", "--prior", str(prior), "--dtype", "bf16", "--tf32", "--dry-run"]).stdout
    )
    assert (fast["loop"]["dtype"], fast["loop"]["tf32"]) == ("bf16", True)
    result = invoke(["pretrain-encoder", "--prior", str(prior), "--dtype", "fp16", "--dry-run"])
    assert result.exit_code == 2 and "--dtype" in result.output and "'fp16' is not one of" in result.output


def test_user_errors_are_one_line(prior, tmp_path):
    from mmfs.nn import Stylizer

    (tmp_path / "empty").mkdir()
    photos = images(tmp_path / "photos", 1)
    init = save_checkpoint(tmp_path / "init.safetensors", module_state(Stylizer(TINY)), kind="stylizer", config=TINY)
    cases = [
        (
            [
                "finetune",
                "--photos",
                str(photos),
                "--art",
                str(photos),
                "--init",
                str(init),
                "--disc",
                str(prior),
                "--dino-weights",
                str(tmp_path / "dino.pth"),
                "--steps",
                "1",
                "-o",
                str(tmp_path / "r"),
            ],
            "dino.pth; pass an existing file with --dino-weights PATH",
        ),
        (
            [
                "finetune",
                "--photos",
                str(tmp_path / "empty"),
                "--art",
                str(tmp_path / "empty"),
                "--init",
                str(prior),
                "--tiny",
                "--steps",
                "1",
                "-o",
                str(tmp_path / "r"),
            ],
            "no images found",
        ),
        (["finetune", "--resume", str(tmp_path)], "not a training run directory"),
        (["pretrain-encoder", "--prior", str(tmp_path / "missing.safetensors")], "no such checkpoint file"),
        (["pretrain-encoder", "--prior", str(prior), "--preset", "huge"], "unknown preset 'huge'"),
        (
            [
                "pretrain-encoder",
                "--prior",
                str(prior),
                "--preset",
                "tiny64",
                "--steps",
                "1",
                "-o",
                str(tmp_path / "r"),
            ],
            "cannot make a 64 px Stylizer",
        ),
    ]
    for args, message in cases:
        result = invoke(args)
        assert result.exit_code == 1, (args, result.output)
        error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(error) == 1 and message in error[0], (args, result.stderr)
    # A required option left out is a usage error, as for every command (`check_required`).
    missing = invoke(["pretrain-encoder", "--steps", "1"])
    assert missing.exit_code == 2 and "`mmfs pretrain-encoder` needs --prior (or --resume RUN_DIR)" in missing.output
    # A loop setting that does not fit the others is a usage error naming the flag, before anything loads.
    uneven = invoke(["pretrain-encoder", "--prior", str(prior), "--batch-size", "3", "--accum", "2", "--dry-run"])
    assert uneven.exit_code == 2 and "--accum" in uneven.output and "not divisible" in uneven.output, uneven.output

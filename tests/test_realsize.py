"""The real-size tier: the documented commands, run on stand-ins of every public weight file at full size.

`tests/support/doc_commands.py` says which lines run and what changes in them (file names and one-step
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
import zipfile
from pathlib import Path

import pytest

from support.doc_commands import (
    QUICK_START,
    REPO,
    STANDIN_FOR,
    doc_commands,
    folder_for,
    runnable,
    tier_commands,
    tier_env,
    user_files,
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return user_files(tmp_path_factory.mktemp("realsize"))


@pytest.fixture(scope="module")
def mmfs_home(tmp_path_factory):
    """One model cache for the tier: the first-line test fills it over HTTP, the documented lines reuse it."""
    return tmp_path_factory.mktemp("mmfs-home")


@pytest.fixture(scope="module")
def standins():
    from support.standins import ensure_standins

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
    from mmfs.catalogue import MODELS
    from support.standins import STANDINS

    for doc, command in tier_commands():
        for name in re.findall(r"[\w.-]+\.(?:pt|pth|bin|onnx)\b", command):
            assert name in STANDIN_FOR, f"{doc}: {command}: no stand-in for {name}"
        fetches = not command.startswith("mmfs models remove")  # removing needs no file
        for word in shlex.split(command) if fetches else ():  # a published name: the mirror must hold its file
            assert word not in MODELS or MODELS[word].filename in STANDINS, f"{doc}: {command}: no stand-in for {word}"
    assert any("-c pop-art" in c for _, c in tier_commands()) and any(
        c.startswith("mmfs models ") for _, c in tier_commands()
    )


FIRST_LINE = 'mmfs stylize face.jpg --text "pop art"'


@pytest.mark.realsize
def test_the_readme_first_line_fetches_the_published_models_through_a_mirror_once(workdir, standins, mmfs_home):
    """README's first example as written: the published `mmfs` and its CLIP come from a loopback mirror, are
    checked and converted, and the photo is stylized; a second run downloads nothing; offline with an empty
    cache it is one line naming the model and `mmfs models add`, exit 1."""
    from support.model_server import ModelServer

    assert FIRST_LINE in (REPO / "README.md").read_text()
    args = [str(Path(sys.executable).with_name("mmfs")), *shlex.split(FIRST_LINE)[1:]]
    folder = workdir / "first-line"
    folder.mkdir()
    (folder / "face.jpg").write_bytes((workdir / "face.jpg").read_bytes())
    base = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "MMFS_OFFLINE": "1"}
    with ModelServer(standins) as server:
        env = {**base, "MMFS_HOME": str(mmfs_home), "MMFS_MODEL_MIRROR": server.url}
        first = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True)
        assert first.returncode == 0, first.stderr[-3000:]
        assert (folder / "stylized" / "face_face0_pop-art.png").is_file()
        assert server.gets("phase3_pretrain_10000.pth") == [""] and server.gets("open_clip_pytorch_model.bin") == [""]
        assert not list((mmfs_home / "downloads").iterdir())  # the originals are deleted once converted
        second = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True)
        assert second.returncode == 0, second.stderr[-3000:]
        assert len(server.requests) == 2  # nothing downloaded the second time
    offline = subprocess.run(args, cwd=folder, env={**base, "MMFS_HOME": str(workdir / "empty-home")},
                             capture_output=True, text=True)  # fmt: skip
    assert offline.returncode == 1
    (line,) = offline.stderr.strip().splitlines()
    assert "model 'mmfs'" in line and line.endswith("mmfs models add mmfs phase3_pretrain_10000.pth")


@pytest.mark.realsize
def test_every_documented_command_runs_on_real_size_files(workdir, standins, mmfs_home):
    env = tier_env(workdir, standins, mmfs_home)
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


@pytest.mark.realsize
def test_standins_have_the_published_layouts(standins):
    """Spot checks of each stand-in against the published file's container, keys and shapes."""
    import onnx
    import torch

    def shapes(state):
        return {k: tuple(v.shape) for k, v in state.items()}

    sg2 = torch.load(standins / "stylegan2-ffhq-config-f.pt", weights_only=True)
    assert sorted(sg2) == ["d", "g", "g_ema", "latent_avg"] and sg2["latent_avg"].shape == (512,)
    g = shapes(sg2["g_ema"])
    assert g["noises.noise_16"] == (1, 1, 1024, 1024) and g["convs.15.conv.weight"] == (1, 32, 32, 3, 3)
    assert g["to_rgbs.7.conv.weight"] == (1, 3, 32, 1, 1) and "style.8.weight" in g and "style.9.weight" not in g
    assert g["convs.0.conv.blur.kernel"] == (4, 4)  # rosinality persists its blur kernels
    d = shapes(sg2["d"])
    assert d["convs.0.0.weight"] == (32, 3, 1, 1) and d["convs.8.conv2.1.weight"] == (512, 512, 3, 3)
    assert d["final_linear.0.weight"] == (512, 8192)

    release = torch.load(standins / "phase3_pretrain_10000.pth", weights_only=True)
    assert {"G_model", "G_ema_model", "D_model", "optimizer_0", "optimizer_1", "total_iters"} <= set(release)
    assert release["G_ema_model"]["clip_mapper.position_embedding"].shape == (10, 512)

    clip = shapes(torch.load(standins / "open_clip_pytorch_model.bin", weights_only=True))
    assert clip["visual.positional_embedding"] == (50, 768) and clip["visual.proj"] == (768, 512)
    assert clip["token_embedding.weight"] == (49408, 512) and clip["positional_embedding"] == (77, 512)
    archive = torch.jit.load(str(standins / "ViT-B-32.pt"))  # our own file: running its TorchScript is fine here
    jit = shapes(archive.state_dict())
    assert set(jit) == set(clip) | {"input_resolution", "context_length", "vocab_size"}
    assert all(jit[k] == s for k, s in clip.items())

    hub = shapes(torch.load(standins / "dino_vitbase8_pretrain.pth", weights_only=True))
    assert hub["pos_embed"] == (1, 785, 768) and hub["patch_embed.proj.weight"] == (768, 3, 8, 8)
    assert "blocks.11.attn.qkv.weight" in hub and not any(k.startswith("head") for k in hub)
    from safetensors.torch import load_file

    assert shapes(load_file(standins / "model.safetensors")) == hub

    model = onnx.load(str(standins / "w600k_r50.onnx"))
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("input.1", "683")
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim][1:] == [3, 112, 112]
    assert out.type.tensor_type.shape.dim[1].dim_value == 512

    alex = shapes(torch.load(standins / "alexnet-owt-7be5be79.pth", weights_only=True))
    assert alex["features.0.weight"] == (64, 3, 11, 11) and alex["classifier.6.weight"] == (1000, 4096)
    import lpips

    from mmfs.foreign import container

    shipped = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"  # the real file, in the package
    assert container(standins / "alex.pth") == container(shipped) == "torch"
    assert not zipfile.is_zipfile(standins / "alex.pth") and not zipfile.is_zipfile(shipped)
    real = torch.load(shipped, weights_only=True, map_location="cpu")
    lin = torch.load(standins / "alex.pth", weights_only=True)
    assert shapes(lin) == shapes(real) and {v.dtype for v in lin.values()} == {torch.float32}
    assert not zipfile.is_zipfile(standins / "alexnet-owt-7be5be79.pth")  # published 2017: legacy container
    fid = shapes(torch.load(standins / "weights-inception-2015-12-05-6726825d.pth", weights_only=True))
    assert fid["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3) and fid["fc.weight"] == (1008, 2048)

"""`mmfs demo --quick` end to end: every stage's checkpoint, the stylized outputs, the contact sheet, the summary."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mmfs.checkpoint import load_checkpoint
from mmfs.config import PRESETS
from mmfs.config.demo import DemoRequest
from mmfs.demo.run import FULL, QUICK, SUMMARY, prepare_outdir, run_demo
from mmfs.demo.synthetic import STYLES
from mmfs.errors import MMFSError
from mmfs_cli.app import app

pytestmark = pytest.mark.slow  # about 20 s: the whole pipeline, once
STRUCTURE_FLOOR = 0.4  # of 8 held-out faces identified as their own source (chance 1/8)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("demo") / "out"
    messages: list[str] = []
    threads = torch.get_num_threads()
    summary = run_demo(DemoRequest(outdir, quick=True, threads=1), device="cpu", progress=False, echo=messages.append)
    return {"outdir": outdir, "summary": summary, "messages": messages, "threads": (threads, torch.get_num_threads())}


def test_every_stage_checkpoint_exists_and_loads(demo):
    from mmfs.demo.clip import SHIPPED_CLIP
    from mmfs.demo.prior import SHIPPED_PRIOR
    from mmfs.inference.models import load_stylizer

    outdir, checkpoints = demo["outdir"], demo["summary"]["checkpoints"]
    assert set(checkpoints) == {"encoder", "finetune", "mapper", "adapted"}
    assert sorted(checkpoints["adapted"]) == sorted(STYLES)  # one adapted model per reference style
    prior, clip = demo["summary"]["prior"], demo["summary"]["clip"]
    assert prior["shipped"] is True and prior["path"] == str(SHIPPED_PRIOR)
    assert clip["shipped"] is True and clip["path"] == str(SHIPPED_CLIP)
    assert clip["recipe"] == asdict(FULL.clip) | {"wall_seconds": clip["recipe"]["wall_seconds"]}
    tiny = PRESETS[QUICK.preset]
    files = {k: checkpoints[k] for k in ("encoder", "finetune", "mapper")}
    files |= {f"adapted-{style}": path for style, path in checkpoints["adapted"].items()}
    for stage, path in files.items():
        model = load_stylizer(outdir / path)
        assert model.cfg == tiny, stage
        assert (getattr(model, "clip_mapper", None) is not None) == (stage not in ("encoder", "finetune")), stage
    # the chain: Stage I read the shipped prior, Stage II the Stage I output, the adapted file the mapper's
    encoder = load_checkpoint(outdir / checkpoints["encoder"])
    assert encoder.meta["prior"] == str(SHIPPED_PRIOR.resolve())
    finetune = load_checkpoint(outdir / checkpoints["finetune"])
    assert finetune.meta["init"] == str((outdir / checkpoints["encoder"]).resolve())
    for style, path in checkpoints["adapted"].items():
        adapted = load_checkpoint(outdir / path, kind="adapted")
        assert (outdir / path).parent.joinpath(adapted.meta["base"]).resolve() == (
            outdir / checkpoints["mapper"]
        ).resolve()
        assert Path(adapted.meta["reference"]).parent.name == style  # adapted to that style's reference
        assert adapted.tensors  # some decoder weights changed


def test_the_shipped_prior_is_an_fp16_tiny64_prior_with_its_recipe():
    from mmfs.demo.prior import shipped_prior
    from mmfs.nn import Generator
    from mmfs.train.weights import load_prior

    prior = load_prior(shipped_prior())
    assert prior.config == PRESETS["tiny64"] and {v.dtype for v in prior.tensors.values()} == {torch.float16}
    Generator(prior.config).load_state_dict(prior.subset("g."))  # strict
    recipe = json.loads(prior.meta["recipe"])
    budget = dataclasses.asdict(FULL)
    for key in ("photos", "steps", "batch_size", "lr", "r1_gamma"):
        assert recipe[key] == budget[f"prior_{key}" if key != "r1_gamma" else key], key
    assert recipe["wall_seconds"] > 0 and int(prior.meta["step"]) == recipe["steps"]


def test_the_contact_sheet_has_one_row_per_style_kind_and_one_column_per_input(demo):
    path = demo["outdir"] / demo["summary"]["contact_sheet"]
    b = QUICK
    rows = 2 + 1 + b.random_styles + 4 + 4  # prior, Stage I, inputs, random styles, mapper and adapted per reference
    columns = b.n_heldout + 1  # held-out photos and the astronaut
    pad, label_w, header_h = 4, int(b.cell * 1.6), max(30, b.cell * 3 // 8)
    with Image.open(path) as img:
        assert img.mode == "RGB"
        assert img.size == (label_w + columns * (b.cell + pad) + pad, header_h + rows * (b.cell + pad) + pad)
        sheet = np.asarray(img)
    # every cell holds a picture (no "n/a" cells): its pixels vary
    for r in range(rows):
        for c in range(columns):
            y, x = header_h + pad + r * (b.cell + pad), label_w + pad + c * (b.cell + pad)
            assert sheet[y : y + b.cell, x : x + b.cell].std() > 1.0, (r, c)


def test_the_astronaut_is_stylized_in_place(demo):
    from skimage import data as skdata

    original = skdata.astronaut()
    outputs = sorted((demo["outdir"] / "stylized" / "astronaut").glob("astronaut_*.png"))
    assert len(outputs) == QUICK.random_styles + 4  # random and reference styles
    out = np.asarray(Image.open(outputs[0]).convert("RGB"))
    assert out.shape == original.shape
    changed = np.any(out != original, axis=2)
    assert changed.any()
    # only inside the face's FFHQ crop square (found again here); elsewhere the photo keeps its own bytes
    from mmfs.faces import build_detector, ffhq_quad

    (face,) = build_detector("dlib").detect(original)
    quad = ffhq_quad(face.landmarks)
    ys, xs = np.nonzero(changed)
    (x0, y0), (x1, y1) = np.floor(quad.min(0)) - 1, np.ceil(quad.max(0)) + 1  # bilinear edges touch one more pixel
    assert x0 <= xs.min() and xs.max() <= x1 and y0 <= ys.min() and ys.max() <= y1
    assert changed.mean() < 0.5


def test_the_summary_has_the_metrics_flagged_not_comparable_and_the_timings(demo):
    summary = json.loads((demo["outdir"] / SUMMARY).read_text())
    assert summary == json.loads(json.dumps(demo["summary"]))
    assert summary["quick"] is True and summary["metrics_comparable"] is False
    assert {"fid", "lpips_diversity"} <= set(summary["metrics"]) and len(summary["metrics"]) == 3
    assert all(np.isfinite(v) for v in summary["metrics"].values())
    report = json.loads((demo["outdir"] / summary["evaluation"]).read_text())
    assert report["metrics"] == summary["metrics"] and report["n"] == QUICK.eval_n and report["comparable"] is False
    steps = ("data", "prior", "clip", "encoder", "finetune", "mapper", "adapt", "stylize", "measure", "evaluate",
             "sheet")  # fmt: skip
    assert set(summary["seconds"]) == {*steps, "total"}
    assert [m.split("]")[0] for m in demo["messages"] if m.startswith("[")] == [f"[{i}/11" for i in range(1, 12)]
    assert summary["warnings"] == [] and summary["torch_threads"] == 1
    before, after = demo["threads"]
    assert before == after  # the thread count is restored


def test_structure_is_kept_above_a_floor_on_the_shipped_prior_after_a_short_fixed_seed_run(demo):
    structure = demo["summary"]["structure"]
    rows = QUICK.random_styles + 4 + 4  # random seeds, the mapper per reference, one adapted model per reference
    assert structure["sources"] == QUICK.n_measure and len(structure["per_style"]) == rows
    assert structure["chance"] == 1 / QUICK.n_measure
    # Unrelated faces score about the chance level (test_demo_measure.py); kept structure scores far above it.
    assert structure["mean"] >= STRUCTURE_FLOOR, structure["per_style"]


def test_an_existing_demo_folder_is_refused_unless_overwrite_which_keeps_other_files(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "x.txt").write_text("old run")
    (tmp_path / SUMMARY).write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(MMFSError, match="already holds demo outputs; pass --overwrite"):
        prepare_outdir(tmp_path, overwrite=False)
    assert (tmp_path / SUMMARY).exists()
    prepare_outdir(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    prepare_outdir(tmp_path / "new" / "folder", overwrite=False)  # a new folder is made
    assert (tmp_path / "new" / "folder").is_dir()


def test_cli_refuses_an_existing_demo_folder_in_one_line(demo):
    result = CliRunner().invoke(app, ["demo", "--quick", "--outdir", str(demo["outdir"]), "--device", "cpu"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert "pass --overwrite" in result.output


def test_train_prior_and_train_clip_train_both_from_scratch_with_the_budget_recipes_and_the_stages_use_them(
    tmp_path,
):
    request = DemoRequest(tmp_path, quick=True, train_prior=True, train_clip=True, threads=1)
    summary = run_demo(request, device="cpu", progress=False, echo=lambda _: None)
    from mmfs.train.weights import load_prior

    prior_path = tmp_path / "models" / "prior.safetensors"
    assert summary["prior"]["shipped"] is False and summary["prior"]["path"] == str(prior_path)
    assert len(list((tmp_path / "data" / "prior" / "photos").iterdir())) == QUICK.prior_photos
    # the demo's training photos are the first of the prior's photos (one random stream)
    first = sorted((tmp_path / "data" / "photos").iterdir())[0]
    assert (tmp_path / "data" / "prior" / "photos" / first.name).read_bytes() == first.read_bytes()
    prior = load_prior(prior_path)
    assert {v.dtype for v in prior.tensors.values()} == {torch.float16}
    recipe = json.loads(prior.meta["recipe"])
    assert (recipe["steps"], recipe["batch_size"], recipe["photos"]) == (4, 4, 16) and prior.meta["step"] == "4"
    encoder = load_checkpoint(tmp_path / summary["checkpoints"]["encoder"])
    assert encoder.meta["prior"] == str(prior_path.resolve())
    clip_path = tmp_path / "models" / "clip-tiny.safetensors"
    assert summary["clip"]["shipped"] is False and summary["clip"]["path"] == str(clip_path)
    assert summary["clip"]["recipe"]["steps"] == QUICK.clip.steps == 2
    mapper = load_checkpoint(tmp_path / summary["checkpoints"]["mapper"])
    assert (mapper.meta["clip_model"], mapper.meta["clip_weights"]) == ("tiny", str(clip_path))

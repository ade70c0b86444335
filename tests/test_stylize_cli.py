"""`mmfs stylize` end to end through the real CLI, with a tiny random checkpoint made here and real photos."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mmfs.checkpoint import module_state, save_checkpoint
from mmfs.config import PRESETS
from mmfs.nn.stylizer import Stylizer
from mmfs_cli.app import app
from support.tiny import save_noisy_stylizer

pytest.importorskip("dlib")
skimage_data = pytest.importorskip("skimage.data")

runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return str(save_noisy_stylizer(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """astronaut.png (one face), mirror.png (her mirror image) and two.png (both side by side)."""
    folder = tmp_path_factory.mktemp("photos")
    astro = skimage_data.astronaut()
    Image.fromarray(astro).save(folder / "astronaut.png")
    Image.fromarray(astro[:, ::-1]).save(folder / "mirror.png")
    Image.fromarray(np.concatenate([astro, astro[:, ::-1]], axis=1)).save(folder / "two.png")
    return folder


def _stylize(*args, stdin: str | None = None):
    return runner.invoke(app, ["stylize", *map(str, args)], input=stdin)


def _json(result) -> dict:
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def _read(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _leftovers(folder) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".partial" in p.name or p.name.startswith(".")]


def test_paste_back_changes_only_the_face(tmp_path, ckpt, photos):
    from mmfs.faces import build_detector, ffhq_quad

    out = tmp_path / "out"
    result = _stylize(photos / "astronaut.png", "-c", ckpt, "--seed", 5, "--paste-back", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    summary = _json(result)
    (entry,) = summary["inputs"]
    assert (entry["status"], entry["faces"], entry["error"]) == ("ok", 1, None)
    assert entry["outputs"] == [{"path": str(out / "astronaut_seed5.png"), "style": "seed5", "face": None}]
    assert summary["styles"] == [{"label": "seed5", "seed": 5, "source": "seed"}]
    before, after = _read(photos / "astronaut.png"), _read(out / "astronaut_seed5.png")
    assert after.shape == before.shape
    changed = np.abs(after.astype(int) - before).max(axis=2) > 0
    (face,) = build_detector("dlib").detect(before)
    quad = ffhq_quad(face.landmarks)
    x0, y0 = np.floor(quad.min(0)).astype(int) - 1
    x1, y1 = np.ceil(quad.max(0)).astype(int) + 2
    outside = changed.copy()
    outside[max(y0, 0) : y1, max(x0, 0) : x1] = False
    assert not outside.any()  # nothing changes away from the face's crop square
    bx0, by0, bx1, by1 = face.box.astype(int)
    assert changed[by0:by1, bx0:bx1].mean() > 0.9  # and the face itself is replaced
    assert _leftovers(tmp_path) == []


def test_two_faces_are_both_stylized(tmp_path, ckpt, photos):
    crops = _json(_stylize(photos / "two.png", "-c", ckpt, "--seed", 1, "-o", tmp_path / "c", "--size", 48, "--json"))
    (entry,) = crops["inputs"]
    assert entry["faces"] == 2 and len(entry["boxes"]) == 2
    names = sorted(o["path"].rsplit("/", 1)[1] for o in entry["outputs"])
    assert names == ["two_face0_seed1.png", "two_face1_seed1.png"]
    assert _read(tmp_path / "c" / "two_face0_seed1.png").shape == (48, 48, 3)

    pasted = _json(
        _stylize(photos / "two.png", "-c", ckpt, "--seed", 1, "--paste-back", "-o", tmp_path / "p", "--json")
    )
    assert pasted["inputs"][0]["faces"] == 2 and pasted["counts"]["outputs"] == 1
    before, after = _read(photos / "two.png"), _read(tmp_path / "p" / "two_seed1.png")
    for x0, y0, x1, y1 in pasted["inputs"][0]["boxes"]:
        region = np.abs(after.astype(int) - before)[int(y0) : int(y1), int(x0) : int(x1)].max(axis=2) > 0
        assert region.mean() > 0.9  # each face has its own paste


def test_same_seed_same_bytes_whatever_else_is_in_the_batch(tmp_path, ckpt, photos):
    def run(out, *inputs, batch=2):
        result = _stylize(*inputs, "-c", ckpt, "--seeds", "3,4", "-o", out, "--batch-size", batch, "--quiet")
        assert result.exit_code == 0, result.output
        return {p.name: p.read_bytes() for p in out.iterdir()}

    first = run(tmp_path / "a", photos / "astronaut.png")
    again = run(tmp_path / "b", photos / "astronaut.png")
    assert first == again and sorted(first) == ["astronaut_face0_seed3.png", "astronaut_face0_seed4.png"]
    crowded = run(tmp_path / "c", photos / "mirror.png", photos / "two.png", photos / "astronaut.png")
    assert {k: crowded[k] for k in first} == first  # other faces in its batches change nothing
    assert len(crowded) == 2 + 4 + 2
    # Another batch size rounds a few values differently inside batched kernels, never by more than 1/255.
    run(tmp_path / "d", photos / "astronaut.png", batch=1)
    for name in first:
        diff = np.abs(_read(tmp_path / "d" / name).astype(int) - _read(tmp_path / "a" / name))
        assert diff.max() <= 1


def test_bad_files_are_reported_and_the_rest_is_done(tmp_path, ckpt, photos):
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "astronaut.png").write_bytes((photos / "astronaut.png").read_bytes())
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.astronaut()).save(buffer, format="JPEG")
    (folder / "broken.jpg").write_bytes(buffer.getvalue()[:3000])  # truncated
    (folder / "notes.png").write_text("not an image at all\n")
    (folder / "readme.txt").write_text("ignored: folders yield image names only\n")
    ramp = np.linspace(0, 255, 128 * 128 * 3).reshape(128, 128, 3).astype(np.uint8)
    Image.fromarray(ramp).save(folder / "noface.png")
    out = tmp_path / "out"

    result = _stylize(folder, "-c", ckpt, "--seed", 2, "--paste-back", "-o", out, "--json")
    assert result.exit_code == 1
    by_name = {e["input"].rsplit("/", 1)[1]: e for e in _json(result)["inputs"]}
    assert sorted(by_name) == ["astronaut.png", "broken.jpg", "noface.png", "notes.png"]
    assert by_name["astronaut.png"]["status"] == "ok"
    assert "corrupt or truncated" in by_name["broken.jpg"]["error"]
    assert "not an image file" in by_name["notes.png"]["error"]
    assert "no face found" in by_name["noface.png"]["error"] and by_name["noface.png"]["status"] == "error"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    assert [str(p.relative_to(out)) for p in out.rglob("*.png")] == ["sub/astronaut_seed2.png"]  # tree kept
    # Without --json, the end of the output lists what failed, after the one-line summary.
    result = _stylize(folder, "-c", ckpt, "--seed", 2, "--paste-back", "-o", out, "--quiet", "--overwrite")
    tail = result.stderr.strip().splitlines()[-4:]
    assert result.exit_code == 1 and tail[0] == "failed (3):"
    assert sorted(line.strip().split(":")[0].rsplit("/", 1)[1] for line in tail[1:]) == [
        "broken.jpg", "noface.png", "notes.png"
    ]  # fmt: skip


def test_existing_outputs_are_skipped_unless_overwrite(tmp_path, ckpt, photos):
    out = tmp_path / "out"
    args = (photos / "astronaut.png", "-c", ckpt, "--seed", 8, "--paste-back", "-o", out, "--json")
    assert _stylize(*args).exit_code == 0
    target = out / "astronaut_seed8.png"
    target.write_bytes(b"user's own file")
    skipped = _json(_stylize(*args))
    assert skipped["inputs"][0]["status"] == "skipped" and skipped["inputs"][0]["skipped"] == [str(target)]
    assert target.read_bytes() == b"user's own file"
    assert _stylize(*args, "--overwrite").exit_code == 0
    assert _read(target).shape == (512, 512, 3)


def test_interrupted_runs_leave_only_whole_files_and_resume(tmp_path, ckpt, photos, monkeypatch):
    from mmfs.inference.pipeline import StylizePipeline

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b", "c"):
        (folder / f"{name}.png").write_bytes((photos / "astronaut.png").read_bytes())
    out = tmp_path / "out"
    real_run, calls = StylizePipeline._run, []

    def interrupted(self, x, styles):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run(self, x, styles)

    monkeypatch.setattr(StylizePipeline, "_run", interrupted)
    result = _stylize(folder, "-c", ckpt, "--seed", 1, "--paste-back", "-o", out, "--json")
    assert result.exit_code == 130
    summary = json.loads(result.stdout)
    assert summary["interrupted"] is True
    assert _leftovers(tmp_path) == []
    written = sorted(p.name for p in out.iterdir())
    assert written in ([], ["a_seed1.png"])
    for name in written:
        assert _read(out / name).shape == (512, 512, 3)  # whole, decodable files only

    # A save interrupted half-way through its bytes leaves nothing under the final name.
    import mmfs.inference.files as engine
    from mmfs.utils.files import atomic_path

    def half_save(array, path, *, quality=95):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"\x89PNG half")
            raise KeyboardInterrupt

    monkeypatch.setattr(StylizePipeline, "_run", real_run)
    monkeypatch.setattr(engine, "save_image", half_save)
    assert _stylize(folder, "-c", ckpt, "--seed", 1, "--paste-back", "-o", out).exit_code == 130
    assert _leftovers(tmp_path) == [] and sorted(p.name for p in out.iterdir()) == written

    monkeypatch.undo()
    resumed = _json(_stylize(folder, "-c", ckpt, "--seed", 1, "--paste-back", "-o", out, "--json"))
    assert [e["status"] for e in resumed["inputs"]] == ["skipped"] * len(written) + ["ok"] * (3 - len(written))
    assert sorted(p.name for p in out.iterdir()) == ["a_seed1.png", "b_seed1.png", "c_seed1.png"]


def test_saved_w_replays_the_seed_byte_for_byte(tmp_path, ckpt, photos):
    wfile = tmp_path / "styles.safetensors"
    seeded = _stylize(photos / "astronaut.png", "-c", ckpt, "--seeds", "6-7", "--save-w", wfile, "-o", tmp_path / "s")
    assert seeded.exit_code == 0, seeded.output
    replayed = _stylize(photos / "astronaut.png", "-c", ckpt, "--w", wfile, "-o", tmp_path / "w", "--json")
    assert [s["label"] for s in _json(replayed)["styles"]] == ["seed6", "seed7"]
    for name in ("astronaut_face0_seed6.png", "astronaut_face0_seed7.png"):
        assert (tmp_path / "s" / name).read_bytes() == (tmp_path / "w" / name).read_bytes()
    only = _stylize("-c", ckpt, "--seed", 9, "--save-w", tmp_path / "nine.safetensors")  # no inputs: styles only
    assert only.exit_code == 0 and (tmp_path / "nine.safetensors").is_file()


def test_aligned_inputs_skip_detection(tmp_path, ckpt, photos):
    from mmfs.faces import build_detector, detect_and_align

    (aligned,) = detect_and_align(skimage_data.astronaut(), build_detector("dlib"), 96)
    folder = tmp_path / "aligned"
    folder.mkdir()
    Image.fromarray(aligned.image).save(folder / "crop.png")
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(folder / "wide.png")
    result = _stylize("-", "-c", ckpt, "--seed", 3, "--aligned", "--size", 64, "--ext", "jpg", "--quality", 90,
                      "-o", tmp_path / "out", "--json", stdin=f"{folder / 'crop.png'}\n{folder / 'wide.png'}\n")  # fmt: skip
    assert result.exit_code == 1
    entries = _json(result)["inputs"]
    assert entries[0]["outputs"][0]["path"] == str(tmp_path / "out" / "crop_seed3.jpg")
    assert entries[0]["faces"] == 1 and entries[0]["boxes"] == []
    assert Image.open(tmp_path / "out" / "crop_seed3.jpg").format == "JPEG"
    assert _read(tmp_path / "out" / "crop_seed3.jpg").shape == (64, 64, 3)
    assert "expects square FFHQ-aligned crops, got 60x40" in entries[1]["error"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "choose exactly one style source"),
        (("--seed", "1", "--w", "x.safetensors"), "got --seed and --w"),
        (("--seeds", "1,a"), "'a' is not a seed"),
        (("--seed", "1", "--paste-back", "--aligned"), "cannot be used with --aligned"),
        (("--seed", "1", "--paste-back", "--size", "64"), "--paste-back keeps the photo"),
        (("--seed", "1", "--ext", "gif"), "gif"),
    ],
)
def test_usage_errors_exit_2(tmp_path, ckpt, photos, args, message):
    result = _stylize(photos / "astronaut.png", "-c", ckpt, "-o", tmp_path, *args)
    assert result.exit_code == 2
    assert message in re.sub(r"[\s│╭╮╰╯─]+", " ", result.stderr)  # Typer may draw a box around it
    assert list(tmp_path.iterdir()) == []


def test_fresh_noise_gives_other_bytes_and_is_refused_for_a_video(tmp_path, ckpt, photos):
    args = (photos / "astronaut.png", "-c", ckpt, "--seed", 3, "--aligned")
    assert _stylize(*args, "-o", tmp_path / "seeded").exit_code == 0
    assert _stylize(*args, "--noise", "fresh", "-o", tmp_path / "fresh").exit_code == 0
    assert _stylize(*args, "--noise", "fresh", "-o", tmp_path / "again").exit_code == 0
    seeded, fresh, again = (_read(tmp_path / d / "astronaut_seed3.png") for d in ("seeded", "fresh", "again"))
    assert not np.array_equal(seeded, fresh) and np.array_equal(fresh, again)
    result = _stylize(tmp_path / "clip.mp4", "-c", ckpt, "--seed", 3, "--noise", "fresh", "-o", tmp_path / "video")
    assert result.exit_code == 2 and "a video keeps one set of noise maps" in re.sub(r"[\s│╭╮╰╯─]+", " ", result.stderr)


def test_text_styles_need_a_mapper(tmp_path, ckpt, photos):
    result = _stylize(photos / "astronaut.png", "-c", ckpt, "--text", "pop art", "-o", tmp_path)
    assert result.exit_code == 1
    assert "need a checkpoint with a CLIP mapper" in result.stderr


def test_text_and_reference_styles_through_a_local_clip(tmp_path, photos):
    from safetensors.torch import save_file

    from mmfs.external.base import CLIP_MEAN
    from mmfs.external.tiny import tiny_clip, tiny_clip_config
    from mmfs.inference.latents import load_latents

    cfg = PRESETS["tiny"]
    torch.manual_seed(0)
    model = Stylizer(cfg, with_mapper=True).eval()
    ckpt = save_checkpoint(tmp_path / "mapper.safetensors", module_state(model), kind="stylizer", config=cfg)
    clip = tiny_clip(embed_dim=cfg.clip_dim)
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": tiny_clip_config(), "preprocess_cfg": {"mean": list(CLIP_MEAN)}})
    )
    save_file(clip.model.state_dict(), str(folder / "open_clip_model.safetensors"))
    common = (photos / "astronaut.png", "-c", ckpt, "--clip-model", f"local-dir:{folder}", "-o", tmp_path / "out")

    text = _stylize(*common, "--text", "Pop Art", "--text", "sketch", "--save-w", tmp_path / "t.safetensors", "--json")
    assert text.exit_code == 0, text.output
    assert [s["label"] for s in _json(text)["styles"]] == ["pop-art", "sketch"]
    assert (tmp_path / "out" / "astronaut_face0_pop-art.png").is_file()
    with torch.no_grad():
        expected = model.ws_from_clip(clip.encode_text(["Pop Art", "sketch"]))
    torch.testing.assert_close(load_latents(tmp_path / "t.safetensors").ws, expected, rtol=0, atol=1e-6)

    ref = _stylize(*common, "--ref", photos / "mirror.png", "--json")
    assert ref.exit_code == 0, ref.output
    assert _json(ref)["styles"] == [
        {"label": "ref-mirror", "seed": None, "source": "ref", "ref": str(photos / "mirror.png")}
    ]
    assert (tmp_path / "out" / "astronaut_face0_ref-mirror.png").is_file()


def test_gif_sideways_and_broken_link_inputs_and_every_skipped_name_counted(tmp_path, ckpt, photos):
    import os

    folder = tmp_path / "phone"
    folder.mkdir()
    astro = skimage_data.astronaut()
    Image.fromarray(astro).quantize(256).save(folder / "palette.gif")
    Image.fromarray(np.ascontiguousarray(np.rot90(astro, k=1))).save(folder / "sideways.png")  # EXIF lost
    os.symlink(tmp_path / "deleted.jpg", folder / "gone.jpg")
    (folder / "readme.txt").write_text("not a photo\n")
    os.symlink(photos, folder / "more")  # a linked folder is not followed
    out = tmp_path / "out"

    result = _stylize(folder, "-c", ckpt, "--seed", 4, "-o", out, "--json")
    assert result.exit_code == 1
    summary = _json(result)
    by_name = {e["input"].rsplit("/", 1)[1]: e for e in summary["inputs"]}
    assert sorted(by_name) == ["gone.jpg", "palette.gif", "sideways.png"]
    assert by_name["palette.gif"]["status"] == "ok" and by_name["palette.gif"]["rotations"] == [0.0]
    assert by_name["sideways.png"]["status"] == "ok" and by_name["sideways.png"]["rotations"] == [270.0]
    assert "broken link" in by_name["gone.jpg"]["error"]
    assert summary["skipped_files"]["by_reason"] == {"extension": 1, "folder_link": 1}
    assert summary["skipped_files"]["paths"]["extension"] == [str(folder / "readme.txt")]
    assert summary["counts"]["skipped_files"] == 2
    assert "skipped 2 file(s) in the input folders and globs: 1 not an image extension, 1 a link to a folder" in (
        result.stderr
    )
    assert sorted(p.name for p in out.iterdir()) == ["palette_face0_seed4.png", "sideways_face0_seed4.png"]
    # a folder with nothing readable says what it skipped
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "clip.mov.txt").write_text("x")
    result = _stylize(empty, "-c", ckpt, "--seed", 4, "-o", out)
    assert result.exit_code == 1 and "1 not an image extension" in result.stderr


def test_a_bad_dtype_is_a_usage_error_before_anything_loads(tmp_path, monkeypatch):
    import mmfs.inference.models as models

    loaded = []
    monkeypatch.setattr(models, "load_stylizer", lambda *a, **k: loaded.append(a))
    missing = tmp_path / "m.safetensors"  # were it read, the error would be "no such checkpoint file"
    result = _stylize(tmp_path / "x.jpg", "-c", missing, "--seed", "1", "--dtype", "fp64")
    assert result.exit_code == 2 and loaded == []
    error = re.sub(r"[\s│╭╮╰╯─]+", " ", result.stderr)
    assert "'--dtype'" in error and "'fp64' is not one of 'fp32', 'bf16', 'fp16'" in error
    assert "<fp32|bf16|fp16>" in runner.invoke(app, ["stylize", "--help"], env={"COLUMNS": "300"}).output

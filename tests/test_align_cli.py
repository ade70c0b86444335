"""`mmfs align` end to end through the real CLI entry point, on skimage's public-domain astronaut."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mmfs.faces import Face, align_face
from mmfs_cli.app import app

pytest.importorskip("dlib")
skimage_data = pytest.importorskip("skimage.data")

runner = CliRunner()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


def _run(*args: str, stdin: str | None = None):
    return runner.invoke(app, ["align", *args], input=stdin)


def _error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def _leftovers(folder) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or ".partial" in p.name]


def test_folder_with_good_corrupt_and_text_files(tmp_path, astronaut):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(astronaut).save(photos / "astronaut.png")
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, format="JPEG")
    (photos / "broken.jpg").write_bytes(buffer.getvalue()[:2000])  # truncated JPEG
    (photos / "notes.png").write_text("this is not an image\n")
    (photos / "readme.txt").write_text("folders yield image names only\n")
    out = tmp_path / "aligned"

    result = _run(str(photos), "--outdir", str(out), "--size", "128", "--json")
    assert result.exit_code == 1, result.output
    errors = _error_lines(result)
    assert len(errors) == 2
    assert any("broken.jpg" in e for e in errors) and any("notes.png" in e for e in errors)
    summary = json.loads(result.stdout)
    assert (summary["ok"], summary["failed"], summary["faces"]) == (1, 2, 1)
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.json", "astronaut_face0.png"]
    assert _leftovers(tmp_path) == []

    record = json.loads((out / "astronaut.json").read_text())
    assert record["format"] == "mmfs-align/1" and record["crop_size"] == 128 and record["image_size"] == [512, 512]
    (face,) = record["faces"]
    assert face["crop"] == "astronaut_face0.png"
    matrix = np.array(face["matrix"])
    assert matrix.shape == (2, 3)
    # The JSON alone reproduces the crop: same landmarks -> same matrix -> same pixels.
    again = align_face(astronaut, Face(np.array(face["box"]), np.array(face["landmarks"]), face["score"]), 128)
    np.testing.assert_allclose(again.matrix, matrix, rtol=0, atol=1e-12)
    crop = np.asarray(Image.open(out / "astronaut_face0.png"))
    assert crop.shape == (128, 128, 3)
    np.testing.assert_array_equal(crop, again.image)


def test_never_overwrites_without_the_flag(tmp_path, astronaut):
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert _run(str(tmp_path / "a.png"), "-o", str(out), "--size", "64", "-q").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "a.json").write_text("{}")  # so that a rewrite would show

    result = _run(str(tmp_path / "a.png"), "-o", str(out), "--size", "96", "-q")
    assert result.exit_code == 1
    assert _error_lines(result) == [f"error: {out / 'a.json'}: already exists; pass --overwrite to replace it"]
    assert (out / "a.json").read_text() == "{}" and (out / "a_face0.png").read_bytes() == before["a_face0.png"]

    result = _run(str(tmp_path / "a.png"), "-o", str(out), "--size", "96", "-q", "--overwrite")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "a.json").read_text())["crop_size"] == 96
    assert Image.open(out / "a_face0.png").size == (96, 96)


def test_no_face_stdin_paths_and_same_names(tmp_path, astronaut):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    Image.fromarray(astronaut).save(tmp_path / "x" / "face.png")
    Image.fromarray(astronaut[:, ::-1]).save(tmp_path / "y" / "face.png")
    Image.fromarray(skimage_data.coffee()).save(tmp_path / "coffee.png")
    out = tmp_path / "out"
    paths = "\n".join(str(tmp_path / p) for p in ("x/face.png", "coffee.png", "y/face.png")) + "\n"

    result = _run("-", "-o", str(out), "--size", "64", stdin=paths)
    assert result.exit_code == 1
    assert _error_lines(result) == [f"error: {tmp_path / 'coffee.png'}: no face found"]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["face-2.json", "face-2_face0.png", "face.json", "face_face0.png"]
    assert json.loads((out / "face-2.json").read_text())["source"] == str((tmp_path / "y" / "face.png").resolve())


def test_missing_insightface_model_is_one_line(tmp_path, astronaut):
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    result = _run(str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--detector", "insightface")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "det_10g.onnx" in lines[0] and "--detector-model" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", [["--size", "8"], ["--detector", "mtcnn"], []])
def test_usage_errors_exit_2(tmp_path, bad):
    args = [str(tmp_path)] if bad else []
    assert _run(*args, *bad, "-o", str(tmp_path / "out")).exit_code == 2


def test_no_inputs_found(tmp_path):
    result = _run(str(tmp_path / "*.png"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1 and _error_lines(result) == ["error: no input images found"]


def test_importing_the_command_pulls_in_no_heavy_modules():
    code = "import sys, mmfs_cli.align; print(sorted({'numpy', 'torch', 'dlib', 'PIL'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_sideways_photo_is_aligned_and_its_rotation_recorded(tmp_path, astronaut):
    Image.fromarray(np.ascontiguousarray(np.rot90(astronaut, k=-1))).save(tmp_path / "sideways.png")
    out = tmp_path / "aligned"
    result = _run(str(tmp_path / "sideways.png"), "--outdir", str(out), "--size", "64", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outputs"][0]["rotations"] == [90.0]
    (face,) = json.loads((out / "sideways.json").read_text())["faces"]
    assert face["rotation"] == 90.0
    upright = _run(str(tmp_path / "sideways.png"), "--outdir", str(tmp_path / "plain"), "--no-rotate")
    assert upright.exit_code == 1 and "no face found" in _error_lines(upright)[0]
    # the crop is the upright photo's crop: paste-back and stylization see the same face
    from mmfs.faces import build_detector

    (reference,) = build_detector("dlib", rotate=False).detect(astronaut)
    crop = np.asarray(Image.open(out / "sideways_face0.png")).astype(int)
    assert np.abs(crop - align_face(astronaut, reference, 64).image.astype(int)).mean() < 1.5


def test_folder_summary_counts_what_is_not_a_photo(tmp_path, astronaut):
    import os

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(astronaut).resize((256, 256)).save(photos / "a.bmp")
    Image.fromarray(astronaut).resize((256, 256)).save(photos / "b.tiff")
    (photos / ".DS_Store").write_bytes(b"\0")
    (photos / "list.csv").write_text("a,b\n")
    os.symlink(tmp_path / "nowhere.png", photos / "lost.png")
    result = _run(str(photos), "--outdir", str(tmp_path / "out"), "--size", "64", "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["ok"], summary["failed"], summary["faces"]) == (2, 1, 2)
    assert summary["errors"][0]["input"].endswith("lost.png") and "broken link" in summary["errors"][0]["error"]
    assert summary["skipped_files"]["by_reason"] == {"extension": 1, "hidden": 1}
    assert "skipped 2 file(s) in the input folders and globs" in result.stderr


def test_dlib_cnn_detector_through_the_command(tmp_path, astronaut, monkeypatch):
    import mmfs.faces.detect as detect

    monkeypatch.setattr(detect, "DLIB_CNN_SIDE", 240)  # a small scan keeps the test to about a second
    Image.fromarray(astronaut[20:260, 110:350]).save(tmp_path / "head.png")
    result = _run(str(tmp_path / "head.png"), "--outdir", str(tmp_path / "out"), "--size", "64",
                  "--detector", "dlib-cnn", "--no-rotate", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "head.json").read_text())
    (face,) = record["faces"]
    assert record["detector"] == "dlib-cnn" and face["rotation"] == 0.0
    from mmfs.faces import build_detector

    (hog,) = build_detector("dlib", rotate=False).detect(astronaut)
    np.testing.assert_allclose(np.array(face["landmarks"]), hog.landmarks - [110, 20], atol=2.0)

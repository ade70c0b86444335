"""`mmfs stylize --text/--ref`: CLIP styles through the checkpoint's mapper, deterministic, exact, and with adapted files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mmfs.checkpoint import module_state, save_checkpoint
from mmfs.data.images import load_image, save_image, to_tensor, to_uint8
from mmfs.errors import CheckpointError, MissingWeightsError
from mmfs.external.build import build_clip, resolve_clip_tag
from mmfs.inference.models import load_stylizer
from mmfs.inference.pipeline import StylizePipeline
from mmfs.inference.styles import reference_styles, text_styles
from mmfs.nn import Stylizer
from mmfs.utils.files import file_sha256
from mmfs_cli.app import app
from support.tiny import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A Stylizer with a mapper, one without, an adapted file on top of the first, an aligned photo, a reference."""
    root = tmp_path_factory.mktemp("clip_styles")
    torch.manual_seed(0)
    model = Stylizer(TINY, with_mapper=True)
    save_checkpoint(root / "mapper.safetensors", module_state(model), kind="stylizer", config=TINY)
    recorded = {"clip_model": "ViT-B-32", "clip_tag": "recorded_tag"}  # as `mmfs train-mapper` writes them
    save_checkpoint(root / "tagged.safetensors", module_state(model), kind="stylizer", config=TINY, meta=recorded)
    save_checkpoint(root / "plain.safetensors", module_state(Stylizer(TINY)), kind="stylizer", config=TINY)
    changed = {k: v + 0.05 * torch.randn_like(v) for k, v in module_state(model).items() if k.startswith("to_rgb")}
    meta = {"base": "mapper.safetensors", "base_sha256": file_sha256(root / "mapper.safetensors"), "prompt": "pop art"}
    save_checkpoint(root / "adapted.safetensors", changed, kind="adapted", config=TINY, meta=meta)
    rng = np.random.default_rng(0)
    save_image(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), root / "face.png")
    save_image(rng.integers(0, 256, (50, 40, 3), dtype=np.uint8), root / "style.png")
    return root


def stylize(files, out, *args):
    argv = ["stylize", str(files / "face.png"), "--aligned", "--clip-model", "tiny", "-o", str(out), "--json", *args]
    return CliRunner().invoke(app, [str(a) for a in argv])


def by_hand(path, emb, face):
    """What stylize must compute: ws = mapper(emb) with the model in eval, noise of the default seed 0."""
    from mmfs.inference.pipeline import seed_noise

    model = load_stylizer(path)
    with torch.no_grad():
        ws = model.ws_from_clip(emb)
        return to_uint8(model(to_tensor(face)[None], ws, noise=seed_noise(model, 0))[0])


def test_text_style_is_deterministic_and_is_the_mapper_of_the_text_embedding(files, tmp_path):
    first = stylize(files, tmp_path / "a", "-c", files / "mapper.safetensors", "--text", "Pop Art")
    second = stylize(files, tmp_path / "b", "-c", files / "mapper.safetensors", "--text", "Pop Art")
    assert first.exit_code == 0 and second.exit_code == 0, first.output
    assert json.loads(first.stdout)["styles"] == [
        {"label": "pop-art", "seed": None, "source": "text", "text": "Pop Art"}
    ]
    a, b = tmp_path / "a" / "face_pop-art.png", tmp_path / "b" / "face_pop-art.png"
    assert a.read_bytes() == b.read_bytes()
    clip = build_clip("tiny", embed_dim=TINY.clip_dim)
    with torch.no_grad():
        emb = clip.encode_text(["Pop Art"])
    expected = by_hand(files / "mapper.safetensors", emb, load_image(files / "face.png"))
    assert np.abs(load_image(a).astype(int) - expected.astype(int)).max() <= 1


def test_reference_style_is_deterministic_and_uses_clip_preprocessing(files, tmp_path):
    first = stylize(files, tmp_path / "a", "-c", files / "mapper.safetensors", "--ref", files / "style.png")
    second = stylize(files, tmp_path / "b", "-c", files / "mapper.safetensors", "--ref", files / "style.png")
    assert first.exit_code == 0 and second.exit_code == 0, first.output
    a, b = tmp_path / "a" / "face_ref-style.png", tmp_path / "b" / "face_ref-style.png"
    assert a.read_bytes() == b.read_bytes()
    clip = build_clip("tiny", embed_dim=TINY.clip_dim)
    with torch.no_grad():
        emb = clip.encode_reference_image(load_image(files / "style.png"))  # bicubic short side + centre crop
    expected = by_hand(files / "mapper.safetensors", emb, load_image(files / "face.png"))
    assert np.abs(load_image(a).astype(int) - expected.astype(int)).max() <= 1


def test_a_checkpoint_without_mapper_is_refused_with_one_line(files, tmp_path):
    for style in (["--text", "pop art"], ["--ref", files / "style.png"]):
        result = stylize(files, tmp_path, "-c", files / "plain.safetensors", *style)
        assert result.exit_code == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "CLIP mapper" in lines[0] and "mmfs train-mapper" in lines[0]
    with pytest.raises(CheckpointError, match="no CLIP mapper"):
        load_stylizer(files / "plain.safetensors").ws_from_clip(torch.zeros(1, TINY.clip_dim))


def test_exactly_one_style_source(files, tmp_path):
    result = stylize(files, tmp_path, "-c", files / "mapper.safetensors", "--text", "a", "--ref", files / "style.png")
    assert result.exit_code == 2 and "exactly one style source" in result.output


def test_adapted_checkpoint_loads_with_its_base_and_renders_differently(files, tmp_path):
    base = stylize(files, tmp_path / "base", "-c", files / "mapper.safetensors", "--text", "pop art")
    adapted = stylize(files, tmp_path / "adapted", "-c", files / "adapted.safetensors", "--text", "pop art")
    assert base.exit_code == 0 and adapted.exit_code == 0, adapted.output
    a = load_image(tmp_path / "adapted" / "face_pop-art.png").astype(int)
    b = load_image(tmp_path / "base" / "face_pop-art.png").astype(int)
    assert np.abs(a - b).max() > 2
    clip = build_clip("tiny", embed_dim=TINY.clip_dim)
    with torch.no_grad():
        emb = clip.encode_text(["pop art"])
    expected = by_hand(files / "adapted.safetensors", emb, load_image(files / "face.png"))
    assert np.abs(a - expected.astype(int)).max() <= 1


def test_style_sources_label_and_embed_like_the_pipeline_expects(files):
    clip = build_clip("tiny", embed_dim=TINY.clip_dim)
    texts = text_styles(clip, ["Pop Art", "pop art"])
    assert texts.labels == ["pop-art-0", "pop-art-1"]  # equal labels would write the same files
    torch.testing.assert_close(texts.embeddings.norm(dim=-1), torch.ones(2))
    refs = reference_styles(clip, [files / "style.png"])
    assert refs.labels == ["ref-style"] and refs.infos == [{"source": "ref", "ref": str(files / "style.png")}]
    pipeline = StylizePipeline(load_stylizer(files / "mapper.safetensors"))
    styles = pipeline.styles(texts)
    assert styles[0].ws.shape == (TINY.num_ws, TINY.w_dim) and torch.equal(styles[0].ws, pipeline.styles(texts)[0].ws)
    with pytest.raises(CheckpointError, match="512-d embeddings but this checkpoint's mapper reads 32-d"):
        from mmfs.external.build import check_clip_dim

        check_clip_dim(build_clip("tiny", embed_dim=512), TINY.clip_dim)


def clip_error(result) -> str:
    """The one stderr line of a refused CLIP choice (exit 1, no traceback)."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_unknown_clip_model_or_tag_is_one_line(files, tmp_path):
    def run(*args):
        argv = ["stylize", files / "face.png", "--aligned", "-c", files / "mapper.safetensors", "-o", tmp_path, *args]
        return CliRunner().invoke(app, [str(a) for a in argv])

    line = clip_error(run("--text", "x", "--clip-model", "no-such-model"))
    assert "'no-such-model'" in line and "--clip-model" in line and "ViT-B-32" in line
    line = clip_error(run("--ref", files / "style.png", "--clip-tag", "nope"))  # the tag reaches from_pretrained
    assert "'nope'" in line and "--clip-tag" in line and "openai" in line
    with pytest.raises(MissingWeightsError, match="unknown CLIP model 'no-such-model'"):
        build_clip("no-such-model", embed_dim=TINY.clip_dim)


def test_clip_tag_defaults_to_the_one_the_mapper_was_trained_with(files, tmp_path):
    tagged = files / "tagged.safetensors"
    assert resolve_clip_tag(None, tagged, "ViT-B-32") == "recorded_tag"
    assert resolve_clip_tag("laion2b_s34b_b79k", tagged, "ViT-B-32") == "laion2b_s34b_b79k"  # the flag wins
    assert resolve_clip_tag(None, tagged, "ViT-B-16") == "openai"  # recorded for another architecture
    assert resolve_clip_tag(None, files / "mapper.safetensors", "ViT-B-32") == "openai"  # nothing recorded
    argv = ["stylize", files / "face.png", "--aligned", "-c", tagged, "-o", tmp_path, "--text", "x"]
    line = clip_error(CliRunner().invoke(app, [str(a) for a in argv]))
    assert "'recorded_tag'" in line and "--clip-tag" in line

"""What `mmfs web` offers as models (no Gradio needed): the shipped Stylizer, a demo's output, files given."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mmfs.config import PRESETS
from mmfs.errors import InputError
from mmfs.web.models import ModelEntry, ModelList, model_list, published_names


def test_the_shipped_stylizer_is_the_fp16_demo_mapper_model():
    from mmfs.checkpoint import load_checkpoint
    from mmfs.demo.stylizer import shipped_stylizer
    from mmfs.inference.models import load_stylizer

    path = shipped_stylizer()
    assert path.stat().st_size < 1_000_000
    ckpt = load_checkpoint(path, kind="stylizer")
    assert ckpt.config == PRESETS["tiny64"] and {v.dtype for v in ckpt.tensors.values()} == {torch.float16}
    assert ckpt.meta["stage"] == "train-mapper" and ckpt.meta["clip_model"] == "tiny"
    assert not any("/" in value for key, value in ckpt.meta.items() if key != "recipe")  # no machine's paths
    model = load_stylizer(path)  # strict, with its mapper
    assert model.clip_mapper is not None


def test_demo_models_fall_back_to_the_shipped_stylizer_with_the_shipped_clip(tmp_path):
    from mmfs.demo.clip import SHIPPED_CLIP
    from mmfs.demo.stylizer import SHIPPED_STYLIZER

    models = model_list([], demo=True, demo_dir=tmp_path / "absent")
    assert models.names() == ["demo", *published_names()]  # the local model first: it needs no download
    entry = models.get("demo")
    assert entry == ModelEntry("demo", str(SHIPPED_STYLIZER), "tiny", SHIPPED_CLIP)


def test_demo_models_reuse_a_finished_demo_output(tmp_path):
    from mmfs.demo.clip import SHIPPED_CLIP
    from mmfs.demo.stylizer import SHIPPED_STYLIZER

    (tmp_path / "runs" / "m").mkdir(parents=True)
    (tmp_path / "models").mkdir()
    shutil.copy(SHIPPED_STYLIZER, tmp_path / "runs" / "m" / "final.safetensors")
    shutil.copy(SHIPPED_STYLIZER, tmp_path / "models" / "adapted-popart.safetensors")
    summary = {"checkpoints": {"mapper": "runs/m/final.safetensors",
                               "adapted": {"popart": "models/adapted-popart.safetensors",
                                           "sketch": "models/adapted-sketch.safetensors"}},
               "clip": {"path": str(SHIPPED_CLIP)}}  # fmt: skip
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    models = model_list([], demo=True, demo_dir=tmp_path)
    assert models.names()[:3] == ["demo", "demo-popart", "mmfs"]  # the sketch file is gone: not offered
    assert models.get("demo").checkpoint == str(tmp_path / "runs" / "m" / "final.safetensors")
    # an unfinished demo (no summary yet) is not reused
    (tmp_path / "summary.json").unlink()
    assert model_list([], demo=True, demo_dir=tmp_path).get("demo").checkpoint == str(SHIPPED_STYLIZER)


def test_files_given_are_offered_by_name_and_bad_ones_refused(tmp_path):
    from mmfs.demo.stylizer import SHIPPED_STYLIZER

    mine = shutil.copy(SHIPPED_STYLIZER, tmp_path / "mine.safetensors")
    models = model_list([mine])
    assert models.names() == ["mine", *published_names()]
    assert models.get("mine").clip_model == "tiny"  # as recorded with its mapper
    with pytest.raises(InputError, match="no such model file"):
        model_list([tmp_path / "missing.safetensors"])
    (tmp_path / "old.pt").write_bytes(b"x")
    with pytest.raises(InputError, match="not a .safetensors file"):
        model_list([tmp_path / "old.pt"])
    (tmp_path / "b").mkdir()
    other = shutil.copy(SHIPPED_STYLIZER, tmp_path / "b" / "mine.safetensors")
    with pytest.raises(InputError, match="two models are called 'mine'"):
        model_list([mine, other])
    mmfs = shutil.copy(SHIPPED_STYLIZER, tmp_path / "b" / "mmfs.safetensors")
    with pytest.raises(InputError, match="two models are called 'mmfs'"):  # a published model's name
        model_list([mmfs])


def test_the_published_stylizers_are_offered_by_name():
    from mmfs.catalogue import MODELS

    names = published_names()
    assert names[0] == "mmfs" and {"pop-art", "watercolor", "ref01", "mmfs-phase2"} <= set(names)
    assert all(MODELS[n].kind in ("stylizer", "base", "one-shot", "zero-shot") for n in names)
    assert "stylegan2-ffhq" not in names  # a prior is not a Stylizer
    assert model_list([]).get("pop-art") == ModelEntry("pop-art", "pop-art")  # `--checkpoint pop-art`, as typed


def test_a_name_not_in_the_list_is_refused_and_added_models_join_it():
    models = ModelList([ModelEntry("a", "/x/a.safetensors")])
    with pytest.raises(InputError, match="choose a model from the list"):
        models.get("/etc/passwd")
    with pytest.raises(InputError, match="choose a model first"):
        models.get(None)
    models.add(ModelEntry("a-pop-art", "/x/a-pop-art.safetensors"))
    assert models.names() == ["a", "a-pop-art"]

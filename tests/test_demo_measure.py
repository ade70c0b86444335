"""The demo's structure measure and the shipped-prior export, without training anything."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfs.config import PRESETS
from mmfs.demo.measure import check_measure, identification_accuracy
from mmfs.demo.synthetic import FaceParams, render_face
from mmfs.errors import CheckpointError


def _faces(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([render_face(FaceParams.sample(rng), 64)[0] for _ in range(n)])


def test_the_measure_finds_each_paintings_source_where_a_plain_edge_correlation_value_cannot():
    check = check_measure(n=32)
    assert min(check["centred"].values()) >= 0.5, check  # chance is 1/32
    # Plain edge maps of unrelated faces are about as similar as a painting and its own source: one layout.
    plain = check["plain_similarity"]
    assert plain["unrelated_sources"] > 0.5 and plain["own_source"] - plain["unrelated_sources"] < 0.25, plain


def test_unrelated_faces_score_about_chance_and_recoloured_sources_score_one():
    sources, unrelated = _faces(16, seed=1), _faces(16, seed=2)
    assert identification_accuracy(unrelated, sources) <= 0.25  # chance 1/16: same layout, other faces
    recoloured = 255 - sources[..., ::-1]  # inverted and channels swapped: the colour-free features do not change
    assert identification_accuracy(recoloured, sources) == 1.0
    shuffled = sources[np.roll(np.arange(16), 1)]  # every output is another source's face exactly
    assert identification_accuracy(shuffled, sources) == 0.0


def test_the_measure_needs_one_output_per_source():
    with pytest.raises(ValueError, match="one output per source"):
        identification_accuracy(_faces(3, 0), _faces(4, 0))


def test_export_takes_the_ema_generator_and_discriminator_of_a_training_checkpoint_in_fp16(tmp_path):
    from mmfs.checkpoint import module_state, save_checkpoint
    from mmfs.demo.prior import export_prior
    from mmfs.nn import Discriminator, Generator
    from mmfs.train.weights import load_prior

    cfg = PRESETS["tiny"]
    g, g_ema, d = Generator(cfg), Generator(cfg), Discriminator(cfg)
    tensors = {**module_state(g, "g."), **module_state(g_ema, "g_ema."), **module_state(d, "d.")}
    meta = {"step": 7, "train_config": '{"command": "train-prior"}'}
    source = save_checkpoint(tmp_path / "step-000007.safetensors", tensors, kind="training", config=cfg, meta=meta)
    out = export_prior(source, tmp_path / "prior.safetensors", recipe={"steps": 7})
    prior = load_prior(out)
    assert prior.meta["step"] == "7" and prior.meta["dtype"] == "fp16" and prior.meta["recipe"] == '{"steps": 7}'
    assert set(prior.subset("g.")) == set(module_state(g_ema)) and set(prior.subset("d.")) == set(module_state(d))
    for key, value in module_state(g_ema).items():
        assert prior.subset("g.")[key].dtype == torch.float16
        assert torch.equal(prior.subset("g.")[key], value.half()), key  # the EMA weights, not the raw G's
    bad = save_checkpoint(tmp_path / "other.safetensors", tensors, kind="training", config=cfg,
                          meta={"train_config": '{"command": "finetune"}'})  # fmt: skip
    with pytest.raises(CheckpointError, match="not a train-prior checkpoint"):
        export_prior(bad, tmp_path / "x.safetensors")

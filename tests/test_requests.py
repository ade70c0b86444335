"""The inference commands' option dataclasses (mmfs/config): defaults and checks, without running anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmfs.config.align import AlignRequest
from mmfs.config.common import Runtime
from mmfs.config.convert import ConvertOptions
from mmfs.config.demo import DemoRequest
from mmfs.config.evaluate import METRIC_NAMES, EvaluateRequest
from mmfs.config.faces import FaceDetection
from mmfs.errors import OptionError


def test_face_detection_defaults_and_choices():
    options = FaceDetection()
    assert (options.detector, options.detector_model, options.rotate) == ("dlib", None, True)
    assert FaceDetection(detector="dlib+cnn", detector_model=Path("m.dat")).detector_model == Path("m.dat")
    with pytest.raises(OptionError, match="detector: must be one of dlib, dlib-cnn, dlib\\+cnn, insightface"):
        FaceDetection(detector="mtcnn")


def test_runtime_defaults():
    assert Runtime() == Runtime(device="auto", dtype="fp32", as_json=False, quiet=False)


def _evaluate_request(**kwargs):
    return EvaluateRequest(checkpoint=Path("a.safetensors"), photos=Path("photos"), **kwargs)


def test_evaluate_request_parses_metrics_and_checks_what_they_need():
    request = _evaluate_request(metrics="lpips, ARCFACE,lpips")
    assert request.metric_names == ("lpips", "arcface") and request.report == Path("evaluation.json")
    assert _evaluate_request(art=Path("art")).metric_names == METRIC_NAMES  # the default measures everything
    cases = [
        ({"metrics": "lpips,ssim", "art": Path("art")}, "metrics", "unknown metric ssim; choose from fid"),
        ({"metrics": " , "}, "metrics", "unknown metric ' , '"),
        ({"metrics": "fid"}, "art", "fid needs the art set"),
        ({"art": Path("art"), "n": 1}, "n", "fid needs at least 2 outputs"),
        ({"metrics": "lpips", "seed": 2**63}, "seed", "must be in \\[0, 2\\*\\*63 - 1\\]"),
        ({"metrics": "lpips", "seed": -1}, "seed", "must be in"),
        ({"metrics": "lpips", "batch_size": 0}, "batch_size", "must be >= 1"),
        ({"metrics": "lpips", "fid_cache": Path("c"), "no_fid_cache": True}, "fid_cache", "exclude each other"),
    ]
    for kwargs, field, message in cases:
        with pytest.raises(OptionError, match=message) as caught:
            _evaluate_request(**kwargs)
        assert caught.value.field == field, kwargs
    assert _evaluate_request(metrics="lpips", n=1, seed=2**63 - 1).n == 1  # one output is enough without fid


def test_align_request_defaults_and_size_bounds():
    assert AlignRequest() == AlignRequest(outdir=Path("aligned"), size=512, overwrite=False)
    assert AlignRequest(size=16).size == 16 and AlignRequest(size=4096).size == 4096
    with pytest.raises(OptionError, match="size: must be >= 16"):
        AlignRequest(size=8)
    with pytest.raises(OptionError, match="size: must be <= 4096"):
        AlignRequest(size=4097)


def test_demo_request_defaults_and_bounds():
    request = DemoRequest()
    assert (request.outdir, request.quick, request.train_prior, request.seed, request.threads) == (
        Path("demo_out"), False, False, 0, None
    )  # fmt: skip
    with pytest.raises(OptionError, match="seed: must be >= 0"):
        DemoRequest(seed=-1)
    with pytest.raises(OptionError, match="threads: must be >= 1"):
        DemoRequest(threads=0)


def test_convert_options_defaults_and_formats():
    options = ConvertOptions()
    assert (options.source_format, options.generator_key, options.feature_resolution) == ("auto", "g_ema", 32)
    assert ConvertOptions(source_format="mmfs").source_format == "mmfs"
    with pytest.raises(OptionError, match="source_format: must be one of auto, rosinality, mmfs, got 'stylegan3'"):
        ConvertOptions(source_format="stylegan3")

"""The inference commands' option dataclasses (mmfs/config): defaults and checks, without running anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmfs.config.common import Runtime
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

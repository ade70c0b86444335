"""Faces in ordinary photos: detection with five landmarks (retried on turned copies), FFHQ alignment,
feathered paste-back.

    detector = build_detector("dlib")
    for aligned in detect_and_align(image, detector, 512):
        image = paste_back(image, stylize(aligned.image), aligned)

dlib, insightface and their model files are loaded only when a detector is built.
"""

from __future__ import annotations

from .align import AlignedFace, align_face, detect_and_align, ffhq_quad
from .detect import DETECTORS, Face, FaceDetector
from .paste import paste_back
from .search import ROTATIONS, FaceSearch, build_detector

__all__ = [
    "DETECTORS",
    "AlignedFace",
    "Face",
    "FaceDetector",
    "FaceSearch",
    "ROTATIONS",
    "align_face",
    "build_detector",
    "detect_and_align",
    "ffhq_quad",
    "paste_back",
]

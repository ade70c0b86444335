"""Faces in ordinary photos: detection with five landmarks, FFHQ alignment, feathered paste-back.

    detector = build_detector("dlib")
    for aligned in detect_and_align(image, detector, 512):
        image = paste_back(image, stylize(aligned.image), aligned)

dlib, insightface and their model files are loaded only when a detector is built.
"""

from __future__ import annotations

from .align import AlignedFace, align_face, detect_and_align, ffhq_quad
from .detect import DETECTORS, Face, FaceDetector, build_detector
from .paste import paste_back

__all__ = [
    "DETECTORS",
    "AlignedFace",
    "Face",
    "FaceDetector",
    "align_face",
    "build_detector",
    "detect_and_align",
    "ffhq_quad",
    "paste_back",
]

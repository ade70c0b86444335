"""Face detection options, declared once for every command that finds faces (align, stylize).

The detector names live here, in a module without heavy imports, so that `mmfs --help` lists them
without importing dlib or numpy; `mmfs.faces` takes them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmfs.config.options import Options, option

DETECTORS = ("dlib", "dlib-cnn", "dlib+cnn", "insightface")


@dataclass(frozen=True)
class FaceDetection(Options):
    """Which detector finds the faces, its weights, and whether to search turned copies of a photo."""

    detector: str = option(
        "dlib",
        "dlib: HOG + 68 landmarks, offline. dlib-cnn: dlib's CNN (slower, 3.5-5 s a photo). "
        "dlib+cnn: HOG, then the CNN when HOG finds nothing. insightface: SCRFD, needs --detector-model.",
        choices=DETECTORS,
    )
    detector_model: Path | None = option(
        None, "Detector weights: a SCRFD .onnx (e.g. det_10g.onnx) or another dlib 68-point .dat.", path=True
    )
    rotate: bool = option(
        True, "Photos: when no face is found upright, look again on the photo turned 90/180/270 and +-45 degrees."
    )

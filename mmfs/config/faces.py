"""Face detection options, declared once for every command that finds faces (align, stylize).

The detector names live here, in a module without heavy imports, so that `mmfs --help` lists them
without importing dlib or numpy; `mmfs.faces` takes them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmfs.config.options import Options, option
from mmfs.errors import OptionError

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
    every_angle: bool = option(
        False, "Photos: search the turned copies even when faces were found upright, so a tilted face next to "
        "an upright one is found too (about 6x the detection time).",
    )  # fmt: skip
    min_face: int = option(
        64, "Photos, dlib: smallest face (box width, px) searched for. Photos over 2048 px are scanned again in "
        "full-resolution tiles to find it (1.3-2.3 s more per 12 MP on one core); 0: only the shrunk scan.",
        min=0, max=4096, metavar="PX",
    )  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.every_angle and not self.rotate:
            raise OptionError("every_angle", "searches turned copies; it cannot be used with --no-rotate")

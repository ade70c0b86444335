"""dlib's 128-d face descriptor: an identity distance that works offline (models ship on PyPI).

The files come from the `face-recognition-models` package (CC0): the ResNet descriptor
`dlib_face_recognition_resnet_model_v1.dat` and the 5-point shape model it was trained with. The package
is located with `importlib.util.find_spec` and never imported (its `__init__` needs pkg_resources).

Alignment follows dlib's own recipe: the 5-point shape model is run on the photo inside a box derived
from our five landmarks (the box dlib's HOG detector would give, calibrated on the skimage astronaut),
and `get_face_chip_details` (150 px, padding 0.25) turns that shape into the chip the descriptor
expects. The distance is dlib's: Euclidean, where < 0.6 means "same person" on LFW. It is reported as
`dlib_id_dist`, never as ArcFace-Dist: the two scales are not comparable.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmfs.errors import CheckpointError, MissingWeightsError, MMFSError

DLIB_ID_FILE = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_SHAPE5_FILE = "shape_predictor_5_face_landmarks.dat"
CHIP_SIZE = 150
CHIP_PADDING = 0.25
# HOG box side / (eye distance + eye-centre-to-mouth-centre distance), measured on the astronaut (91 px box).
BOX_SCALE = 1.15


def default_dlib_models_dir() -> Path:
    """The `models/` folder of the face-recognition-models package, found without importing it."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(
            f"dlib identity model {DLIB_ID_FILE} not found: pip install face-recognition-models "
            "(or pass --arcface-weights PATH to use ArcFace instead)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def _load(kind: str, path: Path) -> object:
    try:
        import dlib
    except ImportError:
        raise MMFSError("the dlib identity distance needs dlib: pip install 'mmfs[faces]'") from None

    if not path.is_file():
        raise MissingWeightsError(
            f"{path}: no such file; the dlib identity distance needs {path.name} (pip install face-recognition-models)"
        )
    try:
        return getattr(dlib, kind)(str(path))
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: not a dlib {kind} file ({str(exc).splitlines()[0] if str(exc) else 'unreadable'})"
        ) from None


class DlibIdentity:
    """dlib ResNet descriptors of 5-point-aligned 150 px chips; distance = Euclidean."""

    name = "dlib_id_dist"

    def __init__(self, recognizer: object, shape_predictor: object) -> None:
        self.recognizer = recognizer
        self.shape_predictor = shape_predictor

    @classmethod
    def from_pretrained(
        cls,
        model_path: str | os.PathLike[str] | None = None,
        shape_predictor_path: str | os.PathLike[str] | None = None,
    ) -> DlibIdentity:
        """Load both models; by default from the face-recognition-models package."""
        if model_path is None or shape_predictor_path is None:
            folder = default_dlib_models_dir()
            model_path = model_path or folder / DLIB_ID_FILE
            shape_predictor_path = shape_predictor_path or folder / DLIB_SHAPE5_FILE
        return cls(
            _load("face_recognition_model_v1", Path(model_path)),
            _load("shape_predictor", Path(shape_predictor_path)),
        )

    @staticmethod
    def face_box(landmarks: np.ndarray) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the box dlib's detector would draw around these five points."""
        lm = np.asarray(landmarks, dtype=np.float64)
        eyes, mouth = lm[:2].mean(0), lm[3:].mean(0)
        centre = (eyes + mouth) / 2
        half = BOX_SCALE * (np.linalg.norm(lm[1] - lm[0]) + np.linalg.norm(mouth - eyes)) / 2
        left, top = np.round(centre - half).astype(int)
        right, bottom = np.round(centre + half).astype(int)
        return int(left), int(top), int(right), int(bottom)

    def chip_details(self, image: np.ndarray, landmarks: np.ndarray) -> object:
        """dlib's chip geometry for the face at `landmarks` in an RGB uint8 image."""
        import dlib

        shape = self.shape_predictor(np.ascontiguousarray(image), dlib.rectangle(*self.face_box(landmarks)))
        return dlib.get_face_chip_details(shape, size=CHIP_SIZE, padding=CHIP_PADDING)

    def _descriptors(self, chips: list[np.ndarray]) -> np.ndarray:
        if not chips:
            return np.zeros((0, 128), dtype=np.float32)
        return np.asarray([np.asarray(d) for d in self.recognizer.compute_face_descriptor(chips)], dtype=np.float32)

    def embed(self, images: Sequence[np.ndarray], landmarks: np.ndarray) -> np.ndarray:
        """RGB uint8 images with their landmarks [B, 5, 2] -> descriptors [B, 128] float32."""
        import dlib

        chips = []
        for img, lm in zip(images, landmarks, strict=True):
            img = np.ascontiguousarray(img)
            chips.append(dlib.extract_image_chip(img, self.chip_details(img, lm)))
        return self._descriptors(chips)

    def embed_pairs(
        self, photos: Sequence[np.ndarray], stylized: Sequence[np.ndarray], landmarks: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The chip geometry comes from the photo and is reused for its (pixel-aligned) stylization."""
        import dlib

        chips_a, chips_b = [], []
        for photo, styl, lm in zip(photos, stylized, landmarks, strict=True):
            photo, styl = np.ascontiguousarray(photo), np.ascontiguousarray(styl)
            details = self.chip_details(photo, lm)
            chips_a.append(dlib.extract_image_chip(photo, details))
            chips_b.append(dlib.extract_image_chip(styl, details))
        both = self._descriptors(chips_a + chips_b)
        return both[: len(chips_a)], both[len(chips_a) :]

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Euclidean distance per row, in float64 (dlib's metric)."""
        return np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), axis=1)

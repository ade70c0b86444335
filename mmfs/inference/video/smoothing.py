"""Temporal smoothing of face landmarks, so the aligned crop (and the pasted face) does not jitter.

Detectors place landmarks a pixel or two differently on every frame even when the face is still;
aligned crops then shake, and the stylized face shakes with them. `FaceTracker` links each frame's
detections to the previous frame's faces (nearest centre) and runs one filter per face over its five
landmarks. The default filter is the one-euro filter (Casiez, Roussel and Vogel, CHI 2012): a low-pass filter
whose cutoff rises with speed, so a still face is held steady and a moving one is followed with
little lag. Speeds are measured in crop sides per second, so the parameters do not depend on the
video's resolution or the face's size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mmfs.faces import Face

SMOOTHING_METHODS = ("one_euro", "ema", "none")


@dataclass(frozen=True)
class SmoothingConfig:
    """How landmarks are filtered over time and how faces are followed from frame to frame."""

    method: str = "one_euro"  # "one_euro" | "ema" (fixed weight) | "none"
    min_cutoff: float = 0.5  # Hz, one-euro cutoff of a still face: lower = steadier, but more lag on slow moves
    beta: float = 10.0  # Hz per (crop side / s): how fast the cutoff opens up with speed (less lag on fast moves)
    d_cutoff: float = 1.0  # Hz, cutoff of the speed estimate itself
    ema_alpha: float = 0.5  # "ema": weight of the newest detection (1 = no smoothing)
    # A face the detector misses for up to this many frames between two detections is filled in from
    # them (mmfs.inference.video.gaps): bounded on both sides, so a cut to a face-less shot shows no ghost.
    hold_frames: int = 12
    match_distance: float = 0.35  # a detection continues a track if their centres are within this x crop side

    def __post_init__(self) -> None:
        if self.method not in SMOOTHING_METHODS:
            raise ValueError(f"smoothing method must be one of {', '.join(SMOOTHING_METHODS)}, got {self.method!r}")
        if self.min_cutoff <= 0 or self.d_cutoff <= 0 or self.beta < 0:
            raise ValueError("min_cutoff and d_cutoff must be > 0 and beta >= 0")
        if not 0 < self.ema_alpha <= 1:
            raise ValueError(f"ema_alpha must be in (0, 1], got {self.ema_alpha}")
        if self.hold_frames < 0 or self.match_distance <= 0:
            raise ValueError("hold_frames must be >= 0 and match_distance > 0")


def crop_side(landmarks: np.ndarray) -> float:
    """Side length in pixels of the FFHQ crop square the five landmarks define (see `mmfs.faces.ffhq_quad`)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_to_eye = lm[1] - lm[0]
    eye_to_mouth = (lm[3] + lm[4]) * 0.5 - (lm[0] + lm[1]) * 0.5
    return 2.0 * max(math.hypot(*eye_to_eye) * 2.0, math.hypot(*eye_to_mouth) * 1.8)


def _alpha(cutoff: float, dt: float) -> float:
    """Weight of the new sample in a first-order low-pass filter with this cutoff (Hz) at this step (s)."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-euro filter over a point set [N, 2]; one cutoff for all points, so the face shape stays rigid."""

    def __init__(self, min_cutoff: float = 0.5, beta: float = 10.0, d_cutoff: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.value: np.ndarray | None = None
        self.speed: np.ndarray | None = None
        self.time: float | None = None

    def __call__(self, points: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        """Filter the points seen at time `t` (s); `scale` (px) turns speeds into scale units per second."""
        points = np.asarray(points, dtype=np.float64)
        if self.value is None or self.time is None:
            self.value, self.speed, self.time = points.copy(), np.zeros_like(points), t
            return self.value.copy()
        dt = t - self.time
        if dt <= 0:  # a repeated timestamp: treat as one frame at 30 fps rather than divide by zero
            dt = 1.0 / 30.0
        self.time = t
        raw_speed = (points - self.value) / dt
        self.speed = self.speed + _alpha(self.d_cutoff, dt) * (raw_speed - self.speed)
        speed = float(np.linalg.norm(self.speed, axis=-1).mean()) / max(scale, 1e-6)
        a = _alpha(self.min_cutoff + self.beta * speed, dt)
        self.value = self.value + a * (points - self.value)
        return self.value.copy()


class ExponentialFilter:
    """Exponential moving average with a fixed weight for the newest sample."""

    def __init__(self, alpha: float = 0.5) -> None:
        self.alpha = alpha
        self.value: np.ndarray | None = None

    def __call__(self, points: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        self.value = points.copy() if self.value is None else self.value + self.alpha * (points - self.value)
        return self.value.copy()


class _NoFilter:
    def __call__(self, points: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        return np.asarray(points, dtype=np.float64).copy()


def make_filter(config: SmoothingConfig):
    """A fresh filter for one face track."""
    if config.method == "one_euro":
        return OneEuroFilter(config.min_cutoff, config.beta, config.d_cutoff)
    if config.method == "ema":
        return ExponentialFilter(config.ema_alpha)
    return _NoFilter()


@dataclass
class Track:
    """One face followed over time: its filter and last smoothed face."""

    id: int
    filter: object
    face: Face
    length: int = 1

    @property
    def centre(self) -> np.ndarray:
        return self.face.landmarks.mean(0)


def match_faces(known: list[Face], faces: list[Face], reach: list[float]) -> dict[int, int]:
    """Which detection continues which known face: {known index: detection index}.

    Greedy, closest pairs first; a detection farther than `reach[k]` crop sides from known face k (a
    cut, another person) continues none, and starts a new track instead of dragging an old one across.
    """
    pairs = []
    for k, old in enumerate(known):
        side, centre = crop_side(old.landmarks), np.asarray(old.landmarks).mean(0)
        for d, face in enumerate(faces):
            dist = float(np.hypot(*(np.asarray(face.landmarks).mean(0) - centre))) / max(side, 1e-6)
            if dist <= reach[k]:
                pairs.append((dist, k, d))
    matched: dict[int, int] = {}
    for _, k, d in sorted(pairs):
        if k not in matched and d not in matched.values():
            matched[k] = d
    return matched


@dataclass
class FaceTracker:
    """Link detections to tracks frame by frame and return each tracked face with smoothed landmarks.

    A track the detections do not continue ends (misses are filled in before, by `gaps.GapFiller`).
    """

    config: SmoothingConfig = field(default_factory=SmoothingConfig)
    tracks: list[Track] = field(default_factory=list)
    _next_id: int = 0

    def update(self, faces: list[Face], t: float) -> list[Face]:
        """Smoothed faces to stylize at time `t`, left to right."""
        matched = match_faces([tr.face for tr in self.tracks], faces, [self.config.match_distance] * len(self.tracks))
        for k, d in matched.items():
            self._advance(self.tracks[k], faces[d], t)
        self.tracks = [tr for k, tr in enumerate(self.tracks) if k in matched]
        for d in sorted(set(range(len(faces))) - set(matched.values())):
            self._start(faces[d], t)
        return sorted((tr.face for tr in self.tracks), key=lambda f: (float(f.box[0]), float(f.box[1])))

    def _start(self, face: Face, t: float) -> None:
        track = Track(id=self._next_id, filter=make_filter(self.config), face=face)
        self._next_id += 1
        self._advance(track, face, t, new=True)
        self.tracks.append(track)

    def _advance(self, track: Track, face: Face, t: float, new: bool = False) -> None:
        raw = np.asarray(face.landmarks, dtype=np.float64)
        smoothed = track.filter(raw, t, crop_side(raw))
        shift = smoothed.mean(0) - raw.mean(0)
        box = np.asarray(face.box, dtype=np.float64) + np.tile(shift, 2)
        track.face = Face(box=box, landmarks=smoothed, score=face.score)
        track.length += 0 if new else 1

    def reset(self) -> None:
        self.tracks.clear()

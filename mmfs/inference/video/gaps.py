"""Frames where the detector blinks: a face missed between two detections is filled in from them.

Detectors miss a face now and then (motion blur, a hand, a turn of the head), and a frame passed on
unstylized between stylized ones flickers. `GapFiller` holds frames back while a face that was being
followed is missing. When the face is found again within `max_gap` frames, the missed frames get its
landmarks interpolated between the detection before and the one after (a face that moves during the
gap is followed, not left behind). When it is not (the face left the picture, or the shot changed), the
held frames go on without it, so no ghost face lingers after a cut. At the end of the video a face
missed in its last frames keeps its last place.

Frames wait at most `max_gap` frames, so memory holds that many frames more.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from mmfs.faces import Face

from .smoothing import match_faces

Item = TypeVar("Item")


@dataclass
class _Track:
    """A face being followed: its last detection, the frame of that detection, and frames missed since."""

    face: Face
    index: int
    missed: int = 0


@dataclass
class _Frame(Generic[Item]):
    item: Item
    index: int
    faces: list[Face]
    filled: int = 0


def interpolated(before: Face, after: Face, w: float) -> Face:
    """The face a fraction `w` of the way from `before` to `after` (landmarks and box, linearly)."""
    return Face(
        box=(1 - w) * before.box + w * after.box,
        landmarks=(1 - w) * before.landmarks + w * after.landmarks,
        score=min(before.score, after.score),
    )


@dataclass
class GapFiller(Generic[Item]):
    """Feed each frame's detections in order (`push`); get frames back, in order, with gaps filled.

    `match_distance` (crop sides) is how far a face may move per frame and still be the same face;
    across a gap of n frames it may move n + 1 times that.
    """

    max_gap: int
    match_distance: float = 0.35
    _tracks: list[_Track] = field(default_factory=list)
    _waiting: deque = field(default_factory=deque)
    _count: int = 0

    def push(self, item: Item, faces: list[Face]) -> list[tuple[Item, list[Face], int]]:
        """Frames now complete: (item, faces to stylize, how many of them were filled in), in input order."""
        index, self._count = self._count, self._count + 1
        self._waiting.append(_Frame(item, index, list(faces)))
        reach = [self.match_distance * (tr.missed + 1) for tr in self._tracks]
        matched = match_faces([tr.face for tr in self._tracks], faces, reach)
        for k, track in enumerate(self._tracks):
            if k in matched:
                self._fill(track, faces[matched[k]], index)
                track.face, track.index, track.missed = faces[matched[k]], index, 0
            else:
                track.missed += 1
        # a face missed longer than max_gap has left: its waiting frames go on without it
        self._tracks = [tr for tr in self._tracks if tr.missed <= self.max_gap]
        self._tracks += [_Track(faces[d], index) for d in range(len(faces)) if d not in matched.values()]
        return self._ready()

    def flush(self) -> list[tuple[Item, list[Face], int]]:
        """The frames still waiting at the end of the video; faces missed in the last frames keep their place."""
        for track in self._tracks:
            if track.missed:
                self._fill(track, track.face, self._count)
        self._tracks = []
        return self._ready()

    def _fill(self, track: _Track, found: Face, index: int) -> None:
        """Faces for the frames between the track's last detection and `found` at frame `index`."""
        span = index - track.index
        for frame in self._waiting:
            if track.index < frame.index < index:
                frame.faces.append(interpolated(track.face, found, (frame.index - track.index) / span))
                frame.filled += 1

    def _ready(self) -> list[tuple[Item, list[Face], int]]:
        # A frame is complete once no face missing at it can still be found again.
        first_open = min((tr.index + 1 for tr in self._tracks if tr.missed), default=self._count)
        out = []
        while self._waiting and self._waiting[0].index < first_open:
            frame = self._waiting.popleft()
            faces = sorted(frame.faces, key=lambda f: (float(f.box[0]), float(f.box[1])))
            out.append((frame.item, faces, frame.filled))
        return out


__all__ = ["GapFiller", "interpolated"]

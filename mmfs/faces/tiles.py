"""Small faces in large photos: a scan in overlapping tiles, and one list of boxes from several scans.

A detector that shrinks a large photo to scan it (dlib's HOG: to 2048 px) cannot see the faces the
shrinking made smaller than its window: an 80 px face in a 4000 x 3000 photo becomes 41 px. Scanning
the whole photo at full resolution finds them, but one call on a 50-megapixel photo holds its whole
feature pyramid in memory at once; tiles bound that. Two tiles overlap by at least the largest face
the tiled scan is responsible for (larger ones the shrunk scan finds), so every such face lies whole
in some tile. The same face found twice (two tiles, or a tile and the shrunk scan) is one face:
`merge_boxes` keeps the best-scoring box of each overlapping group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def tile_grid(width: int, height: int, side: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1) of tiles at most `side` px that cover the photo, neighbours sharing `overlap` px."""
    if overlap >= side:
        raise ValueError(f"overlap {overlap} must be smaller than the tile side {side}")

    def spans(length: int) -> list[tuple[int, int]]:
        if length <= side:
            return [(0, length)]
        count = math.ceil((length - overlap) / (side - overlap))
        # as few tiles as fit, shrunk to share the length evenly, so no pixel is scanned more than needed
        size = math.ceil((length + (count - 1) * overlap) / count)
        firsts = [min(k * (size - overlap), length - size) for k in range(count)]
        return [(a, a + size) for a in firsts]

    return [(x0, y0, x1, y1) for y0, y1 in spans(height) for x0, x1 in spans(width)]


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def merge_boxes(
    boxes: Sequence[np.ndarray], scores: Sequence[float], iou: float = 0.3
) -> tuple[list[np.ndarray], list[float]]:
    """Boxes of one photo from several scans, overlapping ones (IoU above `iou`) reduced to the best-scoring one.

    A face cut by a tile's edge may give a shifted box with a lower score; the whole face, found in
    the neighbouring tile, overlaps it and wins.
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    kept: list[int] = []
    for i in order:
        if all(box_iou(boxes[i], boxes[k]) <= iou for k in kept):
            kept.append(int(i))
    return [boxes[k] for k in kept], [float(scores[k]) for k in kept]


__all__ = ["box_iou", "merge_boxes", "tile_grid"]

"""FFHQ-style face alignment as one similarity transform, so paste-back inverts the very same matrix.

The crop follows the FFHQ dataset recipe (eye centres and mouth corners -> an oriented square `quad`).
Unlike FFHQ's script, the square is mapped to the output with a single 2x3 matrix: pixels outside
the photo are filled by mirror reflection (no blur / median-colour fade), large faces are first
box-filtered by an integer factor (antialiasing), then resampled bicubically.

Coordinates everywhere are pixel indices (pixel centres at integers), x then y.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mmfs.errors import NoFaceError

from .detect import Face, FaceDetector


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """An aligned size x size RGB crop and the 2x3 `matrix` mapping original image coords -> crop coords."""

    image: np.ndarray
    matrix: np.ndarray
    face: Face
    size: int

    @property
    def quad(self) -> np.ndarray:
        """The crop's corners in the original image (top-left, bottom-left, bottom-right, top-right)."""
        return ffhq_quad(self.face.landmarks)


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """FFHQ's oriented crop square [4, 2] (top-left, bottom-left, bottom-right, top-right) from 5 landmarks."""
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_left, eye_right, mouth_left, mouth_right = lm[0], lm[1], lm[3], lm[4]
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    # The crop's x axis balances the eye line against the eye-mouth line turned by 90 degrees.
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def _affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 affine matrix taking three source points exactly onto three destination points."""
    a = np.concatenate([src, np.ones((3, 1))], axis=1)  # [3, 3]
    return np.linalg.solve(a, dst).T  # [2, 3]


def quad_to_matrix(quad: np.ndarray, size: int) -> np.ndarray:
    """2x3 matrix: image coords -> coords in a size x size crop whose outer corners are the quad's corners."""
    corners = np.array([[0.0, 0.0], [0.0, size], [size, 0.0]])  # pixel-edge coords of the crop's corners
    matrix = _affine_from_points(np.asarray(quad, dtype=np.float64)[[0, 1, 3]], corners)
    # Like FFHQ's `quad + 0.5`: the quad's corners are image pixel centres placed on the crop's outer
    # edges; moving from edge to centre coords in the crop is a shift of -0.5.
    matrix[:, 2] -= 0.5
    return matrix


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """outer(inner(p)) as one 2x3 matrix."""
    full = lambda m: np.vstack([np.asarray(m, dtype=np.float64), [0.0, 0.0, 1.0]])  # noqa: E731
    return (full(outer) @ full(inner))[:2]


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 matrix to points [N, 2]."""
    points = np.asarray(points, dtype=np.float64)
    return points @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]


def _reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """Mirror out-of-range indices back into [0, n) (edge pixel not repeated), for any distance."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.mod(index, period)
    return np.where(index >= n, period - index, index)


def warp(
    src: np.ndarray, out_to_src: np.ndarray, width: int, height: int, *, pad: str = "reflect", resample: str = "bicubic"
) -> np.ndarray:
    """Resample `src` ([H, W, C] uint8 or [H, W] float32) onto a width x height grid via out -> src coords.

    Only the source window the output needs is gathered (with `pad` = "reflect" or "zero" outside
    the source); when the output shrinks it by 2x or more it is first box-reduced by an integer factor.
    """
    out_to_src = np.asarray(out_to_src, dtype=np.float64)
    corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [-0.5, height - 0.5], [width - 0.5, height - 0.5]])
    reach = apply_affine(out_to_src, corners)
    src_per_out = math.sqrt(abs(np.linalg.det(out_to_src[:, :2])))
    factor = max(1, int(math.floor(src_per_out)))
    margin = 3 * factor  # bicubic support (2 px) plus rounding, in source pixels
    x0, y0 = np.floor(reach.min(0)).astype(int) - margin
    x1, y1 = np.ceil(reach.max(0)).astype(int) + margin
    x1 += (-(x1 - x0)) % factor  # whole reduce boxes
    y1 += (-(y1 - y0)) % factor
    h, w = src.shape[:2]
    xs, ys = np.arange(x0, x1), np.arange(y0, y1)
    if pad == "reflect":
        window = src[np.ix_(_reflect_index(ys, h), _reflect_index(xs, w))]
    elif pad == "zero":
        window = np.zeros((len(ys), len(xs)) + src.shape[2:], dtype=src.dtype)
        iy, ix = (ys >= 0) & (ys < h), (xs >= 0) & (xs < w)
        window[np.ix_(iy, ix)] = src[np.ix_(ys[iy], xs[ix])]
    else:
        raise ValueError(f"pad must be 'reflect' or 'zero', not {pad!r}")
    # window index = src index - (x0, y0); after reducing by f, src = f * window' + (f - 1) / 2 + origin.
    to_window = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]])
    image = Image.fromarray(np.ascontiguousarray(window))
    if factor > 1:
        image = image.reduce(factor)
        shift = (factor - 1) / 2.0
        to_window = np.array([[1.0 / factor, 0.0, -(x0 + shift) / factor], [0.0, 1.0 / factor, -(y0 + shift) / factor]])
    m = compose_affine(to_window, out_to_src)
    # PIL samples at pixel-edge coordinates: shift the index-coordinate matrix by half a pixel on both sides.
    data = (m[0, 0], m[0, 1], m[0, 2] + 0.5 - 0.5 * (m[0, 0] + m[0, 1]),
            m[1, 0], m[1, 1], m[1, 2] + 0.5 - 0.5 * (m[1, 0] + m[1, 1]))  # fmt: skip
    method = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[resample]
    out = image.transform((width, height), Image.AFFINE, data, method, fillcolor=0)
    return np.asarray(out).copy()


def align_face(image: np.ndarray, face: Face, size: int) -> AlignedFace:
    """Warp one face to an FFHQ-aligned size x size RGB crop."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    matrix = quad_to_matrix(ffhq_quad(face.landmarks), size)
    crop = warp(np.ascontiguousarray(image), invert_affine(matrix), size, size, pad="reflect")
    return AlignedFace(image=crop, matrix=matrix, face=face, size=int(size))


def detect_and_align(image: np.ndarray, detector: FaceDetector, size: int) -> list[AlignedFace]:
    """Every face in the image, aligned, left to right; NoFaceError when there is none."""
    faces = detector.detect(image)
    if not faces:
        raise NoFaceError("no face found")
    return [align_face(image, face, size) for face in faces]

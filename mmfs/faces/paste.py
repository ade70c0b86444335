"""Paste a (stylized) aligned crop back into the photo through the inverse of its alignment matrix."""

from __future__ import annotations

import numpy as np

from .align import AlignedFace, apply_affine, compose_affine, invert_affine, warp


def feather_mask(height: int, width: int, feather: float) -> np.ndarray:
    """Crop-space blend weights [H, W] float32: 1 in the middle, smoothly 0 at the edges over `feather` of the side."""

    def ramp(n: int) -> np.ndarray:
        centre = np.arange(n) + 0.5
        edge = np.minimum(centre, n - centre) / n  # distance to the nearer edge, as a fraction of the side
        if feather <= 0:
            return np.ones(n)
        t = np.clip(edge / feather, 0.0, 1.0)
        return t * t * (3.0 - 2.0 * t)  # smoothstep: no visible kink where the ramp starts

    return np.outer(ramp(height), ramp(width)).astype(np.float32)


def paste_back(image: np.ndarray, stylized: np.ndarray, aligned: AlignedFace, *, feather: float = 0.1) -> np.ndarray:
    """A copy of `image` with `stylized` (the aligned crop, edited, any size) warped back in, edges feathered.

    Only pixels under the crop's quad change; call it once per face to paste several faces.
    """
    if not 0.0 <= feather <= 0.5:
        raise ValueError(f"feather must be in [0, 0.5], got {feather}")
    stylized = np.ascontiguousarray(stylized)
    if stylized.dtype != np.uint8 or stylized.ndim != 3 or stylized.shape[2] != 3:
        raise TypeError(f"stylized must be an RGB uint8 array [H, W, 3], got {stylized.dtype} {stylized.shape}")
    out = np.array(image, dtype=np.uint8, copy=True)
    th, tw = stylized.shape[:2]
    # The stylized crop may differ in size from the aligned one: rescale pixel-edge coords, not centres.
    sx, sy = tw / aligned.size, th / aligned.size
    rescale = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
    image_to_crop = compose_affine(rescale, aligned.matrix)
    # Only the image window under the warped crop is touched.
    corners = np.array([[-0.5, -0.5], [tw - 0.5, -0.5], [-0.5, th - 0.5], [tw - 0.5, th - 0.5]])
    reach = apply_affine(invert_affine(image_to_crop), corners)
    h, w = out.shape[:2]
    x0, y0 = np.maximum(np.floor(reach.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(reach.max(0)).astype(int) + 2, [w, h])
    if x1 <= x0 or y1 <= y0:
        return out
    window_to_crop = compose_affine(image_to_crop, np.array([[1.0, 0.0, x0], [0.0, 1.0, y0]]))
    ww, wh = int(x1 - x0), int(y1 - y0)
    face = warp(stylized, window_to_crop, ww, wh, pad="reflect", resample="bicubic").astype(np.float32)
    alpha = warp(feather_mask(th, tw, feather), window_to_crop, ww, wh, pad="zero", resample="bilinear")
    alpha = np.clip(alpha, 0.0, 1.0)[..., None]
    region = out[y0:y1, x0:x1].astype(np.float32)
    blended = np.clip(np.rint(region * (1.0 - alpha) + face * alpha), 0, 255).astype(np.uint8)
    touched = alpha[..., 0] > 0
    out[y0:y1, x0:x1][touched] = blended[touched]
    return out

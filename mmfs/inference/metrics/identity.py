"""Identity preservation: distance between the embedding of each photo and of its stylization.

With an ArcFace ONNX model this is ArcFace-Dist (1 - cosine, reported as `arcface_dist`); without one,
dlib's offline 128-d descriptor gives `dlib_id_dist` (Euclidean). Both cut the face with five landmarks
(left eye, right eye, nose tip, left mouth corner, right mouth corner; left/right as seen in the image),
taken from the photo and reused for its stylization, which is pixel-aligned with it. When no landmarks
are given the inputs are taken to be FFHQ-aligned crops and the canonical FFHQ positions are used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from mmfs.data.images import to_uint8

# Mean five landmarks of FFHQ-aligned faces in a 512 px crop (pixel centres at integers): the template
# widely used for FFHQ crops (e.g. facexlib's). The FFHQ recipe applied to the skimage astronaut puts
# her eyes within 0.01 of the crop side from these.
FFHQ_LANDMARKS_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19360],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ]
)


def canonical_landmarks(width: int, height: int | None = None) -> np.ndarray:
    """The FFHQ five-point template [5, 2] scaled to a `width` x `height` aligned crop."""
    height = width if height is None else height
    scale = np.array([width, height], dtype=np.float64) / 512.0
    return (FFHQ_LANDMARKS_512 + 0.5) * scale - 0.5


class IdentityDistance(Protocol):
    """ArcFaceOnnx or DlibIdentity: embeddings of (photo, stylization) pairs and their distance."""

    name: str

    def embed_pairs(
        self, photos: Sequence[np.ndarray], stylized: Sequence[np.ndarray], landmarks: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray: ...


class RunningMean:
    """Count, sum and sum of squares of scalars (float64): mean and std in O(1) memory."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.total_sq = 0.0

    def update(self, values: np.ndarray | torch.Tensor) -> None:
        values = np.asarray(
            values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64
        ).ravel()
        self.count += values.size
        self.total += float(values.sum())
        self.total_sq += float((values**2).sum())

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")

    @property
    def std(self) -> float:
        """Sample standard deviation (n - 1)."""
        if self.count < 2:
            return float("nan")
        return float(np.sqrt(max(self.total_sq - self.count * self.mean**2, 0.0) / (self.count - 1)))


class MeanDistance:
    """A metric that is the mean of distances streamed over batches: subclasses `update` the `values`."""

    def __init__(self) -> None:
        self.values = RunningMean()

    @property
    def count(self) -> int:
        return self.values.count

    def compute(self) -> float:
        return self.values.mean


def as_uint8_images(images: torch.Tensor | np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """[-1, 1] tensors [B, 3, H, W], or uint8 arrays [B, H, W, 3] / lists of [H, W, 3] -> list of RGB uint8."""
    if isinstance(images, torch.Tensor):
        if images.dtype == torch.uint8:
            return list(images.permute(0, 2, 3, 1).cpu().numpy())
        return list(to_uint8(images))
    out = [np.ascontiguousarray(img) for img in images]
    if any(img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 for img in out):
        raise TypeError("expected RGB uint8 arrays [H, W, 3] or [-1, 1] tensors [B, 3, H, W]")
    return out


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))


class IdentityMetric(MeanDistance):
    """Mean identity distance between photos and their stylizations, streamed over batches."""

    def __init__(self, encoder: IdentityDistance) -> None:
        super().__init__()
        self.encoder = encoder
        self.name = encoder.name

    def update(
        self,
        photos: torch.Tensor | np.ndarray | Sequence[np.ndarray],
        stylized: torch.Tensor | np.ndarray | Sequence[np.ndarray],
        landmarks: np.ndarray | None = None,
    ) -> np.ndarray:
        """Add a batch of pairs; `landmarks` [B, 5, 2] are in photo pixels (None: FFHQ-aligned crops)."""
        photos, stylized = as_uint8_images(photos), as_uint8_images(stylized)
        if len(photos) != len(stylized):
            raise ValueError(f"{len(photos)} photos but {len(stylized)} stylized images")
        # A stylization at another resolution is brought to its photo's so the landmarks fit both.
        stylized = [
            s if s.shape[:2] == p.shape[:2] else _resize(s, *p.shape[:2]) for p, s in zip(photos, stylized, strict=True)
        ]
        if landmarks is None:
            landmarks = (
                np.stack([canonical_landmarks(p.shape[1], p.shape[0]) for p in photos])
                if photos
                else np.zeros((0, 5, 2))
            )
        landmarks = np.asarray(landmarks, dtype=np.float64).reshape(len(photos), 5, 2)
        emb_a, emb_b = self.encoder.embed_pairs(photos, stylized, landmarks)
        distances = np.asarray(self.encoder.distance(emb_a, emb_b), dtype=np.float64)
        self.values.update(distances)
        return distances


def build_identity_encoder(
    arcface_weights: str | os.PathLike[str] | None = None,
    *,
    device: torch.device | str = "cpu",
    dlib_model: str | os.PathLike[str] | None = None,
) -> IdentityDistance:
    """ArcFace when an ONNX model path is given, else dlib's offline descriptor (named dlib_id_dist)."""
    if arcface_weights is not None:
        from mmfs.external.arcface import ArcFaceOnnx

        return ArcFaceOnnx.from_pretrained(arcface_weights, device=device)
    from mmfs.external.dlib_identity import DlibIdentity

    return DlibIdentity.from_pretrained(dlib_model)


def face_distances(
    encoder: IdentityDistance,
    photo: np.ndarray,
    stylized: np.ndarray | Sequence[np.ndarray],
    faces: Sequence[object] | None,
    resolution: int,
) -> list[float]:
    """The identity distance of each face of one photo to its stylization (the number `mmfs web` shows).

    `stylized` is the photo with its faces pasted back (an array of the photo's size) or one aligned crop
    per face, in `faces` order (`faces`: the photo's detected `mmfs.faces.Face`s; None when `photo` is
    itself an aligned crop). Both sides are cut with the same FFHQ alignment, so the landmarks fit both.
    """
    from mmfs.faces import align_face

    if faces is None:
        photos, crops = [photo], list(stylized) if not isinstance(stylized, np.ndarray) else [stylized]
    else:
        photos = [align_face(photo, face, resolution).image for face in faces]
        pasted = isinstance(stylized, np.ndarray) and stylized.shape == photo.shape
        crops = [align_face(stylized, face, resolution).image for face in faces] if pasted else list(stylized)
    return [float(d) for d in IdentityMetric(encoder).update(photos, crops)]

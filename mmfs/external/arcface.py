"""ArcFace identity embeddings from an insightface recognition ONNX model (e.g. buffalo_l's w600k_r50.onnx).

The model is loaded by local path through `insightface.model_zoo.get_model`, which routes a square
>=112 px single-output graph to `ArcFaceONNX`; faces are cut with insightface's own five-point
similarity alignment (`face_align.norm_crop`, the 112x112 template ArcFace was trained on) and embedded
with `get_feat` (BGR in, (x - 127.5) / 127.5). ONNX gives no gradients: this serves metrics only.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mmfs.errors import CheckpointError, MissingWeightsError, MMFSError
from mmfs.utils.device import onnx_providers

ARCFACE_HINT = (
    "an insightface recognition ONNX model such as w600k_r50.onnx from the buffalo_l pack "
    "(pass --arcface-weights PATH; without it the offline dlib identity distance is used)"
)


class ArcFaceOnnx:
    """An insightface `ArcFaceONNX` model: aligned 5-point crops -> embeddings; distance = 1 - cosine."""

    name = "arcface_dist"

    def __init__(self, model: object) -> None:
        self.model = model
        self.input_size = int(model.input_size[0])
        batch = model.input_shape[0]
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str] | None, *, device: torch.device | str = "cpu") -> ArcFaceOnnx:
        """Load a recognition model by local path; a missing file is a MissingWeightsError."""
        if path is None:
            raise MissingWeightsError(f"ArcFace-Dist needs {ARCFACE_HINT}")
        path = Path(path)
        if not path.is_file():
            raise MissingWeightsError(f"{path}: no such file; ArcFace-Dist needs {ARCFACE_HINT}")
        try:
            from insightface.model_zoo import get_model
            from insightface.model_zoo.arcface_onnx import ArcFaceONNX
        except ImportError:
            raise MMFSError("ArcFace-Dist needs insightface and onnxruntime: pip install 'mmfs[faces]'") from None

        try:
            model = get_model(str(path), providers=onnx_providers(device))
        except Exception as exc:  # not ONNX, truncated, or an unsupported graph
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(f"{path}: cannot load as an ONNX model ({first})") from None
        if not isinstance(model, ArcFaceONNX):
            kind = type(model).__name__ if model is not None else "an unrecognised model"
            raise CheckpointError(f"{path}: is {kind}, not a face recognition model; ArcFace-Dist needs {ARCFACE_HINT}")
        return cls(model)

    def align(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """RGB uint8 [H, W, 3] + five landmarks [5, 2] (image x, y) -> the aligned RGB crop [S, S, 3]."""
        from insightface.utils.face_align import norm_crop

        with warnings.catch_warnings():
            # insightface still calls skimage's deprecated SimilarityTransform.estimate; the result is unchanged.
            warnings.simplefilter("ignore", FutureWarning)
            return norm_crop(
                np.ascontiguousarray(image),
                landmark=np.asarray(landmarks, dtype=np.float32),
                image_size=self.input_size,
            )

    def embed(self, images: Sequence[np.ndarray], landmarks: np.ndarray) -> np.ndarray:
        """RGB uint8 images with their landmarks [B, 5, 2] -> embeddings [B, D] float32."""
        # get_feat swaps channels itself (it expects OpenCV's BGR), hence the [..., ::-1].
        crops = [
            np.ascontiguousarray(self.align(img, lm)[..., ::-1]) for img, lm in zip(images, landmarks, strict=True)
        ]
        if not crops:
            return np.zeros((0, 0), dtype=np.float32)
        step = self.fixed_batch or len(crops)
        feats = [self.model.get_feat(crops[i : i + step]) for i in range(0, len(crops), step)]
        return np.concatenate(feats).astype(np.float32)

    def embed_pairs(
        self, photos: Sequence[np.ndarray], stylized: Sequence[np.ndarray], landmarks: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Both images of each pair are cut with the same landmarks (a stylization is pixel-aligned with its photo)."""
        both = self.embed(list(photos) + list(stylized), np.concatenate([landmarks, landmarks]))
        return both[: len(photos)], both[len(photos) :]

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """1 - cosine similarity per row, in float64."""
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        return 1.0 - cos

"""What every external-network wrapper shares: the frozen base class, the interfaces, the preprocessing.

Contract (docs/architecture.md, "external/"): a wrapper takes float32 images `[B, 3, H, W]` in [-1, 1]
of any size, resizes and normalises them itself as the reference does, keeps the wrapped network in
eval mode with frozen parameters (gradients reach the *inputs*, never the network's `.grad`), receives
the already-built network in its constructor, and touches disk or network only in `from_pretrained`.
The preprocessing constants live here and nowhere else in mmfs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from mmfs.errors import MissingWeightsError
from mmfs.utils.resize import bilinear_resize

# OpenAI CLIP's pixel statistics (the official `preprocess_clip_image`).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# ImageNet statistics, used by DINO (Splice's structure loss).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FrozenExternal(nn.Module):
    """Base of every wrapper: the wrapped network is in eval mode and its parameters never get `.grad`."""

    def freeze(self) -> None:
        """Put every sub-module in eval mode and switch off gradients of every parameter."""
        super().train(False)
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> FrozenExternal:
        """Stay in eval mode even when a parent module is put in training mode (no dropout, fixed stats)."""
        return super().train(False)


def check_images(x: Tensor, name: str = "x") -> None:
    """Raise ValueError unless `x` is a float batch of RGB images `[B, 3, H, W]`."""
    if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor [B, 3, H, W] in [-1, 1], got {x.dtype} {tuple(x.shape)}")


def to_unit_range(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], as the reference does before every external network (`x*0.5+0.5`)."""
    return x * 0.5 + 0.5


def resize(x: Tensor, size: tuple[int, int], *, antialias: bool) -> Tensor:
    """Bilinear resize (align_corners=False) to `size` = (H, W); a no-op when the size already matches.

    Deterministic gradients on CUDA under `--deterministic` (`mmfs.utils.resize`)."""
    return bilinear_resize(x, size, antialias=antialias)


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Per-channel standardisation with `[1, 3, 1, 1]` mean and std buffers."""
    return (x - mean) / std


def stats_buffer(values: Sequence[float]) -> Tensor:
    """A `[1, C, 1, 1]` float32 tensor for use as a non-persistent buffer."""
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


def require_file(path: str | os.PathLike[str], what: str, flag: str) -> Path:
    """Return `path` as a Path, or raise MissingWeightsError naming `what` and the flag to fix it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingWeightsError(f"{what} not found at {path}; pass an existing file with {flag} PATH")
    return path


@runtime_checkable
class ImageTextEncoder(Protocol):
    """CLIP: images and prompts into one L2-normalised embedding space, plus intermediate patch tokens."""

    embed_dim: int

    def encode_image(self, x: Tensor) -> Tensor: ...  # [B, D], L2-normalised

    def encode_text(self, prompts: Sequence[str]) -> Tensor: ...  # [len(prompts), D], L2-normalised

    def image_tokens(self, x: Tensor, block: int) -> Tensor: ...  # [B, N, C], CLS dropped


@runtime_checkable
class TokenEncoder(Protocol):
    """DINO: per-token attention keys of one transformer block."""

    def keys(self, x: Tensor, block: int = -1) -> Tensor: ...  # [B, N, C], CLS included, heads concatenated


@runtime_checkable
class PerceptualDistance(Protocol):
    """LPIPS: one perceptual distance per image pair."""

    def distance(self, x: Tensor, y: Tensor) -> Tensor: ...  # [B]


@runtime_checkable
class IdentityEncoder(Protocol):
    """Face recognition (ArcFace): an L2-normalised identity embedding per image."""

    def embed(self, x: Tensor) -> Tensor: ...  # [B, D]


@runtime_checkable
class FeatureExtractor(Protocol):
    """Inception for FID: pooled features per image."""

    def features(self, x: Tensor) -> Tensor: ...  # [B, D]

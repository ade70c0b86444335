"""DINO self-similarity structure loss (the official code's, from Splice's `calculate_global_ssim_loss`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmfs.external.base import TokenEncoder


def self_similarity(keys: Tensor) -> Tensor:
    """Cosine self-similarity `[B, N, N]` of tokens `[B, N, C]`: `k k^T / clamp(|k| |k|^T, 1e-8)`."""
    norms = keys.norm(dim=-1, keepdim=True)  # [B, N, 1]
    return keys @ keys.transpose(1, 2) / (norms @ norms.transpose(1, 2)).clamp(min=1e-8)


def dino_structure_loss(dino: TokenEncoder, fake: Tensor, real: Tensor, *, block: int = -1) -> Tensor:
    """SUM over the batch of per-image `MSE(sim(fake_b), sim(real_b))` on DINO keys, as the reference.

    Summing (not averaging) matches the reference, so the effective weight grows with the batch size.
    The real images' similarity is a target computed under `no_grad`; gradients reach `fake` only.

    Args:
        dino: key extractor (`DinoViT`); the reference uses the last block of ViT-B/8.
        fake: generated images `[B, 3, H, W]` in [-1, 1].
        real: the matching input photos, same shape.
        block: transformer block whose keys are compared.
    """
    if fake.shape != real.shape:
        raise ValueError(f"fake and real must have equal shapes, got {tuple(fake.shape)} and {tuple(real.shape)}")
    with torch.no_grad():
        target = self_similarity(dino.keys(real, block))
    sim = self_similarity(dino.keys(fake, block))
    per_image = F.mse_loss(sim, target, reduction="none").flatten(1).mean(1)  # [B]
    return per_image.sum()

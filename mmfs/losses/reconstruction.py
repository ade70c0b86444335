"""Reconstruction losses of stages I and III (docs/training.md, docs/mapper.md): pixel L1 and D-feature L1."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor


def l1_loss(fake: Tensor, real: Tensor) -> Tensor:
    """Mean absolute error between two tensors of the same shape (`nn.L1Loss()`)."""
    if fake.shape != real.shape:
        raise ValueError(f"l1_loss needs equal shapes, got {tuple(fake.shape)} and {tuple(real.shape)}")
    return F.l1_loss(fake, real)


def feature_matching_loss(fake_feats: Sequence[Tensor], real_feats: Sequence[Tensor]) -> Tensor:
    """Sum over feature maps k of `L1(fake_k, real_k)` (each a mean); the real features are targets (detached).

    The reference computes the real discriminator features under `no_grad`; detaching here is the same.
    """
    if len(fake_feats) != len(real_feats) or not fake_feats:
        raise ValueError(f"need equally many feature maps, got {len(fake_feats)} and {len(real_feats)}")
    return sum(l1_loss(f, r.detach()) for f, r in zip(fake_feats, real_feats, strict=True))

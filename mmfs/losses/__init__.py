"""Loss functions of the four training stages; each returns a scalar (weights per stage: docs/training.md, mapper.md, adapt.md)."""

from __future__ import annotations

from mmfs.losses.adversarial import d_logistic_loss, g_nonsaturating_loss, r1_penalty
from mmfs.losses.clip import clip_direction_loss, projector_from_tokens, token_projection_loss
from mmfs.losses.reconstruction import feature_matching_loss, l1_loss
from mmfs.losses.structure import dino_structure_loss, self_similarity

__all__ = [
    "clip_direction_loss",
    "d_logistic_loss",
    "dino_structure_loss",
    "feature_matching_loss",
    "g_nonsaturating_loss",
    "l1_loss",
    "projector_from_tokens",
    "r1_penalty",
    "self_similarity",
    "token_projection_loss",
]

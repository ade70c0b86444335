"""What several stages share: the Stylizer's random and preview styles, the frozen CLIP and DINO, the R1 and
reconstruction objectives.

(The photo dataset and the fixed preview inputs are on the `Stage` base, `mmfs.train.stage`.)
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mmfs.losses import feature_matching_loss, l1_loss, r1_penalty

if TYPE_CHECKING:
    from mmfs.nn import Stylizer


def random_styles(stylizer: Stylizer, batch: int, mixing_prob: float, device: torch.device) -> Tensor:
    """Random styles `[batch, num_ws, w_dim]` of a Stylizer as the reference draws them.

    Python's `random` decides style mixing (one draw per call, even at `mixing_prob` 0) and the crossover
    in [1, num_ws - 1]; torch draws the z: two batches when mixing (slots before the crossover from the
    first), else one with the same w in every slot.
    """
    z_dim = stylizer.cfg.z_dim
    if random.random() < mixing_prob:
        z1 = torch.randn(batch, z_dim, device=device)
        z2 = torch.randn(batch, z_dim, device=device)
        return stylizer.mixed_ws(z1, z2, random.randint(1, stylizer.num_ws - 1))
    return stylizer.ws_from_z(torch.randn(batch, z_dim, device=device))


def in_fixed_styles(stylizer: Stylizer, photos: Tensor, latents: Tensor, noise: dict[str, Any]) -> Iterator[Tensor]:
    """The photos rendered in the style of each z of `latents` in turn (same w in every slot), for previews.

    `noise` is `Stage.preview_noise()`. Lazy, so that a caller rendering more per style draws the noise in
    its own order.
    """
    for z in latents:
        yield stylizer(photos, stylizer.ws_from_z(z[None].expand(len(photos), -1)), **noise)


def build_dino(spec: str, image_size: int, device: torch.device, given: Any = None):
    """The DINO of `--dino` (`mmfs.external.build.build_dino`; a tiny one sees `image_size` px).

    `given` (tests) replaces it.
    """
    from mmfs.external.build import build_dino as named_dino

    return given.to(device) if given is not None else named_dino(spec, device, image_size=image_size)


def build_stage_clip(opts: Any, embed_dim: int, device: torch.device, given: Any = None):
    """The CLIP of `--clip-model` / `--clip-tag` / `--clip-weights` (or `given`, tests), checked to fit the mapper."""
    from mmfs.external.build import build_clip, check_clip_dim
    from mmfs.pretrained import clip_weights

    if given is None:
        weights = clip_weights(opts.clip_weights, opts.clip_model, opts.clip_tag)  # the catalogue's CLIP by default
        return build_clip(opts.clip_model, weights, tag=opts.clip_tag, embed_dim=embed_dim).to(device)
    check_clip_dim(given, embed_dim)
    return given.to(device)


def clip_record(opts: Any) -> dict[str, str]:
    """The CLIP a mapper is trained or adapted with, for the file's metadata (`stylize` / `adapt` default to it)."""
    weights = os.path.abspath(opts.clip_weights) if opts.clip_weights else ""
    return {"clip_model": opts.clip_model, "clip_tag": opts.clip_tag, "clip_weights": weights}


def r1_losses(real_logits: Tensor, real: Tensor, *, gamma: float, every: int) -> dict[str, Tensor]:
    """Lazy R1: `r1 * gamma / 2 * every`, plus `0 * D(real)` so every D parameter takes part (DDP)."""
    r1 = r1_penalty(real_logits, real)
    return {"r1": r1, "total": r1 * (gamma / 2 * every) + 0.0 * real_logits.sum()}


def reconstruction_losses(
    fake: Tensor, real: Tensor, fake_feats: Sequence[Tensor], real_feats: Sequence[Tensor], *, l1: float, feat: float
) -> dict[str, Tensor]:
    """Stage I / III objective: `l1 * L1(fake, real) + feat * sum_k L1(fake_k, real_k)` (reference: 1.0 and 4.0)."""
    pixel = l1_loss(fake, real)
    features = feature_matching_loss(fake_feats, real_feats)
    return {"l1": pixel, "feat": features, "total": l1 * pixel + feat * features}

"""The networks of mmfs: StyleGAN2 blocks, the Stylizer, the StyleGAN2 prior/discriminator, the CLIP mapper."""

from __future__ import annotations

from mmfs.nn.clip_mapper import ClipMapper
from mmfs.nn.fast import to_fast
from mmfs.nn.stylegan2 import Discriminator, Generator
from mmfs.nn.stylizer import Stylizer

__all__ = ["ClipMapper", "Discriminator", "Generator", "Stylizer", "to_fast"]

"""The networks of mmfs: StyleGAN2 blocks, the Stylizer, the StyleGAN2 prior/discriminator, the CLIP mapper."""

from __future__ import annotations

from mmfs.nn.layers import set_implementation

__all__ = ["set_implementation"]

"""Wrappers of the pretrained networks mmfs trains and evaluates with, and their tiny stand-ins.

Every wrapper takes [-1, 1] images, does its own resizing and normalisation, is frozen, receives its
network already built, and loads weights only in `from_pretrained`. Importing this package does not
import open_clip, timm or lpips; the builders do.
"""

from __future__ import annotations

from mmfs.external.base import (
    FeatureExtractor,
    FrozenExternal,
    IdentityEncoder,
    ImageTextEncoder,
    PerceptualDistance,
    TokenEncoder,
)
from mmfs.external.clip import OpenClipEncoder
from mmfs.external.dino import DinoViT
from mmfs.external.lpips import Lpips
from mmfs.external.tiny import tiny_clip, tiny_dino, tiny_lpips

__all__ = [
    "DinoViT",
    "FeatureExtractor",
    "FrozenExternal",
    "IdentityEncoder",
    "ImageTextEncoder",
    "Lpips",
    "OpenClipEncoder",
    "PerceptualDistance",
    "TokenEncoder",
    "tiny_clip",
    "tiny_dino",
    "tiny_lpips",
]

"""DINO ViT through timm: attention keys of one block, for the structure loss (the official code's, after Splice).

The reference (Splice's `LossG`) runs `dino_vitb8` from torch hub; the same weights are timm's
`vit_base_patch8_224.dino`. Its input path is `x*0.5+0.5`, torchvision `Resize(224)` (bilinear, no
antialiasing with the torchvision of the time), ImageNet mean/std. Keys come from the `attn.qkv` output
of a block, reshaped `[B, N, 3, heads, C/heads]`, index 1, heads concatenated: `[B, N, C]`, CLS included.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from mmfs.errors import MissingWeightsError
from mmfs.external.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FrozenExternal,
    check_images,
    normalize,
    require_file,
    resize,
    stats_buffer,
    to_unit_range,
)

DEFAULT_MODEL = "vit_base_patch8_224.dino"
WEIGHTS_FLAG = "--dino-weights"
_DOWNLOAD_HINT = "download model.safetensors from https://huggingface.co/timm/vit_base_patch8_224.dino"


class _KeysTaken(Exception):
    """Raised by the `qkv` hook once the keys are captured: nothing later in the forward can change them."""


class DinoViT(FrozenExternal):
    """A frozen timm VisionTransformer: `keys(x, block)` on [-1, 1] images of any size.

    Args:
        model: a built timm `VisionTransformer` (its `patch_embed.img_size` sets the input size).
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        size = model.patch_embed.img_size
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        # The reference normalises with ImageNet statistics whatever the checkpoint's own config says.
        self.register_buffer("mean", stats_buffer(IMAGENET_MEAN), persistent=False)
        self.register_buffer("std", stats_buffer(IMAGENET_STD), persistent=False)
        self.freeze()

    @property
    def num_blocks(self) -> int:
        """Number of transformer blocks."""
        return len(self.model.blocks)

    def prepare(self, x: Tensor) -> Tensor:
        """[-1, 1] images of any size -> DINO input (bilinear, no antialiasing, ImageNet norm)."""
        check_images(x)
        x = resize(to_unit_range(x), self.image_size, antialias=False)
        return normalize(x, self.mean, self.std)

    def keys(self, x: Tensor, block: int = -1) -> Tensor:
        """Attention keys `[B, N, C]` of block `block` (0-based, -1 = last), CLS token included."""
        n = self.num_blocks
        if not -n <= block < n:
            raise ValueError(f"block {block} is out of range for a {n}-block ViT")
        block %= n
        attn = self.model.blocks[block].attn
        captured: list[Tensor] = []

        def take(_module: Any, _inputs: Any, out: Tensor) -> None:
            captured.append(out)
            raise _KeysTaken  # the rest of the forward (this block's attention and MLP) is not needed

        handle = attn.qkv.register_forward_hook(take)
        try:
            self.model.forward_intermediates(
                self.prepare(x), indices=[block], stop_early=True, intermediates_only=True, output_fmt="NLC"
            )
        except _KeysTaken:
            pass
        finally:
            handle.remove()
        qkv = captured[0]  # [B, N, 3*C]
        b, n_tokens, three_c = qkv.shape
        heads = attn.num_heads
        # [B, N, 3, heads, C/heads] -> keys [B, N, heads, C/heads] -> heads concatenated [B, N, C]
        return qkv.reshape(b, n_tokens, 3, heads, three_c // (3 * heads))[:, :, 1].reshape(b, n_tokens, -1)

    @classmethod
    def from_pretrained(
        cls,
        weights: str | os.PathLike[str] | None = None,
        *,
        model_name: str = DEFAULT_MODEL,
        device: str | torch.device = "cpu",
        **model_kwargs: Any,
    ) -> DinoViT:
        """Build a timm ViT with pretrained weights: a local file (`.safetensors`/`.pth`), else by name.

        Args:
            weights: local state dict (timm's `model.safetensors` or DINO's `dino_vitbase8_pretrain.pth`).
            model_name: timm model name with pretrained tag.
            device: where to put the model.
            model_kwargs: architecture overrides passed to `timm.create_model` (tiny models in tests).
        """
        import timm

        if weights is not None:
            overlay = {"file": str(require_file(weights, f"DINO {model_name} weights", WEIGHTS_FLAG))}
            model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **model_kwargs)
            return cls(model).to(device)
        try:
            model = timm.create_model(model_name, pretrained=True, **model_kwargs)
        except OSError:  # huggingface_hub's offline / not-found errors are OSErrors
            hint = _DOWNLOAD_HINT if model_name == DEFAULT_MODEL else "download its weights"
            raise MissingWeightsError(
                f"DINO {model_name} weights are not available offline: {hint} and pass {WEIGHTS_FLAG} PATH"
            ) from None
        return cls(model).to(device)

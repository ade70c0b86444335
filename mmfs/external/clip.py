"""CLIP through open_clip: image/text embeddings and intermediate patch tokens (docs/mapper.md, docs/adapt.md).

The reference loads OpenAI's ViT-B/32 with the `clip` package; the same weights are open_clip's
`ViT-B-32` with the `openai` tag (QuickGELU activations). Training tensors are preprocessed as the
reference's `preprocess_clip_image`: `x*0.5+0.5`, bilinear resize with antialiasing to the model's input
size, CLIP mean/std, no crop. The one-shot reference image instead goes through open_clip's own PIL
preprocessing (bicubic resize of the short side, center crop), as the reference's `clip_preprocess`.

Precision: embeddings and tokens come out as fp32, embeddings L2-normalised in fp32. The transformer
runs in the caller's precision: fp32, or bf16 inside a training run's `--dtype bf16` autocast region,
where the losses built on these outputs still run in fp32 (`mmfs.losses.clip`). The reference runs
CLIP in fp16 on CUDA (OpenAI `clip.load` behaviour), so its embeddings, directions and cosines carry
fp16 rounding there; on CPU both are fp32.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmfs.errors import MissingWeightsError, MMFSError
from mmfs.external.base import (
    CLIP_MEAN,
    CLIP_STD,
    FrozenExternal,
    check_images,
    normalize,
    require_file,
    resize,
    stats_buffer,
    to_unit_range,
)
from mmfs.foreign import container

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_TAG = "openai"
WEIGHTS_FLAG = "--clip-weights"
MODEL_FLAG = "--clip-model"
TAG_FLAG = "--clip-tag"
# The reference hooks `visual.transformer.resblocks[3]` for the projection loss (the 4th block, 0-based 3).
REFERENCE_TOKEN_BLOCK = 3
_DOWNLOAD_HINT = (
    "download open_clip_pytorch_model.bin from https://huggingface.co/timm/vit_base_patch32_clip_224.openai"
)


def check_clip_choice(model_name: str, tag: str, *, local_weights: bool = False) -> None:
    """One-line `MissingWeightsError` unless open_clip knows `model_name` and its pretrained `tag`.

    Checked before anything is built or downloaded. With `local_weights` (a `--clip-weights` file) the tag
    only says where the file comes from (it decides QuickGELU): an empty tag, or any tag for an
    architecture without pretrained tags, is accepted there; a tag the architecture does not list is not.
    """
    import open_clip

    models = open_clip.list_models()
    if model_name not in models:
        raise MissingWeightsError(
            f"unknown CLIP model {model_name!r} ({MODEL_FLAG}): not an open_clip architecture; "
            f"try {_choices(model_name, models, ('ViT-B-32', 'ViT-B-16', 'ViT-L-14', 'RN50'))} "
            f"(all {len(models)}: open_clip.list_models()), or local-dir:PATH"
        )
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if not tag:
        if local_weights:
            return
        raise MissingWeightsError(
            f"CLIP {model_name} needs a pretrained tag ({TAG_FLAG}) or a weights file ({WEIGHTS_FLAG})"
        )
    if open_clip.get_pretrained_cfg(model_name, tag):
        return
    if not tags:
        if local_weights:
            return
        raise MissingWeightsError(
            f"open_clip has no pretrained weights for CLIP {model_name} (so {TAG_FLAG} {tag!r} cannot be used); "
            f"pass a weights file with {WEIGHTS_FLAG} PATH"
        )
    raise MissingWeightsError(
        f"unknown pretrained tag {tag!r} for CLIP {model_name} ({TAG_FLAG}); try {_choices(tag, tags, tags)}"
        f" (all {len(tags)}: open_clip.list_pretrained_tags_by_model({model_name!r}))"
    )


def _choices(value: str, valid: Sequence[str], fallback: Sequence[str], limit: int = 5) -> str:
    """A few valid values to suggest: the closest to `value` first, then `fallback` ones."""
    lower = {v.lower(): v for v in reversed(valid)}  # case-insensitive; the first spelling wins
    close = [lower[v] for v in difflib.get_close_matches(value.lower(), list(lower), n=limit, cutoff=0.5)]
    picks = list(dict.fromkeys([*close, *(v for v in fallback if v in valid)]))[:limit]
    return ", ".join(picks)


class OpenClipEncoder(FrozenExternal):
    """A frozen open_clip model: `encode_image`, `encode_text`, `image_tokens` on [-1, 1] images.

    Args:
        model: a built open_clip `CLIP` model with a ViT image tower (tokens need a transformer).
        tokenizer: open_clip tokenizer for that model (`open_clip.get_tokenizer(name)`).
        preprocess: PIL transform for reference images; defaults to open_clip's eval transform.
    """

    def __init__(self, model: Any, tokenizer: Callable[..., Tensor], preprocess: Callable | None = None) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        visual = model.visual
        size = visual.image_size
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        self.embed_dim = int(visual.output_dim)
        cfg = getattr(visual, "preprocess_cfg", None) or {}
        mean, std = tuple(cfg.get("mean", CLIP_MEAN)), tuple(cfg.get("std", CLIP_STD))
        self.register_buffer("mean", stats_buffer(mean), persistent=False)
        self.register_buffer("std", stats_buffer(std), persistent=False)
        if preprocess is None:
            import open_clip

            preprocess = open_clip.image_transform(
                self.image_size, is_train=False, mean=mean, std=std, interpolation="bicubic", resize_mode="shortest"
            )
        self.preprocess = preprocess
        self.freeze()

    @property
    def num_blocks(self) -> int:
        """Number of residual blocks in the image transformer."""
        return len(self.model.visual.transformer.resblocks)

    def prepare(self, x: Tensor) -> Tensor:
        """[-1, 1] images of any size -> CLIP input (reference `preprocess_clip_image`)."""
        check_images(x)
        x = resize(to_unit_range(x), self.image_size, antialias=True)
        return normalize(x, self.mean, self.std).to(self._dtype)

    def encode_image(self, x: Tensor) -> Tensor:
        """L2-normalised image embeddings `[B, D]` of [-1, 1] images."""
        return F.normalize(self.model.encode_image(self.prepare(x)).float(), dim=-1)

    def encode_text(self, prompts: Sequence[str]) -> Tensor:
        """L2-normalised text embeddings `[len(prompts), D]` (raw prompts, no templates, as the reference)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        tokens = self.tokenizer(list(prompts)).to(self.mean.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def image_tokens(self, x: Tensor, block: int = REFERENCE_TOKEN_BLOCK) -> Tensor:
        """Patch tokens `[B, N, C]` output by image-transformer block `block` (0-based), CLS dropped, pre-ln_post."""
        out = self.model.visual.forward_intermediates(
            self.prepare(x),
            indices=[self._block_index(block)],
            stop_early=True,
            intermediates_only=True,
            output_fmt="NLC",
        )
        return out["image_intermediates"][0].float()

    def encode_image_with_tokens(self, x: Tensor, block: int = REFERENCE_TOKEN_BLOCK) -> tuple[Tensor, Tensor]:
        """`(encode_image(x), image_tokens(x, block))` from a single forward pass."""
        return self._embed_and_tokens(self.prepare(x), block)

    def encode_reference_image(self, image: Image.Image | np.ndarray) -> Tensor:
        """L2-normalised embedding `[1, D]` of a style image through CLIP's own PIL preprocessing."""
        return F.normalize(self.model.encode_image(self._preprocess_pil(image)).float(), dim=-1)

    def encode_reference_image_with_tokens(
        self, image: Image.Image | np.ndarray, block: int = REFERENCE_TOKEN_BLOCK
    ) -> tuple[Tensor, Tensor]:
        """Embedding `[1, D]` and block tokens `[1, N, C]` of a style image (the one-shot reference path)."""
        return self._embed_and_tokens(self._preprocess_pil(image), block)

    @classmethod
    def from_pretrained(
        cls,
        weights: str | os.PathLike[str] | None = None,
        *,
        model_name: str = DEFAULT_MODEL,
        tag: str = DEFAULT_TAG,
        quick_gelu: bool | None = None,
        device: str | torch.device = "cpu",
    ) -> OpenClipEncoder:
        """Build an open_clip model from a local weights file, a `local-dir:` folder, or a pretrained tag.

        Args:
            weights: a local `open_clip_pytorch_model.bin` / `.safetensors` / `.pt` state dict. When None,
                the weights named by `tag` are used (downloaded by open_clip unless cached).
            model_name: any open_clip architecture name, or `local-dir:/path` (config + weights in one folder).
            tag: open_clip pretrained tag; also says where a local `weights` file comes from. An unknown
                model name or tag is a one-line `MissingWeightsError` before anything is built or downloaded.
            quick_gelu: force QuickGELU; None follows the tag (OpenAI weights were trained with QuickGELU).
            device: where to put the model.
        """
        import open_clip

        kwargs: dict[str, Any] = {}
        if model_name.startswith("local-dir:"):
            folder = Path(model_name[len("local-dir:") :]).expanduser()
            if weights is not None:
                raise ValueError("a local-dir: CLIP model carries its own weights; do not pass weights as well")
            if not (folder / "open_clip_config.json").is_file():
                raise MissingWeightsError(
                    f"CLIP folder {folder} has no open_clip_config.json; pass a folder with config and weights"
                )
        else:
            if not model_name.startswith("hf-hub:"):
                model_name = model_name.replace("/", "-")  # open_clip's own spelling: ViT-B/32 -> ViT-B-32
                check_clip_choice(model_name, tag, local_weights=weights is not None)
            if quick_gelu is None:
                tag_cfg = open_clip.get_pretrained_cfg(model_name, tag) if tag else {}
                quick_gelu = bool(tag_cfg.get("quick_gelu", False))
            kwargs["force_quick_gelu"] = quick_gelu
            if weights is not None:
                what = f"CLIP {model_name} weights"
                path = require_file(weights, what, WEIGHTS_FLAG)
                if container(path) == "torchscript":  # open_clip would have to run the archive's code
                    raise MissingWeightsError(
                        f"{path}: is OpenAI's TorchScript archive; mmfs reads open_clip's state dict: "
                        f"{_DOWNLOAD_HINT} and pass {WEIGHTS_FLAG} PATH"
                    )
                kwargs["pretrained"] = str(path)
            else:
                kwargs["pretrained"] = tag
        if "pretrained" in kwargs and weights is None:
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(model_name, **kwargs)
            except RuntimeError as exc:  # open_clip wraps every failed download in a RuntimeError
                if "download" not in str(exc).lower():
                    raise
                hint = _DOWNLOAD_HINT if (model_name, tag) == (DEFAULT_MODEL, DEFAULT_TAG) else "download it"
                raise MissingWeightsError(
                    f"CLIP {model_name} ({tag}) weights are not available offline: {hint} and pass {WEIGHTS_FLAG} PATH"
                ) from None
        else:
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, **kwargs)
        tokenizer = open_clip.get_tokenizer(model_name)
        return cls(model, tokenizer, preprocess).to(device)

    @property
    def _dtype(self) -> torch.dtype:
        return self.model.visual.conv1.weight.dtype

    def _block_index(self, block: int) -> int:
        """Validate a block index (negative counts from the end) and return it non-negative."""
        n = self.num_blocks
        if not -n <= block < n:
            raise ValueError(f"block {block} is out of range for a {n}-block CLIP image transformer")
        return block % n

    def _embed_and_tokens(self, pixels: Tensor, block: int) -> tuple[Tensor, Tensor]:
        """One image-tower pass on CLIP-normalised pixels: normalised embedding and block tokens."""
        out = self.model.visual.forward_intermediates(pixels, indices=[self._block_index(block)], output_fmt="NLC")
        emb = F.normalize(out["image_features"].float(), dim=-1)
        return emb, out["image_intermediates"][0].float()

    def _preprocess_pil(self, image: Image.Image | np.ndarray) -> Tensor:
        """A PIL image or RGB uint8 array [H, W, 3] -> `[1, 3, S, S]` through open_clip's eval transform."""
        from PIL import Image

        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"expected an RGB uint8 array [H, W, 3], got {image.dtype} {image.shape}")
            image = Image.fromarray(image)
        pixels = self.preprocess(image.convert("RGB")).unsqueeze(0)
        return pixels.to(device=self.mean.device, dtype=self._dtype)


# --- the embeddings styles start from: prompts and reference images


@torch.no_grad()
def text_embeddings(clip: OpenClipEncoder, prompts: Sequence[str]) -> Tensor:
    """L2-normalised text embeddings `[N, D]` (fp32, CPU) of raw prompts."""
    prompts = list(prompts)
    if not prompts or any(not p.strip() for p in prompts):
        raise MMFSError("a text prompt must not be empty")
    return clip.encode_text(prompts).float().cpu()


def load_reference(path: str | os.PathLike[str]):
    """A style reference image as an RGB uint8 array (robust reading, one-line errors)."""
    from mmfs.data.images import load_image

    return load_image(path)


@torch.no_grad()
def reference_embeddings(clip: OpenClipEncoder, paths: Sequence[str | os.PathLike[str]]) -> Tensor:
    """L2-normalised image embeddings `[N, D]` (fp32, CPU) of reference images, through CLIP's PIL preprocessing."""
    if not paths:
        raise MMFSError("need at least one reference image")
    return torch.cat([clip.encode_reference_image(load_reference(p)).float().cpu() for p in paths])

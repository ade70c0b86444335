"""Tiny random stand-ins for CLIP, DINO and LPIPS: same architectures and code paths, no downloads.

Tests and `--tiny` runs use these. Each builder is seeded (it does not disturb the global RNG) and goes
through the same library factory as the real weights, so the wrappers are exercised unchanged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmfs.external.clip import OpenClipEncoder
from mmfs.external.dino import DEFAULT_MODEL as DINO_MODEL
from mmfs.external.dino import DinoViT
from mmfs.external.lpips import Lpips, build_lpips_alex
from mmfs.utils.seed import cpu_seeded


def tiny_clip_config(embed_dim: int = 32, image_size: int = 32, patch_size: int = 8) -> dict[str, Any]:
    """open_clip model config of a tiny ViT CLIP: 4 image blocks (so block 3 exists, as in the reference)."""
    return {
        "embed_dim": embed_dim,
        "quick_gelu": True,  # as OpenAI's ViT-B/32
        "vision_cfg": {"image_size": image_size, "layers": 4, "width": 64, "patch_size": patch_size, "head_width": 32},
        # The stock BPE tokenizer emits ids up to 49407, so the vocabulary keeps its full size.
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }


def register_tiny_clip(embed_dim: int = 32, image_size: int = 32, patch_size: int = 8) -> str:
    """Register the tiny config with open_clip (once per process) and return its model name."""
    import open_clip

    name = f"mmfs-tiny-clip-e{embed_dim}-s{image_size}-p{patch_size}"
    if name not in open_clip.list_models():
        # open_clip reads configs from files; the registry keeps the parsed dict after the file is gone.
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{name}.json"
            path.write_text(json.dumps(tiny_clip_config(embed_dim, image_size, patch_size)))
            open_clip.add_model_config(path)
    return name


def tiny_clip(embed_dim: int = 32, image_size: int = 32, seed: int = 0, patch_size: int = 8) -> OpenClipEncoder:
    """A random tiny CLIP (about 1.8 M parameters, mostly the token embedding) built by open_clip's factory.

    The defaults give 4 x 4 patch tokens of width 64, like ViT-B/32's 7 x 7 of width 768 a set whose span is
    a small part of the token space (the one-shot projection loss is void when the tokens span all of it).
    """
    import open_clip

    model, preprocess = tiny_clip_model(embed_dim, image_size, seed, patch_size)
    name = register_tiny_clip(embed_dim, image_size, patch_size)
    return OpenClipEncoder(model, open_clip.get_tokenizer(name), preprocess)


def tiny_clip_model(embed_dim: int = 32, image_size: int = 32, seed: int = 0, patch_size: int = 8) -> tuple[Any, Any]:
    """The trainable open_clip model inside `tiny_clip` and its PIL preprocessing (`mmfs.demo.clip` trains it)."""
    import open_clip

    name = register_tiny_clip(embed_dim, image_size, patch_size)
    with cpu_seeded(seed), _quiet_root_warnings():
        model, _, preprocess = open_clip.create_model_and_transforms(name)
    return model, preprocess


# Metadata key of a "clip" checkpoint: the `tiny_clip` sizes it was built with (embed_dim, image_size, patch_size).
TINY_CLIP_META = "tiny_clip"


def load_tiny_clip(path: str | Path) -> OpenClipEncoder:
    """A trained tiny CLIP from an mmfs "clip" file (the demo's: `mmfs.demo.clip`), built at its recorded size."""
    from mmfs.checkpoint import load_checkpoint, load_state_strict
    from mmfs.errors import CheckpointError

    ckpt = load_checkpoint(path, kind="clip")
    try:
        sizes = json.loads(ckpt.meta[TINY_CLIP_META])
        clip = tiny_clip(int(sizes["embed_dim"]), int(sizes["image_size"]), patch_size=int(sizes["patch_size"]))
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{ckpt.path}: a clip checkpoint without its tiny CLIP sizes") from None
    load_state_strict(clip.model, {k: v.float() for k, v in ckpt.tensors.items()}, source=str(ckpt.path))
    return clip


@contextlib.contextmanager
def _quiet_root_warnings() -> Iterator[None]:
    """Silence open_clip's "no pretrained weights loaded" root-logger warning: random weights are the point."""
    root = logging.getLogger()
    # A filter named after no logger rejects every record logged on the root logger itself (open_clip's).
    drop = logging.Filter("mmfs-drop-all")
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def tiny_dino_kwargs(
    img_size: int = 32, patch: int = 8, embed_dim: int = 48, depth: int = 2, heads: int = 2
) -> dict[str, Any]:
    """timm overrides turning `vit_base_patch8_224.dino` into a tiny ViT (also for `DinoViT.from_pretrained`)."""
    return {"img_size": img_size, "patch_size": patch, "embed_dim": embed_dim, "depth": depth, "num_heads": heads}


def tiny_dino(
    img_size: int = 32, patch: int = 8, embed_dim: int = 48, depth: int = 2, heads: int = 2, seed: int = 0
) -> DinoViT:
    """A random tiny DINO ViT (about 67 k parameters at the defaults) built by timm's factory."""
    import timm

    kwargs = tiny_dino_kwargs(img_size, patch, embed_dim, depth, heads)
    with cpu_seeded(seed):
        model = timm.create_model(DINO_MODEL, pretrained=False, **kwargs)
    return DinoViT(model)


def tiny_lpips(seed: int = 0) -> Lpips:
    """LPIPS-alex with the real linear heads on a random AlexNet backbone (inputs of at least 32 px)."""
    with cpu_seeded(seed):
        net = build_lpips_alex()
    return Lpips(net)

"""The pretrained networks a user names on the command line, built and checked against what reads them.

DINO: `--dino` is the name dino_vitb8, a local weights file, or "tiny".

CLIP: `--clip-model` (an open_clip architecture, `local-dir:PATH`, or "tiny"), `--clip-tag` (default: the
tag recorded with the checkpoint's mapper, else openai) and `--clip-weights` (a local file). "tiny" builds a
seeded random stand-in of the same architecture (tests and smoke runs, no download), or with `--clip-weights`
a trained tiny CLIP file (the demo's, `mmfs.demo.clip`).
"""

from __future__ import annotations

import os

import torch

from mmfs.errors import CheckpointError
from mmfs.external.clip import DEFAULT_MODEL, DEFAULT_TAG, OpenClipEncoder

TINY_CLIP = "tiny"  # `--clip-model tiny`: a seeded random tiny CLIP (tests and smoke runs, no download)


def build_clip(
    model_name: str = DEFAULT_MODEL,
    weights: str | os.PathLike[str] | None = None,
    *,
    tag: str = DEFAULT_TAG,
    embed_dim: int,
    device: str | torch.device = "cpu",
) -> OpenClipEncoder:
    """The CLIP of `--clip-model` / `--clip-weights`, checked to give the embedding size the mapper reads.

    Args:
        model_name: an open_clip architecture (default OpenAI's ViT-B-32), `local-dir:/path`, or "tiny".
        weights: a local open_clip state dict; None uses open_clip's cache (or downloads when online). With
            "tiny": an mmfs "clip" file (a trained tiny CLIP); None: the seeded random one.
        tag: the open_clip pretrained tag (also decides QuickGELU for a local file).
        embed_dim: the mapper's input size (`ModelConfig.clip_dim`); the tiny CLIP is built with it.
        device: where to put the model.
    """
    if model_name == TINY_CLIP:
        from mmfs.external.tiny import load_tiny_clip, tiny_clip

        clip = (load_tiny_clip(weights) if weights is not None else tiny_clip(embed_dim=embed_dim)).to(device)
    else:
        clip = OpenClipEncoder.from_pretrained(weights, model_name=model_name, tag=tag, device=device)
    check_clip_dim(clip, embed_dim)
    return clip


def recorded_clip(checkpoint: str | os.PathLike[str], model_name: str, field: str) -> str | None:
    """`mmfs.clip_<field>` (tag, weights) `checkpoint`'s mapper was trained with (train-mapper and adapt record it).

    Only returned when the recorded CLIP model is `model_name`: a tag or weights file belongs to one
    architecture. None when nothing (or an empty value) is recorded.
    """
    from mmfs.checkpoint import read_metadata

    meta = read_metadata(checkpoint)
    value = meta.get(f"mmfs.clip_{field}")
    return value if value and meta.get("mmfs.clip_model") == model_name else None


def resolve_clip_tag(tag: str | None, checkpoint: str | os.PathLike[str] | None, model_name: str) -> str:
    """`--clip-tag` when given, else the tag recorded in `checkpoint` for `model_name`, else `DEFAULT_TAG`."""
    if tag is not None:
        return tag
    if checkpoint is None or model_name == TINY_CLIP:
        return DEFAULT_TAG
    return recorded_clip(checkpoint, model_name, "tag") or DEFAULT_TAG


def resolve_clip_weights(
    weights: str | os.PathLike[str] | None, checkpoint: str | os.PathLike[str] | None, model_name: str
) -> str | os.PathLike[str] | None:
    """`--clip-weights` when given, else the file recorded in `checkpoint` for `model_name` if it still exists.

    A mapper only makes sense with the CLIP it was trained with; for `--clip-model tiny` without a file
    that would silently be the random stand-in. None: open_clip's cache (or the random tiny CLIP).
    """
    if weights is not None or checkpoint is None:
        return weights
    recorded = recorded_clip(checkpoint, model_name, "weights")
    return recorded if recorded is not None and os.path.isfile(recorded) else None


def check_clip_dim(clip: OpenClipEncoder, embed_dim: int) -> None:
    """One clear line when the CLIP model does not fit the checkpoint's mapper."""
    if clip.embed_dim != embed_dim:
        raise CheckpointError(
            f"the CLIP model gives {clip.embed_dim}-d embeddings but this checkpoint's mapper reads {embed_dim}-d ones;"
            " use the CLIP the mapper was trained with (--clip-model / --clip-tag / --clip-weights)"
        )


# The tiny DINO's patch grid per side. The real ViT-B/8 sees its 224 px input as 28 x 28 patches; a
# coarser grid holds too little of a face's layout (4 x 4 let 64 px faces lose their layout in Stage II).
TINY_DINO_GRID = 16


def build_dino(spec: str, device: str | torch.device = "cpu", *, image_size: int = 32):
    """The DINO of `--dino`: "tiny", the name dino_vitb8, or a local weights file (missing: a one-line error).

    "tiny" is a random tiny ViT that sees `image_size` px images (the training resolution) as
    `TINY_DINO_GRID` x `TINY_DINO_GRID` patches.
    """
    from mmfs.external.dino import DEFAULT_MODEL, DinoViT

    if spec == "tiny":
        from mmfs.external.tiny import tiny_dino

        return tiny_dino(img_size=image_size, patch=max(1, image_size // TINY_DINO_GRID)).to(device)
    names = {"dino_vitb8": DEFAULT_MODEL, DEFAULT_MODEL: DEFAULT_MODEL}
    if spec in names:
        return DinoViT.from_pretrained(None, model_name=names[spec], device=device)
    return DinoViT.from_pretrained(spec, device=device)

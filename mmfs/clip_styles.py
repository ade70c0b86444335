"""CLIP style sources: a text prompt or a reference image -> CLIP embedding -> w+ through the checkpoint's mapper.

This is what `mmfs stylize --text/--ref` and `mmfs adapt` share (reference §4, §5.2): the prompt is
encoded raw (no templates) with `encode_text`, a reference image goes through CLIP's own PIL
preprocessing (bicubic resize of the short side, centre crop) with `encode_reference_image`, and both
embeddings are L2-normalised before the mapper reads them. The resulting `EmbeddingStyles` plug into
`StylizePipeline` like `--seed` styles do; their noise comes from the pipeline's default noise seed, and
the pipeline runs the model in eval mode (no mapper dropout), so a CLIP style is deterministic.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from mmfs.errors import CheckpointError, MMFSError
from mmfs.external.clip import DEFAULT_MODEL, DEFAULT_TAG, OpenClipEncoder
from mmfs.pipeline import EmbeddingStyles

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
        weights: a local open_clip state dict; None uses open_clip's cache (or downloads when online).
        tag: the open_clip pretrained tag (also decides QuickGELU for a local file).
        embed_dim: the mapper's input size (`ModelConfig.clip_dim`); the tiny CLIP is built with it.
        device: where to put the model.
    """
    if model_name == TINY_CLIP:
        from mmfs.external.tiny import tiny_clip

        clip = tiny_clip(embed_dim=embed_dim).to(device)
    else:
        clip = OpenClipEncoder.from_pretrained(weights, model_name=model_name, tag=tag, device=device)
    check_clip_dim(clip, embed_dim)
    return clip


def recorded_clip_tag(checkpoint: str | os.PathLike[str], model_name: str) -> str | None:
    """The open_clip tag `checkpoint`'s mapper was trained with (train-mapper and adapt record it), if any.

    Only returned when the recorded CLIP model is `model_name`: a tag belongs to one architecture.
    """
    from mmfs.checkpoint import read_metadata

    meta = read_metadata(checkpoint)
    tag = meta.get("mmfs.clip_tag")
    return tag if tag is not None and meta.get("mmfs.clip_model") == model_name else None


def resolve_clip_tag(tag: str | None, checkpoint: str | os.PathLike[str] | None, model_name: str) -> str:
    """`--clip-tag` when given, else the tag recorded in `checkpoint` for `model_name`, else `DEFAULT_TAG`."""
    if tag is not None:
        return tag
    if checkpoint is None or model_name == TINY_CLIP:
        return DEFAULT_TAG
    return recorded_clip_tag(checkpoint, model_name) or DEFAULT_TAG


def check_clip_dim(clip: OpenClipEncoder, embed_dim: int) -> None:
    """One clear line when the CLIP model does not fit the checkpoint's mapper."""
    if clip.embed_dim != embed_dim:
        raise CheckpointError(
            f"the CLIP model gives {clip.embed_dim}-d embeddings but this checkpoint's mapper reads {embed_dim}-d ones;"
            " use the CLIP the mapper was trained with (--clip-model / --clip-tag / --clip-weights)"
        )


def require_mapper(model: torch.nn.Module) -> None:
    """Raise the one-line CheckpointError when a Stylizer has no CLIP mapper."""
    if getattr(model, "clip_mapper", None) is None:
        raise CheckpointError("this checkpoint has no CLIP mapper; train one with `mmfs train-mapper`")


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


def text_label(prompt: str) -> str:
    """The style label (and output-file suffix) of a prompt: "Pop Art" -> "pop-art"."""
    from mmfs.stylize_files import safe_label

    return safe_label(prompt.lower().replace(" ", "-"))[:60]


def reference_label(path: str | os.PathLike[str]) -> str:
    """The style label of a reference image: "style.png" -> "ref-style"."""
    from mmfs.stylize_files import safe_label

    return safe_label(f"ref-{Path(path).stem}")[:60]


def text_styles(clip: OpenClipEncoder, prompts: Sequence[str]) -> EmbeddingStyles:
    """One style per prompt (`--text`), labelled by `text_label`."""
    emb = text_embeddings(clip, prompts)
    labels = _distinct([text_label(p) for p in prompts])
    return EmbeddingStyles(emb, labels, [{"source": "text", "text": p} for p in prompts])


def reference_styles(clip: OpenClipEncoder, paths: Sequence[str | os.PathLike[str]]) -> EmbeddingStyles:
    """One style per reference image (`--ref`), labelled by `reference_label`."""
    emb = reference_embeddings(clip, paths)
    labels = _distinct([reference_label(p) for p in paths])
    return EmbeddingStyles(emb, labels, [{"source": "ref", "ref": str(p)} for p in paths])


def _distinct(labels: list[str]) -> list[str]:
    """Labels name output files: when two coincide, number them all (`<label>-<index>`)."""
    if len(set(labels)) < len(labels):
        return [f"{label}-{i}" for i, label in enumerate(labels)]
    return labels

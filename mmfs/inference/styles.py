"""CLIP style sources: a text prompt or a reference image -> CLIP embedding -> w+ through the checkpoint's mapper.

This is what `mmfs stylize --text/--ref` and `mmfs adapt` share (as the official `test_sp2pII.py` does): the prompt is
encoded raw (no templates) with `encode_text`, a reference image goes through CLIP's own PIL
preprocessing (bicubic resize of the short side, centre crop) with `encode_reference_image`, and both
embeddings are L2-normalised before the mapper reads them. The resulting `EmbeddingStyles` plug into
`StylizePipeline` like `--seed` styles do; their noise comes from the pipeline's default noise seed, and
the pipeline runs the model in eval mode (no mapper dropout), so a CLIP style is deterministic. Building the
CLIP the user picked and its embeddings is `mmfs.external.clip` (training uses it too).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from mmfs.external.clip import OpenClipEncoder, reference_embeddings, text_embeddings
from mmfs.inference.pipeline import EmbeddingStyles
from mmfs.utils.labels import reference_label, text_label


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

"""Build networks from checkpoints: the one way every command gets a ready Stylizer.

A Stylizer can come from three kinds of file:

- `stylizer`: inference weights (what training writes as `final.safetensors`, and what `mmfs convert`
  makes of an official MMFS release);
- `training`: a training checkpoint; its EMA weights are preferred, as the reference's inference does;
- `adapted`: the decoder weights `mmfs adapt` changed, plus a pointer to the base file they apply to.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mmfs.checkpoint import Checkpoint, load_checkpoint, load_state_strict, stylizer_tensors
from mmfs.errors import CheckpointError
from mmfs.utils.files import file_sha256

STYLIZER_KINDS = ("stylizer", "training", "adapted")
# The catalogue's kinds (`mmfs.catalogue`) a Stylizer can be loaded from.
STYLIZER_MODELS = ("stylizer", "base", "one-shot", "zero-shot")
MAPPER_PREFIX = "clip_mapper."


def load_stylizer(path: str | os.PathLike[str], *, device: str | torch.device = "cpu"):
    """A Stylizer in eval mode with the weights of `path` (any of `STYLIZER_KINDS`), or of a published model by
    name (`mmfs.catalogue`: "mmfs", "pop-art", ...; fetched, checked and converted on first use)."""
    from mmfs.nn import Stylizer
    from mmfs.pretrained import resolve_file

    ckpt = load_checkpoint(resolve_file(path, kinds=STYLIZER_MODELS), kind=STYLIZER_KINDS)
    if ckpt.config is None:
        raise CheckpointError(f"{ckpt.path}: checkpoint has no model config in its metadata")
    tensors = _resolve_adapted(ckpt) if ckpt.kind == "adapted" else stylizer_tensors(ckpt)
    model = Stylizer(ckpt.config, with_mapper=any(k.startswith(MAPPER_PREFIX) for k in tensors))
    load_state_strict(model, tensors, source=str(ckpt.path))
    return model.to(device).eval().requires_grad_(False)


# The name diffusers and timm users reach for: `from_pretrained("mmfs")`, `from_pretrained("pop-art")`, or a file.
from_pretrained = load_stylizer


def _resolve_adapted(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """Base weights with the adapted decoder tensors laid over them, after checking the base is the right file."""
    base_ref = ckpt.meta.get("base")
    if not base_ref:
        raise CheckpointError(f"{ckpt.path}: adapted checkpoint does not name its base checkpoint")
    base_path = Path(base_ref)
    if not base_path.is_absolute():
        base_path = ckpt.path.parent / base_path
    if not base_path.is_file():
        raise CheckpointError(
            f"{ckpt.path}: its base checkpoint {base_path} is missing; keep the base next to it or re-run `mmfs adapt`"
        )
    expected = ckpt.meta.get("base_sha256")
    if expected and file_sha256(base_path) != expected:
        raise CheckpointError(f"{ckpt.path}: base checkpoint {base_path} has changed since this file was adapted")
    base = load_checkpoint(base_path, kind=("stylizer", "training"))
    if base.config != ckpt.config:
        raise CheckpointError(f"{ckpt.path}: model config differs from its base {base_path}")
    tensors = dict(stylizer_tensors(base))
    unknown = sorted(set(ckpt.tensors) - set(tensors))
    if unknown:
        raise CheckpointError(f"{ckpt.path}: adapted weights {', '.join(unknown[:3])} are not in the base model")
    tensors.update(ckpt.tensors)
    return tensors

"""Where a stage's starting weights come from: priors, previous stages' outputs, discriminators.

A later stage is initialised from an earlier stage's file, which may be a `final.safetensors`
(kind "stylizer": EMA weights only), a training checkpoint (kind "training": `stylizer_ema.`,
`stylizer.`, `disc.`), or a converted official release (also "training"). The discriminator is found
in this order: an explicit file (a prior's `d.` or a training file's `disc.`), the init file itself,
the training checkpoint its metadata points to, the prior its metadata names.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mmfs.checkpoint import Checkpoint, load_checkpoint, stylizer_tensors
from mmfs.config import ModelConfig
from mmfs.errors import CheckpointError

Tensors = dict[str, torch.Tensor]
MAPPER_PREFIX = "clip_mapper."


def load_prior(path: str | os.PathLike[str]) -> Checkpoint:
    """A "prior" file (`mmfs convert` of a rosinality StyleGAN2): generator `g.*`, discriminator `d.*`."""
    ckpt = load_checkpoint(path, kind="prior")
    if ckpt.config is None:
        raise CheckpointError(f"{path}: prior has no model config in its metadata; re-create it with `mmfs convert`")
    if not ckpt.subset("g."):
        raise CheckpointError(f"{path}: prior holds no generator weights (g.*)")
    return ckpt


def init_stylizer_tensors(ckpt: Checkpoint, *, with_mapper: bool = False) -> Tensors:
    """The Stylizer weights of an init file (EMA preferred), without the CLIP mapper unless asked for."""
    tensors = stylizer_tensors(ckpt)
    if not with_mapper:
        tensors = {k: v for k, v in tensors.items() if not k.startswith(MAPPER_PREFIX)}
    return tensors


def discriminator_tensors(init: Checkpoint, override: str | os.PathLike[str] | None = None) -> tuple[Tensors, Path]:
    """The discriminator to start from, and the file it came from (see the module docstring for the order)."""
    if override is not None:
        ckpt = load_checkpoint(override, kind=("prior", "training"))
        found = _disc_in(ckpt)
        if not found:
            raise CheckpointError(f"{override}: holds no discriminator weights (d.* or disc.*)")
        return found, ckpt.path
    found = _disc_in(init)
    if found:
        return found, init.path
    for key in ("checkpoint", "prior"):
        ref = init.meta.get(key)
        if not ref:
            continue
        path = Path(ref) if Path(ref).is_absolute() else init.path.parent / ref
        if path.is_file():
            found = _disc_in(load_checkpoint(path, kind=("prior", "training")))
            if found:
                return found, path
    raise CheckpointError(
        f"{init.path}: no discriminator found in it or next to it; pass --disc with the prior (or a training checkpoint)"
    )


def load_discriminator(
    cfg: ModelConfig, init: Checkpoint, override: str | os.PathLike[str] | None = None
) -> torch.nn.Module:
    """The discriminator a stage starts from (see `discriminator_tensors`), as a module of `cfg`.

    A prior's discriminator of a larger resolution (a 512 px run on the public 1024 prior) keeps its
    blocks from `cfg.resolution` down and gets a new from-RGB layer (`discriminator_down_to`).
    """
    from mmfs.checkpoint import load_state_strict
    from mmfs.nn import Discriminator
    from mmfs.nn.convert import discriminator_down_to

    disc = Discriminator(cfg)
    d_tensors, d_path = discriminator_tensors(init, override)
    load_state_strict(disc, discriminator_down_to(d_tensors, disc), source=f"{d_path} [discriminator]")
    return disc


def _disc_in(ckpt: Checkpoint) -> Tensors:
    return ckpt.subset("d.") if ckpt.kind == "prior" else ckpt.subset("disc.")

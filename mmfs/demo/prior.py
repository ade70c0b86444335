"""The StyleGAN2 prior that `mmfs demo` ships: tiny64, trained on the demo's own synthetic photos.

A few minutes of `train-prior` give colour blobs, not faces, and every later stage learns from the
prior, so the demo loads this file instead of training one (`mmfs demo --train-prior` trains it from
scratch with the same recipe). The file is a "prior" checkpoint (EMA generator `g.*`, discriminator
`d.*`) stored in fp16, about 1.5 MB; its metadata records the recipe, the step it was taken at and the
measured wall time (`mmfs info` shows them). docs/demo.md has the command that made it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mmfs.errors import CheckpointError

SHIPPED_PRIOR = Path(__file__).with_name("prior-tiny64.safetensors")


def shipped_prior() -> Path:
    """The packaged prior file; a one-line error when the installation lacks it."""
    return require_shipped(SHIPPED_PRIOR, "prior", "--train-prior")


def require_shipped(path: Path, what: str, retrain_flag: str) -> Path:
    """`path`, a file packaged with the demo; a one-line error naming the retraining flag when it is missing."""
    if not path.is_file():
        raise CheckpointError(
            f"{path}: the demo's {what} is missing from this installation; reinstall mmfs"
            f" (it is package data) or run `mmfs demo {retrain_flag}` to train one"
        )
    return path


def export_prior(
    source: str | os.PathLike[str], dest: str | os.PathLike[str], *, recipe: dict[str, Any] | None = None
) -> Path:
    """Write the prior file `source` (a train-prior `final.safetensors`) to `dest` with fp16 tensors.

    Also accepts a train-prior training checkpoint (`checkpoints/step-*.safetensors`): its EMA generator
    and discriminator are taken, as `final.safetensors` would hold them. `recipe` goes into the metadata.
    """
    from mmfs.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(source, kind=("prior", "training"))
    if ckpt.kind == "training":
        import json

        command = json.loads(ckpt.meta.get("train_config", "{}")).get("command")
        if command != "train-prior":
            raise CheckpointError(f"{ckpt.path}: not a train-prior checkpoint (its command is {command!r})")
        tensors = {**_prefixed(ckpt.subset("g_ema."), "g."), **_prefixed(ckpt.subset("d."), "d.")}
        meta: dict[str, Any] = {"generator": "ema", "step": int(ckpt.meta.get("step", 0))}
    else:
        tensors, meta = dict(ckpt.tensors), dict(ckpt.meta)
    if ckpt.config is None or not any(k.startswith("g.") for k in tensors):
        raise CheckpointError(f"{ckpt.path}: holds no generator with its model config")
    half = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in tensors.items()}
    meta = {**meta, "dtype": "fp16", "exported_from": str(Path(source).name), **({"recipe": recipe} if recipe else {})}
    return save_checkpoint(dest, half, kind="prior", config=ckpt.config, meta=meta)


@torch.no_grad()
def prior_samples(
    path: str | os.PathLike[str], count: int, seed: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` samples of the prior file's EMA generator for z drawn from `seed`, without noise.

    Returns (z [count, z_dim], images [count, 3, R, R] in [-1, 1]).
    """
    from mmfs.checkpoint import load_state_strict
    from mmfs.nn import Generator
    from mmfs.train.weights import load_prior

    prior = load_prior(path)
    generator = Generator(prior.config)
    load_state_strict(generator, prior.subset("g."), source=f"{prior.path} [generator]")
    generator.to(device).eval()
    z = torch.randn(count, prior.config.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    return z, torch.nn.functional.hardtanh(generator(z, noise="zero"))


def save_sample_grid(
    path: str | os.PathLike[str], out: str | os.PathLike[str], *, rows: int = 4, columns: int = 8, seed: int = 0
) -> Path:
    """A PNG grid of `prior_samples` (the picture of the shipped prior in docs/demo.md), each shown at 2x."""
    from mmfs.data.images import save_image, to_uint8

    _, images = prior_samples(path, rows * columns, seed)
    grid = torch.nn.functional.interpolate(images, scale_factor=2, mode="nearest")
    grid = grid.reshape(rows, columns, *grid.shape[1:]).permute(2, 0, 3, 1, 4).flatten(3, 4).flatten(1, 2)
    return save_image(to_uint8(grid), out)


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in tensors.items()}

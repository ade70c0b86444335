"""What many tests build: the tiny preset, folders of random images, random tiny priors and Stylizer files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmfs.checkpoint import module_state, save_checkpoint
from mmfs.config import PRESETS

TINY = PRESETS["tiny"]  # 32 px, a few channels: every model test runs at this size
CPU = torch.device("cpu")


def write_images(
    folder: str | Path, n: int, shape: tuple[int, int] = (32, 32), rng: int | np.random.Generator = 0, *, suffix=".png"
) -> Path:
    """`n` random RGB images `0{suffix}`, `1{suffix}`, ... of `shape` (height, width) in `folder`; returns it.

    `rng` is a seed, or a generator that goes on from where another call left it.
    """
    from mmfs.data.images import save_image

    folder = Path(folder)
    rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
    for i in range(n):
        save_image(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), folder / f"{i}{suffix}")
    return folder


def random_prior(cfg=TINY, *, seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A randomly initialised StyleGAN2 generator and discriminator for `cfg`, drawn after `torch.manual_seed(seed)`."""
    from mmfs.nn import Discriminator, Generator

    torch.manual_seed(seed)
    return Generator(cfg), Discriminator(cfg)


def save_prior(path: str | Path, g: torch.nn.Module, d: torch.nn.Module) -> Path:
    """A "prior" file (`g.*`, `d.*`), as `mmfs convert` and `mmfs train-prior` write it."""
    return save_checkpoint(path, {**module_state(g, "g."), **module_state(d, "d.")}, kind="prior", config=g.cfg)


def save_noisy_stylizer(path: str | Path, cfg=TINY, *, seed: int = 0) -> Path:
    """A random Stylizer file whose noise weights are 0.5 (they start at 0), so that noise and seeds show."""
    from mmfs.nn import Stylizer

    torch.manual_seed(seed)
    model = Stylizer(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.5)
    return save_checkpoint(path, module_state(model), kind="stylizer", config=cfg)


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """The same keys and bit-identical tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

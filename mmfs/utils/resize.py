"""Bilinear resizing whose backward pass is deterministic on CUDA too.

`F.interpolate`'s bilinear backward on CUDA accumulates with atomic adds, so its gradients vary from run to
run and it raises under `torch.use_deterministic_algorithms(True)` (`--deterministic`). The resize is
separable: each axis is one fixed [out, in] matrix, so there it runs as two matrix products, whose
backward passes are matrix products too. The matrices are `F.interpolate`'s own weights (read off by
resizing identity images, a forward pass), so both forms compute the same resize up to float rounding;
everywhere else `F.interpolate` runs unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bilinear_resize(x: Tensor, size: tuple[int, int], *, antialias: bool) -> Tensor:
    """Bilinear resize (align_corners=False) of `[..., H, W]` to `size` = (H', W'); a no-op when the size matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.device.type == "cuda" and x.requires_grad and torch.are_deterministic_algorithms_enabled():
        return bilinear_resize_as_matmuls(x, size, antialias=antialias)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=antialias)


def bilinear_resize_as_matmuls(x: Tensor, size: tuple[int, int], *, antialias: bool) -> Tensor:
    """The same resize as `rows @ x @ cols.T` (the form whose backward is deterministic on CUDA)."""
    rows = _axis_weights(x.shape[-2], size[0], antialias, x.device).to(x.dtype)
    cols = _axis_weights(x.shape[-1], size[1], antialias, x.device).to(x.dtype)
    return rows @ x @ cols.t()


def _axis_weights(n_in: int, n_out: int, antialias: bool, device: torch.device) -> Tensor:
    """[n_out, n_in]: how F.interpolate mixes the n_in samples of one axis into n_out (read off in fp64)."""
    # image i: row i is 1; a few columns wide, as the antialiased kernel mishandles a 1-wide axis
    eye = torch.eye(n_in, dtype=torch.float64, device=device).view(n_in, 1, n_in, 1).expand(-1, -1, -1, 4)
    with torch.no_grad():
        out = F.interpolate(
            eye.contiguous(), size=(n_out, 4), mode="bilinear", align_corners=False, antialias=antialias
        )
    return out[:, 0, :, 0].t().contiguous()

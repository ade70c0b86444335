"""Exponential moving average of a network, with the reference's semantics.

After every step `p_ema <- decay * p_ema + (1 - decay) * p` for the parameters being trained, with no
warm-up (as the official code: over `named_parameters`, starting as an exact copy). Parameters that never
train are left alone (averaging equal values could still change their last bit), so a frozen layer stays
bit-identical in the EMA copy; buffers are copied.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from mmfs.checkpoint import unwrap


class Ema:
    """Keeps `target` the EMA of `source` over the parameters in `trainable` (the others are frozen).

    Args:
        source: the trained network.
        target: its EMA copy (same architecture; the caller initialises it, usually a deep copy).
        decay: per-step decay.
        trainable: the parameters the run updates; by default those with `requires_grad`.
    """

    def __init__(
        self, source: nn.Module, target: nn.Module, decay: float, trainable: Iterable[nn.Parameter] | None = None
    ) -> None:
        self.source, self.target, self.decay = unwrap(source), unwrap(target), decay
        params = list(trainable) if trainable is not None else [p for p in self.source.parameters() if p.requires_grad]
        ids = {id(p) for p in params}
        src = dict(self.source.named_parameters())
        dst = dict(self.target.named_parameters())
        if src.keys() != dst.keys():
            raise ValueError("EMA source and target have different parameters")
        # Frozen parameters are never touched: the target starts as a copy and they never change.
        self.averaged = [(dst[k], p) for k, p in src.items() if id(p) in ids]

    @torch.no_grad()
    def update(self) -> None:
        """One EMA step."""
        if self.averaged:
            ema = [t for t, _ in self.averaged]
            torch._foreach_mul_(ema, self.decay)
            torch._foreach_add_(ema, [p.detach() for _, p in self.averaged], alpha=1.0 - self.decay)
        for t, b in zip(self.target.buffers(), self.source.buffers(), strict=True):
            t.copy_(b)

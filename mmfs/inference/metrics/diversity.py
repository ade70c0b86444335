"""LPIPS diversity: how different two stylizations of the same photo under two random styles look."""

from __future__ import annotations

import torch

from mmfs.external.base import PerceptualDistance
from mmfs.inference.metrics.identity import MeanDistance


class DiversityMetric(MeanDistance):
    """Mean LPIPS between `stylized_a[b]` and `stylized_b[b]` (same photo, two styles), streamed."""

    name = "lpips_diversity"

    def __init__(self, lpips: PerceptualDistance) -> None:
        super().__init__()
        self.lpips = lpips

    @torch.no_grad()
    def update(self, stylized_a: torch.Tensor, stylized_b: torch.Tensor) -> torch.Tensor:
        """Add a batch of pairs ([B, 3, H, W] in [-1, 1]); returns their distances [B]."""
        if isinstance(self.lpips, torch.nn.Module):
            device = next(self.lpips.parameters()).device
            stylized_a, stylized_b = stylized_a.to(device), stylized_b.to(device)
        distances = self.lpips.distance(stylized_a, stylized_b)
        self.values.update(distances)
        return distances

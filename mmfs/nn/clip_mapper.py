"""CLIP embedding -> w+ (the official `CLIPFeats2Wplus`, docs/mapper.md): a pre-norm transformer over `num_ws` position-embedded copies of the input."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfs.config import ModelConfig


class ClipMapper(nn.Module):
    """`forward(emb [B, clip_dim]) -> ws [B, num_ws, w_dim]`; keys match the reference's `clip_mapper.*`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_ws = cfg.num_ws
        self.position_embedding = nn.Parameter(torch.randn(cfg.num_ws, cfg.w_dim) * cfg.w_dim**-0.5)
        layer = nn.TransformerEncoderLayer(
            d_model=cfg.w_dim,
            nhead=cfg.mapper_heads,
            dim_feedforward=cfg.mapper_ffn_dim,
            dropout=cfg.mapper_dropout,
            activation="relu",
            norm_first=True,
            batch_first=True,  # the reference is sequence-first; same weights, same maths
        )
        # TransformerEncoder deep-copies `layer`, so every layer starts identical, as in the reference
        self.transformer = nn.TransformerEncoder(layer, cfg.mapper_layers, norm=None, enable_nested_tensor=False)

    def forward(self, emb: Tensor) -> Tensor:
        tokens = emb[:, None, :] + self.position_embedding[None]
        return F.leaky_relu(self.transformer(tokens), 0.2)

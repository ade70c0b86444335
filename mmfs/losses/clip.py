"""CLIP losses of the few-shot stage (`mmfs adapt`, docs/adapt.md): directional loss and token projection loss.

Both run in fp32, also inside a bf16 autocast region: they are small, and their differences of
nearby unit vectors (directions, a projection residual) lose most of their bits in bf16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmfs.utils.device import at_least_fp32, fp32_maths


def clip_direction_loss(fake_emb: Tensor, src_emb: Tensor, target_dir: Tensor) -> Tensor:
    """`mean_b (1 - cos(fake_emb - src_emb, target_dir))`.

    Args:
        fake_emb: CLIP embeddings of the stylized images `[B, D]`.
        src_emb: CLIP embeddings of each sample's own input photo `[B, D]` (the reference's `real_A_clip`).
        target_dir: style direction `[B, D]` or `[D]`: target embedding minus the source anchor (the batch
            mean photo embedding in one-shot mode, the "photo" text embedding in zero-shot mode).
    """
    with fp32_maths(fake_emb.device):
        direction = at_least_fp32(fake_emb) - at_least_fp32(src_emb)
        target_dir = at_least_fp32(target_dir).expand_as(direction)
        return (1 - F.cosine_similarity(direction, target_dir, dim=1, eps=1e-8)).mean()


def _token_matrix(tokens: Tensor) -> Tensor:
    """Tokens `[..., N, C]` -> per-token L2-normalised columns `[C, prod(...) * N]` in fp32."""
    tokens = F.normalize(tokens.float(), dim=-1)
    return tokens.reshape(-1, tokens.shape[-1]).T


def projector_from_tokens(ref_tokens: Tensor) -> Tensor:
    """Orthogonal projector `P = U U^T` `[C, C]` onto the span of the reference's normalised tokens.

    `U` comes from the thin SVD of the `[C, N]` token matrix, with no truncation (rank <= N), as the
    reference. `ref_tokens` is `[N, C]` (or `[1, N, C]`).
    """
    with fp32_maths(ref_tokens.device):
        u, _, _ = torch.linalg.svd(_token_matrix(ref_tokens), full_matrices=False)  # u: [C, min(C, N)]
        return u @ u.T


def token_projection_loss(tokens: Tensor, projector: Tensor) -> Tensor:
    """`L1(P T, T)` (mean) with `T` the per-token L2-normalised tokens `[B, N, C]` as a `[C, B*N]` matrix."""
    with fp32_maths(tokens.device):
        t = _token_matrix(tokens)
        return F.l1_loss(projector.float() @ t, t)

"""StyleGAN2's logistic GAN losses and the R1 penalty (Stage II, docs/training.md).

The reference calls its criterion `GANLoss('wgangp')`, but that mode computes exactly these softplus
forms. Its discriminator loss is halved (`0.5 * (fake + real)`) and R1 is scaled by gamma/2 * 16 for
lazy regularisation: those factors are loss weights applied by the training stage, not here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def g_nonsaturating_loss(fake_logits: Tensor) -> Tensor:
    """Generator loss `softplus(-D(fake)).mean()`."""
    return F.softplus(-fake_logits).mean()


def d_logistic_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator loss `softplus(-D(real)).mean() + softplus(D(fake)).mean()` (the reference adds a 0.5 weight)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def r1_penalty(real_logits: Tensor, real_images: Tensor) -> Tensor:
    """R1 = mean over the batch of the squared gradient norm of `sum(D(real))` w.r.t. each real image.

    `real_images` must have `requires_grad=True` and `real_logits` must come from them. The graph is kept
    (`create_graph=True`) so the penalty can be back-propagated into D.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()

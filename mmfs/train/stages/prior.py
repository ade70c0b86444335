"""`mmfs train-prior`: train a StyleGAN2 generator + discriminator on face photos (the prior of Stage I).

The recipe is rosinality's `train.py` (the code the reference's prior came from), step by step:

- D: `softplus(D(G(z))).mean() + softplus(-D(real)).mean()` (non-saturating logistic, weight 1), G frozen;
- D_reg, every `r1_every` (16) steps: lazy R1 on the same reals, `r1 * gamma/2 * r1_every`, gamma 10;
- G: `softplus(-D(G(z))).mean()`, D frozen, on fresh z;
- G_reg, every `path_every` (4) steps: path-length regularisation on `batch / path_batch_shrink` samples,
  `(|J_w^T y| - a)^2 * path_reg * path_every` with `a` the running mean of the lengths (decay 0.01);
- EMA of G after every step.

Every z goes through style mixing with p = 0.9 (two z, crossover in [1, num_ws - 1]). Adam lr 0.002,
betas (0, 0.99) for both nets, corrected for lazy regularisation (D: 16/17; G: 4/5 when path-length
regularisation is on). Reals are mirrored left-right with p = 0.5 (rosinality's RandomHorizontalFlip).
The output `final.safetensors` is a "prior" file: the EMA generator under `g.`, the discriminator under
`d.`, which `mmfs pretrain-encoder --prior` reads.
"""

from __future__ import annotations

import copy
import math
import os
import random
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mmfs.checkpoint import module_state
from mmfs.config.train import PriorOptions
from mmfs.losses import d_logistic_loss, g_nonsaturating_loss
from mmfs.nn import Discriminator, Generator
from mmfs.train.stage import EmaSpec, Phase, Stage, StepContext, adam, register_stage
from mmfs.train.stages.common import r1_losses


class TrainingGenerator(Generator):
    """The StyleGAN2 generator whose `forward` takes `ws` (the synthesis network), for training.

    The mapping (and style mixing) runs outside `forward`, as for the Stylizer, so DDP wraps the
    synthesis and path-length regularisation can differentiate with respect to `ws`. The state dict is
    the plain `Generator`'s, so the saved weights load into it unchanged.
    """

    def forward(self, ws: Tensor, noise: Any = None, generator: torch.Generator | None = None) -> Tensor:  # type: ignore[override]
        return self.synthesis(ws, noise=noise, generator=generator)


class PathLengthMean(nn.Module):
    """The running mean path length `a` as a persistent scalar buffer, so it is checkpointed with the nets."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(()))


def path_length_losses(
    fake: Tensor, ws: Tensor, y: Tensor, mean: Tensor, *, decay: float, weight: float, every: int
) -> dict[str, Tensor]:
    """StyleGAN2's path-length penalty: lengths `|J_w^T y|` against their running mean `a`.

    `y` is N(0, 1) / sqrt(H * W) like `fake`; the length of sample i is `sqrt(mean_slots sum_c g_i^2)` with
    `g = d(sum fake * y)/d ws`; `a' = a + decay * (mean(lengths) - a)` (its gradient kept, as rosinality's);
    penalty `mean((lengths - a')^2)`, optimised as `penalty * weight * every`. Returns `a'` as `"mean"`.
    """
    (grad,) = torch.autograd.grad((fake * y).sum(), ws, create_graph=True)
    lengths = grad.pow(2).sum(2).mean(1).sqrt()
    path_mean = mean + decay * (lengths.mean() - mean)
    penalty = (lengths - path_mean).pow(2).mean()
    # `0 * fake[0, 0, 0, 0]` makes every generator parameter take part in the backward (DDP)
    total = penalty * (weight * every) + 0.0 * fake[0, 0, 0, 0]
    return {"pl": penalty, "mean": path_mean.detach(), "total": total}


@register_stage
class PriorStage(Stage[PriorOptions]):
    """StyleGAN2 prior training on the shared loop: phases D, D_reg, G and (optionally) G_reg."""

    final_kind = "prior"
    # rosinality train.py: lr 0.002, betas (0, 0.99), batch 16, 800k iterations, EMA half-life 10k images.

    def __init__(self, cfg, device: torch.device, **externals: Any) -> None:
        super().__init__(cfg, device)
        opts = self.options
        self.dataset()  # a wrong folder is reported before the networks are built
        g = TrainingGenerator(cfg.model).to(device)
        d = Discriminator(cfg.model).to(device)
        self.nets = {"g": g, "g_ema": copy.deepcopy(g).eval(), "d": d}
        lr, betas = cfg.loop.lr, cfg.loop.betas
        self.optimizers = {
            "G": adam(list(g.parameters()), lr, betas, reg_every=opts.path_every if opts.path_reg > 0 else 0),
            "D": adam(list(d.parameters()), lr, betas, reg_every=opts.r1_every),
        }
        if opts.path_reg > 0:
            self.nets["path_length"] = PathLengthMean().to(device)
        self.photos_path = os.path.abspath(opts.photos)
        self.preview_z = self.preview_latents(cfg.loop.preview_count)

    def folders(self) -> dict[str, str]:
        return {"photo": self.options.photos}

    def phases(self) -> list[Phase]:
        opts = self.options
        phases = [
            Phase("D", "D", self.d_loss, module="d"),
            Phase("D_reg", "D", self.r1_loss, every=opts.r1_every, module="d"),
            Phase("G", "G", self.g_loss, module="g"),
        ]
        if opts.path_reg > 0:
            phases.append(Phase("G_reg", "G", self.path_loss, every=opts.path_every, module="g"))
        return phases

    def ema(self) -> list[EmaSpec]:
        return [EmaSpec("g", "g_ema", self.cfg.loop.ema_decay)]

    def compile_targets(self) -> list[str]:
        return ["d", "g"]

    # --- inputs ------------------------------------------------------------------------------------------
    def sample_ws(self, batch: int) -> Tensor:
        """ws of fresh z through G's mapping; with `mixing_prob` two z and a crossover, in rosinality's order.

        Unlike the Stylizer stages' `random_styles`, the mixing draw is skipped when `mixing_prob` is 0 and
        both z come from one `randn` through one mapping call, as rosinality's `mixing_noise`.
        """
        g = self.nets["g"]
        z_dim = self.cfg.model.z_dim
        if self.options.mixing_prob > 0 and random.random() < self.options.mixing_prob:
            w1, w2 = g.z_to_w(torch.randn(2 * batch, z_dim, device=self.device)).chunk(2)
            cut = random.randint(1, g.num_ws - 1)
            return torch.cat([w1[:, None].expand(-1, cut, -1), w2[:, None].expand(-1, g.num_ws - cut, -1)], 1)
        return g.ws_from_z(torch.randn(batch, z_dim, device=self.device))

    def real(self, ctx: StepContext) -> Tensor:
        """This micro-batch's photos, mirrored at random; drawn once and shared by D and D_reg."""
        if "real" not in ctx.stash:
            real = ctx.batch["photo"]
            if self.options.mirror:
                flip = torch.rand(real.shape[0], device=self.device) < 0.5
                real = torch.where(flip[:, None, None, None], real.flip(3), real)
            ctx.stash["real"] = real
        return ctx.stash["real"]

    # --- phases ------------------------------------------------------------------------------------------
    def d_loss(self, ctx: StepContext) -> dict[str, Tensor]:
        with torch.no_grad():
            fake = self.nets["g"](self.sample_ws(ctx.size))
        d = self.train_view("d")
        real_logits, fake_logits = d(self.real(ctx)), d(fake)  # two calls: stddev statistics stay within each
        loss = d_logistic_loss(real_logits, fake_logits)
        return {"adv": loss, "real": real_logits.mean(), "fake": fake_logits.mean(), "total": loss}

    def r1_loss(self, ctx: StepContext) -> dict[str, Tensor]:
        opts = self.options
        real = self.real(ctx).detach().requires_grad_(True)
        logits = self.train_view("d", compiled=False)(real)  # double backward: not through torch.compile
        return r1_losses(logits, real, gamma=opts.r1_gamma, every=opts.r1_every)

    def g_loss(self, ctx: StepContext) -> dict[str, Tensor]:
        fake = self.train_view("g")(self.sample_ws(ctx.size))
        loss = g_nonsaturating_loss(self.nets["d"](fake))  # D is frozen in this phase
        return {"adv": loss, "total": loss}

    def path_loss(self, ctx: StepContext) -> dict[str, Tensor]:
        opts = self.options
        ws = self.sample_ws(max(1, ctx.size // opts.path_batch_shrink))
        fake = self.train_view("g", compiled=False)(ws)
        y = torch.randn_like(fake) / math.sqrt(fake.shape[2] * fake.shape[3])
        state = self.nets["path_length"].mean
        out = path_length_losses(fake, ws, y, state, decay=opts.path_decay, weight=opts.path_reg, every=opts.path_every)
        mean = out["mean"].clone()
        if dist.is_available() and dist.is_initialized():  # one running mean for all ranks (checkpointed once)
            dist.all_reduce(mean)
            mean /= dist.get_world_size()
        state.copy_(mean)
        return out

    # --- outputs -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def preview(self) -> tuple[Tensor, int]:
        """EMA generator samples for fixed z and noise (no mixing), four per row."""
        g_ema = self.nets["g_ema"]
        images = g_ema(g_ema.ws_from_z(self.preview_z), **self.preview_noise())
        return images.float(), min(4, len(images))

    def final(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The prior file: the EMA generator under `g.`, the discriminator under `d.`."""
        tensors = {**module_state(self.nets["g_ema"], "g."), **module_state(self.nets["d"], "d.")}
        return tensors, {"photos": self.photos_path, "generator": "ema"}

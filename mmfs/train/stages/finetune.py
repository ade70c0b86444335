"""Stage II, `mmfs finetune`: adversarial fine-tuning of the whole Stylizer on artworks (docs/training.md).

Per step (the reference's order): draw styles (style mixing with p = 0.5, crossover in [1, num_ws-1])
and stylize the photo batch once; G step `1.0 * softplus(-D(fake)) + 0.5 * DINO structure(fake, photo)`
with D frozen; D step `0.5 * (softplus(D(fake.detach())) + softplus(-D(art)))` on the same fakes;
EMA; every 16th step an R1 step on the artworks, `r1 * gamma/2 * 16` with gamma = 10 and its own D
optimizer step. G: Adam lr 1e-3, betas (0.1, 0.999); D: lr and betas corrected by 16/17.

The reference sums the structure loss over its batch of 8; we log and optimise `mean * batch_size`,
which is that sum whatever the accumulation and GPU split.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from torch import Tensor

from mmfs.checkpoint import load_checkpoint, load_state_strict
from mmfs.config.train import FinetuneOptions
from mmfs.losses import d_logistic_loss, dino_structure_loss, g_nonsaturating_loss
from mmfs.train.stage import Phase, Stage, StepContext, adam, grid_of_columns, register_stage
from mmfs.train.stages.common import build_dino, in_fixed_styles, r1_losses, random_styles
from mmfs.train.weights import init_stylizer_tensors, load_discriminator

PREVIEW_STYLES = 3  # style columns per photo in the preview grid


def generator_losses(
    fake_logits: Tensor, structure_sum: Tensor, images: int, batch_size: int, *, adv: float, structure: float
) -> dict[str, Tensor]:
    """`adv * softplus(-D(fake)).mean() + structure * (structure_sum / images * batch_size)`: `adv` and
    `structure` are the weights (`FinetuneOptions`), `structure_sum` the DINO loss summed over `images` images."""
    a = g_nonsaturating_loss(fake_logits)
    s = structure_sum * (batch_size / images)  # the reference's sum over its full batch
    return {"adv": a, "structure": s, "total": adv * a + structure * s}


def discriminator_losses(real_logits: Tensor, fake_logits: Tensor, *, weight: float) -> dict[str, Tensor]:
    """`weight * (softplus(-D(real)).mean() + softplus(D(fake)).mean())` (reference weight 0.5)."""
    a = d_logistic_loss(real_logits, fake_logits)
    return {"adv": a, "total": weight * a}


@register_stage
class FinetuneStage(Stage[FinetuneOptions]):
    """Stage II on the shared loop: phases G, D and D_reg (every `r1_every` steps)."""

    def __init__(self, cfg, device: torch.device, *, dino: Any = None, **externals: Any) -> None:
        super().__init__(cfg, device)
        from mmfs.nn import Stylizer

        opts = self.options
        self.dataset()  # check the folders first: a wrong folder is reported before any weights load
        init = load_checkpoint(opts.init, kind=("stylizer", "training"))
        stylizer = Stylizer(cfg.model)
        load_state_strict(stylizer, init_stylizer_tensors(init), source=f"{init.path} [stylizer]")
        disc = load_discriminator(cfg.model, init, opts.disc)
        stylizer.to(device)
        disc.to(device)
        self.nets = {"stylizer": stylizer, "stylizer_ema": copy.deepcopy(stylizer).eval(), "disc": disc}
        lr, betas = cfg.loop.lr, cfg.loop.betas
        self.optimizers = {
            "G": adam(list(stylizer.parameters()), lr, betas),
            "D": adam(list(disc.parameters()), lr, betas, reg_every=opts.r1_every),
        }
        self.dino = build_dino(opts.dino, cfg.model.resolution, device, given=dino)
        self.init_path = os.path.abspath(init.path)
        self.preview_z = self.preview_latents(PREVIEW_STYLES)

    def folders(self) -> dict[str, str]:
        return {"photo": self.options.photos, "art": self.options.art}

    def phases(self) -> list[Phase]:
        every = self.options.r1_every
        return [
            Phase("G", "G", self.g_loss, module="stylizer"),
            Phase("D", "D", self.d_loss, module="disc"),
            Phase("D_reg", "D", self.r1_loss, every=every, module="disc"),
        ]

    def g_loss(self, ctx: StepContext) -> dict[str, Tensor]:
        opts = self.options
        photo = ctx.batch["photo"]
        ws = random_styles(self.nets["stylizer"], ctx.size, opts.mixing_prob, self.device)
        fake = self.train_view("stylizer")(photo, ws)
        ctx.stash["fake"] = fake.detach()
        logits = self.nets["disc"](fake)  # D is frozen in this phase: no DDP wrapper needed
        structure_sum = dino_structure_loss(self.dino, fake, photo)  # the loss; `opts.structure` is its weight
        return generator_losses(
            logits, structure_sum, ctx.size, self.cfg.loop.batch_size, adv=opts.adv, structure=opts.structure
        )

    def d_loss(self, ctx: StepContext) -> dict[str, Tensor]:
        disc = self.train_view("disc")
        # Two calls, as the reference: minibatch-stddev statistics stay within real or fake.
        return discriminator_losses(disc(ctx.batch["art"]), disc(ctx.stash["fake"]), weight=self.options.d_adv)

    def r1_loss(self, ctx: StepContext) -> dict[str, Tensor]:
        opts = self.options
        real = ctx.batch["art"].detach().requires_grad_(True)
        logits = self.train_view("disc", compiled=False)(real)  # double backward: not through torch.compile
        return r1_losses(logits, real, gamma=opts.r1_gamma, every=opts.r1_every)

    @torch.no_grad()
    def preview(self) -> tuple[Tensor, int]:
        """One row per fixed photo: the photo, then the EMA Stylizer's output for fixed styles and noise."""
        photos = self.preview_photos()
        styled = in_fixed_styles(self.nets["stylizer_ema"], photos, self.preview_z, self.preview_noise())
        return grid_of_columns([photos, *styled])  # each row: photo, style 1, style 2, ...

    def final(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors, meta = super().final()
        return tensors, {**meta, "init": self.init_path}

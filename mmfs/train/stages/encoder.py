"""Stage I, `mmfs pretrain-encoder`: align a new encoder with a frozen StyleGAN2 prior (docs/training.md).

Each step draws z ~ N(0, I), renders the teacher image `hardtanh(G(z))` with the frozen prior (its own
noise, no grad) and reconstructs it through the Stylizer with the same z:
`fake = stylizer(teacher, stylizer.ws_from_z(z))`. The loss is `1.0 * L1(fake, teacher) + 4.0 *
sum_k L1(D_k(fake), D_k(teacher))` over the frozen prior discriminator's feature maps. Only the encoder,
`decoder0` and `to_rgb0` train; the z-mapping and the decoder from 2F px up come from the prior, frozen.
No dataset is needed. In Python, `teacher=` / `disc=` externals replace the prior file's networks (tests).
A prior larger than the Stylizer (the public 1024 px FFHQ for `--preset ffhq512`) is used whole: its
images are resampled to the Stylizer's size, and its discriminator compares both upsampled to its own
(docs/training.md, "A 1024 px prior for the 512 px model").
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmfs.checkpoint import load_state_strict
from mmfs.config.train import EncoderOptions
from mmfs.errors import CheckpointError
from mmfs.train.stage import Stage, StepContext, adam, grid_of_rows, register_stage
from mmfs.train.stages.common import reconstruction_losses
from mmfs.train.weights import load_prior
from mmfs.utils.resize import bilinear_resize

STAGE1_NEW_LAYERS = ("encoder.", "decoder0.", "to_rgb0.")


def resample(x: Tensor, size: int) -> Tensor:
    """Images at `size` px: unchanged when they are, else bilinear with antialiasing (an area filter downwards)."""
    return bilinear_resize(x, (size, size), antialias=True)


@register_stage
class EncoderStage(Stage[EncoderOptions]):
    """Stage I on the shared loop: one phase "G" over the Stylizer's new layers."""

    def __init__(self, cfg, device: torch.device, *, teacher: Any = None, disc: Any = None, **externals: Any) -> None:
        """`teacher` / `disc`: pre-built networks used instead of the prior file's generator / discriminator.

        An injected teacher is a `Generator` for `cfg.model`; the Stylizer's frozen z-mapping and decoder
        from 2F px up are then copied from it (it is the prior), so `--prior` may be left empty when both
        are injected. An injected `disc` needs only `.features(x)`. Both are frozen like the loaded ones.
        With an injected `disc`, `final.safetensors` names no prior (Stage II then needs `--disc`).
        """
        super().__init__(cfg, device, provided=("prior",) if teacher is not None and disc is not None else ())
        from mmfs.nn import Discriminator, Generator, Stylizer
        from mmfs.nn.convert import check_prior_covers, first_layers_from_prior, stylizer_init_from_prior

        opts = self.options
        model = cfg.model
        prior = None
        if opts.prior:
            prior = load_prior(opts.prior)
        source = str(prior.path) if prior is not None else "injected teacher"
        # A larger prior (the public 1024 px FFHQ for the 512 px model) is used whole: its images are
        # resampled to the Stylizer's size, and the Stylizer takes its layers up to that size.
        prior_cfg = prior.config if prior is not None else model
        check_prior_covers(prior_cfg, model, source=source)
        if teacher is None:
            teacher = Generator(prior_cfg)
            load_state_strict(teacher, prior.subset("g."), source=f"{prior.path} [generator]")
            g_tensors = prior.subset("g.")
        else:
            g_tensors = dict(teacher.state_dict())
        disc_from_prior = disc is None
        if disc is None:
            d_tensors = prior.subset("d.")
            if not d_tensors:
                raise CheckpointError(
                    f"{prior.path}: prior has no discriminator (d.*); Stage I needs it for the feature loss"
                )
            # The prior's D sees its own size: both images are upsampled to it, and its feature blocks move
            # down by the same number of halvings, so each compared feature map covers the same image scale.
            shift = prior_cfg.log2_resolution - model.log2_resolution
            blocks = tuple(b + shift for b in model.disc_feature_blocks)
            disc = Discriminator(dataclasses.replace(prior_cfg, disc_feature_blocks=blocks))
            load_state_strict(disc, d_tensors, source=f"{prior.path} [discriminator]")
        self.teacher, self.disc = teacher, disc
        self.prior_resolution = prior_cfg.resolution
        for net in (self.teacher, self.disc):
            net.to(device).eval().requires_grad_(False)

        stylizer = Stylizer(model)
        init = stylizer_init_from_prior(g_tensors, model)
        if opts.first_layers_from_prior:
            init.update(first_layers_from_prior(g_tensors, model))
        missing, unexpected = stylizer.load_state_dict(init, strict=False)
        wrong = [k for k in missing if not k.startswith(STAGE1_NEW_LAYERS)] + list(unexpected)
        if wrong:
            raise CheckpointError(f"{source}: prior does not fit the Stylizer ({', '.join(wrong[:3])})")
        stylizer.to(device)
        self.nets = {"stylizer": stylizer, "stylizer_ema": copy.deepcopy(stylizer).eval()}
        self.optimizers = {"G": adam(stylizer.stage1_parameters(), cfg.loop.lr, cfg.loop.betas)}
        # Stage II finds its discriminator through this path: recorded only when Stage I's came from the file.
        self.prior_path = os.path.abspath(prior.path) if disc_from_prior else None
        self.preview_z = self.preview_latents(cfg.loop.preview_count)

    def g_loss(self, ctx: StepContext) -> dict[str, Tensor]:
        opts = self.options
        z = torch.randn(ctx.size, self.cfg.model.z_dim, device=self.device)
        disc_features = self.frozen_fn("disc_features", self.disc.features)

        def features(x: Tensor) -> list[Tensor]:
            return disc_features(resample(x, self.prior_resolution))

        with torch.no_grad():
            real = self.teacher_images(self.frozen_fn("teacher", self.teacher), z)  # the teacher draws its own noise
            real_feats = features(real)
        ws = self.nets["stylizer"].ws_from_z(z)  # frozen mapping: the same z as the teacher
        fake = self.train_view("stylizer")(real, ws)
        return reconstruction_losses(fake, real, features(fake), real_feats, l1=opts.l1, feat=opts.feat)

    def teacher_images(self, teacher: Any, z: Tensor, **kwargs: Any) -> Tensor:
        """`hardtanh(G(z))` at the Stylizer's size (a larger prior's images are resampled down)."""
        return resample(F.hardtanh(teacher(z, **kwargs)), self.cfg.model.resolution)

    @torch.no_grad()
    def preview(self) -> tuple[Tensor, int]:
        """Top row: teacher samples; bottom row: their reconstructions by the EMA Stylizer (fixed z and noise)."""
        noise = self.preview_noise()
        real = self.teacher_images(self.teacher, self.preview_z, **noise)
        ema = self.nets["stylizer_ema"]
        return grid_of_rows([real, ema(real, ema.ws_from_z(self.preview_z), **noise)])

    def final(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors, meta = super().final()
        if self.prior_path is None:
            return tensors, meta
        return tensors, {**meta, "prior": self.prior_path}  # Stage II finds the discriminator through this

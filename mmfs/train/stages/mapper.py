"""Phase 3, `mmfs train-mapper`: the CLIP -> w+ mapper, trained by image reconstruction (docs/mapper.md).

Each step: a photo batch `real_A`; a random style of the Stage-II model, `real_B = stylizer_ema(real_A,
ws(z))` (style mixing with `mixing_prob`, reference default 0), under no_grad; its CLIP image embedding
`c = normalize(CLIP(real_B))`; the reconstruction `fake_B = stylizer(real_A, mapper(c))`; the loss
`1.0 * L1(fake_B, real_B) + 4.0 * sum_k L1(D_k(fake_B), D_k(real_B))` with the frozen Stage-II
discriminator. Only the mapper trains (Adam lr 2e-4, betas (0.1, 0.999), EMA 0.999); its dropout is
active while training, as in the reference (the whole generator is in train mode there).

No text is seen in training: a text prompt works at inference because CLIP embeds text and images in
one space. The mapper starts as the reference's (four identical deep-copied layers, position embedding
w_dim^-0.5 N(0, 1)), or from the mapper already in `--init` if it has one (to continue training).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmfs.checkpoint import Checkpoint, load_checkpoint, load_state_strict
from mmfs.config.train import MapperOptions
from mmfs.train.stage import Stage, StepContext, adam, grid_of_columns, register_stage
from mmfs.train.stages.common import (
    build_stage_clip,
    clip_record,
    in_fixed_styles,
    random_styles,
    reconstruction_losses,
)
from mmfs.train.weights import MAPPER_PREFIX, init_stylizer_tensors, load_discriminator

PREVIEW_STYLES = 2  # random styles per preview photo (each shown as target and reconstruction)


def resolve_init(path: str | os.PathLike[str]) -> Path:
    """A run directory -> its latest training checkpoint; a file stays as it is."""
    path = Path(path)
    if path.is_dir():
        from mmfs.train.state import read_latest

        return Path(read_latest(path)["weights"])
    return path


def stylizer_with_mapper(cfg, init: Checkpoint) -> tuple[torch.nn.Module, bool]:
    """A Stylizer with a CLIP mapper: every other weight strictly from `init`; the mapper too if `init` has one.

    Returns the network and whether the mapper came from `init` (else it keeps its fresh reference init).
    """
    from mmfs.nn import Stylizer

    stylizer = Stylizer(cfg, with_mapper=True)
    tensors = init_stylizer_tensors(init, with_mapper=True)
    has_mapper = any(k.startswith(MAPPER_PREFIX) for k in tensors)
    if not has_mapper:
        fresh = {k: v for k, v in stylizer.state_dict().items() if k.startswith(MAPPER_PREFIX)}
        tensors = {**tensors, **fresh}
    load_state_strict(stylizer, tensors, source=f"{init.path} [stylizer]")
    return stylizer, has_mapper


@register_stage
class MapperStage(Stage[MapperOptions]):
    """Phase 3 on the shared loop: one phase "G" over the CLIP mapper's parameters."""

    @classmethod
    def prepare_options(cls, options: MapperOptions) -> MapperOptions:
        """`--init` may name a finetune run directory: the run records its latest checkpoint instead."""
        return dataclasses.replace(options, init=str(resolve_init(options.init)))

    def __init__(self, cfg, device: torch.device, *, clip: Any = None, **externals: Any) -> None:
        super().__init__(cfg, device)

        opts = self.options
        init = load_checkpoint(resolve_init(opts.init), kind=("stylizer", "training"))
        stylizer, self.mapper_from_init = stylizer_with_mapper(cfg.model, init)
        disc = load_discriminator(cfg.model, init, opts.disc)
        stylizer.to(device).train()  # train mode only matters for the mapper's dropout (reference)
        disc.to(device).eval()
        self.disc = disc
        # The discriminator is saved in every checkpoint so that a later run can start from one file.
        self.nets = {"stylizer": stylizer, "stylizer_ema": copy.deepcopy(stylizer).eval(), "disc": disc}
        self.optimizers = {"G": adam(list(stylizer.clip_mapper.parameters()), cfg.loop.lr, cfg.loop.betas)}
        self.clip = build_stage_clip(opts, cfg.model.clip_dim, device, given=clip)
        self.init_path = os.path.abspath(init.path)
        self.preview_z = self.preview_latents(PREVIEW_STYLES)

    def g_loss(self, ctx: StepContext) -> dict[str, Tensor]:
        opts = self.options
        photo = ctx.batch["photo"]
        features = self.frozen_fn("disc_features", self.disc.features)
        with torch.no_grad():
            # The EMA copy's non-mapper weights are the Stage-II model's (frozen, never averaged).
            target = self.nets["stylizer_ema"]
            real = target(photo, random_styles(target, ctx.size, opts.mixing_prob, self.device))
            emb = self.clip.encode_image(real).float()  # [B, D], L2-normalised
            real_feats = features(real)
        ws = self.nets["stylizer"].ws_from_clip(emb)  # the trained mapper (dropout active)
        fake = self.train_view("stylizer")(photo, ws)
        return reconstruction_losses(fake, real, features(fake), real_feats, l1=opts.l1, feat=opts.feat)

    @torch.no_grad()
    def preview(self) -> tuple[Tensor, int]:
        """One row per fixed photo: the photo, then per fixed style its target and the EMA mapper's reconstruction."""
        ema = self.nets["stylizer_ema"]
        noise = self.preview_noise()
        photos = self.preview_photos()
        columns = [photos]
        for target in in_fixed_styles(ema, photos, self.preview_z, noise):
            columns += [target, ema(photos, ema.ws_from_clip(self.clip.encode_image(target).float()), **noise)]
        return grid_of_columns(columns)

    def final(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors, meta = super().final()  # the EMA stylizer, clip_mapper.* included
        opts = self.options
        return tensors, {**meta, "init": self.init_path, **clip_record(opts)}

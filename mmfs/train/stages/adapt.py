"""Phase 4, `mmfs adapt`: zero-shot (text) or one-shot (reference image) fine-tuning of the decoder (docs/adapt.md).

The style code is the frozen mapper applied to the CLIP target (the prompt's text embedding, or the
reference's image embedding through CLIP's PIL preprocessing), and every decoder layer (decoder0..N,
to_rgb0..N: convolutions, modulation affines, noise weights, biases) is fine-tuned; the encoder, the
z-mapping and the mapper stay frozen. Per step, on a batch of photos `real_A`:

- `real_A_clip = CLIP(real_A)` (no grad); `fake_B = stylizer(real_A, mapper(target))`;
- the style direction is `target - source`, with source = the batch mean of `real_A_clip` (one-shot,
  not re-normalised, recomputed every step) or the text embedding of "photo" (zero-shot);
- `clip_dir = mean_b (1 - cos(CLIP(fake_B)_b - real_A_clip_b, target - source))`;
- `proj` (one-shot only) = `L1(P T, T)` on the fake's block-3 CLIP tokens (CLS dropped, per-token
  L2-normalised), with `P = U U^T` the projector onto the reference's own tokens;
- `structure` = the DINO self-similarity loss against `real_A`, summed over the batch as the reference;
- total `0.5 * structure + 1.0 * clip_dir + 100 * proj`.

Adam lr 2e-4, betas (0.9, 0.999), EMA 0.99, batch 8, 200 steps at a constant lr (the saved recipe).
The frozen mapper's dropout stays active while adapting, as in the reference (`mapper_dropout=False`
turns it off). The fake images go through CLIP once for both the embedding and the tokens.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmfs.checkpoint import load_checkpoint, load_state_strict
from mmfs.config.train import AdaptOptions
from mmfs.errors import CheckpointError, MMFSError
from mmfs.losses import clip_direction_loss, dino_structure_loss, projector_from_tokens, token_projection_loss
from mmfs.train.stage import Stage, StepContext, adam, grid_of_rows, register_stage
from mmfs.train.stages.common import build_dino, build_stage_clip, clip_record
from mmfs.train.weights import MAPPER_PREFIX, init_stylizer_tensors
from mmfs.utils.device import fp32_maths


def adapt_losses(
    fake_emb: Tensor,
    photo_emb: Tensor,
    target: Tensor,
    source: Tensor,
    structure_sum: Tensor,
    images: int,
    batch_size: int,
    *,
    structure: float,
    clip_dir: float,
    fake_tokens: Tensor | None = None,
    projector: Tensor | None = None,
    proj: float = 0.0,
) -> dict[str, Tensor]:
    """The phase-4 objective; `proj` appears only when a projector is given (one-shot).

    Args:
        fake_emb, photo_emb: normalised CLIP embeddings `[B, D]` of the stylized images and their photos.
        target, source: the anchors `[1, D]` or `[D]`; the style direction is `target - source`.
        structure_sum: the DINO structure loss summed over this micro-batch of `images` images; it is
            rescaled to a sum over the full `batch_size` (the reference sums over its batch of 8).
        fake_tokens: block tokens `[B, N, C]` of the stylized images (one-shot).
        projector: `P = U U^T` `[C, C]` of the reference's tokens (one-shot).
    """
    losses = {
        "structure": structure_sum * (batch_size / images),
        "clip_dir": clip_direction_loss(fake_emb, photo_emb, (target - source).reshape(-1)),
    }
    total = structure * losses["structure"] + clip_dir * losses["clip_dir"]
    if projector is not None:
        if fake_tokens is None:
            raise ValueError("the projection loss needs the fake images' tokens")
        losses["proj"] = token_projection_loss(fake_tokens, projector)
        total = total + proj * losses["proj"]
    losses["total"] = total
    return losses


def load_base(path: str | os.PathLike[str], cfg) -> torch.nn.Module:
    """The base Stylizer (EMA weights of a stylizer/training file), which must have a CLIP mapper."""
    from mmfs.nn import Stylizer

    base = load_checkpoint(path, kind=("stylizer", "training"))
    if base.config is not None and base.config != cfg:
        raise CheckpointError(f"{base.path}: model config differs from the run's")
    tensors = init_stylizer_tensors(base, with_mapper=True)
    if not any(k.startswith(MAPPER_PREFIX) for k in tensors):
        raise CheckpointError(f"{base.path}: this checkpoint has no CLIP mapper; train one with `mmfs train-mapper`")
    stylizer = Stylizer(cfg, with_mapper=True)
    load_state_strict(stylizer, tensors, source=f"{base.path} [stylizer]")
    return stylizer


@register_stage
class AdaptStage(Stage[AdaptOptions]):
    """Phase 4 on the shared loop: one phase "G" over the decoder's parameters."""

    # exp/sp2pII-phase4.yaml: lr 2e-4, beta1 0.9, EMA 0.99, batch 8; 200 saved updates at constant lr.

    def __init__(self, cfg, device: torch.device, *, clip: Any = None, dino: Any = None, **externals: Any) -> None:
        super().__init__(cfg, device)
        opts = self.options
        stylizer = load_base(opts.checkpoint, cfg.model).to(device)
        stylizer.train()  # only the mapper has train-mode behaviour (dropout)
        if not opts.mapper_dropout:
            stylizer.clip_mapper.eval()
        self.nets = {"stylizer": stylizer, "stylizer_ema": copy.deepcopy(stylizer).eval()}
        self.optimizers = {"G": adam(stylizer.decoder_parameters(), cfg.loop.lr, cfg.loop.betas)}
        self.clip = build_stage_clip(opts, cfg.model.clip_dim, device, given=clip)
        self.dino = build_dino(opts.dino, cfg.model.resolution, device, given=dino)
        self.base_path = os.path.abspath(opts.checkpoint)
        self.target, self.source, self.projector = self._anchors(opts)

    @torch.no_grad()
    def _anchors(self, opts: AdaptOptions) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Target embedding `[1, D]`, the zero-shot source `[1, D]` (None: batch mean) and the one-shot projector."""
        from mmfs.external.clip import load_reference, text_embeddings

        clip = self.clip
        if opts.one_shot:
            image = load_reference(opts.ref)
            target, tokens = clip.encode_reference_image_with_tokens(image, opts.proj_block)
            return target.float(), None, projector_from_tokens(tokens[0])
        target = text_embeddings(clip, [opts.text]).to(self.device)
        source = text_embeddings(clip, [opts.source_text]).to(self.device)
        return target, source, None

    def g_loss(self, ctx: StepContext) -> dict[str, Tensor]:
        opts = self.options
        photo = ctx.batch["photo"]
        stylizer = self.nets["stylizer"]
        with torch.no_grad():
            photo_emb = self.clip.encode_image(photo).float()  # [B, D]
            # The reference keeps the frozen mapper's dropout on: a new mask per sample and step. It runs
            # in fp32 under autocast too: the style code is computed once per step and steers every layer.
            with fp32_maths(self.device):
                ws = stylizer.ws_from_clip(self.target.float().expand(ctx.size, -1))
        source = photo_emb.mean(0, keepdim=True) if self.source is None else self.source
        fake = self.train_view("stylizer")(photo, ws)
        tokens = None
        if self.projector is not None:
            fake_emb, tokens = self.clip.encode_image_with_tokens(fake, opts.proj_block)
        else:
            fake_emb = self.clip.encode_image(fake)
        structure_sum = dino_structure_loss(self.dino, fake, photo)  # the loss; `opts.structure` is its weight
        return adapt_losses(
            fake_emb.float(), photo_emb, self.target, source, structure_sum, ctx.size, self.cfg.loop.batch_size,
            structure=opts.structure, clip_dir=opts.clip_dir, fake_tokens=tokens, projector=self.projector,
            proj=opts.proj,
        )  # fmt: skip

    @torch.no_grad()
    def preview(self) -> tuple[Tensor, int]:
        """Two rows: fixed photos, and the EMA Stylizer's rendering of them in the target style (fixed noise)."""
        ema = self.nets["stylizer_ema"]
        photos = self.preview_photos()
        fake = ema(photos, ema.ws_from_clip(self.target.expand(len(photos), -1)), **self.preview_noise())
        return grid_of_rows([photos, fake])

    def final(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors, meta = super().final()
        return tensors, {**meta, "base": self.base_path}


# --- the adapted file -----------------------------------------------------------------------------


DECODER_PREFIXES = ("decoder", "to_rgb")


def changed_decoder_tensors(adapted: dict[str, Tensor], base: dict[str, Tensor]) -> dict[str, Tensor]:
    """The decoder tensors (`decoder*`, `to_rgb*`) of `adapted` that differ from `base`; anything else must be equal."""
    out = {}
    for key, value in adapted.items():
        if key not in base:
            raise MMFSError(f"adapted weight {key} is not in the base model")
        if torch.equal(value, base[key]):
            continue
        if not key.startswith(DECODER_PREFIXES):
            raise MMFSError(f"adapting changed {key}, which is not a decoder weight")
        out[key] = value
    return out


def adapted_meta(opts: AdaptOptions, out_path: str | os.PathLike[str], steps: int) -> dict[str, Any]:
    """Metadata of an adapted file: the base (relative to the file's folder when possible), its hash, the style."""
    from mmfs.utils.files import file_sha256

    base = Path(opts.checkpoint).resolve()
    try:
        base_ref = os.path.relpath(base, Path(out_path).resolve().parent)
    except ValueError:  # another drive on Windows
        base_ref = str(base)
    meta: dict[str, Any] = {
        "base": base_ref, "base_sha256": file_sha256(base), "steps": str(steps), **clip_record(opts),
    }  # fmt: skip
    if opts.one_shot:
        meta["reference"] = str(opts.ref)
    else:
        meta["prompt"] = opts.text
    return meta


def save_adapted(final_path: str | os.PathLike[str], cfg, out: str | os.PathLike[str]) -> Path:
    """Write the `adapted` file of a finished adapt run: its changed decoder weights plus a pointer to the base."""
    from mmfs.checkpoint import save_checkpoint

    opts: AdaptOptions = cfg.options
    final = load_checkpoint(final_path, kind="stylizer")
    base = init_stylizer_tensors(load_checkpoint(opts.checkpoint, kind=("stylizer", "training")), with_mapper=True)
    changed = changed_decoder_tensors(final.tensors, base)
    meta = adapted_meta(opts, out, int(final.meta.get("step", cfg.loop.steps)))
    return save_checkpoint(out, changed, kind="adapted", config=cfg.model, meta=meta)

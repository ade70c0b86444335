"""The MMFS Stylizer: content encoder + a StyleGAN2 style decoder from the feature resolution up (the official `style_based_pix2pixII`).

`forward(x, ws)` takes the styles explicitly (`ws: [B, num_ws, w_dim]`); the helpers `ws_from_z`,
`mixed_ws` and `ws_from_clip` produce them. At 512 px the decoder is a new 32 px StyledConv + ToRGB
(`decoder0`, `to_rgb0`) followed by StyleGAN2-512's 64..512 px layers (`decoder{k}a/b`, `to_rgb{k}`),
with the reference's state-dict keys. The blocks are the fast ones of `mmfs/nn/fast.py` unless the
Stylizer is built with `fast=False` (the reference maths of `mmfs/nn/layers.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfs.config import ModelConfig
from mmfs.errors import CheckpointError
from mmfs.nn.clip_mapper import ClipMapper
from mmfs.nn.encoder import build_encoder
from mmfs.nn.fast import to_fast
from mmfs.nn.layers import StyledConv, ToRGB, draw_noise, resolve_noise
from mmfs.nn.stylegan2 import build_mapping

NoiseArg = str | Sequence[Tensor] | None


class Stylizer(nn.Module):
    """Encoder [B,3,R,R] -> [B,C_F,F,F], then styled convs driven by `ws` -> RGB [B,3,R,R] in [-1, 1].

    `fast=False` builds the reference blocks; the default, their fast forms (same keys and results).
    """

    def __init__(self, cfg: ModelConfig, with_mapper: bool = False, fast: bool = True):
        super().__init__()
        self.cfg = cfg
        self.num_ws = cfg.num_ws
        self.num_noises = cfg.num_ws - 1  # one per styled conv
        w_dim = cfg.w_dim
        res = cfg.feature_resolution
        self.encoder = build_encoder(cfg)
        self.mapping_z = build_mapping(cfg)
        self.decoder0 = StyledConv(cfg.channels(res), cfg.channels(res), 3, w_dim)
        self.to_rgb0 = ToRGB(cfg.channels(res), w_dim, upsample=False)
        self.noise_shapes: list[tuple[int, int]] = [(res, res)]
        for k in range(1, cfg.num_upsamples + 1):
            in_ch, res = cfg.channels(res), res * 2
            out_ch = cfg.channels(res)
            setattr(self, f"decoder{k}a", StyledConv(in_ch, out_ch, 3, w_dim, upsample=True))
            setattr(self, f"decoder{k}b", StyledConv(out_ch, out_ch, 3, w_dim))
            setattr(self, f"to_rgb{k}", ToRGB(out_ch, w_dim))
            self.noise_shapes += [(res, res), (res, res)]
        if with_mapper:
            self.clip_mapper = ClipMapper(cfg)
        if fast:
            to_fast(self)

    # ---- styles -------------------------------------------------------------------------------------------

    def z_to_w(self, z: Tensor) -> Tensor:
        """[B, z_dim] -> [B, w_dim] through `mapping_z`."""
        return self.mapping_z(z)

    def ws_from_z(self, z: Tensor) -> Tensor:
        """[B, z_dim] -> [B, num_ws, w_dim], the same w in every slot."""
        return self.z_to_w(z)[:, None, :].repeat(1, self.num_ws, 1)

    def mixed_ws(self, z1: Tensor, z2: Tensor, crossover: int) -> Tensor:
        """Style mixing: slots [0, crossover) from z1, the rest from z2."""
        if not 0 <= crossover <= self.num_ws:
            raise ValueError(f"crossover must be in [0, {self.num_ws}], got {crossover}")
        w1, w2 = self.z_to_w(z1), self.z_to_w(z2)
        slot = torch.arange(self.num_ws, device=w1.device)[None, :, None]
        return torch.where(slot < crossover, w1[:, None, :], w2[:, None, :])

    def ws_from_clip(self, emb: Tensor) -> Tensor:
        """CLIP embedding [B, clip_dim] -> ws through the CLIP mapper."""
        mapper = getattr(self, "clip_mapper", None)
        if mapper is None:
            raise CheckpointError("this checkpoint has no CLIP mapper; train one with `mmfs train-mapper`")
        return mapper(emb)

    # ---- noise --------------------------------------------------------------------------------------------

    def make_noise(
        self, batch: int, *, generator: torch.Generator | None = None, device=None, dtype=None
    ) -> list[Tensor]:
        """Fresh N(0,1) maps [B, 1, H, W], one per styled conv, in layer order (decoder0, 1a, 1b, ...)."""
        return draw_noise(self.noise_shapes, batch, generator, device, dtype)

    # ---- network ------------------------------------------------------------------------------------------

    def encode(self, x: Tensor) -> Tensor:
        """Image [B, 3, R, R] in [-1, 1] -> content features [B, C_F, F, F]."""
        return self.encoder(x)

    def decode(
        self, feat: Tensor, ws: Tensor, noise: NoiseArg = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Features + styles -> raw RGB [B, 3, R, R] (not clamped)."""
        if ws.ndim != 3 or ws.shape[1] != self.num_ws:
            raise ValueError(f"ws must be [B, {self.num_ws}, w_dim], got {tuple(ws.shape)}")
        maps = resolve_noise(noise, self.noise_shapes, feat.shape[0], generator, feat.device, torch.float32)
        out = self.decoder0(feat, ws[:, 0], maps[0])
        rgb = self.to_rgb0(out, ws[:, 1])
        for k in range(1, self.cfg.num_upsamples + 1):
            out = getattr(self, f"decoder{k}a")(out, ws[:, 2 * k - 1], maps[2 * k - 1])
            out = getattr(self, f"decoder{k}b")(out, ws[:, 2 * k], maps[2 * k])
            rgb = getattr(self, f"to_rgb{k}")(out, ws[:, 2 * k + 1], rgb)
        return rgb

    def forward(
        self, x: Tensor, ws: Tensor, noise: NoiseArg = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Stylize: hardtanh(decode(encode(x), ws)), i.e. RGB clamped to [-1, 1]."""
        return F.hardtanh(self.decode(self.encode(x), ws, noise=noise, generator=generator))

    # ---- parameter groups -----------------------------------------------------------------------------------

    def decoder_modules(self) -> list[nn.Module]:
        """decoder0, to_rgb0, decoder1a, decoder1b, to_rgb1, ... in forward order."""
        mods: list[nn.Module] = [self.decoder0, self.to_rgb0]
        for k in range(1, self.cfg.num_upsamples + 1):
            mods += [getattr(self, f"decoder{k}a"), getattr(self, f"decoder{k}b"), getattr(self, f"to_rgb{k}")]
        return mods

    def decoder_parameters(self) -> list[nn.Parameter]:
        """Every decoder layer and ToRGB (what `adapt` fine-tunes; 11,639,768 parameters at 512 px)."""
        return [p for m in self.decoder_modules() for p in m.parameters()]

    def stage1_parameters(self) -> list[nn.Parameter]:
        """encoder + decoder0 + to_rgb0 (what Stage I trains; 7,822,020 parameters at 512 px)."""
        return [p for m in (self.encoder, self.decoder0, self.to_rgb0) for p in m.parameters()]

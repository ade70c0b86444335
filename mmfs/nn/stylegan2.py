"""The StyleGAN2 prior generator and discriminator, with rosinality's state-dict keys.

`Generator` loads a rosinality `g`/`g_ema` state dict strictly (`style.N`, `input.input`, `conv1`, `to_rgb1`,
`convs.i`, `to_rgbs.i`, `noises.noise_i`); it is the Stage I teacher. `Discriminator` loads a rosinality
`d` (`convs.0.0.weight` ... `final_linear.1.bias`) and adds MMFS's `features()` (the perceptual features).
Both run the fast blocks of `mmfs/nn/fast.py` unless built with `fast=False` (the reference maths).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mmfs.config import ModelConfig
from mmfs.nn.fast import to_fast
from mmfs.nn.layers import (
    ConvLayer,
    EqualLinear,
    PixelNorm,
    ResBlock,
    StyledConv,
    ToRGB,
    draw_noise,
    resolve_noise,
)


def build_mapping(cfg: ModelConfig) -> nn.Sequential:
    """PixelNorm + `mapping_layers` x EqualLinear(lr_mul, fused lrelu): z -> w."""
    layers: list[nn.Module] = [PixelNorm()]
    for i in range(cfg.mapping_layers):
        in_dim = cfg.z_dim if i == 0 else cfg.w_dim
        layers.append(EqualLinear(in_dim, cfg.w_dim, lr_mul=cfg.mapping_lr_mul, activation="fused_lrelu"))
    return nn.Sequential(*layers)


class ConstantInput(nn.Module):
    """The learned 4x4 input of the synthesis network."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.input.expand(batch, -1, -1, -1)


class _NoiseBuffers(nn.Module):
    """Holds rosinality's fixed `noise_i` buffers (persistent, so a rosinality checkpoint loads strictly)."""


class Generator(nn.Module):
    """Full StyleGAN2 generator (mapping + synthesis from 4x4) at `cfg.resolution`; the Stage I teacher.

    `fast=False` builds the reference blocks; the default, their fast forms (same keys and results).
    """

    def __init__(self, cfg: ModelConfig, fast: bool = True):
        super().__init__()
        self.cfg = cfg
        self.num_ws = cfg.prior_num_ws
        log_size = cfg.log2_resolution
        w_dim = cfg.w_dim
        self.style = build_mapping(cfg)
        self.input = ConstantInput(cfg.channels(4))
        self.conv1 = StyledConv(cfg.channels(4), cfg.channels(4), 3, w_dim)
        self.to_rgb1 = ToRGB(cfg.channels(4), w_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # empty in rosinality too; kept for attribute parity
        self.to_rgbs = nn.ModuleList()
        self.noises = _NoiseBuffers()
        self.num_layers = (log_size - 2) * 2 + 1
        self.noise_shapes: list[tuple[int, int]] = []
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))
            self.noise_shapes.append((res, res))
        in_ch = cfg.channels(4)
        for i in range(3, log_size + 1):
            out_ch = cfg.channels(2**i)
            self.convs.append(StyledConv(in_ch, out_ch, 3, w_dim, upsample=True))
            self.convs.append(StyledConv(out_ch, out_ch, 3, w_dim))
            self.to_rgbs.append(ToRGB(out_ch, w_dim))
            in_ch = out_ch
        if fast:
            to_fast(self)

    def z_to_w(self, z: Tensor) -> Tensor:
        """[B, z_dim] -> [B, w_dim]."""
        return self.style(z)

    def ws_from_z(self, z: Tensor) -> Tensor:
        """[B, z_dim] -> [B, num_ws, w_dim] (the same w in every slot)."""
        return self.z_to_w(z)[:, None, :].repeat(1, self.num_ws, 1)

    def make_noise(
        self, batch: int, *, generator: torch.Generator | None = None, device=None, dtype=None
    ) -> list[Tensor]:
        """Fresh N(0,1) maps [B, 1, H, W], one per styled conv, in layer order."""
        return draw_noise(self.noise_shapes, batch, generator, device, dtype)

    def synthesis(self, ws: Tensor, noise: str | Sequence[Tensor] | None = None, generator=None) -> Tensor:
        """ws [B, num_ws, w_dim] -> raw image [B, 3, R, R]; noise None/"zero"/"const" (stored maps)/list."""
        if ws.ndim != 3 or ws.shape[1] != self.num_ws:
            raise ValueError(f"ws must be [B, {self.num_ws}, w_dim], got {tuple(ws.shape)}")
        batch = ws.shape[0]
        if isinstance(noise, str) and noise == "const":
            noise = [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        maps = resolve_noise(noise, self.noise_shapes, batch, generator, ws.device, ws.dtype)
        out = self.conv1(self.input(batch), ws[:, 0], maps[0])
        skip = self.to_rgb1(out, ws[:, 1])
        i = 1
        for k, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * k](out, ws[:, i], maps[2 * k + 1])
            out = self.convs[2 * k + 1](out, ws[:, i + 1], maps[2 * k + 2])
            skip = to_rgb(out, ws[:, i + 2], skip)
            i += 2
        return skip

    def forward(self, z: Tensor, noise: str | Sequence[Tensor] | None = None, generator=None) -> Tensor:
        """z [B, z_dim] -> raw image (not clamped)."""
        return self.synthesis(self.ws_from_z(z), noise=noise, generator=generator)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator down to 4x4, minibatch stddev, two linear layers -> logits [B, 1].

    `fast=False` builds the reference blocks; the default, their fast forms (same keys and results).
    """

    def __init__(self, cfg: ModelConfig, fast: bool = True):
        super().__init__()
        self.cfg = cfg
        log_size = cfg.log2_resolution
        convs: list[nn.Module] = [ConvLayer(3, cfg.channels(cfg.resolution), 1)]
        in_ch = cfg.channels(cfg.resolution)
        for i in range(log_size, 2, -1):
            out_ch = cfg.channels(2 ** (i - 1))
            convs.append(ResBlock(in_ch, out_ch))
            in_ch = out_ch
        self.convs = nn.Sequential(*convs)
        self.stddev_group = 4
        self.stddev_feat = 1
        self.final_conv = ConvLayer(in_ch + 1, cfg.channels(4), 3)
        self.final_linear = nn.Sequential(
            EqualLinear(cfg.channels(4) * 4 * 4, cfg.channels(4), activation="fused_lrelu"),
            EqualLinear(cfg.channels(4), 1),
        )
        # feature blocks that exist at this resolution (reference: convs[1, 3, 4, 5] at 512 px)
        self.feature_blocks = tuple(b for b in cfg.disc_feature_blocks if 0 <= b < len(self.convs))
        if fast:
            to_fast(self)

    def features(self, x: Tensor) -> list[Tensor]:
        """Outputs of `convs[i]` for i in `feature_blocks`, stopping after the last one."""
        feats = []
        if not self.feature_blocks:
            return feats
        last = max(self.feature_blocks)
        for i, block in enumerate(self.convs):
            x = block(x)
            if i in self.feature_blocks:
                feats.append(x)
            if i == last:
                break
        return feats

    def forward(self, x: Tensor) -> Tensor:
        out = self.convs(x)
        b, c, h, w = out.shape
        # rosinality uses min(B, 4) and fails when it does not divide B; take the largest group that does
        group = min(b, self.stddev_group)
        while b % group:
            group -= 1
        stddev = out.float().reshape(group, -1, self.stddev_feat, c // self.stddev_feat, h, w)
        stddev = torch.sqrt(stddev.var(0, unbiased=False) + 1e-8)
        stddev = stddev.mean(dim=(2, 3, 4), keepdim=True).squeeze(2)
        stddev = stddev.repeat(group, 1, h, w).to(out.dtype)
        out = self.final_conv(torch.cat([out, stddev], 1))
        return self.final_linear(out.reshape(b, -1))

"""The Stylizer's content encoder: image [B, 3, R, R] -> feature map [B, C_F, F, F] (the official `Stylizer.encoder`)."""

from __future__ import annotations

from torch import nn

from mmfs.config import ModelConfig
from mmfs.nn.layers import ConvLayer, ResBlock


def encoder_channels(cfg: ModelConfig) -> list[int]:
    """Output channels of the stem and of each ResBlock: ngf, then max(ngf, C_F >> (n - i)) for i = 1..n."""
    n = cfg.num_upsamples
    c_f = cfg.channels(cfg.feature_resolution)
    return [cfg.encoder_channels] + [max(cfg.encoder_channels, c_f >> (n - i)) for i in range(1, n + 1)]


def build_encoder(cfg: ModelConfig) -> nn.Sequential:
    """ConvLayer(3, ngf, 3), one down-sampling ResBlock per decoder up-sampling, ConvLayer(C_F, C_F, 3).

    At 512 px this is ResBlock(64,64), (64,128), (128,256), (256,512): 4,935,360 parameters, no normalisation.
    """
    chans = encoder_channels(cfg)
    layers: list[nn.Module] = [ConvLayer(3, chans[0], 3)]
    for in_ch, out_ch in zip(chans[:-1], chans[1:], strict=True):
        layers.append(ResBlock(in_ch, out_ch))
    c_f = cfg.channels(cfg.feature_resolution)
    layers.append(ConvLayer(chans[-1], c_f, 3))
    return nn.Sequential(*layers)

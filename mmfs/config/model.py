"""Model configuration: one frozen dataclass and its named presets.

The paper's network is `ffhq512` (the official `style_based_pix2pixII`): a 512 px Stylizer whose encoder
hands a 512x32x32 feature map to the StyleGAN2-512 synthesis layers from 32 px up, with 10 w vectors.
Every other preset changes only sizes, never structure, so the same code path serves all of them.

The config travels inside every checkpoint (JSON in the safetensors metadata), so a file can always
rebuild its own network.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the Stylizer, the StyleGAN2 prior, the discriminator and the CLIP mapper."""

    resolution: int = 512  # output side in pixels (power of two)
    feature_resolution: int = 32  # side of the encoder's feature map, where the style decoder starts
    z_dim: int = 512  # random latent size
    w_dim: int = 512  # style vector size
    mapping_layers: int = 8  # depth of the z -> w MLP
    mapping_lr_mul: float = 0.01  # equalised-lr multiplier of the mapping MLP (StyleGAN2 lr_mlp)
    channel_base: int = 32768  # channels at resolution r are min(channel_max, channel_base // r):
    channel_max: int = 512  # ... this pair reproduces rosinality's channel_multiplier=2 table
    encoder_channels: int = 64  # stem width of the encoder (the reference's ngf)
    disc_feature_blocks: tuple[int, ...] = (1, 3, 4, 5)  # D blocks whose outputs feed the feature loss
    clip_dim: int = 512  # CLIP embedding size the mapper reads (must equal w_dim: it is added to tokens)
    mapper_layers: int = 4  # transformer layers of the CLIP -> w+ mapper
    mapper_heads: int = 8
    mapper_ffn_dim: int = 2048
    mapper_dropout: float = 0.1

    def __post_init__(self) -> None:
        for name in ("resolution", "feature_resolution"):
            value = getattr(self, name)
            if value < 4 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two >= 4, got {value}")
        if self.feature_resolution >= self.resolution:
            raise ValueError(
                f"feature_resolution ({self.feature_resolution}) must be below resolution ({self.resolution})"
            )
        if self.clip_dim != self.w_dim:
            raise ValueError(f"clip_dim ({self.clip_dim}) must equal w_dim ({self.w_dim})")
        if self.w_dim % self.mapper_heads:
            raise ValueError(f"w_dim ({self.w_dim}) must be divisible by mapper_heads ({self.mapper_heads})")
        # JSON gives lists back; keep the field hashable and comparable.
        object.__setattr__(self, "disc_feature_blocks", tuple(self.disc_feature_blocks))

    def channels(self, res: int) -> int:
        """Channel count of the decoder, prior and discriminator at a given resolution."""
        return min(self.channel_max, self.channel_base // res)

    @property
    def log2_resolution(self) -> int:
        return int(math.log2(self.resolution))

    @property
    def num_upsamples(self) -> int:
        """Number of 2x up-sampling blocks in the Stylizer's decoder (4 at 512 px)."""
        return int(math.log2(self.resolution // self.feature_resolution))

    @property
    def num_ws(self) -> int:
        """w vectors the Stylizer consumes: 10 at 512 px (StyleGAN2 slots 6..15)."""
        return 2 + 2 * self.num_upsamples

    @property
    def prior_num_ws(self) -> int:
        """w vectors of the full StyleGAN2 prior generator at this resolution (16 at 512 px)."""
        return 2 * self.log2_resolution - 2

    @property
    def prior_ws_offset(self) -> int:
        """Index of the prior's w slot that the Stylizer's first style corresponds to (6 at 512 px)."""
        return self.prior_num_ws - self.num_ws

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))


PRESETS: dict[str, ModelConfig] = {
    # The paper's configuration (the official code's): G 18,676,376 and D 28,982,849 parameters.
    "ffhq512": ModelConfig(),
    "ffhq1024": ModelConfig(resolution=1024),
    # At 256 px the encoder has one down-sampling block less; the decoder still starts at 32 px.
    "ffhq256": ModelConfig(resolution=256),
    # Tests and smoke runs: same structure, a few thousand parameters per layer.
    "tiny": ModelConfig(
        resolution=32,
        feature_resolution=8,
        z_dim=32,
        w_dim=32,
        mapping_layers=2,
        channel_base=256,
        channel_max=32,
        encoder_channels=8,
        clip_dim=32,
        mapper_layers=2,
        mapper_heads=2,
        mapper_ffn_dim=64,
    ),
    # The built-in demo: the tiny structure at 64 px so the pictures can be looked at.
    "tiny64": ModelConfig(
        resolution=64,
        feature_resolution=16,
        z_dim=64,
        w_dim=64,
        mapping_layers=4,
        channel_base=2048,
        channel_max=64,
        encoder_channels=16,
        clip_dim=64,
        mapper_layers=2,
        mapper_heads=4,
        mapper_ffn_dim=128,
    ),
}


# `train-prior --resolution` range: 16 px is the smallest a Stylizer can be built on (feature map 4 px).
MIN_RESOLUTION, MAX_RESOLUTION = 16, 4096


def at_resolution(preset: ModelConfig, resolution: int | None, *, name: str = "the preset") -> ModelConfig:
    """`preset` with another output resolution (`mmfs train-prior --resolution`); ValueError if it cannot be.

    Everything else that depends on the resolution follows from it: the number of w vectors
    (`prior_num_ws`, `num_ws`), the generator's and discriminator's blocks and the channel table
    `min(channel_max, channel_base // r)` (the preset's, so a block at r px has the same width as in
    the preset). The one stored field that depends on it is `feature_resolution`, the side where a
    Stylizer built on this prior hands over to the decoder: `min(preset's, resolution // 4)`, the rule
    `mmfs convert` applies to rosinality priors. The discriminator feature blocks that do not exist at
    a small resolution are skipped by `Discriminator` itself.
    """
    if resolution is None or resolution == preset.resolution:
        return preset
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION or resolution & (resolution - 1):
        raise ValueError(
            f"must be a power of two from {MIN_RESOLUTION} to {MAX_RESOLUTION} (16, 32, 64, ..., 1024, ...), got {resolution}"
        )
    if preset.channels(resolution) < 1:
        largest = 1 << (preset.channel_base.bit_length() - 1)
        raise ValueError(
            f"{name} has no channels left at {resolution} px (channel_base {preset.channel_base} // {resolution} = 0);"
            f" use at most {largest} px with it, or a larger preset (ffhq256, ffhq512, ffhq1024)"
        )
    return dataclasses.replace(
        preset, resolution=resolution, feature_resolution=min(preset.feature_resolution, resolution // 4)
    )


def get_preset(name: str) -> ModelConfig:
    """Look up a preset by name, with an error that lists the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None

"""The official MMFS ffhq512 state-dict layout, written out from the reference's description.

Written by hand from the reference's network description (encoder, z-mapping, style decoder, CLIP
mapper, discriminator), not from our modules' state dicts, so that tests comparing the two catch a
drift, and the stand-in release files carry the upstream keys independently of our code.
Shapes include the blur-kernel buffers rosinality's modules persist.
"""

from __future__ import annotations

import torch

Shapes = dict[str, tuple[int, ...]]


def _conv_layer(prefix: str, cin: int, cout: int, k: int, *, down: bool = False, activate: bool = True) -> Shapes:
    """rosinality ConvLayer, an nn.Sequential: [Blur (kernel buffer)], EqualConv2d (no bias), [FusedLeakyReLU]."""
    keys, i = {}, 0
    if down:
        keys[f"{prefix}.{i}.kernel"] = (4, 4)
        i += 1
    keys[f"{prefix}.{i}.weight"] = (cout, cin, k, k)
    if activate:
        keys[f"{prefix}.{i + 1}.bias"] = (cout,)
    return keys


def _res_block(prefix: str, cin: int, cout: int) -> Shapes:
    return {
        **_conv_layer(f"{prefix}.conv1", cin, cin, 3),
        **_conv_layer(f"{prefix}.conv2", cin, cout, 3, down=True),
        **_conv_layer(f"{prefix}.skip", cin, cout, 1, down=True, activate=False),  # bias=False, no activation
    }


def _modulated(prefix: str, cin: int, cout: int, k: int) -> Shapes:
    return {
        f"{prefix}.weight": (1, cout, cin, k, k),
        f"{prefix}.modulation.weight": (cin, 512),
        f"{prefix}.modulation.bias": (cin,),
    }


def _styled_conv(prefix: str, cin: int, cout: int, *, up: bool) -> Shapes:
    keys = _modulated(f"{prefix}.conv", cin, cout, 3)
    if up:
        keys[f"{prefix}.conv.blur.kernel"] = (4, 4)
    return {**keys, f"{prefix}.noise.weight": (1,), f"{prefix}.activate.bias": (cout,)}


def _to_rgb(prefix: str, cin: int, *, up: bool) -> Shapes:
    keys = {**_modulated(f"{prefix}.conv", cin, 3, 1), f"{prefix}.bias": (1, 3, 1, 1)}
    if up:
        keys[f"{prefix}.upsample.kernel"] = (4, 4)
    return keys


def official_stylizer_shapes(with_mapper: bool) -> Shapes:
    """Every key of the official 512 px Stylizer's state dict and its shape (encoder, mapping, decoder, mapper)."""
    keys = _conv_layer("encoder.0", 3, 64, 3)
    for i, (cin, cout) in enumerate([(64, 64), (64, 128), (128, 256), (256, 512)], start=1):
        keys.update(_res_block(f"encoder.{i}", cin, cout))
    keys.update(_conv_layer("encoder.5", 512, 512, 3))
    for i in range(1, 9):  # mapping_z.0 is the PixelNorm
        keys.update({f"mapping_z.{i}.weight": (512, 512), f"mapping_z.{i}.bias": (512,)})
    keys.update(_styled_conv("decoder0", 512, 512, up=False))
    keys.update(_to_rgb("to_rgb0", 512, up=False))
    channels = {32: 512, 64: 512, 128: 256, 256: 128, 512: 64}
    for k in range(1, 5):
        cin, cout = channels[16 * 2**k], channels[32 * 2**k]
        keys.update(_styled_conv(f"decoder{k}a", cin, cout, up=True))
        keys.update(_styled_conv(f"decoder{k}b", cout, cout, up=False))
        keys.update(_to_rgb(f"to_rgb{k}", cout, up=True))
    if with_mapper:
        keys["clip_mapper.position_embedding"] = (10, 512)
        for n in range(4):
            layer = f"clip_mapper.transformer.layers.{n}"
            keys.update(
                {
                    f"{layer}.self_attn.in_proj_weight": (1536, 512),
                    f"{layer}.self_attn.in_proj_bias": (1536,),
                    f"{layer}.self_attn.out_proj.weight": (512, 512),
                    f"{layer}.self_attn.out_proj.bias": (512,),
                    f"{layer}.linear1.weight": (2048, 512),
                    f"{layer}.linear1.bias": (2048,),
                    f"{layer}.linear2.weight": (512, 2048),
                    f"{layer}.linear2.bias": (512,),
                    **{f"{layer}.norm{j}.{p}": (512,) for j in (1, 2) for p in ("weight", "bias")},
                }
            )
    return keys


def official_discriminator_shapes() -> Shapes:
    """Every key of the official 512 px discriminator: rosinality's at 512 px, min_feats_size 4."""
    keys = _conv_layer("convs.0", 3, 64, 1)
    pairs = [(64, 128), (128, 256), (256, 512)] + [(512, 512)] * 4
    for i, (cin, cout) in enumerate(pairs, start=1):
        keys.update(_res_block(f"convs.{i}", cin, cout))
    keys.update(_conv_layer("final_conv", 513, 512, 3))
    keys.update({"final_linear.0.weight": (512, 512 * 16), "final_linear.0.bias": (512,)})
    keys.update({"final_linear.1.weight": (1, 512), "final_linear.1.bias": (1,)})
    return keys


def official_tensors(shapes: Shapes, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random weights with the statistics of rosinality's init, and the blur kernels' true values."""
    k1 = torch.tensor([1.0, 3.0, 3.0, 1.0])
    blur = torch.outer(k1, k1) / 64  # a down-sampling Blur; the up-sampling ones carry the factor**2 = 4
    out = {}
    for key, shape in shapes.items():
        if key.endswith("kernel"):
            up = key.endswith(("blur.kernel", "upsample.kernel"))
            out[key] = blur * (4 if up else 1)
        elif key.startswith("mapping_z.") and key.endswith("weight"):
            out[key] = torch.randn(shape, generator=gen) * 100  # EqualLinear stores randn / lr_mul (0.01)
        elif key.endswith("modulation.bias") or key.endswith(("norm1.weight", "norm2.weight")):
            out[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
        elif key.startswith("clip_mapper."):
            out[key] = 0.05 * torch.randn(shape, generator=gen)
        elif key.endswith("bias"):
            out[key] = 0.1 * torch.randn(shape, generator=gen)
        elif key.startswith("to_rgb") and key.endswith("conv.weight"):
            out[key] = 0.1 * torch.randn(shape, generator=gen)  # no demodulation: keep the image inside [-1, 1]
        else:
            out[key] = torch.randn(shape, generator=gen)
    return out

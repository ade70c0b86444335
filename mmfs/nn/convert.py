"""Import foreign checkpoints: rosinality StyleGAN2 priors and the official MMFS releases.

Our state-dict keys are the upstream ones (docs/architecture.md), so conversion is mostly reading the
pickle safely, choosing the right sub-dictionary, inferring the model config from tensor shapes, and
dropping the blur-kernel buffers (constants we rebuild). The only real key mapping is
`stylizer_init_from_prior`: the StyleGAN2 layers from 2F px up become the Stylizer's decoder
(the official key map: `decoder1a` = `convs.6`, `to_rgb4` = `to_rgbs.6`, `mapping_z` = `style`).
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from mmfs.config import ModelConfig
from mmfs.config.convert import ConvertOptions
from mmfs.errors import CheckpointError

Tensors = dict[str, torch.Tensor]

# Constants rebuilt by our modules; upstream saved them as buffers.
_DERIVED_BUFFER = re.compile(r"(^|\.)kernel$")


def read_foreign_pickle(path: str | os.PathLike[str], *, trust_pickle: bool = False) -> dict:
    """Load a `torch.save` file without executing code, unless the user explicitly trusts it.

    Before anything is unpickled, the file's container and the Python classes its pickle would import
    are read from its bytes (`mmfs.foreign`): a file holding more than tensors is refused with their
    names unless `trust_pickle`; a TorchScript archive is refused always.
    """
    from mmfs.foreign import container, python_objects

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    kind = container(path)
    if kind == "torchscript":
        raise CheckpointError(
            f"{path}: is a TorchScript archive (a compiled model), not a torch.save checkpoint; "
            "mmfs convert reads rosinality StyleGAN2 and official MMFS files"
        )
    if kind is None:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt or not a torch.save file)")
    objects = python_objects(path)
    if objects and not trust_pickle:
        shown = ", ".join(objects[:3]) + (f" and {len(objects) - 3} more" if len(objects) > 3 else "")
        raise CheckpointError(
            f"{path}: the file holds Python objects besides tensors ({shown}); loading it runs their code: "
            "re-run with --trust-pickle only if you trust where it came from"
        )
    try:
        if objects and kind == "pickle":  # an upstream file written by pickle.dump, which torch.load cannot read
            with open(path, "rb") as fh:
                obj = pickle.load(fh)  # noqa: S301 - the user passed --trust-pickle
        else:  # from an open file: torch.load would read a path named .safetensors as safetensors
            with open(path, "rb") as fh:
                obj = torch.load(fh, map_location="cpu", weights_only=not objects)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError, ImportError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({str(exc).splitlines()[0]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of state dicts, found {type(obj).__name__}")
    return obj


def detect_format(obj: dict) -> str:
    """'rosinality' (keys g / g_ema / d) or 'mmfs' (keys G_ema_model / D_model)."""
    if "G_ema_model" in obj or "G_model" in obj:
        return "mmfs"
    if "g_ema" in obj or "g" in obj:
        return "rosinality"
    raise CheckpointError(
        "unrecognised checkpoint layout (top-level keys: "
        + ", ".join(sorted(map(str, obj))[:6])
        + "); expected rosinality StyleGAN2 (g_ema, d) or official MMFS (G_ema_model, D_model)"
    )


def strip_derived(tensors: Tensors) -> Tensors:
    """Drop upstream blur-kernel buffers and make every tensor a contiguous float32/CPU copy.

    Always a real copy: a pickle may hold the same storage under two keys (say `G_model` and
    `G_ema_model` after a deepcopy-free save), which safetensors refuses to write.
    """
    return {
        k: v.detach().to("cpu", torch.float32, copy=True).contiguous()
        for k, v in tensors.items()
        if not _DERIVED_BUFFER.search(k)
    }


def prior_config(g: Tensors, *, feature_resolution: int = 32) -> ModelConfig:
    """Infer the ModelConfig of a rosinality StyleGAN2 generator from its tensor shapes."""
    try:
        n_rgbs = sum(1 for k in g if re.fullmatch(r"to_rgbs\.\d+\.bias", k))
        resolution = 2 ** (n_rgbs + 2)
        mapping = sorted(int(m.group(1)) for k in g if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
        w_dim, z_dim = g["style.1.weight"].shape
        channel_max = g["conv1.conv.weight"].shape[1]
        top = g[f"to_rgbs.{n_rgbs - 1}.conv.weight"].shape[2]  # channels at full resolution
    except (KeyError, IndexError) as exc:
        raise CheckpointError(f"not a rosinality StyleGAN2 generator state dict (missing {exc})") from None
    feature_resolution = min(feature_resolution, resolution // 4)
    return ModelConfig(
        resolution=resolution,
        feature_resolution=feature_resolution,
        z_dim=int(z_dim),
        w_dim=int(w_dim),
        mapping_layers=len(mapping),
        channel_base=int(top) * resolution,
        channel_max=int(channel_max),
        # The reference's ngf (64) for real priors; small test priors get a proportionally small encoder.
        encoder_channels=64 if channel_max >= 512 else max(1, min(64, int(top))),
        clip_dim=int(w_dim),
        mapper_heads=8 if w_dim % 8 == 0 else 1,
    )


def stylizer_config(g: Tensors) -> ModelConfig:
    """Infer the ModelConfig of an official MMFS Stylizer state dict from its tensor shapes."""
    try:
        num_up = sum(1 for k in g if re.fullmatch(r"decoder\d+a\.conv\.weight", k))
        feat_channels = g["decoder0.conv.weight"].shape[2]
        top = g[f"to_rgb{num_up}.conv.weight"].shape[2]
        w_dim, z_dim = g["mapping_z.1.weight"].shape
        mapping = [k for k in g if re.fullmatch(r"mapping_z\.\d+\.weight", k)]
        ngf = g["encoder.0.0.weight"].shape[0]
        n_down = sum(1 for k in g if re.fullmatch(r"encoder\.\d+\.conv1\.0\.weight", k))
    except KeyError as exc:
        raise CheckpointError(f"not an MMFS Stylizer state dict (missing {exc})") from None
    feature_resolution = 32  # the reference always hands over at 32 px ...
    resolution = feature_resolution * 2**num_up
    if n_down != num_up:  # ... but trust the tensors over that assumption
        raise CheckpointError(f"encoder has {n_down} down-sampling blocks but decoder {num_up} up-sampling blocks")
    kwargs = {}
    if "clip_mapper.position_embedding" in g:
        layers = {int(m.group(1)) for k in g if (m := re.match(r"clip_mapper\.transformer\.layers\.(\d+)\.", k))}
        kwargs.update(
            mapper_layers=len(layers),
            mapper_ffn_dim=int(g["clip_mapper.transformer.layers.0.linear1.weight"].shape[0]),
        )
    return ModelConfig(
        resolution=resolution,
        feature_resolution=feature_resolution,
        z_dim=int(z_dim),
        w_dim=int(w_dim),
        mapping_layers=len(mapping),
        channel_base=int(top) * resolution,
        channel_max=int(feat_channels),
        encoder_channels=int(ngf),
        clip_dim=int(w_dim),
        **kwargs,
    )


def stylizer_init_from_prior(prior_g: Tensors, cfg: ModelConfig) -> Tensors:
    """Stylizer weights taken from a StyleGAN2 prior: the z-mapping and every layer from 2F px up.

    The encoder, `decoder0` and `to_rgb0` have no counterpart in the prior (they are new layers that
    Stage I trains) and are not in the result.
    """
    out: Tensors = {}
    for key, value in prior_g.items():
        if key.startswith("style."):
            out["mapping_z." + key[len("style.") :]] = value
    # The prior's block j (convs[2j], convs[2j+1], to_rgbs[j]) works at 2**(j + 3) px; decoder block k at F * 2**k px.
    feature_log2 = cfg.log2_resolution - cfg.num_upsamples
    for k in range(1, cfg.num_upsamples + 1):
        j = feature_log2 + k - 3
        pairs = (
            (f"convs.{2 * j}.", f"decoder{k}a."),
            (f"convs.{2 * j + 1}.", f"decoder{k}b."),
            (f"to_rgbs.{j}.", f"to_rgb{k}."),
        )
        for src, dst in pairs:
            found = {dst + key[len(src) :]: v for key, v in prior_g.items() if key.startswith(src)}
            if not found:
                raise CheckpointError(f"prior generator has no {src.rstrip('.')} (needed for {dst.rstrip('.')})")
            out.update(found)
    return strip_derived(out)


def first_layers_from_prior(prior_g: Tensors, cfg: ModelConfig) -> Tensors:
    """`decoder0` and `to_rgb0` taken from the prior's layers at F px: its second conv there and its ToRGB.

    Not the reference (there both are new, random layers): a start that already speaks the frozen decoder's
    language, for short Stage I runs. The prior's ToRGB also adds the up-sampled coarser image; `to_rgb0`
    has no such input, so the encoder's features must carry that colour themselves.
    """
    j = cfg.log2_resolution - cfg.num_upsamples - 3  # the prior's block at F px
    out: Tensors = {}
    for src, dst in ((f"convs.{2 * j + 1}.", "decoder0."), (f"to_rgbs.{j}.", "to_rgb0.")):
        found = {dst + key[len(src) :]: v for key, v in prior_g.items() if key.startswith(src)}
        if not found:
            raise CheckpointError(f"prior generator has no {src.rstrip('.')} (needed for {dst.rstrip('.')})")
        out.update(found)
    return strip_derived(out)


def convert_rosinality(
    obj: dict, *, generator_key: str = "g_ema", feature_resolution: int = 32
) -> tuple[Tensors, ModelConfig]:
    """A rosinality checkpoint -> prior tensors (`g.*`, `d.*`) and their config, checked against our networks."""
    from mmfs.checkpoint import load_state_strict
    from mmfs.nn import Discriminator, Generator

    if generator_key not in obj:
        raise CheckpointError(f"checkpoint has no {generator_key!r} generator (keys: {', '.join(sorted(obj))})")
    g = strip_derived(obj[generator_key])
    cfg = prior_config(g, feature_resolution=feature_resolution)
    load_state_strict(Generator(cfg), g, source=f"generator {generator_key!r}")
    tensors = {"g." + k: v for k, v in g.items()}
    if "d" in obj:
        d = strip_derived(obj["d"])
        load_state_strict(Discriminator(cfg), d, source="discriminator 'd'")
        tensors.update({"d." + k: v for k, v in d.items()})
    return tensors, cfg


def convert_mmfs(obj: dict) -> tuple[Tensors, ModelConfig]:
    """An official MMFS checkpoint -> training tensors (`stylizer_ema.*`, `stylizer.*`, `disc.*`) and config."""
    from mmfs.checkpoint import load_state_strict
    from mmfs.nn import Discriminator, Stylizer

    if "G_ema_model" not in obj:
        raise CheckpointError("MMFS checkpoint has no 'G_ema_model'")
    g_ema = strip_derived(obj["G_ema_model"])
    cfg = stylizer_config(g_ema)
    with_mapper = any(k.startswith("clip_mapper.") for k in g_ema)
    load_state_strict(Stylizer(cfg, with_mapper=with_mapper), g_ema, source="'G_ema_model'")
    tensors = {"stylizer_ema." + k: v for k, v in g_ema.items()}
    if "G_model" in obj:
        g = strip_derived(obj["G_model"])
        load_state_strict(Stylizer(cfg, with_mapper=with_mapper), g, source="'G_model'")
        tensors.update({"stylizer." + k: v for k, v in g.items()})
    if "D_model" in obj:
        d = strip_derived(obj["D_model"])
        load_state_strict(Discriminator(cfg), d, source="'D_model'")
        tensors.update({"disc." + k: v for k, v in d.items()})
    return tensors, cfg


def check_prior_covers(prior: ModelConfig, cfg: ModelConfig, *, source: str = "prior") -> None:
    """Raise unless a Stylizer of `cfg` can be built from the layers of a StyleGAN2 prior of `prior`.

    A larger prior (the public FFHQ 1024 for the paper's 512 model) is fine: the Stylizer takes its
    layers up to `cfg.resolution`. The mapping network and every channel count up to there must match.
    """
    if prior.resolution < cfg.resolution:
        raise CheckpointError(
            f"{source}: a {prior.resolution} px prior cannot make a {cfg.resolution} px Stylizer: "
            f"drop --preset (the prior's own {prior.resolution} px) or pass a preset of at most {prior.resolution} px"
        )
    mapping = (prior.z_dim, prior.w_dim, prior.mapping_layers), (cfg.z_dim, cfg.w_dim, cfg.mapping_layers)
    differences = [] if mapping[0] == mapping[1] else [f"z, w, mapping layers {mapping[0]} vs {mapping[1]}"]
    differences += [
        f"channels at {r} px {prior.channels(r)} vs {cfg.channels(r)}"
        for r in (2**i for i in range(2, cfg.log2_resolution + 1))
        if prior.channels(r) != cfg.channels(r)
    ]
    if differences:
        raise CheckpointError(
            f"{source}: the prior does not fit the {cfg.resolution} px preset ({differences[0]}, prior vs preset): "
            "drop --preset to use the prior's own configuration"
        )


def discriminator_down_to(d_tensors: Tensors, disc: torch.nn.Module) -> Tensors:
    """Fit a larger-resolution discriminator's weights to `disc`: its residual blocks from `disc`'s size down.

    A rosinality D at 2**n px is `convs.0` (from-RGB at full size), `convs.1..` (one residual block per
    halving), `final_*`. A D at half that size is the same from `convs.2` on, renumbered. Its from-RGB
    layer has no counterpart (the larger D's takes RGB at twice the size), so `disc`'s own freshly
    initialised one is kept. Tensors that already fit `disc` are returned unchanged.
    """
    n_dst = len(disc.convs)
    n_src = 1 + sum(1 for k in d_tensors if re.fullmatch(r"convs\.\d+\.conv1\.0\.weight", k))
    if n_src <= n_dst:
        return d_tensors
    shift = n_src - n_dst
    out = {k: v for k, v in disc.state_dict().items() if k.startswith("convs.0.")}
    for key, value in d_tensors.items():
        m = re.match(r"convs\.(\d+)\.(.*)", key)
        if m is None:
            out[key] = value  # final_conv, final_linear: sizes independent of the input resolution
        elif int(m.group(1)) > shift:
            out[f"convs.{int(m.group(1)) - shift}.{m.group(2)}"] = value
    return out


@dataclass(frozen=True)
class Converted:
    """What `convert_file` wrote: the checkpoint's kind, its network config and how many tensors it holds."""

    kind: str  # "prior" (rosinality) or "training" (official MMFS)
    config: ModelConfig
    n_tensors: int


def convert_file(source: str | os.PathLike[str], target: str | os.PathLike[str], options: ConvertOptions) -> Converted:
    """`mmfs convert`: an upstream checkpoint at `source` -> an mmfs safetensors file at `target` (written atomically)."""
    from mmfs.checkpoint import save_checkpoint

    source, target = Path(source), Path(target)
    if target.suffix != ".safetensors":
        raise CheckpointError(f"{target}: the output must be a .safetensors file")
    if target.exists() and not options.overwrite:
        raise CheckpointError(f"{target}: already exists; pass --overwrite to replace it")
    obj = read_foreign_pickle(source, trust_pickle=options.trust_pickle)
    fmt = detect_format(obj) if options.source_format == "auto" else options.source_format
    if fmt == "rosinality":
        tensors, cfg = convert_rosinality(
            obj, generator_key=options.generator_key, feature_resolution=options.feature_resolution
        )
        kind = "prior"
    else:
        tensors, cfg = convert_mmfs(obj)
        kind = "training"
    save_checkpoint(target, tensors, kind=kind, config=cfg, meta={"converted_from": source.name, "source_format": fmt})
    return Converted(kind, cfg, len(tensors))

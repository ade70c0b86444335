"""`mmfs convert`: import upstream weights into our safetensors format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmfs_cli.common import echo_err, guarded


def convert(
    source: Annotated[
        Path, typer.Argument(help="Upstream checkpoint (.pt/.pth): rosinality StyleGAN2 or official MMFS.")
    ],
    target: Annotated[Path, typer.Argument(help="Output .safetensors file.")],
    source_format: Annotated[
        str, typer.Option("--format", help="auto, rosinality (keys g_ema/g, d) or mmfs (keys G_ema_model, D_model).")
    ] = "auto",
    generator_key: Annotated[
        str,
        typer.Option(
            help="Rosinality generator to import: g_ema (EMA weights) or g (the reference's Stage-I teacher)."
        ),
    ] = "g_ema",
    feature_resolution: Annotated[
        int, typer.Option(help="Rosinality only: where the Stylizer built on this prior hands over to the decoder.")
    ] = 32,
    trust_pickle: Annotated[
        bool, typer.Option("--trust-pickle", help="Allow files that hold arbitrary Python objects (runs their code!).")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace TARGET if it exists.")] = False,
) -> None:
    """Convert an upstream checkpoint into an mmfs safetensors file (config in its metadata).

    A rosinality StyleGAN2 file (e.g. the public stylegan2-ffhq-config-f.pt) becomes a `prior` file for
    `mmfs pretrain-encoder --prior`. An official MMFS release (phase2_pretrain_90000.pth,
    phase3_pretrain_10000.pth, pop_art.pth, ...) becomes a `training` file usable by `mmfs stylize`,
    `mmfs train-mapper --init` and `mmfs adapt`.

    Example: mmfs convert stylegan2-ffhq-config-f.pt ffhq-prior.safetensors
    """
    with guarded():
        from mmfs.checkpoint import save_checkpoint
        from mmfs.errors import MMFSError
        from mmfs.nn.convert import convert_mmfs, convert_rosinality, detect_format, read_foreign_pickle

        if target.suffix != ".safetensors":
            raise MMFSError(f"{target}: the output must be a .safetensors file")
        if target.exists() and not overwrite:
            raise MMFSError(f"{target}: already exists; pass --overwrite to replace it")
        obj = read_foreign_pickle(source, trust_pickle=trust_pickle)
        fmt = detect_format(obj) if source_format == "auto" else source_format
        if fmt == "rosinality":
            tensors, cfg = convert_rosinality(obj, generator_key=generator_key, feature_resolution=feature_resolution)
            kind = "prior"
        elif fmt == "mmfs":
            tensors, cfg = convert_mmfs(obj)
            kind = "training"
        else:
            raise MMFSError(f"unknown --format {source_format!r}; use auto, rosinality or mmfs")
        save_checkpoint(
            target, tensors, kind=kind, config=cfg, meta={"converted_from": source.name, "source_format": fmt}
        )
        echo_err(f"wrote {target} ({kind}, {cfg.resolution} px, {len(tensors)} tensors)")


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)

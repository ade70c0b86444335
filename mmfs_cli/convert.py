"""`mmfs convert`: import upstream weights into our safetensors format.

The options are fields of `mmfs.config.convert.ConvertOptions`; `mmfs.nn.convert.convert_file` does the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmfs.config.convert import ConvertOptions
from mmfs_cli.common import echo_err, guarded
from mmfs_cli.options import Group, command

Source = Annotated[Path, typer.Argument(help="Upstream checkpoint (.pt/.pth): rosinality StyleGAN2 or official MMFS.")]
Target = Annotated[Path, typer.Argument(help="Output .safetensors file.")]


@command(options=Group(ConvertOptions))
def convert(source: Source, target: Target, options: ConvertOptions) -> None:
    """Convert an upstream checkpoint into an mmfs safetensors file (config in its metadata).

    A rosinality StyleGAN2 file (e.g. the public stylegan2-ffhq-config-f.pt) becomes a `prior` file for
    `mmfs pretrain-encoder --prior`. An official MMFS release (phase2_pretrain_90000.pth,
    phase3_pretrain_10000.pth, pop_art.pth, ...) becomes a `training` file usable by `mmfs stylize`,
    `mmfs train-mapper --init` and `mmfs adapt`.

    Example: mmfs convert stylegan2-ffhq-config-f.pt ffhq-prior.safetensors
    """
    with guarded():
        from mmfs.nn.convert import convert_file

        done = convert_file(source, target, options)
        echo_err(f"wrote {target} ({done.kind}, {done.config.resolution} px, {done.n_tensors} tensors)")


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)

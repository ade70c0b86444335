"""`mmfs evaluate`: FID, identity distance and LPIPS diversity (paper §4.1-4.2)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmfs_cli.common import DeviceOpt, not_implemented


def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="Stylizer checkpoint to evaluate.")] = ...,
    photos: Annotated[Path, typer.Option(help="Folder of FFHQ-aligned test photos.")] = ...,
    art: Annotated[Path, typer.Option(help="Folder of artworks (the FID reference set).")] = ...,
    n: Annotated[int, typer.Option("--n", help="Number of stylized images.")] = 10000,
    metrics: Annotated[str, typer.Option(help="Comma-separated subset of: fid, arcface, lpips.")] = "fid,arcface,lpips",
    seed: Annotated[int, typer.Option(help="Seed for the random styles.")] = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Compute FID against the art set, identity distance to the input, and LPIPS diversity.

    Example: mmfs evaluate --checkpoint final.safetensors --photos ffhq-test/ --art aahq/ --n 10000
    """
    not_implemented("evaluate", "evaluate")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)

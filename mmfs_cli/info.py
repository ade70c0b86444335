"""`mmfs info`: what a checkpoint is, without loading its tensors (`mmfs.checkpoint.describe_checkpoint`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mmfs_cli.common import guarded


def info(checkpoint: Annotated[Path, typer.Argument(help="An mmfs .safetensors file.")]) -> None:
    """Print a checkpoint's kind, format version, model config and other metadata as JSON.

    Example: mmfs info runs/00001-finetune/final.safetensors
    """
    with guarded():
        from mmfs.checkpoint import describe_checkpoint

        typer.echo(json.dumps(describe_checkpoint(checkpoint), indent=2, sort_keys=True))


def register(app: typer.Typer) -> None:
    app.command("info")(info)

"""`mmfs info`: what a checkpoint is, without loading its tensors."""

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
        from mmfs.checkpoint import read_metadata
        from mmfs.errors import CheckpointError

        meta = read_metadata(checkpoint)
        if "mmfs.format_version" not in meta:
            raise CheckpointError(f"{checkpoint}: not an mmfs checkpoint (no mmfs metadata)")
        decoded = {}
        for key, value in sorted(meta.items()):
            try:
                decoded[key.removeprefix("mmfs.")] = json.loads(value)
            except json.JSONDecodeError:
                decoded[key.removeprefix("mmfs.")] = value
        typer.echo(json.dumps(decoded, indent=2, sort_keys=True))


def register(app: typer.Typer) -> None:
    app.command("info")(info)

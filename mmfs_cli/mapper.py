"""`mmfs train-mapper`: the CLIP -> w+ mapping network (paper §3.3, reference phase 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmfs_cli.common import DeviceOpt, not_implemented


def train_mapper(
    photos: Annotated[Path, typer.Option(help="Folder of face photos.")] = ...,
    init: Annotated[Path, typer.Option(help="Stage-II checkpoint (from `mmfs finetune`).")] = ...,
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 10000,
    device: DeviceOpt = "auto",
) -> None:
    """Train the CLIP-to-w+ mapper by reconstructing random styles from their CLIP image embeddings.

    Example: mmfs train-mapper --photos ffhq/ --init runs/00002-finetune/final.safetensors
    """
    not_implemented("train-mapper", "CLIP guidance")


def register(app: typer.Typer) -> None:
    app.command("train-mapper")(train_mapper)

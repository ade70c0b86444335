"""`mmfs adapt`: zero-shot (--text) or one-shot (--ref) fine-tuning of the decoder (paper §3.3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mmfs_cli.common import DeviceOpt, DtypeOpt, OutdirOpt, not_implemented


def adapt(
    inputs: Annotated[Optional[list[str]], typer.Argument(help="Photos to stylize right after adapting (optional).")] = None,
    checkpoint: Annotated[Path, typer.Option(help="Stylizer with a CLIP mapper (from `mmfs train-mapper`).")] = ...,
    text: Annotated[Optional[str], typer.Option(help="Zero-shot: the target style as text, e.g. 'pop art'.")] = None,
    ref: Annotated[Optional[Path], typer.Option(help="One-shot: a style reference image.")] = None,
    photos: Annotated[Optional[Path], typer.Option(help="Folder of face photos to adapt on.")] = None,
    steps: Annotated[int, typer.Option(help="Optimizer steps (the reference saves after 200).")] = 200,
    out: Annotated[Optional[Path], typer.Option(help="Output adapted checkpoint (.safetensors).")] = None,
    outdir: OutdirOpt = Path("stylized"),
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "fp32",
) -> None:
    """Fine-tune the decoder towards a text prompt or a reference image; writes a small adapted checkpoint.

    Example: mmfs adapt --checkpoint mapper.safetensors --ref style.png --photos faces/ --out style.safetensors
    """
    not_implemented("adapt", "CLIP guidance")


def register(app: typer.Typer) -> None:
    app.command("adapt")(adapt)

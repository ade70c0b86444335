"""`mmfs align`'s own options, declared once (the detector's are `mmfs.config.faces.FaceDetection`).

Torch-free: the CLI reads these declarations for --help; `mmfs.faces.files.PhotoAligner` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmfs.config.options import Options, option


@dataclass(frozen=True)
class AlignRequest(Options):
    """Where the aligned crops and their JSON records go, and at what size."""

    outdir: Path = option(Path("aligned"), "Folder for the outputs (created if missing).", flags=("--outdir", "-o"))
    size: int = option(512, "Side of the square aligned crops, in pixels.", min=16, max=4096)
    overwrite: bool = option(False, "Replace crops and JSON files that already exist.")

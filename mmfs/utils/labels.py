"""Style labels: how a style is named in output file names (`photo_face0_<label>.png`) and adapted files."""

from __future__ import annotations

import os
from pathlib import Path


def safe_label(label: str) -> str:
    """A style label as it appears in file names: letters, digits, '.', '-' and '_' only."""
    cleaned = "".join(c if c.isalnum() or c in ".-_" else "-" for c in label).strip(".-")
    return cleaned or "style"


def text_label(prompt: str) -> str:
    """The style label (and output-file suffix) of a prompt: "Pop Art" -> "pop-art"."""
    return safe_label(prompt.lower().replace(" ", "-"))[:60]


def reference_label(path: str | os.PathLike[str]) -> str:
    """The style label of a reference image: "style.png" -> "ref-style"."""
    return safe_label(f"ref-{Path(path).stem}")[:60]

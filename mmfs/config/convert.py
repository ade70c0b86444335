"""`mmfs convert`'s options, declared once (SOURCE and TARGET are the command's arguments).

Torch-free: the CLI reads these declarations for --help; `mmfs.nn.convert.convert_file` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmfs.config.options import Options, option

SOURCE_FORMATS = ("auto", "rosinality", "mmfs")  # auto: told apart by the checkpoint's top-level keys


@dataclass(frozen=True)
class ConvertOptions(Options):
    """How an upstream checkpoint is read and what is taken from it."""

    source_format: str = option(
        "auto",
        "auto, rosinality (keys g_ema/g, d) or mmfs (keys G_ema_model, D_model).",
        flags="--format",
        choices=SOURCE_FORMATS,
    )
    generator_key: str = option(
        "g_ema", "Rosinality generator to import: g_ema (EMA weights) or g (the reference's Stage-I teacher)."
    )
    feature_resolution: int = option(
        32, "Rosinality only: where the Stylizer built on this prior hands over to the decoder."
    )
    trust_pickle: bool = option(
        False, "Allow files that hold arbitrary Python objects (runs their code!).", flags="--trust-pickle"
    )
    overwrite: bool = option(False, "Replace TARGET if it exists.")

"""`mmfs demo`'s options, declared once (the run's sizes and steps are `mmfs.demo.run.DemoBudget`).

Torch-free: the CLI reads these declarations for --help; `mmfs.demo.run.run_demo` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmfs.config.options import Options, option


@dataclass(frozen=True)
class DemoRequest(Options):
    """Where the demo writes, which budget it runs, and whether it trains its own prior and tiny CLIP."""

    outdir: Path = option(Path("demo_out"), "Folder for everything the demo writes.", flags=("--outdir", "-o"))
    quick: bool = option(False, "A much shorter run (about 15 s) that checks the pipeline.", flags="--quick")
    overwrite: bool = option(False, "Replace the outputs of an earlier demo in --outdir (other files are kept).")
    train_prior: bool = option(
        False,
        "Train the StyleGAN2 prior from scratch with the shipped prior's recipe (about an hour on two"
        " cores) instead of loading the prior shipped with mmfs.",
        flags="--train-prior",
    )
    train_clip: bool = option(
        False,
        "Train the tiny CLIP (the mapper's and adapt's) from scratch with the shipped one's recipe (about three"
        " minutes on two cores) instead of loading the one shipped with mmfs.",
        flags="--train-clip",
    )
    seed: int = option(0, "Seed of the data, the trainings and the styles.", min=0)
    threads: int | None = option(None, "CPU threads for torch (default: torch's own choice).", min=1)

"""`mmfs demo`: the whole method offline on synthetic faces, a CPU and a few minutes (mmfs.demo.run)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from mmfs_cli.common import DeviceOpt, QuietOpt, echo_err, guarded


def demo(
    outdir: Annotated[Path, typer.Option("--outdir", "-o", help="Folder for everything the demo writes.")] = Path(
        "demo_out"
    ),
    quick: Annotated[
        bool, typer.Option("--quick", help="A much shorter run (about 15 s) that checks the pipeline.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the outputs of an earlier demo in --outdir (other files are kept).")
    ] = False,
    train_prior: Annotated[
        bool,
        typer.Option(
            "--train-prior",
            help="Train the StyleGAN2 prior from scratch with the shipped prior's recipe (about an hour on two"
            " cores) instead of loading the prior shipped with mmfs.",
        ),
    ] = False,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the data, the trainings and the styles.")] = 0,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads for torch (default: torch's own choice).")
    ] = None,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Run the whole method offline: synthetic data, Stage I, Stage II, train-mapper, adapt, stylize, measure.

    Starts from the StyleGAN2 prior shipped with mmfs (trained on the same synthetic photos), or trains
    one from scratch with --train-prior. Uses tiny random stand-ins for CLIP, DINO and the metric networks (no downloads); the numbers are not
    comparable with anything. Writes contact_sheet.png, evaluation.json and summary.json under --outdir.

    Example: mmfs demo --outdir demo_out
    """
    # Passive OpenMP waiting: spinning threads make small CPU convolutions many times slower when
    # other processes compete for the cores. Only effective before torch is first imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with guarded():
        from mmfs.demo.run import run_demo

        summary = run_demo(outdir, quick=quick, train_prior=train_prior, device=device, seed=seed, overwrite=overwrite,
                           threads=threads, progress=not quiet,
                           echo=echo_err if not quiet else lambda _: None)  # fmt: skip
        typer.echo(str(outdir / summary["contact_sheet"]))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)

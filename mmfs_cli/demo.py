"""`mmfs demo`: the whole method offline on synthetic faces, a CPU and a few minutes (mmfs.demo.run).

The options are fields of `mmfs.config.demo.DemoRequest` and the shared `mmfs.config.common.Runtime`.
"""

from __future__ import annotations

import typer

from mmfs.config.common import Runtime
from mmfs.config.demo import DemoRequest
from mmfs_cli.common import echo_err, guarded
from mmfs_cli.options import Group, command


@command(request=Group(DemoRequest), runtime=Group(Runtime, only=("device", "quiet")))
def demo(request: DemoRequest, runtime: Runtime) -> None:
    """Run the whole method offline: synthetic data, Stage I, Stage II, train-mapper, adapt, stylize, measure.

    Starts from the StyleGAN2 prior and the tiny CLIP shipped with mmfs (trained on the same synthetic
    faces), or trains them from scratch with --train-prior / --train-clip. Uses tiny random stand-ins for
    DINO and the metric networks (no downloads); the numbers are not comparable with anything. Writes
    contact_sheet.png, evaluation.json and summary.json under --outdir.

    Example: mmfs demo --outdir demo_out
    """
    with guarded():
        from mmfs.demo.run import run_demo

        quiet = runtime.quiet
        summary = run_demo(
            request, device=runtime.device, progress=not quiet, echo=(lambda _: None) if quiet else echo_err
        )
        typer.echo(str(request.outdir / summary["contact_sheet"]))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)

"""`mmfs stylize`: stylize every face in photos (files, folders, globs, stdin) or a video with chosen styles.

Every option is a field of a group in `mmfs.config.stylize` (checked there, before anything loads);
`mmfs.inference.stylize.stylize` runs the request. This module builds it, prints the report and sets
the exit code; `run_request` is shared with `mmfs adapt`, which stylizes its INPUTS the same way.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from mmfs.config.common import Runtime
from mmfs.config.faces import FaceDetection
from mmfs.config.stylize import (
    VIDEO_EXTENSIONS,
    PhotoOutput,
    StyleSource,
    StylizeRequest,
    StylizerModel,
    VideoOptions,
)
from mmfs_cli.common import EXIT_FAILED, echo_err, guarded, inputs_argument, report_failures, stdin_lines
from mmfs_cli.options import Group, command

Inputs = inputs_argument("Photos: files, folders (recursive), globs, or - to read paths from stdin.")


@command(
    model=Group(StylizerModel),
    style=Group(StyleSource),
    photos=Group(PhotoOutput),
    video=Group(VideoOptions),
    faces=Group(FaceDetection),
    runtime=Group(Runtime),
)
def stylize(
    inputs: Inputs = None,
    *,
    model: StylizerModel,
    style: StyleSource,
    photos: PhotoOutput,
    video: VideoOptions,
    faces: FaceDetection,
    runtime: Runtime,
) -> None:
    """Stylize every face in photos or a video: detect, align to FFHQ, stylize, save crops or paste back.

    Outputs: <stem>_face<k>_<style>.<ext> per face, or <stem>_<style>.<ext> with --paste-back or --aligned;
    <style> is seed<N>, a w-file's labels, or the prompt. A video input (VIDEO_EXTENSIONS)
    is stylized frame by frame, pasted back, with its frame rate and sound kept (one video, one style).
    Exit codes: 0 all inputs done (existing outputs skipped count as done), 1 some input failed,
    2 usage error, 130 interrupted.

    Example: mmfs stylize photos/ --checkpoint model.safetensors --seed 5 --paste-back --outdir out
    Example: mmfs stylize clip.mp4 --checkpoint model.safetensors --text "pop art" --out clip_popart.mp4
    """
    with guarded():
        request = StylizeRequest(tuple(inputs or ()), model, style, photos, video, faces, runtime)
    run_request(request)


stylize.__doc__ = stylize.__doc__.replace("VIDEO_EXTENSIONS", " ".join(VIDEO_EXTENSIONS))  # the list the code uses


def run_request(request: StylizeRequest) -> None:
    """Run a request; print its report (JSON on stdout, or a summary and the failures on stderr); exit 1 on failures."""
    from mmfs.inference.stylize import StylizeReport
    from mmfs.inference.stylize import stylize as run

    report = StylizeReport()
    with guarded():
        try:
            run(request, report=report, stdin_lines=stdin_lines() if "-" in request.inputs else None, on_result=_shown)
        finally:  # also after Ctrl-C or a full disk: what was done is reported
            _print(report, request.runtime)
    if report.failures:
        raise typer.Exit(EXIT_FAILED)


def _shown(result: Any) -> None:
    """A photo's error as it happens (above the progress bar); a bug's traceback in full."""
    from tqdm import tqdm

    if result.error:
        tqdm.write(f"error: {result.error}", file=sys.stderr)
    if result.exception is not None:
        import traceback

        traceback.print_exception(result.exception, file=sys.stderr)


def _print(report: Any, runtime: Runtime) -> None:
    """The report: JSON on stdout with --json, else one summary line on stderr; the failures always."""
    if report.saved_w is not None:
        echo_err(f"saved {len(report.styles)} style(s) to {report.saved_w}")
    if report.kind not in ("photos", "video"):
        return
    if report.skipped_files.count and not runtime.quiet:
        echo_err(report.skipped_files.describe())
    if runtime.as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    elif not runtime.quiet and (report.inputs or report.kind == "video"):
        echo_err(report.describe())
    report_failures(report.failures)  # even with --quiet


def register(app: typer.Typer) -> None:
    app.command("stylize")(stylize)

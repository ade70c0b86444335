"""`mmfs align`: detect every face in ordinary photos and write FFHQ-aligned crops plus their transforms.

The options are fields of `mmfs.config.align.AlignRequest`, `mmfs.config.faces.FaceDetection` and the shared
`mmfs.config.common.Runtime`; `mmfs.faces.files.PhotoAligner` does the work, photo by photo.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from mmfs.config.align import AlignRequest
from mmfs.config.common import Runtime
from mmfs.config.faces import FaceDetection
from mmfs_cli.common import EXIT_FAILED, echo_err, guarded, report_failures, stdin_lines
from mmfs_cli.options import Group, command

Inputs = Annotated[
    list[str], typer.Argument(help="Image files, folders (recursive), globs, or - to read paths from stdin.")
]


@command(
    request=Group(AlignRequest),
    detection=Group(FaceDetection),
    runtime=Group(Runtime, only=("as_json", "quiet")),
)
def align(inputs: Inputs, request: AlignRequest, detection: FaceDetection, runtime: Runtime) -> None:
    """Detect every face, align each to the FFHQ crop and write <stem>_face<k>.png plus <stem>.json.

    The JSON holds each face's box, five landmarks, crop quad and photo-to-crop 2x3 matrix (docs/align.md).

    A file that cannot be read or has no face is reported on stderr and skipped; then the exit code is 1.

    Example: mmfs align photos/ --outdir aligned --size 512
    """
    with guarded():
        from tqdm import tqdm

        from mmfs.data.images import SkippedFiles
        from mmfs.faces.files import PhotoAligner, align_summary, collect_photos

        skipped = SkippedFiles()
        paths = collect_photos(inputs, stdin_lines=stdin_lines() if "-" in inputs else None, skipped=skipped)
        aligner = PhotoAligner(request, detection)  # a missing detector model fails here, before any output
        results = []
        for path in tqdm(paths, desc="align", unit="img", disable=runtime.quiet, dynamic_ncols=True):
            results.append(aligner.align(path))
            if results[-1].error is not None:
                tqdm.write(f"error: {results[-1].error}", file=sys.stderr)

        summary = align_summary(results, skipped, request.outdir)
        if skipped.count and not runtime.quiet:
            echo_err(skipped.describe())
        if runtime.as_json:
            typer.echo(json.dumps(summary, indent=2))
        else:
            if not runtime.quiet:
                echo_err(f"aligned {summary['faces']} face(s) from {summary['ok']} image(s) into {request.outdir};"
                         f" {summary['failed']} failed")  # fmt: skip
            report_failures([e["error"] for e in summary["errors"]])  # even with --quiet
        if summary["failed"]:
            raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.command("align")(align)

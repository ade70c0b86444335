"""`mmfs evaluate`: FID against the art set, identity distance to the input, LPIPS diversity (paper §4.1-4.2).

Every option is a field of `mmfs.config.evaluate.EvaluateRequest` (checks included) or of the shared
`mmfs.config.common.Runtime`; `mmfs.inference.evaluate.evaluate` runs it.
"""

from __future__ import annotations

import json

import typer

from mmfs.config.common import Runtime
from mmfs.config.evaluate import EvaluateRequest
from mmfs_cli.common import echo_err, guarded
from mmfs_cli.options import Group, command


@command(request=Group(EvaluateRequest), runtime=Group(Runtime, only=("device", "dtype", "quiet")))
def evaluate(request: EvaluateRequest, runtime: Runtime) -> None:
    """Evaluate a stylizer: FID of n stylized photos against the art set, identity distance, LPIPS diversity.

    The photos are drawn at random with --seed (a seeded permutation, cycled when n > P), each with its own random style.
    The JSON report goes to --report and stdout, one summary line to stderr. Exit codes: 0 done,
    1 user error (missing weights, bad input), 2 usage error, 130 interrupted. See docs/evaluate.md.

    Example: mmfs evaluate -c final.safetensors --photos ffhq-test/ --art aahq/ --inception-weights pt_inception.pth
    """
    with guarded():
        from mmfs.inference.evaluate import evaluate as run
        from mmfs.inference.evaluate import summary_line, write_report

        result = run(request, device=runtime.device, dtype=runtime.dtype, progress=not runtime.quiet)
        for warning in result["warnings"]:
            echo_err(f"warning: {warning}")
        typer.echo(json.dumps(result, indent=2))  # on stdout first: the numbers survive an unwritable --report
        write_report(result, request.report)
        if not runtime.quiet:
            echo_err(f"{summary_line(result)}; report: {request.report}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)

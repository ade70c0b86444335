"""`mmfs evaluate`: FID against the art set, identity distance to the input, LPIPS diversity (paper §4.1-4.2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mmfs_cli.common import DeviceOpt, DtypeOpt, QuietOpt, echo_err, guarded


def evaluate(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", help="Stylizer checkpoint to evaluate.")] = ...,
    photos: Annotated[
        Path, typer.Option(help="Folder of FFHQ-aligned square photos (recursive; output i uses photo i mod count).")
    ] = ...,
    art: Annotated[
        Path | None,
        typer.Option(help="Folder of artworks, the FID reference set (needed for fid).", show_default=False),
    ] = None,
    n: Annotated[
        int,
        typer.Option(
            "--n", min=1, help="Number of stylized outputs: n photos drawn at random, each under its own random style."
        ),
    ] = 10000,
    metrics: Annotated[str, typer.Option(help="Comma-separated subset of: fid, arcface, lpips.")] = "fid,arcface,lpips",
    seed: Annotated[
        int, typer.Option(help="Seed of the random photo sample and styles (0 to 2**63 - 1); recorded in the report.")
    ] = 0,
    batch_size: Annotated[int, typer.Option(min=1, max=1024, help="Faces per generator and metric call.")] = 8,
    inception_weights: Annotated[
        Path | None,
        typer.Option(help="FID Inception weights pt_inception-2015-12-05-6726825d.pth.", show_default=False),
    ] = None,
    arcface_weights: Annotated[
        Path | None,
        typer.Option(
            help="insightface recognition ONNX (e.g. w600k_r50.onnx); without it: dlib_id_dist.", show_default=False
        ),
    ] = None,
    lpips_weights: Annotated[
        Path | None,
        typer.Option(
            help="torchvision AlexNet alexnet-owt-7be5be79.pth (default: torch hub cache).", show_default=False
        ),
    ] = None,
    fid_cache: Annotated[
        Path | None,
        typer.Option(
            help="Folder caching the art set's FID statistics (default: ~/.cache/mmfs/fid).", show_default=False
        ),
    ] = None,
    no_fid_cache: Annotated[
        bool, typer.Option("--no-fid-cache", help="Neither read nor write cached statistics.")
    ] = False,
    report: Annotated[Path, typer.Option(help="Where the JSON report is written (it is also printed).")] = Path(
        "evaluation.json"
    ),
    tiny_metrics: Annotated[
        bool,
        typer.Option(
            "--tiny-metrics",
            help="Testing only: tiny random stand-ins for every metric whose weights are not given. "
            "The numbers mean nothing and are not comparable with anything.",
        ),
    ] = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "fp32",
    quiet: QuietOpt = False,
) -> None:
    """Evaluate a stylizer: FID of n stylized photos against the art set, identity distance, LPIPS diversity.

    The photos are drawn at random with --seed (a seeded permutation, cycled when n > P), each with its own random style.
    The JSON report goes to --report and stdout, one summary line to stderr. Exit codes: 0 done,
    1 user error (missing weights, bad input), 2 usage error, 130 interrupted. See docs/evaluate.md.

    Example: mmfs evaluate -c final.safetensors --photos ffhq-test/ --art aahq/ --inception-weights pt_inception.pth
    """
    from mmfs.errors import MMFSError
    from mmfs.inference.metrics import parse_metric_names

    try:
        names = parse_metric_names(metrics)
    except MMFSError as exc:
        raise typer.BadParameter(str(exc), param_hint="--metrics") from None
    if "fid" in names and art is None:
        raise typer.BadParameter("fid needs the art set: give --art DIR, or leave fid out of --metrics")
    if "fid" in names and n < 2:
        raise typer.BadParameter("fid needs at least 2 outputs", param_hint="--n")
    if not 0 <= seed <= 2**63 - 1:
        raise typer.BadParameter("must be in [0, 2**63 - 1]", param_hint="--seed")
    if no_fid_cache and fid_cache is not None:
        raise typer.BadParameter("--fid-cache and --no-fid-cache exclude each other")
    with guarded():
        _check_writable(report)
        from mmfs.inference.evaluate import evaluate as run
        from mmfs.inference.evaluate import summary_line, write_report

        result = run(
            checkpoint,
            photos,
            art,
            n=n,
            metrics=names,
            seed=seed,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            inception_weights=inception_weights,
            arcface_weights=arcface_weights,
            lpips_weights=lpips_weights,
            fid_cache=not no_fid_cache,
            fid_cache_dir=fid_cache,
            tiny_metrics=tiny_metrics,
            progress=not quiet,
        )
        for warning in result["warnings"]:
            echo_err(f"warning: {warning}")
        typer.echo(json.dumps(result, indent=2))  # on stdout first: the numbers survive an unwritable --report
        write_report(result, report)
        if not quiet:
            echo_err(f"{summary_line(result)}; report: {report}")


def _check_writable(path: Path) -> None:
    """Refuse an unwritable --report before the long run rather than after it."""
    import os

    from mmfs.errors import InputError

    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; --report needs a file path")
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot write the report there; choose another --report")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)

"""`mmfs train-prior`: train your own StyleGAN2 prior (generator + discriminator) on the shared loop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmfs_cli.common import guarded
from mmfs_cli.train import (
    Accum,
    BatchSize,
    CheckpointEvery,
    Compile,
    Device,
    DryRun,
    Dtype,
    Keep,
    LogEvery,
    Lr,
    Outdir,
    PreviewEvery,
    Quiet,
    Resume,
    Seed,
    Steps,
    Tf32,
    Workers,
    _loop,
    _path,
    _report,
)

DEFAULT_PRESET = "ffhq512"  # the paper's prior resolution


def train_prior(
    photos: Annotated[Path | None, typer.Option(help="Folder of aligned face photos (searched recursively).")] = None,
    preset: Annotated[
        str, typer.Option(help="Network preset: ffhq512 (the paper's), ffhq256, ffhq1024, tiny64 or tiny.")
    ] = DEFAULT_PRESET,
    resolution: Annotated[
        int | None,
        typer.Option(
            help="Output side in px (a power of two, 16..4096): the preset's network at this resolution. Default: the preset's."
        ),
    ] = None,
    r1_gamma: Annotated[
        float | None, typer.Option(min=0.0, help="R1 weight gamma (default 10; see docs/train-prior.md).")
    ] = None,
    r1_every: Annotated[int | None, typer.Option(min=1, help="Lazy R1 interval in steps (default 16).")] = None,
    path_reg: Annotated[
        float | None, typer.Option(min=0.0, help="Path-length regularisation weight (default 2; 0 turns it off).")
    ] = None,
    path_every: Annotated[
        int | None, typer.Option(min=1, help="Lazy path-length regularisation interval (default 4).")
    ] = None,
    mixing_prob: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Style-mixing probability (default 0.9).")
    ] = None,
    mirror: Annotated[bool, typer.Option(help="Random left-right flips of the photos.")] = True,
    ema_decay: Annotated[
        float | None,
        typer.Option(min=0.0, max=0.999999, help="Per-step EMA decay of the generator (default 0.5**(32/10000))."),
    ] = None,
    steps: Steps = None,
    batch_size: BatchSize = None,
    accum: Accum = None,
    lr: Lr = None,
    checkpoint_every: CheckpointEvery = None,
    preview_every: PreviewEvery = None,
    log_every: LogEvery = None,
    keep_checkpoints: Keep = None,
    seed: Seed = None,
    workers: Workers = None,
    outdir: Outdir = Path("runs"),
    device: Device = None,
    dtype: Dtype = None,
    tf32: Tf32 = False,
    compile_: Compile = False,
    resume: Resume = None,
    dry_run: DryRun = False,
    quiet: Quiet = False,
) -> None:
    """Train a StyleGAN2 generator and discriminator on face photos (rosinality's recipe).

    final.safetensors is a "prior" file (EMA generator g.*, discriminator d.*) for `mmfs pretrain-encoder --prior`.

    Example: mmfs train-prior --photos ffhq/ --preset ffhq256 --batch-size 16 --steps 200000
    Example: mmfs train-prior --photos faces128/ --preset ffhq256 --resolution 128
    """
    if resume is not None and resolution is not None:
        raise typer.BadParameter("a resumed run keeps its own resolution; drop --resolution", param_hint="--resolution")
    with guarded():
        from mmfs.config import get_preset
        from mmfs.errors import MMFSError
        from mmfs.train import make_config, train
        from mmfs.train.stages.prior import at_resolution

        loop = _loop(locals())
        loop["ema_decay"] = ema_decay
        if resume is not None:
            _report(train(resume=resume, steps=loop["steps"], progress=not quiet))
            return
        if photos is None:
            raise MMFSError("`mmfs train-prior` needs --photos (or --resume RUN_DIR)")
        options = {
            "photos": _path(photos), "r1_gamma": r1_gamma, "r1_every": r1_every, "path_reg": path_reg,
            "path_every": path_every, "mixing_prob": mixing_prob, "mirror": mirror,
        }  # fmt: skip
        try:
            model = get_preset(preset)
        except ValueError as exc:
            raise MMFSError(str(exc)) from None
        try:
            model = at_resolution(model, resolution, name=f"preset {preset}")
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--resolution") from None
        try:
            cfg = make_config("train-prior", model, options=options, **loop)
        except ValueError as exc:
            raise MMFSError(str(exc)) from None
        if dry_run:
            typer.echo(cfg.to_json())
            return
        _report(train(cfg, outdir=outdir, progress=not quiet))


def register(app: typer.Typer) -> None:
    app.command("train-prior")(train_prior)

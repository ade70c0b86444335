"""`mmfs train-mapper`: the CLIP -> w+ mapping network (paper §3.3, reference phase 3), on the shared loop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmfs_cli.common import ClipTag, guarded
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
    Preset,
    PreviewEvery,
    Quiet,
    Resume,
    Seed,
    Steps,
    Tf32,
    Workers,
    _loop,
    _model_config,
    _path,
    _report,
)

ClipModel = Annotated[
    str, typer.Option(help="open_clip model the mapper reads (OpenAI ViT-B-32 as the reference), or local-dir:PATH.")
]
ClipWeights = Annotated[
    Path | None, typer.Option(help="Local CLIP weights (open_clip_pytorch_model.bin); default: open_clip's cache.")
]


def train_mapper(
    photos: Annotated[Path | None, typer.Option(help="Folder of face photos (searched recursively).")] = None,
    init: Annotated[
        Path | None, typer.Option(help="Stage II weights with their discriminator: a finetune run dir or checkpoint.")
    ] = None,
    disc: Annotated[
        Path | None, typer.Option(help="Discriminator file (training checkpoint); default: found from --init.")
    ] = None,
    clip_model: ClipModel = "ViT-B-32",
    clip_tag: ClipTag = None,
    clip_weights: ClipWeights = None,
    tiny: Annotated[bool, typer.Option("--tiny", help="Random tiny CLIP (smoke runs, no download).")] = False,
    mixing_prob: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Style-mixing probability of the target styles (reference 0)."),
    ] = None,
    preset: Preset = None,
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
    """Train the CLIP-to-w+ mapper by reconstructing random styles from their CLIP image embeddings.

    Only the mapper trains: 1.0 x L1 + 4.0 x discriminator-feature L1, Stage II model and discriminator frozen.
    final.safetensors is the Stage II Stylizer plus the mapper, for `mmfs stylize --text/--ref` and `mmfs adapt`.

    Example: mmfs train-mapper --photos ffhq/ --init runs/00001-finetune --clip-weights open_clip_pytorch_model.bin
    """
    with guarded():
        from mmfs.errors import MMFSError
        from mmfs.train import make_config, train
        from mmfs.train.stages.mapper import resolve_init

        loop = _loop(locals())
        if resume is not None:
            _report(train(resume=resume, steps=loop["steps"], progress=not quiet))
            return
        missing = [name for name, value in (("--photos", photos), ("--init", init)) if value is None]
        if missing:
            raise MMFSError(f"`mmfs train-mapper` needs {', '.join(missing)} (or --resume RUN_DIR)")
        init_file = resolve_init(init)
        options = {
            "photos": _path(photos), "init": str(init_file), "disc": _path(disc),
            "clip_model": "tiny" if tiny else clip_model, "clip_tag": "openai" if clip_tag is None else clip_tag,
            "clip_weights": _path(clip_weights), "mixing_prob": mixing_prob,
        }  # fmt: skip
        try:
            cfg = make_config("train-mapper", _model_config(preset, init_file), options=options, **loop)
        except ValueError as exc:
            raise MMFSError(str(exc)) from None
        if dry_run:
            typer.echo(cfg.to_json())
            return
        _report(train(cfg, outdir=outdir, progress=not quiet))


def register(app: typer.Typer) -> None:
    app.command("train-mapper")(train_mapper)

"""The training commands: `train-prior`, `pretrain-encoder` (Stage I), `finetune` (Stage II), `train-mapper`.

Every option is a field declared in `mmfs.config.train` (the stage's options, the shared loop, the run);
this module only names the groups each command offers, then calls `mmfs.train`. Without `--preset` the
network config comes from the stage's input file. Under `torchrun --nproc_per_node N -m mmfs_cli.app ...`
the same commands train on N processes.
"""

from __future__ import annotations

from typing import Any

import typer

from mmfs.config.options import Overrides
from mmfs.config.train import (
    EncoderOptions,
    FinetuneOptions,
    LoopConfig,
    MapperOptions,
    ModelChoice,
    Pretrained,
    PriorModel,
    PriorOptions,
    TrainRun,
    apply_pretrained,
    check_run,
)
from mmfs_cli.common import echo_err, guarded
from mmfs_cli.options import Group, command

RUN = Group(TrainRun, panel="Run")
MODEL = Group(ModelChoice, panel="Run")


def stage_group(options: type, **kwargs: Any) -> Group:
    return Group(options, panel="Stage options", **kwargs)


def loop_group(options: type) -> Group:
    """The shared loop options, defaulting to the stage's reference values (shown in --help)."""
    return Group(LoopConfig, overrides=True, defaults=options.loop_defaults, panel="Training loop")


@command(
    options=stage_group(PriorOptions), model=Group(PriorModel, panel="Run"), loop=loop_group(PriorOptions), run=RUN
)
def train_prior(options: PriorOptions, model: PriorModel, loop: Overrides, run: TrainRun) -> None:
    """Train a StyleGAN2 generator and discriminator on face photos (rosinality's recipe).

    final.safetensors is a "prior" file (EMA generator g.*, discriminator d.*) for `mmfs pretrain-encoder --prior`.

    Example: mmfs train-prior --photos ffhq/ --preset ffhq256 --batch-size 16 --steps 200000
    Example: mmfs train-prior --photos faces128/ --preset ffhq256 --resolution 128
    """
    _train(options, model, loop, run)


@command(options=stage_group(EncoderOptions), model=MODEL, loop=loop_group(EncoderOptions), run=RUN)
def pretrain_encoder(options: EncoderOptions, model: ModelChoice, loop: Overrides, run: TrainRun) -> None:
    """Stage I: train the encoder (+ the new first decoder layer) to reproduce a frozen StyleGAN2's samples.

    Writes runs/NNNNN-pretrain-encoder/ with checkpoints, previews, log.jsonl and final.safetensors.

    Example: mmfs pretrain-encoder --prior ffhq-prior.safetensors --steps 200000
    """
    _train(options, model, loop, run)


@command(
    options=stage_group(FinetuneOptions),
    pretrained=stage_group(Pretrained),
    model=MODEL,
    loop=loop_group(FinetuneOptions),
    run=RUN,
)
def finetune(
    options: FinetuneOptions, pretrained: Pretrained, model: ModelChoice, loop: Overrides, run: TrainRun
) -> None:
    """Stage II: adversarial + DINO-structure fine-tuning of the whole Stylizer on an art domain.

    Example: mmfs finetune --photos ffhq/ --art aahq/ --init runs/00000-pretrain-encoder/final.safetensors
    """
    _train(apply_pretrained(options, pretrained), model, loop, run)


@command(
    options=stage_group(MapperOptions),
    pretrained=stage_group(Pretrained, only=("tiny",)),
    model=MODEL,
    loop=loop_group(MapperOptions),
    run=RUN,
)
def train_mapper(
    options: MapperOptions, pretrained: Pretrained, model: ModelChoice, loop: Overrides, run: TrainRun
) -> None:
    """Train the CLIP-to-w+ mapper by reconstructing random styles from their CLIP image embeddings.

    Only the mapper trains: 1.0 x L1 + 4.0 x discriminator-feature L1, Stage II model and discriminator frozen.
    final.safetensors is the Stage II Stylizer plus the mapper, for `mmfs stylize --text/--ref` and `mmfs adapt`.

    Example: mmfs train-mapper --photos ffhq/ --init runs/00001-finetune --clip-weights open_clip_pytorch_model.bin
    """
    _train(apply_pretrained(options, pretrained), model, loop, run)


def _train(options: Any, model: ModelChoice | PriorModel, loop: Overrides, run: TrainRun) -> None:
    """Resume a run, or check and start a new one (or print its config with --dry-run)."""
    with guarded():
        check_run(run, model)
        from mmfs.train import train
        from mmfs.train.start import new_run_config

        if run.resume is not None:
            _report(train(resume=run.resume, steps=loop.get("steps"), progress=not run.quiet))
            return
        cfg = new_run_config(options, loop, model)
        if run.dry_run:
            typer.echo(cfg.to_json())
            return
        _report(train(cfg, outdir=run.outdir, progress=not run.quiet))


def _report(run_dir: Any) -> None:
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        echo_err(f"run directory: {run_dir}")
        typer.echo(str(run_dir / "final.safetensors"))


def register(app: typer.Typer) -> None:
    app.command(PriorOptions.command)(train_prior)
    app.command(EncoderOptions.command)(pretrain_encoder)
    app.command(FinetuneOptions.command)(finetune)
    app.command(MapperOptions.command)(train_mapper)

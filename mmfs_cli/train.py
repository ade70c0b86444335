"""`mmfs pretrain-encoder` (Stage I) and `mmfs finetune` (Stage II): thin wrappers over `mmfs.train`.

Both share the loop options (steps, batch, lr, intervals, device, dtype, tf32, resume). Without `--preset`
the network config comes from the metadata of the `--prior` / `--init` file. Under
`torchrun --nproc_per_node N -m mmfs_cli.app ...` the same commands train on N processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mmfs_cli.common import echo_err, guarded

Preset = Annotated[
    str | None, typer.Option(help="Network preset (ffhq512, ffhq256, ffhq1024, tiny, tiny64); default: the file's own.")
]
Steps = Annotated[int | None, typer.Option(help="Optimizer steps in total (default: the stage's reference count).")]
BatchSize = Annotated[int | None, typer.Option(help="Images per step over all GPUs and micro-batches (default 8).")]
Accum = Annotated[int | None, typer.Option(help="Gradient accumulation: micro-batches per step.")]
Lr = Annotated[float | None, typer.Option(help="Learning rate (default: the reference's value for the stage).")]
CheckpointEvery = Annotated[int | None, typer.Option(help="Steps between checkpoints (0: only at the end).")]
PreviewEvery = Annotated[int | None, typer.Option(help="Steps between preview grids (0: never).")]
LogEvery = Annotated[int | None, typer.Option(help="Steps between metric lines in log.jsonl.")]
Keep = Annotated[int | None, typer.Option(help="Checkpoints to keep (oldest deleted).")]
Seed = Annotated[int | None, typer.Option(help="Random seed (weights init, z, noise, data order).")]
Outdir = Annotated[Path, typer.Option("--outdir", "-o", help="Parent folder of the numbered run directories.")]
Device = Annotated[str | None, typer.Option(help="auto (CUDA when present), cpu, cuda or cuda:N.")]
Dtype = Annotated[
    str | None,
    typer.Option(
        help="fp32 (default: the reference's precision) or bf16 (autocast: faster on GPUs, trains different weights).",
        show_default=False,
    ),
]
Tf32 = Annotated[
    bool,
    typer.Option("--tf32", help="Allow TF32 matmuls and convolutions on Ampere+ GPUs (off: the reference's fp32)."),
]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the trained networks.")]
Workers = Annotated[int | None, typer.Option(help="Data-loading worker processes per GPU.")]
Resume = Annotated[
    Path | None,
    typer.Option(help="Continue this run directory from its latest checkpoint (other options ignored but --steps)."),
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the resolved config as JSON and exit.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def pretrain_encoder(
    prior: Annotated[Path | None, typer.Option(help="StyleGAN2 prior (.safetensors from `mmfs convert`).")] = None,
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
    outdir: Outdir = Path("runs"),
    device: Device = None,
    dtype: Dtype = None,
    tf32: Tf32 = False,
    compile_: Compile = False,
    resume: Resume = None,
    dry_run: DryRun = False,
    quiet: Quiet = False,
) -> None:
    """Stage I: train the encoder (+ the new first decoder layer) to reproduce a frozen StyleGAN2's samples.

    Writes runs/NNNNN-pretrain-encoder/ with checkpoints, previews, log.jsonl and final.safetensors.

    Example: mmfs pretrain-encoder --prior ffhq-prior.safetensors --steps 200000
    """
    with guarded():
        options = {"prior": _path(prior)}
        loop = _loop(locals())
        _run("pretrain-encoder", prior, preset, options, loop, outdir, resume, dry_run, quiet)


def finetune(
    photos: Annotated[Path | None, typer.Option(help="Folder of face photos (searched recursively).")] = None,
    art: Annotated[Path | None, typer.Option(help="Folder of artworks of the target style.")] = None,
    init: Annotated[Path | None, typer.Option(help="Stage I output: final.safetensors or a checkpoint.")] = None,
    disc: Annotated[
        Path | None, typer.Option(help="Discriminator to start from (prior or checkpoint); default: found from --init.")
    ] = None,
    dino: Annotated[
        str, typer.Option(help="DINO for the structure loss: dino_vitb8 (by name) or a local weights file.")
    ] = "dino_vitb8",
    dino_weights: Annotated[Path | None, typer.Option(help="Local DINO ViT-B/8 weights (overrides --dino).")] = None,
    tiny: Annotated[bool, typer.Option("--tiny", help="Random tiny DINO (smoke runs, no download).")] = False,
    r1_every: Annotated[int | None, typer.Option(help="Lazy R1 interval in steps (reference 16).")] = None,
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
    """Stage II: adversarial + DINO-structure fine-tuning of the whole Stylizer on an art domain.

    Example: mmfs finetune --photos ffhq/ --art aahq/ --init runs/00000-pretrain-encoder/final.safetensors
    """
    with guarded():
        dino_spec = "tiny" if tiny else str(dino_weights) if dino_weights else dino
        options = {
            "photos": _path(photos),
            "art": _path(art),
            "init": _path(init),
            "disc": _path(disc),
            "dino": dino_spec,
            "r1_every": r1_every,
        }
        loop = _loop(locals())
        _run("finetune", init, preset, options, loop, outdir, resume, dry_run, quiet)


_LOOP_KEYS = (
    "steps",
    "batch_size",
    "accum",
    "lr",
    "checkpoint_every",
    "preview_every",
    "log_every",
    "keep_checkpoints",
    "seed",
    "workers",
    "device",
    "dtype",
)


def _loop(args: dict[str, Any]) -> dict[str, Any]:
    loop = {k: args.get(k) for k in _LOOP_KEYS}
    loop["compile"] = args.get("compile_") or None
    loop["tf32"] = args.get("tf32") or None
    return loop


def _path(value: Path | None) -> str | None:
    """Absolute, so that config.json still points at the inputs when a run is resumed from elsewhere."""
    return str(value.expanduser().resolve()) if value is not None else None


def _run(
    command: str,
    source: Path | None,
    preset: str | None,
    options: dict[str, Any],
    loop: dict[str, Any],
    outdir: Path,
    resume: Path | None,
    dry_run: bool,
    quiet: bool,
) -> None:
    from mmfs.errors import MMFSError
    from mmfs.train import make_config, train

    if resume is not None:
        run_dir = train(resume=resume, steps=loop["steps"], progress=not quiet)
        _report(run_dir)
        return
    required = {"pretrain-encoder": ("prior",), "finetune": ("photos", "art", "init")}[command]
    missing = [f"--{name}" for name in required if not options.get(name)]
    if missing:
        raise MMFSError(f"`mmfs {command}` needs {', '.join(missing)} (or --resume RUN_DIR)")
    try:
        cfg = make_config(command, _model_config(preset, source), options=options, **loop)
    except ValueError as exc:
        raise MMFSError(str(exc)) from None
    if dry_run:
        typer.echo(cfg.to_json())
        return
    _report(train(cfg, outdir=outdir, progress=not quiet))


def _model_config(preset: str | None, source: Path | None):
    """The `--preset`, else the config stored in the prior / init file."""
    from mmfs.checkpoint import read_metadata
    from mmfs.config import ModelConfig, get_preset
    from mmfs.errors import CheckpointError, MMFSError

    if preset is not None:
        try:
            return get_preset(preset)
        except ValueError as exc:
            raise MMFSError(str(exc)) from None
    config = read_metadata(source).get("mmfs.config")  # metadata only: no tensors read
    if config is None:
        raise CheckpointError(f"{source}: no mmfs model config in its metadata; pass --preset")
    return ModelConfig.from_json(config)


def _report(run_dir: Path) -> None:
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        echo_err(f"run directory: {run_dir}")
        typer.echo(str(run_dir / "final.safetensors"))


def register(app: typer.Typer) -> None:
    app.command("pretrain-encoder")(pretrain_encoder)
    app.command("finetune")(finetune)

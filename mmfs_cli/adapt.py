"""`mmfs adapt`: zero-shot (--text) or one-shot (--ref) fine-tuning of the decoder (paper §3.3; the official phase 4).

The stage's options are `mmfs.config.train.AdaptOptions` (with its loop defaults: 200 steps, batch 8,
lr 2e-4), the adapted file's are `AdaptRun`, and the options for stylizing INPUTS afterwards are the
stylize groups of `mmfs.config.stylize`. `mmfs.train.adapt` does the work; INPUTS are stylized by
the same request runner as `mmfs stylize`.
"""

from __future__ import annotations

import dataclasses

import typer

from mmfs.config.common import Runtime
from mmfs.config.faces import FaceDetection
from mmfs.config.options import Overrides
from mmfs.config.stylize import AdaptRun, PhotoOutput
from mmfs.config.train import AdaptOptions, LoopConfig, Pretrained, apply_pretrained
from mmfs_cli.common import echo_err, guarded, inputs_argument
from mmfs_cli.options import Group, command
from mmfs_cli.stylize import run_request

# the loop options adapt offers (the rest: the stage's defaults)
LOOP_OPTIONS = ("steps", "batch_size", "lr", "seed", "device", "dtype", "tf32", "deterministic")
INPUTS_OUTPUT = ("outdir", "aligned", "paste_back", "ext")  # how INPUTS are stylized (--overwrite: AdaptRun's)


Inputs = inputs_argument("Photos to stylize right after adapting (files, folders, globs); optional.")


@command(
    options=Group(AdaptOptions),
    pretrained=Group(Pretrained),
    loop=Group(LoopConfig, only=LOOP_OPTIONS, overrides=True, defaults=AdaptOptions.loop_defaults),
    run=Group(AdaptRun),
    output=Group(PhotoOutput, only=INPUTS_OUTPUT, panel="Stylizing INPUTS"),
    faces=Group(FaceDetection, only=("detector",), panel="Stylizing INPUTS"),
    runtime=Group(Runtime, only=("as_json", "quiet")),
)
def adapt(
    inputs: Inputs = None,
    *,
    options: AdaptOptions,
    pretrained: Pretrained,
    loop: Overrides,
    run: AdaptRun,
    output: PhotoOutput,
    faces: FaceDetection,
    runtime: Runtime,
) -> None:
    """Fine-tune the decoder towards a text prompt or a reference image; writes a small adapted checkpoint.

    Trains decoder0..N and to_rgb0..N only: 0.5 x DINO structure + 1.0 x CLIP direction (+ 100 x token projection with --ref).
    The adapted file holds the changed decoder weights and points to --checkpoint; stylize it with the same --text/--ref.
    Given INPUTS, they are stylized right away with the adapted model and the same style. Without --photos,
    the INPUTS are also the photos it adapts on: detected and aligned as stylize does (with --aligned: one
    folder of FFHQ-aligned crops, used as is). -c defaults to mmfs, the published model (docs/models.md).

    Example: mmfs adapt --ref style.png photo.jpg -o out
    Example: mmfs adapt -c mapper.safetensors --ref style.png --photos faces/ --out style.safetensors photos/ -o out
    """
    inputs = inputs or []
    with guarded():
        from mmfs.train.adapt import adapt as run_adapt
        from mmfs.train.adapt import adapted_request

        options = apply_pretrained(options, pretrained)
        adapted = run_adapt(options, loop, run, inputs=inputs, aligned=output.aligned, detection=faces,
                            progress=not runtime.quiet)  # fmt: skip
        if not adapted.main:  # another rank under torchrun: rank 0 reports, writes and stylizes INPUTS
            return
        if adapted.run_dir is not None:
            echo_err(f"run directory: {adapted.run_dir}")
        echo_err(f"wrote {adapted.path} (adapted decoder, base {options.checkpoint})")
        if not inputs:
            typer.echo(str(adapted.path))
            return
        # INPUTS: the same device and precision as the adapting, and --overwrite for their outputs too
        runtime = dataclasses.replace(
            runtime, **{k: loop[k] for k in ("device", "dtype", "deterministic") if k in loop}
        )
        output = dataclasses.replace(output, overwrite=run.overwrite)
        request = adapted_request(adapted, inputs, output, faces, runtime)
    run_request(request)


def register(app: typer.Typer) -> None:
    app.command(AdaptOptions.command)(adapt)

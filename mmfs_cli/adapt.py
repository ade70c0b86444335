"""`mmfs adapt`: zero-shot (--text) or one-shot (--ref) fine-tuning of the decoder (paper §3.3, reference phase 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mmfs_cli.common import ClipTag, DeviceOpt, OutdirOpt, QuietOpt, echo_err, guarded
from mmfs_cli.stylize import Detector, Ext

# Interim (until adapt's options are generated from mmfs.config.train.AdaptOptions)
ClipModel = Annotated[str, typer.Option(help="open_clip model the mapper reads, or local-dir:PATH.")]
ClipWeights = Annotated[Path | None, typer.Option(help="Local CLIP weights (open_clip_pytorch_model.bin).")]
Tf32 = Annotated[bool, typer.Option("--tf32", help="Allow TF32 matmuls and convolutions on Ampere+ GPUs.")]


def adapt(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Photos to stylize right after adapting (files, folders, globs); optional.", show_default=False
        ),
    ] = None,
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", "-c", help="Stylizer with a CLIP mapper (from `mmfs train-mapper`).")
    ] = ...,
    text: Annotated[str | None, typer.Option(help="Zero-shot: the target style as text, e.g. 'pop art'.")] = None,
    ref: Annotated[Path | None, typer.Option(help="One-shot: a style reference image.")] = None,
    photos: Annotated[
        Path | None,
        typer.Option(
            help="Folder of FFHQ-aligned face photos to adapt on; default with --aligned: the INPUTS folder.",
            show_default=False,
        ),
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps (the reference saves after 200).")] = 200,
    batch_size: Annotated[int, typer.Option(min=1, help="Photos per step (reference 8).")] = 8,
    lr: Annotated[float, typer.Option(help="Adam learning rate (reference 2e-4).")] = 2e-4,
    out: Annotated[
        Path | None, typer.Option(help="Adapted checkpoint to write (default: adapted-<style>.safetensors).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing --out file and existing stylized outputs.")
    ] = False,
    run_dir: Annotated[
        Path | None, typer.Option(help="Keep the training run (log, previews, checkpoint) under this folder.")
    ] = None,
    clip_model: ClipModel = "ViT-B-32",
    clip_tag: ClipTag = None,
    clip_weights: ClipWeights = None,
    dino_weights: Annotated[
        Path | None, typer.Option(help="Local DINO ViT-B/8 weights for the structure loss (default: timm's cache).")
    ] = None,
    tiny: Annotated[bool, typer.Option("--tiny", help="Random tiny CLIP and DINO (smoke runs, no download).")] = False,
    mapper_dropout: Annotated[
        bool, typer.Option(help="Keep the frozen mapper's dropout on while adapting, as the reference does.")
    ] = True,
    source_text: Annotated[str, typer.Option(help="Zero-shot source anchor prompt (reference: photo).")] = "photo",
    seed: Annotated[int, typer.Option(help="Random seed (photo order, noise, dropout).")] = 0,
    outdir: OutdirOpt = Path("stylized"),
    aligned: Annotated[bool, typer.Option(help="INPUTS are FFHQ-aligned square crops: skip detection.")] = False,
    paste_back: Annotated[bool, typer.Option(help="Write whole photos with every face stylized in place.")] = False,
    detector: Annotated[
        Detector, typer.Option(help="Face detector for INPUTS: dlib (offline) or insightface.")
    ] = Detector.dlib,
    ext: Annotated[Ext, typer.Option(help="Output format of stylized INPUTS.")] = Ext.png,
    device: DeviceOpt = "auto",
    dtype: Annotated[
        str, typer.Option(help="fp32 (the reference's precision) or bf16 (autocast: faster on GPUs, other weights).")
    ] = "fp32",
    tf32: Tf32 = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the stylize JSON summary of INPUTS on stdout.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune the decoder towards a text prompt or a reference image; writes a small adapted checkpoint.

    Trains decoder0..N and to_rgb0..N only: 0.5 x DINO structure + 1.0 x CLIP direction (+ 100 x token projection with --ref).
    The adapted file holds the changed decoder weights and points to --checkpoint; stylize it with the same --text/--ref.
    Given INPUTS, they are stylized right away with the adapted model and the same style. Without --photos,
    --aligned INPUTS (one folder of FFHQ-aligned crops) are also the photos it adapts on.

    Example: mmfs adapt -c mapper.safetensors --ref style.png --photos faces/ --out style.safetensors photos/ -o out
    """
    if (text is None) == (ref is None):
        raise typer.BadParameter("choose exactly one style: --text (zero-shot) or --ref (one-shot)")
    if paste_back and aligned:
        raise typer.BadParameter("--paste-back needs face detection; it cannot be used with --aligned")
    with guarded():
        out, tag = _adapt(locals())
    if inputs:
        from mmfs_cli.stylize import stylize

        stylize(
            inputs=inputs, checkpoint=out, text=[text] if text is not None else None, ref=[ref] if ref is not None else None,
            clip_weights=clip_weights, clip_model="tiny" if tiny else clip_model, clip_tag=tag, outdir=outdir,
            paste_back=paste_back, aligned=aligned, detector=detector, ext=ext, overwrite=overwrite, device=device,
            dtype=dtype, as_json=as_json, quiet=quiet,
        )  # fmt: skip


def _adapt(a: dict[str, Any]) -> tuple[Path, str]:
    """Check inputs, adapt, write the adapted file; returns its path and the CLIP tag used."""
    from mmfs.checkpoint import read_metadata
    from mmfs.config import ModelConfig
    from mmfs.errors import CheckpointError, InputError, MMFSError
    from mmfs.external.build import resolve_clip_tag
    from mmfs.inference.styles import reference_label, text_label
    from mmfs.train import make_config
    from mmfs.train.stages.adapt import run_adapt

    photos = a["photos"] if a["photos"] is not None else _photos_from_inputs(a["inputs"], a["aligned"])
    if a["ref"] is not None and not a["ref"].is_file():
        raise InputError(f"{a['ref']}: no such reference image")
    label = text_label(a["text"]) if a["text"] is not None else reference_label(a["ref"])
    out: Path = a["out"] or Path(f"adapted-{label}.safetensors")
    if out.exists() and not a["overwrite"]:
        raise InputError(f"{out}: already exists; pass --overwrite to replace it")
    config = read_metadata(a["checkpoint"]).get("mmfs.config")
    if config is None:
        raise CheckpointError(f"{a['checkpoint']}: no mmfs model config in its metadata")
    tiny = a["tiny"]
    clip_model = "tiny" if tiny else a["clip_model"]
    tag = resolve_clip_tag(a["clip_tag"], a["checkpoint"], clip_model)  # --clip-tag, else the mapper's, else openai
    options = {
        "checkpoint": str(a["checkpoint"]), "photos": str(photos), "text": a["text"],
        "ref": str(a["ref"]) if a["ref"] is not None else None, "source_text": a["source_text"],
        "clip_model": clip_model, "clip_tag": tag, "clip_weights": _str(a["clip_weights"]),
        "dino": "tiny" if tiny else _str(a["dino_weights"]) or "dino_vitb8", "mapper_dropout": a["mapper_dropout"],
    }  # fmt: skip
    loop = {"steps": a["steps"], "batch_size": a["batch_size"], "lr": a["lr"], "seed": a["seed"],
            "device": a["device"], "dtype": a["dtype"], "tf32": a["tf32"]}  # fmt: skip
    try:
        cfg = make_config("adapt", ModelConfig.from_json(config), options=options, **loop)
    except ValueError as exc:
        raise MMFSError(str(exc)) from None
    path, run = run_adapt(cfg, out, run_dir=a["run_dir"], progress=not a["quiet"])
    if run is not None:
        echo_err(f"run directory: {run}")
    echo_err(f"wrote {path} (adapted decoder, base {a['checkpoint']})")
    if not a["inputs"]:
        typer.echo(str(path))
    return path, tag


def _photos_from_inputs(inputs: list[str] | None, aligned: bool) -> Path:
    """Without --photos: the INPUTS folder, when it holds aligned crops (--aligned); else a one-line why-not."""
    from mmfs.errors import MMFSError

    if not inputs:
        raise MMFSError("`mmfs adapt` needs --photos (a folder of FFHQ-aligned face photos to adapt on)")
    if not aligned:
        raise MMFSError(
            "`mmfs adapt` needs --photos FOLDER of FFHQ-aligned face crops: adapting trains on aligned crops, while"
            " INPUTS are whole photos that are only detected and aligned when stylized (make crops with `mmfs align"
            " INPUTS -o FOLDER`, or add --aligned if INPUTS are one folder of aligned crops)"
        )
    if len(inputs) != 1 or not Path(inputs[0]).is_dir():
        raise MMFSError(
            "with --aligned and no --photos, INPUTS must be one folder of aligned crops to adapt on; pass --photos FOLDER"
        )
    return Path(inputs[0])


def _str(value: Path | None) -> str | None:
    return str(value) if value is not None else None


def register(app: typer.Typer) -> None:
    app.command("adapt")(adapt)

"""`mmfs adapt` from its options to the small adapted file, and the request that stylizes INPUTS with it.

The stage itself (losses, what trains, the adapted file's format) is `mmfs.train.stages.adapt`; this adds
what the command decides around it: the photos to adapt on, the style's label and the default output
name, the CLIP tag (the one recorded with the mapper unless given), and the stylize request that
applies the adapted file with the same style (a `StylizeRequest`, which the inference side runs).
Styles are named as `mmfs stylize` names them (`mmfs.utils.labels`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmfs.config.common import Runtime
from mmfs.config.faces import FaceDetection
from mmfs.config.options import check_required
from mmfs.config.stylize import AdaptRun, PhotoOutput, StyleSource, StylizeRequest, StylizerModel
from mmfs.config.train import AdaptOptions
from mmfs.errors import InputError, MMFSError
from mmfs.train.loop import train
from mmfs.train.stages.adapt import save_adapted


@dataclass(frozen=True)
class Adapted:
    """An adapted file, its kept run directory (with --run-dir), and the options it was adapted with."""

    path: Path
    run_dir: Path | None
    options: AdaptOptions  # photos and clip_tag resolved
    main: bool = True  # this process wrote the file and stylizes INPUTS (rank 0 under torchrun, or the only one)


def adapt(
    options: AdaptOptions,
    loop: Mapping[str, Any],
    run: AdaptRun,
    *,
    inputs: Sequence[str] = (),
    aligned: bool = False,
    detection: FaceDetection | None = None,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> Adapted:
    """Adapt the decoder of `options.checkpoint` (a file or a published model's name) to its text or reference
    style; write the adapted file.

    `loop` holds the loop settings given (the rest: `AdaptOptions.loop_defaults`). Without `options.photos`,
    the INPUTS are the photos to adapt on: detected and aligned as `mmfs stylize` does (with `detection`),
    or taken as they are with `aligned` (one folder of aligned crops).
    `on_step(step, total)` follows the run (`mmfs.train.loop.Trainer`); raising in it cancels the run.
    """
    from mmfs.external.build import resolve_clip_tag, resolve_clip_weights
    from mmfs.pretrained import clip_weights
    from mmfs.train import make_config
    from mmfs.train.distributed import init_distributed
    from mmfs.train.start import stored_config, with_model_files

    check_required(  # AdaptOptions.rules
        options, "adapt", given_words=("INPUTS",) if inputs else (),
        detail=": face photos to adapt on, a --photos FOLDER of FFHQ-aligned crops, or photos as INPUTS"
        " (detected and aligned as `mmfs stylize` does)",
    )  # fmt: skip
    if options.ref is not None and not Path(options.ref).is_file():
        raise InputError(f"{options.ref}: no such reference image")
    out = run.out or Path(f"adapted-{style_label(options)}.safetensors")
    if out.exists() and not run.overwrite:
        raise InputError(f"{out}: already exists; pass --overwrite to replace it")
    options = with_model_files(options)  # `-c mmfs`: fetched, checked and converted on first use
    network = stored_config(options.checkpoint)
    with tempfile.TemporaryDirectory(prefix=".mmfs-adapt-photos-") as crops:
        if not options.photos:
            folder = photos_from_inputs(inputs) if aligned else align_inputs(
                inputs, Path(crops), detection or FaceDetection(), size=network.resolution, progress=progress
            )  # fmt: skip
            options = dataclasses.replace(options, photos=str(folder.resolve()))
        # --clip-tag / --clip-weights, else those recorded with the mapper for this CLIP model (else openai / none)
        tag = resolve_clip_tag(options.clip_tag, options.checkpoint, options.clip_model)
        weights = resolve_clip_weights(options.clip_weights, options.checkpoint, options.clip_model)
        weights = clip_weights(weights, options.clip_model, tag)  # else the catalogue's CLIP (fetched on first use)
        options = dataclasses.replace(options, clip_tag=tag, clip_weights=None if weights is None else str(weights))
        try:
            cfg = make_config("adapt", network, options=options, **loop)
        except ValueError as exc:
            raise MMFSError(str(exc)) from None
        path, run_dir = run_adapt(cfg, out, run_dir=run.run_dir, progress=progress, on_step=on_step)
    d, _ = init_distributed(cfg.loop.device)  # the process group run_adapt joined, if any
    return Adapted(path, run_dir, options, main=d.is_main)


def align_inputs(
    inputs: Sequence[str], folder: Path, detection: FaceDetection, *, size: int, progress: bool = True
) -> Path:
    """Every face in INPUTS, detected and aligned to the FFHQ crop as `mmfs stylize` does, into `folder`."""
    from tqdm import tqdm

    from mmfs.config.align import AlignRequest
    from mmfs.data.images import SkippedFiles
    from mmfs.faces.files import PhotoAligner, collect_photos

    paths = collect_photos(inputs, stdin_lines=None, skipped=SkippedFiles())
    aligner = PhotoAligner(AlignRequest(outdir=folder, size=size), detection)
    results = [aligner.align(p) for p in tqdm(paths, desc="align", unit="img", disable=not progress)]
    if not any(r.crops for r in results):
        first = next((r.error for r in results if r.error), "")
        raise InputError(f"no face found in INPUTS to adapt on ({first}); pass --photos FOLDER of aligned crops")
    return folder


def style_label(options: AdaptOptions) -> str:
    """The label of the style adapted to, as `mmfs stylize` names its outputs: "pop-art", "ref-style"."""
    from mmfs.utils.labels import reference_label, text_label

    return text_label(options.text) if options.text is not None else reference_label(options.ref)


def photos_from_inputs(inputs: Sequence[str]) -> Path:
    """Without --photos, with --aligned: the INPUTS folder of aligned crops; else a one-line why-not."""
    if not inputs:
        raise MMFSError("`mmfs adapt` needs --photos (a folder of FFHQ-aligned face photos to adapt on)")
    if len(inputs) != 1 or not Path(inputs[0]).is_dir():
        raise MMFSError(
            "with --aligned and no --photos, INPUTS must be one folder of aligned crops to adapt on; pass --photos FOLDER"
        )
    return Path(inputs[0])


def adapted_request(
    adapted: Adapted,
    inputs: Sequence[str],
    photos: PhotoOutput,
    faces: FaceDetection | None = None,
    runtime: Runtime | None = None,
) -> StylizeRequest:
    """The request that stylizes `inputs` with the adapted file and the style it was adapted to."""
    options = adapted.options
    style = StyleSource(
        text=[options.text] if options.text is not None else None,
        ref=[Path(options.ref)] if options.ref is not None else None,
        clip_model=options.clip_model,
        clip_weights=Path(options.clip_weights) if options.clip_weights else None,
        clip_tag=options.clip_tag,
    )
    return StylizeRequest(tuple(inputs), StylizerModel(adapted.path), style, photos,
                          faces=faces or FaceDetection(), runtime=runtime or Runtime())  # fmt: skip


def run_adapt(
    cfg,
    out: str | os.PathLike[str],
    *,
    run_dir: str | os.PathLike[str] | None = None,
    externals: dict[str, Any] | None = None,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[Path, Path | None]:
    """Adapt on the shared loop, then write the small `adapted` file `out`.

    The training run (logs, previews, a full checkpoint) goes under `run_dir` when given and is kept;
    otherwise it lives in a temporary folder next to `out` that is deleted afterwards (also when `on_step`
    stops the run, which then writes no `out`).
    Returns `(out, run directory or None)`. Under torchrun every rank trains, rank 0 alone writes `out`,
    and the temporary run is removed only after every rank is done with it (a barrier).
    """
    from mmfs.train.distributed import init_distributed

    out = Path(out)
    d, _ = init_distributed(cfg.loop.device)
    if run_dir is not None:
        run = train(cfg, outdir=run_dir, externals=externals, progress=progress, on_step=on_step)
        if d.is_main:
            save_adapted(run / "final.safetensors", cfg, out)
        d.barrier()
        return out, run
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(d.broadcast_object(tempfile.mkdtemp(prefix=".mmfs-adapt-", dir=out.parent) if d.is_main else None))
    try:
        run = train(cfg, outdir=tmp, externals=externals, progress=progress, on_step=on_step)
        if d.is_main:
            save_adapted(run / "final.safetensors", cfg, out)
        d.barrier()  # no rank reads the run any more (after an error, no barrier: the other ranks may be gone)
    finally:
        if d.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
    return out, None

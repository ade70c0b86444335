"""A `StylizeRequest` run end to end: the body of `mmfs stylize` (and of the INPUTS part of `mmfs adapt`).

    report = stylize(StylizeRequest(("photos/",), StylizerModel(Path("model.safetensors")), StyleSource(seed=5)))

It resolves the inputs, the face detector, the pipeline and the styles (seed / seeds / w-file / CLIP
text or reference through the checkpoint's mapper), saves them with `--save-w`, then stylizes the
photos (`mmfs.inference.files`) or the one video (`mmfs.inference.video`). It prints nothing but its
progress bar: what happened is the returned `StylizeReport` (the `--json` summary).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmfs.config.stylize import StyleSource, StylizeRequest
from mmfs.data.images import SkippedFiles
from mmfs.errors import CheckpointError, InputError
from mmfs.inference.files import InputResult, collect_inputs, stylize_files
from mmfs.inference.models import STYLIZER_MODELS
from mmfs.inference.pipeline import LatentStyles, SeedStyles, Style, StylizePipeline
from mmfs.utils.labels import safe_label


@dataclass
class StylizeReport:
    """What a `stylize` call did; `to_dict()` is the `--json` summary."""

    kind: str | None = None  # None until the styles are resolved; then "styles" (only --save-w), "photos", "video"
    checkpoint: str = ""
    device: str = ""
    dtype: str = ""
    batch_size: int = 0
    styles: list[Style] = field(default_factory=list)
    saved_w: Path | None = None  # where --save-w wrote the styles
    outdir: str = ""
    inputs: list[dict[str, Any]] = field(default_factory=list)  # one InputResult.to_dict() per photo
    skipped_files: SkippedFiles = field(default_factory=SkippedFiles)  # names in the folders that are not photos
    interrupted: bool = False
    video: Any = None  # the VideoSummary of a video run
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0

    @property
    def failures(self) -> list[str]:
        """The error line of every input that failed."""
        return [r["error"] for r in self.inputs if r["status"] == "error"]

    def counts(self) -> dict[str, int]:
        counts = {status: sum(r["status"] == status for r in self.inputs) for status in ("ok", "skipped", "error")}
        counts["outputs"] = sum(len(r["outputs"]) for r in self.inputs)
        counts["faces"] = sum(r["faces"] or 0 for r in self.inputs)
        counts["skipped_files"] = self.skipped_files.count
        return counts

    def to_dict(self) -> dict[str, Any]:
        run = {"checkpoint": self.checkpoint, "device": self.device, "dtype": self.dtype, "batch_size": self.batch_size}
        if self.kind == "video":
            return {**run, "style": self.styles[0].describe(), **self.video.to_dict(),
                    "seconds_total": round(self.seconds, 3)}  # fmt: skip
        return {
            **run, "outdir": self.outdir, "styles": [s.describe() for s in self.styles], "inputs": self.inputs,
            "interrupted": self.interrupted, "skipped_files": self.skipped_files.to_dict(), "counts": self.counts(),
            "seconds": round(self.seconds, 3),
        }  # fmt: skip

    def describe(self) -> str:
        """One line for the terminal."""
        if self.kind == "video":
            return self.video.describe()
        c = self.counts()
        return (
            f"{c['outputs']} file(s) written to {self.outdir} from {c['ok']} photo(s), {c['faces']} face(s);"
            f" {c['skipped']} skipped (outputs exist; --overwrite replaces them), {c['error']} failed;"
            f" {self.seconds:.1f} s"
        )


def stylize(
    request: StylizeRequest,
    *,
    report: StylizeReport | None = None,
    stdin_lines: Iterable[str] | None = None,
    on_result: Callable[[InputResult], None] | None = None,
) -> StylizeReport:
    """Run `request`; returns its report.

    Pass `report` to keep what was done when the run stops early (Ctrl-C, a full disk): it is filled as
    the run goes. `stdin_lines` are the paths the `-` input stands for; `on_result` sees every photo's
    result as it comes (e.g. to show its error at once). A bad photo is reported, not raised.
    """
    report = report if report is not None else StylizeReport()
    if request.video_input is not None:
        return _stylize_video(request, report)
    files = collect_inputs(request.inputs, stdin_lines=stdin_lines, skipped=report.skipped_files)
    if request.inputs and not files:
        also = f" ({report.skipped_files.describe()})" if report.skipped_files.count else ""
        raise InputError(f"no input images found in: {' '.join(request.inputs)}{also}")
    save_w = request.style.save_w
    if save_w is not None and save_w.exists() and not request.photos.overwrite:
        raise InputError(f"{save_w}: already exists; pass --overwrite to replace it")
    detector = None
    if files and not request.photos.aligned:  # fail on missing detector weights before loading the model
        detector = _detector(request)
    pipeline = _pipeline(request, report)
    if save_w is not None:
        _save_styles(save_w, report.styles, pipeline, request)
        report.saved_w = save_w
    if not files:
        report.kind = "styles"
        return report
    report.kind, report.outdir = "photos", str(request.photos.outdir)
    _run_photos(pipeline, files, request, detector, report, on_result)
    return report


def style_source(style: StyleSource, checkpoint: Path, pipeline: StylizePipeline) -> Any:
    """The style source `style` names: SeedStyles, LatentStyles or (CLIP) EmbeddingStyles."""
    if style.source in ("--seed", "--seeds"):
        return SeedStyles(style.seed_list())
    if style.source == "--w":
        return LatentStyles(style.w)
    from mmfs.external.build import build_clip, resolve_clip_tag, resolve_clip_weights
    from mmfs.inference.styles import reference_styles, text_styles
    from mmfs.pretrained import clip_weights

    if getattr(pipeline.model, "clip_mapper", None) is None:  # fail before the slow CLIP load
        raise CheckpointError("--text/--ref need a checkpoint with a CLIP mapper; train one with `mmfs train-mapper`")
    # `--clip-tag` / `--clip-weights`, else those recorded with the checkpoint's mapper for this `--clip-model`
    tag = resolve_clip_tag(style.clip_tag, checkpoint, style.clip_model)
    weights = resolve_clip_weights(style.clip_weights, checkpoint, style.clip_model)
    weights = clip_weights(weights, style.clip_model, tag)  # else the catalogue's CLIP (fetched on first use)
    # `--clip-model tiny` without a file builds a random tiny CLIP of the mapper's size (smoke runs).
    encoder = build_clip(style.clip_model, weights, tag=tag, embed_dim=pipeline.model.cfg.clip_dim,
                         device=pipeline.device)  # fmt: skip
    return text_styles(encoder, style.text) if style.text else reference_styles(encoder, style.ref)


def _detector(request: StylizeRequest, *, video: bool = False) -> Any:
    from mmfs.faces.search import detector_for

    return detector_for(request.faces, video=video, device=request.runtime.device)


def _pipeline(request: StylizeRequest, report: StylizeReport) -> StylizePipeline:
    """The loaded pipeline, with the request's styles resolved into `report.styles`."""
    from mmfs.pretrained import resolve_file
    from mmfs.utils.device import pick_device, set_deterministic

    model, runtime = request.model, request.runtime
    device = pick_device(runtime.device)
    if runtime.deterministic:  # before the model is built (cuBLAS reads its workspace setting once)
        set_deterministic(True)
    batch = model.batch_size or (8 if device.type == "cuda" else 1)
    checkpoint = resolve_file(model.checkpoint, kinds=STYLIZER_MODELS)  # a model name: fetched on first use
    pipeline = StylizePipeline.from_checkpoint(
        checkpoint, device=device, dtype=runtime.dtype, batch_size=batch, noise=model.noise
    )
    report.styles = pipeline.styles(style_source(request.style, checkpoint, pipeline))
    report.checkpoint, report.device, report.dtype, report.batch_size = (
        str(checkpoint), str(device), runtime.dtype, batch,
    )  # fmt: skip
    return pipeline


def _save_styles(path: Path, styles: list[Style], pipeline: StylizePipeline, request: StylizeRequest) -> None:
    import torch

    from mmfs.inference.latents import save_latents

    save_latents(path, torch.stack([s.ws for s in styles]), labels=[s.label for s in styles],
                 seeds=[s.seed for s in styles], config=pipeline.model.cfg,
                 source=f"mmfs stylize {request.style.source} with {request.model.checkpoint}")  # fmt: skip


def _run_photos(
    pipeline: StylizePipeline,
    files: list,
    request: StylizeRequest,
    detector: Any,
    report: StylizeReport,
    on_result: Callable[[InputResult], None] | None,
) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(files), desc="stylize", unit="img", file=sys.stderr, disable=request.runtime.quiet,
               dynamic_ncols=True, smoothing=0.1)  # fmt: skip
    try:
        n_faces = 0
        for result in stylize_files(pipeline, files, report.styles, request.photos, detector=detector):
            report.inputs.append(result.to_dict())
            n_faces += result.faces or 0
            if on_result is not None:
                on_result(result)
            bar.update(1)
            bar.set_postfix(faces=n_faces, refresh=False)
    except KeyboardInterrupt:
        report.interrupted = True
        raise
    finally:
        bar.close()
        report.seconds = time.perf_counter() - report.started


def _stylize_video(request: StylizeRequest, report: StylizeReport) -> StylizeReport:
    """One video, one style: `mmfs.inference.video.stylize_video` (streaming, pasted back, audio kept)."""
    from mmfs.inference.video import SmoothingConfig, stylize_video
    from mmfs.inference.video.formats import OUTPUT_FORMATS

    src = request.video_input
    if not src.is_file():
        raise InputError(f"{src}: no such video file")
    # Frames come upright from the stream's rotation tag; turned retries on every face-less frame would cost 6x.
    detector = _detector(request, video=True)
    pipeline = _pipeline(request, report)
    if len(report.styles) != 1:
        raise InputError(f"a video takes one style; the style source gave {len(report.styles)} (pick one with --seed)")
    style = report.styles[0]
    suffix = src.suffix.lower() if src.suffix.lower() in OUTPUT_FORMATS else ".mp4"  # e.g. .flv in, .mp4 out
    dst = request.video.out or request.photos.outdir / f"{src.stem}_{safe_label(style.label)}{suffix}"
    if dst.exists() and not request.photos.overwrite:
        raise InputError(f"{dst}: already exists; pass --overwrite to replace it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    hold = request.video.hold_frames  # None: the default, a gap of up to 12 missed frames filled in
    report.video = stylize_video(
        src, dst, model=pipeline.model, ws=style.ws[None], detector=detector, batch_size=pipeline.batch_size,
        device=pipeline.device, dtype=pipeline.dtype, feather=request.photos.feather,
        progress=not request.runtime.quiet, noise=pipeline.noise, noise_seed=style.noise_seed,
        smoothing=SmoothingConfig() if hold is None else SmoothingConfig(hold_frames=hold),
        max_frames=request.video.max_frames,
    )  # fmt: skip
    report.kind, report.seconds = "video", time.perf_counter() - report.started
    return report

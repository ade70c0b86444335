"""`mmfs stylize`: stylize every face in photos (files, folders, globs, stdin) with chosen styles."""

from __future__ import annotations

import enum
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from mmfs_cli.common import (
    EXIT_FAILED,
    ClipTag,
    Detector,
    DeviceOpt,
    DtypeOpt,
    OutdirOpt,
    QuietOpt,
    echo_err,
    guarded,
    report_failures,
    stdin_lines,
)

# Every option that picks the styles; exactly one of them must be given (`_one_style_source`).
STYLE_OPTIONS = ("--seed", "--seeds", "--w", "--text", "--ref")
MAX_SEEDS = 10_000


class Ext(str, enum.Enum):
    png = "png"
    jpg = "jpg"
    webp = "webp"


class Noise(str, enum.Enum):
    seeded = "seeded"
    fresh = "fresh"
    zero = "zero"


def parse_seeds(text: str) -> list[int]:
    """'1,2,5-7' -> [1, 2, 5, 6, 7] (order kept, duplicates dropped); BadParameter on anything else."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        try:
            if "-" in part[1:]:
                lo, hi = (int(v) for v in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                if hi - lo >= MAX_SEEDS:
                    raise typer.BadParameter(f"range {part} has more than {MAX_SEEDS} seeds", param_hint="--seeds")
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise typer.BadParameter(f"{part!r} is not a seed or a range like 5-7", param_hint="--seeds") from None
    seeds = list(dict.fromkeys(seeds))
    if len(seeds) > MAX_SEEDS:
        raise typer.BadParameter(f"more than {MAX_SEEDS} seeds", param_hint="--seeds")
    if any(s < 0 or s > 2**63 - 1 for s in seeds):
        raise typer.BadParameter("seeds must be in [0, 2**63 - 1]", param_hint="--seeds")
    return seeds


def _one_style_source(given: dict[str, Any]) -> str:
    """The single style option that was given (name from STYLE_OPTIONS); a usage error otherwise."""
    used = [name for name, value in given.items() if value not in (None, [], ())]
    if len(used) != 1:
        what = "none was given" if not used else f"got {' and '.join(used)}"
        raise typer.BadParameter(f"choose exactly one style source: {', '.join(STYLE_OPTIONS)} ({what})")
    return used[0]


def _style_source(
    option: str, *, seed, seeds, w, text, ref, clip_weights, clip_model, clip_tag, checkpoint, pipeline
) -> Any:
    """The style source of the chosen option: SeedStyles, LatentStyles or (CLIP) EmbeddingStyles."""
    from mmfs.inference.pipeline import LatentStyles, SeedStyles

    if option == "--seed":
        return SeedStyles([seed])
    if option == "--seeds":
        return SeedStyles(parse_seeds(seeds))
    if option == "--w":
        return LatentStyles(w)
    from mmfs.external.build import resolve_clip_tag

    # `--clip-tag`, else the tag recorded with the checkpoint's mapper for this `--clip-model`, else openai
    tag = resolve_clip_tag(clip_tag, checkpoint, clip_model)
    return _clip_source(text, ref, clip_weights, clip_model, tag, pipeline)


def _clip_source(texts: list[str], refs: list[Path], weights: Path | None, model_name: str, tag: str, pipeline) -> Any:
    """`EmbeddingStyles` of `--text` prompts or `--ref` images through the checkpoint's mapper (mmfs.inference.styles)."""
    from mmfs.errors import CheckpointError
    from mmfs.external.build import build_clip
    from mmfs.inference.styles import reference_styles, text_styles

    if getattr(pipeline.model, "clip_mapper", None) is None:  # fail before the slow CLIP load
        raise CheckpointError("--text/--ref need a checkpoint with a CLIP mapper; train one with `mmfs train-mapper`")
    # `--clip-model tiny` builds a random tiny CLIP of the mapper's size (smoke runs); the size is checked.
    encoder = build_clip(model_name, weights, tag=tag, embed_dim=pipeline.model.cfg.clip_dim, device=pipeline.device)
    return text_styles(encoder, texts) if texts else reference_styles(encoder, refs)


def stylize(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Photos: files, folders (recursive), globs, or - to read paths from stdin.", show_default=False
        ),
    ] = None,
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", help="Stylizer checkpoint (.safetensors).")] = ...,
    seed: Annotated[int | None, typer.Option(help="Style: the random style of this seed.", show_default=False)] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Styles: several seeds, e.g. 1,2,5-7 (one output per seed).", show_default=False)
    ] = None,
    w: Annotated[
        Path | None, typer.Option("--w", help="Styles: a saved w+ file (every style in it).", show_default=False)
    ] = None,
    text: Annotated[
        list[str] | None,
        typer.Option(help="Styles: a CLIP text prompt (repeatable); needs a mapper.", show_default=False),
    ] = None,
    ref: Annotated[
        list[Path] | None,
        typer.Option(help="Styles: a CLIP reference image (repeatable); needs a mapper.", show_default=False),
    ] = None,
    clip_weights: Annotated[
        Path | None,
        typer.Option(help="Local CLIP weights for --text/--ref (default: open_clip's cache).", show_default=False),
    ] = None,
    clip_model: Annotated[
        str, typer.Option(help="open_clip model name for --text/--ref, or local-dir:PATH.")
    ] = "ViT-B-32",
    clip_tag: ClipTag = None,
    outdir: OutdirOpt = Path("stylized"),
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Video input only: the output video (default: <outdir>/<stem>_<style><ext>).",
            show_default=False,
        ),
    ] = None,
    paste_back: Annotated[bool, typer.Option(help="Write whole photos with every face stylized in place.")] = False,
    aligned: Annotated[bool, typer.Option(help="Inputs are FFHQ-aligned square crops: skip detection.")] = False,
    size: Annotated[
        int | None, typer.Option(min=8, max=8192, help="Side of saved face crops (default: the model resolution).")
    ] = None,
    detector: Annotated[
        Detector, typer.Option(help="Face detector: dlib (HOG), dlib-cnn, dlib+cnn (HOG, then CNN), or insightface.")
    ] = Detector.dlib,
    detector_model: Annotated[
        Path | None, typer.Option(help="Detector weights: SCRFD .onnx for insightface, or a dlib 68-point .dat.")
    ] = None,
    rotate: Annotated[
        bool,
        typer.Option(
            help="Photos: when no face is found upright, look again on the photo turned 90/180/270 and +-45 degrees."
        ),
    ] = True,
    feather: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Paste-back edge blend, fraction of the crop side.")
    ] = 0.1,
    hold_frames: Annotated[
        int,
        typer.Option(
            min=0,
            max=100,
            help="Video input only: keep a face stylized for up to N frames the detector misses (0: such frames pass through).",
        ),
    ] = 0,
    ext: Annotated[Ext, typer.Option(help="Output format.")] = Ext.png,
    quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG/WebP quality.")] = 95,
    batch_size: Annotated[
        int | None, typer.Option(min=1, max=1024, help="Faces per generator call (default: 1 on CPU, 8 on CUDA).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Background threads decoding and aligning photos.")] = 2,
    noise: Annotated[
        Noise,
        typer.Option(
            help="seeded: the style's noise maps on every face (seed N's for --seed N, seed 0's for --text/--ref"
            " and w rows without a seed); fresh: each face its own maps (from the style's seed and the face's"
            " pixels, still reproducible); zero: no noise."
        ),
    ] = Noise.seeded,
    save_w: Annotated[
        Path | None, typer.Option(help="Also save the styles used to this w+ file (replay them with --w).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace existing outputs (default: keep them, report skipped).")
    ] = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "fp32",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON summary on stdout; messages go to stderr.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Stylize every face in photos or a video: detect, align to FFHQ, stylize, save crops or paste back.

    Outputs: <stem>_face<k>_<style>.<ext> per face, or <stem>_<style>.<ext> with --paste-back or --aligned;
    <style> is seed<N>, a w-file's labels, or the prompt. A video input (.mp4 .mov .mkv .webm .avi .m4v)
    is stylized frame by frame, pasted back, with its frame rate and sound kept (one video, one style).
    Exit codes: 0 all inputs done (existing outputs skipped count as done), 1 some input failed,
    2 usage error, 130 interrupted.

    Example: mmfs stylize photos/ --checkpoint model.safetensors --seed 5 --paste-back --outdir out
    Example: mmfs stylize clip.mp4 --checkpoint model.safetensors --text "pop art" --out clip_popart.mp4
    """
    option = _one_style_source({"--seed": seed, "--seeds": seeds, "--w": w, "--text": text, "--ref": ref})
    if seeds is not None:
        parse_seeds(seeds)  # usage errors before anything is loaded
    if seed is not None and not 0 <= seed <= 2**63 - 1:
        raise typer.BadParameter("must be in [0, 2**63 - 1]", param_hint="--seed")
    if paste_back and aligned:
        raise typer.BadParameter("--paste-back needs face detection; it cannot be used with --aligned")
    if paste_back and size is not None:
        raise typer.BadParameter("--size sets the side of face crops; --paste-back keeps the photo's own size")
    inputs = inputs or []
    if not inputs and save_w is None:
        raise typer.BadParameter("give INPUTS (files, folders, globs or -), or --save-w to only save the styles")
    video = _video_input(inputs, option=option, seeds=seeds, w=w, text=text, ref=ref, aligned=aligned, size=size)
    if video is not None and save_w is not None:
        raise typer.BadParameter("--save-w is for photo runs; save the style in a separate call without the video")
    if out is not None and video is None:
        raise typer.BadParameter("--out names the output of a video input; photos go to --outdir")
    if hold_frames and video is None:
        raise typer.BadParameter("--hold-frames is for video inputs")
    if noise is Noise.fresh and video is not None:
        raise typer.BadParameter("a video keeps one set of noise maps (new ones per frame flicker): use seeded or zero")
    with guarded():
        _run(locals())


def _video_input(inputs: list[str], *, option: str, seeds, w, text, ref, aligned: bool, size) -> Path | None:
    """The video among INPUTS, if any, after the usage checks a video run needs (one video, one style)."""
    from mmfs.inference.video.formats import is_video_path

    videos = [i for i in inputs if i != "-" and is_video_path(i)]
    if not videos:
        return None
    if len(inputs) > 1:
        raise typer.BadParameter("a video is stylized on its own: give one video per call (photos in another call)")
    several = (option == "--seeds" and len(parse_seeds(seeds)) > 1) or len(text or []) > 1 or len(ref or []) > 1
    if several:
        raise typer.BadParameter("a video takes one style: give one --seed, --text or --ref")
    if aligned or size is not None:
        raise typer.BadParameter("--aligned and --size are for photos; a video is always detected and pasted back")
    return Path(videos[0])


def _run(a: dict[str, Any]) -> None:
    """The command body, after usage checks: load, resolve styles, run, report."""
    from tqdm import tqdm

    from mmfs.data.images import SkippedFiles
    from mmfs.errors import InputError
    from mmfs.inference.files import StylizeOptions, collect_inputs, stylize_files
    from mmfs.inference.latents import save_latents
    from mmfs.inference.pipeline import StylizePipeline

    started = time.perf_counter()
    if a["video"] is not None:
        _run_video(a, started)
        return
    skipped = SkippedFiles()
    files = collect_inputs(a["inputs"], stdin_lines=stdin_lines() if "-" in a["inputs"] else None, skipped=skipped)
    if a["inputs"] and not files:
        also = f" ({skipped.describe()})" if skipped.count else ""
        raise InputError(f"no input images found in: {' '.join(a['inputs'])}{also}")
    save_w: Path | None = a["save_w"]
    if save_w is not None and save_w.exists() and not a["overwrite"]:
        raise InputError(f"{save_w}: already exists; pass --overwrite to replace it")
    opts = StylizeOptions(
        outdir=a["outdir"], paste_back=a["paste_back"], aligned=a["aligned"], size=a["size"], ext=a["ext"].value,
        quality=a["quality"], feather=a["feather"], overwrite=a["overwrite"], workers=a["workers"],
    )  # fmt: skip
    face_detector = None
    if files and not a["aligned"]:  # fail on missing detector weights before loading the model
        from mmfs.faces import build_detector

        face_detector = build_detector(a["detector"].value, a["detector_model"], rotate=a["rotate"])
    from mmfs.utils.device import pick_device

    dev = pick_device(a["device"])
    batch = a["batch_size"] or (8 if dev.type == "cuda" else 1)
    pipeline = StylizePipeline.from_checkpoint(
        a["checkpoint"], device=dev, dtype=a["dtype"], batch_size=batch, noise=a["noise"].value
    )
    source = _style_source(a["option"], pipeline=pipeline, **{k: a[k] for k in _SOURCE_ARGS})
    styles = pipeline.styles(source)
    if save_w is not None:
        save_latents(save_w, _stack(styles), labels=[s.label for s in styles], seeds=[s.seed for s in styles],
                     config=pipeline.model.cfg, source=f"mmfs stylize {a['option']} with {a['checkpoint']}")  # fmt: skip
        echo_err(f"saved {len(styles)} style(s) to {save_w}")
    if not files:
        return
    summary: dict[str, Any] = {
        "checkpoint": str(a["checkpoint"]), "outdir": str(opts.outdir), "device": str(dev), "dtype": a["dtype"],
        "batch_size": batch, "styles": [s.describe() for s in styles], "inputs": [], "interrupted": False,
        "skipped_files": skipped.to_dict(),
    }  # fmt: skip
    bar = tqdm(total=len(files), desc="stylize", unit="img", file=sys.stderr, disable=a["quiet"] or not files,
               dynamic_ncols=True, smoothing=0.1)  # fmt: skip
    try:
        n_faces = 0
        for result in stylize_files(pipeline, files, styles, opts, detector=face_detector):
            summary["inputs"].append(result.to_dict())
            n_faces += result.faces or 0
            if result.error:
                tqdm.write(f"error: {result.error}", file=sys.stderr)
            if result.exception is not None:
                import traceback

                traceback.print_exception(result.exception, file=sys.stderr)
            bar.update(1)
            bar.set_postfix(faces=n_faces, refresh=False)
    except KeyboardInterrupt:
        summary["interrupted"] = True
        raise
    finally:
        bar.close()
        _report(summary, time.perf_counter() - started, a["as_json"], a["quiet"], skipped)
    if any(r["status"] == "error" for r in summary["inputs"]):
        raise typer.Exit(EXIT_FAILED)


_SOURCE_ARGS = ("seed", "seeds", "w", "text", "ref", "clip_weights", "clip_model", "clip_tag", "checkpoint")


def _run_video(a: dict[str, Any], started: float) -> None:
    """One video, one style: mmfs.inference.video.stylize_video (streaming, paste-back, audio kept, written atomically)."""
    from mmfs.errors import InputError
    from mmfs.faces import build_detector
    from mmfs.inference.files import safe_label
    from mmfs.inference.pipeline import StylizePipeline
    from mmfs.inference.video import SmoothingConfig, stylize_video
    from mmfs.inference.video.formats import OUTPUT_FORMATS
    from mmfs.utils.device import pick_device

    src: Path = a["video"]
    if not src.is_file():
        raise InputError(f"{src}: no such video file")
    # Frames come upright from the stream's rotation tag; turned retries on every face-less frame would cost 6x.
    face_detector = build_detector(a["detector"].value, a["detector_model"], rotate=False)
    dev = pick_device(a["device"])
    batch = a["batch_size"] or (8 if dev.type == "cuda" else 1)
    pipeline = StylizePipeline.from_checkpoint(
        a["checkpoint"], device=dev, dtype=a["dtype"], batch_size=batch, noise=a["noise"].value
    )
    styles = pipeline.styles(_style_source(a["option"], pipeline=pipeline, **{k: a[k] for k in _SOURCE_ARGS}))
    if len(styles) != 1:
        raise InputError(f"a video takes one style; the style source gave {len(styles)} (pick one with --seed)")
    style = styles[0]
    suffix = src.suffix.lower() if src.suffix.lower() in OUTPUT_FORMATS else ".mp4"  # e.g. .flv in, .mp4 out
    dst: Path = a["out"] or a["outdir"] / f"{src.stem}_{safe_label(style.label)}{suffix}"
    if dst.exists() and not a["overwrite"]:
        raise InputError(f"{dst}: already exists; pass --overwrite to replace it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    summary = stylize_video(
        src, dst, model=pipeline.model, ws=style.ws[None], detector=face_detector, batch_size=batch,
        device=pipeline.device, dtype=pipeline.dtype, feather=a["feather"], progress=not a["quiet"],
        noise=pipeline.noise, noise_seed=style.noise_seed, smoothing=SmoothingConfig(hold_frames=a["hold_frames"]),
    )  # fmt: skip
    if a["as_json"]:
        report = {"checkpoint": str(a["checkpoint"]), "device": str(dev), "dtype": a["dtype"], "batch_size": batch,
                  "style": style.describe(), **summary.to_dict(), "seconds_total": round(time.perf_counter() - started, 3)}  # fmt: skip
        typer.echo(json.dumps(report, indent=2))
    elif not a["quiet"]:
        echo_err(summary.describe())


def _stack(styles: list) -> Any:
    import torch

    return torch.stack([s.ws for s in styles])


def _report(summary: dict[str, Any], seconds: float, as_json: bool, quiet: bool, skipped) -> None:
    """The JSON summary on stdout (with --json), or a summary line and the list of failures on stderr.

    Names in the input folders that are not photos are counted on stderr in both cases (`skipped`)."""
    results = summary["inputs"]
    counts = {status: sum(r["status"] == status for r in results) for status in ("ok", "skipped", "error")}
    counts["outputs"] = sum(len(r["outputs"]) for r in results)
    counts["faces"] = sum(r["faces"] or 0 for r in results)
    counts["skipped_files"] = skipped.count
    summary["counts"] = counts
    summary["seconds"] = round(seconds, 3)
    if skipped.count and not quiet:
        echo_err(skipped.describe())
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    if not quiet and results:
        echo_err(
            f"{counts['outputs']} file(s) written to {summary['outdir']} from {counts['ok']} photo(s), "
            f"{counts['faces']} face(s); {counts['skipped']} skipped (outputs exist; --overwrite replaces them), "
            f"{counts['error']} failed; {seconds:.1f} s"
        )
    report_failures([r["error"] for r in results if r["status"] == "error"])  # even with --quiet


def register(app: typer.Typer) -> None:
    app.command("stylize")(stylize)

"""`mmfs stylize` (and the INPUTS part of `mmfs adapt`): every option declared once, with its checks.

A `StylizeRequest` is one stylize call: the INPUTS plus one group per concern (the model, the styles,
how photos become files, the video-only options, face detection, device and output). Each group checks
its own fields when it is built (`mmfs.config.options.Options`); the request checks the rules between groups (a video takes one style,
video-only options need a video, ...). A failed check is an `OptionError`, a usage error (exit 2) before
anything is loaded. `mmfs.inference.stylize.stylize(request)` runs it.

The names the heavy modules implement (output formats, noise modes, video extensions) are spelled here,
and those modules import them from here, so that `mmfs --help` lists them without importing torch.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mmfs.catalogue import DEFAULT_STYLIZER, MODELS, default_text
from mmfs.config.common import Runtime
from mmfs.config.faces import FaceDetection
from mmfs.config.options import Options, Rule, one_of, one_of_error, option
from mmfs.config.seeds import check_seed, parse_seeds
from mmfs.config.train import CLIP_MODEL_HELP, CLIP_TAG_HELP, CLIP_WEIGHTS_HELP
from mmfs.errors import OptionError

OUTPUT_EXTENSIONS = ("png", "jpg", "webp")
# "seeded": the style's noise maps, the same for every face; "fresh": each face its own maps, drawn from
# `face_noise_seed` (the style's noise seed and the face's pixels), so still reproducible; "zero": none.
NOISE_MODES = ("seeded", "fresh", "zero")
# Inputs PyAV (its own ffmpeg) is asked to decode; a file it cannot read gets one clear line from VideoReader.
VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi",
    ".flv", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".3gp", ".wmv", ".ogv", ".mxf",
)  # fmt: skip
# The style sources: exactly one per call, or none with a model that has its own style (`StylizeRequest`).
STYLE_SOURCES = one_of("seed", "seeds", "w", "text", "ref", what="style source", unless="-c of a zero-shot model")
STYLE_FLAGS = tuple(f"--{name}" for name in STYLE_SOURCES.fields)
MODEL_HELP = (
    "Stylizer: a model name (mmfs: the published multi-modal model, fetched on first use; all: `mmfs models list`)"
    " or a .safetensors file."
)


def is_video_path(path: str | os.PathLike[str]) -> bool:
    """True for the file extensions `mmfs stylize` treats as video."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class StylizerModel(Options):
    """The Stylizer and how it runs: its checkpoint, faces per generator call, noise."""

    checkpoint: Path = option(Path(DEFAULT_STYLIZER), MODEL_HELP, flags=("--checkpoint", "-c"), path=True)
    batch_size: int | None = option(None, "Faces per generator call (default: 1 on CPU, 8 on CUDA).", min=1,
                                    max=1024)  # fmt: skip
    noise: str = option(
        "seeded",
        "seeded: the style's noise maps on every face (seed N's for --seed N, seed 0's for --text/--ref and w rows"
        " without a seed); fresh: each face its own maps (from the style's seed and the face's pixels, still"
        " reproducible); zero: no noise.",
        choices=NOISE_MODES,
    )


@dataclass(frozen=True)
class StyleSource(Options):
    """Which styles: exactly one source (a seed, seeds, a w-file, CLIP prompts or reference images)."""

    rules: ClassVar[tuple[Rule, ...]] = (STYLE_SOURCES,)

    seed: int | None = option(None, "Style: the random style of this seed.", show_default=False)
    seeds: str | None = option(None, "Styles: several seeds, e.g. 1,2,5-7 (one output per seed).", show_default=False)
    w: Path | None = option(None, "Styles: a saved w+ file (every style in it).", flags="--w", path=True,
                            show_default=False)  # fmt: skip
    text: list[str] | None = option(None, "Styles: a CLIP text prompt (repeatable); needs a mapper.",
                                    show_default=False)  # fmt: skip
    ref: list[Path] | None = option(None, "Styles: a CLIP reference image (repeatable); needs a mapper.", path=True,
                                    show_default=False)  # fmt: skip
    clip_weights: Path | None = option(None, "For --text/--ref: " + CLIP_WEIGHTS_HELP, path=True,
                                       show_default=False)  # fmt: skip
    clip_model: str = option("ViT-B-32", "For --text/--ref: " + CLIP_MODEL_HELP)
    clip_tag: str | None = option(None, CLIP_TAG_HELP + " Default: the tag recorded with the mapper, else openai.",
                                  show_default=False)  # fmt: skip
    save_w: Path | None = option(None, "Also save the styles used to this w+ file (replay them with --w).",
                                 path=True)  # fmt: skip

    def __post_init__(self) -> None:
        for name in ("text", "ref"):  # an empty list is "not given"
            value = getattr(self, name)
            object.__setattr__(self, name, list(value) if value else None)
        super().__post_init__()  # the rule: at most one style source here (none: `StylizeRequest` decides)
        if self.seed is not None:
            check_seed(self.seed)
        if self.seeds is not None:
            parse_seeds(self.seeds)

    def _sources(self) -> tuple:
        return tuple(getattr(self, name) for name in STYLE_SOURCES.fields)

    @property
    def source(self) -> str | None:
        """The style option that was given: one of STYLE_FLAGS (None: none yet)."""
        return next((flag for flag, value in zip(STYLE_FLAGS, self._sources(), strict=True) if value is not None), None)

    def seed_list(self) -> list[int]:
        """The seeds of `--seed` / `--seeds` (empty for the other sources)."""
        if self.seeds is not None:
            return parse_seeds(self.seeds)
        return [self.seed] if self.seed is not None else []

    def count(self) -> int | None:
        """How many styles this source gives, when known before a file is read (None for a w-file)."""
        return None if self.w is not None else len(self.seed_list() or self.text or self.ref or ())


@dataclass(frozen=True)
class PhotoOutput(Options):
    """How photos become files (everything but the model and the styles)."""

    outdir: Path = option(Path("stylized"), "Folder for the outputs (created if missing).", flags=("--outdir", "-o"))
    paste_back: bool = option(False, "Write whole photos with every face stylized in place.")
    aligned: bool = option(False, "Inputs are FFHQ-aligned square crops: skip detection.")
    size: int | None = option(None, "Side of saved face crops (default: the model resolution).", min=8, max=8192)
    feather: float = option(0.1, "Paste-back edge blend, fraction of the crop side.", min=0.0, max=0.5)
    ext: str = option("png", "Output format.", choices=OUTPUT_EXTENSIONS)
    quality: int = option(95, "JPEG/WebP quality.", min=1, max=100)
    overwrite: bool = option(False, "Replace existing outputs (default: keep them, report skipped).")
    workers: int = option(2, "Background threads decoding and aligning photos.", min=1, max=64)

    def __post_init__(self) -> None:
        object.__setattr__(self, "outdir", Path(self.outdir))
        super().__post_init__()
        if self.paste_back and self.aligned:
            raise OptionError("paste_back", "needs face detection; it cannot be used with --aligned")
        if self.paste_back and self.size is not None:
            raise OptionError("size", "sets the side of face crops; --paste-back keeps the photo's own size")


@dataclass(frozen=True)
class VideoOptions(Options):
    """Options only a video input takes."""

    out: Path | None = option(None, "Video input only: the output video (default: <outdir>/<stem>_<style><ext>).",
                              path=True, show_default=False)  # fmt: skip
    hold_frames: int | None = option(None, "Video input only: a face the detector misses for up to N frames between "
                                     "two detections is filled in from them (default 12; 0: such frames pass "
                                     "through unstylized).", min=0, max=100, show_default=False)  # fmt: skip
    max_frames: int | None = option(None, "Video input only: stylize at most the first N frames (default: all).",
                                    min=1, show_default=False)  # fmt: skip


@dataclass(frozen=True)
class StylizeRequest:
    """One `mmfs stylize` call: INPUTS (files, folders, globs, `-` for stdin) and the option groups."""

    inputs: tuple[str, ...]
    model: StylizerModel
    style: StyleSource
    photos: PhotoOutput = dataclasses.field(default_factory=PhotoOutput)
    video: VideoOptions = dataclasses.field(default_factory=VideoOptions)
    faces: FaceDetection = dataclasses.field(default_factory=FaceDetection)
    runtime: Runtime = dataclasses.field(default_factory=Runtime)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if self.style.source is None:  # a zero-shot model's own prompt (`-c pop-art`), else a style is needed
            text = default_text(str(self.model.checkpoint))
            if text is None:
                model = MODELS.get(str(self.model.checkpoint))
                hint = f"; {model.name} was adapted to {model.ref}: pass it with --ref" if model and model.ref else ""
                raise one_of_error(self.style, STYLE_SOURCES, hint=hint)
            object.__setattr__(self, "style", dataclasses.replace(self.style, text=[text]))
        if not self.inputs and self.style.save_w is None:
            raise OptionError("", "give INPUTS (files, folders, globs or -), or --save-w to only save the styles")
        if self.video_input is not None:
            self._check_video()
        elif self.video.out is not None:
            raise OptionError("out", "names the output of a video input; photos go to --outdir")
        elif self.video.hold_frames is not None:
            raise OptionError("hold_frames", "is for video inputs")
        elif self.video.max_frames is not None:
            raise OptionError("max_frames", "is for video inputs")

    @property
    def video_input(self) -> Path | None:
        """The video among INPUTS (then it is the only input), else None."""
        videos = [i for i in self.inputs if i != "-" and is_video_path(i)]
        return Path(videos[0]) if videos else None

    def _check_video(self) -> None:
        """One video, one style, pasted back: what a video run refuses."""
        if len(self.inputs) > 1:
            raise OptionError("", "a video is stylized on its own: give one video per call (photos in another call)")
        count = self.style.count()
        if count is not None and count > 1:
            raise OptionError(self.style.source[2:], "a video takes one style: give one --seed, --text or --ref")
        if self.photos.aligned or self.photos.size is not None:
            what = "aligned" if self.photos.aligned else "size"
            raise OptionError(what, "is for photos; a video is always detected and pasted back")
        if self.style.save_w is not None:
            raise OptionError("save_w", "is for photo runs; save the style in a separate call without the video")
        if self.model.noise == "fresh":
            raise OptionError(
                "noise", "a video keeps one set of noise maps (new ones per frame flicker): use seeded or zero"
            )


@dataclass(frozen=True)
class AdaptRun(Options):
    """`mmfs adapt`: where the adapted file and the training run go (the stage's options: `AdaptOptions`)."""

    out: Path | None = option(None, "Adapted checkpoint to write (default: adapted-<style>.safetensors).", path=True,
                              show_default=False)  # fmt: skip
    overwrite: bool = option(False, "Replace an existing --out file and existing stylized outputs.")
    run_dir: Path | None = option(None, "Keep the training run (log, previews, checkpoint) under this folder.",
                                  path=True, show_default=False)  # fmt: skip

"""What each tab of the page runs: its values -> the request objects of `mmfs stylize` / `mmfs adapt` -> the core.

Nothing here stylizes: a photo or a video becomes a `StylizeRequest` that `mmfs.inference.stylize`
runs exactly as for the command line, an Adapt click becomes the `AdaptOptions` that
`mmfs.train.adapt.adapt` runs. What comes back is read from the report into what the page shows.
Every user-caused problem is an `MMFSError` with one line, which the page shows as a message.
No Gradio here, so these run (and are tested) without it.
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmfs.config.common import Runtime
from mmfs.config.stylize import (
    PhotoOutput,
    StyleSource,
    StylizeRequest,
    StylizerModel,
    VideoOptions,
    is_video_path,
)
from mmfs.errors import InputError, MMFSError
from mmfs.web.models import ModelEntry

STYLE_KINDS = ("seed", "text", "reference")
GRID_SEEDS = 8  # the seed grid: this many seeds from the chosen one on
IDENTITY_CROP = 256  # side of the aligned crops a pasted-back photo is measured on (the metric resizes to its own)


@dataclass(frozen=True)
class StyleChoice:
    """The style a visitor chose: a seed, a text prompt or a reference image (the `mmfs stylize` style flags)."""

    kind: str = "seed"
    seed: int = 0
    text: str = ""
    ref: Path | None = None

    def options(self, model: ModelEntry, *, count: int = 1) -> StyleSource:
        """The `StyleSource` of this choice (`count` seeds from `seed` on for a seed grid)."""
        if self.kind == "seed":
            seeds = f"{self.seed}-{self.seed + count - 1}" if count > 1 else None
            return StyleSource(seed=None if seeds else int(self.seed), seeds=seeds)
        clip = {"clip_model": model.clip_model, "clip_weights": model.clip_weights}
        if self.kind == "text":
            if not self.text.strip():
                raise InputError("type a style prompt, e.g. pop art")
            return StyleSource(text=[self.text.strip()], **clip)
        if self.kind == "reference":
            if self.ref is None:
                raise InputError("upload a style reference image")
            return StyleSource(ref=[Path(self.ref)], **clip)
        raise InputError(f"unknown style kind {self.kind!r}; choose one of {', '.join(STYLE_KINDS)}")


@dataclass(frozen=True)
class Settings:
    """What the server decides for every job: device, noise, and where results go."""

    workdir: Path
    device: str = "auto"
    noise: str = "seeded"

    def job_dir(self) -> Path:
        """A new folder of its own for one job's outputs."""
        root = self.workdir / "jobs"
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="job-", dir=root))


@dataclass
class PhotoResult:
    """A stylized photo: the output files with their captions, faces found, identity distances per face."""

    outputs: list[tuple[Path, str]]
    faces: int
    distances: list[float] | None = None


def stylize_photo(
    settings: Settings,
    model: ModelEntry,
    photo: Path | None,
    style: StyleChoice,
    *,
    paste_back: bool = True,
    aligned: bool = False,
    grid: bool = False,
    identity: Callable[[Path, StylizeRequest, dict[str, Any]], list[float]] | None = None,
) -> PhotoResult:
    """One photo through `mmfs stylize` (one style, or `GRID_SEEDS` seeds with `grid`); its outputs.

    `identity`, given, measures the faces of the photo against the outputs (see `Identity`).
    """
    if photo is None:
        raise InputError("upload a photo (or take one with the webcam) first")
    photo = Path(photo)
    if is_video_path(photo):
        raise InputError(f"{photo.name}: a video; use the Video tab")
    request = _checked(lambda: StylizeRequest(
        (str(photo),),
        StylizerModel(Path(model.checkpoint), noise=settings.noise),
        style.options(model, count=GRID_SEEDS if grid else 1),
        PhotoOutput(outdir=settings.job_dir(), paste_back=paste_back and not aligned, aligned=aligned,
                       overwrite=True, workers=1),
        runtime=Runtime(device=settings.device, quiet=True),
    ))  # fmt: skip
    result = _run(request, photo)
    outputs = [(Path(o["path"]), _caption(o)) for o in result["outputs"]]
    distances = identity(photo, request, result) if identity is not None and not grid else None
    return PhotoResult(outputs, result["faces"] or 0, distances)


def stylize_video(
    settings: Settings, model: ModelEntry, video: Path | None, style: StyleChoice, max_frames: int
) -> tuple[Path, str]:
    """One video through `mmfs stylize` (pasted back, sound kept, the first `max_frames` frames); (file, summary)."""
    if video is None:
        raise InputError("upload a video first")
    video = Path(video)
    if not is_video_path(video):
        raise InputError(f"{video.name}: not a video file (.mp4, .mov, .mkv, .webm, .avi, ...)")
    outdir = settings.job_dir()
    request = _checked(lambda: StylizeRequest(
        (str(video),),
        StylizerModel(Path(model.checkpoint), noise="zero" if settings.noise == "fresh" else settings.noise),
        style.options(model),
        PhotoOutput(outdir=outdir, overwrite=True),
        video=VideoOptions(max_frames=int(max_frames)),
        runtime=Runtime(device=settings.device),  # its progress bar is what the page follows
    ))  # fmt: skip
    from mmfs.inference.stylize import stylize

    try:
        report = stylize(request)
    except MMFSError as exc:
        raise InputError(_clean(str(exc), video.parent)) from None
    return Path(report.video.output), _clean(report.video.describe(), video.parent, outdir)


@dataclass(frozen=True)
class AdaptRecipe:
    """How the Adapt tab adapts: the loop settings and stage options besides the style (the demo's with --demo).

    `make_photos`, given, writes the photos folder on the first adapt (the demo's synthetic faces), so
    a page that never adapts never pays for them.
    """

    photos: Path | None
    dino: str = "dino_vitb8"
    steps: int = 200
    loop: tuple[tuple[str, Any], ...] = ()  # further loop settings (lr, batch_size, ...)
    options: tuple[tuple[str, Any], ...] = ()  # further AdaptOptions fields (structure, ...)
    make_photos: Callable[[Path], None] | None = None
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, compare=False, repr=False)

    @classmethod
    def demo(cls, photos: Path, make_photos: Callable[[Path], None] | None = None) -> AdaptRecipe:
        """The demo's adapt recipe (`mmfs.demo.run.FULL`): its steps, learning rate, batch, EMA, structure weight."""
        from mmfs.demo.run import FULL

        steps = FULL.adapt_steps
        loop = {"lr": FULL.adapt_lr, "batch_size": FULL.batch_size, "ema_decay": 0.5 ** (10 / steps), "workers": 0}
        return cls(photos, "tiny", steps, tuple(loop.items()), (("structure", FULL.adapt_structure),), make_photos)

    def photo_folder(self) -> Path:
        """The folder of aligned photos to adapt on (written first if it is made on demand)."""
        if self.photos is None:
            raise InputError("adapting needs FFHQ-aligned face photos: start the page with --adapt-photos FOLDER")
        with self._lock:
            if self.make_photos is not None and not self.photos.is_dir():
                self.make_photos(self.photos)
        return self.photos


def adapt_style(
    settings: Settings,
    model: ModelEntry,
    style: StyleChoice,
    recipe: AdaptRecipe,
    *,
    steps: int | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> ModelEntry:
    """`mmfs adapt` of `model` to a text or reference style; the adapted model, ready for the model list.

    `on_step(step, total)` follows the run; an exception raised in it cancels the run (no file is written).
    """
    from mmfs.config.stylize import AdaptRun
    from mmfs.config.train import AdaptOptions
    from mmfs.train.adapt import adapt, style_label

    if style.kind not in ("text", "reference"):
        raise InputError("adapt to a text prompt or a reference image (a seed is already one of the model's styles)")
    given = style.options(model)  # the same checks as for stylizing (a prompt typed, a reference uploaded)
    try:
        options = AdaptOptions(
            checkpoint=model.checkpoint, photos=str(recipe.photo_folder()), text=given.text[0] if given.text else None,
            ref=str(given.ref[0]) if given.ref else None, clip_model=model.clip_model,
            clip_weights=str(model.clip_weights) if model.clip_weights else None, dino=recipe.dino,
            **dict(recipe.options),
        )  # fmt: skip
    except ValueError as exc:
        raise InputError(str(exc)) from None
    label = style_label(options)
    out = settings.workdir / "models" / f"{Path(model.name).name}-{label}.safetensors"
    loop = {"steps": int(steps or recipe.steps), "device": settings.device, "checkpoint_every": 0,
            "preview_every": 0, **dict(recipe.loop)}  # fmt: skip
    adapted = adapt(options, loop, AdaptRun(out=out, overwrite=True), progress=False, on_step=on_step)
    return dataclasses.replace(model, name=f"{model.name}-{label}", checkpoint=str(adapted.path))


class Identity:
    """The identity distance of each face to its stylization, when the metric's weights are present.

    ArcFace with an ONNX file, else dlib's offline descriptor (`mmfs.inference.metrics.identity`).
    `unavailable` says why not when neither can be loaded; the network is loaded once, on first use.
    """

    def __init__(self, arcface: Path | None = None) -> None:
        self.arcface, self.encoder, self.unavailable = arcface, None, None

    @property
    def name(self) -> str:
        return self.encoder.name if self.encoder is not None else ""

    def __call__(self, photo: Path, request: StylizeRequest, result: dict[str, Any]) -> list[float] | None:
        from mmfs.data.images import load_image
        from mmfs.inference.metrics.identity import build_identity_encoder, face_distances

        if self.unavailable is not None:
            return None
        if self.encoder is None:
            try:
                self.encoder = build_identity_encoder(self.arcface)
            except MMFSError as exc:
                self.unavailable = str(exc)
                return None
        image = load_image(photo)
        faces, stylized = None, [load_image(o["path"]) for o in result["outputs"]]
        side = stylized[0].shape[0]
        if not request.photos.aligned:
            from mmfs.faces import build_detector

            detector = build_detector(request.faces.detector, request.faces.detector_model, rotate=request.faces.rotate)
            faces = detector.detect(image)
            if request.photos.paste_back:
                stylized, side = stylized[0], IDENTITY_CROP
        return face_distances(self.encoder, image, stylized, faces, side)


def _run(request: StylizeRequest, photo: Path) -> dict[str, Any]:
    """Run a one-photo request; its result entry, or its error as an `InputError`."""
    from mmfs.inference.stylize import stylize

    try:
        report = stylize(request)
    except MMFSError as exc:
        raise InputError(_clean(str(exc), photo.parent)) from None
    result = report.inputs[0]
    if result["status"] == "error":
        raise InputError(_clean(result["error"], photo.parent))
    return result


def _checked(build: Callable[[], StylizeRequest]) -> StylizeRequest:
    """The request, or its option error as one line (the page shows it like any other)."""
    try:
        return build()
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _clean(message: str, *folders: Path) -> str:
    """A message without the server's folders: the visitor knows the files by their own names."""
    for folder in folders:
        message = message.replace(f"{folder}/", "")
    return message


def _caption(output: dict[str, Any]) -> str:
    face = f"face {output['face']}, " if output.get("face") is not None else ""
    return f"{face}{output['style']}"

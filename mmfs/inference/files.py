"""Photos on disk -> stylized files: the engine behind `mmfs stylize`.

Background threads decode, detect and align the next photos while the generator works on the
current batch; another thread pastes faces back and encodes/saves the outputs. Results come back
in input order, one `InputResult` per input, whatever failed: a bad file never stops the run.
Outputs are written atomically (temp name + rename), so an interrupted run leaves only whole files.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmfs.config.stylize import PhotoOutput
from mmfs.data.images import SkippedFiles, expand_inputs, load_image, save_image, to_tensor, to_uint8
from mmfs.errors import InputError, MMFSError, NoFaceError, OutputError
from mmfs.inference.pipeline import Style, StylizePipeline
from mmfs.utils.labels import safe_label

TIMED_STEPS = ("decode", "detect", "align", "generator", "paste", "save")


@dataclass(frozen=True)
class InputFile:
    """One input photo and the sub-folder of the output dir its results go to (mirrors folder inputs)."""

    path: Path
    subdir: Path = Path()


def collect_inputs(
    items: Iterable[str], *, stdin_lines: Iterable[str] | None = None, skipped: SkippedFiles | None = None
) -> list[InputFile]:
    """Files, folders (recursive, tree kept under the output dir), globs and `-` (stdin paths), deduplicated.

    What folders and globs hold besides photos is counted in `skipped` (by reason), if given.
    """
    stdin = list(stdin_lines or ())
    seen: set[Path] = set()
    out = []
    for item in items:
        root = Path(item)
        is_dir = item != "-" and root.is_dir()
        for path in expand_inputs([item], stdin_lines=stdin, skipped=skipped):
            try:
                key = path.resolve()
            except (OSError, RuntimeError):  # a link loop: kept, and reported when it is read
                key = path.absolute()
            if key not in seen:
                seen.add(key)
                out.append(InputFile(path, path.parent.relative_to(root) if is_dir else Path()))
    return out


@dataclass
class InputResult:
    """What happened to one input; `to_dict()` is its entry in the `--json` summary."""

    input: str
    status: str = "ok"  # "ok", "skipped" (every output existed) or "error"
    faces: int | None = None
    boxes: list[list[float]] = field(default_factory=list)  # face boxes x0, y0, x1, y1 in the photo
    rotations: list[float] = field(default_factory=list)  # per face: degrees the photo was turned to find it
    outputs: list[dict[str, Any]] = field(default_factory=list)  # {"path", "style", "face"}
    skipped: list[str] = field(default_factory=list)  # outputs that existed (no --overwrite)
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False)  # non-MMFSError: a bug, keep it

    def to_dict(self) -> dict[str, Any]:
        keys = ("input", "status", "faces", "boxes", "rotations", "outputs", "skipped", "error")
        return {k: getattr(self, k) for k in keys}

    def fail(self, exc: BaseException, path: Path) -> None:
        self.status, self.outputs = "error", []
        message = str(exc) if isinstance(exc, MMFSError) else f"internal error: {type(exc).__name__}: {exc}"
        self.error = message if message.startswith(str(path)) else f"{path}: {message}"
        if not isinstance(exc, MMFSError):
            self.exception = exc


def output_path(opts: PhotoOutput, item: InputFile, style: Style, face: int | None) -> Path:
    """`<stem>_face<i>_<style>.<ext>` for crops, `<stem>_<style>.<ext>` for paste-back / aligned inputs."""
    name = item.path.stem + (f"_face{face}" if face is not None else "") + f"_{safe_label(style.label)}"
    return opts.outdir / item.subdir / f"{name}.{opts.ext}"


class _Stats:
    """Seconds per stage, summed over threads (stages overlap, so the sum exceeds wall time)."""

    def __init__(self, target: dict[str, float] | None) -> None:
        self.target, self.lock = target, threading.Lock()

    def add(self, stage: str, start: float) -> None:
        if self.target is not None:
            with self.lock:
                self.target[stage] = self.target.get(stage, 0.0) + time.perf_counter() - start


@dataclass(eq=False)
class _Item:
    """An input in flight: its prepared faces, the generator jobs still open, the stylized results."""

    file: InputFile
    result: InputResult
    prep: Future | None = None
    image: np.ndarray | None = None
    aligned: list[Any] = field(default_factory=list)  # AlignedFace per face (None entries for --aligned)
    crops: list[Any] = field(default_factory=list)  # [3, R, R] tensors
    targets: list[tuple[int, int | None, Path]] = field(default_factory=list)  # (style index, face, output path)
    jobs: list[tuple[int, int]] = field(default_factory=list)  # generator jobs (face, style index)
    done: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    finish: Future | None = None


# dlib's HOG detector and shape predictor keep scratch buffers: two threads inside them at once return
# garbage faces. Detection is therefore serialised; decoding and alignment still run in parallel.
_DETECT_LOCK = threading.Lock()


def _prepare(file: InputFile, opts: PhotoOutput, detector: Any, resolution: int, stats: _Stats) -> tuple:
    """Worker thread: decode the photo, find and align its faces (or take it as one aligned crop)."""
    from mmfs.faces import align_face

    start = time.perf_counter()
    image = load_image(file.path)
    stats.add("decode", start)
    if opts.aligned:
        h, w = image.shape[:2]
        if h != w:
            raise InputError(f"{file.path}: --aligned expects square FFHQ-aligned crops, got {w}x{h}")
        start = time.perf_counter()
        crop = image if h == resolution else np.array(Image.fromarray(image).resize((resolution,) * 2, Image.LANCZOS))
        stats.add("align", start)
        return None, [None], [to_tensor(crop)]
    with _DETECT_LOCK:
        start = time.perf_counter()
        faces = detector.detect(image)
        stats.add("detect", start)
    if not faces:
        raise NoFaceError(
            f"{file.path}: no face found (try --detector dlib+cnn or insightface, or --aligned for aligned crops)"
        )
    start = time.perf_counter()
    aligned = [align_face(image, face, resolution) for face in faces]
    crops = [to_tensor(a.image) for a in aligned]
    stats.add("align", start)
    return (image if opts.paste_back else None), aligned, crops


def _finish(item: _Item, styles: Sequence[Style], opts: PhotoOutput, resolution: int, stats: _Stats) -> None:
    """Saver thread: paste faces back (or resize crops) and write every output atomically."""
    from mmfs.faces import paste_back

    for s, face, path in item.targets:
        if opts.paste_back:
            start = time.perf_counter()
            image = item.image
            for f, aligned in enumerate(item.aligned):
                image = paste_back(image, item.done[(f, s)], aligned, feather=opts.feather)
            stats.add("paste", start)
        else:
            image = item.done[(face or 0, s)]
            if opts.size is not None and opts.size != resolution:
                image = np.asarray(Image.fromarray(image).resize((opts.size,) * 2, Image.LANCZOS))
        start = time.perf_counter()
        save_image(image, path, quality=opts.quality)
        stats.add("save", start)
        item.result.outputs.append({"path": str(path), "style": styles[s].label, "face": face})
    item.image, item.crops, item.done = None, [], {}  # free memory early


def stylize_files(
    pipeline: StylizePipeline,
    inputs: Sequence[InputFile],
    styles: Sequence[Style],
    opts: PhotoOutput,
    *,
    detector: Any = None,
    stats: dict[str, float] | None = None,
) -> Iterator[InputResult]:
    """Stylize every input with every style; yields one result per input, in input order.

    `detector` (from `mmfs.faces.build_detector`) is needed unless `opts.aligned`. `stats`, if given,
    receives the seconds spent per stage (`TIMED_STEPS`).
    """
    if not styles:
        raise ValueError("need at least one style")
    labels = [safe_label(s.label) for s in styles]
    if len(set(labels)) < len(labels):
        raise ValueError(f"two styles would write the same files: labels {labels}")
    if detector is None and not opts.aligned:
        raise ValueError("a face detector is needed unless the inputs are aligned")
    res, timer = pipeline.resolution, _Stats(stats)
    prep_pool = ThreadPoolExecutor(opts.workers, thread_name_prefix="mmfs-prep")
    save_pool = ThreadPoolExecutor(1, thread_name_prefix="mmfs-save")
    claimed: dict[Path, str] = {}  # output path -> input that produces it (two inputs, same name)
    window = max(2 * opts.workers, 2 * pipeline.batch_size)
    pending = deque(inputs)
    prepping: deque[_Item] = deque()  # submitted to prep_pool, in order
    order: deque[_Item] = deque()  # every input not yet yielded, in order
    queue: list[tuple[_Item, int, int]] = []  # generator jobs (item, face, style index)
    clean = False

    def plan(item: _Item, n_faces: int) -> None:
        """Output files still to write (existing ones are skipped) and the generator jobs they need."""
        for s, style in enumerate(styles):
            for face in [None] if opts.paste_back or opts.aligned else range(n_faces):
                path = output_path(opts, item.file, style, face)
                if not opts.overwrite and path.exists():
                    item.result.skipped.append(str(path))
                    continue
                owner = claimed.setdefault(path, str(item.file.path))
                if owner != str(item.file.path):
                    raise InputError(f"{item.file.path}: output {path} would overwrite the result of {owner}")
                item.targets.append((s, face, path))
                item.jobs += [(f, s) for f in range(n_faces)] if opts.paste_back else [(face or 0, s)]

    def run_batch(jobs: list[tuple[_Item, int, int]]) -> None:
        import torch

        start = time.perf_counter()
        out = pipeline(torch.stack([it.crops[f] for it, f, _ in jobs]), [styles[s] for _, _, s in jobs])
        timer.add("generator", start)
        for (it, f, s), img in zip(jobs, to_uint8(out), strict=True):
            it.done[(f, s)] = img
            if len(it.done) == len(it.jobs) and it.finish is None:
                it.finish = save_pool.submit(_finish, it, styles, opts, res, timer)

    def ready(item: _Item) -> bool:
        return item.result.status != "ok" or (item.finish is not None and item.finish.done())

    def settle(item: _Item) -> InputResult:
        if item.finish is not None and item.result.status == "ok":
            try:
                item.finish.result()
            except OutputError:
                raise  # disk full, read-only, no permission: every later output would fail the same way
            except Exception as exc:  # noqa: BLE001 - any other failure is this input's error
                item.result.fail(exc, item.file.path)
        if item.result.status == "ok" and not item.result.outputs and item.result.skipped:
            item.result.status = "skipped"
        return item.result

    try:
        while pending or prepping or queue:
            while pending and len(prepping) < window:
                file = pending.popleft()
                item = _Item(file, InputResult(str(file.path)))
                order.append(item)
                if (opts.paste_back or opts.aligned) and not opts.overwrite:
                    # Names are known before decoding: a resumed run skips finished photos at once.
                    paths = [output_path(opts, item.file, st, None) for st in styles]
                    if all(p.exists() for p in paths):
                        item.result.status, item.result.skipped = "skipped", [str(p) for p in paths]
                        continue
                item.prep = prep_pool.submit(_prepare, item.file, opts, detector, res, timer)
                prepping.append(item)
            if prepping:
                item = prepping.popleft()
                try:
                    item.image, item.aligned, item.crops = item.prep.result()
                    if not opts.aligned:
                        item.result.faces = len(item.aligned)
                        item.result.boxes = [[round(float(v), 1) for v in a.face.box] for a in item.aligned]
                        item.result.rotations = [a.face.rotation for a in item.aligned]
                    else:
                        item.result.faces = 1
                    plan(item, len(item.crops))
                except Exception as exc:  # noqa: BLE001 - any failure on one input is reported, not fatal
                    item.result.fail(exc, item.file.path)
                item.prep = None
                if item.result.status == "ok":
                    if item.jobs:
                        queue.extend((item, f, s) for f, s in item.jobs)
                    else:
                        item.image = None
                        item.result.status = "skipped"
            # Full batches as soon as they fill; the remainder once no more input is coming.
            while len(queue) >= pipeline.batch_size or (queue and not pending and not prepping):
                batch, queue = queue[: pipeline.batch_size], queue[pipeline.batch_size :]
                run_batch(batch)
            while order and ready(order[0]):
                yield settle(order.popleft())
        while order:
            item = order.popleft()
            if item.finish is not None:
                item.finish.exception()  # wait
            yield settle(item)
        clean = True
    finally:
        # On an interrupt, drop queued work at once; a save already running (well under a second)
        # finishes its atomic rename before we return, so no temp file is left behind.
        prep_pool.shutdown(wait=clean, cancel_futures=not clean)
        save_pool.shutdown(wait=True, cancel_futures=not clean)


def stage_shares(stats: dict[str, float]) -> dict[str, float]:
    """Each stage's share of the summed stage time, for reports."""
    total = sum(stats.get(s, 0.0) for s in TIMED_STEPS) or 1.0
    return {s: stats.get(s, 0.0) / total for s in TIMED_STEPS}

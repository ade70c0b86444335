"""Photos on disk -> stylized files: the engine behind `mmfs stylize`.

Background threads decode, detect and align the next photos while the generator works on the
current batch; another thread pastes faces back and encodes/saves the outputs (`BatchScheduler`; its
parts `planned_outputs`, `finished_before` and `JobQueue` each read alone). Results come back in input
order, one `InputResult` per input, whatever failed: a bad file never stops the run.
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
class InFlight:
    """An input between admission and its result: its prepared faces, the outputs it writes (`targets`), the
    generator jobs they need, the stylized faces done so far and the saver's future."""

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


def _finish(item: InFlight, styles: Sequence[Style], opts: PhotoOutput, resolution: int, stats: _Stats) -> None:
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


def planned_outputs(
    item: InFlight, n_faces: int, styles: Sequence[Style], opts: PhotoOutput, claimed: dict[Path, str]
) -> None:
    """Fill `item.targets` (the output files still to write; existing ones go to `result.skipped`) and
    `item.jobs` (the generator jobs they need). `claimed` maps each output path to the input that writes it:
    two inputs that would write one file (x.png and x.jpg) are an InputError for the second, not an overwrite."""
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


def finished_before(file: InputFile, styles: Sequence[Style], opts: PhotoOutput) -> list[Path] | None:
    """The outputs of a photo whose names are known before it is decoded (one per style with --paste-back or
    --aligned), when every one exists and --overwrite is off: a resumed run skips it at once. Else None."""
    if not (opts.paste_back or opts.aligned) or opts.overwrite:
        return None
    paths = [output_path(opts, file, style, None) for style in styles]
    return paths if all(p.exists() for p in paths) else None


class JobQueue:
    """Generator jobs `(item, face, style index)` waiting for a batch: full batches as soon as they fill,
    the remainder once no more input is coming."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size, self.jobs = batch_size, deque()

    def add(self, item: InFlight) -> None:
        self.jobs.extend((item, f, s) for f, s in item.jobs)

    def batches(self, *, last: bool) -> Iterator[list[tuple[InFlight, int, int]]]:
        while len(self.jobs) >= self.batch_size or (self.jobs and last):
            yield [self.jobs.popleft() for _ in range(min(self.batch_size, len(self.jobs)))]

    def __len__(self) -> int:
        return len(self.jobs)


class BatchScheduler:
    """The pipeline of `stylize_files`: each input goes prepare (worker threads: decode, detect, align) ->
    plan (its output files) -> generate (batches across inputs, this thread) -> finish (the saver thread:
    paste back, save) -> settle (its `InputResult`), and results leave in input order.

    At most `window` inputs are prepared ahead, so memory stays bounded however many inputs there are.
    """

    def __init__(
        self, pipeline: StylizePipeline, styles: Sequence[Style], opts: PhotoOutput, detector: Any, stats: _Stats
    ) -> None:
        self.pipeline, self.styles, self.opts, self.detector, self.stats = pipeline, styles, opts, detector, stats
        self.window = max(2 * opts.workers, 2 * pipeline.batch_size)
        self.prep_pool = ThreadPoolExecutor(opts.workers, thread_name_prefix="mmfs-prep")
        self.save_pool = ThreadPoolExecutor(1, thread_name_prefix="mmfs-save")
        self.claimed: dict[Path, str] = {}  # output path -> the input that writes it
        self.pending: deque[InputFile] = deque()  # not yet submitted
        self.prepping: deque[InFlight] = deque()  # submitted to the prep pool, in order
        self.order: deque[InFlight] = deque()  # every input not yet yielded, in order
        self.queue = JobQueue(pipeline.batch_size)

    def run(self, inputs: Iterable[InputFile]) -> Iterator[InputResult]:
        """One result per input, in input order; the pools are shut down however the caller stops."""
        self.pending.extend(inputs)
        clean = False
        try:
            while self.pending or self.prepping or self.queue:
                self.admit()
                if self.prepping:
                    self.receive(self.prepping.popleft())
                for batch in self.queue.batches(last=not self.pending and not self.prepping):
                    self.generate(batch)
                while self.order and self.ready(self.order[0]):
                    yield self.settle(self.order.popleft())
            while self.order:
                item = self.order.popleft()
                if item.finish is not None:
                    item.finish.exception()  # wait for its saves
                yield self.settle(item)
            clean = True
        finally:
            # On an interrupt, drop queued work at once; a save already running (well under a second)
            # finishes its atomic rename before we return, so no temp file is left behind.
            self.prep_pool.shutdown(wait=clean, cancel_futures=not clean)
            self.save_pool.shutdown(wait=True, cancel_futures=not clean)

    def admit(self) -> None:
        """Submit inputs to the prep pool until `window` are in flight (finished ones are skipped at once)."""
        while self.pending and len(self.prepping) < self.window:
            file = self.pending.popleft()
            item = InFlight(file, InputResult(str(file.path)))
            self.order.append(item)
            done = finished_before(file, self.styles, self.opts)
            if done is not None:
                item.result.status, item.result.skipped = "skipped", [str(p) for p in done]
                continue
            res = self.pipeline.resolution
            item.prep = self.prep_pool.submit(_prepare, file, self.opts, self.detector, res, self.stats)
            self.prepping.append(item)

    def receive(self, item: InFlight) -> None:
        """Take an input's prepared faces (waiting for them), record them, plan its outputs, queue its jobs."""
        result = item.result
        try:
            item.image, item.aligned, item.crops = item.prep.result()
            if self.opts.aligned:
                result.faces = 1
            else:
                result.faces = len(item.aligned)
                result.boxes = [[round(float(v), 1) for v in a.face.box] for a in item.aligned]
                result.rotations = [a.face.rotation for a in item.aligned]
            planned_outputs(item, len(item.crops), self.styles, self.opts, self.claimed)
        except Exception as exc:  # noqa: BLE001 - any failure on one input is reported, not fatal
            result.fail(exc, item.file.path)
        item.prep = None
        if result.status == "ok":
            if item.jobs:
                self.queue.add(item)
            else:  # every output existed
                item.image, result.status = None, "skipped"

    def generate(self, batch: list[tuple[InFlight, int, int]]) -> None:
        """One generator call over faces of several inputs; an input whose jobs are all done goes to the saver."""
        import torch

        start = time.perf_counter()
        out = self.pipeline(torch.stack([it.crops[f] for it, f, _ in batch]), [self.styles[s] for _, _, s in batch])
        self.stats.add("generator", start)
        for (it, f, s), img in zip(batch, to_uint8(out), strict=True):
            it.done[(f, s)] = img
            if len(it.done) == len(it.jobs) and it.finish is None:
                res = self.pipeline.resolution
                it.finish = self.save_pool.submit(_finish, it, self.styles, self.opts, res, self.stats)

    @staticmethod
    def ready(item: InFlight) -> bool:
        return item.result.status != "ok" or (item.finish is not None and item.finish.done())

    @staticmethod
    def settle(item: InFlight) -> InputResult:
        """The input's final result: its saves' outcome (a full disk stops the run), "skipped" if nothing was new."""
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
    return BatchScheduler(pipeline, styles, opts, detector, _Stats(stats)).run(inputs)


def stage_shares(stats: dict[str, float]) -> dict[str, float]:
    """Each stage's share of the summed stage time, for reports."""
    total = sum(stats.get(s, 0.0) for s in TIMED_STEPS) or 1.0
    return {s: stats.get(s, 0.0) / total for s in TIMED_STEPS}

"""`mmfs evaluate`: stream photos through the stylizer under random styles and fold the outputs into metrics.

Protocol (paper §4.1-4.2: "10,000 randomly chosen FFHQ images"; docs/evaluate.md). The P photos are
the image files under a folder, sorted by path, then put in a random order `photo_order(seed, P)`;
output i (i = 0 .. n-1) stylizes photo `order[i mod P]` (n distinct photos drawn at random when n <= P)
with its own random style, whose seed `style_seed(seed, i)` depends only on `--seed` and i. FID compares the n outputs with the art set; the
identity distance compares every output with its photo (n pairs); LPIPS diversity compares every output
with a second stylization of the same photo under a second random style `style_seed(seed, i, 1)`
(n pairs). Photos are read, stylized and measured one batch at a time and only running sums are kept,
so memory does not depend on n. Stylization is `mmfs.inference.pipeline.StylizePipeline`, as in `mmfs stylize`.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmfs.config.evaluate import EvaluateRequest
from mmfs.errors import InputError
from mmfs.inference.metrics import METRIC_NAMES, DiversityMetric, FidMetric, IdentityMetric
from mmfs.inference.metrics.networks import MetricNets, load_metric_nets

REPORT_FORMAT = "mmfs-evaluation"
REPORT_FORMAT_VERSION = 1
STYLE_DRAW, SECOND_STYLE_DRAW = 0, 1  # per output: the measured style, and LPIPS's second style
PHOTO_DRAW = 2  # the photo order's stream, apart from every output's style streams
# Packages whose versions shape the numbers (reported when installed).
_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "pillow", "torch-fidelity", "lpips", "insightface",
             "onnxruntime", "dlib-bin", "dlib")  # fmt: skip


def style_seed(seed: int, index: int, draw: int = STYLE_DRAW) -> int:
    """The style seed (63-bit) of output `index`: a hash of (seed, index, draw), independent of batching."""
    words = np.random.SeedSequence(seed, spawn_key=(index, draw)).generate_state(2, np.uint32)
    return (int(words[0]) << 31) | (int(words[1]) >> 1)


def photo_order(seed: int, count: int) -> list[int]:
    """A random permutation of `count` photos, from `seed` alone; output i uses photo `order[i mod count]`."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(PHOTO_DRAW,)))
    return rng.permutation(count).tolist()


# ------------------------------------------------------------------------------------------ photos


def list_photos(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files under `folder`, sorted by path (the order outputs cycle through)."""
    from mmfs.inference.metrics.fid import list_images

    return list_images(folder)


def check_photos(files: Sequence[Path]) -> None:
    """Read only the headers: every photo must open and be square (an FFHQ-aligned crop)."""
    from PIL import Image

    for path in files:
        try:
            with Image.open(path) as img:
                width, height = img.size
        except (OSError, SyntaxError, ValueError):  # PIL's UnidentifiedImageError is an OSError
            raise InputError(f"{path}: not an image file PIL can read") from None
        if width != height:
            raise InputError(
                f"{path}: evaluation expects square FFHQ-aligned crops, got {width}x{height}; align with `mmfs align`"
            )


def load_aligned(path: Path, resolution: int) -> Tensor:
    """An aligned photo as [3, R, R] in [-1, 1], Lanczos-resized to the model resolution as `stylize --aligned` does."""
    from PIL import Image

    from mmfs.data.images import load_image, to_tensor

    image = load_image(path)
    if image.shape[0] != image.shape[1]:
        raise InputError(f"{path}: evaluation expects square FFHQ-aligned crops, got {image.shape[1]}x{image.shape[0]}")
    if image.shape[0] != resolution:
        image = np.array(Image.fromarray(image).resize((resolution, resolution), Image.LANCZOS))
    return to_tensor(image)


# ------------------------------------------------------------------------------------------ the stream


@dataclass
class StreamMetrics:
    """The running metrics after a stream (each None when not selected) and the number of outputs."""

    fid: FidMetric | None
    identity: IdentityMetric | None
    diversity: DiversityMetric | None
    count: int = 0


def evaluate_stream(
    pipeline: Any,  # a StylizePipeline (or anything with batch_size, resolution, styles(), __call__)
    photos: Sequence[Path],
    nets: MetricNets,
    *,
    n: int,
    seed: int = 0,
    progress: bool = False,
    load: Callable[[Path, int], Tensor] = load_aligned,
) -> StreamMetrics:
    """Stylize n outputs batch by batch (output i: `photos[i mod P]`, style `style_seed(seed, i)`) into the metrics."""
    from tqdm import tqdm

    from mmfs.inference.pipeline import SeedStyles

    if not photos:
        raise InputError("no photos to evaluate")
    result = StreamMetrics(
        FidMetric(nets.inception) if nets.inception is not None else None,
        IdentityMetric(nets.identity) if nets.identity is not None else None,
        DiversityMetric(nets.lpips) if nets.lpips is not None else None,
    )
    batch, resolution = pipeline.batch_size, pipeline.resolution

    def read(start: int) -> Tensor:
        return torch.stack([load(photos[i % len(photos)], resolution) for i in range(start, min(start + batch, n))])

    def styles(start: int, count: int, draw: int) -> list:
        return pipeline.styles(SeedStyles([style_seed(seed, i, draw) for i in range(start, start + count)]))

    bar = tqdm(total=n, desc="evaluate", unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    # One background thread decodes the next batch while this one is stylized: at most two batches of photos exist.
    with bar, ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmfs-eval-read") as pool:
        pending = pool.submit(read, 0)
        for start in range(0, n, batch):
            images = pending.result()
            if start + batch < n:
                pending = pool.submit(read, start + batch)
            count = images.shape[0]
            outputs = pipeline(images, styles(start, count, STYLE_DRAW))
            if result.fid is not None:
                result.fid.update_fake(outputs)
            if result.identity is not None:
                result.identity.update(images, outputs)  # FFHQ-aligned: canonical landmarks at this size
            if result.diversity is not None:
                result.diversity.update(outputs, pipeline(images, styles(start, count, SECOND_STYLE_DRAW)))
            result.count += count
            bar.update(count)
    return result


# ------------------------------------------------------------------------------------------ the run


def evaluate(
    request: EvaluateRequest, *, device: str = "auto", dtype: str = "fp32", progress: bool = True
) -> dict[str, Any]:
    """The whole evaluation: quick checks and every network first, then the art statistics, the stream, the report.

    The request's own checks (metric names, fid needs the art set, n, seed) ran when it was built.
    """
    from mmfs.checkpoint import read_metadata
    from mmfs.errors import CheckpointError
    from mmfs.inference.models import STYLIZER_KINDS, STYLIZER_MODELS
    from mmfs.inference.pipeline import StylizePipeline
    from mmfs.pretrained import resolve_file
    from mmfs.utils.device import pick_device

    started = time.perf_counter()
    checkpoint, photos, art, n, seed = request.checkpoint, request.photos, request.art, request.n, request.seed
    batch_size = request.batch_size
    # The report lists the metrics in METRIC_NAMES's order, whatever the order asked.
    metrics = tuple(name for name in METRIC_NAMES if name in request.metric_names)
    dev = pick_device(device)
    # Cheap checks that catch user errors before anything slow: the report's folder, files, weights.
    check_report_path(request.report)
    photo_files = list_photos(photos)  # a missing photo folder fails before a model is fetched
    checkpoint = resolve_file(checkpoint, kinds=STYLIZER_MODELS)  # a model name: fetched on first use
    request = dataclasses.replace(request, checkpoint=checkpoint)  # the report names (and hashes) the file used
    meta = read_metadata(checkpoint)
    if meta.get("mmfs.kind") not in STYLIZER_KINDS:
        kind = meta.get("mmfs.kind")
        raise CheckpointError(
            f"{checkpoint}: {'a ' + repr(kind) if kind else 'not an mmfs'} checkpoint, not a stylizer"
        )
    order = photo_order(seed, len(photo_files))
    sample = [photo_files[i] for i in order]  # the stream takes output i from sample[i mod P]
    check_photos(sample[:n])
    if "fid" in metrics:
        list_photos(art)  # an empty or missing art folder fails now, not after the networks are built
    nets = load_metric_nets(
        metrics,
        inception_weights=request.inception_weights,
        arcface_weights=request.arcface_weights,
        lpips_weights=request.lpips_weights,
        device=dev,
        tiny=request.tiny_metrics,
    )
    pipeline = StylizePipeline.from_checkpoint(checkpoint, device=dev, dtype=dtype, batch_size=batch_size)
    seconds: dict[str, float] = {"setup": time.perf_counter() - started}
    measured = measure(request, pipeline, nets, sample, seconds, progress=progress)
    seconds["total"] = time.perf_counter() - started
    runtime = {"device": str(dev), "dtype": dtype}
    return build_report(request, measured, metrics, nets, pipeline, meta, photo_files, sample, runtime, seconds)


@dataclass
class Measured:
    """The numbers of one evaluation: each metric's value, its details, and the warnings raised meanwhile."""

    values: dict[str, float]
    details: dict[str, dict[str, Any]]
    warnings: list[str]


def measure(
    request: EvaluateRequest,
    pipeline: Any,
    nets: MetricNets,
    sample: Sequence[Path],
    seconds: dict[str, float],
    *,
    progress: bool,
) -> Measured:
    """The art set's FID statistics (cached), the stream of n outputs, then each metric's value; the time of
    each part goes into `seconds`."""
    from mmfs.inference.metrics import default_cache_dir, reference_stats

    values: dict[str, float] = {}
    details: dict[str, dict[str, Any]] = {}
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("default")  # once per place: a warning repeated every batch is kept once, not n times
        real, cache_dir = None, None
        if nets.inception is not None:
            mark = time.perf_counter()
            cache_dir = None if request.no_fid_cache else (request.fid_cache or default_cache_dir())
            real = reference_stats(
                request.art,
                nets.inception,
                image_size=pipeline.resolution,
                cache_dir=cache_dir,
                batch_size=request.batch_size,
                progress=progress,
            )
            seconds["art_statistics"] = time.perf_counter() - mark
        mark = time.perf_counter()
        stream = evaluate_stream(pipeline, sample, nets, n=request.n, seed=request.seed, progress=progress)
        seconds["stream"] = time.perf_counter() - mark
        if stream.fid is not None:
            if progress:
                print(f"computing FID ({nets.inception.feature_dim}-d matrix square root) ...", file=sys.stderr)
            mark = time.perf_counter()
            values["fid"] = stream.fid.compute(real)
            seconds["fid"] = time.perf_counter() - mark
            details["fid"] = {
                "n_outputs": stream.fid.stats.count,
                "n_art": real.count,
                "image_size": pipeline.resolution,
                "art_cache_dir": str(cache_dir) if cache_dir else None,
                "art_cache_hit": bool(real.metadata),
            }
        for metric in (stream.identity, stream.diversity):
            if metric is not None:
                values[metric.name] = metric.compute()
                details[metric.name] = {"pairs": metric.count, "std": metric.values.std}
    caught = [f"{record.category.__name__}: {record.message}" for record in records]
    return Measured(values, details, list(dict.fromkeys(caught)))


def build_report(
    request: EvaluateRequest,
    measured: Measured,
    metrics: Sequence[str],
    nets: MetricNets,
    pipeline: Any,
    meta: dict[str, str],
    photo_files: Sequence[Path],
    sample: Sequence[Path],
    runtime: dict[str, str],
    seconds: dict[str, float],
) -> dict[str, Any]:
    """The JSON report (format `REPORT_FORMAT`): the numbers, and everything needed to reproduce or compare them."""
    n, photos, art = request.n, request.photos, request.art
    return {
        "format": REPORT_FORMAT,
        "format_version": REPORT_FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n": n,
        "metrics": measured.values,
        "details": measured.details,
        "comparable": nets.comparable,
        "checkpoint": _checkpoint_info(Path(request.checkpoint), meta),
        "data": {
            "photos": str(Path(photos).resolve()),
            "n_photos": len(photo_files),
            "photos_used": min(n, len(photo_files)),
            "passes_over_photos": math.ceil(n / len(photo_files)),
            "photo_sample_sha256": sample_digest(sample[:n], Path(photos)),
            "art": str(Path(art).resolve()) if art is not None and "fid" in metrics else None,
        },
        "metric_networks": nets.info,
        "settings": {
            "metrics": list(metrics),
            "seed": request.seed,
            "batch_size": request.batch_size,
            "device": runtime["device"],
            "dtype": runtime["dtype"],
            "noise": pipeline.noise,
            "resolution": pipeline.resolution,
            "tiny_metrics": request.tiny_metrics,
            "photo_order": "random: the photos sorted by path, then permuted by mmfs.inference.evaluate.photo_order(seed,"
            " n_photos); output i uses photo order[i mod n_photos]",
            "style_seeds": "output i: mmfs.inference.evaluate.style_seed(seed, i, 0); LPIPS second style: style_seed(seed, i, 1)",
        },
        "versions": package_versions(),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "warnings": measured.warnings,
    }


def check_report_path(path: Path) -> None:
    """InputError unless a report can be written at `path` (a file in a folder that exists or can be made)."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; --report needs a file path")
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot write the report there; choose another --report")


def sample_digest(files: Sequence[Path], root: Path) -> str:
    """sha256 of the photos used, in use order, as paths relative to `root` (one per line): same value, same sample."""
    import hashlib

    text = "\n".join(path.relative_to(root).as_posix() for path in files)
    return hashlib.sha256(text.encode()).hexdigest()


def _checkpoint_info(path: Path, meta: dict[str, str]) -> dict[str, Any]:
    """Path, sha256, kind and model config of the checkpoint, plus its short metadata entries."""
    from mmfs.utils.files import file_sha256

    info: dict[str, Any] = {"path": str(path.resolve()), "sha256": file_sha256(path)}
    for key, value in sorted(meta.items()):
        name = key.removeprefix("mmfs.")
        if name == "config":
            info["config"] = json.loads(value)
        elif len(value) <= 200:
            info[name] = value
    return info


def package_versions() -> dict[str, str]:
    """Versions of Python, mmfs and the packages that shape the numbers (those installed)."""
    import platform

    import mmfs

    versions = {"python": platform.python_version(), "mmfs": mmfs.__version__}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def write_report(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the report as indented JSON, atomically."""
    from mmfs.utils.files import atomic_path, write_failure

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
    except OSError as exc:
        raise write_failure(path, exc, "the report") from None
    return path


def summary_line(report: dict[str, Any]) -> str:
    """One line for people: each metric, n, wall time, and a warning when the numbers are not comparable."""
    parts = [f"{name} {value:.4g}" for name, value in report["metrics"].items()]
    line = f"{', '.join(parts)} (n={report['n']}, {report['seconds']['total']:.0f} s)"
    tiny = any(entry.get("tiny") for entry in report["metric_networks"].values())
    if tiny:
        line += "; tiny stand-in metric networks: NOT comparable with any published number"
    elif "dlib_id_dist" in report["metrics"]:
        line += "; dlib_id_dist is dlib's offline identity distance, not ArcFace-Dist: not comparable with published numbers"
    elif not report["comparable"]:
        line += "; non-standard metric weights: not comparable with published numbers"
    return line

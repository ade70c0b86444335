"""`mmfs stylize` throughput at 512 px: seconds per photo and where the time goes.

Runs the real engine (`mmfs.inference.files.stylize_files`, the code behind `mmfs stylize`) with a random
ffhq512 Stylizer (weights do not change the cost) on copies of the public-domain skimage astronaut:

- "photo": a 512x512 photo -> dlib detection -> FFHQ alignment -> generator -> paste-back -> PNG;
- "aligned": a 512 px FFHQ-aligned crop (`--aligned`) -> generator -> PNG.

Each row is fp32 or bf16 (autocast). CPU s/photo is the process's CPU time (all threads) per photo:
on a loaded machine it is far steadier than wall time. Stage seconds are summed over the worker threads (decoding,
detection and alignment overlap with the generator), so shares are of the summed stage time, and
s/photo is wall time over the photos (after one warm-up photo), best of `--rounds`. A second table times the generator
alone per batch size and memory format, which is how `mmfs stylize` picks its defaults.

    python benchmarks/stylize_throughput.py --photos 4
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from mmfs.utils.device import DTYPES


def make_inputs(folder: Path, n: int) -> tuple[list, list]:
    """n copies of the astronaut photo and n copies of its 512 px aligned crop, under distinct names."""
    from skimage.data import astronaut

    from mmfs.data.images import save_image
    from mmfs.faces import build_detector, detect_and_align
    from mmfs.inference.files import InputFile

    photo = astronaut()
    (crop,) = detect_and_align(photo, build_detector("dlib"), 512)
    photos, crops = [], []
    for i in range(n + 1):  # +1: the warm-up
        photos.append(InputFile(save_image(photo, folder / "photos" / f"p{i}.png")))
        crops.append(InputFile(save_image(crop.image, folder / "crops" / f"c{i}.png")))
    return photos, crops


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process's threads so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_engine(
    model, dtype: torch.dtype, files: list, aligned: bool, out: Path, batch: int
) -> tuple[float, float, dict]:
    """Wall and CPU seconds per photo (warm-up excluded) and per-stage seconds per photo."""
    from mmfs.faces import build_detector
    from mmfs.inference.files import PhotoOutput, stylize_files
    from mmfs.inference.pipeline import SeedStyles, StylizePipeline

    pipe = StylizePipeline(model, dtype=dtype, batch_size=batch)
    styles = pipe.styles(SeedStyles([0]))
    detector = None if aligned else build_detector("dlib")
    opts = PhotoOutput(outdir=out, paste_back=not aligned, aligned=aligned, overwrite=True)
    warm, rest = files[:1], files[1:]
    list(stylize_files(pipe, warm, styles, opts, detector=detector))
    stats: dict[str, float] = {}
    start, cpu = time.perf_counter(), _cpu_seconds()
    results = list(stylize_files(pipe, rest, styles, opts, detector=detector, stats=stats))
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    return wall / len(rest), cpu / len(rest), {k: v / len(rest) for k, v in stats.items()}


def generator_variants(model, repeats: int, dtypes: list[str]) -> list[tuple[str, int, str, float, float]]:
    """Generator-only seconds per face at batch 1 and 4, contiguous vs channels-last, fp32 and bf16.

    The variants are interleaved and each keeps its best time, so a load change on the machine hits
    them all alike.
    """
    import copy

    from mmfs.inference.pipeline import SeedStyles, StylizePipeline

    style = SeedStyles([0]).styles(model)[0]
    pipes = {}
    for memory in ("contiguous", "channels-last"):
        net = model if memory == "contiguous" else copy.deepcopy(model)  # the pipeline converts weights in place
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            for batch in (1, 4):
                pipe = StylizePipeline(net, dtype=dtype, batch_size=batch, channels_last=memory == "channels-last")
                x = torch.rand(batch, 3, 512, 512) * 2 - 1
                pipe(x[:1], style)  # warm-up
                pipes[(dtype_name, batch, memory)] = (pipe, x)
    best = dict.fromkeys(pipes, float("inf"))
    best_cpu = dict.fromkeys(pipes, float("inf"))
    for _ in range(repeats):
        for key, (pipe, x) in pipes.items():
            cpu = _cpu_seconds()
            best[key] = min(best[key], _timed(lambda: pipe(x, style)))  # noqa: B023
            best_cpu[key] = min(best_cpu[key], _cpu_seconds() - cpu)
    return [(*key, best[key] / key[1], best_cpu[key] / key[1]) for key in pipes]


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    from mmfs.config import PRESETS
    from mmfs.inference.files import TIMED_STEPS
    from mmfs.nn.stylizer import Stylizer
    from mmfs.utils.device import native_bf16

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=4, help="photos timed per row (after one warm-up)")
    parser.add_argument("--batch-size", type=int, default=1, help="generator batch of the engine rows")
    parser.add_argument("--rounds", type=int, default=2, help="best-of rounds of the engine table")
    parser.add_argument("--repeats", type=int, default=3, help="best-of repeats in the generator table")
    parser.add_argument("--skip-variants", action="store_true", help="only the engine table")
    parser.add_argument(
        "--dtypes", default=None, help="comma-separated fp32,bf16 (default: both where bf16 is native, else fp32)"
    )
    args = parser.parse_args()
    native = native_bf16(torch.device("cpu"))
    dtypes = args.dtypes.split(",") if args.dtypes else ["fp32", "bf16"] if native else ["fp32"]

    torch.manual_seed(0)
    model = Stylizer(PRESETS["ffhq512"]).eval().requires_grad_(False)
    print(f"# mmfs stylize throughput, random ffhq512 Stylizer, batch {args.batch_size}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {'yes' if native else 'no'}\n")
    header = "| input | dtype | s/photo | CPU s/photo | " + " | ".join(TIMED_STEPS) + " |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    configs = [(label, dtype_name, dtype, aligned)
               for dtype_name, dtype in ((name, DTYPES[name]) for name in dtypes)
               for label, aligned in (("photo + detect/align/paste", False), ("aligned crop", True))]  # fmt: skip
    best: dict[tuple, tuple[float, float, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        photos, crops = make_inputs(Path(tmp), args.photos)
        for _ in range(args.rounds):  # rounds interleave the rows; each keeps its fastest round
            for label, dtype_name, dtype, aligned in configs:
                files = crops if aligned else photos
                run = run_engine(model, dtype, files, aligned, Path(tmp) / "out", args.batch_size)
                key = (label, dtype_name)
                if key not in best or run[0] < best[key][0]:
                    best[key] = run
    for (label, dtype_name), (per_photo, cpu, stages) in best.items():
        total = sum(stages.get(s, 0.0) for s in TIMED_STEPS) or 1.0
        cells = [f"{stages.get(s, 0.0):.3f} s ({100 * stages.get(s, 0.0) / total:.0f}%)" for s in TIMED_STEPS]
        print(f"| {label} | {dtype_name} | {per_photo:.2f} | {cpu:.2f} | " + " | ".join(cells) + " |", flush=True)
    if not args.skip_variants:
        print("\n| dtype | batch | memory format | generator s/face | CPU s/face |\n|---|---|---|---|---|")
        for dtype_name, batch, memory, seconds, cpu in generator_variants(model, args.repeats, dtypes):
            print(f"| {dtype_name} | {batch} | {memory} | {seconds:.2f} | {cpu:.2f} |", flush=True)
    print(f"\nload average after the run: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

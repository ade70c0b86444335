"""Wall time and peak memory of `mmfs evaluate` at paper scale (n = 10,000) on the tiny preset.

    python benchmarks/evaluate_run.py [--n 1000,10000] [--batch-size 8] [--threads N] [--photos 200] [--art 512]

Makes its own tiny random checkpoint (`Stylizer(PRESETS["tiny"])`, 32 px) and synthetic FFHQ-aligned
photo and art folders (`mmfs.demo.synthetic`), then runs the real command, `mmfs evaluate ... --tiny-metrics`
(tiny random metric networks: the numbers mean nothing), once per n, each in its own process. Peak
memory is that process's maximum resident set size (`os.wait4` rusage, ru_maxrss); equal peaks for
different n show that memory does not grow with n. Wall time is the process's, from start to exit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_inputs(root: Path, n_photos: int, n_art: int) -> tuple[Path, Path, Path]:
    """A tiny stylizer checkpoint and synthetic photo / art folders under `root`."""
    import torch

    from mmfs.checkpoint import module_state, save_checkpoint
    from mmfs.config import PRESETS
    from mmfs.demo.synthetic import STYLES, make_dataset
    from mmfs.nn.stylizer import Stylizer

    torch.manual_seed(0)
    model = Stylizer(PRESETS["tiny"])
    ckpt = save_checkpoint(root / "tiny.safetensors", module_state(model), kind="stylizer", config=PRESETS["tiny"])
    dirs = make_dataset(root / "data", n_photos=n_photos, n_art_per_style=-(-n_art // len(STYLES)), size=32)
    return ckpt, dirs["photos"], dirs["art"]


def run(args: list[str], env: dict[str, str], logs: Path) -> tuple[dict, float, float]:
    """Run one `mmfs evaluate`; returns (report, wall seconds, peak RSS in MiB) of that process."""
    out, err = logs.with_suffix(".out"), logs.with_suffix(".err")
    start = time.perf_counter()
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(args, stdout=stdout, stderr=stderr, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # reaps it ourselves: wait4 gives this child's own rusage
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"mmfs evaluate failed ({proc.returncode}):\n{err.read_text()[-2000:]}")
    return json.loads(out.read_text()), wall, usage.ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="1000,10000", help="comma-separated output counts, one run each")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="OMP/torch threads of the runs (default: torch's)")
    parser.add_argument("--photos", type=int, default=200, help="synthetic photos (outputs cycle through them)")
    parser.add_argument("--art", type=int, default=512, help="synthetic artworks (the FID reference set)")
    args = parser.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmfs-evaluate-run-") as tmp:
        root = Path(tmp)
        ckpt, photos, art = make_inputs(root, args.photos, args.art)
        env["MMFS_CACHE"] = str(root / "cache")  # the first run computes the art statistics, later ones reuse them
        for n in (int(v) for v in args.n.split(",")):
            cmd = [sys.executable, "-m", "mmfs_cli.app", "evaluate", "-c", str(ckpt), "--photos", str(photos),
                   "--art", str(art), "--n", str(n), "--batch-size", str(args.batch_size), "--device", "cpu",
                   "--tiny-metrics", "--quiet", "--report", str(root / f"report-{n}.json")]  # fmt: skip
            report, wall, rss = run(cmd, env, root / f"run-{n}")
            rows.append((n, report, wall, rss))
    import torch

    threads = args.threads or torch.get_num_threads()
    print(f"tiny preset (32 px), tiny metric networks, CPU x{os.cpu_count()}, {threads} thread(s), "
          f"batch {args.batch_size}, {args.photos} photos, {args.art} artworks")  # fmt: skip
    print(
        "| n | wall (process) | stream | per output | art stats | FID sqrtm | peak RSS | fid / arcface_dist / lpips |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n, report, wall, rss in rows:
        sec, m = report["seconds"], report["metrics"]
        values = " / ".join(f"{m[k]:.4g}" for k in ("fid", "arcface_dist", "lpips_diversity"))
        print(f"| {n:,} | {wall:.0f} s | {sec['stream']:.0f} s | {sec['stream'] / n * 1000:.1f} ms "
              f"| {sec.get('art_statistics', 0):.1f} s | {sec.get('fid', 0):.2f} s | {rss:.0f} MiB | {values} |")  # fmt: skip


if __name__ == "__main__":
    main()

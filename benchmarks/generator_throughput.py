"""Stylizer throughput on this machine: seconds/image and images/s, every optimisation side by side.

For each resolution and batch size the table has one row per path, each relative to the naive path:

* naive    - official-style per-sample modulated weights (grouped conv) and reference resampling
             (transposed conv, `upfirdn2d` blur with zero insertion for the RGB skip), NCHW, eager
* fast     - the defaults: polyphase up-sampling convs, depthwise blurs, no zero insertion, eager
* +cl      - fast in channels-last memory format
* compiled - `torch.compile` of the default path (channels-last if it was faster eagerly)

each in fp32 and under bf16 autocast. The multiply-adds per image are counted with
`torch.utils.flop_counter` (2 FLOPs = 1 multiply-add). Random weights; the timing does not depend on them.

    python benchmarks/generator_throughput.py            # 256 + 512, batch 1 and 4, fp32/bf16, with compile
    python benchmarks/generator_throughput.py --quick    # 512 only, batch 1, no compile
    python benchmarks/generator_throughput.py --with-1024
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import platform
import subprocess
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from mmfs.config import PRESETS
from mmfs.nn import Stylizer, set_implementation


@dataclasses.dataclass
class Row:
    res: int
    batch: int
    path: str
    dtype: str
    sec_per_img: float
    gmacs: float
    ratio: float = 1.0


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def configure(model: Stylizer, path: str) -> None:
    if path == "naive":
        set_implementation(model, modconv="fused", resample="reference")
    else:
        set_implementation(model, modconv="auto", resample="fast")


def count_gmacs(model: Stylizer, x: torch.Tensor, ws: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x, ws, noise="zero")
    return counter.get_total_flops() / 2 / x.shape[0] / 1e9


def time_call(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)  # the least-disturbed run: other processes only ever add time


def bench_res(res: int, batches: list[int], dtypes: list[str], compile_: bool, repeats: int) -> list[Row]:
    cfg = dataclasses.replace(PRESETS["ffhq512"], resolution=res)
    torch.manual_seed(0)
    model = Stylizer(cfg).eval().requires_grad_(False)
    rows: list[Row] = []
    for batch in batches:
        x = torch.rand(batch, 3, res, res) * 2 - 1
        ws = model.ws_from_z(torch.randn(batch, cfg.z_dim))
        base: dict[str, float] = {}
        paths = ["naive", "fast", "+cl"] + (["compiled"] if compile_ else [])
        macs = {}
        best_eager_cl = False
        for path in paths:
            configure(model, path)
            channels_last = path == "+cl" or (path == "compiled" and best_eager_cl)
            xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            fn = model.forward
            if path == "compiled":
                torch._dynamo.reset()
                fn = torch.compile(model.forward)
            key = "naive" if path == "naive" else "fast"
            if key not in macs:
                macs[key] = count_gmacs(model, xin[:1], ws[:1])
            for dtype in dtypes:
                ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")

                def run(fn=fn, xin=xin, ctx=ctx):
                    with torch.no_grad(), ctx:
                        fn(xin, ws)

                warmup = 2 if path == "compiled" else 1
                sec = time_call(run, repeats, warmup) / batch
                row = Row(res, batch, path, dtype, sec, macs[key])
                if path == "naive" and dtype == "fp32":
                    base["fp32"] = sec
                row.ratio = base.get("fp32", sec) / sec
                rows.append(row)
                print(f"  {res:5d} {batch:3d} {path:9s} {dtype:5s} {sec:7.3f} s/img", flush=True)
            if path == "+cl":
                fast = [r.sec_per_img for r in rows if r.batch == batch and r.path == "fast"]
                cl = [r.sec_per_img for r in rows if r.batch == batch and r.path == "+cl"]
                best_eager_cl = sum(cl) < sum(fast)
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| res | batch | path | dtype | s/image | images/s | speed-up vs naive fp32 | GMAC/image |",
        "|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.res} | {r.batch} | {r.path} | {r.dtype} | {r.sec_per_img:.3f} | {1 / r.sec_per_img:.2f} "
            f"| {r.ratio:.2f}x | {r.gmacs:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="512 px, batch 1, no compile, 2 repeats")
    parser.add_argument("--with-1024", action="store_true", help="also run 1024 px (slow)")
    parser.add_argument("--res", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--dtype", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        args.res, args.batch, args.no_compile, args.repeats = [512], [1], True, 2
    if args.with_1024:
        args.res = sorted(set(args.res) | {1024})
    torch.set_num_threads(args.threads)
    print(f"{datetime.date.today()} | {cpu_model()} | torch {torch.__version__} | {args.threads} threads", flush=True)
    rows: list[Row] = []
    for res in args.res:
        rows += bench_res(res, args.batch, args.dtype, not args.no_compile, args.repeats)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()

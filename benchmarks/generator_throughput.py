"""Stylizer throughput on this machine: seconds/image and images/s, every optimisation side by side.

For each resolution and batch size there is one row per path and dtype, with its speed-up over the naive
fp32 path of the same resolution and batch:

* naive     - `Stylizer(cfg, fast=False)`, the reference blocks: official per-sample modulated weights
              (grouped conv) and reference resampling (transposed conv + `upfirdn2d` blur, zero insertion for
              the RGB skip), NCHW, eager; fp32 only (the baseline of every ratio; see main() for why not bf16)
* fast-nchw - the fast blocks (`mmfs/nn/fast.py`: depthwise blurs, no zero insertion, folded constants,
              fused/unfused modulated convs by batch and training) in NCHW: `to_fast(net, channels_last=False)`
* fast      - the default `Stylizer(cfg)`: the fast blocks in channels-last memory format
* compiled  - `torch.compile` (Inductor) of the default path
* fast+mem / compiled+mem - the same after `reuse_freed_memory()` (`benchmarks/_alloc.py`: glibc keeps
              freed blocks instead of returning >32 MB buffers to the OS and page-faulting them back in)

each in fp32 and under bf16 autocast. Multiply-adds per image are counted with `torch.utils.flop_counter`
(2 FLOPs = 1 multiply-add). Random weights; the timing does not depend on them. Times are the minimum over
`--repeats` runs after a warm-up (other processes only ever add time).

    python benchmarks/generator_throughput.py             # 256 + 512, batch 1 and 4, fp32/bf16, compiled too
    python benchmarks/generator_throughput.py --quick     # 512 only, batch 1, no compile
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
from _alloc import reuse_freed_memory
from torch.utils.flop_counter import FlopCounterMode

from mmfs.config import PRESETS
from mmfs.nn import Stylizer, to_fast
from mmfs.utils.device import native_bf16

PATHS = {
    # name: (network, compiled); every network holds the same weights
    "naive": ("reference", False),
    "fast-nchw": ("fast-nchw", False),
    "fast": ("fast", False),
    "compiled": ("fast", True),
}


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


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """What these cores reach on one large fp32 matrix product: the ceiling the convolutions work under."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / best_time(lambda: a @ b, repeats, warmup=1) / 1e9


def count_gmacs(model: Stylizer, x: torch.Tensor, ws: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x[:1], ws[:1], noise="zero")
    return counter.get_total_flops() / 2 / 1e9


def best_time(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def build(cfg, network: str, state: dict[str, torch.Tensor]) -> Stylizer:
    """The Stylizer as `network` ("reference", "fast-nchw" or "fast") holding `state`, frozen for inference."""
    if network == "fast":
        model = Stylizer(cfg)
    else:
        model = Stylizer(cfg, fast=False)
        if network == "fast-nchw":
            to_fast(model, channels_last=False)
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


class Bench:
    """One set of weights per resolution; runs (batch, path, dtype) cells and remembers the naive fp32 baselines."""

    def __init__(self, res: int, repeats: int):
        torch.manual_seed(0)
        self.cfg = dataclasses.replace(PRESETS["ffhq512"], resolution=res)
        state = Stylizer(self.cfg).state_dict()
        self.models = {name: build(self.cfg, name, state) for name in ("reference", "fast-nchw", "fast")}
        self.res, self.repeats = res, repeats
        self.base: dict[int, float] = {}
        self.macs: dict[str, float] = {}
        self.compiled: dict[int, object] = {}

    def run(self, batch: int, path: str, dtypes: list[str], label: str | None = None) -> list[Row]:
        network, compiled = PATHS[path]
        model = self.models[network]
        x = torch.rand(batch, 3, self.res, self.res) * 2 - 1
        ws = model.ws_from_z(torch.randn(batch, self.cfg.z_dim))
        key = "naive" if path == "naive" else "fast"
        if key not in self.macs:
            self.macs[key] = count_gmacs(model, x, ws)
        fn = model.forward
        if compiled:
            # static shapes: one specialised graph per batch size, as training compiles (mmfs/train/loop.py)
            fn = self.compiled.setdefault(batch, torch.compile(model.forward, dynamic=False))
        rows = []
        for dtype in dtypes:

            def step(fn=fn, dtype=dtype):
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                    fn(x, ws)

            sec = best_time(step, self.repeats, warmup=2 if compiled else 1) / batch
            if path == "naive" and dtype == "fp32":
                self.base[batch] = sec
            row = Row(self.res, batch, label or path, dtype, sec, self.macs[key])
            row.ratio = self.base.get(batch, sec) / sec
            print(f"  {self.res:5d} {batch:3d} {row.path:12s} {dtype:5s} {sec:7.3f} s/img", flush=True)
            rows.append(row)
        return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| res | batch | path | dtype | s/image | images/s | vs naive fp32 | GMAC/image |",
        "|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r.res, r.batch)):
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
    parser.add_argument(
        "--dtype",
        nargs="+",
        default=None,
        choices=["fp32", "bf16"],
        help="default: both where bf16 is native, else fp32",
    )
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-naive", action="store_true", help="skip the (slow) naive baseline")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS), help="which paths to time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        args.res, args.batch, args.no_compile, args.repeats = [512], [1], True, 2
    if args.with_1024:
        args.res = sorted(set(args.res) | {1024})
    torch.set_num_threads(args.threads)
    native = native_bf16(torch.device("cpu"))
    args.dtype = args.dtype or (["fp32", "bf16"] if native else ["fp32"])
    header = (
        f"{datetime.date.today()} | {cpu_model()} | torch {torch.__version__} | {args.threads} threads | "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {'yes' if native else 'no'} | "
        f"fp32 GEMM 2048^3: {gemm_gflops():.0f} GFLOP/s"
    )
    print(header, flush=True)
    benches = {res: Bench(res, args.repeats) for res in args.res}
    paths = [
        p for p in args.paths if not (p == "compiled" and args.no_compile) and not (p == "naive" and args.no_naive)
    ]
    rows: list[Row] = []
    for bench in benches.values():
        for batch in args.batch:
            for path in paths:
                # The naive path is the fp32 baseline only: under CPU bf16 autocast its NCHW grouped and
                # transposed convolutions fall back to PyTorch's slow_conv2d with a reference GEMM (minutes
                # per image), which would measure that fallback, not the network.
                dtypes = ["fp32"] if path == "naive" else args.dtype
                rows += bench.run(batch, path, dtypes)
    # last, because it changes the allocator for the rest of the process
    if reuse_freed_memory():
        for bench in benches.values():
            for batch in args.batch:
                for path in ("fast", "compiled"):
                    if path in paths:
                        rows += bench.run(batch, path, args.dtype, label=f"{path}+mem")
    print()
    print(header)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()

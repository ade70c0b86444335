"""The official MMFS Stylizer against mmfs's, side by side in one process on the CPU, with the same weights.

Imports the official code (github.com/dong-y21/MMFS at 3b68edd, its latest commit and the code mmfs
re-implements) from the checkout given by `--official` and builds its `Stylizer` as the phase-2 YAML
does (ngf 64, phase 2: every parameter trains; 18,676,376 parameters). mmfs's default
`Stylizer(PRESETS["ffhq512"])` gets the same random weights through the official-checkpoint import
(`mmfs.nn.convert.convert_mmfs`), and one warm-up call of each, from the same seed, checks that both
compute the same image and the same gradients. Each case then alternates the two (official, mmfs, mmfs,
official, ...) for `--rounds` rounds, so that a drift of the machine's speed hits both alike, and prints
each round's seconds and their ratio (official / mmfs: mmfs's speed-up), then the median ratio and its
range per case:

* forward - inference, `torch.no_grad()`, a random z mapped to the 10 styles inside the call
* train   - forward and backward of `out.square().mean()` through every parameter
* with `--bf16`, both again under `torch.autocast("cpu", torch.bfloat16)`, on a CPU with AVX-512 and
  native bf16 only (elsewhere bf16 convolutions fall back to a reference GEMM: that would time the fallback)

    git clone https://github.com/dong-y21/MMFS /tmp/official-mmfs && git -C /tmp/official-mmfs checkout 3b68edd
    python benchmarks/official_comparison.py --official /tmp/official-mmfs                # 512 px, batch 1
    python benchmarks/official_comparison.py --official /tmp/official-mmfs --batch 1 2 --bf16 --rounds 7
    python benchmarks/official_comparison.py --official /tmp/official-mmfs --res 256 --rounds 1   # quick check

The official code runs on the CPU as its own ops allow: their CUDA kernels are JIT-compiled at import
(`torch.utils.cpp_extension.load`), which is stubbed out here, so `fused_leaky_relu` and `upfirdn2d`
take their pure-PyTorch branches for CPU tensors. Only the official checkout's files are imported; the
script copies none of them.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import logging
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

# As `mmfs demo` and the other benchmarks: passive OpenMP waiting (spinning threads slow small
# convolutions down on a shared CPU). Both networks run under it; the header says which policy was in force.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from mmfs.config import PRESETS  # noqa: E402
from mmfs.nn import Stylizer  # noqa: E402
from mmfs.nn.convert import convert_mmfs  # noqa: E402
from mmfs.nn.layers import draw_noise  # noqa: E402
from mmfs.utils.device import native_bf16  # noqa: E402

OFFICIAL_PARAMS = 18_676_376  # the official Stylizer without the CLIP mapper (the official code's own count)
MODEL_FILE = Path("models") / "style_based_pix2pixII_model.py"
CLONE = "git clone https://github.com/dong-y21/MMFS"
# fp32 agreement required before timing: the largest difference relative to the largest value compared.
# Not bit for bit: mmfs's fast blocks compute the same maths in another order (mmfs/nn/fast.py).
TOLERANCE = 1e-3
NOISE_STRENGTH = 0.1  # see build_official


def fail(message: str) -> NoReturn:
    print(f"official_comparison: {message}", file=sys.stderr)
    raise SystemExit(2)


def import_official(root: Path) -> types.ModuleType:
    """The official `models/style_based_pix2pixII_model.py`, imported from a checkout, runnable on the CPU."""
    if not (root / MODEL_FILE).is_file():
        fail(f"--official {root}: not an MMFS checkout (no {MODEL_FILE}); get one with: {CLONE}")
    # (quiet: importing cpp_extension on a host without CUDA logs a warning about CUDA_HOME)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import cpp_extension

    # rosinality's ops build CUDA kernels when imported; returning None instead leaves their module-level
    # handles unset, which is fine: for CPU tensors the ops never touch them (their `device.type == "cpu"`
    # branches), and `conv2d_gradfix` falls back to F.conv2d off CUDA.
    real_load = cpp_extension.load
    cpp_extension.load = lambda *args, **kwargs: None
    # The model file imports OpenAI's `clip` at module level for its phase-3/4 losses; the Stylizer never
    # uses it, so an empty module stands in when it is not installed.
    if importlib.util.find_spec("clip") is None:
        sys.modules["clip"] = types.ModuleType("clip")
    sys.path.insert(0, str(root))  # their code imports its own top-level packages (`models`, `utils`)
    try:
        return importlib.import_module("models.style_based_pix2pixII_model")
    except ImportError as exc:
        fail(f"cannot import the official code from {root}: {exc}")
    finally:
        cpp_extension.load = real_load


def build_official(module: types.ModuleType) -> torch.nn.Module:
    """The official Stylizer as exp/sp2pII-phase2.yaml builds it (ngf 64, phase 2), with its own random init.

    Phase 2 loads a whole state dict strictly; a phase-1 build with nothing to load supplies one (its
    constructor's initialisation). The noise strengths start at 0 there; trained networks have non-zero
    ones, and with 0 the check below could not tell whether both add the same noise.
    """
    phase = module.TrainingPhase
    state = module.Stylizer(ngf=64, phase=phase.ENCODER, model_weights={}).state_dict()
    for key in state:
        if key.endswith("noise.weight"):
            state[key] = torch.full_like(state[key], NOISE_STRENGTH)
    net = module.Stylizer(ngf=64, phase=phase.BASE_MODEL, model_weights=state)
    count = sum(p.numel() for p in net.parameters() if p.requires_grad)
    if count != OFFICIAL_PARAMS:
        fail(f"the official Stylizer has {count:,} trainable parameters, expected {OFFICIAL_PARAMS:,}: wrong build")
    return net


def build_ours(official: torch.nn.Module) -> Stylizer:
    """mmfs's default Stylizer holding the official module's weights, read as an official checkpoint is."""
    tensors, cfg = convert_mmfs({"G_ema_model": official.state_dict()})
    if cfg != PRESETS["ffhq512"]:
        fail(f"the official weights convert to {cfg}, not the ffhq512 preset")
    ours = Stylizer(cfg)
    ours.load_state_dict({k.removeprefix("stylizer_ema."): v for k, v in tensors.items()}, strict=True)
    count = sum(p.numel() for p in ours.parameters())
    if count != OFFICIAL_PARAMS:
        fail(f"mmfs's Stylizer has {count:,} parameters, the official {OFFICIAL_PARAMS:,}")
    return ours


class Pair:
    """Both networks and one case's inputs: `run(side)` is the work timed."""

    def __init__(self, official, ours: Stylizer, *, res: int, batch: int, train: bool, bf16: bool):
        self.nets = {"official": official, "mmfs": ours}
        self.train, self.bf16 = train, bf16
        gen = torch.Generator().manual_seed(0)
        self.x = torch.rand(batch, 3, res, res, generator=gen) * 2 - 1
        self.z = torch.randn(batch, ours.cfg.z_dim, generator=gen)
        # Both draw one N(0,1) map per styled conv from the global RNG, in the same order and shapes, so one
        # seed before each call gives both the same noise. mmfs's Stylizer draws maps sized for its preset's
        # resolution; at another --res it is handed maps of the right size, drawn the same way in the call.
        scale = res / ours.cfg.resolution
        self.noise_shapes = None if res == ours.cfg.resolution else [
            (int(h * scale), int(w * scale)) for h, w in ours.noise_shapes
        ]  # fmt: skip
        for net in self.nets.values():
            net.train(train).requires_grad_(train)

    def forward(self, side: str) -> torch.Tensor:
        net = self.nets[side]
        if side == "official":
            return net(self.x, z=self.z)  # styles = mapping_z(z) in all 10 slots, as ws_from_z
        noise = None if self.noise_shapes is None else draw_noise(self.noise_shapes, self.x.shape[0])
        return net(self.x, net.ws_from_z(self.z), noise=noise)

    def run(self, side: str) -> torch.Tensor:
        """The output (forward) or the loss after its backward (train)."""
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            if not self.train:
                with torch.no_grad():
                    return self.forward(side)
            self.nets[side].zero_grad(set_to_none=True)
            loss = self.forward(side).float().square().mean()
        loss.backward()
        return loss.detach()

    def check(self) -> float:
        """Run both once from the same seed (the warm-up) and print how far apart their results are."""
        results = {}
        for side, net in self.nets.items():
            # also the RGB before the final hardtanh: random weights saturate pixels, which could hide errors
            raw = []
            hook = net.to_rgb4.register_forward_hook(lambda _m, _i, out, raw=raw: raw.append(out.detach().float()))
            torch.manual_seed(1)
            out = self.run(side).float()
            hook.remove()
            results[side] = {"loss" if self.train else "output": out, "RGB before hardtanh": raw[0]}
            if self.train:
                results[side].update({f"grad {k}": p.grad for k, p in net.named_parameters()})
        a, b = results["official"], results["mmfs"]
        if a.keys() != b.keys():
            fail(f"the two networks name their parameters differently: {sorted(a.keys() ^ b.keys())[:3]}")
        # relative to the largest magnitude of each compared tensor (each parameter's gradient on its own)
        rel = {k: ((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-12)).item() for k in a}
        worst = max(rel, key=rel.get)
        shown = dict.fromkeys([k for k in ("output", "loss", "RGB before hardtanh") if k in rel] + [worst])
        # bf16: shown only; the two round to bf16 at different points (and the official noise is drawn in bf16)
        note = " (bf16: not held to a tolerance)" if self.bf16 else ""
        print(
            "  check, max |official - mmfs| / max |official|: " + ", ".join(f"{k} {rel[k]:.1e}" for k in shown) + note
        )
        return rel[worst]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def commit_of(path: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "not a git checkout"


def timed(fn: Callable[[str], object], side: str) -> float:
    start = time.perf_counter()
    fn(side)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, type=Path, help=f"a checkout of the official code ({CLONE})")
    parser.add_argument("--cases", nargs="+", default=["forward", "train"], choices=["forward", "train"])
    parser.add_argument("--batch", type=int, nargs="+", default=[1], help="batch sizes, each a case of its own")
    parser.add_argument("--res", type=int, default=512, help="input size (the networks are the 512 px ones)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per case, after one warm-up")
    parser.add_argument("--bf16", action="store_true", help="also time each case under bf16 autocast")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.res % 16 or args.res < 64:
        fail(f"--res {args.res}: the encoder halves the size four times; give a multiple of 16 from 64 up")
    if args.threads:
        torch.set_num_threads(args.threads)
    official_root = args.official.expanduser().resolve()
    module = import_official(official_root)

    capability = torch.backends.cpu.get_cpu_capability()
    native = native_bf16(torch.device("cpu"))
    dtypes = ["fp32"]
    if args.bf16 and "AVX512" in capability and native:
        dtypes.append("bf16")
    elif args.bf16:
        print(f"bf16 skipped: CPU capability {capability}, native bf16 {'yes' if native else 'no'}; without both, "
              "bf16 convolutions fall back to a reference GEMM and would time that fallback")  # fmt: skip
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    header = (
        f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC | {cpu_model()} | capability {capability}, "
        f"native bf16 {'yes' if native else 'no'} | torch {torch.__version__} | {torch.get_num_threads()} threads, "
        f"OMP_WAIT_POLICY {os.environ['OMP_WAIT_POLICY']} | load {load} | official {commit_of(official_root)}, "
        f"mmfs {commit_of(Path(__file__).resolve().parents[1])} | {args.res} px"
    )
    print(header, flush=True)

    torch.manual_seed(0)
    official = build_official(module)
    ours = build_ours(official)
    print(f"same weights in both: {OFFICIAL_PARAMS:,} parameters", flush=True)

    summary = []
    for dtype in dtypes:
        for case in args.cases:
            for batch in args.batch:
                name = f"{case} {dtype} batch {batch}"
                print(f"{name}:", flush=True)
                pair = Pair(official, ours, res=args.res, batch=batch, train=case == "train", bf16=dtype == "bf16")
                worst = pair.check()
                if dtype == "fp32" and worst > TOLERANCE:
                    fail(f"{name}: the two networks disagree ({worst:.1e} > {TOLERANCE:.0e}); not timing them")
                ratios = []
                for i in range(args.rounds):
                    order = ("official", "mmfs") if i % 2 == 0 else ("mmfs", "official")
                    sec = {side: timed(pair.run, side) for side in order}
                    ratios.append(sec["official"] / sec["mmfs"])
                    print(f"  round {i + 1}: official {sec['official']:7.2f} s  mmfs {sec['mmfs']:7.2f} s  "
                          f"ratio {ratios[-1]:5.2f}x  (load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
                summary.append((name, ratios))
    print()
    print(header)
    for name, ratios in summary:
        print(f"{name}: official / mmfs, median {statistics.median(ratios):.2f}x "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f}) over {len(ratios)} rounds")  # fmt: skip


if __name__ == "__main__":
    main()

"""Training throughput of Stage I and Stage II: images/s, fp32 vs bf16 autocast, eager vs torch.compile.

Runs the real shared loop (`mmfs.train.loop.Trainer.train_step`) on random weights of the chosen presets:
a random StyleGAN2 prior for Stage I; for Stage II a random Stylizer, that prior's discriminator,
random image folders and a DINO of the reference architecture with random weights (ViT-B/8 at 224 px
for real presets, the tiny DINO for `tiny`), so no download is needed and the work is the real work.

    python benchmarks/train_throughput.py                       # tiny and ffhq256, all 8 variants each
    python benchmarks/train_throughput.py --presets tiny --steps 5 --markdown

Each variant: `--warmup` untimed steps (compilation happens there), then `--steps` timed steps; the
figures are batch / fastest step time ("best", what the code can do) and batch / median step time.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from step_profile import make_inputs  # this folder is on sys.path when a script here runs

from mmfs.config import PRESETS
from mmfs.train import make_config
from mmfs.train.loop import Trainer

DEFAULT_BATCH = {"tiny": 8, "tiny64": 8}  # other presets: 2 (CPU memory and patience)


def dino_for(preset: str):
    """The reference DINO architecture (ViT-B/8, 224 px) with random weights, or the tiny one."""
    from mmfs.external.dino import DEFAULT_MODEL, DinoViT
    from mmfs.external.tiny import tiny_dino

    if preset.startswith("tiny"):
        return tiny_dino()
    import timm

    return DinoViT(timm.create_model(DEFAULT_MODEL, pretrained=False))


def measure(
    command: str,
    preset: str,
    dtype: str,
    compiled: bool,
    batch: int,
    steps: int,
    warmup: int,
    inputs: dict[str, Path],
    dino,
    root: Path,
) -> tuple[float, float]:
    """(best, median) images per second over `steps` timed training steps, after `warmup` steps."""
    model = PRESETS[preset]
    if command == "pretrain-encoder":
        options, externals = {"prior": str(inputs["prior"])}, {}
    else:
        options = {
            "photos": str(inputs["photos"]),
            "art": str(inputs["art"]),
            "init": str(inputs["init"]),
            "disc": str(inputs["prior"]),
        }
        externals = {"dino": dino}
    cfg = make_config(
        command,
        model,
        options=options,
        steps=10**6,
        batch_size=batch,
        device="cpu",
        dtype=dtype,
        compile=compiled,
        workers=0,
        log_every=0,
        preview_every=0,
        checkpoint_every=0,
    )
    run_dir = Path(tempfile.mkdtemp(dir=root))
    trainer = Trainer(cfg, run_dir, externals=externals, progress=False)
    for _ in range(warmup):
        trainer.train_step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - start)
    # On a shared machine other processes only ever add time: the fastest step is the cleanest figure.
    return batch / min(times), batch / float(np.median(times))


def cpu_name() -> str:
    """The CPU model and its bf16 instruction sets, from /proc/cpuinfo when there is one."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    extras = [flag for flag in ("avx512_bf16", "amx_bf16") if f" {flag}" in info]
    return " ".join([name or platform.machine(), *extras])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,ffhq256")
    parser.add_argument("--stages", default="pretrain-encoder,finetune")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--modes", default="eager,compiled")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant (compilation)")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default: 8 tiny, 2 otherwise)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()

    print(f"# {datetime.date.today()}  torch {torch.__version__}  {cpu_name()}  threads {torch.get_num_threads()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for preset in args.presets.split(","):
            folder = root / preset
            folder.mkdir()
            batch = args.batch or DEFAULT_BATCH.get(preset, 2)
            inputs = make_inputs(PRESETS[preset], folder, batch)
            dino = dino_for(preset) if "finetune" in args.stages else None
            for command in args.stages.split(","):
                for mode in args.modes.split(","):
                    for dtype in args.dtypes.split(","):
                        try:
                            best, median = measure(
                                command, preset, dtype, mode == "compiled", batch, args.steps, args.warmup,
                                inputs, dino, folder,
                            )  # fmt: skip
                            cells = (f"{best:.3g}", f"{median:.3g}")
                        except Exception as exc:  # a variant that cannot run here is reported, not fatal
                            traceback.print_exc()
                            cells = (f"failed ({type(exc).__name__})", "")
                        rows.append((command, preset, batch, mode, dtype, *cells))
                        print(
                            f"{command:17s} {preset:8s} batch {batch}  {mode:8s} {dtype:4s}  "
                            f"best {cells[0]}  median {cells[1]} img/s",
                            flush=True,
                        )
    if args.markdown:
        print("\n| stage | preset | batch | mode | dtype | images/s (best step) | images/s (median step) |")
        print("|---|---|---|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(str(x) for x in row) + " |")


if __name__ == "__main__":
    main()

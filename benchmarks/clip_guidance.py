"""CLIP guidance costs on this machine: `mmfs adapt` (phase 4) and `mmfs train-mapper` (phase 3).

Runs the real stages on the shared loop with random weights of the reference architectures, so no
download is needed and the work is the real work:

* `adapt` at the tiny preset: the whole command's library path (`run_adapt`: setup, the reference's
  200 steps at batch 8, the final checkpoint and the adapted file), tiny CLIP and tiny DINO;
* `adapt` at 512 px (ffhq512): seconds per optimizer step, one-shot (so the projection loss is on),
  with a random OpenAI-architecture ViT-B/32 CLIP and a random DINO ViT-B/8, fp32 and bf16 autocast;
* `train-mapper` at 256 px (ffhq256): images/s, random ViT-B/32 CLIP and the random Stage II D.

    python benchmarks/clip_guidance.py                       # everything (512 px adapt takes a while)
    python benchmarks/clip_guidance.py --skip-512 --markdown
    python benchmarks/clip_guidance.py --batch-512 2 --steps 2
"""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mmfs.checkpoint import module_state, save_checkpoint
from mmfs.config import PRESETS, ModelConfig
from mmfs.data.images import save_image
from mmfs.train import make_config
from mmfs.train.loop import Trainer


def write_photos(folder: Path, size: int, n: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        save_image(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), folder / f"{i}.png")
    return folder


def write_reference(path: Path) -> Path:
    ramp = np.linspace(0, 255, 300 * 400 * 3).reshape(300, 400, 3).astype(np.uint8)
    return save_image(ramp, path)


def reference_clip():
    """OpenAI's ViT-B/32 architecture (QuickGELU) with random weights, through open_clip's factory."""
    import open_clip

    from mmfs.external.clip import DEFAULT_MODEL, OpenClipEncoder

    model, _, preprocess = open_clip.create_model_and_transforms(DEFAULT_MODEL, force_quick_gelu=True)
    return OpenClipEncoder(model, open_clip.get_tokenizer(DEFAULT_MODEL), preprocess)


def reference_dino():
    """DINO ViT-B/8 (224 px) with random weights."""
    import timm

    from mmfs.external.dino import DEFAULT_MODEL, DinoViT

    return DinoViT(timm.create_model(DEFAULT_MODEL, pretrained=False))


def tiny_externals(model: ModelConfig) -> dict:
    from mmfs.external.tiny import tiny_clip, tiny_dino

    return {"clip": tiny_clip(embed_dim=model.clip_dim), "dino": tiny_dino()}


def adapt_tiny_seconds(root: Path, steps: int) -> tuple[float, float]:
    """Wall seconds of a whole tiny `adapt` run (`steps` steps, batch 8) and of its steps alone."""
    from mmfs.nn import Stylizer
    from mmfs.train.adapt import run_adapt
    from mmfs.train.log import read_log

    model = PRESETS["tiny"]
    torch.manual_seed(0)
    base = save_checkpoint(root / "tiny-base.safetensors", module_state(Stylizer(model, with_mapper=True)),
                           kind="stylizer", config=model)  # fmt: skip
    options = {"checkpoint": str(base), "photos": str(write_photos(root / "tiny-photos", model.resolution)),
               "ref": str(write_reference(root / "ref.png"))}  # fmt: skip
    cfg = make_config("adapt", model, options=options, steps=steps, device="cpu", workers=0, preview_every=0,
                      log_every=steps)  # fmt: skip
    externals = tiny_externals(model)
    start = time.perf_counter()
    _, run = run_adapt(cfg, root / "tiny-adapted.safetensors", run_dir=root / "runs", externals=externals,
                       progress=False)  # fmt: skip
    total = time.perf_counter() - start
    log = read_log(run / "log.jsonl")[-1]
    step_seconds = 1 / log["it/s"] if "it/s" in log else float("nan")
    return total, step_seconds


def time_steps(trainer: Trainer, steps: int, warmup: int) -> float:
    """Mean seconds per step of `steps` steps after `warmup` untimed ones."""
    for _ in range(warmup):
        trainer.train_step()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return (time.perf_counter() - start) / steps


def adapt_512_step(root: Path, dtype: str, batch: int, steps: int, warmup: int, externals: dict) -> float:
    from mmfs.nn import Stylizer

    model = PRESETS["ffhq512"]
    base = root / "ffhq512-base.safetensors"
    if not base.exists():
        torch.manual_seed(0)
        save_checkpoint(base, module_state(Stylizer(model, with_mapper=True)), kind="stylizer", config=model)
        write_photos(root / "photos512", 512)
    options = {"checkpoint": str(base), "photos": str(root / "photos512"), "ref": str(root / "ref.png")}
    cfg = make_config("adapt", model, options=options, steps=10**6, batch_size=batch, device="cpu", dtype=dtype,
                      workers=0, log_every=0, preview_every=0, checkpoint_every=0)  # fmt: skip
    trainer = Trainer(cfg, Path(tempfile.mkdtemp(dir=root)), externals=externals, progress=False)
    return time_steps(trainer, steps, warmup)


def mapper_256_images_per_s(root: Path, dtype: str, batch: int, steps: int, warmup: int, clip) -> float:
    from mmfs.nn import Discriminator, Stylizer

    model = PRESETS["ffhq256"]
    init = root / "ffhq256-stage2.safetensors"
    if not init.exists():
        torch.manual_seed(0)
        tensors = {**module_state(Stylizer(model), "stylizer_ema."), **module_state(Discriminator(model), "disc.")}
        save_checkpoint(init, tensors, kind="training", config=model)
        write_photos(root / "photos256", 256)
    options = {"photos": str(root / "photos256"), "init": str(init)}
    cfg = make_config("train-mapper", model, options=options, steps=10**6, batch_size=batch, device="cpu",
                      dtype=dtype, workers=0, log_every=0, preview_every=0, checkpoint_every=0)  # fmt: skip
    trainer = Trainer(cfg, Path(tempfile.mkdtemp(dir=root)), externals={"clip": clip}, progress=False)
    return batch / time_steps(trainer, steps, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny-steps", type=int, default=200, help="steps of the tiny adapt run (reference 200)")
    parser.add_argument("--batch-512", type=int, default=8, help="adapt batch at 512 px (reference 8)")
    parser.add_argument("--batch-256", type=int, default=8, help="train-mapper batch at 256 px")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per 512/256 variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per 512/256 variant")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--skip-512", action="store_true")
    parser.add_argument("--skip-256", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--tiny-threads", type=int, default=1, help="torch threads for the tiny run (tiny nets: 1 is fastest)"
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table at the end")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    print(f"# {datetime.date.today()}  torch {torch.__version__}  {platform.machine()}  threads {threads}")
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.set_num_threads(args.tiny_threads)
        total, per_step = adapt_tiny_seconds(root, args.tiny_steps)
        torch.set_num_threads(threads)
        rows.append((f"adapt (whole run, {args.tiny_threads} thread)", "tiny", "8", "fp32", f"{args.tiny_steps} steps",
                     f"{total:.1f} s", f"{per_step * 1000:.0f} ms/step"))  # fmt: skip
        print(rows[-1], flush=True)
        dtypes = args.dtypes.split(",")
        if not args.skip_512:
            externals = {"clip": reference_clip(), "dino": reference_dino()}
            for dtype in dtypes:
                sec = adapt_512_step(root, dtype, args.batch_512, args.steps, args.warmup, externals)
                rows.append(("adapt one-shot step", "ffhq512", str(args.batch_512), dtype, "1 step", f"{sec:.1f} s",
                             f"{args.batch_512 / sec:.3g} img/s"))  # fmt: skip
                print(rows[-1], flush=True)
        if not args.skip_256:
            clip = reference_clip()
            for dtype in dtypes:
                ips = mapper_256_images_per_s(root, dtype, args.batch_256, args.steps, args.warmup, clip)
                rows.append(("train-mapper step", "ffhq256", str(args.batch_256), dtype, "1 step",
                             f"{args.batch_256 / ips:.1f} s", f"{ips:.3g} img/s"))  # fmt: skip
                print(rows[-1], flush=True)
    if args.markdown:
        print("\n| what | preset | batch | dtype | unit | time | throughput |\n|---|---|---|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

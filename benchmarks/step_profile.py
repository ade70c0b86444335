"""Where one training step's time goes: Stage I, Stage II, the mapper and `adapt` on the shared loop.

Builds each stage as `mmfs` runs it (the real `Trainer`, random weights of the preset's architecture,
random image folders), runs `--warmup` untimed steps, times `--steps` steps (the median is quoted; for
Stage II a window of 16 steps includes one R1 step, as a run does), then profiles one more step with
`torch.profiler` and prints the operators with the most self CPU time, as a share of the step.

    python benchmarks/step_profile.py                                    # the demo's size: tiny64, batch 8
    python benchmarks/step_profile.py --preset ffhq512 --batch 2 --steps 1 --warmup 1 --top 10
    python benchmarks/step_profile.py --stages finetune --steps 32 --no-profile   # just steps/s
    python benchmarks/step_profile.py --stages finetune --compare ../before --rounds 3   # side by side
    python benchmarks/step_profile.py --stages finetune --compare ../before --before-env OMP_WAIT_POLICY=PASSIVE

The frozen networks are those of the preset: the tiny DINO and the demo's tiny CLIP for `tiny*`, DINO
ViT-B/8 and OpenAI's ViT-B/32 (random weights) otherwise. The script only uses `mmfs`'s public training
API, so pointing PYTHONPATH at another checkout times that checkout's code: `--compare OTHER` does that,
alternating runs of this checkout and OTHER (each a fresh process) and printing the ratio of their steps/s
round by round, so that a drift of the shared machine's speed hits both alike.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# As the `mmfs` command: OpenMP threads spin on idle cores and sleep on busy ones (set before torch loads).
try:
    from mmfs.utils.openmp import choose_wait_policy

    OPENMP_WAIT = choose_wait_policy()
except ImportError:  # a checkout from before the choice (`--compare`): the environment as given
    OPENMP_WAIT = os.environ.get("OMP_WAIT_POLICY", "OpenMP's default")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mmfs.checkpoint import module_state, save_checkpoint  # noqa: E402
from mmfs.config import PRESETS, ModelConfig  # noqa: E402
from mmfs.data.images import save_image  # noqa: E402
from mmfs.train import make_config  # noqa: E402
from mmfs.train.loop import Trainer  # noqa: E402

STAGES = ("pretrain-encoder", "finetune", "train-mapper", "adapt")


def make_inputs(model: ModelConfig, root: Path, batch: int) -> dict[str, Path]:
    """A random prior, a random Stylizer with its CLIP mapper, photo/art folders and a reference image."""
    from mmfs.nn import Discriminator, Generator, Stylizer

    torch.manual_seed(0)
    prior = save_checkpoint(
        root / "prior.safetensors",
        {**module_state(Generator(model), "g."), **module_state(Discriminator(model), "d.")},
        kind="prior",
        config=model,
    )
    stylizer = Stylizer(model, with_mapper=True)
    init = save_checkpoint(root / "init.safetensors", module_state(stylizer), kind="stylizer", config=model)
    rng = np.random.default_rng(0)
    size = model.resolution
    for name in ("photos", "art"):
        for i in range(max(8, 2 * batch)):
            save_image(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), root / name / f"{i}.png")
    ref = save_image(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), root / "ref.png")
    return {"prior": prior, "init": init, "photos": root / "photos", "art": root / "art", "ref": ref}


def externals_for(preset: str, model: ModelConfig) -> dict:
    """The frozen CLIP and DINO a stage gets: the demo's for tiny presets, the reference architectures else."""
    if preset.startswith("tiny"):
        from mmfs.external.build import build_dino
        from mmfs.external.tiny import load_tiny_clip, tiny_clip

        clip = tiny_clip(embed_dim=model.clip_dim)
        if preset == "tiny64":
            from mmfs.demo.clip import shipped_clip

            clip = load_tiny_clip(shipped_clip())
        return {"clip": clip, "dino": build_dino("tiny", image_size=model.resolution)}
    import open_clip
    import timm

    from mmfs.external.clip import DEFAULT_MODEL as CLIP_MODEL
    from mmfs.external.clip import OpenClipEncoder
    from mmfs.external.dino import DEFAULT_MODEL as DINO_MODEL
    from mmfs.external.dino import DinoViT

    clip_model, _, preprocess = open_clip.create_model_and_transforms(CLIP_MODEL, force_quick_gelu=True)
    clip = OpenClipEncoder(clip_model, open_clip.get_tokenizer(CLIP_MODEL), preprocess)
    return {"clip": clip, "dino": DinoViT(timm.create_model(DINO_MODEL, pretrained=False))}


def build_trainer(command: str, preset: str, batch: int, inputs: dict[str, Path], ext: dict, root: Path) -> Trainer:
    """The stage's `Trainer` as the CLI builds it (no previews, logs or checkpoints)."""
    model = PRESETS[preset]
    photos, init = str(inputs["photos"]), str(inputs["init"])
    options, externals = {
        "pretrain-encoder": ({"prior": str(inputs["prior"])}, {}),
        "finetune": (
            {"photos": photos, "art": str(inputs["art"]), "init": init, "disc": str(inputs["prior"])},
            {"dino": ext["dino"]},
        ),
        "train-mapper": ({"photos": photos, "init": init, "disc": str(inputs["prior"])}, {"clip": ext["clip"]}),
        "adapt": ({"photos": photos, "checkpoint": init, "ref": str(inputs["ref"])}, ext),
    }[command]
    cfg = make_config(
        command, model, options=options, steps=10**6, batch_size=batch, device="cpu", workers=0,
        log_every=0, preview_every=0, checkpoint_every=0,
    )  # fmt: skip
    return Trainer(cfg, Path(tempfile.mkdtemp(dir=root)), externals=externals, progress=False)


def step_times(trainer: Trainer, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - start)
    return times


def profile_step(trainer: Trainer, top: int) -> list[tuple[str, float, int]]:
    """(operator, self CPU seconds, calls) of one step, the largest first."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.train_step()
    rows = [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in prof.key_averages()]
    return sorted(rows, key=lambda r: -r[1])[:top]


def compare(args: argparse.Namespace) -> None:
    """Alternate this checkout and `args.compare` in fresh processes; print steps/s and their ratio per round."""
    here = Path(__file__).resolve().parents[1]
    other = Path(args.compare).resolve()
    command = [sys.executable, __file__, "--no-profile", "--preset", args.preset, "--batch", str(args.batch),
               "--stages", args.stages, "--steps", str(args.steps), "--warmup", str(args.warmup)]  # fmt: skip
    rates: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    for round_ in range(args.rounds):
        for label, root in (("before", other), ("after", here)):
            env = {**os.environ, "PYTHONPATH": str(root), **(dict(args.before_env) if label == "before" else {})}
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
            for stage, rate in re.findall(r"^(\S+) .*, ([0-9.]+) steps/s", out, flags=re.M):
                rates[label].setdefault(stage, []).append(float(rate))
        line = "  ".join(
            f"{stage} {rates['before'][stage][-1]:.2f} -> {rates['after'][stage][-1]:.2f} steps/s"
            f" ({rates['after'][stage][-1] / rates['before'][stage][-1]:.2f}x)"
            for stage in rates["after"]
        )
        print(f"round {round_ + 1} (load {os.getloadavg()[0]:.1f}): {line}", flush=True)
    for stage in rates["after"]:
        ratios = [a / b for a, b in zip(rates["after"][stage], rates["before"][stage], strict=True)]
        print(
            f"{stage}: before {statistics.median(rates['before'][stage]):.2f} steps/s, after"
            f" {statistics.median(rates['after'][stage]):.2f}; ratio per round median {statistics.median(ratios):.2f}x"
            f" (min {min(ratios):.2f}, max {max(ratios):.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny64")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--steps", type=int, default=16, help="timed steps per stage (the median is printed)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--top", type=int, default=12, help="operators listed per profiled step")
    parser.add_argument("--no-profile", action="store_true", help="only time the steps")
    parser.add_argument("--compare", metavar="CHECKOUT", help="time another checkout's code side by side (before)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds with --compare")
    parser.add_argument(
        "--before-env",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        type=lambda s: tuple(s.split("=", 1)),
        help="with --compare: an environment variable for the other checkout's runs only (e.g. the OpenMP"
        " wait policy it ran with: OMP_WAIT_POLICY=PASSIVE)",
    )
    args = parser.parse_args()
    if args.compare:
        compare(args)
        return

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# {datetime.date.today()}  torch {torch.__version__}  CPU {torch.backends.cpu.get_cpu_capability()}"
        f"  threads {torch.get_num_threads()}  load {load:.1f}  {args.preset} batch {args.batch}"
        f"  OpenMP waiting: {OPENMP_WAIT}",
        flush=True,
    )
    model = PRESETS[args.preset]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs = make_inputs(model, root, args.batch)
        ext = externals_for(args.preset, model)
        for command in args.stages.split(","):
            trainer = build_trainer(command, args.preset, args.batch, inputs, ext, root)
            step_times(trainer, args.warmup)
            times = step_times(trainer, args.steps)
            median, mean = statistics.median(times), statistics.fmean(times)
            print(
                f"{command:17s} median step {median * 1e3:8.1f} ms  mean {mean * 1e3:8.1f} ms"
                f"  ({args.batch / mean:.1f} img/s, {1 / mean:.2f} steps/s over {args.steps} steps)",
                flush=True,
            )
            if args.no_profile:
                continue
            total = median
            print("  | operator | self CPU ms | share of the median step | calls |\n  |---|---:|---:|---:|")
            for name, seconds, calls in profile_step(trainer, args.top):
                print(f"  | `{name}` | {seconds * 1e3:.1f} | {100 * seconds / total:.0f}% | {calls} |", flush=True)


if __name__ == "__main__":
    main()

"""`mmfs demo`: the whole method, offline, on a CPU, in minutes: data, five trainings, stylization, metrics.

Each step calls the library function its CLI command calls (`mmfs.train.train` with `make_config`,
`mmfs.train.stages.adapt.run_adapt`, `mmfs.stylize_files.stylize_files`, `mmfs.evaluate.evaluate`);
nothing is implemented twice. The steps, on the synthetic data of `mmfs.demo.synthetic`:

1. data: FFHQ-aligned synthetic "photos", the same kind of faces in four art styles (unpaired), held-out
   photos, one reference per style, and scikit-image's astronaut photo;
2. `train-prior` on the photos; 3. Stage I (`pretrain-encoder`) with that prior; 4. Stage II (`finetune`)
   on photos vs. all four art styles mixed (as AAHQ mixes styles); 5. `train-mapper`; 6. one-shot `adapt`
   from one art image; CLIP and DINO are the tiny random stand-ins (`--clip-model tiny`, `--tiny`);
7. stylize the held-out photos and the astronaut (dlib detection, alignment, paste-back) with random,
   reference-guided and adapted styles; 8. evaluate with tiny metric networks; 9. the contact sheet.

Everything goes under one output folder; every file is written atomically. The budgets are short and
the learning rates are raised for them (`DemoBudget`); each stage's EMA half-life is a tenth of its run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmfs.errors import MMFSError

SUMMARY = "summary.json"
SHEET = "contact_sheet.png"
EVALUATION = "evaluation.json"
# What the demo writes under its output folder; --overwrite removes exactly these, nothing else.
OWNED = ("data", "runs", "models", "stylized", SHEET, EVALUATION, SUMMARY)
ADAPT_STYLE = "popart"  # the art style of the one-shot reference (the most distinct of the four)


@dataclass(frozen=True)
class DemoBudget:
    """Sizes and step counts of one demo run."""

    preset: str = "tiny64"
    n_photos: int = 400  # training photos
    n_art_per_style: int = 100  # artworks per style (four styles)
    n_heldout: int = 6  # held-out photos in the contact sheet and the evaluation
    batch_size: int = 8
    prior_steps: int = 240  # the bulk of the run: 0.8-1.2 s/step on an AVX2-only 2-core CPU
    encoder_steps: int = 110
    finetune_steps: int = 90
    mapper_steps: int = 70
    adapt_steps: int = 40
    # Learning rates raised for the short runs (the references: 2e-3 prior, 2e-4, 1e-3, 2e-4, 2e-4).
    prior_lr: float = 0.002
    encoder_lr: float = 2e-3
    finetune_lr: float = 1e-3
    mapper_lr: float = 2e-3
    adapt_lr: float = 1e-3
    r1_gamma: float = 1.0  # 10 is tuned for 1024 px and long runs; a 64 px prior learns faster with less
    random_styles: int = 3  # rows of random styles in the contact sheet
    eval_n: int = 64  # stylized outputs measured
    previews: int = 4  # preview grids per training run (besides the one at step 0)
    cell: int = 96  # contact-sheet cell side in pixels


FULL = DemoBudget()
QUICK = DemoBudget(
    preset="tiny", n_photos=16, n_art_per_style=4, n_heldout=3, batch_size=4, prior_steps=4, encoder_steps=3,
    finetune_steps=3, mapper_steps=3, adapt_steps=2, random_styles=2, eval_n=8, previews=1, cell=64,
)  # fmt: skip


class Progress:
    """Numbered step headers with timings on stderr (the training bars come from the loop's tqdm)."""

    def __init__(self, total: int, echo: Callable[[str], None]) -> None:
        self.total, self.echo, self.index = total, echo, 0
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, key: str, title: str) -> Iterator[None]:
        self.index += 1
        self.echo(f"[{self.index}/{self.total}] {title}")
        start = time.perf_counter()
        yield
        self.seconds[key] = round(time.perf_counter() - start, 2)
        self.echo(f"      done in {self.seconds[key]:.1f} s")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare_outdir(outdir: Path, overwrite: bool) -> None:
    """Refuse a folder holding demo outputs unless `overwrite`; then delete only what the demo writes."""
    existing = [outdir / name for name in OWNED if (outdir / name).exists()]
    if outdir.exists() and not outdir.is_dir():
        raise MMFSError(f"{outdir}: exists and is not a folder; choose another --outdir")
    if existing and not overwrite:
        raise MMFSError(
            f"{outdir}: already holds demo outputs; pass --overwrite to replace them or choose another --outdir"
        )
    for path in existing:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    outdir.mkdir(parents=True, exist_ok=True)


def write_json(path: Path, data: Any) -> Path:
    from mmfs.utils.files import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return path


def run_demo(
    outdir: str | os.PathLike[str] = "demo_out",
    *,
    quick: bool = False,
    budget: DemoBudget | None = None,
    device: str = "auto",
    seed: int = 0,
    overwrite: bool = False,
    threads: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    """Run every step of the demo into `outdir`; returns the summary (also written as `summary.json`).

    Args:
        quick: the tiny budget (`QUICK`, for tests: about a minute) instead of `FULL`.
        budget: explicit sizes and steps (overrides `quick`).
        device: auto, cpu, cuda or cuda:N.
        threads: torch CPU threads for the run (restored afterwards); None keeps torch's setting.
        progress: show the training progress bars.
    """
    import torch

    from mmfs.utils.device import pick_device

    budget = budget or (QUICK if quick else FULL)
    outdir = Path(outdir)
    dev = pick_device(device)  # a bad device fails before anything is written
    prepare_outdir(outdir, overwrite)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    run_threads = torch.get_num_threads()
    started = time.perf_counter()
    steps = Progress(9, echo)
    try:
        paths = _train_all(outdir, budget, str(dev), seed, steps, progress)
        from mmfs.demo.sheet import stylize_all

        with steps.step("stylize", "stylizing held-out photos and the astronaut (random, reference, adapted styles)"):
            content = stylize_all(outdir, paths, budget, dev, seed)
        with steps.step("evaluate", f"evaluating {budget.eval_n} stylized outputs with TINY metric networks"):
            report = _evaluate(outdir, paths, budget, str(dev), seed, progress)
        from mmfs.demo.sheet import write_contact_sheet

        with steps.step("sheet", "writing the contact sheet"):
            sheet = write_contact_sheet(outdir / SHEET, content, budget.cell)
        for note in content.notes:
            echo(f"warning: {note}")
    finally:
        torch.set_num_threads(old_threads)
    summary = _summary(outdir, budget, quick, str(dev), run_threads, seed, paths, report, sheet, steps.seconds, started)
    summary["warnings"] = content.notes
    write_json(outdir / SUMMARY, summary)
    echo(f"demo finished in {summary['seconds']['total']:.0f} s: contact sheet {sheet}, summary {outdir / SUMMARY}")
    return summary


def _train_all(outdir: Path, b: DemoBudget, device: str, seed: int, steps: Progress, progress: bool) -> dict[str, Path]:
    """Steps 1-6: the data and every training stage; returns the paths later steps use."""
    from mmfs.config import get_preset
    from mmfs.demo.synthetic import STYLES
    from mmfs.train import make_config, train
    from mmfs.train.stages.adapt import run_adapt

    model = get_preset(b.preset)
    data, runs = outdir / "data", outdir / "runs"
    with steps.step(
        "data", f"making synthetic data: {b.n_photos} photos, {b.n_art_per_style} artworks x {len(STYLES)} styles"
    ):
        paths = _make_data(data, b, model.resolution, seed)

    def loop(stage_steps: int, lr: float) -> dict[str, Any]:
        return {
            "steps": stage_steps, "batch_size": b.batch_size, "lr": lr, "seed": seed, "device": device,
            "workers": 0, "checkpoint_every": 0, "preview_every": max(1, stage_steps // b.previews),
            "log_every": max(1, stage_steps // 10), "ema_decay": 0.5 ** (10 / stage_steps),
        }  # fmt: skip

    def run(command: str, options: dict[str, Any], stage_steps: int, lr: float, **extra: Any) -> Path:
        cfg = make_config(command, model, options=options, **{**loop(stage_steps, lr), **extra})
        return train(cfg, outdir=runs, progress=progress)

    photos = str(paths["photos"])
    with steps.step("prior", f"train-prior: a StyleGAN2 prior on the photos ({b.prior_steps} steps)"):
        # Path-length regularisation is off: it costs a double backward that a 64 px demo cannot afford.
        prior_run = run("train-prior", {"photos": photos, "r1_gamma": b.r1_gamma, "path_reg": 0.0}, b.prior_steps,
                        b.prior_lr)  # fmt: skip
        paths["prior"] = prior_run / "final.safetensors"
    with steps.step(
        "encoder", f"Stage I, pretrain-encoder: align the encoder with the prior ({b.encoder_steps} steps)"
    ):
        encoder_run = run("pretrain-encoder", {"prior": str(paths["prior"])}, b.encoder_steps, b.encoder_lr)
        paths["encoder"] = encoder_run / "final.safetensors"
    with steps.step("finetune", f"Stage II, finetune: photos vs. four art styles mixed ({b.finetune_steps} steps)"):
        options = {"photos": photos, "art": str(paths["art"]), "init": str(paths["encoder"]), "dino": "tiny"}
        paths["finetune_run"] = run("finetune", options, b.finetune_steps, b.finetune_lr)
        paths["finetune"] = paths["finetune_run"] / "final.safetensors"
    with steps.step("mapper", f"train-mapper: the CLIP -> w+ mapper, tiny CLIP ({b.mapper_steps} steps)"):
        from mmfs.train.stages.mapper import resolve_init

        options = {"photos": photos, "init": str(resolve_init(paths["finetune_run"])), "clip_model": "tiny"}
        paths["mapper"] = run("train-mapper", options, b.mapper_steps, b.mapper_lr) / "final.safetensors"
    with steps.step("adapt", f"adapt: one-shot from one {ADAPT_STYLE} artwork ({b.adapt_steps} steps)"):
        options = {"checkpoint": str(paths["mapper"]), "photos": photos, "ref": str(paths["adapt_ref"]),
                   "clip_model": "tiny", "dino": "tiny"}  # fmt: skip
        cfg = make_config("adapt", model, options=options, **loop(b.adapt_steps, b.adapt_lr))
        paths["adapted"], _ = run_adapt(
            cfg, outdir / "models" / f"adapted-{ADAPT_STYLE}.safetensors", run_dir=runs, progress=progress
        )
    return paths


def _make_data(root: Path, b: DemoBudget, size: int, seed: int) -> dict[str, Path]:
    """Training photos and art, held-out photos, one unseen reference per style, the astronaut photo."""
    import numpy as np
    from skimage import data as skdata

    from mmfs.data.images import save_image
    from mmfs.demo.synthetic import STYLES, make_dataset

    train = make_dataset(root, n_photos=b.n_photos, n_art_per_style=b.n_art_per_style, size=size, seed=seed)
    # Other seeds than the training set's: these faces were never seen in training.
    heldout = make_dataset(root / "heldout", n_photos=b.n_heldout, n_art_per_style=0, size=size, seed=seed + 1000)
    refs = make_dataset(root / "refs", n_photos=0, n_art_per_style=1, size=size, seed=seed + 2000)
    paths = {"photos": train["photos"], "art": train["art"], "heldout": heldout["photos"]}
    paths["refs"] = [next(refs[style].iterdir()) for style in STYLES]
    paths["adapt_ref"] = next(train[ADAPT_STYLE].iterdir())
    paths["astronaut"] = save_image(np.ascontiguousarray(skdata.astronaut()), root / "astronaut.png")
    return paths


def _evaluate(outdir: Path, paths: dict[str, Path], b: DemoBudget, device: str, seed: int, progress: bool) -> dict:
    """`mmfs evaluate` on the held-out photos with tiny random metric networks (the numbers are not comparable)."""
    from mmfs.evaluate import evaluate, write_report

    report = evaluate(paths["mapper"], paths["heldout"], paths["art"], n=b.eval_n, seed=seed, batch_size=b.batch_size,
                      device=device, fid_cache=False, tiny_metrics=True, progress=progress)  # fmt: skip
    write_report(report, outdir / EVALUATION)
    return report


def _summary(
    outdir: Path, b: DemoBudget, quick: bool, device: str, threads: int, seed: int, paths: dict[str, Any], report: dict,
    sheet: Path, seconds: dict[str, float], started: float,
) -> dict[str, Any]:  # fmt: skip
    """The JSON summary: settings, timings, every checkpoint, the metrics (flagged as not comparable)."""
    from mmfs.evaluate import package_versions

    def rel(p: Path) -> str:
        return os.path.relpath(p, outdir)

    return {
        "format": "mmfs-demo",
        "quick": quick,
        "device": device,
        "torch_threads": threads,
        "seed": seed,
        "budget": dataclasses.asdict(b),
        "checkpoints": {k: rel(paths[k]) for k in ("prior", "encoder", "finetune", "mapper", "adapted")},
        "contact_sheet": rel(sheet),
        "evaluation": EVALUATION,
        "metrics": report["metrics"],
        "metrics_comparable": False,
        "metrics_note": "tiny random stand-in metric networks on synthetic data: NOT comparable with any published number",
        "seconds": {**seconds, "total": round(time.perf_counter() - started, 2)},
        "versions": package_versions(),
    }

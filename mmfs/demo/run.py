"""`mmfs demo`: the whole method, offline, on a CPU, in minutes: data, four trainings, stylization, measures.

Each step calls the library function its CLI command calls (`mmfs.train.train` with `make_config`,
`mmfs.train.adapt.run_adapt`, `mmfs.inference.files.stylize_files`, `mmfs.inference.evaluate.evaluate`);
nothing is implemented twice. The steps, on the synthetic data of `mmfs.demo.synthetic`:

1. data: FFHQ-aligned synthetic "photos", the same kind of faces in four art styles (unpaired), held-out
   photos, one reference per style, and scikit-image's astronaut photo;
2. the prior: the one shipped with mmfs (`mmfs.demo.prior`), or `train-prior` from scratch with its recipe
   (`train_prior=True`); 3. Stage I (`pretrain-encoder`) with that prior; 4. Stage II (`finetune`) on
   photos vs. all four art styles mixed (as AAHQ mixes styles); 5. `train-mapper`; 6. one-shot `adapt`
   from each style's reference image; CLIP is the tiny CLIP shipped with mmfs, trained on the same synthetic
   faces (`mmfs.demo.clip`; `train_clip=True` retrains it), DINO the tiny random stand-in (`--dino tiny`);
7. stylize the held-out photos and the astronaut (dlib detection, alignment, paste-back) with random,
   reference-guided and adapted styles; 8. the structure measure (`mmfs.demo.measure`); 9. evaluate with
   tiny metric networks; 10. the contact sheet.

Everything goes under one output folder; every file is written atomically. The budgets are short and
the recipe is changed for them where `RECIPE_NOTES` says (`DemoBudget` holds the numbers).
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

from mmfs.config.demo import DemoRequest
from mmfs.demo.clip import ClipRecipe
from mmfs.errors import MMFSError

SUMMARY = "summary.json"
SHEET = "contact_sheet.png"
EVALUATION = "evaluation.json"
# What the demo writes under its output folder; --overwrite removes exactly these, nothing else.
OWNED = ("data", "runs", "models", "stylized", SHEET, EVALUATION, SUMMARY)
# Where the demo's short runs leave the reference recipes (also in summary.json and docs/demo.md).
RECIPE_NOTES = (
    "learning rates raised for the short runs: Stage I 1e-2 (reference 2e-4), Stage II 5e-3 (1e-3), mapper 1e-3"
    " (2e-4), adapt 2e-3 (2e-4)",
    "each stage's EMA half-life is a tenth of its run (reference: 0.999 per step, 0.99 for adapt)",
    "Stage I starts decoder0 / to_rgb0 from the prior's 16 px conv and ToRGB (reference: random), with batch 4"
    " (reference 8) and feature-loss weight 1 (reference 4), so it rebuilds the eyes within its 800 steps",
    "Stage II: R1 gamma 1 (reference 10); adapt: DINO-structure weight 1.0 (reference 0.5)",
    "CLIP: a tiny CLIP (64 px, 1.9 M parameters) trained on captioned synthetic faces in the demo's styles"
    " (reference: OpenAI's ViT-B/32); the reference rows show the mapper's reading of each reference and one"
    " `adapt --ref` model per reference style, labelled as one-shot adapted",
    "the prior: R1 gamma 1 instead of 10 and no path-length regularisation (64 px)",
    "stylized, and the training previews rendered, without noise inputs (mmfs stylize --noise zero,"
    " --preview-noise zero): after minutes at 64 px they only add speckle",
)


@dataclass(frozen=True)
class DemoBudget:
    """Sizes and step counts of one demo run."""

    preset: str = "tiny64"
    n_photos: int = 400  # training photos
    n_art_per_style: int = 100  # artworks per style (four styles)
    n_heldout: int = 6  # held-out photos in the contact sheet
    n_measure: int = 32  # held-out photos the structure measure identifies among (the sheet's first)
    batch_size: int = 8
    # The prior's recipe: the shipped prior was trained with it; `--train-prior` reruns it from scratch.
    prior_photos: int = 4000  # its photos (the first `n_photos` of them are the demo's training photos)
    prior_steps: int = 4000  # about an hour on two cores; its samples are clearly faces from about 3000
    prior_batch_size: int = 16
    prior_lr: float = 0.002  # rosinality's
    r1_gamma: float = 1.0  # 10 is tuned for 1024 px; a 64 px prior learns faster with less
    encoder_steps: int = 800
    encoder_batch_size: int = 4  # twice the steps at half the batch: the same images, sharper within the time
    finetune_steps: int = 600  # from about 450 one random style paints pop art (flat yellow, cyan, outlines)
    mapper_steps: int = 200
    adapt_steps: int = 80
    # Learning rates raised for the short runs (the references: 2e-4, 1e-3, 2e-4, 2e-4).
    encoder_lr: float = 1e-2
    finetune_lr: float = 5e-3
    mapper_lr: float = 1e-3  # 3e-3 and 1e-2 fit the styles worse (mapper-only runs from one Stage II)
    adapt_lr: float = 2e-3  # with the trained tiny CLIP: at 1e-3 and structure 2.0 the rows kept the mapper's look
    # Stage I: decoder0 / to_rgb0 from the prior's F px layers (reference: random) and its feature weight
    # (reference 4). Measured on 32 prior samples: PSNR 21.8 dB (reference start, 400 x 8) -> 26.5 dB, the eyes back.
    encoder_first_layers_from_prior: bool = True
    encoder_feat: float = 1.0
    # DINO-structure weights: Stage II keeps the reference's 0.5 (the tiny DINO's 16 x 16 patches hold the
    # layout; with 4 x 4 it needed 2.0 and the styles varied less); adapt 1.0 (with the random tiny CLIP
    # 0.5 lost the adapted faces' layout within 80 steps; with the trained one 2.0 held the look back).
    # Stage II's R1 weight: reference 10; 1 lets the Stylizer move within a few hundred steps.
    finetune_structure: float = 0.5
    adapt_structure: float = 1.0
    finetune_r1_gamma: float = 1.0
    clip: ClipRecipe = ClipRecipe()  # the shipped tiny CLIP's recipe; `--train-clip` reruns it
    random_styles: int = 4  # rows of random styles in the contact sheet
    eval_n: int = 64  # stylized outputs measured
    previews: int = 4  # preview grids per training run (besides the one at step 0)
    cell: int = 96  # contact-sheet cell side in pixels


FULL = DemoBudget()
QUICK = DemoBudget(
    n_photos=16, n_art_per_style=4, n_heldout=3, n_measure=8, batch_size=4, prior_photos=16, prior_steps=4,
    prior_batch_size=4, encoder_steps=3, finetune_steps=3, mapper_steps=3, adapt_steps=2, random_styles=2, eval_n=8,
    previews=1, cell=64, clip=ClipRecipe(faces=4, steps=2, batch_size=8),
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
    request: DemoRequest,
    *,
    budget: DemoBudget | None = None,
    device: str = "auto",
    progress: bool = True,
    echo: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    """Run every step of the demo into `request.outdir`; returns the summary (also written as `summary.json`).

    `request` holds the `mmfs demo` options (`--quick`: the `QUICK` budget, for tests: about 15 s, instead
    of `FULL`; `--threads`: torch CPU threads for the run, restored afterwards). `budget` overrides the
    request's choice of sizes and steps; `device` is auto, cpu, cuda or cuda:N; `progress` shows the
    training progress bars.
    """
    from mmfs.utils.openmp import choose_wait_policy

    # Before torch loads (the `mmfs` command has chosen already): spin on idle cores, sleep on busy ones.
    openmp_wait = choose_wait_policy()
    import torch

    from mmfs.utils.device import pick_device

    quick, seed, threads = request.quick, request.seed, request.threads
    budget = budget or (QUICK if quick else FULL)
    outdir = Path(request.outdir)
    dev = pick_device(device)  # a bad device fails before anything is written
    # A missing shipped file fails before anything is written.
    if not request.train_prior:
        from mmfs.demo.prior import shipped_prior

        shipped_prior()
    if not request.train_clip:
        from mmfs.demo.clip import shipped_clip

        shipped_clip()
    prepare_outdir(outdir, request.overwrite)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    run_threads = torch.get_num_threads()
    started = time.perf_counter()
    steps = Progress(11, echo)
    try:
        paths = _train_all(outdir, budget, str(dev), request, steps, progress)
        from mmfs.demo.measure import measure_structure
        from mmfs.demo.sheet import load_styles, stylize_all, write_contact_sheet

        with steps.step("stylize", "stylizing held-out photos and the astronaut (random, reference, adapted styles)"):
            styles = load_styles(paths, budget, dev, seed)
            content = stylize_all(outdir, paths, styles, budget, seed)
        with steps.step("measure", f"structure kept? each stylized face identified among {budget.n_measure} sources"):
            structure = measure_structure(styles, paths["measure"])
        with steps.step("evaluate", f"evaluating {budget.eval_n} stylized outputs with TINY metric networks"):
            report = _evaluate(outdir, paths, budget, str(dev), seed, progress)
        with steps.step("sheet", "writing the contact sheet"):
            sheet = write_contact_sheet(outdir / SHEET, content, budget.cell)
        for note in content.notes:
            echo(f"warning: {note}")
    finally:
        torch.set_num_threads(old_threads)
    summary = _summary(outdir, budget, quick, str(dev), run_threads, seed, paths, report, sheet, steps.seconds, started)
    summary["structure"] = structure
    summary["openmp_wait"] = openmp_wait
    summary["warnings"] = content.notes
    write_json(outdir / SUMMARY, summary)
    echo(
        f"structure kept: {structure['mean']:.2f} of the stylized faces identified as their own source"
        f" (chance {structure['chance']:.2f})"
    )
    echo(f"demo finished in {summary['seconds']['total']:.0f} s: contact sheet {sheet}, summary {outdir / SUMMARY}")
    return summary


def _train_all(
    outdir: Path, b: DemoBudget, device: str, request: DemoRequest, steps: Progress, progress: bool
) -> dict[str, Any]:
    """Steps 1-7: the data, the prior and the tiny CLIP (shipped or trained) and every training stage.

    Returns the paths later steps use.
    """
    from mmfs.config import get_preset
    from mmfs.demo.sheet import STYLIZE_NOISE
    from mmfs.demo.synthetic import STYLES
    from mmfs.train import make_config, train
    from mmfs.train.adapt import run_adapt

    seed, train_prior = request.seed, request.train_prior
    model = get_preset(b.preset)
    data, runs = outdir / "data", outdir / "runs"
    title = f"making synthetic data: {b.n_photos} photos, {b.n_art_per_style} artworks x {len(STYLES)} styles"
    with steps.step("data", title + (f", {b.prior_photos} photos for the prior" if train_prior else "")):
        paths = _make_data(data, b, model.resolution, seed, train_prior)

    def loop(stage_steps: int, lr: float) -> dict[str, Any]:
        return {
            "steps": stage_steps, "batch_size": b.batch_size, "lr": lr, "seed": seed, "device": device,
            "workers": 0, "checkpoint_every": 0, "preview_every": max(1, stage_steps // b.previews),
            "log_every": max(1, stage_steps // 10), "ema_decay": 0.5 ** (10 / stage_steps),
            "preview_noise": STYLIZE_NOISE,  # the previews render as the contact sheet does
        }  # fmt: skip

    def run(command: str, options: dict[str, Any], stage_steps: int, lr: float, **extra: Any) -> Path:
        cfg = make_config(command, model, options=options, **{**loop(stage_steps, lr), **extra})
        return train(cfg, outdir=runs, progress=progress)

    photos = str(paths["photos"])
    if train_prior:
        with steps.step("prior", f"train-prior: a StyleGAN2 prior from scratch ({b.prior_steps} steps)"):
            paths["prior"] = _train_prior(outdir, b, model, device, seed, str(paths["prior_photos"]), progress)
    else:
        from mmfs.demo.prior import shipped_prior

        with steps.step("prior", "the shipped StyleGAN2 prior (trained on these photos; --train-prior retrains it)"):
            paths["prior"] = shipped_prior()
    if request.train_clip:
        from mmfs.demo.clip import train_tiny_clip

        clip_recipe = dataclasses.replace(b.clip, seed=seed)
        with steps.step("clip", f"a tiny CLIP from scratch on {clip_recipe.faces} captioned faces x 5 looks"
                                f" ({clip_recipe.steps} steps)"):  # fmt: skip
            paths["clip"] = train_tiny_clip(outdir / "models" / "clip-tiny.safetensors", clip_recipe, device=device,
                                            progress=progress)  # fmt: skip
    else:
        from mmfs.demo.clip import shipped_clip

        with steps.step("clip", "the shipped tiny CLIP (trained on these synthetic faces; --train-clip retrains it)"):
            paths["clip"] = shipped_clip()
    clip = {"clip_model": "tiny", "clip_weights": str(paths["clip"])}
    with steps.step(
        "encoder", f"Stage I, pretrain-encoder: align the encoder with the prior ({b.encoder_steps} steps)"
    ):
        options = {"prior": str(paths["prior"]), "feat": b.encoder_feat,
                   "first_layers_from_prior": b.encoder_first_layers_from_prior}  # fmt: skip
        encoder_run = run("pretrain-encoder", options, b.encoder_steps, b.encoder_lr, batch_size=b.encoder_batch_size)
        paths["encoder"] = encoder_run / "final.safetensors"
    with steps.step("finetune", f"Stage II, finetune: photos vs. four art styles mixed ({b.finetune_steps} steps)"):
        options = {"photos": photos, "art": str(paths["art"]), "init": str(paths["encoder"]), "dino": "tiny",
                   "structure": b.finetune_structure, "r1_gamma": b.finetune_r1_gamma}  # fmt: skip
        paths["finetune_run"] = run("finetune", options, b.finetune_steps, b.finetune_lr)
        paths["finetune"] = paths["finetune_run"] / "final.safetensors"
    with steps.step("mapper", f"train-mapper: the CLIP -> w+ mapper, tiny CLIP ({b.mapper_steps} steps)"):
        from mmfs.train.stages.mapper import resolve_init

        options = {"photos": photos, "init": str(resolve_init(paths["finetune_run"])), **clip}
        paths["mapper"] = run("train-mapper", options, b.mapper_steps, b.mapper_lr) / "final.safetensors"
    # One adapted decoder per reference: the mapper can only pick among the looks Stage II learnt, while
    # adapting on each reference moves the decoder towards it.
    title = f"adapt: one-shot from each style's reference ({len(paths['refs'])} x {b.adapt_steps} steps)"
    with steps.step("adapt", title):
        paths["adapted"] = {}
        for ref in paths["refs"]:
            options = {"checkpoint": str(paths["mapper"]), "photos": photos, "ref": str(ref), **clip, "dino": "tiny",
                       "structure": b.adapt_structure}  # fmt: skip
            cfg = make_config("adapt", model, options=options, **loop(b.adapt_steps, b.adapt_lr))
            out = outdir / "models" / f"adapted-{ref.parent.name}.safetensors"
            paths["adapted"][ref.parent.name], _ = run_adapt(cfg, out, run_dir=runs, progress=progress)
    return paths


def _train_prior(outdir: Path, b: DemoBudget, model: Any, device: str, seed: int, photos: str, progress: bool) -> Path:
    """`train-prior` with the budget's recipe (the shipped prior's), exported in fp16 as the shipped file is."""
    from mmfs.demo.prior import export_prior
    from mmfs.train import make_config, train

    # The loop's own EMA (rosinality's half-life) and no path-length term: its double backward costs more
    # than it gives at 64 px. Checkpoints every tenth of the run, so a long run can be resumed.
    options = {"photos": photos, "r1_gamma": b.r1_gamma, "path_reg": 0.0}
    every = max(1, b.prior_steps // 10)
    cfg = make_config("train-prior", model, options=options, steps=b.prior_steps, batch_size=b.prior_batch_size,
                      lr=b.prior_lr, seed=seed, device=device, workers=0, checkpoint_every=every,
                      preview_every=every, log_every=max(1, b.prior_steps // 100))  # fmt: skip
    started = time.perf_counter()
    run_dir = train(cfg, outdir=outdir / "runs", progress=progress)
    recipe = {"photos": b.prior_photos, "steps": b.prior_steps, "batch_size": b.prior_batch_size, "lr": b.prior_lr,
              "r1_gamma": b.r1_gamma, "path_reg": 0.0, "seed": seed,
              "wall_seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    return export_prior(run_dir / "final.safetensors", outdir / "models" / "prior.safetensors", recipe=recipe)


def _make_data(root: Path, b: DemoBudget, size: int, seed: int, train_prior: bool) -> dict[str, Any]:
    """Training photos and art, held-out photos, one unseen reference per style, the astronaut photo.

    With `train_prior`, also the prior's photos: the same random stream, so the first `n_photos` of them
    are the training photos and the rest continue it (the shipped prior was trained on exactly these).
    """
    import numpy as np
    from skimage import data as skdata

    from mmfs.data.images import save_image
    from mmfs.demo.synthetic import STYLES, make_dataset

    train = make_dataset(root, n_photos=b.n_photos, n_art_per_style=b.n_art_per_style, size=size, seed=seed)
    # Other seeds than the training set's: these faces were never seen in training. The sheet shows the
    # first `n_heldout`; the structure measure uses the first `n_measure`.
    count = max(b.n_heldout, b.n_measure)
    heldout = make_dataset(root / "heldout", n_photos=count, n_art_per_style=0, size=size, seed=seed + 1000)
    refs = make_dataset(root / "refs", n_photos=0, n_art_per_style=1, size=size, seed=seed + 2000)
    files = sorted(heldout["photos"].iterdir())
    paths: dict[str, Any] = {"photos": train["photos"], "art": train["art"], "heldout": heldout["photos"]}
    paths["sheet_heldout"], paths["measure"] = files[: b.n_heldout], files[: b.n_measure]
    paths["refs"] = [next(refs[style].iterdir()) for style in STYLES]
    paths["astronaut"] = save_image(np.ascontiguousarray(skdata.astronaut()), root / "astronaut.png")
    if train_prior:
        prior = make_dataset(root / "prior", n_photos=b.prior_photos, n_art_per_style=0, size=size, seed=seed)
        paths["prior_photos"] = prior["photos"]
    return paths


def _evaluate(outdir: Path, paths: dict[str, Any], b: DemoBudget, device: str, seed: int, progress: bool) -> dict:
    """`mmfs evaluate` on the held-out photos with tiny random metric networks (the numbers are not comparable)."""
    from mmfs.config.evaluate import EvaluateRequest
    from mmfs.inference.evaluate import evaluate, write_report

    request = EvaluateRequest(paths["mapper"], paths["heldout"], paths["art"], n=b.eval_n, seed=seed,
                              batch_size=b.batch_size, no_fid_cache=True, report=outdir / EVALUATION,
                              tiny_metrics=True)  # fmt: skip
    report = evaluate(request, device=device, progress=progress)
    write_report(report, request.report)
    return report


def _summary(
    outdir: Path, b: DemoBudget, quick: bool, device: str, threads: int, seed: int, paths: dict[str, Any], report: dict,
    sheet: Path, seconds: dict[str, float], started: float,
) -> dict[str, Any]:  # fmt: skip
    """The JSON summary: settings, timings, every checkpoint, the metrics (flagged as not comparable)."""
    from mmfs.checkpoint import read_metadata
    from mmfs.demo.clip import SHIPPED_CLIP
    from mmfs.demo.clip import describe as describe_clip
    from mmfs.inference.evaluate import package_versions

    def rel(p: Path) -> str:
        return os.path.relpath(p, outdir)

    prior_meta = {k.removeprefix("mmfs."): v for k, v in read_metadata(paths["prior"]).items()}
    return {
        "format": "mmfs-demo",
        "quick": quick,
        "device": device,
        "torch_threads": threads,
        "seed": seed,
        "budget": dataclasses.asdict(b),
        "recipe_notes": RECIPE_NOTES,
        "prior": {
            "path": str(paths["prior"]),
            "shipped": "prior_photos" not in paths,
            "recipe": json.loads(prior_meta.get("recipe", "null")),
            "step": prior_meta.get("step"),
        },
        "clip": {"path": str(paths["clip"]), "shipped": paths["clip"] == SHIPPED_CLIP, **describe_clip(paths["clip"])},
        "checkpoints": {
            **{k: rel(paths[k]) for k in ("encoder", "finetune", "mapper")},
            "adapted": {style: rel(path) for style, path in paths["adapted"].items()},
        },
        "contact_sheet": rel(sheet),
        "evaluation": EVALUATION,
        "metrics": report["metrics"],
        "metrics_comparable": False,
        "metrics_note": "tiny random stand-in metric networks on synthetic data: NOT comparable with any published number",
        "seconds": {**seconds, "total": round(time.perf_counter() - started, 2)},
        "versions": package_versions(),
    }

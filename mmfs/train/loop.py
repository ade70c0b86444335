"""The one training loop every stage runs on.

It owns what stages must not: which parameters require grad, zero_grad/backward/step per phase,
gradient accumulation, autocast, DDP, EMA, logging, previews, checkpoints and bit-exact resume.

Resuming continues bit for bit because everything random is either restored (torch/CUDA/Python/NumPy
RNG states of every rank, optimizer moments, EMA weights) or a pure function of the step (the data
order, see `mmfs.data.datasets`), and previews draw from their own generators. (`--compile` may use
different kernels and random streams than eager mode; resume with the same setting.)

Where this is verified (docs/cli.md, "What runs where"): on the CPU, by tests (2 + 2 steps == 4 steps,
also under 2-process torchrun). On CUDA the same holds only with `--deterministic`: without it, cuDNN's
autotuner and the backward passes of some kernels (convolutions, bilinear resizing, fused attention)
may differ from run to run, so a resume is exact only up to them. `benchmarks/gpu_smoke.sh` checks both
on a GPU machine.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mmfs.checkpoint import load_state_strict, save_checkpoint
from mmfs.config.train import TrainConfig
from mmfs.errors import MMFSError
from mmfs.train import state as st
from mmfs.train.distributed import Dist, init_distributed, wrap_ddp
from mmfs.train.ema import Ema
from mmfs.train.log import StatsLog, truncate_log
from mmfs.train.stage import Stage, StepContext
from mmfs.train.stages import get_stage
from mmfs.utils.device import (
    autocast,
    keeping_backend_settings,
    native_bf16,
    parse_dtype,
    set_tf32,
    set_training_kernels,
)
from mmfs.utils.files import remove_partials
from mmfs.utils.seed import get_rng_state, seed_everything, set_rng_state


class TrainingDiverged(MMFSError):
    """A loss became NaN or infinite; nothing after the last good checkpoint was saved."""


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """fp32 or bf16 (autocast; `LoopConfig.dtype` holds no other); `auto`, found only in runs saved before fp32
    became the default, is bf16 autocast on CUDA (when supported) and fp32 elsewhere, as those runs trained."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and native_bf16(device) else torch.float32
    return parse_dtype(name)


class Trainer:
    """Sets up a stage, then runs its steps. `train()` below is the usual entry point.

    Args:
        cfg: the run's configuration (ignored in favour of the saved one when resuming, except `steps`).
        run_dir: the run directory (created by `train()`; reused when resuming).
        resume: continue from `run_dir`'s latest checkpoint.
        externals: pre-built frozen networks handed to the stage (e.g. `dino=tiny_dino()` in tests).
        progress: show a tqdm bar on rank 0.
        on_step: called as `on_step(step, total)` after every step (e.g. a page's progress bar); an
            exception it raises stops the run there, before anything final is written (a cancel button).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        *,
        resume: bool = False,
        externals: dict[str, Any] | None = None,
        progress: bool = True,
        dist_info: tuple[Dist, torch.device] | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> None:
        self.cfg, self.run_dir, self.progress, self.on_step = cfg, run_dir, progress, on_step
        self.dist, self.device = dist_info or init_distributed(cfg.loop.device)
        loop = cfg.loop
        world = self.dist.world_size
        if loop.batch_size % (loop.accum * world):
            raise MMFSError(f"batch size {loop.batch_size} is not divisible by accum ({loop.accum}) x GPUs ({world})")
        self.micro_batch = loop.batch_size // (loop.accum * world)
        self.dtype = resolve_dtype(loop.dtype, self.device)
        set_tf32(loop.tf32)  # set either way: the process may have allowed TF32 before (PyTorch does for convs)
        set_training_kernels(deterministic=loop.deterministic)  # before any model: cuBLAS reads its workspace once

        seed_everything(loop.seed)  # identical initial weights on every rank
        self.stage: Stage = get_stage(cfg.command)(cfg, self.device, **(externals or {}))
        self.phases = self.stage.phases()
        trainable = self.stage.trainable_parameters()
        ids = {id(p) for p in trainable}
        for net in self.stage.nets.values():  # the loop owns requires_grad: only optimised params ever train
            for p in net.parameters():
                p.requires_grad_(id(p) in ids)
        self.trainable = trainable
        self.emas = [
            Ema(
                self.stage.nets[e.source],
                self.stage.nets[e.target],
                e.decay,
                [p for p in self.stage.nets[e.source].parameters() if id(p) in ids],
            )
            for e in self.stage.ema()
        ]
        self.step = 0
        self.skipped: set[str] = set()
        self._rng: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
        self._reported: set[str] = set()
        # Phase name -> "some loss of this phase was not finite" (a device tensor, read only when saving,
        # logging or finishing, so that CUDA never waits on it in the middle of a step).
        self._nonfinite: dict[str, torch.Tensor] = {}
        self._last_saved: int | None = None
        if resume:
            self._load()
        for name in sorted({p.module for p in self.phases if p.module}):
            if self.dist.enabled:
                self.stage._ddp[name] = wrap_ddp(self.stage.nets[name], self.device)
        if loop.compile:
            # Static shapes: a training run has one resolution and batch size, and Inductor's dynamic-shape
            # path has failed here on a shape change (a benchmark compiling tiny, then 256 px, in one process).
            for name in self.stage.compile_targets():
                view = self.stage.train_view(name, compiled=False)
                self.stage._compiled[name] = torch.compile(view, dynamic=False)
        self.data = self._make_data()
        if self._rng is not None:
            set_rng_state(*self._rng)
        else:
            seed_everything(loop.seed + self.dist.rank)  # each rank its own z/noise stream
        self.log = StatsLog(
            run_dir / "log.jsonl" if self.dist.is_main else None, run_dir / "tensorboard" if self.dist.is_main else None
        )

    # --- setup helpers -------------------------------------------------------------------------------
    def _load(self) -> None:
        step, weights, state = st.load_training(self.run_dir)
        for name, net in self.stage.nets.items():
            load_state_strict(net, weights.subset(f"{name}."), source=f"{weights.path} [{name}]")
        opt_meta = json.loads(state.meta["optimizers"])
        for name, opt in self.stage.optimizers.items():
            if name not in opt_meta:
                raise MMFSError(f"{state.path}: no state for optimizer {name!r}")
            st.load_optimizer(name, opt, state.tensors, opt_meta[name])
        self.step = self._last_saved = step
        loop_meta = json.loads(state.meta.get("loop", "{}"))
        self.skipped = set(loop_meta.get("skipped", []))
        saved_world = int(state.meta.get("world_size", "1"))
        self._rng = st.rng_of_rank(state, self.dist.rank) if saved_world == self.dist.world_size else None
        if self._rng is None:
            # A different number of ranks cannot replay the same streams; continue with fresh per-rank seeds.
            seed_everything(self.cfg.loop.seed + 1000 * step + self.dist.rank)
            self._rng = get_rng_state()
        if self.dist.is_main:
            truncate_log(self.run_dir / "log.jsonl", step)
            remove_partials(self.run_dir / "checkpoints")  # left by a run killed while writing

    def _make_data(self) -> Iterator[dict] | None:
        dataset = self.stage.dataset()
        if dataset is None:
            return None
        from mmfs.data.datasets import make_loader

        return make_loader(
            dataset,
            seed=self.cfg.loop.seed,
            batch_size=self.micro_batch,
            start=self.step * self.cfg.loop.accum,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            workers=self.cfg.loop.workers,
            pin_memory=self.device.type == "cuda",
        )

    def _next_batch(self) -> dict[str, torch.Tensor] | None:
        if self.data is None:
            return None
        raw = next(self.data)
        for paths in raw.pop("bad", []):
            self.skipped.update(p for p in paths.split("\n") if p)
        return {k: v.to(self.device, non_blocking=True) for k, v in raw.items()}

    # --- one step ----------------------------------------------------------------------------------------
    def train_step(self) -> None:
        """Run every due phase over `accum` micro-batches, then the EMA updates."""
        step, accum = self.step + 1, self.cfg.loop.accum
        micro = [StepContext(step, m, self.micro_batch, self._next_batch()) for m in range(accum)]
        for phase in self.phases:
            if step % phase.every:
                continue
            opt = self.stage.optimizers[phase.optimizer]
            params = {id(p) for group in opt.param_groups for p in group["params"]}
            for p in self.trainable:
                p.requires_grad_(id(p) in params)
            opt.zero_grad(set_to_none=True)
            ddp = self.stage._ddp.get(phase.module) if phase.module else None
            for ctx in micro:
                last = ctx.micro == accum - 1
                sync = contextlib.nullcontext() if ddp is None or last else ddp.no_sync()
                with sync:
                    with autocast(self.device, self.dtype):
                        losses = phase.loss(ctx)
                    total = losses["total"]
                    (total / accum if accum > 1 else total).backward()
                bad = ~torch.isfinite(total.detach())
                self._nonfinite[phase.name] = (
                    bad | self._nonfinite[phase.name] if phase.name in self._nonfinite else bad
                )
                self.log.report(phase.name, losses)
            opt.step()
        for p in self.trainable:
            p.requires_grad_(True)
        for ema in self.emas:
            ema.update()
        self.step = step

    # --- outputs -----------------------------------------------------------------------------------------
    def check_finite(self) -> None:
        """Raise `TrainingDiverged` (on every rank) if any rank saw a non-finite loss since the last check."""
        local = sorted(name for name, bad in self._nonfinite.items() if bool(bad))
        self._nonfinite.clear()
        phases = sorted(set().union(*self.dist.all_gather_object(local))) if self.dist.enabled else local
        if not phases:
            return
        kept = (
            f"the last good checkpoint (step {self._last_saved}) is kept: lower --lr or use --dtype fp32, "
            f"then continue with --resume {self.run_dir}"
            if self._last_saved is not None
            else "no checkpoint had been written yet: lower --lr or use --dtype fp32 and start again"
        )
        raise TrainingDiverged(
            f"training diverged: a {'/'.join(phases)} loss became NaN or infinite by step {self.step}; {kept}"
        )

    def save_checkpoint(self) -> None:
        """All ranks: gather RNG states; rank 0 writes; everyone waits for the files."""
        self.check_finite()  # never save weights a NaN has reached
        rng = self.dist.all_gather_object(get_rng_state())
        skipped = sorted(set().union(*self.dist.all_gather_object(sorted(self.skipped))))
        if self.dist.is_main:
            st.save_training(
                self.run_dir,
                self.step,
                self.stage.nets,
                self.stage.optimizers,
                rng,
                config_json=self.cfg.to_json(),
                model_config=self.cfg.model,
                extra={"skipped": skipped},
                keep=self.cfg.loop.keep_checkpoints,
            )
        self._last_saved = self.step
        self.dist.barrier()

    def write_preview(self) -> Path | None:
        if not self.dist.is_main:
            return None
        from mmfs.data.images import save_image, to_uint8

        with torch.no_grad():
            images, columns = self.stage.preview()
        path = self.run_dir / "previews" / f"step-{self.step:06d}.png"
        return save_image(to_uint8(image_grid(images, columns)), path)

    def write_final(self) -> Path | None:
        self.check_finite()
        path = self.run_dir / "final.safetensors"
        if self.dist.is_main:
            tensors, meta = self.stage.final()
            meta = {
                "stage": self.cfg.command,
                "step": str(self.step),
                "train_config": self.cfg.to_json(),
                # the full training state of this step (with the discriminator), for the next stage
                "checkpoint": f"checkpoints/step-{self.step:06d}.safetensors",
                **meta,
            }
            save_checkpoint(path, tensors, kind=self.stage.final_kind, config=self.cfg.model, meta=meta)
        self.dist.barrier()
        return path

    def _flush_log(self, bar: tqdm) -> None:
        self.check_finite()
        skipped = set().union(*self.dist.all_gather_object(sorted(self.skipped)))
        line = self.log.flush(
            self.step,
            self.dist,
            images_per_step=self.cfg.loop.batch_size,
            extra={"data/skipped": len(skipped)} if self.data is not None else None,
        )
        if self.dist.is_main:
            for path in sorted(skipped - self._reported):
                tqdm.write(f"warning: skipped unreadable image {path}", file=sys.stderr)
        self._reported |= skipped
        bar.set_postfix(
            {k: f"{v:.4g}" for k, v in line.items() if "/" in k and not k.startswith("data/")}, refresh=False
        )

    def run(self) -> Path:
        """Train from the current step to `cfg.loop.steps`; returns the path of `final.safetensors`."""
        loop = self.cfg.loop
        self._reported = set(self.skipped)
        bar = tqdm(
            total=loop.steps,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            disable=not (self.progress and self.dist.is_main),
        )
        if self.step == 0 and loop.preview_every:
            self.write_preview()
        self.log.start(self.step)
        try:
            while self.step < loop.steps:
                self.train_step()
                bar.update(1)
                if self.on_step is not None:
                    self.on_step(self.step, loop.steps)
                done = self.step == loop.steps
                if loop.log_every and (self.step % loop.log_every == 0 or done):
                    self._flush_log(bar)
                if loop.preview_every and (self.step % loop.preview_every == 0 or done):
                    self.write_preview()
                if (loop.checkpoint_every and self.step % loop.checkpoint_every == 0) or done:
                    self.save_checkpoint()
            return self.write_final()
        finally:
            bar.close()
            self.log.close()
            close = getattr(self.data, "close", None)  # the read-ahead thread ends with the run, error or not
            if close is not None:
                close()


def image_grid(images: torch.Tensor, columns: int) -> torch.Tensor:
    """`[N, 3, H, W]` -> one `[3, rows*H, columns*W]` image (missing cells are black)."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    grid = images.new_full((rows * columns, c, h, w), -1.0)
    grid[:n] = images
    return grid.view(rows, columns, c, h, w).permute(2, 0, 3, 1, 4).reshape(c, rows * h, columns * w)


def train(
    cfg: TrainConfig | None = None,
    *,
    outdir: str | Path = "runs",
    resume: str | Path | None = None,
    steps: int | None = None,
    externals: dict[str, Any] | None = None,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> Path:
    """Run a stage: a new run under `outdir`, or continue `resume` (a run dir) up to `steps` (default: its own).

    Returns the run directory; its `final.safetensors` holds the inference weights. `on_step`: see `Trainer`.
    """
    if resume is not None:
        run_dir = Path(resume)
        st.read_latest(run_dir)  # clear error before anything is built
        cfg = TrainConfig.from_json((run_dir / st.CONFIG).read_text())
        d, device = init_distributed(cfg.loop.device)
        if steps is not None and steps != cfg.loop.steps:
            cfg = _with_steps(cfg, steps)
            if d.is_main:
                st.write_json(run_dir / st.CONFIG, json.loads(cfg.to_json()))
    else:
        if cfg is None:
            raise ValueError("train() needs a config or a run directory to resume")
        d, device = init_distributed(cfg.loop.device)
        run_dir = d.broadcast_object(st.new_run_dir(outdir, cfg.command) if d.is_main else None)
        if d.is_main:
            st.write_json(run_dir / st.CONFIG, json.loads(cfg.to_json()))
    # the run's TF32 and kernel choices end with it (`mmfs adapt INPUTS` stylizes afterwards)
    with keeping_backend_settings():
        trainer = Trainer(
            cfg,
            run_dir,
            resume=resume is not None,
            externals=externals,
            progress=progress,
            dist_info=(d, device),
            on_step=on_step,
        )
        trainer.run()
    return run_dir


def _with_steps(cfg: TrainConfig, steps: int) -> TrainConfig:
    import dataclasses

    return dataclasses.replace(cfg, loop=dataclasses.replace(cfg.loop, steps=steps))

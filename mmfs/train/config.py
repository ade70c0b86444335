"""The training configuration: frozen dataclasses, saved as `config.json` and in every checkpoint.

`TrainConfig` = which stage (`command`), the network (`ModelConfig`), the loop settings shared by
every stage (`LoopConfig`) and the stage's own options (a frozen dataclass declared by the stage).
Per-stage defaults (learning rate, betas, EMA decay, ...) live on the stage class (`Stage.defaults`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from mmfs.config import ModelConfig

# Precisions a new run may ask for. fp16 would need loss scaling. Runs saved before fp32 became the
# default carry "auto" (bf16 autocast on CUDA, fp32 elsewhere), which still resumes as it ran.
TRAIN_DTYPES = ("fp32", "bf16")


@dataclass(frozen=True)
class LoopConfig:
    """Settings of the shared loop; the numbers a stage overrides come from `Stage.defaults`."""

    steps: int = 1000  # optimizer steps of the run (each one uses `batch_size` images)
    batch_size: int = 8  # images per optimizer step, summed over GPUs and accumulation micro-batches
    accum: int = 1  # gradient accumulation: micro-batches per step (batch_size / (accum * world) per GPU)
    lr: float = 2e-4  # Adam learning rate of the main (generator) optimizer
    betas: tuple[float, float] = (0.1, 0.999)  # Adam betas; floats, torch rejects int betas
    ema_decay: float = 0.999  # per-step EMA decay (reference semantics: p_ema = d*p_ema + (1-d)*p)
    seed: int = 0
    log_every: int = 50  # steps between metric lines (log.jsonl, TensorBoard, progress bar)
    preview_every: int = 1000  # steps between sample grids (previews/step-NNNNNN.png); 0 = never
    checkpoint_every: int = 5000  # steps between checkpoints (the reference's save_latest_freq); 0 = at the end only
    keep_checkpoints: int = 3  # how many checkpoints to keep (oldest deleted first)
    device: str = "auto"  # auto, cpu, cuda, cuda:N (under torchrun: cuda:LOCAL_RANK)
    dtype: str = "fp32"  # fp32 (the reference's precision) or bf16 (autocast); see TRAIN_DTYPES
    tf32: bool = False  # allow TF32 matmuls/convolutions on CUDA (off, as the reference and StyleGAN2-ADA)
    compile: bool = False  # torch.compile the trained networks' forward passes
    workers: int = 2  # DataLoader worker processes per rank (0 = load in the main process)
    preview_count: int = 8  # samples in a preview grid

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        for name in ("steps", "batch_size", "accum", "preview_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("log_every", "preview_every", "checkpoint_every", "keep_checkpoints", "workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size % self.accum:
            raise ValueError(f"batch_size ({self.batch_size}) must be divisible by accum ({self.accum})")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; `to_json` is what `config.json` holds."""

    command: str  # the stage's CLI command and registry name: "pretrain-encoder", "finetune", ...
    model: ModelConfig
    loop: LoopConfig
    options: Any  # the stage's frozen options dataclass (`Stage.Options`)

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "model": self.model.to_dict(),
            "loop": dataclasses.asdict(self.loop),
            "options": dataclasses.asdict(self.options),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        from mmfs.train.stage import get_stage

        stage = get_stage(data["command"])
        # Runs saved before `tf32` existed had TF32 on for every CUDA run: resuming them keeps it.
        loop = {"tf32": True, **data["loop"]}
        return cls(
            command=data["command"],
            model=ModelConfig.from_dict(data["model"]),
            loop=_build(LoopConfig, loop),
            options=_build(stage.Options, data["options"]),
        )

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))


def _build(kind: type, data: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {kind.__name__} keys: {', '.join(unknown)}")
    return kind(**data)


def make_config(command: str, model: ModelConfig, *, options: dict[str, Any] | None = None, **loop: Any) -> TrainConfig:
    """A `TrainConfig` from the stage's defaults, overridden by the non-None `loop` values and `options`."""
    from mmfs.train.stage import get_stage

    stage = get_stage(command)
    settings = {**stage.defaults, **{k: v for k, v in loop.items() if v is not None}}
    if settings.get("dtype", "fp32") not in TRAIN_DTYPES:
        raise ValueError(f"training dtype must be one of {', '.join(TRAIN_DTYPES)}, got {settings['dtype']!r}")
    return TrainConfig(
        command=command,
        model=model,
        loop=LoopConfig(**settings),
        options=stage.Options(**{k: v for k, v in (options or {}).items() if v is not None}),
    )

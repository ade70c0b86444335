"""Training: one shared loop (`loop.py`) and one small module per stage (`stages/`).

from mmfs.train import make_config, train
cfg = make_config("pretrain-encoder", PRESETS["tiny"], options={"prior": "prior.safetensors"}, steps=100)
run_dir = train(cfg, outdir="runs")          # run_dir / "final.safetensors"
train(resume=run_dir, steps=200)             # continue bit for bit
"""

from __future__ import annotations

from mmfs.config.train import LoopConfig, StageOptions, TrainConfig, make_config
from mmfs.train.loop import Trainer, train
from mmfs.train.stage import (
    STAGES,
    EmaSpec,
    Phase,
    Stage,
    StepContext,
    adam,
    lazy_regularization,
    register_stage,
)
from mmfs.train.stages import get_stage

__all__ = [
    "STAGES",
    "EmaSpec",
    "LoopConfig",
    "Phase",
    "Stage",
    "StageOptions",
    "StepContext",
    "TrainConfig",
    "Trainer",
    "adam",
    "get_stage",
    "lazy_regularization",
    "make_config",
    "register_stage",
    "train",
]

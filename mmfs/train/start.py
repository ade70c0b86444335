"""From a training command's options to the config of a new run: the checks a new run needs first."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from mmfs.checkpoint import read_metadata
from mmfs.config.model import ModelConfig
from mmfs.config.options import check_required
from mmfs.config.train import ModelChoice, PriorModel, TrainConfig, make_config
from mmfs.errors import CheckpointError, MMFSError, OptionError
from mmfs.train.stages import get_stage


def new_run_config(options: Any, loop: Mapping[str, Any], model: ModelChoice | PriorModel) -> TrainConfig:
    """The `TrainConfig` of a new run of `options.command`.

    Args:
        options: the stage's options (`mmfs.config.train`); its required fields must be set.
        loop: loop settings the user gave (None or absent: the stage's `loop_defaults`).
        model: a preset, else the config stored in the stage's input file (`options.model_source`).
    """
    check_required(options, options.command)  # the options' declared rules (a resumed run never gets here)
    options = get_stage(options.command).prepare_options(with_model_files(options))
    try:
        network = model.preset_config() or stored_config(getattr(options, options.model_source), hint="; pass --preset")
        return make_config(options.command, network, options=options, **loop)
    except OptionError:
        raise
    except ValueError as exc:
        raise MMFSError(str(exc)) from None


def stored_config(path: str | os.PathLike[str], *, hint: str = "") -> ModelConfig:
    """The network config in the metadata of a prior / Stylizer file (read without its tensors);
    `hint` ends the error line when the file has none."""
    stored = read_metadata(path).get("mmfs.config")
    if stored is None:
        raise CheckpointError(f"{path}: no mmfs model config in its metadata{hint}")
    return ModelConfig.from_json(stored)


# Options that take a published model's name (`mmfs.catalogue`) as well as a file, and the kinds each accepts.
MODEL_OPTIONS = {
    "prior": ("prior",),
    "init": ("stylizer", "base"),
    "checkpoint": ("stylizer", "one-shot", "zero-shot"),
}


def with_model_files(options: Any) -> Any:
    """`options` with each model name in a `MODEL_OPTIONS` field replaced by its cached file (fetched on first use)."""
    from mmfs.catalogue import is_model_name
    from mmfs.pretrained import resolve_file

    changes = {
        name: str(resolve_file(value, kinds=kinds, flag=f"--{name}"))
        for name, kinds in MODEL_OPTIONS.items()
        if is_model_name(value := getattr(options, name, None))
    }
    return dataclasses.replace(options, **changes) if changes else options

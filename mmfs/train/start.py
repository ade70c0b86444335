"""From a training command's options to the config of a new run: the checks a new run needs first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmfs.config.train import ModelChoice, PriorModel, TrainConfig, make_config, missing_required
from mmfs.errors import MMFSError, OptionError
from mmfs.train.stage import get_stage


def new_run_config(options: Any, loop: Mapping[str, Any], model: ModelChoice | PriorModel) -> TrainConfig:
    """The `TrainConfig` of a new run of `options.command`.

    Args:
        options: the stage's options (`mmfs.config.train`); its required fields must be set.
        loop: loop settings the user gave (None or absent: the stage's `loop_defaults`).
        model: a preset, else the config stored in the stage's input file (`options.model_source`).
    """
    missing = missing_required(options)
    if missing:
        raise MMFSError(f"`mmfs {options.command}` needs {', '.join(missing)} (or --resume RUN_DIR)")
    options = get_stage(options.command).prepare_options(options)
    source = getattr(options, options.model_source) if options.model_source else None
    try:
        return make_config(options.command, model.resolve(source), options=options, **loop)
    except OptionError:
        raise
    except ValueError as exc:
        raise MMFSError(str(exc)) from None

"""The built-in stages; importing this package registers them (`mmfs.train.stage.STAGES`)."""

from __future__ import annotations

from mmfs.train.stage import STAGES, Stage
from mmfs.train.stages import adapt, encoder, finetune, mapper, prior  # noqa: F401  (each registers its stage)


def get_stage(command: str) -> type[Stage]:
    """The stage class of a command: a built-in one, or one a caller registered with `register_stage`."""
    try:
        return STAGES[command]
    except KeyError:
        raise ValueError(f"unknown training stage {command!r}; choose one of: {', '.join(sorted(STAGES))}") from None

"""The built-in stages; importing this package registers them (`mmfs.train.stage.STAGES`)."""

from __future__ import annotations

import importlib

# Each module registers its stage with @register_stage. Stages added later (train-mapper, adapt) go here.
for _name in ("encoder", "base", "mapper", "adapt", "prior"):
    try:
        importlib.import_module(f"mmfs.train.stages.{_name}")
    except ModuleNotFoundError as _exc:  # a stage module not written yet must not break the others
        if _exc.name != f"mmfs.train.stages.{_name}":
            raise

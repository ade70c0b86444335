"""The Stylizer that mmfs ships: the `mmfs demo` mapper model (Stage II + CLIP mapper), tiny64, in fp16.

`mmfs web --demo` serves the demo's models. After `mmfs demo` has run, those are its own outputs; on a
fresh clone there are none, so this file stands in for them: the final `train-mapper` Stylizer of a full
`mmfs demo` run (seed 0) with its mapper, stored in fp16 like the shipped prior (`mmfs.demo.prior`). Its
mapper reads the shipped tiny CLIP (`mmfs.demo.clip`), so text and reference styles work offline too.
docs/web.md has the command that made it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mmfs.errors import CheckpointError

SHIPPED_STYLIZER = Path(__file__).with_name("stylizer-tiny64.safetensors")
KEPT_META = ("stage", "step", "clip_model", "clip_tag")


def shipped_stylizer() -> Path:
    """The packaged Stylizer file; a one-line error when the installation lacks it."""
    from mmfs.demo.prior import require_shipped

    return require_shipped(SHIPPED_STYLIZER, "Stylizer", "")


def export_stylizer(source: str | os.PathLike[str], dest: str | os.PathLike[str], **meta: Any) -> Path:
    """Write the Stylizer file `source` (a training run's `final.safetensors`) to `dest` with fp16 tensors.

    Of the metadata it keeps what says what the file is (stage, step, the mapper's CLIP model and tag), not
    the training paths, which are the exporting machine's; `meta` is added.
    """
    import torch

    from mmfs.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(source, kind="stylizer")
    if ckpt.config is None:
        raise CheckpointError(f"{ckpt.path}: holds no model config")
    half = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in ckpt.tensors.items()}
    kept = {k: v for k, v in ckpt.meta.items() if k in KEPT_META}
    return save_checkpoint(dest, half, kind="stylizer", config=ckpt.config,
                           meta={**kept, "dtype": "fp16", "exported_from": Path(source).name, **meta})  # fmt: skip

"""Saved w+ latents ("w-files"): styles kept on disk so a look can be replayed exactly.

A w-file is a safetensors file with one tensor and string metadata:

- tensor `ws`: float32 `[N, num_ws, w_dim]`, N styles in the Stylizer's batch-major layout;
- `mmfs.format_version` = `LATENTS_VERSION`, `mmfs.kind` = `"latents"` (the checkpoint convention, so
  `mmfs info` and `read_metadata` read it like any other mmfs file);
- `mmfs.num_ws`, `mmfs.w_dim`: the shape, checked against the model on load;
- `mmfs.config_hash`: the first 16 hex digits of SHA-256 of the model config JSON the latents were made
  with (architecture, not weights: a fine-tuned or adapted model of the same config shares it);
- `mmfs.source`: free text saying where the styles came from (e.g. `seeds 1,5 of ckpt.safetensors`);
- `mmfs.styles`: JSON list, one entry per row: `{"label": "seed5", "seed": 5}`. `label` names the
  outputs; `seed` (optional) is the seed the noise maps are drawn from, so a saved seed style replays
  byte-identical images.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mmfs.config import ModelConfig
from mmfs.errors import InputError
from mmfs.utils.files import atomic_path, write_failure

LATENTS_VERSION = "1"
LATENTS_KIND = "latents"
_P = "mmfs."


def config_hash(config: ModelConfig) -> str:
    """A short stable fingerprint of a model config (16 hex digits)."""
    return hashlib.sha256(config.to_json().encode()).hexdigest()[:16]


@dataclass
class Latents:
    """The content of a w-file: N styles with a label and an optional noise seed each."""

    ws: torch.Tensor  # [N, num_ws, w_dim] float32, CPU
    labels: list[str]
    seeds: list[int | None]
    config_hash: str | None = None
    source: str = ""
    path: Path | None = None

    def __len__(self) -> int:
        return self.ws.shape[0]


def save_latents(
    path: str | os.PathLike[str],
    ws: torch.Tensor,
    *,
    labels: Sequence[str] | None = None,
    seeds: Sequence[int | None] | None = None,
    config: ModelConfig | None = None,
    source: str = "",
) -> Path:
    """Write styles `ws` [N, num_ws, w_dim] (or [num_ws, w_dim]) atomically as a w-file."""
    if ws.dim() == 2:
        ws = ws.unsqueeze(0)
    if ws.dim() != 3 or ws.shape[0] == 0:
        raise ValueError(f"ws must be [N, num_ws, w_dim] with N >= 1, got {tuple(ws.shape)}")
    n, num_ws, w_dim = ws.shape
    if config is not None and (num_ws, w_dim) != (config.num_ws, config.w_dim):
        raise ValueError(f"ws {tuple(ws.shape)} does not fit the config (num_ws {config.num_ws}, w_dim {config.w_dim})")
    labels = list(labels) if labels is not None else [f"w{i}" for i in range(n)]
    seeds = list(seeds) if seeds is not None else [None] * n
    if len(labels) != n or len(seeds) != n:
        raise ValueError(f"need one label and one seed (or None) per style: {n} styles")
    styles = [
        {"label": lab} | ({"seed": int(s)} if s is not None else {}) for lab, s in zip(labels, seeds, strict=True)
    ]
    metadata = {
        _P + "format_version": LATENTS_VERSION,
        _P + "kind": LATENTS_KIND,
        _P + "num_ws": str(num_ws),
        _P + "w_dim": str(w_dim),
        _P + "source": source,
        _P + "styles": json.dumps(styles),
    }
    if config is not None:
        metadata[_P + "config_hash"] = config_hash(config)
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            save_file({"ws": ws.detach().to("cpu", torch.float32).contiguous()}, str(tmp), metadata=metadata)
    except (OSError, SafetensorError) as exc:
        raise write_failure(path, exc, "w-file") from None
    return path


def load_latents(path: str | os.PathLike[str], *, config: ModelConfig | None = None) -> Latents:
    """Read a w-file; with `config`, check that its styles fit that model (warn if made for another config)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such w-file")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{path}: not a readable w-file, corrupt or truncated ({first})") from None
    if meta.get(_P + "kind") != LATENTS_KIND:
        raise InputError(f"{path}: not a w-file (mmfs.kind is {meta.get(_P + 'kind')!r}, expected 'latents')")
    if meta.get(_P + "format_version") != LATENTS_VERSION:
        raise InputError(f"{path}: w-file version {meta.get(_P + 'format_version')} is not supported")
    ws = tensors.get("ws")
    if ws is None or ws.dim() != 3 or ws.shape[0] == 0:
        raise InputError(f"{path}: w-file must hold a tensor 'ws' of shape [N, num_ws, w_dim]")
    if not ws.is_floating_point() or not torch.isfinite(ws).all():
        raise InputError(f"{path}: w-file holds non-finite or non-float values")
    ws = ws.float()
    try:
        styles = json.loads(meta.get(_P + "styles", "[]"))
        labels = [str(s["label"]) for s in styles]
        seeds = [int(s["seed"]) if s.get("seed") is not None else None for s in styles]
    except (ValueError, TypeError, KeyError):
        raise InputError(f"{path}: w-file has unreadable 'mmfs.styles' metadata") from None
    if len(labels) != ws.shape[0]:  # hand-made files: name the rows by index
        labels, seeds = [f"w{i}" for i in range(ws.shape[0])], [None] * ws.shape[0]
    latents = Latents(ws, labels, seeds, meta.get(_P + "config_hash"), meta.get(_P + "source", ""), path)
    if config is not None:
        check_fits(latents, config)
    return latents


def check_fits(latents: Latents, config: ModelConfig) -> None:
    """Raise if the styles have the wrong shape for `config`; warn if they were made for another config."""
    name = latents.path or "w-file"
    _, num_ws, w_dim = latents.ws.shape
    if (num_ws, w_dim) != (config.num_ws, config.w_dim):
        raise InputError(
            f"{name}: styles are [{num_ws}, {w_dim}] but the model takes [{config.num_ws}, {config.w_dim}] (num_ws, w_dim)"
        )
    if latents.config_hash and latents.config_hash != config_hash(config):
        warnings.warn(f"{name}: these styles were made for a different model config", stacklevel=2)

"""Safetensors checkpoints with their config in the metadata.

Every file we write is a flat `name -> tensor` safetensors file whose string metadata holds:

- `mmfs.format_version`: the layout version (see `FORMAT_VERSION`), checked on load;
- `mmfs.kind`: what the file is (`KINDS`), so a prior is never loaded as a stylizer by mistake;
- `mmfs.config`: the `ModelConfig` as JSON, so the file rebuilds its own network;
- any further `mmfs.*` entries the writer adds (stage, step, base checkpoint, ...).

Writes are atomic (temp file + fsync + rename). Nothing here pickles; foreign pickles are read only
by `mmfs.nn.convert` through `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mmfs.config import ModelConfig
from mmfs.errors import CheckpointError
from mmfs.utils.files import atomic_path, write_failure

FORMAT_VERSION = "1"
KINDS = (
    "stylizer",  # inference weights of a Stylizer (EMA), optionally with its CLIP mapper
    "prior",  # a StyleGAN2 prior: generator under "g." and discriminator under "d."
    "training",  # a training run's modules, each under its own prefix ("stylizer.", "stylizer_ema.", "disc.", ...)
    "train_state",  # optimizer, RNG and loop state of a training run
    "adapted",  # decoder weights changed by `mmfs adapt`, applied on top of a base stylizer file
    "stats",  # cached metric statistics (FID mean / covariance)
    "clip",  # a CLIP as an open_clip state dict: a tiny one mmfs trained (`mmfs.tiny_clip`), or a published one
)
_PREFIX = "mmfs."


@dataclass
class Checkpoint:
    """A loaded checkpoint: its tensors and the decoded metadata."""

    path: Path
    tensors: dict[str, torch.Tensor]
    kind: str
    config: ModelConfig | None
    meta: dict[str, str] = field(default_factory=dict)  # the remaining `mmfs.*` entries, prefix stripped

    def subset(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors under `prefix` (e.g. "stylizer_ema."), with the prefix removed."""
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}


def unwrap(module: nn.Module) -> nn.Module:
    """Strip DistributedDataParallel / torch.compile wrappers so saved keys never carry their prefixes."""
    while True:
        if hasattr(module, "_orig_mod"):
            module = module._orig_mod
        elif isinstance(module, nn.parallel.DistributedDataParallel | nn.DataParallel):
            module = module.module
        else:
            return module


def module_state(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """A module's persistent state as contiguous CPU tensors that share no storage (safetensors needs both)."""
    return {
        prefix + name: tensor.detach().to("cpu").contiguous().clone()
        for name, tensor in unwrap(module).state_dict().items()
    }


def save_checkpoint(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    *,
    kind: str,
    config: ModelConfig | None = None,
    meta: Mapping[str, object] | None = None,
) -> Path:
    """Write tensors and metadata atomically; values in `meta` are stored as strings (JSON for non-strings)."""
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}")
    metadata = {_PREFIX + "format_version": FORMAT_VERSION, _PREFIX + "kind": kind}
    if config is not None:
        metadata[_PREFIX + "config"] = config.to_json()
    for key, value in (meta or {}).items():
        metadata[_PREFIX + key] = value if isinstance(value, str) else json.dumps(value)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
    except (OSError, SafetensorError) as exc:
        raise write_failure(path, exc, "checkpoint") from None
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The raw string metadata of a safetensors file, without reading its tensors."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        from mmfs.foreign import convert_hint

        raise CheckpointError(
            convert_hint(path) or f"{path}: not a readable safetensors file, corrupt or truncated ({_first_line(exc)})"
        ) from None


def describe_checkpoint(path: str | os.PathLike[str]) -> dict[str, object]:
    """`mmfs info`: a checkpoint's metadata without its tensors, `mmfs.` dropped and JSON values decoded."""
    meta = read_metadata(path)
    if "mmfs.format_version" not in meta:
        raise CheckpointError(f"{path}: not an mmfs checkpoint (no mmfs metadata)")
    decoded: dict[str, object] = {}
    for key, value in sorted(meta.items()):
        try:
            decoded[key.removeprefix("mmfs.")] = json.loads(value)
        except json.JSONDecodeError:
            decoded[key.removeprefix("mmfs.")] = value
    return decoded


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    kind: str | tuple[str, ...] | None = None,
    map_location: str | torch.device = "cpu",
) -> Checkpoint:
    """Read a checkpoint we wrote, checking its format version and (optionally) its kind."""
    path = _existing(path)
    raw = read_metadata(path)
    version = raw.get(_PREFIX + "format_version")
    if version is None:
        raise CheckpointError(
            f"{path}: not an mmfs checkpoint (no mmfs metadata); import foreign weights with `mmfs convert`"
        )
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is not supported by this mmfs (expects {FORMAT_VERSION})"
        )
    file_kind = raw.get(_PREFIX + "kind", "")
    wanted = (kind,) if isinstance(kind, str) else kind
    if wanted and file_kind not in wanted:
        raise CheckpointError(f"{path}: this is a {file_kind!r} checkpoint, expected {' or '.join(map(repr, wanted))}")
    try:
        tensors = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: checkpoint is corrupt or truncated ({_first_line(exc)})") from None
    config = None
    if _PREFIX + "config" in raw:
        try:
            config = ModelConfig.from_json(raw[_PREFIX + "config"])
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: invalid model config in metadata ({exc})") from None
    meta = {
        k[len(_PREFIX) :]: v
        for k, v in raw.items()
        if k.startswith(_PREFIX) and k not in {_PREFIX + "format_version", _PREFIX + "kind", _PREFIX + "config"}
    }
    return Checkpoint(path=path, tensors=tensors, kind=file_kind, config=config, meta=meta)


def stylizer_tensors(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """The Stylizer weights inside a `stylizer` or `training` checkpoint (EMA preferred)."""
    if ckpt.kind == "stylizer":
        return ckpt.tensors
    for prefix in ("stylizer_ema.", "stylizer."):
        tensors = ckpt.subset(prefix)
        if tensors:
            return tensors
    raise CheckpointError(f"{ckpt.path}: training checkpoint holds no stylizer weights")


def load_state_strict(module: nn.Module, tensors: Mapping[str, torch.Tensor], *, source: str = "checkpoint") -> None:
    """Load tensors into a module, requiring the exact key set and shapes; the error names the first mismatches."""
    expected = unwrap(module).state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    wrong_shape = [
        f"{k} {tuple(tensors[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected {_first(unexpected)}")
    if wrong_shape:
        problems.append(f"shape mismatch {_first(wrong_shape)}")
    if problems:
        raise CheckpointError(f"{source} does not fit {type(unwrap(module)).__name__}: " + "; ".join(problems))
    unwrap(module).load_state_dict(dict(tensors), strict=True)


def _first(items: list[str], n: int = 3) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _existing(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    return path

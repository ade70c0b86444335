"""Device and precision choices, written once so every command runs on CPU and CUDA unchanged."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from mmfs.errors import MMFSError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str = "auto") -> torch.device:
    """`auto` is the first CUDA device when one is present, else the CPU; `cuda:N`/`cpu` are checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MMFSError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MMFSError(f"device {name!r} was asked for but no CUDA GPU is available; use --device cpu")
    return device


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise MMFSError(f"unknown dtype {name!r}; use one of: {', '.join(DTYPES)}") from None


def enable_tf32() -> None:
    """Allow TF32 matmuls/convolutions on Ampere+ GPUs (a no-op on the CPU)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Mixed precision when `dtype` is lower than fp32, on whichever device type is in use."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield

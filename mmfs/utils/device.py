"""Device and precision choices, written once so every command runs on CPU and CUDA unchanged."""

from __future__ import annotations

import contextlib
import warnings
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


def set_tf32(enabled: bool) -> None:
    """Allow (or forbid) TF32 in CUDA fp32 matmuls and cuDNN convolutions on Ampere+ GPUs; process-wide.

    TF32 keeps 10 mantissa bits of fp32's 23 inside those ops. PyTorch allows it in convolutions by
    default; training forbids it unless asked (`--tf32`), as NVlabs' StyleGAN2-ADA / StyleGAN3 do for
    GAN training. CPU maths never uses TF32, so on a CPU this only records the choice.
    """
    _set_tf32_state(("tf32", "tf32") if enabled else ("ieee", "ieee"))


@contextlib.contextmanager
def keeping_tf32_state() -> Iterator[None]:
    """Restore the process's TF32 settings after the block (a training run inside a longer process)."""
    state = _tf32_state()
    try:
        yield
    finally:
        _set_tf32_state(state)


# torch >= 2.9 has the `fp32_precision` settings; mixing them with the older `allow_tf32` flags is an error there.
def _tf32_state() -> tuple:
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision"):
        return matmul.fp32_precision, cudnn.conv.fp32_precision
    return matmul.allow_tf32, cudnn.allow_tf32


def _set_tf32_state(state: tuple) -> None:
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision"):
        matmul.fp32_precision, cudnn.conv.fp32_precision = state
    else:
        matmul.allow_tf32, cudnn.allow_tf32 = (value in (True, "tf32") for value in state)


def native_bf16(device: torch.device) -> bool:
    """True when bf16 maths runs natively: a bf16-capable GPU, or a CPU on which oneDNN runs bf16 (AVX-512
    F/BW/VL/DQ and up, with the AVX512_BF16 / AMX-BF16 instructions where the CPU has them).

    On a CPU without it (AVX2 only) PyTorch's bf16 convolutions fall back to a reference GEMM and bf16
    autocast is several times *slower* than fp32 (measured 4-14x, docs/benchmarks.md).
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return True  # other backends: nothing to check here
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


_warned_slow_bf16 = False


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Mixed precision when `dtype` is lower than fp32, on whichever device type is in use."""
    global _warned_slow_bf16
    if dtype == torch.float32:
        yield
        return
    if dtype == torch.bfloat16 and not _warned_slow_bf16 and not native_bf16(device):
        _warned_slow_bf16 = True
        what = "GPU" if device.type == "cuda" else f"CPU (capability {torch.backends.cpu.get_cpu_capability()})"
        warnings.warn(
            f"this {what} has no native bf16: bf16 runs several times slower than fp32 here; use --dtype fp32",
            RuntimeWarning,
            stacklevel=3,
        )
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


@contextlib.contextmanager
def fp32_maths(device: torch.device) -> Iterator[None]:
    """Autocast off for the block, inside an autocast region too: small, precision-sensitive maths.

    The block must cast its inputs (`at_least_fp32`); its ops then run in fp32 whatever the region's dtype.
    """
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """`x` as fp32 when it is a narrower float (bf16, fp16); fp32 and fp64 tensors are returned as they are."""
    return x.float() if x.is_floating_point() and x.element_size() < 4 else x

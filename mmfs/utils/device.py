"""Device and precision choices, written once so every command runs on CPU and CUDA unchanged.

Everything a GPU is asked (which device, whether bf16 is native, TF32, deterministic kernels, cuDNN's
autotuner, ONNX Runtime's providers) goes through the functions here, so that tests drive them with
faked `torch.cuda` answers and check what would be asked of a GPU (tests/test_device.py).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import torch

from mmfs.errors import MMFSError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str = "auto") -> torch.device:
    """`auto` is the current CUDA device (the first) when one is present, else the CPU; `cuda:N`/`cpu` are checked.

    `cuda:N` also becomes the process's current CUDA device, so that everything which follows the current
    device rather than a tensor's (pinned-memory loading, cuBLAS handles, the bf16 check) uses GPU N too.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MMFSError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MMFSError(f"device {name!r} was asked for but no CUDA GPU is available; use --device cpu")
        if device.index is not None:
            count = torch.cuda.device_count()
            if device.index >= count:
                raise MMFSError(f"device {name!r} was asked for but only {count} CUDA GPU(s) are visible")
            torch.cuda.set_device(device)
    return device


def cuda_index(device: torch.device) -> int:
    """The index of a CUDA device; plain `cuda` is the current device."""
    return torch.cuda.current_device() if device.index is None else device.index


def onnx_providers(device: torch.device | str) -> list:
    """ONNX Runtime providers for a torch device: CUDA on the same GPU first when asked for and installed, CPU always.

    `cpu` gets the CPU alone, even where onnxruntime-gpu is installed; a name is checked by `pick_device`.
    """
    import onnxruntime

    device = pick_device(device) if isinstance(device, str) else device
    if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": cuda_index(device)}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


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

    On torch >= 2.9 only the `fp32_precision` settings are used (cuBLAS, the cuDNN parent that Inductor's
    convolution templates read, and cuDNN convolutions). There the older `allow_tf32` flags are neither
    written nor read: mixed with the new settings they raise when read. Older torch has only those flags.
    """
    precision = "tf32" if enabled else "ieee"
    if _new_precision_api():
        _set_tf32_state((precision, precision, precision))
    else:
        _set_tf32_state((enabled, enabled))


def tf32_description() -> str:
    """The TF32 settings as one string (cuBLAS matmuls, then cuDNN), e.g. "matmul=ieee,cudnn=ieee,conv=ieee"."""
    names = ("matmul", "cudnn", "conv") if _new_precision_api() else ("matmul", "cudnn")
    return ",".join(f"{n}={v}" for n, v in zip(names, _tf32_state(), strict=True))


def numerics_description(device: torch.device) -> str:
    """What decides the bits of fp32 results besides the code: "cpu", or the GPU, its compute capability and TF32.

    Recorded with cached results (FID statistics), so that statistics computed on a GPU with TF32 are not
    reused for a CPU run, nor the other way round.
    """
    if device.type != "cuda":
        return device.type
    major, minor = torch.cuda.get_device_capability(device)
    return f"cuda:{torch.cuda.get_device_name(device)}:sm{major}{minor}:{tf32_description()}"


def set_deterministic(enabled: bool) -> None:
    """`--deterministic`: only deterministic kernels (an op without one raises); off: torch's own choice again.

    On: torch's deterministic algorithms, deterministic cuDNN convolutions, the math attention kernel
    (the flash and memory-efficient backward passes accumulate in a varying order), and cuBLAS's fixed
    workspace (`CUBLAS_WORKSPACE_CONFIG`, read when the first cuBLAS handle is made: this runs before any
    model is built; a value the user set is kept). It costs speed on CUDA and little on the CPU.
    """
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        for setter in _FUSED_ATTENTION_SETTERS:
            getattr(torch.backends.cuda, setter)(False)


def set_training_kernels(*, deterministic: bool) -> None:
    """The kernel policy of a training run: `set_deterministic`, and cuDNN's autotuner unless deterministic.

    A training run has one resolution and batch size, so cuDNN's benchmark mode times the convolution
    algorithms once per shape and keeps the fastest; which one wins varies between runs, hence off when
    deterministic. (Inference leaves it off: its promise is the same bytes on every run.)
    """
    set_deterministic(deterministic)
    torch.backends.cudnn.benchmark = not deterministic


@contextlib.contextmanager
def keeping_backend_settings() -> Iterator[None]:
    """Restore the process's TF32 and kernel settings after the block (a training run inside a longer process)."""
    tf32 = _tf32_state()
    cudnn = torch.backends.cudnn
    kernels = (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled(),
               torch.is_deterministic_algorithms_warn_only_enabled(), _fused_attention_state())  # fmt: skip
    try:
        yield
    finally:
        _set_tf32_state(tf32)
        benchmark, cudnn_deterministic, deterministic, warn_only, attention = kernels
        cudnn.benchmark, cudnn.deterministic = benchmark, cudnn_deterministic
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        for setter, value in zip(_FUSED_ATTENTION_SETTERS, attention, strict=True):
            getattr(torch.backends.cuda, setter)(value)


_FUSED_ATTENTION_SETTERS = ("enable_flash_sdp", "enable_mem_efficient_sdp", "enable_cudnn_sdp")


def _fused_attention_state() -> tuple[bool, ...]:
    cuda = torch.backends.cuda
    return cuda.flash_sdp_enabled(), cuda.mem_efficient_sdp_enabled(), cuda.cudnn_sdp_enabled()


def _new_precision_api() -> bool:
    """torch >= 2.9: the `fp32_precision` settings (which must not be mixed with `allow_tf32`)."""
    return hasattr(torch.backends.cuda.matmul, "fp32_precision")


def _tf32_state() -> tuple:
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if _new_precision_api():
        return matmul.fp32_precision, cudnn.fp32_precision, cudnn.conv.fp32_precision
    return matmul.allow_tf32, cudnn.allow_tf32


def _set_tf32_state(state: tuple) -> None:
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if _new_precision_api():
        cudnn.fp32_precision = state[1]  # first: setting this parent resets its children (and on torch 2.14 cuBLAS's)
        matmul.fp32_precision, cudnn.conv.fp32_precision = state[0], state[2]
    else:
        matmul.allow_tf32, cudnn.allow_tf32 = state


def native_bf16(device: torch.device) -> bool:
    """True when bf16 maths runs natively: a bf16-capable GPU, or a CPU on which oneDNN runs bf16 (AVX-512
    F/BW/VL/DQ and up, with the AVX512_BF16 / AMX-BF16 instructions where the CPU has them).

    On a CPU without it (AVX2 only) PyTorch's bf16 convolutions fall back to a reference GEMM and bf16
    autocast is several times *slower* than fp32 (measured 4-14x, docs/benchmarks.md).
    """
    if device.type == "cuda":
        # compute capability 8.0 (Ampere) and up; `torch.cuda.is_bf16_supported()` also counts the emulated
        # bf16 of older GPUs (V100, T4: several times slower) and asks the current device, not this one
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0)
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

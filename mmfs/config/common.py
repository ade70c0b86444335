"""Options several commands share: where and how they compute, and how they talk to the terminal."""

from __future__ import annotations

from dataclasses import dataclass

from mmfs.config.options import Options, option

MAX_SEED = 2**63 - 1  # the largest seed a command accepts (stylize, evaluate)
# Compute precisions of the inference commands (`mmfs.utils.device.DTYPES` maps them to torch dtypes):
# fp32, or autocast to bf16 / fp16 around the networks (the weights stay fp32).
DTYPES = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Runtime(Options):
    """Device, precision and output style of an inference command (a command offers the fields it uses)."""

    device: str = option("auto", "auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")
    dtype: str = option(
        "fp32",
        "Compute precision: fp32; bf16 (autocast: fast on GPUs and AVX-512 BF16 CPUs) or fp16 (autocast, for GPUs).",
        choices=DTYPES,
    )
    deterministic: bool = option(
        False,
        "Only deterministic kernels: the same bytes on every run on CUDA too (slower there; the CPU repeats anyway).",
        flags="--deterministic",
    )
    as_json: bool = option(False, "Print one JSON summary on stdout; messages go to stderr.", flags="--json")
    quiet: bool = option(False, "No progress bars and no closing summary line (errors are still printed).",
                         flags=("--quiet", "-q"))  # fmt: skip

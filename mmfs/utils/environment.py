"""What a bug report starts with (`mmfs --version`): the versions, and the device a command would run on."""

from __future__ import annotations

import platform

import torch

import mmfs
from mmfs.utils.device import native_bf16, pick_device


def describe_environment() -> list[str]:
    """mmfs's, torch's and Python's versions, then the device `--device auto` picks: the GPU by name, or the
    CPU's vector capability (which decides whether bf16 is fast there)."""
    cuda = f", CUDA {torch.version.cuda}" if torch.version.cuda else ""
    lines = [f"mmfs {mmfs.__version__}", f"torch {torch.__version__}{cuda}", f"python {platform.python_version()}"]
    device = pick_device("auto")
    bf16 = "native bf16" if native_bf16(device) else "no native bf16"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        memory = props.total_memory / 2**30
        lines.append(
            f"device: cuda ({props.name}, {memory:.0f} GiB, compute {props.major}.{props.minor}, {bf16};"
            f" {torch.cuda.device_count()} GPU(s) visible)"
        )
    else:
        capability = torch.backends.cpu.get_cpu_capability()
        lines.append(f"device: cpu ({platform.machine()}, capability {capability}, {bf16}; no CUDA GPU visible)")
    return lines

"""Seeding and RNG state capture, so a resumed training run draws exactly the same numbers.

The state of every generator we use (torch CPU, torch CUDA per device, Python `random`, NumPy's
global generator) is split into tensors (torch states are uint8 tensors) and JSON-able values
(Python and NumPy states), because checkpoints are safetensors: tensors plus string metadata, no pickle.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), Python `random` and NumPy's global generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


@contextlib.contextmanager
def cpu_seeded(seed: int) -> Iterator[None]:
    """Draw from the CPU generator seeded with `seed` inside the block (building seeded modules on the CPU),
    leaving every generator as it was: the CPU one is forked and restored, and no CUDA generator is touched
    (`torch.manual_seed` would re-seed them all, changing a running job's CUDA random streams)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def get_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The current RNG states: (tensors, JSON-able values)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    py_state = random.getstate()  # (version, tuple of 625 ints, gauss_next)
    name, keys, pos, has_gauss, cached = np.random.get_state()
    values = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    return tensors, values


def set_rng_state(tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
    """Restore states captured by `get_rng_state` (CUDA states only for devices that exist)."""
    torch.set_rng_state(tensors["torch"].to("cpu", torch.uint8))
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            if f"cuda.{i}" in tensors:
                torch.cuda.set_rng_state(tensors[f"cuda.{i}"].to("cpu", torch.uint8), i)
    version, keys, gauss = values["python"]
    random.setstate((version, tuple(keys), gauss))
    name, keys, pos, has_gauss, cached = values["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))

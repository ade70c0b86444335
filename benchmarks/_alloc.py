"""A process-wide glibc allocator setting the benchmarks can time: keep freed memory for reuse.

Benchmark scripts run as `python benchmarks/<name>.py`, so this directory is on `sys.path` and they
import it as `from _alloc import reuse_freed_memory`. The library never calls it: it changes the whole
process's allocator, which only an entry point may decide.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys


def reuse_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of unmapping it; True if it applied (Linux/glibc only).

    Activations at 512 px are 32-64 MB each. glibc serves blocks above 32 MB with mmap and unmaps them on
    free, so every such tensor is page-faulted in afresh (~2 ms per 10 MB). With mmap off and a high trim
    threshold, freed blocks are reused: 10-20 % faster CPU inference. Process-wide, so only entry points
    (CLI commands, benchmarks) should call it, never the library on import.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 1 << 30))

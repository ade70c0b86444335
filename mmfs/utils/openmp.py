"""How PyTorch's idle CPU threads wait, chosen once per process before torch is first imported.

PyTorch runs its CPU kernels in OpenMP parallel regions. Between two regions the worker threads either
spin for a while (libgomp's default) or go to sleep at once (`OMP_WAIT_POLICY=PASSIVE`); the runtime
reads the setting when torch loads, and it cannot change afterwards. A training step of the demo's small
networks runs thousands of short regions: on idle cores, spinning makes it 1.3-1.5x faster than sleeping,
since every region would otherwise start by waking its threads. When other processes compete for the
cores, a spinning thread holds a core that the thread it waits for needs, and the same step runs 2-3x
slower than with sleeping threads (both measured in docs/benchmarks.md, "Training steps"). So the
choice is made from what the cores are doing as the command starts: spin when they are idle, sleep when
something else keeps them busy, or when torchrun starts several ranks on this machine (they would all see
idle cores, then compete). A setting in the environment is always kept.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import MutableMapping

# The variables that set how libgomp (Linux builds of PyTorch) waits; either one in the environment wins.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
# Other processes' CPU use, in cores, from which threads sleep instead of spinning. Half a core: the
# machine's background (kernel threads, a shell) stays far below it, one busy process is far above.
BUSY_CORES = 0.5

_chosen: str | None = None  # what this process chose, in words (the choice is made once)


def cpu_times() -> tuple[int, int] | None:
    """(busy, total) CPU time in clock ticks over all cores since boot, from /proc/stat; None where unreadable.

    Time of niced processes is not busy: they yield the cores to ours (nice 19 gets about 1/70 of a core
    beside a normal thread), so spinning threads barely lose to them.
    """
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(fields) < 8:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    busy = user + system + irq + softirq + steal
    return busy, busy + nice + idle + iowait


def busy_cores(interval: float = 0.1) -> float | None:
    """How many cores other processes keep busy, sampled over `interval` seconds while this one sleeps."""
    first = cpu_times()
    time.sleep(interval)
    second = cpu_times()
    if first is None or second is None or second[1] <= first[1]:
        return None
    return (second[0] - first[0]) / (second[1] - first[1]) * (os.cpu_count() or 1)


def choose_wait_policy(environ: MutableMapping[str, str] = os.environ, *, interval: float = 0.1) -> str:
    """Set `OMP_WAIT_POLICY=PASSIVE` in `environ` unless the cores are idle; returns what holds, in words.

    Does nothing when the environment already sets a wait variable, or when torch is already imported
    (too late to change it). Decides once per process: later calls return the first answer.
    """
    global _chosen
    if _chosen is None:
        _chosen = _choose(environ, interval)
    return _chosen


def _choose(environ: MutableMapping[str, str], interval: float) -> str:
    given = [f"{name}={environ[name]}" for name in WAIT_VARIABLES if name in environ]
    if given:
        return f"{', '.join(given)} (from the environment)"
    if "torch" in sys.modules:
        return "OpenMP's default (torch was already loaded)"
    ranks = environ.get("LOCAL_WORLD_SIZE", "1")  # set by torchrun: the ranks on this machine
    if ranks.isdigit() and int(ranks) > 1:  # they start together on idle cores, then compete for them
        environ["OMP_WAIT_POLICY"] = "PASSIVE"
        return f"OMP_WAIT_POLICY=PASSIVE ({ranks} ranks share this machine's cores)"
    busy = busy_cores(interval)
    if busy is not None and busy < BUSY_CORES:
        return f"spinning (the cores were idle: {busy:.1f} busy)"
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    seen = "unknown" if busy is None else f"{busy:.1f} of {os.cpu_count()} cores busy"
    return f"OMP_WAIT_POLICY=PASSIVE ({seen})"

"""Training metrics: per-interval means written to `log.jsonl`, TensorBoard (if installed) and the progress bar.

Loss values are accumulated as device tensors and read back only when a line is written, so logging
does not synchronise CUDA every step. Under DDP the means are averaged over ranks; rank 0 writes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from mmfs.train.distributed import Dist
from mmfs.utils.files import atomic_path


class StatsLog:
    """Collects `<phase>/<key>` scalars between log lines.

    Args:
        path: the JSON-lines file (None: nothing written, e.g. on ranks > 0).
        tensorboard_dir: folder for TensorBoard events, used only if `torch.utils.tensorboard` imports.
    """

    def __init__(self, path: Path | None, tensorboard_dir: Path | None = None) -> None:
        self.path = path
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._writer = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                pass
            else:
                self._writer = SummaryWriter(str(tensorboard_dir))
        self._last_time = time.perf_counter()
        self._last_step: int | None = None

    def report(self, prefix: str, values: dict[str, torch.Tensor]) -> None:
        """Add one observation of each value (scalar tensors or numbers)."""
        for key, value in values.items():
            name = f"{prefix}/{key}"
            value = value.detach().float() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
            self._sums[name] = self._sums[name] + value if name in self._sums else value.clone()
            self._counts[name] = self._counts.get(name, 0) + 1

    def flush(
        self, step: int, d: Dist, *, images_per_step: int, extra: dict[str, Any] | None = None
    ) -> dict[str, float]:
        """Means since the last flush (averaged over ranks), plus speed; written on rank 0; then reset."""
        names = sorted(self._sums)
        means: dict[str, float] = {}
        if names:
            device = self._sums[names[0]].device
            stacked = torch.stack([self._sums[n].to(device) / self._counts[n] for n in names])
            stacked = d.all_reduce_mean(stacked)
            means = dict(zip(names, stacked.tolist(), strict=True))
        now = time.perf_counter()
        line: dict[str, Any] = {"step": step, "time": time.time()}
        if self._last_step is not None and step > self._last_step:
            its = (step - self._last_step) / max(now - self._last_time, 1e-9)
            line.update({"it/s": round(its, 4), "img/s": round(its * images_per_step, 3)})
        line.update({k: float(v) for k, v in means.items()})
        line.update(extra or {})
        if d.is_main and self.path is not None:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(line) + "\n")
            if self._writer is not None:
                for key, value in line.items():
                    if key not in ("step", "time") and isinstance(value, int | float):
                        self._writer.add_scalar(key, value, step)
                self._writer.flush()
        self._sums.clear()
        self._counts.clear()
        self._last_time, self._last_step = now, step
        return line

    def start(self, step: int) -> None:
        """Mark the step the speed measurement starts from."""
        self._last_time, self._last_step = time.perf_counter(), step

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def truncate_log(path: Path, step: int) -> None:
    """Drop lines logged after `step` (a resumed run re-does those steps)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept))


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """All lines of a `log.jsonl`."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]

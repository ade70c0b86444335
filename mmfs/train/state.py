"""Run directories and resumable checkpoints, all safetensors (no pickle).

A run directory looks like:

    runs/00003-finetune/
      config.json                                 the TrainConfig
      log.jsonl                                   one JSON line per log interval
      previews/step-002000.png
      checkpoints/step-002000.safetensors         kind "training": every net under "<name>."
      checkpoints/step-002000.state.safetensors   kind "train_state": optimizers, RNG, step
      latest.json                                 {"step", "weights", "state"}: written last, atomically
      final.safetensors                           kind "stylizer": the inference weights

Optimizer state is flattened to tensors `opt.<name>.state.<param index>.<key>` with `param_groups`
as JSON metadata; RNG states are tensors `rng.<rank>.torch` / `rng.<rank>.cuda.<i>` plus JSON for
Python's and NumPy's generators (one entry per rank, so every rank resumes its own stream).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from mmfs.checkpoint import load_checkpoint, module_state, save_checkpoint
from mmfs.errors import CheckpointError, MMFSError
from mmfs.utils.files import atomic_path

LATEST = "latest.json"
CONFIG = "config.json"
_STEP_FILE = re.compile(r"step-(\d+)\.safetensors$")


def new_run_dir(outdir: str | Path, command: str) -> Path:
    """`outdir/NNNNN-<command>` with the next free number (stylegan3's numbered runs)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in outdir.iterdir() if (m := re.match(r"(\d{5})-", p.name))]
    run_dir = outdir / f"{max(numbers, default=-1) + 1:05d}-{command}"
    run_dir.mkdir()
    return run_dir


def write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def optimizer_tensors(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten an optimizer's state dict: tensors by `opt.<name>.state.<pid>.<key>`, the rest as JSON."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{name}.state.{pid}.{key}"] = value.detach().to("cpu").clone().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(
    name: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Inverse of `optimizer_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    prefix = f"opt.{name}.state."
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, field = key[len(prefix) :].split(".", 1)
            state.setdefault(int(pid), {})[field] = value
    for key, value in meta["scalars"].items():
        pid, field = key.split(".", 1)
        state.setdefault(int(pid), {})[field] = value
    groups = meta["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"optimizer {name!r} state does not fit this run ({exc})") from None


def save_training(
    run_dir: Path,
    step: int,
    nets: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    rng: list[tuple[dict[str, torch.Tensor], dict[str, Any]]],
    *,
    config_json: str,
    model_config: Any,
    extra: dict[str, Any],
    keep: int,
) -> Path:
    """Write the weights and state files of `step`, then `latest.json`, then prune old checkpoints."""
    folder = run_dir / "checkpoints"
    weights_path = folder / f"step-{step:06d}.safetensors"
    state_path = folder / f"step-{step:06d}.state.safetensors"
    weights: dict[str, torch.Tensor] = {}
    for name, net in nets.items():
        weights.update(module_state(net, f"{name}."))
    meta = {"step": str(step), "train_config": config_json}
    save_checkpoint(weights_path, weights, kind="training", config=model_config, meta=meta)

    tensors: dict[str, torch.Tensor] = {}
    opt_meta: dict[str, Any] = {}
    for name, opt in optimizers.items():
        t, m = optimizer_tensors(name, opt)
        tensors.update(t)
        opt_meta[name] = m
    rng_values: dict[str, Any] = {}
    for rank, (rng_tensors, values) in enumerate(rng):
        tensors.update({f"rng.{rank}.{k}": v.detach().to("cpu").contiguous() for k, v in rng_tensors.items()})
        rng_values[str(rank)] = values
    state_meta = {
        **meta,
        "optimizers": opt_meta,
        "rng": rng_values,
        "world_size": str(len(rng)),
        "loop": extra,
    }
    save_checkpoint(state_path, tensors, kind="train_state", config=model_config, meta=state_meta)
    # The pointer is written last: a crash before this line leaves the previous checkpoint in charge.
    write_json(
        run_dir / LATEST,
        {
            "step": step,
            "weights": str(weights_path.relative_to(run_dir)),
            "state": str(state_path.relative_to(run_dir)),
        },
    )
    _prune(folder, keep)
    return weights_path


def _prune(folder: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (weights and state files together)."""
    steps = sorted(int(m.group(1)) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name)))
    for step in steps[: max(0, len(steps) - max(keep, 1))]:
        for name in (f"step-{step:06d}.safetensors", f"step-{step:06d}.state.safetensors"):
            (folder / name).unlink(missing_ok=True)


def read_latest(run_dir: Path) -> dict[str, Any]:
    """The `latest.json` pointer of a run directory, with clear errors."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise MMFSError(f"{run_dir}: not a training run directory (no {CONFIG})")
    pointer = run_dir / LATEST
    if not pointer.is_file():
        raise MMFSError(f"{run_dir}: no checkpoint to resume from yet ({LATEST} is missing)")
    try:
        latest = json.loads(pointer.read_text())
        return {"step": int(latest["step"]), "weights": run_dir / latest["weights"], "state": run_dir / latest["state"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise MMFSError(f"{pointer}: unreadable resume pointer ({exc})") from None


def load_training(run_dir: Path) -> tuple[int, Any, Any]:
    """(step, weights checkpoint, state checkpoint) of a run's latest checkpoint."""
    latest = read_latest(run_dir)
    weights = load_checkpoint(latest["weights"], kind="training")
    state = load_checkpoint(latest["state"], kind="train_state")
    if int(state.meta["step"]) != latest["step"] or int(weights.meta["step"]) != latest["step"]:
        raise CheckpointError(f"{run_dir}: checkpoint files do not match {LATEST} (step {latest['step']})")
    return latest["step"], weights, state


def rng_of_rank(state: Any, rank: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The RNG state saved for `rank`, or None when the run had fewer ranks."""
    values = json.loads(state.meta["rng"]).get(str(rank))
    if values is None:
        return None
    prefix = f"rng.{rank}."
    return {k[len(prefix) :]: v for k, v in state.tensors.items() if k.startswith(prefix)}, values

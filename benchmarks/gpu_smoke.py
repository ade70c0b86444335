"""The first run on a GPU machine: every CUDA path once, with its figures, in one JSON file (`gpu_smoke.sh`).

Runs, on random weights of one preset (no download, nothing from the network):
  * a few training steps of Stage I (`pretrain-encoder`) and Stage II (`finetune`, tiny DINO) on one device,
    in fp32 and bf16, with the images/s of the last log line and the peak CUDA memory;
  * `finetune` under torchrun on every GPU (NCCL), fp32 and bf16 (with `--device cpu`: 2 processes, gloo, fp32);
  * the resume promise: 2 + 2 steps against 4 uninterrupted steps, with `--deterministic` and (GPU) without;
  * `mmfs stylize` twice with `--deterministic` (same bytes?) and its images/s, and `mmfs evaluate` (tiny metrics).
Each check is recorded as held or not; the file is written even when a step fails (its error is in it).

    benchmarks/gpu_smoke.sh                        # on a GPU machine: ffhq256, 20 steps a run (under 10 min)
    benchmarks/gpu_smoke.sh --device cpu           # the dry run CI runs: tiny preset, 2 steps a run (~1 min)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # this checkout's mmfs, and train_throughput's inputs


def cli(args: list[str], env: dict[str, str], nproc: int = 1) -> dict[str, Any]:
    """Run one mmfs command: its stdout lines, wall time and peak CUDA memory (rank 0's under torchrun).

    One process runs it here, in this process (the peak memory counter is reset first, the TF32 and
    kernel settings restored after); more run under torchrun, each a fresh process.
    """
    started = time.perf_counter()
    if nproc == 1:
        out = io.StringIO()
        peak = Path(tempfile.mktemp(suffix=".json"))
        os.environ["GPU_SMOKE_PEAK"] = str(peak)
        with contextlib.redirect_stdout(out):
            run_cli_here(args)
        stdout = out.getvalue()
    else:
        peak = Path(tempfile.mktemp(suffix=".json"))
        runner = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                  str(Path(__file__).resolve()), "--run-cli"]  # fmt: skip
        result = subprocess.run([*runner, *args], env={**env, "GPU_SMOKE_PEAK": str(peak)}, capture_output=True,
                                text=True)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"mmfs {' '.join(args)} failed:\n{result.stderr[-2000:]}")
        stdout = result.stdout
    seconds = time.perf_counter() - started
    figures = json.loads(peak.read_text()) if peak.is_file() else {}
    return {"seconds": round(seconds, 2), **figures, "stdout": stdout.strip().splitlines()}


def run_cli_here(args: list[str]) -> None:
    """The mmfs CLI in this process, then (rank 0) the peak CUDA memory into $GPU_SMOKE_PEAK."""
    import torch

    from mmfs.utils.device import keeping_backend_settings
    from mmfs_cli.app import app

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with keeping_backend_settings():  # `stylize --deterministic` must not carry over to the next command
        code = app(args, standalone_mode=False)  # a command's own error: printed, and its exit code returned
    if code not in (None, 0):
        raise RuntimeError(f"mmfs {' '.join(args)} exited with {code}")
    if os.environ.get("RANK", "0") == "0" and torch.cuda.is_available() and torch.cuda.is_initialized():
        peak = torch.cuda.max_memory_allocated() / 2**20
        Path(os.environ["GPU_SMOKE_PEAK"]).write_text(json.dumps({"peak_cuda_mb": round(peak, 1)}))


def last_log(run: Path) -> dict[str, Any]:
    lines = (run / "log.jsonl").read_text().splitlines()
    return json.loads(lines[-1])


def run_dir(out: list[str]) -> Path:
    """The run directory a training command made (its stdout's last line is `<run>/final.safetensors`)."""
    return Path(out[-1]).parent


def same_tensors(a: Path, b: Path) -> bool:
    from mmfs.checkpoint import load_checkpoint

    ta, tb = load_checkpoint(a).tensors, load_checkpoint(b).tensors
    return ta.keys() == tb.keys() and all(bool((ta[k] == tb[k]).all()) for k in ta)


def same_bytes(a: Path, b: Path) -> bool:
    files_a, files_b = sorted(p.name for p in a.iterdir()), sorted(p.name for p in b.iterdir())
    return files_a == files_b and all((a / n).read_bytes() == (b / n).read_bytes() for n in files_a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (every visible GPU) or cpu (the dry run)")
    parser.add_argument("--out", type=Path, default=Path("gpu_smoke.json"), help="the one file of figures")
    parser.add_argument("--preset", default=None, help="network preset (default: ffhq256 on cuda, tiny on cpu)")
    parser.add_argument("--steps", type=int, default=None, help="steps of each training run (20 on cuda, 2 on cpu)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the work folder here")
    opts = parser.parse_args()

    import torch
    from step_profile import make_inputs  # this folder is on sys.path when a script here runs

    from mmfs.config import PRESETS
    from mmfs.utils.files import atomic_path

    on_gpu = opts.device != "cpu"
    if on_gpu and not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU here; run with --device cpu for the dry run")
    preset = opts.preset or ("ffhq256" if on_gpu else "tiny")
    steps = opts.steps or (20 if on_gpu else 2)
    gpus = torch.cuda.device_count() if on_gpu else 0
    nproc = gpus if on_gpu else 2
    batch = 8 if on_gpu else 4
    dtypes = ("fp32", "bf16") if on_gpu else ("fp32",)
    report: dict[str, Any] = {
        "device": opts.device, "preset": preset, "steps": steps, "batch_size": batch, "torch": torch.__version__,
        "gpus": [torch.cuda.get_device_name(i) for i in range(gpus)], "runs": {}, "checks": {}, "errors": [],
    }  # fmt: skip
    work = opts.keep or Path(tempfile.mkdtemp(prefix="mmfs-gpu-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "MMFS_CACHE": str(work / "cache"), "TORCH_HOME": str(work / "torch")}  # fmt: skip
    if not on_gpu:
        env["OMP_NUM_THREADS"] = "1"  # tiny models; torchrun's 2 processes share the cores
    os.environ.update({k: env[k] for k in ("HF_HUB_OFFLINE", "MMFS_CACHE", "TORCH_HOME")})
    inputs = make_inputs(PRESETS[preset], work, batch)
    common = ["--steps", str(steps), "--batch-size", str(batch), "--device", opts.device, "--workers", "0",
              "--log-every", "1", "--preview-every", "0", "--quiet", "-o", str(work / "runs")]  # fmt: skip
    stage1 = ["pretrain-encoder", "--prior", str(inputs["prior"])]
    stage2 = ["finetune", "--init", str(inputs["init"]), "--disc", str(inputs["prior"]), "--photos",
              str(inputs["photos"]), "--art", str(inputs["art"]), "--tiny"]  # fmt: skip

    def record(name: str, fn) -> Any:
        try:
            value = fn()
        except Exception as exc:  # recorded, and the remaining steps still run
            report["errors"].append(f"{name}: {exc}")
            print(f"FAILED {name}: {exc}", file=sys.stderr)
            return None
        print(f"done {name}", file=sys.stderr)
        return value

    def train_run(name: str, args: list[str], n: int = 1) -> Path:
        result = cli(args, env, nproc=n)
        run = run_dir(result["stdout"])
        line = last_log(run)
        report["runs"][name] = {"img/s": line.get("img/s"), "peak_cuda_mb": result.get("peak_cuda_mb"),
                                "seconds": result["seconds"], "processes": n}  # fmt: skip
        return run

    finetuned = None
    for dtype in dtypes:
        record(f"stage1-{dtype}", lambda d=dtype: train_run(f"stage1-{d}", [*stage1, *common, "--dtype", d]))
        run = record(f"stage2-{dtype}", lambda d=dtype: train_run(f"stage2-{d}", [*stage2, *common, "--dtype", d]))
        finetuned = finetuned or run
        if nproc > 1 and (on_gpu or dtype == "fp32"):
            record(f"stage2-{dtype}-torchrun{nproc}",
                   lambda d=dtype: train_run(f"stage2-{d}-torchrun{nproc}", [*stage2, *common, "--dtype", d], nproc))  # fmt: skip

    def resume_holds(deterministic: bool) -> bool:
        flags = ["--deterministic"] if deterministic else []
        args = [*stage2, *common, "--checkpoint-every", "2", *flags]
        whole = run_dir(cli([*args, "--steps", "4"], env)["stdout"])
        part = run_dir(cli([*args, "--steps", "2"], env)["stdout"])
        cli(["finetune", "--resume", str(part), "--steps", "4", "--quiet"], env)
        return same_tensors(whole / "final.safetensors", part / "final.safetensors")

    report["checks"]["resume_bit_exact_deterministic"] = record("resume --deterministic", lambda: resume_holds(True))
    if on_gpu:  # on the CPU the kernels are deterministic anyway: the same check twice
        report["checks"]["resume_bit_exact_default"] = record("resume", lambda: resume_holds(False))

    if finetuned is not None:
        model = str(finetuned / "final.safetensors")
        images = len(list(Path(inputs["photos"]).iterdir()))

        def stylize(folder: str) -> dict[str, Any]:
            result = cli(["stylize", str(inputs["photos"]), "--aligned", "-c", model, "--seed", "3", "--device",
                          opts.device, "--deterministic", "-o", str(work / folder), "--quiet"], env)  # fmt: skip
            report["runs"][f"stylize-{folder}"] = {"img/s": round(images / result["seconds"], 3),
                                                   "peak_cuda_mb": result.get("peak_cuda_mb"),
                                                   "seconds": result["seconds"]}  # fmt: skip
            return result

        if record("stylize", lambda: (stylize("a"), stylize("b"))):
            report["checks"]["stylize_same_bytes_deterministic"] = same_bytes(work / "a", work / "b")

        def evaluate() -> None:
            result = cli(["evaluate", "-c", model, "--photos", str(inputs["photos"]), "--art", str(inputs["art"]),
                          "--n", "8", "--tiny-metrics", "--no-fid-cache", "--device", opts.device,
                          "--report", str(work / "evaluate.json"), "--quiet"], env)  # fmt: skip
            report["runs"]["evaluate"] = {"seconds": result["seconds"], "peak_cuda_mb": result.get("peak_cuda_mb"),
                                          "metrics": json.loads((work / "evaluate.json").read_text()).get("metrics")}  # fmt: skip

        record("evaluate", evaluate)

    opts.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(opts.out) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2) + "\n")
    if opts.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    held = [k for k, v in report["checks"].items() if v]
    print(
        f"wrote {opts.out}: {len(report['runs'])} runs, checks held: {held or 'none'}, errors: {len(report['errors'])}"
    )
    sys.exit(1 if report["errors"] else 0)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--run-cli":
        run_cli_here(sys.argv[2:])
    else:
        main()

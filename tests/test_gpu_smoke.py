"""`benchmarks/gpu_smoke.sh`'s dry run on the CPU, so the script a GPU machine runs as is cannot rot unseen.

In the real-size tier (`make test-realsize`, which CI runs): about a minute of CPU, too long for `make test`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.realsize
def test_the_gpu_smoke_script_runs_its_cpu_dry_run_and_every_check_holds(tmp_path):
    out = tmp_path / "smoke.json"
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(["bash", str(REPO / "benchmarks/gpu_smoke.sh"), "--device", "cpu", "--out", str(out)],
                            env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["errors"] == []
    assert set(report["runs"]) == {"stage1-fp32", "stage2-fp32", "stage2-fp32-torchrun2", "stylize-a", "stylize-b",
                                   "evaluate"}  # fmt: skip
    assert report["runs"]["stage2-fp32-torchrun2"]["processes"] == 2
    assert all(run["img/s"] > 0 for name, run in report["runs"].items() if name != "evaluate")
    assert report["checks"] == {"resume_bit_exact_deterministic": True, "stylize_same_bytes_deterministic": True}
    assert set(report["runs"]["evaluate"]["metrics"]) == {"fid", "arcface_dist", "lpips_diversity"}

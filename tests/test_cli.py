"""The command line as a whole: every command is there, documented, and `--help` stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mmfs_cli.app import app

runner = CliRunner()
COMMANDS = [
    "models", "convert", "train-prior", "pretrain-encoder", "finetune", "train-mapper", "align", "stylize", "adapt",
    "evaluate", "demo", "web", "info",
]  # fmt: skip


def test_root_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help_with_an_example(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output and f"mmfs {command}" in result.output


def test_importing_the_cli_does_not_import_torch():
    code = "import sys, mmfs_cli.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_info_prints_metadata_and_rejects_foreign_files(tmp_path):
    import json

    import torch
    from safetensors.torch import save_file

    from mmfs.checkpoint import save_checkpoint
    from mmfs.config import PRESETS

    path = save_checkpoint(
        tmp_path / "a.safetensors", {"w": torch.zeros(2)}, kind="stylizer", config=PRESETS["tiny"], meta={"step": 3}
    )
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["kind"] == "stylizer" and info["step"] == 3 and info["config"]["resolution"] == 32
    save_file({"w": torch.zeros(1)}, str(tmp_path / "b.safetensors"))
    result = runner.invoke(app, ["info", str(tmp_path / "b.safetensors")])
    assert result.exit_code == 1 and "not an mmfs checkpoint" in result.output


def test_detector_choices_are_the_core_detectors():
    import dataclasses

    from mmfs.config.faces import DETECTORS, FaceDetection
    from mmfs.config.options import cli_spec
    from mmfs.faces import DETECTORS as built

    assert built is DETECTORS  # one declaration, which the detectors are built from
    (field,) = [f for f in dataclasses.fields(FaceDetection) if f.name == "detector"]
    assert cli_spec(field).choices == DETECTORS
    for command in ("stylize", "align", "adapt"):  # what the generated --detector lists in --help
        result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "300"})
        assert "|".join(DETECTORS) in result.output, command


def test_version_names_mmfs_torch_and_the_device_a_command_would_use():
    import platform

    import torch

    import mmfs

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"mmfs {mmfs.__version__}" and lines[1].startswith(f"torch {torch.__version__}")
    assert lines[2] == f"python {platform.python_version()}"
    if torch.cuda.is_available():
        assert lines[3].startswith(f"device: cuda ({torch.cuda.get_device_name(0)}, ")
    else:
        capability = torch.backends.cpu.get_cpu_capability()
        assert lines[3].startswith(f"device: cpu ({platform.machine()}, capability {capability}, ")
    assert len(lines) == 4

"""Files as downloaded: what they are is said from their bytes, and nothing in them ever runs."""

from __future__ import annotations

import argparse
import os
import pickle

import torch
from typer.testing import CliRunner

from mmfs.foreign import container, python_objects
from mmfs_cli.app import app

runner = CliRunner()


class _Trap:
    """Unpickling this creates a folder: proof that a file was executed."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    return lines[0]


def test_a_downloaded_pth_passed_as_checkpoint_names_the_convert_line(tmp_path):
    marker = tmp_path / "executed"
    release = tmp_path / "phase2_pretrain_90000.pth"
    torch.save({"G_ema_model": {"w": torch.zeros(2)}, "trap": _Trap(str(marker))}, release)
    photo = tmp_path / "face.png"
    photo.write_bytes(b"")  # never read: the checkpoint is refused first
    line = _error_line(runner.invoke(app, ["stylize", str(photo), "-c", str(release), "--aligned", "--seed", "1"]))
    assert "is an upstream PyTorch file" in line
    assert line.endswith(f"convert it first: mmfs convert {release} {tmp_path / 'phase2_pretrain_90000.safetensors'}")
    legacy = tmp_path / "stylegan2.pt"
    torch.save({"g_ema": {"w": torch.zeros(2)}}, legacy, _use_new_zipfile_serialization=False)
    line = _error_line(runner.invoke(app, ["info", str(legacy)]))
    assert f"mmfs convert {legacy} {tmp_path / 'stylegan2.safetensors'}" in line
    assert not marker.exists()


def test_convert_names_the_python_objects_a_pickle_holds_and_runs_none(tmp_path):
    marker = tmp_path / "executed"
    plain = tmp_path / "plain.pkl"  # pickle.dump, not torch.save: weights-only loading cannot even parse it
    with open(plain, "wb") as fh:
        pickle.dump({"g_ema": {}, "args": argparse.Namespace(size=3), "trap": _Trap(str(marker))}, fh, protocol=4)
    assert container(plain) == "pickle"
    assert python_objects(plain) == ["argparse.Namespace", "posix.mkdir"]
    line = _error_line(runner.invoke(app, ["convert", str(plain), str(tmp_path / "out.safetensors")]))
    assert "holds Python objects besides tensors (argparse.Namespace, posix.mkdir)" in line
    assert "--trust-pickle" in line
    zipped = tmp_path / "zipped.pt"
    torch.save({"g_ema": {"w": torch.zeros(1)}, "trap": _Trap(str(marker))}, zipped)
    line = _error_line(runner.invoke(app, ["convert", str(zipped), str(tmp_path / "out.safetensors")]))
    assert "(posix.mkdir)" in line and "--trust-pickle" in line
    assert not marker.exists()


def test_plain_tensor_pickles_hold_no_python_objects_and_other_files_are_not_torch(tmp_path):
    state = tmp_path / "state.pth"
    torch.save({"a": {"w": torch.zeros(2, dtype=torch.float16)}, "step": 3, "betas": (0.0, 0.99)}, state)
    assert container(state) == "torch" and python_objects(state) == []
    (tmp_path / "junk.pt").write_bytes(b"\x80\x02 not really a pickle")
    line = _error_line(runner.invoke(app, ["convert", str(tmp_path / "junk.pt"), str(tmp_path / "j.safetensors")]))
    assert "not a readable PyTorch checkpoint" in line
    (tmp_path / "text.pt").write_text("hello")
    assert container(tmp_path / "text.pt") is None


def test_torchscript_archives_are_named_and_refused(tmp_path):
    scripted = tmp_path / "ViT-B-32.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    assert container(scripted) == "torchscript"
    line = _error_line(runner.invoke(app, ["convert", str(scripted), str(tmp_path / "out.safetensors")]))
    assert "is a TorchScript archive" in line
    line = _error_line(runner.invoke(app, ["info", str(scripted)]))
    assert "is a TorchScript archive" in line and "not an mmfs checkpoint" in line
    from mmfs.errors import MissingWeightsError
    from mmfs.external.clip import OpenClipEncoder

    try:
        OpenClipEncoder.from_pretrained(scripted)
    except MissingWeightsError as exc:
        assert "OpenAI's TorchScript archive" in str(exc) and "open_clip_pytorch_model.bin" in str(exc)
    else:
        raise AssertionError("a TorchScript CLIP file was accepted")

"""Device and precision helpers: the slow-bf16 warning on CPUs without native bf16."""

from __future__ import annotations

import warnings

import pytest
import torch

from mmfs.utils import device as device_mod


@pytest.fixture
def fresh_warning(monkeypatch):
    monkeypatch.setattr(device_mod, "_warned_slow_bf16", False)


def test_bf16_on_a_cpu_without_native_bf16_warns_once(monkeypatch, fresh_warning):
    monkeypatch.setattr(device_mod, "native_bf16", lambda device: False)
    cpu = torch.device("cpu")
    with pytest.warns(RuntimeWarning, match="no native bf16.*use --dtype fp32"):
        with device_mod.autocast(cpu, torch.bfloat16):
            assert torch.is_autocast_enabled("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second use stays quiet
        with device_mod.autocast(cpu, torch.bfloat16):
            pass


@pytest.mark.parametrize("native, dtype", [(True, torch.bfloat16), (False, torch.float32)])
def test_no_warning_where_bf16_is_native_or_unused(monkeypatch, fresh_warning, native, dtype):
    monkeypatch.setattr(device_mod, "native_bf16", lambda device: native)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with device_mod.autocast(torch.device("cpu"), dtype):
            assert torch.is_autocast_enabled("cpu") == (dtype == torch.bfloat16)


def test_native_bf16_answers_for_this_cpu():
    # The answer is the machine's; it must be a plain bool and agree with oneDNN's own check.
    answer = device_mod.native_bf16(torch.device("cpu"))
    assert answer is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_the_cli_prints_warnings_as_one_line():
    from mmfs_cli.app import _one_line_warning

    text = _one_line_warning(RuntimeWarning("bf16 is slow here"), RuntimeWarning, "/x/y.py", 3, "code")
    assert text == "warning: bf16 is slow here\n"

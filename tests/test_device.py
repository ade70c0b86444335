"""Device and precision helpers: the slow-bf16 warning on CPUs without native bf16."""

from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path

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


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty where there is no /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())


def test_native_bf16_on_this_cpu_follows_its_avx512_flags():
    # oneDNN takes bf16 from AVX-512 (F, BW, VL, DQ: its avx512_core level) up; AVX512_BF16 and AMX-BF16
    # come only on such CPUs. An AVX2-only CPU has no bf16 path: there bf16 autocast is many times slower.
    flags = cpu_flags()
    if not flags or platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("needs an x86-64 Linux /proc/cpuinfo")
    if os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA"):
        pytest.skip("oneDNN's instruction set is capped by the environment")
    avx512_core = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags
    if not avx512_core and "avx_ne_convert" in flags:
        pytest.skip("an AVX2-VNNI-2 CPU: oneDNN's bf16 there is not checked by this test")
    native = device_mod.native_bf16(torch.device("cpu"))
    assert native is avx512_core, sorted(f for f in flags if f.startswith(("avx", "amx")))
    if flags & {"avx512_bf16", "amx_bf16"}:
        assert native


def test_native_bf16_says_whether_bf16_convolutions_run_in_onednn():
    # What the answer decides: under bf16 autocast a convolution runs in oneDNN where bf16 is native, and
    # in PyTorch's reference GEMM (slow_conv2d, several times slower than fp32) where it is not.
    from torch.profiler import ProfilerActivity, profile

    conv = torch.nn.Conv2d(3, 4, 3)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(torch.randn(1, 3, 16, 16))
    assert out.dtype == torch.bfloat16
    ops = {event.key for event in prof.key_averages()}
    assert ("aten::mkldnn_convolution" in ops) is device_mod.native_bf16(torch.device("cpu")), sorted(ops)


def test_native_bf16_by_device_type():
    if not torch.cuda.is_available():
        assert device_mod.native_bf16(torch.device("cuda")) is False  # no GPU here: nothing runs on one
    assert device_mod.native_bf16(torch.device("meta")) is True  # other backends are not second-guessed


def test_the_cli_prints_warnings_as_one_line():
    from mmfs_cli.app import _one_line_warning

    text = _one_line_warning(RuntimeWarning("bf16 is slow here"), RuntimeWarning, "/x/y.py", 3, "code")
    assert text == "warning: bf16 is slow here\n"

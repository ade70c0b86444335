"""Device and precision helpers: the slow-bf16 warning on CPUs without native bf16."""

from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mmfs.utils import device as device_mod
from support.fake_cuda import FakeGpus, FakeOnnxRuntime


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


# --- what would be asked of a GPU: torch.cuda's answers faked, the requests recorded ----------------------


def test_cuda_n_becomes_the_current_device_and_a_missing_gpu_is_one_line(monkeypatch):
    gpus = FakeGpus(monkeypatch)
    assert device_mod.pick_device("cuda:1") == torch.device("cuda", 1)
    assert gpus.set_device_calls == [torch.device("cuda", 1)]
    assert device_mod.pick_device("cuda") == torch.device("cuda")  # the current device, not re-set
    assert device_mod.pick_device("auto") == torch.device("cuda")
    assert device_mod.pick_device("cpu") == torch.device("cpu")
    assert gpus.set_device_calls == [torch.device("cuda", 1)]
    with pytest.raises(device_mod.MMFSError, match="'cuda:2' was asked for but only 2 CUDA GPU"):
        device_mod.pick_device("cuda:2")


def test_bf16_is_native_from_compute_capability_8_of_the_device_asked_for(monkeypatch):
    from mmfs.train.loop import resolve_dtype

    gpus = FakeGpus(monkeypatch)  # GPU 0 an A100 (8.0), GPU 1 a V100 (7.0: bf16 only emulated)
    assert device_mod.native_bf16(torch.device("cuda", 0)) is True
    assert device_mod.native_bf16(torch.device("cuda", 1)) is False  # judged by GPU 1, though GPU 0 is current
    gpus.current = 1
    assert device_mod.native_bf16(torch.device("cuda")) is False  # plain "cuda": the current device
    # old runs' dtype "auto": bf16 where it is native, else fp32
    assert resolve_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16
    assert resolve_dtype("auto", torch.device("cuda", 1)) == torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32


@pytest.mark.parametrize("installed", [("CUDAExecutionProvider", "CPUExecutionProvider"), ("CPUExecutionProvider",)])
def test_onnx_runtime_gets_the_gpu_of_the_device_and_the_cpu_alone_for_cpu(monkeypatch, installed):
    import sys

    gpus = FakeGpus(monkeypatch)
    monkeypatch.setitem(sys.modules, "onnxruntime", FakeOnnxRuntime(installed))
    gpu = "CUDAExecutionProvider" in installed
    cpu_only = ["CPUExecutionProvider"]
    assert device_mod.onnx_providers("cpu") == cpu_only
    assert device_mod.onnx_providers(torch.device("cuda", 1)) == (
        [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"] if gpu else cpu_only
    )
    gpus.current = 1
    assert device_mod.onnx_providers("cuda") == (
        [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"] if gpu else cpu_only
    )
    assert device_mod.onnx_providers("auto") == device_mod.onnx_providers("cuda")


def test_arcface_and_the_scrfd_detector_ask_onnx_runtime_for_the_device_given(monkeypatch, tmp_path):
    """The provider lists the two ONNX loaders hand to insightface, on faked GPUs with onnxruntime-gpu installed."""
    import sys

    pytest.importorskip("insightface")
    import insightface.model_zoo

    from mmfs.errors import CheckpointError
    from mmfs.external.arcface import ArcFaceOnnx
    from mmfs.faces.detect import InsightFaceDetector

    FakeGpus(monkeypatch)
    monkeypatch.setitem(sys.modules, "onnxruntime", FakeOnnxRuntime(("CUDAExecutionProvider", "CPUExecutionProvider")))
    asked, prepared = [], []

    class FakeScrfd:
        taskname, use_kps = "detection", True

        def prepare(self, ctx_id, **kwargs):
            prepared.append(ctx_id)

    def get_model(path, providers):
        asked.append(providers)
        return FakeScrfd()

    monkeypatch.setattr(insightface.model_zoo, "get_model", get_model)
    model = tmp_path / "det.onnx"
    model.write_bytes(b"onnx")
    InsightFaceDetector(model, device="cpu")
    InsightFaceDetector(model, device="cuda:1")
    with pytest.raises(CheckpointError):  # the fake is no recognition model; the providers were asked for first
        ArcFaceOnnx.from_pretrained(model, device="cuda:1")
    with pytest.raises(CheckpointError):
        ArcFaceOnnx.from_pretrained(model, device="cpu")
    on_gpu1 = [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert asked == [["CPUExecutionProvider"], on_gpu1, on_gpu1, ["CPUExecutionProvider"]]
    assert prepared == [-1, 0]  # insightface's ctx_id: -1 keeps the session on the CPU


def test_tf32_uses_only_the_new_settings_where_torch_has_them(restore_backends):
    if not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        pytest.skip("torch < 2.9: no fp32_precision settings")
    cudnn = torch.backends.cudnn
    device_mod.set_tf32(True)
    state = (torch.backends.cuda.matmul.fp32_precision, cudnn.fp32_precision, cudnn.conv.fp32_precision)
    assert state == ("tf32", "tf32", "tf32")  # cuBLAS, the cuDNN parent (Inductor's conv templates), convolutions
    assert device_mod.tf32_description() == "matmul=tf32,cudnn=tf32,conv=tf32"
    device_mod.set_tf32(False)
    state = (torch.backends.cuda.matmul.fp32_precision, cudnn.fp32_precision, cudnn.conv.fp32_precision)
    assert state == ("ieee", "ieee", "ieee")
    with device_mod.keeping_backend_settings():  # each state the process may hold comes back as it was
        for state in [("none", "none", "tf32"), ("tf32", "ieee", "ieee"), ("ieee", "tf32", "ieee")]:
            device_mod._set_tf32_state(state)
            assert device_mod._tf32_state() == state


def test_tf32_on_a_torch_with_only_the_old_flags(monkeypatch):
    from types import SimpleNamespace

    matmul, cudnn = SimpleNamespace(allow_tf32=False), SimpleNamespace(allow_tf32=False)  # torch < 2.9's shape
    monkeypatch.setattr(torch.backends.cuda, "matmul", matmul)
    monkeypatch.setattr(torch.backends, "cudnn", cudnn)
    saved = device_mod._tf32_state()
    device_mod.set_tf32(True)
    assert (matmul.allow_tf32, cudnn.allow_tf32) == (True, True)
    assert device_mod.tf32_description() == "matmul=True,cudnn=True"
    device_mod._set_tf32_state(saved)
    assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, False)
    assert vars(matmul) == {"allow_tf32": False} and vars(cudnn) == {"allow_tf32": False}  # no new setting written


@pytest.fixture
def restore_backends():
    with device_mod.keeping_backend_settings():
        yield


@pytest.mark.parametrize("deterministic", [True, False])
def test_training_kernels_deterministic_or_autotuned_and_restored(monkeypatch, deterministic):
    cudnn, cuda = torch.backends.cudnn, torch.backends.cuda
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (
        cudnn.benchmark,
        cudnn.deterministic,
        torch.are_deterministic_algorithms_enabled(),
        cuda.flash_sdp_enabled(),
    )
    with device_mod.keeping_backend_settings():
        device_mod.set_training_kernels(deterministic=deterministic)
        assert torch.are_deterministic_algorithms_enabled() is deterministic
        assert cudnn.deterministic is deterministic
        assert cudnn.benchmark is not deterministic  # fixed training shapes: autotune, unless deterministic
        fused = (cuda.flash_sdp_enabled(), cuda.mem_efficient_sdp_enabled(), cuda.cudnn_sdp_enabled())
        assert fused == ((not deterministic),) * 3  # the math attention kernel alone when deterministic
        assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == (":4096:8" if deterministic else None)
    assert (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled(),
            cuda.flash_sdp_enabled()) == before  # fmt: skip


def test_a_users_cublas_workspace_setting_is_kept(monkeypatch, restore_backends):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    device_mod.set_deterministic(True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_numerics_description_names_the_gpu_and_its_tf32(monkeypatch, restore_backends):
    FakeGpus(monkeypatch)
    device_mod.set_tf32(True)
    on = device_mod.numerics_description(torch.device("cuda", 0))
    assert on.startswith("cuda:NVIDIA A100:sm80:") and "tf32" in on
    device_mod.set_tf32(False)
    off = device_mod.numerics_description(torch.device("cuda", 0))
    assert off != on and device_mod.numerics_description(torch.device("cuda", 1)).startswith("cuda:Tesla V100:sm70:")
    assert device_mod.numerics_description(torch.device("cpu")) == "cpu"


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("size", [(7, 12), (24, 40), (16, 9)])
def test_the_matmul_resize_is_interpolates_resize_with_its_gradient(antialias, size):
    """The form `--deterministic` uses on CUDA (matrix products, deterministic backward) computes the same resize."""
    from mmfs.utils.resize import bilinear_resize, bilinear_resize_as_matmuls

    x = torch.randn(2, 3, 16, 20, dtype=torch.float64, requires_grad=True)
    want = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=antialias)
    got = bilinear_resize_as_matmuls(x, size, antialias=antialias)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    weights = torch.randn_like(want)
    (grad_want,) = torch.autograd.grad((want * weights).sum(), x)
    (grad_got,) = torch.autograd.grad((got * weights).sum(), x)
    torch.testing.assert_close(grad_got, grad_want, rtol=1e-6, atol=1e-6)
    with device_mod.keeping_backend_settings():  # on the CPU interpolate itself runs, deterministic or not
        device_mod.set_deterministic(True)
        assert torch.equal(bilinear_resize(x, size, antialias=antialias), want)

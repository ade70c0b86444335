"""Test-wide settings: never touch the network, keep every cache inside the test session."""

from __future__ import annotations

import os

# Each missing Hugging Face file otherwise costs ~23 s of retries; torch hub caches stay out of $HOME.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("TORCH_HOME", str(cache / "torch"))
    monkeypatch.setenv("MMFS_CACHE", str(cache / "mmfs"))
    # The published models (mmfs.pretrained): a cache per session, never the network, no mirror unless a test sets one.
    monkeypatch.setenv("MMFS_HOME", str(cache / "mmfs-home"))
    monkeypatch.setenv("MMFS_OFFLINE", "1")
    monkeypatch.delenv("MMFS_MODEL_MIRROR", raising=False)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    import torch

    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): tiny models
    run fastest so, and a busy machine does not slow them down."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

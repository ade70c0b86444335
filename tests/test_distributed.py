"""The process-group life cycle and DDP construction, in this process: faked GPUs, and real gloo with one rank."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
import torch.distributed as dist
from torch import nn

import mmfs.train.distributed as dist_mod
from support.fake_cuda import FakeGpus


def test_a_torchrun_rank_joins_nccl_on_its_gpu_and_leaves_the_group_at_exit(monkeypatch):
    gpus = FakeGpus(monkeypatch)
    joined, registered, destroyed = [], [], []
    initialized = [False]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: initialized[0])
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: (joined.append(kw), initialized.__setitem__(0, True)))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: destroyed.append(True))
    monkeypatch.setattr(dist_mod.atexit, "register", registered.append)

    d, device = dist_mod.init_distributed("auto")
    assert (d.rank, d.world_size, d.local_rank, device) == (1, 2, 1, torch.device("cuda", 1))
    assert gpus.set_device_calls == [torch.device("cuda", 1)]
    assert [(kw["backend"], kw["device_id"]) for kw in joined] == [("nccl", torch.device("cuda", 1))]
    assert registered == [dist_mod.leave_process_group]
    dist_mod.init_distributed("auto")  # a second call (train() after adapt's) joins nothing more
    assert len(joined) == 1 and len(registered) == 1
    registered[0]()  # what runs at exit
    assert destroyed == [True]


def test_a_rank_beyond_the_visible_gpus_is_one_line(monkeypatch):
    FakeGpus(monkeypatch)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(dist_mod.MMFSError, match="LOCAL_RANK 3 but only 2 CUDA devices"):
        dist_mod.init_distributed("auto")


def test_a_single_process_on_cuda_n_makes_gpu_n_current(monkeypatch):
    gpus = FakeGpus(monkeypatch)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    d, device = dist_mod.init_distributed("cuda:1")
    assert not d.enabled and device == torch.device("cuda", 1)
    assert gpus.set_device_calls == [torch.device("cuda", 1)]  # pinned memory and the bf16 check follow it


@pytest.fixture
def gloo_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


class OldSignatureDDP(nn.parallel.DistributedDataParallel):
    """DistributedDataParallel with the keywords of torch < 2.13: `broadcast_buffers`, no `forward_sync_buffers`."""

    def __init__(self, module, device_ids=None, output_device=None, dim=0, broadcast_buffers=True,
                 process_group=None, bucket_cap_mb=None, find_unused_parameters=False, check_reduction=False,
                 gradient_as_bucket_view=False, static_graph=False):  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # this torch deprecates broadcast_buffers
            super().__init__(module, device_ids, output_device, dim, broadcast_buffers=broadcast_buffers,
                             gradient_as_bucket_view=gradient_as_bucket_view)  # fmt: skip
        self.asked_broadcast_buffers = broadcast_buffers


def _train_once(ddp: nn.Module) -> None:
    out = ddp(torch.randn(2, 3, 8, 8))
    out.square().mean().backward()
    assert all(p.grad is not None for p in ddp.module.parameters())


def _net() -> nn.Module:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))  # BatchNorm: buffers DDP could sync
    return net


def test_ddp_on_this_torch_asks_for_no_buffer_sync_in_its_own_spelling(gloo_group):
    assert "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # not the deprecated broadcast_buffers
        ddp = dist_mod.wrap_ddp(_net(), torch.device("cpu"))
    assert ddp.forward_sync_buffers is False
    _train_once(ddp)


def test_ddp_on_an_older_torch_falls_back_to_broadcast_buffers(gloo_group, monkeypatch):
    monkeypatch.setattr(nn.parallel, "DistributedDataParallel", OldSignatureDDP)
    ddp = dist_mod.wrap_ddp(_net(), torch.device("cpu"))  # a TypeError here if the fallback were gone
    assert isinstance(ddp, OldSignatureDDP) and ddp.asked_broadcast_buffers is False
    _train_once(ddp)

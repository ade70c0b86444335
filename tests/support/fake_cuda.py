"""torch.cuda's answers faked for tests on a machine without a GPU: what the code would ask of one is recorded."""

from __future__ import annotations

import torch


class FakeGpus:
    """Two visible GPUs with the given compute capabilities; records set_device calls."""

    def __init__(self, monkeypatch, capabilities=((8, 0), (7, 0)), names=("NVIDIA A100", "Tesla V100")):
        self.current, self.set_device_calls = 0, []
        self.capabilities, self.names = capabilities, names
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "set_device", self.set_device)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capabilities[self.index(d)])
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: names[self.index(d)])
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation counts there

    def index(self, device) -> int:
        device = torch.device("cuda", self.current) if device is None else torch.device(device)
        return self.current if device.index is None else device.index

    def set_device(self, device) -> None:
        self.set_device_calls.append(torch.device(device))
        self.current = torch.device(device).index


class FakeOnnxRuntime:
    def __init__(self, providers):
        self.providers = providers

    def get_available_providers(self):
        return list(self.providers)

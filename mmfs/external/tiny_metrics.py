"""Tiny random stand-ins for the metric networks, built offline and used through the real loading code.

`tiny_inception()` is an `InceptionFeatures` whose net keeps the real one's contract (uint8 in, its own
TF1-exact bilinear resize, (x - 128) / 128, pooled features out) at 32 px and 64 features, so sqrtm stays
cheap. `export_tiny_arcface_onnx()` writes an ONNX recognition model (input [N, 3, 112, 112], output
[N, 512]) that `ArcFaceOnnx.from_pretrained` loads through insightface exactly like w600k_r50.onnx.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from mmfs.external.inception import InceptionFeatures
from mmfs.utils.files import atomic_path
from mmfs.utils.seed import cpu_seeded


class TinyInceptionNet(nn.Module):
    """uint8 [B, 3, H, W] -> [B, feature_dim]: resize like the FID Inception, two convs, average pool."""

    def __init__(self, feature_dim: int = 64, size: int = 32) -> None:
        super().__init__()
        self.size = size
        self.convs = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, feature_dim, 3, stride=2, padding=1),
            nn.ReLU(),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        if images.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images, got {images.dtype}")
        x = interpolate_bilinear_2d_like_tensorflow1x(images.float(), size=(self.size, self.size), align_corners=False)
        x = (x - 128) / 128
        return self.convs(x).mean(dim=(2, 3))


def tiny_inception(
    feature_dim: int = 64, *, size: int = 32, seed: int = 0, device: torch.device | str = "cpu"
) -> InceptionFeatures:
    """A seeded tiny FID extractor (~20 k parameters) with its own extractor id."""
    with cpu_seeded(seed):
        net = TinyInceptionNet(feature_dim, size)
    return InceptionFeatures(
        net.to(device), feature_dim=feature_dim, extractor_id=f"tiny-inception-{feature_dim}:seed={seed}"
    )


class TinyArcFaceNet(nn.Module):
    """[N, 3, 112, 112] normalised as insightface does ((x - 127.5) / 127.5, RGB) -> [N, 512]."""

    def __init__(self, embed_dim: int = 512) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 4, stride=4),
            nn.ReLU(),
            nn.Conv2d(8, 16, 4, stride=4),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * 7 * 7, embed_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def tiny_arcface_net(seed: int = 0) -> TinyArcFaceNet:
    """The seeded torch network that `export_tiny_arcface_onnx` writes (same seed, same weights)."""
    with cpu_seeded(seed):
        return TinyArcFaceNet().eval()


def export_tiny_arcface_onnx(path: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """Write a seeded TinyArcFaceNet as an ONNX recognition model with a dynamic batch axis."""
    net = tiny_arcface_net(seed)
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated, not gone
        torch.onnx.export(
            net,
            (torch.zeros(1, 3, 112, 112),),
            str(tmp),
            input_names=["data"],
            output_names=["fc1"],
            dynamic_axes={"data": {0: "batch"}, "fc1": {0: "batch"}},
            opset_version=17,
            dynamo=False,  # the dynamo exporter needs onnxscript, which we do not depend on
        )
    return path

"""Per-image cost of each `mmfs evaluate` metric at the real networks' sizes, with random weights.

    python benchmarks/metric_costs.py [--device cpu|cuda] [--size 512] [--batch 8] [--repeats 3]

FID: torch-fidelity's FID Inception (random weights, the real architecture) on `size` px outputs, plus
the float64 statistics update and the one-off 2048-d Frechet distance. ArcFace: an IResNet-50 (the size
of buffalo_l's w600k_r50, 43.6 M parameters) exported to ONNX and run through insightface, two crops
per pair. LPIPS: AlexNet LPIPS on a random backbone at `size` px, one distance per pair. dlib: the
ResNet descriptor with 5-point alignment, two chips per pair (skipped if the model is not installed).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def timed(fn, repeats: int) -> float:
    """Best wall time of `repeats` runs after one warm-up run, in seconds."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


class IBasicBlock(nn.Module):
    """ArcFace's pre-activation residual block: BN, conv, BN, PReLU, conv (stride), BN."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class IResNet50(nn.Module):
    """The layout of insightface's iresnet50 (blocks 3-4-14-3, 112 px in, 512-d out)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)]
        cin = 64
        for cout, blocks in ((64, 3), (128, 4), (256, 14), (512, 3)):
            for i in range(blocks):
                layers.append(IBasicBlock(cin, cout, 2 if i == 0 else 1))
                cin = cout
        self.body = nn.Sequential(*layers, nn.BatchNorm2d(512))
        self.fc = nn.Linear(512 * 7 * 7, 512)
        self.features = nn.BatchNorm1d(512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.fc(self.body(x).flatten(1)))


def bench_fid(device: torch.device, size: int, batch: int, repeats: int) -> list[tuple[str, str, float, str]]:
    from mmfs.external.inception import build_fid_inception, random_fid_inception_state_dict
    from mmfs.inference.metrics.fid import RunningStats, frechet_distance

    start = time.perf_counter()
    net = build_fid_inception(random_fid_inception_state_dict()).to(device)
    build = time.perf_counter() - start
    from mmfs.external.inception import InceptionFeatures

    extractor = InceptionFeatures(net, feature_dim=2048, extractor_id="random")
    images = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    forward = timed(lambda: extractor(images), repeats) / batch
    stats = RunningStats(2048)
    feats = torch.randn(50, 2048)  # the default reference batch
    update = timed(lambda: stats.update(feats), repeats) / 50
    stats.update(torch.randn(4096, 2048))
    mu, cov = stats.mean, stats.cov
    start = time.perf_counter()
    frechet_distance(mu, cov, mu + 0.1, cov * 1.1)
    frechet = time.perf_counter() - start
    return [
        ("fid", f"Inception-v3 (FID) {size}->299, batch {batch}", forward, f"build {build:.1f} s"),
        ("fid", "RunningStats.update, 2048-d float64, batch 50", update, "memory 32 MiB, any n"),
        ("fid", "frechet_distance 2048-d (sqrtm)", 0.0, f"once per run: {frechet:.1f} s"),
    ]


def bench_arcface(device: torch.device, size: int, batch: int, repeats: int) -> list[tuple[str, str, float, str]]:
    from mmfs.external.arcface import ArcFaceOnnx
    from mmfs.inference.metrics.identity import IdentityMetric

    net = IResNet50().eval()
    params = sum(p.numel() for p in net.parameters()) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "iresnet50.onnx"
        start = time.perf_counter()
        torch.onnx.export(
            net,
            (torch.zeros(1, 3, 112, 112),),
            str(path),
            input_names=["data"],
            output_names=["fc1"],
            dynamic_axes={"data": {0: "batch"}, "fc1": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        export = time.perf_counter() - start
        metric = IdentityMetric(ArcFaceOnnx.from_pretrained(path, device=device))
        photos = torch.rand(batch, 3, size, size) * 2 - 1
        per_pair = timed(lambda: metric.update(photos, photos), repeats) / batch
    return [
        (
            "arcface",
            f"IResNet-50 ONNX ({params:.1f} M), 2 crops/pair, batch {batch}",
            per_pair,
            f"export {export:.0f} s",
        )
    ]


def bench_lpips(device: torch.device, size: int, batch: int, repeats: int) -> list[tuple[str, str, float, str]]:
    from mmfs.external.tiny import tiny_lpips
    from mmfs.inference.metrics.diversity import DiversityMetric

    metric = DiversityMetric(tiny_lpips().to(device))
    a = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    b = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    per_pair = timed(lambda: metric.update(a, b), repeats) / batch
    return [("lpips", f"LPIPS-alex {size} px, random backbone, batch {batch}", per_pair, "")]


def bench_dlib(size: int, batch: int, repeats: int) -> list[tuple[str, str, float, str]]:
    from mmfs.errors import MMFSError
    from mmfs.external.dlib_identity import DlibIdentity
    from mmfs.inference.metrics.identity import IdentityMetric, canonical_landmarks

    try:
        metric = IdentityMetric(DlibIdentity.from_pretrained())
    except MMFSError as exc:
        return [("dlib_id", f"skipped: {exc}", float("nan"), "")]
    rng = np.random.default_rng(0)
    photos = rng.integers(0, 256, size=(batch, size, size, 3), dtype=np.uint8)
    landmarks = np.stack([canonical_landmarks(size)] * batch)
    per_pair = timed(lambda: metric.update(photos, photos, landmarks), repeats) / batch
    return [("dlib_id", f"dlib ResNet descriptor, 150 px chips, 2/pair, batch {batch}", per_pair, "")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    rows += bench_fid(device, args.size, args.batch, args.repeats)
    rows += bench_arcface(device, args.size, args.batch, args.repeats)
    rows += bench_lpips(device, args.size, args.batch, args.repeats)
    rows += bench_dlib(args.size, args.batch, args.repeats)
    print(f"device {device}, torch threads {torch.get_num_threads()}, outputs {args.size} px")
    print("| metric | what | per image (pair) | note |\n|---|---|---|---|")
    for metric, what, seconds, note in rows:
        cost = "-" if seconds == 0.0 else f"{seconds * 1000:.1f} ms"
        print(f"| {metric} | {what} | {cost} | {note} |")


if __name__ == "__main__":
    main()

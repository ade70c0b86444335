"""The metric networks of `mmfs evaluate`, loaded by the names a user types after --metrics.

Each network comes through its real loader (`from_pretrained`) from a local file; `tiny=True` swaps in
the random tiny stand-ins of `mmfs.external.tiny` / `tiny_metrics` for every selected metric whose
weights were not given (tests and smoke runs: their numbers mean nothing). Every missing file is named
in one MissingWeightsError, before any image is processed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmfs.inference.metrics.identity import IdentityDistance
from mmfs.utils.files import file_sha256


@dataclass
class MetricNets:
    """The networks of the selected metrics (None when not selected) and a JSON description of each."""

    inception: Any = None  # InceptionFeatures
    identity: IdentityDistance | None = None  # ArcFaceOnnx or DlibIdentity
    lpips: Any = None  # PerceptualDistance (Lpips)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)  # keyed by the reported metric name

    @property
    def tiny(self) -> bool:
        return any(entry.get("tiny") for entry in self.info.values())

    @property
    def comparable(self) -> bool:
        """No tiny stand-in and no network known to carry non-standard weights."""
        return not self.tiny and all(entry.get("standard") is not False for entry in self.info.values())


def load_metric_nets(
    metrics: Sequence[str],
    *,
    inception_weights: str | os.PathLike[str] | None = None,
    arcface_weights: str | os.PathLike[str] | None = None,
    lpips_weights: str | os.PathLike[str] | None = None,
    device: torch.device | str = "cpu",
    tiny: bool = False,  # random tiny stand-ins for every selected metric whose weights are not given
) -> MetricNets:
    """Load the selected metric networks through their real loaders.

    Every missing weights file is named in one MissingWeightsError (one line), so a user fixes them all at once.
    """
    from mmfs.errors import MissingWeightsError

    nets, missing = MetricNets(), []
    loaders = {
        "lpips": lambda: _lpips_net(lpips_weights, device, tiny),
        "arcface": lambda: _identity_net(arcface_weights, device, tiny),
        "fid": lambda: _inception_net(inception_weights, device, tiny),
    }
    for metric, loader in loaders.items():  # cheapest first
        if metric not in metrics:
            continue
        try:
            net, info = loader()
        except MissingWeightsError as exc:
            missing.append(str(exc))
            continue
        setattr(nets, {"lpips": "lpips", "arcface": "identity", "fid": "inception"}[metric], net)
        # Keyed by the reported name; the identity one is arcface_dist, or dlib_id_dist without an ArcFace model.
        nets.info[{"lpips": "lpips_diversity", "fid": "fid"}.get(metric) or net.name] = info
    if missing:
        raise MissingWeightsError("; ".join(missing))
    return nets


def _lpips_net(weights: str | os.PathLike[str] | None, device: torch.device | str, tiny: bool) -> tuple:
    """LPIPS-alex with the AlexNet backbone from `weights` (or the torch hub cache), or the tiny stand-in."""
    if weights is None and tiny:
        from mmfs.external.tiny import tiny_lpips

        return tiny_lpips().to(device), {
            "network": "LPIPS-alex v0.1 on a random backbone (tiny run)",
            "tiny": True,
            "standard": False,
        }
    from mmfs.external.lpips import ALEXNET_FILE, Lpips

    net = Lpips.from_pretrained(weights, device=device)
    path = Path(weights) if weights is not None else Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
    digest = file_sha256(path)
    # torch hub names files <stem>-<first 8 hex digits of their sha256>: 7be5be79 is the published AlexNet.
    return net, {
        "network": "LPIPS-alex v0.1 (the lpips package's linear heads)",
        "weights": str(path),
        "sha256": digest,
        "standard": digest.startswith("7be5be79"),
        "tiny": False,
    }


def _inception_net(weights: str | os.PathLike[str] | None, device: torch.device | str, tiny: bool) -> tuple:
    """torch-fidelity's FID Inception from `weights`, or the tiny stand-in."""
    if weights is None and tiny:
        from mmfs.external.tiny_metrics import tiny_inception

        net = tiny_inception(device=device)
        return net, {
            "network": "tiny random Inception stand-in (32 px, 64-d)",
            "extractor_id": net.extractor_id,
            "tiny": True,
            "standard": False,
        }
    from mmfs.external.inception import InceptionFeatures

    net = InceptionFeatures.from_pretrained(weights, device=device)
    return net, {
        "network": "torch-fidelity FeatureExtractorInceptionV3 (FID Inception-v3, 2048-d)",
        "weights": str(weights),
        "extractor_id": net.extractor_id,
        "standard": net.is_standard,
        "tiny": False,
    }


def _identity_net(weights: str | os.PathLike[str] | None, device: torch.device | str, tiny: bool) -> tuple:
    """ArcFace (a given ONNX file, or the exported tiny stand-in) or dlib's offline descriptor."""
    from mmfs.external.arcface import ArcFaceOnnx

    if weights is None and tiny:
        from mmfs.external.tiny_metrics import export_tiny_arcface_onnx

        # Exported to ONNX and loaded through insightface exactly like w600k_r50.onnx; the session keeps the graph.
        with tempfile.TemporaryDirectory(prefix="mmfs-tiny-arcface-") as folder:
            net = ArcFaceOnnx.from_pretrained(export_tiny_arcface_onnx(Path(folder) / "tiny.onnx"), device=device)
        return net, {"network": "tiny random ArcFace stand-in (ONNX)", "tiny": True, "standard": False}
    if weights is not None:
        net = ArcFaceOnnx.from_pretrained(weights, device=device)
        # Which ArcFace model is "standard" differs between papers: the file and its hash say which one it was.
        return net, {
            "network": "insightface ArcFaceONNX",
            "weights": str(weights),
            "sha256": file_sha256(Path(weights)),
            "standard": None,
            "tiny": False,
        }
    from mmfs.external.dlib_identity import DLIB_ID_FILE, DlibIdentity, default_dlib_models_dir

    net = DlibIdentity.from_pretrained()
    return net, {
        "network": "dlib ResNet face descriptor (offline fallback, not ArcFace)",
        "weights": str(default_dlib_models_dir() / DLIB_ID_FILE),
        "standard": False,  # another network and scale than any paper's ArcFace-Dist: never comparable
        "tiny": False,
    }

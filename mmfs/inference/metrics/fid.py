"""FID with streaming statistics: features are folded into running sums, never kept.

`RunningStats` holds a count, the feature sum and the sum of outer products (float64), so memory is
O(D^2) whatever the number of images. `frechet_distance` is pytorch-fid's formula (scipy sqrtm, an eps
offset when the product is singular, imaginary residue dropped). Reference (art set) statistics are
cached in safetensors files keyed by the folder's contents and the extractor.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mmfs.data.images import expand_inputs, load_image
from mmfs.errors import InputError, MMFSError
from mmfs.external.inception import InceptionFeatures
from mmfs.utils.device import numerics_description
from mmfs.utils.files import atomic_path, file_sha256

STATS_FORMAT = "mmfs-fid-stats"
STATS_FORMAT_VERSION = "1"
CACHE_KEY_VERSION = "3"  # 1: paths, sizes and mtimes; 2: paths and file contents; 3: + device and TF32
# How an art image becomes the extractor's input (`load_square`); part of the cache key.
PREPROCESS_ID = "load_image(exif-upright rgb) > centre-crop square > PIL lanczos to image_size > uint8"
HASH_CHUNK = 1 << 20  # bytes read at a time when hashing an image file


class RunningStats:
    """Count, sum and sum of outer products of D-dim features, accumulated in float64 chunks."""

    def __init__(self, dim: int, *, extractor_id: str = "", chunk_size: int = 1024) -> None:
        self.dim = dim
        self.extractor_id = extractor_id
        self.chunk_size = chunk_size  # bounds the float64 copy made of one update's features
        self.count = 0
        self.sum = torch.zeros(dim, dtype=torch.float64)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64)
        self.metadata: dict[str, str] = {}  # the file header after `load`

    def update(self, features: torch.Tensor | np.ndarray) -> None:
        """Fold in a batch of features [N, D]."""
        features = torch.as_tensor(features)
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(f"expected features [N, {self.dim}], got {tuple(features.shape)}")
        for start in range(0, features.shape[0], self.chunk_size):
            chunk = features[start : start + self.chunk_size].detach().to("cpu", torch.float64)
            self.count += chunk.shape[0]
            self.sum.add_(chunk.sum(0))
            self.outer.addmm_(chunk.T, chunk)  # in place: no D x D temporary per update

    def merge(self, other: RunningStats) -> None:
        """Add another accumulator's sums (e.g. from another worker) into this one."""
        if other.dim != self.dim or other.extractor_id != self.extractor_id:
            raise ValueError("cannot merge statistics of different extractors or sizes")
        self.count += other.count
        self.sum += other.sum
        self.outer += other.outer

    @property
    def mean(self) -> np.ndarray:
        if self.count < 1:
            raise MMFSError("FID statistics are empty: no images were seen")
        return (self.sum / self.count).numpy()

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance (divides by n - 1), as numpy.cov(rowvar=False)."""
        if self.count < 2:
            raise MMFSError(f"FID needs at least 2 images per set, got {self.count}")
        mean = self.sum / self.count
        cov = (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)
        return ((cov + cov.T) / 2).numpy()

    def save(self, path: str | os.PathLike[str], *, metadata: dict[str, str] | None = None) -> Path:
        """Write the sums as safetensors (atomically); the extractor id and any metadata go in the header."""
        tensors = {"count": torch.tensor([self.count], dtype=torch.int64), "sum": self.sum, "outer": self.outer}
        header = {
            **(metadata or {}),
            "format": STATS_FORMAT,
            "format_version": STATS_FORMAT_VERSION,
            "extractor_id": self.extractor_id,
        }
        path = Path(path)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=header)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RunningStats:
        """Read statistics written by `save`; anything else is an InputError."""
        path = Path(path)
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                header = fh.metadata() or {}
            tensors = load_file(str(path))
        except Exception as exc:  # OSError, or safetensors' own error type for a damaged file
            raise InputError(f"{path}: cannot read FID statistics ({type(exc).__name__})") from None
        if header.get("format") != STATS_FORMAT or set(tensors) != {"count", "sum", "outer"}:
            raise InputError(f"{path}: not an mmfs FID statistics file")
        stats = cls(tensors["sum"].shape[0], extractor_id=header.get("extractor_id", ""))
        stats.count = int(tensors["count"][0])
        stats.sum = tensors["sum"]
        stats.outer = tensors["outer"]
        stats.metadata = header
        return stats


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), computed as pytorch-fid does."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("the two sets of statistics have different dimensions")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # A singular product: nudge both covariances off the singularity before taking the root.
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        worst = np.max(np.abs(np.diagonal(covmean).imag))
        if worst > 1e-3:
            raise MMFSError(f"FID: sqrtm has an imaginary component of {worst:.3g}; use more images per set")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_stats(real: RunningStats, fake: RunningStats) -> float:
    """FID between two accumulators of the same extractor."""
    if real.extractor_id != fake.extractor_id:
        raise MMFSError(
            f"FID statistics come from different feature extractors ({real.extractor_id!r} vs {fake.extractor_id!r})"
        )
    if min(real.count, fake.count) < real.dim:
        warnings.warn(
            f"FID with fewer images ({min(real.count, fake.count)}) than feature dimensions ({real.dim}) is strongly biased",
            stacklevel=2,
        )
    return frechet_distance(real.mean, real.cov, fake.mean, fake.cov)


class FidMetric:
    """Streams generated images into fake statistics; `compute` compares them with reference ones."""

    name = "fid"

    def __init__(self, extractor: InceptionFeatures) -> None:
        self.extractor = extractor
        self.stats = RunningStats(extractor.feature_dim, extractor_id=extractor.extractor_id)

    def update_fake(self, images: torch.Tensor) -> None:
        """Add stylized images: [B, 3, H, W] in [-1, 1] (or uint8)."""
        self.stats.update(self.extractor(images))

    def compute(self, real_stats: RunningStats) -> float:
        return fid_from_stats(real_stats, self.stats)


def default_cache_dir() -> Path:
    """$MMFS_CACHE/fid when set, else $XDG_CACHE_HOME/mmfs/fid, i.e. ~/.cache/mmfs/fid."""
    if os.environ.get("MMFS_CACHE"):
        return Path(os.environ["MMFS_CACHE"]) / "fid"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mmfs" / "fid"


def list_images(folder: str | os.PathLike[str], max_images: int | None = None) -> list[Path]:
    """Image files under `folder` (recursive, sorted); the first `max_images` of them when given."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    files = list(expand_inputs([str(folder)]))
    if not files:
        raise InputError(f"{folder}: no images found")
    return files[:max_images] if max_images else files


def reference_cache_key(
    folder: str | os.PathLike[str], files: list[Path], extractor_id: str, image_size: int, numerics: str
) -> str:
    """sha256 over what the statistics depend on: the images' bytes, and how they become features.

    Hashed: the key version, the pre-processing (`PREPROCESS_ID`), `image_size`, the extractor id
    (network + weights hash), where it ran (`numerics`: `mmfs.utils.device.numerics_description`, the
    device and, on a GPU, its TF32 settings), then, in sorted order of relative path, each file's relative path and
    the sha256 of its bytes. Sizes and modification times are not used: a copy of the folder elsewhere
    gets the same key, a file replaced by other bytes a new one whatever its mtime.
    """
    folder = Path(folder)
    digest = hashlib.sha256()
    digest.update(json.dumps([CACHE_KEY_VERSION, PREPROCESS_ID, extractor_id, image_size, numerics]).encode())
    for path in sorted(files, key=lambda p: p.relative_to(folder).as_posix()):
        digest.update(f"\n{path.relative_to(folder).as_posix()}\0".encode())
        digest.update(bytes.fromhex(file_sha256(path, HASH_CHUNK)))
    return digest.hexdigest()


def load_square(path: Path, size: int) -> np.ndarray:
    """An image as uint8 [size, size, 3]: centre-cropped to a square, then Lanczos-resized if needed."""
    from PIL import Image

    array = load_image(path)
    h, w = array.shape[:2]
    if h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        array = array[top : top + side, left : left + side]
    if array.shape[0] != size:
        array = np.asarray(Image.fromarray(array).resize((size, size), Image.LANCZOS))
    return np.ascontiguousarray(array)


class _SquareImages(torch.utils.data.Dataset):
    """Image files as uint8 tensors [3, size, size], the layout the FID extractor takes."""

    def __init__(self, files: list[Path], size: int) -> None:
        self.files, self.size = files, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(load_square(self.files[index], self.size)).permute(2, 0, 1)


def reference_stats(
    folder: str | os.PathLike[str],
    extractor: InceptionFeatures,
    *,
    image_size: int,
    cache_dir: str | os.PathLike[str] | None,
    batch_size: int = 50,
    num_workers: int = 0,
    max_images: int | None = None,
    progress: bool = True,
) -> RunningStats:
    """Statistics of the images in `folder` (resized to `image_size`), cached in `cache_dir` (None: no cache)."""
    folder = Path(folder)
    files = list_images(folder, max_images)
    numerics = numerics_description(extractor.device)
    key = reference_cache_key(folder, files, extractor.extractor_id, image_size, numerics)
    cache_file = Path(cache_dir) / f"{folder.resolve().name}-{key[:24]}.safetensors" if cache_dir is not None else None
    if cache_file is not None:
        # The key alone finds an entry: a copy of the folder under another name reuses it too.
        others = sorted(set(cache_file.parent.glob(f"*-{key[:24]}.safetensors")) - {cache_file})
        for candidate in [cache_file, *others]:
            if not candidate.is_file():
                continue
            try:
                cached = RunningStats.load(candidate)
            except InputError:
                continue  # a damaged cache entry is recomputed and overwritten
            if cached.metadata.get("cache_key") == key and cached.count == len(files):
                return cached
    stats = RunningStats(extractor.feature_dim, extractor_id=extractor.extractor_id)
    loader = torch.utils.data.DataLoader(
        _SquareImages(files, image_size), batch_size=batch_size, num_workers=num_workers, shuffle=False
    )
    batches = loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(loader, desc=f"FID statistics of {folder.name}", unit="batch", leave=False)
    for images in batches:
        stats.update(extractor(images))
    if cache_file is not None:
        try:
            stats.save(
                cache_file, metadata={"cache_key": key, "folder": str(folder.resolve()), "image_size": str(image_size)}
            )
        except OSError as exc:  # an unwritable cache must not throw away statistics already computed
            warnings.warn(f"could not cache FID statistics in {cache_file.parent}: {exc.strerror or exc}", stacklevel=2)
    return stats

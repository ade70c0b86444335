"""`mmfs evaluate`'s options, declared once: what is measured, on what, and with which metric weights.

Torch-free: the CLI reads these declarations for --help; `mmfs.inference.evaluate.evaluate_request` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mmfs.config.options import Options, Rule, missing_required, option, required
from mmfs.config.seeds import check_seed
from mmfs.errors import OptionError

# The names a user types after --metrics; "arcface" falls back to dlib_id_dist without an ArcFace model.
METRIC_NAMES = ("fid", "arcface", "lpips")


def parse_metric_names(text: str) -> tuple[str, ...]:
    """'fid,arcface' -> ('fid', 'arcface'); unknown or empty names are a one-line OptionError on --metrics."""
    names = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in METRIC_NAMES]
    if unknown or not names:
        message = f"unknown metric {', '.join(unknown) or repr(text)}; choose from {', '.join(METRIC_NAMES)}"
        raise OptionError("metrics", message)
    return names


@dataclass(frozen=True)
class EvaluateRequest(Options):
    """One evaluation: n stylized photos (each under its own random style) measured against the art set."""

    rules: ClassVar[tuple[Rule, ...]] = (required("photos"),)  # --art too, for fid (checked below)

    checkpoint: Path = option(
        Path("mmfs"),
        "Stylizer to evaluate: a model name (`mmfs models list`) or a file.",
        flags=("--checkpoint", "-c"),
        path=True,
    )
    photos: Path | None = option(
        None,
        "Folder of FFHQ-aligned square photos (recursive; output i uses photo i mod count).",
        path=True,
        show_default=False,
    )
    art: Path | None = option(
        None, "Folder of artworks, the FID reference set (needed for fid).", path=True, show_default=False
    )
    n: int = option(
        10_000,
        "Number of stylized outputs: n photos drawn at random, each under its own random style.",
        flags="--n",
        min=1,
    )
    metrics: str = option(",".join(METRIC_NAMES), f"Comma-separated subset of: {', '.join(METRIC_NAMES)}.")
    seed: int = option(0, "Seed of the random photo sample and styles (0 to 2**63 - 1); recorded in the report.")
    batch_size: int = option(8, "Faces per generator and metric call.", min=1, max=1024)
    inception_weights: Path | None = option(
        None, "FID Inception weights pt_inception-2015-12-05-6726825d.pth.", path=True, show_default=False
    )
    arcface_weights: Path | None = option(
        None,
        "insightface recognition ONNX (e.g. w600k_r50.onnx); without it: dlib_id_dist.",
        path=True,
        show_default=False,
    )
    lpips_weights: Path | None = option(
        None, "torchvision AlexNet alexnet-owt-7be5be79.pth (default: torch hub cache).", path=True, show_default=False
    )
    fid_cache: Path | None = option(
        None, "Folder caching the art set's FID statistics (default: ~/.cache/mmfs/fid).", path=True, show_default=False
    )
    no_fid_cache: bool = option(False, "Neither read nor write cached statistics.", flags="--no-fid-cache")
    report: Path = option(Path("evaluation.json"), "Where the JSON report is written (it is also printed).", path=True)
    tiny_metrics: bool = option(
        False,
        "Testing only: tiny random stand-ins for every metric whose weights are not given. "
        "The numbers mean nothing and are not comparable with anything.",
        flags="--tiny-metrics",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if missing_required(self):  # `rules`: --photos; the line also says what fid needs
            need = " and --art DIR (the art set, for fid)" if self.art is None and "fid" in self.metric_names else ""
            raise OptionError("photos", f"`mmfs evaluate` needs --photos DIR (FFHQ-aligned face photos){need}")
        names = self.metric_names
        if "fid" in names and self.art is None:
            raise OptionError("art", "fid needs the art set: give --art DIR, or leave fid out of --metrics")
        if "fid" in names and self.n < 2:
            raise OptionError("n", "fid needs at least 2 outputs")
        check_seed(self.seed)
        if self.no_fid_cache and self.fid_cache is not None:
            raise OptionError("fid_cache", "--fid-cache and --no-fid-cache exclude each other")

    @property
    def metric_names(self) -> tuple[str, ...]:
        """--metrics as a tuple of known names, in the order given."""
        return parse_metric_names(self.metrics)

"""Evaluation metrics of `mmfs evaluate`: FID against the art set, identity distance, LPIPS diversity.

Every metric streams over batches with memory bounded independently of the number of images:
`FidMetric.update_fake` + `reference_stats` + `FidMetric.compute`; `IdentityMetric.update(photos,
stylized, landmarks)`; `DiversityMetric.update(stylized_a, stylized_b)`. See docs/evaluate.md.
"""

from __future__ import annotations

from mmfs.config.evaluate import METRIC_NAMES, parse_metric_names
from mmfs.inference.metrics.diversity import DiversityMetric
from mmfs.inference.metrics.fid import (
    FidMetric,
    RunningStats,
    default_cache_dir,
    fid_from_stats,
    frechet_distance,
    reference_cache_key,
    reference_stats,
)
from mmfs.inference.metrics.identity import IdentityMetric, RunningMean, build_identity_encoder, canonical_landmarks
from mmfs.inference.metrics.networks import MetricNets, load_metric_nets

__all__ = [
    "METRIC_NAMES",
    "DiversityMetric",
    "FidMetric",
    "IdentityMetric",
    "MetricNets",
    "RunningMean",
    "RunningStats",
    "build_identity_encoder",
    "canonical_landmarks",
    "default_cache_dir",
    "fid_from_stats",
    "frechet_distance",
    "load_metric_nets",
    "parse_metric_names",
    "reference_cache_key",
    "reference_stats",
]

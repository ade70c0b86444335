"""Video stylization: PyAV decode/encode with audio kept, landmark smoothing, the streaming pipeline.

    from mmfs.inference.video import stylize_video
    summary = stylize_video("clip.mp4", "out.mp4", model=model, ws=ws, detector=detector)

Names are imported lazily so that `is_video_path` stays cheap for the CLI (no torch, no PyAV).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "VIDEO_EXTENSIONS": "formats",
    "OUTPUT_FORMATS": "formats",
    "FrameClock": "formats",
    "DecodedFrame": "io",
    "VideoInfo": "io",
    "VideoReader": "io",
    "VideoWriter": "io",
    "is_video_path": "formats",
    "FaceTracker": "smoothing",
    "OneEuroFilter": "smoothing",
    "ExponentialFilter": "smoothing",
    "SmoothingConfig": "smoothing",
    "FrameStylizer": "stylize",
    "StyledFrame": "stylize",
    "VideoSummary": "stylize",
    "stylize_video": "stylize",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mmfs.inference.video' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

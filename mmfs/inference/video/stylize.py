"""Stylize every face of a video: decode -> detect -> smooth -> align -> stylize (batched) -> paste -> encode.

Frames stream through: at most `batch_size` frames wait for the network at any time, so memory does
not grow with the video's length. Two things keep the result steady over time: the landmarks are
smoothed per face track (`smoothing.FaceTracker`), and every frame uses the same style code and the
same noise maps (drawn once from a seeded generator). A face the detector misses for a few frames
between two detections is filled in from them (`gaps.GapFiller`); frames without a face are passed on
untouched.

    summary = stylize_video("clip.mp4", "out.mp4", model=model, ws=ws, detector=build_detector("dlib"))

`FrameStylizer.run` is the frame-level API (arrays in, arrays out) that `stylize_video` wraps.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mmfs.data.images import to_tensor, to_uint8
from mmfs.errors import InputError
from mmfs.faces import AlignedFace, Face, FaceDetector, align_face, paste_back
from mmfs.inference.pipeline import seed_noise
from mmfs.utils.device import autocast, parse_dtype
from mmfs.utils.files import atomic_path

from .formats import OUTPUT_FORMATS
from .gaps import GapFiller
from .io import DecodedFrame, VideoReader, VideoWriter
from .smoothing import FaceTracker, SmoothingConfig, crop_side

NOISE_MODES = ("seeded", "zero", "random")  # "random": fresh maps per batch (flickers; for comparison only)
MIN_CROP_SIDE = 8.0  # px: smaller "faces" are detector noise and make singular alignment matrices


@dataclass
class StyledFrame:
    """One output frame: the RGB uint8 image [H, W, 3] plus where it came from and what was done to it."""

    index: int
    image: np.ndarray
    pts: int
    time: float
    faces: int  # faces stylized in this frame (0: the input image is passed on as is)
    held: int  # of those, faces the detector missed in this frame, filled in from the frames around it


@dataclass
class VideoSummary:
    """What `stylize_video` did: counts, rates, audio handling, and seconds spent per stage."""

    input: Path
    output: Path
    frames: int
    frames_with_faces: int
    frames_without_face: int
    faces: int
    held_faces: int
    width: int
    height: int
    frame_rate: Fraction
    duration: float
    video_codec: str
    audio: str
    decode_errors: int
    rotation: int = 0  # the display rotation tag written (the source's, degrees counter-clockwise)
    seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0

    @property
    def fps(self) -> float:
        """Frames processed per wall-clock second."""
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_dict(self) -> dict:
        """JSON-ready form (for `--json` summaries)."""
        return {
            "input": str(self.input), "output": str(self.output), "frames": self.frames,
            "frames_with_faces": self.frames_with_faces, "frames_without_face": self.frames_without_face,
            "faces": self.faces, "held_faces": self.held_faces, "width": self.width, "height": self.height,
            "frame_rate": str(self.frame_rate), "duration": round(self.duration, 3), "video_codec": self.video_codec,
            "audio": self.audio, "decode_errors": self.decode_errors, "rotation": self.rotation, "fps": round(self.fps, 3),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()}, "wall_seconds": round(self.wall_seconds, 3),
        }  # fmt: skip

    def describe(self) -> str:
        """One line for the terminal."""
        rate = f"{float(self.frame_rate):.3g} fps"
        text = (
            f"{self.input.name} -> {self.output}: {self.frames} frames ({self.width}x{self.height}, {rate}, "
            f"{self.duration:.1f} s), {self.frames_with_faces} with faces ({self.faces} stylized"
            f"{f', {self.held_faces} filled in' if self.held_faces else ''}), {self.frames_without_face} without a face "
            f"passed through; video {self.video_codec}, audio {self.audio}; {self.fps:.2f} frames/s"
        )
        if self.rotation:
            text += f"; stored turned, tagged to display rotated {self.rotation} degrees as the source"
        if self.decode_errors:
            text += f"; {self.decode_errors} damaged packets skipped"
        return text


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class FrameStylizer:
    """Stateful per-video engine: feed frames in order to `run`, get stylized frames out in the same order."""

    def __init__(
        self,
        model: torch.nn.Module,
        ws: torch.Tensor,
        detector: FaceDetector,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str = torch.float32,
        batch_size: int = 8,
        feather: float = 0.1,
        smoothing: SmoothingConfig | None = None,
        noise: str | Sequence[torch.Tensor] = "seeded",
        noise_seed: int = 0,
        detect_max_side: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(noise, str) and noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {', '.join(NOISE_MODES)}, got {noise!r}")
        num_ws = model.cfg.num_ws
        if ws.ndim != 3 or ws.shape[0] != 1 or ws.shape[1] != num_ws or ws.shape[2] != model.cfg.w_dim:
            raise ValueError(f"ws must be [1, {num_ws}, {model.cfg.w_dim}], got {tuple(ws.shape)}")
        self.device = torch.device(device) if device is not None else _model_device(model)
        self.model = model.to(self.device) if _model_device(model) != self.device else model
        self.dtype = parse_dtype(dtype) if isinstance(dtype, str) else dtype
        self.ws = ws.to(self.device, torch.float32)
        self.detector = detector
        self.size = model.cfg.resolution
        self.batch_size = batch_size
        self.feather = feather
        self.detect_max_side = detect_max_side
        smoothing = smoothing or SmoothingConfig()
        self.gaps: GapFiller[DecodedFrame] = GapFiller(smoothing.hold_frames, smoothing.match_distance)
        self.tracker = FaceTracker(smoothing)
        # One set of noise maps for the whole video: fresh noise per frame would make textures boil.
        # "seeded" draws the very maps `mmfs stylize` uses on photos for this seed (mmfs.inference.pipeline.seed_noise).
        self.noise: list[torch.Tensor] | str | None
        if not isinstance(noise, str):
            self.noise = [n.to(self.device, torch.float32) for n in noise]
        elif noise == "seeded":
            self.noise = [n.to(self.device) for n in seed_noise(model, noise_seed)]
        else:
            self.noise = "zero" if noise == "zero" else None
        self.seconds = {"detect": 0.0, "align": 0.0, "stylize": 0.0, "paste": 0.0}

    def detect(self, image: np.ndarray) -> list[Face]:
        """Detections on the frame, optionally found on a downscaled copy (landmarks mapped back)."""
        h, w = image.shape[:2]
        scale = 1.0
        if self.detect_max_side and max(h, w) > self.detect_max_side:
            scale = self.detect_max_side / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR, reducing_gap=2.0))
            faces = self.detector.detect(small)
            # Pixel centres: x_full = (x_small + 0.5) / scale - 0.5.
            faces = [
                Face(box=(f.box + 0.5) / scale - 0.5, landmarks=(f.landmarks + 0.5) / scale - 0.5, score=f.score)
                for f in faces
            ]
        else:
            faces = self.detector.detect(image)
        return [f for f in faces if crop_side(f.landmarks) >= MIN_CROP_SIDE]

    def stylize_crops(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """Aligned RGB uint8 crops -> stylized RGB uint8 crops, in chunks of `batch_size`."""
        out: list[np.ndarray] = []
        for i in range(0, len(crops), self.batch_size):
            chunk = crops[i : i + self.batch_size]
            x = torch.stack([to_tensor(c) for c in chunk]).to(self.device)
            with torch.inference_mode(), autocast(self.device, self.dtype):
                y = self.model(x, self.ws.expand(len(chunk), -1, -1), noise=self.noise)
            out.extend(to_uint8(y))
        return out

    def run(self, frames: Iterable[DecodedFrame]) -> Iterator[StyledFrame]:
        """Stylized frames in input order; at most `batch_size` frames wait for the network, and up to
        `hold_frames` more for a missed face to be found again."""
        pending: list[tuple[DecodedFrame, list[AlignedFace], int]] = []
        crops = 0
        for ready in self._detected(frames):
            for frame, faces, held in ready:
                start = time.perf_counter()
                aligned = [align_face(frame.image, face, self.size) for face in self.tracker.update(faces, frame.time)]
                self.seconds["align"] += time.perf_counter() - start
                pending.append((frame, aligned, held))
                crops += len(aligned)
                if crops >= self.batch_size or len(pending) >= self.batch_size:
                    yield from self._flush(pending)
                    pending, crops = [], 0
        yield from self._flush(pending)

    def _detected(self, frames: Iterable[DecodedFrame]) -> Iterator[list[tuple[DecodedFrame, list[Face], int]]]:
        """Frames with their faces, gaps filled, as they become complete (the last ones when the input ends)."""
        for frame in frames:
            start = time.perf_counter()
            faces = self.detect(frame.image)
            self.seconds["detect"] += time.perf_counter() - start
            yield self.gaps.push(frame, faces)
        yield self.gaps.flush()

    def _flush(self, pending: list[tuple[DecodedFrame, list[AlignedFace], int]]) -> Iterator[StyledFrame]:
        start = time.perf_counter()
        crops = [a.image for _, aligned, _ in pending for a in aligned]
        styled = iter(self.stylize_crops(crops)) if crops else iter(())
        self.seconds["stylize"] += time.perf_counter() - start
        for frame, aligned, held in pending:
            image = frame.image
            if aligned:
                start = time.perf_counter()
                for face in aligned:
                    image = paste_back(image, next(styled), face, feather=self.feather)
                self.seconds["paste"] += time.perf_counter() - start
            yield StyledFrame(
                frame.index, image, frame.pts, frame.time, faces=len(aligned), held=held if aligned else 0
            )


def stylize_video(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    model: torch.nn.Module,
    ws: torch.Tensor,
    detector: FaceDetector,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = torch.float32,
    feather: float = 0.1,
    progress: bool = True,
    smoothing: SmoothingConfig | None = None,
    noise: str | Sequence[torch.Tensor] = "seeded",
    noise_seed: int = 0,
    detect_max_side: int | None = None,
    keep_audio: bool = True,
    codec: str | None = None,
    crf: int = 18,
    preset: str = "medium",
    max_frames: int | None = None,
) -> VideoSummary:
    """Stylize every face of `input_path` into `output_path` (written atomically), keeping rate and audio."""
    input_path, output_path = Path(input_path), Path(output_path)
    suffix = output_path.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise InputError(f"{output_path}: unsupported video output extension; use one of {', '.join(OUTPUT_FORMATS)}")
    if output_path.exists() and input_path.exists() and output_path.resolve() == input_path.resolve():
        raise InputError(f"{output_path}: the output would overwrite the input video; choose another --out")
    wall = time.perf_counter()
    engine = FrameStylizer(
        model, ws, detector, device=device, dtype=dtype, batch_size=batch_size, feather=feather,
        smoothing=smoothing, noise=noise, noise_seed=noise_seed, detect_max_side=detect_max_side,
    )  # fmt: skip
    counts = {"frames": 0, "with": 0, "faces": 0, "held": 0}
    with VideoReader(input_path) as reader, atomic_path(output_path) as tmp:
        info = reader.info
        writer = VideoWriter(
            tmp, suffix=suffix, width=info.width, height=info.height, frame_rate=info.frame_rate,
            time_base=info.time_base, audio_stream=reader.audio_stream if keep_audio else None,
            codec=codec, crf=crf, preset=preset, color=reader.color, rotation=info.rotation,
        )  # fmt: skip
        total = info.num_frames if max_frames is None else min(info.num_frames or max_frames, max_frames)
        bar = _progress_bar(total, input_path.name, progress)
        try:
            frames = reader.frames(on_audio=writer.write_audio if writer.audio != "none" else None)
            for out in engine.run(_limit(frames, max_frames)):
                writer.write(out.image, out.pts)
                counts["frames"] += 1
                counts["with"] += out.faces > 0
                counts["faces"] += out.faces
                counts["held"] += out.held
                bar.update(1)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        finally:
            bar.close()
    seconds = {"decode": reader.seconds, **engine.seconds, "encode": writer.seconds}
    duration = counts["frames"] / float(info.frame_rate)
    return VideoSummary(
        input=input_path,
        output=output_path,
        frames=counts["frames"],
        frames_with_faces=counts["with"],
        frames_without_face=counts["frames"] - counts["with"],
        faces=counts["faces"],
        held_faces=counts["held"],
        width=info.width,
        height=info.height,
        frame_rate=info.frame_rate,
        duration=duration,
        video_codec=writer.codec,
        audio=writer.audio,
        decode_errors=reader.decode_errors,
        rotation=writer.rotation,
        seconds=seconds,
        wall_seconds=time.perf_counter() - wall,
    )


def _limit(frames: Iterator[DecodedFrame], max_frames: int | None) -> Iterator[DecodedFrame]:
    for frame in frames:
        if max_frames is not None and frame.index >= max_frames:
            return
        yield frame


def _progress_bar(total: int, name: str, enabled: bool):
    """tqdm on stderr with frames/s and ETA (ETA only when the frame count is known)."""
    from tqdm import tqdm

    return tqdm(total=total or None, desc=name, unit="frame", file=sys.stderr, disable=not enabled, dynamic_ncols=True)

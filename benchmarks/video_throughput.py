"""Video stylization throughput: frames/s and where the time goes (decode, detect, stylize, encode).

Builds a short 640x480 clip of the skimage astronaut's face under a slow pan/zoom with a 440 Hz AAC
tone, then runs `mmfs.inference.video.stylize_video` with random Stylizers of the ffhq256 / ffhq512 presets
(weights do not change the cost). Prints a markdown table; a second table shows the one-euro
filter's lag and jitter on synthetic landmark tracks (the smoothing defaults in docs/video.md).

    python benchmarks/video_throughput.py --frames 32 --presets ffhq256 ffhq512
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np


def make_clip(path: Path, frames: int, width: int, height: int, rate: Fraction = Fraction(25)) -> Path:
    """A moving real face (public-domain astronaut photo) plus a tone, encoded with libx264 + AAC."""
    import av
    from PIL import Image
    from skimage.data import astronaut

    img = Image.fromarray(astronaut())
    out = av.open(str(path), "w")
    video = out.add_stream("libx264", rate=rate)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    tone = out.add_stream("aac", rate=44100)
    tone.codec_context.layout = "mono"
    out.start_encoding()
    aspect = width / height
    for i in range(frames):
        # The face spans ~40% of the frame height: a typical talking-head shot.
        cx, cy, s = 215 + 1.5 * i, 150 + 0.5 * i, 420 - 2.0 * i
        box = (cx - 0.5 * s * aspect, cy - 0.5 * s, cx + 0.5 * s * aspect, cy + 0.5 * s)
        frame = av.VideoFrame.from_ndarray(
            np.asarray(img.crop(box).resize((width, height), Image.BICUBIC)), format="rgb24"
        )
        frame.pts = i
        for packet in video.encode(frame):
            out.mux(packet)
    for packet in video.encode(None):
        out.mux(packet)
    t = np.arange(int(44100 * frames / rate)) / 44100
    audio = av.AudioFrame.from_ndarray(
        (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], format="flt", layout="mono"
    )
    audio.sample_rate, audio.pts = 44100, 0
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=44100, frame_size=1024)
    for chunk in resampler.resample(audio) + resampler.resample(None):
        for packet in tone.encode(chunk):
            out.mux(packet)
    for packet in tone.encode(None):
        out.mux(packet)
    out.close()
    return path


def run_preset(clip: Path, preset: str, batch_size: int, out_dir: Path) -> dict:
    import torch

    from mmfs.config import PRESETS
    from mmfs.faces import build_detector
    from mmfs.inference.video import stylize_video
    from mmfs.nn import Stylizer

    torch.manual_seed(0)
    model = Stylizer(PRESETS[preset]).eval().requires_grad_(False)
    ws = model.ws_from_z(torch.randn(1, model.cfg.z_dim))
    with torch.inference_mode():  # warm-up: first-call allocations are not throughput
        model(torch.zeros(1, 3, model.cfg.resolution, model.cfg.resolution), ws, noise="zero")
    cpu = time.process_time()
    summary = stylize_video(
        clip, out_dir / f"{preset}.mp4", model=model, ws=ws, detector=build_detector("dlib"),
        batch_size=batch_size, progress=False,
    )  # fmt: skip
    cpu = time.process_time() - cpu  # CPU seconds of all our threads: less sensitive to other load than wall time
    return {
        "preset": preset,
        "resolution": model.cfg.resolution,
        "summary": summary,
        "cpu_per_frame": cpu / summary.frames,
    }


def smoothing_table(fps: float = 30.0, side: float = 200.0, noise_px: float = 1.0) -> list[str]:
    """Lag and jitter of the landmark filter on synthetic tracks (1 px landmark noise, 200 px crop, 30 fps)."""
    from mmfs.inference.video.smoothing import OneEuroFilter, SmoothingConfig

    cfg = SmoothingConfig()
    base = np.array([[0, 0], [50, 0], [25, 25], [5, 50], [45, 50]], float)
    n = 300
    t = np.arange(n) / fps
    tracks = {
        "still": np.zeros(n),
        "slow pan (0.2 crop sides/s)": 0.2 * side * t,
        "fast pan (1 crop side/s)": side * t,
        "1 Hz shake (±0.3 sides)": 0.3 * side * np.sin(2 * np.pi * t),
    }
    rows = ["| track | filter | RMS error vs the true position (px) | jitter: mean frame-to-frame change of the error (px) |",
            "|---|---|---:|---:|"]  # fmt: skip
    for name, x in tracks.items():
        for label, make in (
            ("none", None),
            (
                f"one-euro {cfg.min_cutoff:g} Hz, beta {cfg.beta:g}",
                lambda: OneEuroFilter(cfg.min_cutoff, cfg.beta, cfg.d_cutoff),
            ),
        ):
            rng = np.random.default_rng(0)
            filt = make() if make else None
            errors = []
            for i in range(n):
                pts = base + [x[i], 0] + rng.normal(0, noise_px, base.shape)
                out = filt(pts, t[i], side) if filt else pts
                errors.append(out.mean(0)[0] - base.mean(0)[0] - x[i])
            e = np.array(errors[30:])
            rows.append(f"| {name} | {label} | {np.sqrt((e**2).mean()):.2f} | {np.abs(np.diff(e)).mean():.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--presets", nargs="+", default=["ffhq256", "ffhq512"])
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = make_clip(tmp / "clip.mp4", args.frames, args.width, args.height)
        results = [run_preset(clip, p, args.batch_size, tmp) for p in args.presets]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load average {load:.1f} at the end")  # fmt: skip
    print(f"Clip: {args.frames} frames, {args.width}x{args.height}, 25 fps, libx264 + AAC tone; one face per frame; "
          f"batch size {args.batch_size}; dlib HOG detector; output libx264 crf 18, audio copied.\n")  # fmt: skip
    print(
        "| preset | crop px | frames/s | s/frame | CPU s/frame | decode | detect + align | stylize | paste | encode |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        s = r["summary"]
        sec = s.seconds
        total = sum(sec.values())
        share = {k: 100.0 * v / total for k, v in sec.items()}
        print(
            f"| {r['preset']} | {r['resolution']} | {s.fps:.2f} | {1 / s.fps:.2f} | {r['cpu_per_frame']:.2f} | "
            f"{share['decode']:.1f}% | "
            f"{share['detect'] + share['align']:.1f}% | {share['stylize']:.1f}% | {share['paste']:.1f}% | {share['encode']:.1f}% |"
        )
    print("\nLandmark smoothing on synthetic tracks (1 px landmark noise, 200 px crop side, 30 fps):\n")
    print("\n".join(smoothing_table()))


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"\n(benchmark wall time {time.perf_counter() - start:.0f} s)")

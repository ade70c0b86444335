"""Video files in and out with PyAV (its own ffmpeg; no system ffmpeg, no subprocess).

`VideoReader` decodes the first video stream to upright RGB uint8 frames and hands the first audio
stream's packets to a callback as they are demuxed, so one pass over the file feeds both tracks.
`VideoWriter` encodes RGB frames (libx264, else mpeg4; yuv420p; even sides) at the source's exact
rational frame rate and timestamps, stored turned back and tagged with the source's display rotation
(so a phone video keeps its orientation tag and its stored size), and copies the audio packets when the output container accepts
the codec, else re-encodes them (aac; opus for .webm).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from mmfs.errors import InputError

from .formats import (
    DEFAULT_RATE,
    OUTPUT_FORMATS,
    ROTATION_MUXERS,
    FrameClock,
    can_copy_audio,
    has_encoder,
    is_video_path,
    x264_instruction_sets,
)

__all__ = ["DecodedFrame", "VideoInfo", "VideoReader", "VideoWriter", "is_video_path", "upright"]


@dataclass(frozen=True)
class VideoInfo:
    """What the reader found: display size (after rotation), exact rates, and the audio track if any."""

    path: Path
    width: int
    height: int
    frame_rate: Fraction
    time_base: Fraction
    num_frames: int  # from the header or duration x rate; 0 when unknown (an estimate for the progress bar)
    duration: float | None  # seconds
    codec: str
    rotation: int  # degrees counter-clockwise applied to the stored frames to make them upright
    audio_codec: str | None
    audio_sample_rate: int | None
    audio_channels: int | None


@dataclass
class DecodedFrame:
    """One upright RGB uint8 frame [H, W, 3], its index, its pts (in `VideoInfo.time_base`) and time in seconds."""

    index: int
    image: np.ndarray
    pts: int
    time: float


def _av():
    import av

    return av


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display rotation (degrees counter-clockwise, multiples of 90) to a stored frame."""
    quarter = int(round(rotation / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(image, k=quarter)) if quarter else image


class VideoReader:
    """Open a video file; iterate `frames(on_audio=...)` once. Any failure to open is one-line `InputError`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        av = _av()
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such file")
        if self.path.stat().st_size == 0:
            raise InputError(f"{self.path}: the file is empty")
        try:
            self._container = av.open(str(self.path), mode="r", metadata_errors="ignore")
        except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
            raise InputError(
                f"{self.path}: cannot open as a video ({_reason(exc)}): damaged, truncated, or not a format ffmpeg reads"
            ) from None
        if not self._container.streams.video:
            self._container.close()
            raise InputError(f"{self.path}: the file has no video stream")
        self._video = self._container.streams.video[0]
        ctx = self._video.codec_context
        if ctx is None or not ctx.width or not ctx.height:
            self._container.close()
            raise InputError(f"{self.path}: the video stream has no decodable picture (codec unsupported?)")
        self._video.thread_type = "AUTO"  # frame + slice threads: decoding is otherwise one core
        audio = self._container.streams.audio
        self.audio_stream = audio[0] if audio else None
        self.decode_errors = 0
        self.seconds = 0.0  # time spent demuxing and decoding (excluding the audio callback)
        try:
            self.info = self._probe()
        except BaseException:
            self._container.close()
            raise

    def _probe(self) -> VideoInfo:
        stream = self._video
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate or DEFAULT_RATE
        time_base = stream.time_base or Fraction(1, 1) / rate
        duration = None
        if stream.duration is not None and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif self._container.duration is not None:
            duration = self._container.duration / 1_000_000
        frames = int(stream.frames or 0)
        if not frames and duration:
            frames = int(round(duration * rate))
        rotation = _first_frame_rotation(self.path)
        w, h = stream.codec_context.width, stream.codec_context.height
        if rotation % 180:
            w, h = h, w
        a = self.audio_stream
        return VideoInfo(
            path=self.path,
            width=w,
            height=h,
            frame_rate=Fraction(rate),
            time_base=Fraction(time_base),
            num_frames=frames,
            duration=duration,
            codec=stream.codec_context.name,
            rotation=rotation,
            audio_codec=a.codec_context.name if a is not None and a.codec_context is not None else None,
            audio_sample_rate=a.codec_context.sample_rate if a is not None and a.codec_context is not None else None,
            audio_channels=a.codec_context.channels if a is not None and a.codec_context is not None else None,
        )

    def frames(self, on_audio: Callable[[object], None] | None = None) -> Iterator[DecodedFrame]:
        """Decoded frames in presentation order; audio packets go to `on_audio` (in demux order) if given."""
        av = _av()
        streams = [self._video] + ([self.audio_stream] if on_audio is not None and self.audio_stream else [])
        step = max(1, int(round(1 / (self.info.frame_rate * self.info.time_base))))  # pts per frame
        index, last_pts = 0, None
        start = time.perf_counter()
        packets = self._container.demux(*streams)
        while True:
            # Only demuxing and decoding errors are the input's fault; errors of `on_audio` (the writer) propagate.
            try:
                packet = next(packets, None)
            except av.FFmpegError as exc:  # a truncated or damaged tail: keep what was decoded, as players do
                self.decode_errors += 1
                if index == 0:
                    raise InputError(f"{self.path}: cannot decode the video ({_reason(exc)})") from None
                break
            if packet is None:
                break
            if packet.stream.type == "audio":
                self.seconds += time.perf_counter() - start
                on_audio(packet)
                start = time.perf_counter()
                continue
            try:
                decoded = packet.decode()
            except av.FFmpegError:  # a damaged packet: ffmpeg conceals it, so do we
                self.decode_errors += 1
                continue
            for frame in decoded:
                pts = frame.pts
                # Encoders need strictly increasing pts; streams without timestamps get a regular clock.
                if pts is None:
                    pts = 0 if last_pts is None else last_pts + step
                elif last_pts is not None and pts <= last_pts:
                    pts = last_pts + 1
                last_pts = pts
                image = upright(frame.to_ndarray(format="rgb24"), self.info.rotation)
                if image.shape[:2] != (self.info.height, self.info.width):
                    raise InputError(
                        f"{self.path}: the picture size changes mid-stream at frame {index} "
                        f"({image.shape[1]}x{image.shape[0]}, was {self.info.width}x{self.info.height}); not supported"
                    )
                item = DecodedFrame(index=index, image=image, pts=int(pts), time=float(pts * self.info.time_base))
                index += 1
                self.seconds += time.perf_counter() - start
                yield item
                start = time.perf_counter()
        self.seconds += time.perf_counter() - start
        if index == 0:
            raise InputError(f"{self.path}: the video stream holds no decodable frame")

    @property
    def color(self) -> dict[str, int]:
        """The source's colour tags (matrix, range, primaries, transfer), copied to the output."""
        ctx = self._video.codec_context
        tags = {}
        # Values that mean "unspecified" (and RGB, which a yuv420p output cannot carry) are not copied.
        skip = {"colorspace": (0, 2), "color_range": (0,), "color_primaries": (0, 2), "color_trc": (0, 2)}
        for name, unspecified in skip.items():
            value = getattr(ctx, name, None)
            if value is not None and int(value) not in unspecified:
                tags[name] = int(value)
        return tags

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoWriter:
    """Encode upright RGB frames to `path` (the format follows `suffix`, default the path's own)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        width: int,
        height: int,
        frame_rate: Fraction,
        time_base: Fraction | None = None,
        audio_stream: object | None = None,
        suffix: str | None = None,
        codec: str | None = None,
        crf: int = 18,
        preset: str = "medium",
        color: dict[str, int] | None = None,
        rotation: int = 0,
    ) -> None:
        """`width` x `height` is the upright picture `write` takes; with `rotation` (degrees counter-clockwise,
        a multiple of 90, as `VideoInfo.rotation`) frames are stored turned back and the stream is tagged
        to display them upright, as phones write them. Muxers without a rotation tag (AVI) store them upright."""
        av = _av()
        suffix = (suffix or Path(path).suffix).lower()
        if suffix not in OUTPUT_FORMATS:
            raise InputError(f"{path}: unsupported video output extension; use one of {', '.join(OUTPUT_FORMATS)}")
        muxer, video_codecs, self._audio_codec_name = OUTPUT_FORMATS[suffix]
        self._muxer = muxer
        self.codec = codec or next((c for c in video_codecs if has_encoder(c)), None)
        if self.codec is None or not has_encoder(self.codec):
            raise InputError(
                f"no usable video encoder for {suffix} in this PyAV build (tried {', '.join(video_codecs)})"
            )
        self.seconds = 0.0  # time spent encoding and muxing
        self.frames = 0
        self._width, self._height = int(width), int(height)
        quarter = int(round(rotation / 90.0)) % 4 if muxer in ROTATION_MUXERS else 0
        self.rotation = 90 * quarter
        # the picture as stored: the upright one turned back by the display rotation
        self._stored = (self._height, self._width) if quarter % 2 else (self._width, self._height)
        self._color = dict(color or {})
        self._out = av.open(str(path), mode="w", format=muxer)
        try:
            self._video = self._add_video(frame_rate, time_base, crf, preset)
            self._audio, self._resampler, self.audio = None, None, "none"
            if audio_stream is not None:
                self._add_audio(audio_stream, muxer)
            self._out.start_encoding()  # writes the header; opens the encoders (frame sizes become known)
            if self._audio is not None and self._resampler is None and self.audio.startswith("re-encoded"):
                ctx = self._audio.codec_context
                self._resampler = av.AudioResampler(
                    format=ctx.format.name,
                    layout=ctx.layout.name,
                    rate=ctx.sample_rate,
                    frame_size=ctx.frame_size or None,
                )
        except BaseException:
            self._out.close()
            raise

    def _add_video(self, rate: Fraction, time_base: Fraction | None, crf: int, preset: str):
        stream = self._out.add_stream(self.codec, rate=rate)
        # yuv420p needs even sides: odd frames get their last row/column repeated (see `write`).
        w, h = self._stored
        stream.width, stream.height = w + w % 2, h + h % 2
        if self.rotation:
            stream.set_display_rotation(self.rotation)
        stream.pix_fmt = "yuv420p"
        # AVI stores a constant rate only; MPEG-4 part 2 allows time-base denominators up to 65535.
        limit = 0 if self._muxer == "avi" else 65535 if self.codec == "mpeg4" else 2**31 - 1
        self._clock = FrameClock(rate, time_base, max_denominator=limit)
        stream.codec_context.time_base = self._clock.time_base
        if self.codec == "libx264":
            # A seed must give one video. x264's bytes depend on its thread count (auto: the machine's cores),
            # so one thread (encoding is under 1% of the time, docs/benchmarks.md); and its AVX-512 code reads
            # memory it never wrote on most widths, so it runs without AVX-512 (see x264_instruction_sets).
            stream.options = {"crf": str(crf), "preset": preset, "threads": "1"}
            if asm := x264_instruction_sets():
                stream.options = {**stream.options, "x264-params": f"asm={asm}"}
        elif self.codec.startswith("libvpx"):
            stream.options = {"crf": str(max(crf, 4) + 12), "b": "0", "deadline": "good", "cpu-used": "4"}
        else:
            stream.codec_context.bit_rate = int(max(1e6, 0.25 * stream.width * stream.height * float(rate)))
        for name, value in self._color.items():
            try:
                setattr(stream.codec_context, name, value)
            except (AttributeError, TypeError, ValueError):
                pass
        return stream

    def _add_audio(self, source, muxer: str) -> None:
        av = _av()
        name = source.codec_context.name if source.codec_context is not None else None
        if name is not None and can_copy_audio(source, muxer):
            self._audio = self._out.add_stream_from_template(source)
            self.audio = f"copied ({name})"
            return
        if source.codec_context is None or not source.codec_context.is_decoder:
            self.audio = f"dropped ({name or 'unknown'} audio cannot be decoded)"
            return
        target = av.Codec(self._audio_codec_name, "w")
        rate = source.codec_context.sample_rate or 48000
        rates = target.audio_rates
        if rates and rate not in rates:
            rate = 48000 if 48000 in rates else max(rates)
        # Mono stays mono; everything else becomes stereo (also labels "2 channels" of unknown order).
        layout = "mono" if source.codec_context.channels == 1 else "stereo"
        stream = self._out.add_stream(self._audio_codec_name, rate=rate)
        stream.codec_context.layout = layout
        stream.codec_context.format = target.audio_formats[0].name if target.audio_formats else "fltp"
        if self._audio_codec_name in ("aac", "libmp3lame", "libopus"):
            stream.codec_context.bit_rate = 192_000
        self._audio = stream
        self._audio_next: int | None = None
        self.audio = f"re-encoded ({name} -> {self._audio_codec_name.removeprefix('lib')})"

    def write(self, image: np.ndarray, pts: int) -> None:
        """Encode one RGB uint8 frame [H, W, 3] with its source pts (strictly increasing)."""
        av = _av()
        start = time.perf_counter()
        if image.shape[:2] != (self._height, self._width):
            raise ValueError(
                f"frame is {image.shape[1]}x{image.shape[0]}, the writer was opened for {self._width}x{self._height}"
            )
        image = upright(image, -self.rotation)  # stored turned back; players (and VideoReader) turn it upright
        w, h = self._stored
        if w % 2 or h % 2:
            image = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        # RGB -> YUV here, with the source's matrix and range (the conversion inside `encode` would use defaults).
        color = self._color
        frame = frame.reformat(format="yuv420p", dst_colorspace=color.get("colorspace"),
                               dst_color_range=color.get("color_range"))  # fmt: skip
        for name, value in color.items():  # tag the output with them too
            try:
                setattr(frame, name, value)
            except (AttributeError, TypeError, ValueError):
                pass
        frame.pts = self._clock(pts)
        for packet in self._video.encode(frame):
            self._out.mux(packet)
        self.frames += 1
        self.seconds += time.perf_counter() - start

    def write_audio(self, packet) -> None:
        """Pass one demuxed audio packet on: copied as is, or decoded, resampled and re-encoded."""
        if self._audio is None:
            return
        start = time.perf_counter()
        if self._resampler is None:
            if packet.dts is not None:  # the demuxer's empty flush packets carry no data
                packet.stream = self._audio
                self._out.mux(packet)
        else:
            av = _av()
            try:
                frames = packet.decode()
            except av.FFmpegError:
                frames = []
            for frame in frames:
                self._encode_audio(frame)
        self.seconds += time.perf_counter() - start

    def _encode_audio(self, frame) -> None:
        rate = self._audio.codec_context.sample_rate
        if self._audio_next is None and frame is not None:
            # Start where the source audio starts (keeps A/V sync); then count samples, because the
            # resampler's re-chunked frames keep the input frames' pts, which no longer match.
            self._audio_next = int(round(float(frame.time) * rate)) if frame.pts is not None else 0
        for out in self._resampler.resample(frame):
            out.pts, out.time_base = self._audio_next or 0, Fraction(1, rate)
            self._audio_next = (self._audio_next or 0) + out.samples
            for packet in self._audio.encode(out):
                self._out.mux(packet)

    def close(self) -> None:
        """Flush the encoders and finish the file."""
        start = time.perf_counter()
        try:
            for packet in self._video.encode(None):
                self._out.mux(packet)
            if self._resampler is not None:
                self._encode_audio(None)
                for packet in self._audio.encode(None):
                    self._out.mux(packet)
        finally:
            self._out.close()
        self.seconds += time.perf_counter() - start

    def abort(self) -> None:
        """Close the file without flushing (the caller deletes it)."""
        try:
            self._out.close()
        except Exception:  # noqa: BLE001 - already failing; the file is discarded anyway
            pass


def _first_frame_rotation(path: Path) -> int:
    """The display rotation of the first decodable frame (stream side data is only exposed per frame)."""
    av = _av()
    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            for frame in container.decode(video=0):
                return int(frame.rotation or 0)
    except av.FFmpegError as exc:
        raise InputError(f"{path}: cannot decode the video ({_reason(exc)})") from None
    raise InputError(f"{path}: the video stream holds no decodable frame")


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())[:200]

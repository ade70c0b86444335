"""Containers and codecs: which extensions are video, what each output muxer gets, and the output clock."""

from __future__ import annotations

import functools
import io
import math
from fractions import Fraction

# The inputs treated as video (what PyAV is asked to decode) are spelled with stylize's options.
from mmfs.config.stylize import VIDEO_EXTENSIONS, is_video_path  # noqa: F401 (re-exported)

# Output extension -> (muxer, video encoders in order of preference, audio encoder for re-encoding).
OUTPUT_FORMATS: dict[str, tuple[str, tuple[str, ...], str]] = {
    ".mp4": ("mp4", ("libx264", "mpeg4"), "aac"),
    ".m4v": ("mp4", ("libx264", "mpeg4"), "aac"),
    ".mov": ("mov", ("libx264", "mpeg4"), "aac"),
    ".mkv": ("matroska", ("libx264", "mpeg4"), "aac"),
    ".webm": ("webm", ("libvpx-vp9", "libvpx"), "libopus"),
    ".avi": ("avi", ("libx264", "mpeg4"), "libmp3lame"),
}
# Audio codecs copied without re-encoding, per muxer: what ffmpeg accepts *and* players handle there
# (ffmpeg's mp4 muxer takes PCM headers, then fails at the trailer on unlabelled channel layouts).
COPY_AUDIO: dict[str, frozenset[str]] = {
    "mp4": frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}),
    "mov": frozenset({"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_f32le"}),
    "matroska": frozenset("aac mp3 ac3 eac3 alac opus flac vorbis pcm_s16le pcm_s24le pcm_f32le dts truehd".split()),
    "webm": frozenset({"opus", "vorbis"}),
    "avi": frozenset({"mp3", "mp2", "ac3", "pcm_s16le", "pcm_u8"}),
}
# Muxers that store a display rotation (mp4/mov: the track matrix; Matroska/WebM: the projection roll).
ROTATION_MUXERS = frozenset({"mp4", "mov", "matroska", "webm"})
DEFAULT_RATE = Fraction(25)  # only when a file states no frame rate at all


def _fraction_gcd(a: Fraction, b: Fraction) -> Fraction:
    """The largest fraction of which both `a` and `b` are whole multiples."""
    return Fraction(math.gcd(a.numerator * b.denominator, b.numerator * a.denominator), a.denominator * b.denominator)


class FrameClock:
    """Source pts -> output pts in a time base that holds both the source's ticks and the nominal frame grid.

    Timestamps are kept as they are (variable frame rates and gaps survive), except that a timestamp
    which is only the source tick's rounding of a nominal frame time (29.97 fps stored in 1/1000 s)
    is put back on the exact grid, so the output's rate is exactly the source's nominal rate.
    """

    def __init__(self, rate: Fraction, time_base: Fraction | None, *, max_denominator: int = 2**31 - 1) -> None:
        self.rate = Fraction(rate)
        self.source_tb = Fraction(time_base) if time_base else 1 / self.rate
        tb = _fraction_gcd(1 / self.rate, self.source_tb)
        # Beyond `max_denominator` (0: always), fall back to counting frames on the nominal grid.
        self.time_base = tb if tb.denominator <= max_denominator else 1 / self.rate
        self._start: Fraction | None = None
        self._last: int | None = None

    def __call__(self, pts: int) -> int:
        t = pts * self.source_tb
        if self._start is None:
            self._start = t
        nominal = self._start + Fraction(round((t - self._start) * self.rate)) / self.rate
        if abs(t - nominal) <= self.source_tb / 2 or self.time_base == 1 / self.rate:
            t = nominal
        out = round(t / self.time_base)
        if self._last is not None and out <= self._last:
            out = self._last + 1
        self._last = out
        return int(out)


def has_encoder(name: str) -> bool:
    av = _av_module()
    try:
        av.Codec(name, "w")
    except (av.FFmpegError, ValueError):
        return False
    return True


@functools.cache
def x264_instruction_sets() -> str | None:
    """The instruction sets x264 detects on this CPU less AVX-512, as its `asm` parameter; None without AVX-512.

    x264's AVX-512 `mbtree_propagate_list` spreads a macroblock row's costs in groups of 8 macroblocks
    without masking the lanes past the row's end (its SSSE3 to AVX2 versions finish each row in C).
    When the width in macroblocks is not a multiple of 8 (160 px, 720 px, a 1080x1920 phone video),
    those lanes add costs from past the row's end, some of which x264 never wrote, so the same frames
    give different bytes from run to run. Where the bug cannot bite (256 to 1280 px wide, measured),
    its AVX2 code gives the same bytes as its AVX-512 code.
    x264 names what it detected in its info log when it opens; passing a name it did not detect would run
    instructions this CPU lacks, so the list is taken from that log and only AVX-512 is removed.
    """
    av = _av_module()
    from av import logging as av_logging

    previous = av_logging.get_level()
    av_logging.set_level(av_logging.INFO)
    try:
        with av_logging.Capture() as logs:
            probe = av.CodecContext.create("libx264", "w")
            probe.width, probe.height, probe.pix_fmt = 64, 64, "yuv420p"
            probe.time_base = Fraction(1, 25)
            probe.open()
    except (av.FFmpegError, ValueError):
        return None
    finally:
        av_logging.set_level(previous)
    for _level, _name, message in logs:
        if message.startswith("using cpu capabilities:"):
            names = message.split(":", 1)[1].split()
            return ",".join(n for n in names if n != "AVX512") if "AVX512" in names else None
    return None


def can_copy_audio(source, muxer: str) -> bool:
    """Whether `muxer` accepts the source audio codec as is: asked of ffmpeg by writing a header in memory."""
    av = _av_module()
    try:
        probe = av.open(io.BytesIO(), mode="w", format=muxer)
    except (av.FFmpegError, ValueError):
        return False
    try:
        name = source.codec_context.name
        if name not in COPY_AUDIO.get(muxer, frozenset()) or name not in probe.supported_codecs:
            return False
        probe.add_stream_from_template(source)
        probe.start_encoding()
        return True
    except (av.FFmpegError, ValueError, TypeError):
        return False
    finally:
        try:
            probe.close()
        except Exception:  # noqa: BLE001 - a probe that failed to start may not close cleanly
            pass


def _av_module():
    import av

    return av

"""Video stylization: PyAV I/O (rates, audio, rotation, errors), landmark smoothing, the streaming pipeline."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")
pytest.importorskip("dlib")

from mmfs.checkpoint import save_checkpoint  # noqa: E402
from mmfs.config import PRESETS  # noqa: E402
from mmfs.errors import InputError  # noqa: E402
from mmfs.faces import Face  # noqa: E402
from mmfs.inference.video.formats import FrameClock, is_video_path  # noqa: E402
from mmfs.inference.video.gaps import GapFiller  # noqa: E402
from mmfs.inference.video.io import DecodedFrame, VideoReader, VideoWriter, upright  # noqa: E402
from mmfs.inference.video.smoothing import (  # noqa: E402
    ExponentialFilter,
    FaceTracker,
    OneEuroFilter,
    SmoothingConfig,
    crop_side,
)
from mmfs.inference.video.stylize import FrameStylizer, stylize_video  # noqa: E402

W, H, RATE, N_FRAMES = 160, 128, Fraction(25), 30
TONE_HZ, SAMPLE_RATE = 440.0, 44100


# ---- synthetic material ---------------------------------------------------------------------------------


def face_frames(n: int = N_FRAMES, width: int = W, height: int = H) -> list[np.ndarray]:
    """The skimage astronaut's face under a slow pan and zoom: dlib finds it on every frame."""
    from PIL import Image
    from skimage.data import astronaut

    img = Image.fromarray(astronaut())
    frames = []
    for i in range(n):
        cx, cy, s = 205 + 0.8 * i, 130 + 0.4 * i, 230 - 1.0 * i
        box = (cx - 0.625 * s, cy - 0.5 * s, cx + 0.625 * s, cy + 0.5 * s)
        frames.append(np.asarray(img.crop(box).resize((width, height), Image.BILINEAR)))
    return frames


def write_clip(path: Path, frames: list[np.ndarray], *, rate=RATE, audio: str | None = "aac", fmt=None, rotation=0):
    """Encode frames (libx264) plus a mono 440 Hz tone of the same duration with `audio` as codec."""
    out = av.open(str(path), "w", format=fmt)
    video = out.add_stream("libx264", rate=rate)
    video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
    video.options = {"crf": "10"}
    if rotation:
        video.set_display_rotation(rotation)
    tone = None
    if audio:
        tone = out.add_stream(audio, rate=SAMPLE_RATE)
        tone.codec_context.layout = "mono"
    out.start_encoding()
    for i, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = i
        for packet in video.encode(frame):
            out.mux(packet)
    for packet in video.encode(None):
        out.mux(packet)
    if tone is not None:
        t = np.arange(int(SAMPLE_RATE * len(frames) / rate)) / SAMPLE_RATE
        samples = (0.3 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, 0
        ctx = tone.codec_context
        resampler = av.AudioResampler(
            format=ctx.format.name, layout="mono", rate=SAMPLE_RATE, frame_size=ctx.frame_size or 1024
        )
        for chunk in resampler.resample(frame) + resampler.resample(None):
            for packet in tone.encode(chunk):
                out.mux(packet)
        for packet in tone.encode(None):
            out.mux(packet)
    out.close()
    return path


def probe(path: Path) -> dict:
    """Decoded facts about a file: frames, rate, audio codec/duration and the audio's dominant frequency."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {"rate": v.average_rate, "width": v.codec_context.width, "height": v.codec_context.height}
        info["frames"] = [f.to_ndarray(format="rgb24") for f in c.decode(v)]
    with av.open(str(path)) as c:
        info["audio"] = None
        if c.streams.audio:
            a = c.streams.audio[0]
            pcm = np.concatenate([f.to_ndarray().reshape(f.to_ndarray().shape[0], -1)[0] for f in c.decode(a)])
            spectrum = np.abs(np.fft.rfft(pcm))
            info["audio"] = {
                "codec": a.codec_context.name,
                "seconds": len(pcm) / a.codec_context.sample_rate,
                "peak_hz": np.argmax(spectrum) * a.codec_context.sample_rate / len(pcm),
            }
    return info


class CachedDetector:
    """The real dlib detector, memoised per frame so repeated runs over the same frames stay cheap."""

    def __init__(self) -> None:
        from mmfs.faces import build_detector

        self.inner = build_detector("dlib", rotate=False)  # frames are upright, as the video CLI sees them
        self.cache: dict[bytes, list[Face]] = {}
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[Face]:
        self.calls += 1
        key = image.tobytes()
        if key not in self.cache:
            self.cache[key] = self.inner.detect(image)
        return self.cache[key]


@pytest.fixture(scope="module")
def detector():
    return CachedDetector()


@pytest.fixture(scope="module")
def model():
    """A random tiny Stylizer with its noise inputs switched on (random init leaves their weights at 0) and
    its RGB outputs scaled down, off the [-1, 1] clamp, so that changes anywhere show in its pixels."""
    from mmfs.nn import Stylizer

    torch.manual_seed(0)
    m = Stylizer(PRESETS["tiny"]).eval().requires_grad_(False)
    for name, p in m.named_parameters():
        if "noise" in name:
            p.fill_(1.0)
        if name.startswith("to_rgb") and name.endswith("weight"):
            p.mul_(0.1)
    return m


@pytest.fixture(scope="module")
def ws(model):
    return model.ws_from_z(torch.randn(1, model.cfg.z_dim, generator=torch.Generator().manual_seed(3)))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", face_frames())


def decoded(frames: list[np.ndarray], rate: float = 25.0) -> list[DecodedFrame]:
    return [DecodedFrame(index=i, image=f, pts=i, time=i / rate) for i, f in enumerate(frames)]


# ---- the whole command path ------------------------------------------------------------------------------


def test_stylize_video_keeps_frames_rate_and_audio(tmp_path, clip, detector, model):
    # Through the real loading code: a kind="stylizer" checkpoint, as `mmfs stylize` would use.
    from mmfs.inference.models import load_stylizer

    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", model.state_dict(), kind="stylizer", config=model.cfg)
    loaded = load_stylizer(ckpt)
    style = loaded.ws_from_z(torch.randn(1, loaded.cfg.z_dim))
    out = tmp_path / "out.mp4"
    summary = stylize_video(clip, out, model=loaded, ws=style, detector=detector, batch_size=4, progress=False)

    src, dst = probe(clip), probe(out)
    assert len(dst["frames"]) == len(src["frames"]) == N_FRAMES == summary.frames
    assert dst["rate"] == src["rate"] == RATE and summary.frame_rate == RATE
    assert (dst["width"], dst["height"]) == (W, H)
    assert summary.frames_with_faces + summary.frames_without_face == N_FRAMES
    assert summary.frames_with_faces >= N_FRAMES - 2 and summary.faces >= summary.frames_with_faces
    # The tone survives: same codec (copied), same length, same pitch.
    assert summary.audio == "copied (aac)" and dst["audio"]["codec"] == "aac"
    assert dst["audio"]["seconds"] == pytest.approx(src["audio"]["seconds"], abs=0.05)
    assert dst["audio"]["peak_hz"] == pytest.approx(TONE_HZ, abs=5)
    # Faces changed, the frame's corners (far from the face) did not beyond codec noise.
    diff = [np.abs(a.astype(int) - b.astype(int)) for a, b in zip(src["frames"], dst["frames"], strict=True)]
    assert np.mean([d[40:90, 55:105].mean() for d in diff]) > 10
    assert np.mean([d[:12, :12].mean() for d in diff]) < 3
    assert set(summary.seconds) == {"decode", "detect", "align", "stylize", "paste", "encode"}
    assert "30 frames" in summary.describe() and json.loads(json.dumps(summary.to_dict()))["frames"] == N_FRAMES
    assert not [p.name for p in tmp_path.iterdir() if ".partial" in p.name]


def test_reencodes_audio_the_container_cannot_hold(tmp_path):
    # PCM in Matroska -> MP4: MP4 gets AAC; a frame-count clock in 1/1000 s ticks keeps the exact 30000/1001.
    frames = [np.full((48, 64, 3), 10 * i, np.uint8) for i in range(20)]
    src = write_clip(tmp_path / "pcm.mkv", frames, rate=Fraction(30000, 1001), audio="pcm_s16le", fmt="matroska")
    out = tmp_path / "out.mp4"
    with VideoReader(src) as reader:
        assert reader.info.time_base == Fraction(1, 1000) and reader.info.audio_codec == "pcm_s16le"
        info = reader.info
        writer = VideoWriter(out, width=info.width, height=info.height, frame_rate=info.frame_rate,
                             time_base=info.time_base, audio_stream=reader.audio_stream)  # fmt: skip
        for frame in reader.frames(on_audio=writer.write_audio):
            writer.write(frame.image, frame.pts)
        writer.close()
    assert writer.audio == "re-encoded (pcm_s16le -> aac)"
    dst = probe(out)
    assert len(dst["frames"]) == 20 and dst["rate"] == Fraction(30000, 1001)
    assert dst["audio"]["codec"] == "aac" and dst["audio"]["peak_hz"] == pytest.approx(TONE_HZ, abs=5)
    assert dst["audio"]["seconds"] == pytest.approx(20 * 1001 / 30000, abs=0.05)


def test_interrupt_leaves_no_output(tmp_path, clip, model, ws):
    class Interrupting(CachedDetector):
        def detect(self, image):
            if self.calls == 5:
                raise KeyboardInterrupt
            return super().detect(image)

    out = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        stylize_video(clip, out, model=model, ws=ws, detector=Interrupting(), progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"", b"this is not a video at all" * 50, "text"])
def test_unreadable_file_is_one_line_input_error(tmp_path, content, model, ws, detector):
    bad = tmp_path / "bad.mp4"
    if content == "text":
        bad.write_text("frame,value\n1,2\n")
    else:
        bad.write_bytes(content)
    with pytest.raises(InputError) as err:
        stylize_video(bad, tmp_path / "out.mp4", model=model, ws=ws, detector=detector, progress=False)
    message = str(err.value)
    assert "\n" not in message and str(bad) in message
    assert not (tmp_path / "out.mp4").exists()
    with pytest.raises(InputError, match="no such file"):
        VideoReader(tmp_path / "missing.mp4")


def test_audio_only_file_and_bad_output_extension(tmp_path, clip, model, ws, detector):
    sound = tmp_path / "tone.m4a"
    out = av.open(str(sound), "w", format="mp4")
    stream = out.add_stream("aac", rate=SAMPLE_RATE)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    frame.sample_rate, frame.pts = SAMPLE_RATE, 0
    for packet in list(stream.encode(frame)) + list(stream.encode(None)):
        out.mux(packet)
    out.close()
    with pytest.raises(InputError, match="no video stream"):
        VideoReader(sound)
    with pytest.raises(InputError, match="unsupported video output extension"):
        stylize_video(clip, tmp_path / "out.gif", model=model, ws=ws, detector=detector, progress=False)
    assert is_video_path("a/b/Clip.MOV") and not is_video_path("photo.jpg")


# ---- frame-level behaviour -------------------------------------------------------------------------------


def test_faceless_frames_pass_through_bit_exactly(model, ws, detector):
    faces = face_frames(8)
    blank = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    frames = [blank, faces[0], faces[1], blank.copy(), faces[2], faces[3], blank[::-1].copy(), blank[:, ::-1].copy()]
    with_face = {1, 2, 4, 5}
    strict = FrameStylizer(model, ws, detector, batch_size=3, smoothing=SmoothingConfig(hold_frames=0))
    out = list(strict.run(decoded(frames)))
    assert [o.index for o in out] == list(range(len(frames)))
    for i, (o, f) in enumerate(zip(out, frames, strict=True)):
        if i in with_face:
            assert o.faces == 1 and not np.array_equal(o.image, f)
        else:
            assert o.faces == 0 and o.image.dtype == np.uint8 and np.array_equal(o.image, f)
    # By default a missed frame between two detections is filled in, and so are the last frames of the
    # video after the face was last found; the frame before the face first appears passes through.
    held = list(FrameStylizer(model, ws, detector, batch_size=3).run(decoded(frames)))
    assert [(o.faces, o.held) for o in held] == [(0, 0), (1, 0), (1, 0), (1, 1), (1, 0), (1, 0), (1, 1), (1, 1)]
    assert np.array_equal(held[0].image, frames[0]) and not np.array_equal(held[3].image, frames[3])


# Frames 2-3, 7, 11-13, 18, 22-25 and 30-31 are out of focus: dlib misses the face in 13 of 36 frames.
BLURRED = (2, 3, 7, 11, 12, 13, 18, 22, 23, 24, 25, 30, 31)


def blinking_frames(n: int = 36, side: int = 192) -> list[np.ndarray]:
    """The astronaut's face moving slowly sideways, with the camera losing focus now and then."""
    from PIL import Image, ImageFilter
    from skimage.data import astronaut

    img = Image.fromarray(astronaut())
    frames = []
    for i in range(n):
        cx = 180 + 2.0 * i
        frame = img.crop((cx - 130, 10, cx + 130, 270)).resize((side, side), Image.BILINEAR)
        frames.append(np.asarray(frame.filter(ImageFilter.GaussianBlur(3)) if i in BLURRED else frame))
    return frames


def flicker(frames: list[np.ndarray]) -> float:
    """Mean absolute change between consecutive frames, in 8-bit levels."""
    return float(
        np.mean([np.abs(a.astype(float) - b.astype(float)).mean() for a, b in zip(frames[1:], frames, strict=False)])
    )


def test_a_face_the_detector_misses_for_a_few_frames_stays_stylized(model, ws, detector):
    frames = blinking_frames()
    assert [i for i, f in enumerate(frames) if not detector.detect(f)] == list(BLURRED)
    filled = list(FrameStylizer(model, ws, detector, batch_size=8).run(decoded(frames)))
    assert all(o.faces == 1 for o in filled) and [o.index for o in filled if o.held] == list(BLURRED)
    raw = list(
        FrameStylizer(model, ws, detector, batch_size=8, smoothing=SmoothingConfig(hold_frames=0)).run(decoded(frames))
    )
    assert [o.index for o in raw if not o.faces] == list(BLURRED)
    # Raw frames between stylized ones flicker; filled in, the output changes about as much as the input.
    change_in, change_filled, change_raw = (
        flicker(frames),
        flicker([o.image for o in filled]),
        flicker([o.image for o in raw]),
    )
    assert change_filled < 0.75 * change_raw and change_filled < change_in  # measured: 8.2, 13.0 and 9.5


def crop_change(crops: list[np.ndarray]) -> float:
    """Mean absolute change between consecutive crops, in 8-bit levels."""
    return float(
        np.mean([np.abs(a.astype(float) - b.astype(float)).mean() for a, b in zip(crops[1:], crops[:-1], strict=True)])
    )


def run_recording(engine: FrameStylizer, frames: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Run frames through the engine and return the aligned input crops and the stylized crops."""
    seen_in, seen_out = [], []
    stylize = engine.stylize_crops

    def record(crops):
        styled = stylize(crops)
        seen_in.extend(crops)
        seen_out.extend(styled)
        return styled

    engine.stylize_crops = record
    list(engine.run(decoded(frames)))
    return seen_in, seen_out


def test_stylized_crop_is_steadier_than_the_input(model, ws, detector):
    frames = face_frames(16)
    crops_in, crops_out = run_recording(FrameStylizer(model, ws, detector, batch_size=8), frames)
    assert len(crops_out) == 16
    # Fixed style + fixed noise + smoothed crop: the stylized face changes less than the input does.
    assert crop_change(crops_out) <= crop_change(crops_in)
    # The two controls this test exists to catch: fresh noise per frame flickers ...
    _, random_out = run_recording(FrameStylizer(model, ws, detector, batch_size=8, noise="random"), frames)
    assert crop_change(random_out) > 4 * crop_change(crops_in)
    # ... and without smoothing the crop jitters with the detector's landmark noise, and so does the output.
    raw_in, raw_out = run_recording(
        FrameStylizer(model, ws, detector, smoothing=SmoothingConfig(method="none")), frames
    )
    assert crop_change(crops_in) < crop_change(raw_in) and crop_change(crops_out) < crop_change(raw_out)


def test_same_noise_maps_as_photo_mode(model, ws, detector):
    from mmfs.inference.pipeline import seed_noise

    engine = FrameStylizer(model, ws, detector, noise_seed=7)
    for got, want in zip(engine.noise, seed_noise(model, 7), strict=True):
        assert torch.equal(got, want)
    with pytest.raises(ValueError, match="ws must be"):
        FrameStylizer(model, ws[0], detector)


# ---- smoothing ------------------------------------------------------------------------------------------


def test_one_euro_matches_its_formula_and_holds_still_points():
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0, d_cutoff=1.0)
    x0, x1 = np.zeros((5, 2)), np.ones((5, 2))
    assert np.array_equal(f(x0, 0.0), x0)
    dt = 0.04
    alpha = 1.0 / (1.0 + 1.0 / (2 * np.pi * 1.0) / dt)  # first-order low-pass at 1 Hz
    np.testing.assert_allclose(f(x1, dt), alpha * x1)
    # A still face under 1 px landmark noise: the filtered points wander far less than the raw ones.
    rng = np.random.default_rng(0)
    base = np.array([[0, 0], [50, 0], [25, 25], [5, 50], [45, 50]], float)
    g = OneEuroFilter()
    raw = [base + rng.normal(0, 1.0, base.shape) for _ in range(100)]
    smooth = [g(p, i / 30, crop_side(base)) for i, p in enumerate(raw)]
    assert np.abs(np.diff(smooth[30:], axis=0)).mean() < 0.25 * np.abs(np.diff(raw[30:], axis=0)).mean()


def test_one_euro_follows_fast_motion_with_less_lag_than_a_fixed_low_pass():
    base = np.array([[0, 0], [50, 0], [25, 25], [5, 50], [45, 50]], float)
    side = crop_side(base)
    adaptive, fixed = OneEuroFilter(min_cutoff=0.5, beta=10.0), OneEuroFilter(min_cutoff=0.5, beta=0.0)
    for i in range(60):  # one crop side per second to the right
        t = i / 30
        pos = base + [side * t, 0]
        lag_adaptive = (pos - adaptive(pos, t, side))[:, 0].mean()
        lag_fixed = (pos - fixed(pos, t, side))[:, 0].mean()
    assert 0 < lag_adaptive < 0.02 * side < lag_fixed
    ema = ExponentialFilter(0.5)
    ema(base, 0.0)
    np.testing.assert_allclose(ema(base + 2, 0.04), base + 1)


def make_face(cx: float, cy: float, size: float = 40.0) -> Face:
    lm = np.array([[-0.2, -0.1], [0.2, -0.1], [0.0, 0.05], [-0.15, 0.25], [0.15, 0.25]]) * size + [cx, cy]
    return Face(box=np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]), landmarks=lm, score=1.0)


def test_tracker_links_faces_ends_missed_tracks_and_restarts_after_jumps():
    tracker = FaceTracker(SmoothingConfig())
    faces = tracker.update([make_face(100, 100), make_face(300, 100)], 0.0)
    assert len(faces) == 2
    ids = {tr.id for tr in tracker.tracks}
    # Detections arrive in the other order and moved a little: the same two tracks continue.
    faces = tracker.update([make_face(302, 101), make_face(101, 100)], 0.04)
    assert {tr.id for tr in tracker.tracks} == ids
    assert faces[0].landmarks.mean(0)[0] < 200 < faces[1].landmarks.mean(0)[0]
    # A face not continued ends its track (gaps are filled before the tracker sees them).
    faces = tracker.update([make_face(102, 100)], 0.08)
    assert len(faces) == 1 and len(tracker.tracks) == 1
    # A jump of several crop sides is a new face, not a smoothed slide across the frame.
    faces = tracker.update([make_face(500, 300)], 0.12)
    assert np.allclose(faces[-1].landmarks, make_face(500, 300).landmarks)


def test_gap_filler_interpolates_a_missed_face_between_its_detections():
    gaps = GapFiller(max_gap=3)
    seen = []
    # one face moving right 4 px a frame, missed in frames 2 and 3; a second face only in frame 0
    for i in range(6):
        faces = [make_face(100 + 4 * i, 100)] if i not in (2, 3) else []
        seen += gaps.push(i, faces + ([make_face(400, 300)] if i == 0 else []))
        if i in (1, 2, 3):  # frames wait while a missed face may come back (the second one, since frame 1)
            assert [item for item, _, _ in seen] == [0]
    seen += gaps.flush()
    assert [item for item, _, _ in seen] == list(range(6))
    assert [(len(faces), filled) for _, faces, filled in seen] == [(2, 0), (1, 0), (1, 1), (1, 1), (1, 0), (1, 0)]
    for i in (2, 3):  # followed while missed, not left where it was last seen
        np.testing.assert_allclose(seen[i][1][0].landmarks, make_face(100 + 4 * i, 100).landmarks)


def test_gap_filler_lets_a_face_go_after_max_gap_and_holds_it_at_the_end():
    gaps = GapFiller(max_gap=2)
    out = []
    for i, faces in enumerate([[make_face(100, 100)], [], [], [], [make_face(100, 100)], []]):
        out += gaps.push(i, faces)
    # frames 1-3: missed three times > max_gap: the face left (a cut); they pass on without it
    assert [(item, len(faces)) for item, faces, _ in out] == [(0, 1), (1, 0), (2, 0), (3, 0), (4, 1)]
    (last,) = gaps.flush()
    assert last[0] == 5 and last[2] == 1  # the video ended a frame after the face was found: it stays
    np.testing.assert_allclose(last[1][0].landmarks, make_face(100, 100).landmarks)


# ---- clocks, rotation, odd sizes -------------------------------------------------------------------------


def test_frame_clock_restores_the_nominal_grid_and_keeps_real_gaps():
    clock = FrameClock(Fraction(30000, 1001), Fraction(1, 1000))
    assert clock.time_base == Fraction(1, 30000)
    # 29.97 fps stored in milliseconds (0, 33, 67, 100, ...) lands back on multiples of 1001; a dropped
    # frame (267 -> 334 skips one) stays a gap.
    assert [clock(p) for p in (0, 33, 67, 100, 133, 167, 200, 234, 267, 334)] == [
        0, 1001, 2002, 3003, 4004, 5005, 6006, 7007, 8008, 10010,
    ]  # fmt: skip
    vfr = FrameClock(Fraction(25), Fraction(1, 90000))
    assert [vfr(p) for p in (0, 3600, 5000, 9000)] == [0, 3600, 5000, 9000]  # exact ticks kept
    mpeg4 = FrameClock(Fraction(25), Fraction(1, 90000), max_denominator=65535)
    assert mpeg4.time_base == Fraction(1, 25) and [mpeg4(p) for p in (0, 3600, 3601, 7200)] == [0, 1, 2, 3]


def test_rotated_video_is_read_upright_and_odd_sizes_are_padded(tmp_path):
    frames = [np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 3, (48, 1, 3)) for _ in range(3)]
    src = write_clip(tmp_path / "rot.mp4", frames, audio=None, rotation=90)
    with VideoReader(src) as reader:
        assert reader.info.rotation == 90 and (reader.info.width, reader.info.height) == (48, 64)
        got = [f.image for f in reader.frames()]
    assert got[0].shape == (64, 48, 3)
    assert np.abs(got[0].astype(int) - upright(frames[0], 90).astype(int)).mean() < 3
    odd = tmp_path / "odd.mkv"
    writer = VideoWriter(odd, width=63, height=47, frame_rate=Fraction(24))
    for i in range(3):
        writer.write(np.full((47, 63, 3), 100, np.uint8), i)
    writer.close()
    dst = probe(odd)
    assert (dst["width"], dst["height"]) == (64, 48) and len(dst["frames"]) == 3 and dst["audio"] is None


def test_writer_bytes_do_not_depend_on_what_fresh_memory_holds(tmp_path):
    """Same frames, same file, whatever bytes the encoder's fresh memory holds.

    glibc's M_PERTURB fills every new allocation with a chosen byte, so an encoder that reads memory before
    writing it sees different bytes in each encode below, every time rather than now and then (as a loaded
    machine makes it). x264's AVX-512 code did when the width in macroblocks is not a multiple of 8 (160 px: 10).
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("M_PERTURB is glibc's")
    libc, m_perturb = ctypes.CDLL(None), -6
    frames = face_frames(8)
    files = []
    for fill in (0x01, 0x5A, 0xC8):
        path = tmp_path / f"fill{fill}.mp4"
        libc.mallopt(m_perturb, fill)
        try:
            writer = VideoWriter(path, width=W, height=H, frame_rate=RATE)
            for i, image in enumerate(frames):
                writer.write(image, i)
            writer.close()
        finally:
            libc.mallopt(m_perturb, 0)
        files.append(path.read_bytes())
    assert files[0] == files[1] == files[2]


def test_colour_tags_are_kept_so_colours_survive(tmp_path):
    # A full-range BT.709 source: decoding and re-encoding must use (and tag) the same matrix and range.
    bars = np.zeros((48, 64, 3), np.uint8)
    bars[:, :21], bars[:, 21:42], bars[:, 42:] = [200, 30, 40], [20, 180, 60], [30, 60, 220]
    src = tmp_path / "709.mp4"
    out = av.open(str(src), "w")
    stream = out.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    stream.codec_context.color_range, stream.codec_context.colorspace = 2, 1  # JPEG (full) range, BT.709
    for i in range(3):
        frame = av.VideoFrame.from_ndarray(bars, format="rgb24")
        frame.color_range, frame.colorspace, frame.pts = 2, 1, i
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
    out.close()
    dst = tmp_path / "out.mkv"
    with VideoReader(src) as reader:
        assert reader.color == {"colorspace": 1, "color_range": 2}
        first = None
        writer = VideoWriter(dst, width=64, height=48, frame_rate=reader.info.frame_rate, color=reader.color)
        for frame in reader.frames():
            first = frame.image if first is None else first
            writer.write(frame.image, frame.pts)
        writer.close()
    assert np.abs(first.astype(int) - bars).mean() < 6  # the source decodes to its colours
    with VideoReader(dst) as again:
        assert again.color == {"colorspace": 1, "color_range": 2}
        image = next(iter(again.frames())).image
    assert np.abs(image.astype(int) - first.astype(int)).mean() < 3


def test_truncated_stream_keeps_the_frames_before_the_cut(tmp_path):
    full = write_clip(tmp_path / "full.mkv", face_frames(30), fmt="matroska")
    cut = tmp_path / "cut.mkv"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with VideoReader(cut) as reader:
        frames = list(reader.frames(on_audio=lambda packet: None))
    assert 0 < len(frames) < 30 and [f.index for f in frames] == list(range(len(frames)))
    cut.write_bytes(data[: len(data) // 10])  # header only: nothing decodable is one clear line
    with pytest.raises(InputError, match="no decodable frame"):
        VideoReader(cut)


def test_detection_on_a_downscaled_copy_maps_landmarks_back(model, ws, detector):
    frame = face_frames(1, width=320, height=256)[0]
    full = FrameStylizer(model, ws, detector).detect(frame)
    small = FrameStylizer(model, ws, detector, detect_max_side=160).detect(frame)
    assert len(full) == len(small) == 1
    side = crop_side(full[0].landmarks)
    assert np.abs(small[0].landmarks - full[0].landmarks).max() < 0.05 * side


# ---- `mmfs stylize clip.mp4` -----------------------------------------------------------------------------


def test_cli_stylizes_a_video_with_one_style_and_reports_json(tmp_path, clip, model):
    from typer.testing import CliRunner

    from mmfs_cli.app import app

    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", model.state_dict(), kind="stylizer", config=model.cfg)
    short = write_clip(tmp_path / "short.mp4", face_frames(8))
    runner = CliRunner()
    args = ["stylize", str(short), "-c", str(ckpt), "--seed", "7", "--device", "cpu", "--quiet", "--json"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "a.mp4")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["frames"] == 8 and report["style"]["label"] == "seed7" and report["audio"] == "copied (aac)"
    assert len(probe(tmp_path / "a.mp4")["frames"]) == 8
    # Default name under --outdir; the same seed gives the same bytes (fixed noise maps, single-threaded encode).
    result = runner.invoke(app, [*args, "--outdir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    default = tmp_path / "out" / "short_seed7.mp4"
    assert default.read_bytes() == (tmp_path / "a.mp4").read_bytes()
    # An existing output is refused (one line, exit 1) unless --overwrite.
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "a.mp4")])
    assert result.exit_code == 1 and "already exists; pass --overwrite" in result.output
    # A phone video held sideways: every frame's face is found (upright via the tag), and the tag is kept.
    phone = write_clip(tmp_path / "phone.mp4", [np.rot90(f, k=1).copy() for f in face_frames(4)], rotation=270)
    result = runner.invoke(app, ["stylize", str(phone), "-c", str(ckpt), "--seed", "7", "--quiet", "--json",
                                 "--out", str(tmp_path / "phone_out.mp4")])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["rotation"] == 270 and report["frames_with_faces"] == 4
    with VideoReader(tmp_path / "phone_out.mp4") as reader:
        assert reader.info.rotation % 360 == 270 and (reader.info.width, reader.info.height) == (W, H)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seeds", "1,2"], "a video takes one style"),
        (["--seed", "1", "--aligned"], "is for photos"),
        (["--seed", "1", "other.png"], "one video per call"),
    ],
)
def test_cli_video_usage_errors(tmp_path, clip, extra, message):
    from typer.testing import CliRunner

    from mmfs_cli.app import app

    result = CliRunner().invoke(app, ["stylize", str(clip), "-c", str(tmp_path / "x.safetensors"), *extra])
    assert result.exit_code == 2 and message in result.output


def test_cli_video_options_are_refused_for_photos(tmp_path):
    from typer.testing import CliRunner

    from mmfs_cli.app import app

    args = ["stylize", "photo.png", "-c", "x.safetensors", "--seed", "1", "--out", str(tmp_path / "o.mp4")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "names the output of a video input" in result.output
    result = CliRunner().invoke(
        app, ["stylize", "photo.png", "-c", "x.safetensors", "--seed", "1", "--hold-frames", "2"]
    )
    assert result.exit_code == 2 and "is for video inputs" in result.output


def test_cli_reads_other_containers_and_writes_mp4_by_default(tmp_path, model):
    """An MPEG-TS input (a container we can read but do not write) is a video; its default output is .mp4."""
    from typer.testing import CliRunner

    from mmfs_cli.app import app

    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", model.state_dict(), kind="stylizer", config=model.cfg)
    source = write_clip(tmp_path / "broadcast.ts", face_frames(6), fmt="mpegts")
    args = ["stylize", str(source), "-c", str(ckpt), "--seed", "3", "--device", "cpu", "--quiet", "--json"]
    result = CliRunner().invoke(app, [*args, "--outdir", str(tmp_path / "out"), "--hold-frames", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["frames"] == 6
    assert len(probe(tmp_path / "out" / "broadcast_seed3.mp4")["frames"]) == 6


def test_phone_video_with_a_rotation_tag_is_stylized_upright_and_keeps_its_tag(tmp_path, model, ws, detector):
    n = 6
    upright_frames = face_frames(n)
    stored = [np.ascontiguousarray(np.rot90(f, k=-1)) for f in upright_frames]  # a phone held sideways
    src = write_clip(tmp_path / "phone.mp4", stored, audio=None, rotation=90)
    from mmfs.faces import build_detector

    assert build_detector("dlib", rotate=False).detect(stored[0]) == []  # as stored, the face lies on its side
    out = tmp_path / "phone_styled.mp4"
    summary = stylize_video(src, out, model=model, ws=ws, detector=detector, batch_size=3, progress=False)
    assert summary.frames == n and summary.frames_with_faces == n and summary.rotation == 90
    assert "rotated 90 degrees" in summary.describe() and summary.to_dict()["rotation"] == 90
    # stored the way the source is (sideways, same size), tagged the same way, so players show it upright
    raw = probe(out)
    assert (raw["width"], raw["height"]) == (H, W)
    with VideoReader(out) as reader:
        assert reader.info.rotation == 90 and (reader.info.width, reader.info.height) == (W, H)
        got = [f.image for f in reader.frames()]
    diff = [np.abs(a.astype(int) - b.astype(int)) for a, b in zip(upright_frames, got, strict=True)]
    assert np.mean([d[40:90, 55:105].mean() for d in diff]) > 10  # the face (upright coordinates) changed
    assert np.mean([d[:12, :12].mean() for d in diff]) < 3  # a far corner did not


@pytest.mark.parametrize("suffix, tagged", [(".mp4", True), (".mov", True), (".mkv", True), (".avi", False)])
def test_writer_stores_frames_turned_back_under_the_rotation_tag(tmp_path, suffix, tagged):
    ramp = np.zeros((48, 64, 3), np.uint8)
    ramp[..., 0] = np.arange(64, dtype=np.uint8)[None, :] * 4  # left-right ramp
    ramp[..., 1] = np.arange(48, dtype=np.uint8)[:, None] * 5  # top-bottom ramp
    path = tmp_path / f"r{suffix}"
    writer = VideoWriter(path, width=64, height=48, frame_rate=Fraction(25), rotation=270)
    for i in range(3):
        writer.write(ramp, i)
    writer.close()
    assert writer.rotation == (270 if tagged else 0)
    raw = probe(path)
    assert (raw["width"], raw["height"]) == ((48, 64) if tagged else (64, 48))
    with VideoReader(path) as reader:
        assert reader.info.rotation % 360 == (270 if tagged else 0)
        first = next(reader.frames()).image
    assert first.shape == ramp.shape and np.abs(first.astype(int) - ramp.astype(int)).mean() < 4

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mmfs.data import images
from mmfs.data.images import expand_inputs, load_image, save_image, to_tensor, to_uint8
from mmfs.errors import InputError


def _rgb(h=20, w=30, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_png_round_trip_is_exact_and_tensor_conversion_inverts(tmp_path):
    array = _rgb()
    path = save_image(array, tmp_path / "a.png")
    loaded = load_image(path)
    assert loaded.dtype == np.uint8 and np.array_equal(loaded, array)
    x = to_tensor(loaded)
    assert x.shape == (3, 20, 30) and float(x.min()) >= -1 and float(x.max()) <= 1
    assert np.array_equal(to_uint8(x), array)
    assert np.array_equal(to_uint8(x[None])[0], array)


def test_a_folder_or_missing_path_given_as_a_file_is_one_line(tmp_path):
    (tmp_path / "x.png").mkdir()
    with pytest.raises(InputError, match=r"x\.png: a folder, not an image file"):
        load_image(tmp_path / "x.png")
    with pytest.raises(InputError, match=r"y\.png: no such file"):
        load_image(tmp_path / "y.png")


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"hello, not an image\n", "not an image")])
def test_empty_and_non_image_files(tmp_path, content, message):
    path = tmp_path / "x.png"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_image(path)


def test_truncated_file_is_reported_as_corrupt(tmp_path):
    path = save_image(_rgb(64, 64), tmp_path / "a.jpg")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_image(path)


def test_modes_convert_to_rgb(tmp_path):
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    assert np.array_equal(load_image(tmp_path / "g.png"), np.repeat(gray[..., None], 3, 2))

    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:8, :, 3] = 255  # top half opaque red, bottom transparent -> white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    out = load_image(tmp_path / "t.png")
    assert tuple(out[0, 0]) == (200, 0, 0) and tuple(out[15, 0]) == (255, 255, 255)

    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    red = load_image(tmp_path / "c.jpg")[8, 8].astype(int)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60

    deep = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")  # uint16 -> 16-bit grayscale PNG
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    assert np.array_equal(load_image(tmp_path / "d.png")[..., 0], np.arange(256, dtype=np.uint8).reshape(16, 16))


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((10, 20, 3), dtype=np.uint8)
    array[:, :5] = 255  # white stripe on the left of a landscape image
    img = Image.fromarray(array)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif, quality=100)
    (tmp_path / "r.jpg").write_bytes(buf.getvalue())
    upright = load_image(tmp_path / "r.jpg")
    assert upright.shape == (20, 10, 3)
    assert upright[:5].mean() > 200 and upright[-5:].mean() < 50  # stripe now on top


def test_too_small_and_too_large(tmp_path, monkeypatch):
    save_image(_rgb(4, 4), tmp_path / "s.png")
    with pytest.raises(InputError, match="too small"):
        load_image(tmp_path / "s.png")
    save_image(_rgb(100, 100), tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(InputError, match="too large"):
        load_image(tmp_path / "big.png")


def test_save_formats_and_errors(tmp_path):
    for ext in ("png", "jpg", "webp"):
        path = save_image(_rgb(), tmp_path / f"o.{ext}", quality=90)
        assert Image.open(path).size == (30, 20)
    with pytest.raises(InputError, match="unsupported output extension"):
        save_image(_rgb(), tmp_path / "o.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jpg", "o.png", "o.webp"]


def test_expand_inputs(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.png", "d/sub/a.JPG", "d/notes.txt", "d/.hidden.png", "c.webp"):
        (tmp_path / name).write_bytes(b"x")
    found = list(
        expand_inputs(
            [str(tmp_path / "d"), str(tmp_path / "*.webp"), str(tmp_path / "d" / "notes.txt"), "-"],
            stdin_lines=["  ", str(tmp_path / "c.webp")],
        )
    )
    rel = [str(p.relative_to(tmp_path)) for p in found]
    assert rel == ["d/b.png", "d/sub/a.JPG", "c.webp", "d/notes.txt", "c.webp"]


def test_written_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = save_image(_rgb(), tmp_path / "p.png")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    """A 40000 x 40000 PNG header (1.6 gigapixels) in a few bytes: refused before any pixel is decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 2, 0, 0, 0)  # 8-bit RGB
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )
    (tmp_path / "bomb.png").write_bytes(bomb)
    with pytest.raises(InputError, match=r"bomb.png: image is too large \(over 100,000,000 pixels\)"):
        load_image(tmp_path / "bomb.png")


@pytest.mark.parametrize("ext", [".bmp", ".tif", ".tga", ".ppm", ".sgi", ".pcx", ".qoi", ".webp"])
def test_lossless_formats_pil_reads_are_inputs_and_read_exactly(tmp_path, ext):
    array = _rgb(24, 32)
    path = tmp_path / f"a{ext}"
    Image.fromarray(array).save(path, **({"lossless": True} if ext == ".webp" else {}))
    assert images.is_image_path(path)
    np.testing.assert_array_equal(load_image(path), array)


def test_gif_palette_and_animated_gif_give_the_first_frame(tmp_path):
    array = _rgb(24, 32)
    palette = Image.fromarray(array).quantize(64)
    palette.save(tmp_path / "p.gif")
    np.testing.assert_array_equal(load_image(tmp_path / "p.gif"), np.asarray(palette.convert("RGB")))
    frames = [Image.new("RGB", (32, 24), colour) for colour in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(tmp_path / "anim.gif") as check:
        assert check.n_frames == 3
    got = load_image(tmp_path / "anim.gif")
    assert got.shape == (24, 32, 3) and (got == [200, 0, 0]).all()
    # transparent GIF pixels come out white, as for PNG
    see_through = Image.new("P", (16, 16), 1)
    see_through.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    see_through.save(tmp_path / "t.gif", transparency=1)
    assert (load_image(tmp_path / "t.gif") == 255).all()
    (tmp_path / "bad.gif").write_bytes(b"GIF89a" + b"\x00" * 20)
    with pytest.raises(InputError, match=r"bad\.gif: (corrupt|not an image)"):
        load_image(tmp_path / "bad.gif")


def test_formats_pil_only_identifies_are_not_taken_from_folders():
    for ext in (".mpg", ".h5", ".grib", ".wmf", ".txt", ".mp4"):
        assert not images.is_image_path(images.Path(f"x{ext}"))
    for ext in (".gif", ".GIF", ".jpeg", ".tiff", ".bmp", ".tga", ".jp2"):
        assert images.is_image_path(images.Path(f"x{ext}"))


def test_every_name_in_a_folder_is_an_input_or_counted_with_its_reason(tmp_path):
    import os

    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    (root / "named.png").mkdir()  # a folder named like a photo is walked, not skipped
    for name in ("a.png", "b.gif", "sub/c.TIF", "named.png/d.bmp", "notes.txt", ".hidden.png", "sub/clip.mp4"):
        (root / name).write_bytes(b"x")
    os.symlink(tmp_path / "gone.png", root / "missing.png")  # broken, named like a photo: an input
    os.symlink(tmp_path / "gone.txt", root / "missing.txt")  # broken, not a photo name: counted
    os.symlink(tmp_path, root / "elsewhere")  # a folder link: not followed, counted
    os.mkfifo(root / "pipe.png")
    skipped = images.SkippedFiles()
    found = [str(p.relative_to(root)) for p in expand_inputs([str(root)], skipped=skipped)]
    assert found == ["a.png", "b.gif", "missing.png", "named.png/d.bmp", "sub/c.TIF"]
    rel = {
        reason: sorted(str(images.Path(p).relative_to(root)) for p in paths) for reason, paths in skipped.paths.items()
    }
    assert rel == {
        "extension": ["notes.txt", "sub/clip.mp4"],
        "hidden": [".hidden.png"],
        "broken_link": ["missing.txt"],
        "folder_link": ["elsewhere"],
        "special_file": ["pipe.png"],
    }
    assert skipped.count == 6 and skipped.to_dict()["by_reason"]["extension"] == 2
    assert skipped.describe().startswith("skipped 6 file(s) in the input folders and globs: 2 not an image extension")
    with pytest.raises(InputError, match=r"missing\.png: broken link \(its target .*gone\.png does not exist\)"):
        load_image(root / "missing.png")
    # a glob that matches a folder and a text file counts both
    globbed = images.SkippedFiles()
    assert [p.name for p in expand_inputs([str(root / "n*")], skipped=globbed)] == []
    assert globbed.paths == {"directory": [str(root / "named.png")], "extension": [str(root / "notes.txt")]}


def test_an_unlistable_subfolder_is_counted(tmp_path, monkeypatch):
    import os

    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "b.png").write_bytes(b"x")
    (tmp_path / "a.png").write_bytes(b"x")
    real_scandir = os.scandir

    def scandir(path="."):  # what listing a folder without read permission does (the tests may run as root)
        if str(path) == str(tmp_path / "locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    skipped = images.SkippedFiles()
    assert [p.name for p in expand_inputs([str(tmp_path)], skipped=skipped)] == ["a.png"]
    assert skipped.paths == {"unreadable_folder": [str(tmp_path / "locked")]}

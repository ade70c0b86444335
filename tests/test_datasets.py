"""Image-folder datasets: scanning, resizing, corrupt files, and the resumable rank-aware sampler."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from mmfs.data.datasets import (
    ImageFolder,
    RandomDrawSampler,
    ReadAhead,
    UnpairedFolders,
    draw_indices,
    list_images,
    make_loader,
    resize_center_crop,
)
from mmfs.data.images import save_image
from mmfs.errors import InputError


def write_images(folder, n, size=(20, 16), seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        ext = (".png", ".jpg", ".webp")[i % 3]
        paths.append(save_image(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), folder / f"{i:02d}{ext}"))
    return paths


def test_folders_are_scanned_recursively_for_images_only(tmp_path):
    write_images(tmp_path / "a", 2)
    write_images(tmp_path / "a" / "sub" / "deeper", 2, seed=1)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / ".hidden.png").write_bytes(b"")
    files = list_images(tmp_path / "a")
    assert [p.relative_to(tmp_path / "a").as_posix() for p in files] == [
        "00.png",
        "01.jpg",
        "sub/deeper/00.png",
        "sub/deeper/01.jpg",
    ]


def test_empty_or_missing_folders_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(InputError, match=r"empty: no images found"):
        ImageFolder(tmp_path / "empty", 8)
    with pytest.raises(InputError, match=r"nope: no such folder"):
        ImageFolder(tmp_path / "nope", 8)
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.png").write_bytes(b"garbage" * 10)
    with pytest.raises(InputError, match=r"3 images in a row are unreadable \(first: .*0\.png\)") as info:
        ImageFolder(bad, 8)
    assert "\n" not in str(info.value)


def test_corrupt_files_are_skipped_deterministically_and_reported(tmp_path):
    paths = write_images(tmp_path / "d", 4)
    paths[1].write_bytes(paths[1].read_bytes()[:40])  # truncated
    ds = ImageFolder(tmp_path / "d", 8)
    image, bad = ds.load(1)
    assert bad == [str(paths[1])]
    good, none = ds.load(2)
    assert none == [] and torch.equal(image, good)  # replaced by the next file
    pair = UnpairedFolders({"photo": tmp_path / "d", "art": tmp_path / "d"}, 8)[(1, 0)]
    assert pair["bad"] == str(paths[1]) and pair["photo"].shape == (3, 8, 8)


def test_resize_is_pil_bicubic_on_the_short_side_then_a_center_crop():
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (20, 40, 3), dtype=np.uint8)
    out = resize_center_crop(wide, 10)
    expected = np.asarray(Image.fromarray(wide).resize((20, 10), Image.BICUBIC))[:, 5:15]
    assert out.shape == (10, 10, 3) and np.array_equal(out, expected)
    square = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert np.array_equal(
        resize_center_crop(square, 8), np.asarray(Image.fromarray(square).resize((8, 8), Image.BICUBIC))
    )
    assert resize_center_crop(square, 16) is square


def test_draws_are_a_pure_function_of_seed_and_item_and_ranks_split_each_global_batch():
    sizes = (7, 5)
    assert draw_indices(3, 10, sizes) == draw_indices(3, 10, sizes)
    first = [draw_indices(0, n, sizes) for n in range(200)]
    assert all(0 <= a < 7 and 0 <= b < 5 for a, b in first)
    assert len(set(first)) > 25  # independent draws cover the pairs
    assert [draw_indices(1, n, sizes) for n in range(20)] != first[:20]  # another seed, another order
    single = list(itertools.islice(RandomDrawSampler(sizes, seed=0, batch_size=4), 12))
    r0 = list(itertools.islice(RandomDrawSampler(sizes, seed=0, batch_size=2, rank=0, world_size=2), 6))
    r1 = list(itertools.islice(RandomDrawSampler(sizes, seed=0, batch_size=2, rank=1, world_size=2), 6))
    # two ranks x 2 images read exactly the items one rank x 4 images reads, batch by batch
    assert [r0[2 * k : 2 * k + 2] + r1[2 * k : 2 * k + 2] for k in range(3)] == [
        single[4 * k : 4 * k + 4] for k in range(3)
    ]
    resumed = list(itertools.islice(RandomDrawSampler(sizes, seed=0, batch_size=4, start=2), 4))
    assert resumed == single[8:12]


def test_loader_batches_match_with_and_without_workers(tmp_path):
    write_images(tmp_path / "p", 5)
    write_images(tmp_path / "a", 3, seed=1)
    ds = UnpairedFolders({"photo": tmp_path / "p", "art": tmp_path / "a"}, 8)
    assert ds.sizes == (5, 3)
    plain = make_loader(ds, seed=0, batch_size=2, start=1)
    workers = make_loader(ds, seed=0, batch_size=2, start=1, workers=2)
    for _ in range(3):
        a, b = next(plain), next(workers)
        assert a["photo"].shape == (2, 3, 8, 8) and a["art"].shape == (2, 3, 8, 8)
        assert torch.equal(a["photo"], b["photo"]) and torch.equal(a["art"], b["art"])
        assert a["bad"] == ["", ""]
        assert a["photo"].min() >= -1 and a["photo"].max() <= 1
    state = torch.get_rng_state()
    iter(make_loader(ds, seed=0, batch_size=2))
    assert torch.equal(state, torch.get_rng_state())  # making a loader leaves the global RNG alone


def test_read_ahead_keeps_order_raises_in_place_and_stops():
    def items():
        yield from range(5)
        raise InputError("bad folder")

    ahead = ReadAhead(items(), depth=2)
    assert [next(ahead) for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(InputError, match="bad folder"):
        next(ahead)
    assert _finishes(lambda: pytest.raises(StopIteration, next, ahead))  # exhausted after the error, no hang
    endless = ReadAhead(itertools.count())
    assert next(endless) == 0
    endless.close()  # the reader thread ends instead of waiting for a consumer forever
    assert not _read_ahead_threads()
    # closed with the queue full and the end (or an error) still to hand over: the thread ends all the same
    for items in (iter([0]), map(lambda x: 1 // x, [1, 0])):
        ahead = ReadAhead(items)
        time.sleep(0.3)  # the first item queued, the thread waiting to queue what follows
        assert _finishes(ahead.close)
        assert not _read_ahead_threads()


def _read_ahead_threads(wait: float = 2.0) -> list[threading.Thread]:
    """The read-ahead threads still alive after up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        alive = [t for t in threading.enumerate() if t.name == "mmfs-read-ahead" and t.is_alive()]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _finishes(call, seconds: float = 5.0) -> bool:
    """`call()` returns within `seconds` (run in a thread, so a hang fails the test instead of blocking it)."""
    done = threading.Event()
    threading.Thread(target=lambda: (call(), done.set()), daemon=True).start()
    return done.wait(seconds)


def test_training_folders_read_the_formats_stylize_and_align_read(tmp_path):
    from PIL import Image

    from mmfs.data.images import READABLE_EXTENSIONS

    folder = tmp_path / "mixed"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    for ext in (".gif", ".tga", ".ppm", ".jp2", ".png"):
        if ext in READABLE_EXTENSIONS:
            Image.fromarray(pixels).save(folder / f"face{ext}")
    (folder / "notes.txt").write_text("x")
    names = sorted(p.name for p in list_images(folder))
    assert names == sorted(p.name for p in folder.iterdir() if p.suffix in READABLE_EXTENSIONS)
    assert {"face.gif", "face.tga", "face.ppm", "face.png"} <= set(names)  # beyond the old 7-extension list
    dataset = ImageFolder(folder, 16)
    for k in range(len(names)):
        image, failed = dataset.load(k)
        assert failed == [] and image.shape == (3, 16, 16)  # each one decodes, none is replaced

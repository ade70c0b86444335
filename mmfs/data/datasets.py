"""Image-folder datasets for training, with resumable, seeded, rank-aware sampling.

The reference draws every training image independently and uniformly at random (photos and artworks
unpaired). We do the same, but each draw is a pure function of `(seed, item number)`: item `n`
of the run always picks the same files, whatever the number of worker processes, ranks or restarts.
So resuming at step `s` only needs the sampler to start at the first item of step `s`.

Corrupt files are skipped, not fatal: a file that fails to load is replaced by the next file of the
folder (deterministically), and its path travels with the batch (`"bad"`) so the training loop can
count and report it.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from mmfs.data.images import IMAGE_EXTENSIONS, is_image_path, load_image, to_tensor
from mmfs.errors import InputError

# Give up when this many files in a row are unreadable: the folder is not usable.
MAX_CONSECUTIVE_FAILURES = 32


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """All image files under `folder` (recursive, hidden files skipped), sorted; errors are one line."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    try:
        # The same formats stylize and align read (every extension PIL decodes here), one shared rule.
        files = sorted(p for p in folder.rglob("*") if is_image_path(p) and p.is_file())
    except OSError as exc:
        raise InputError(f"{folder}: cannot read folder ({exc.strerror or exc})") from None
    if not files:
        raise InputError(
            f"{folder}: no images found (searched recursively for every format PIL reads, e.g. {' '.join(IMAGE_EXTENSIONS)})"
        )
    return files


def resize_center_crop(array: np.ndarray, size: int) -> np.ndarray:
    """Bicubic resize of the short side to `size`, then a centred square crop (a square image is just resized)."""
    h, w = array.shape[:2]
    if (h, w) == (size, size):
        return array
    scale = size / min(h, w)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    # PIL's bicubic resize, as the reference's torchvision Resize on PIL images.
    resized = np.array(Image.fromarray(array).resize((new_w, new_h), Image.BICUBIC))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.ascontiguousarray(resized[top : top + size, left : left + size])


class ImageFolder(Dataset):
    """The images of one folder as `[3, size, size]` tensors in [-1, 1]; `load(i)` skips corrupt files.

    Args:
        folder: scanned recursively for image files.
        resolution: output side in pixels.
        check: load files from the start until one succeeds, so an all-corrupt folder fails here.
    """

    def __init__(self, folder: str | os.PathLike[str], resolution: int, *, check: bool = True) -> None:
        self.folder = Path(folder)
        self.files = list_images(folder)
        self.resolution = resolution
        if check:
            self.load(0)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> tuple[torch.Tensor, list[str]]:
        """Image `index`, or the next readable one; also returns the paths that failed on the way."""
        bad: list[str] = []
        attempts = min(len(self.files), MAX_CONSECUTIVE_FAILURES)
        for k in range(attempts):
            path = self.files[(index + k) % len(self.files)]
            try:
                array = load_image(path)
            except InputError:
                bad.append(str(path))
                continue
            return to_tensor(resize_center_crop(array, self.resolution)), bad
        raise InputError(f"{self.folder}: {len(bad)} images in a row are unreadable (first: {bad[0]})")

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.load(index)[0]


class UnpairedFolders(Dataset):
    """Several folders sampled independently: item `(i_a, i_b, ...)` -> `{name: image, ..., "bad": paths}`.

    Args:
        folders: name -> folder, e.g. `{"photo": photos_dir, "art": art_dir}`.
        resolution: output side in pixels.
    """

    def __init__(self, folders: Mapping[str, str | os.PathLike[str]], resolution: int) -> None:
        self.names = list(folders)
        self.sources = [ImageFolder(folders[name], resolution) for name in self.names]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.sources)

    def __len__(self) -> int:
        return max(self.sizes)

    def __getitem__(self, indices: Sequence[int]) -> dict[str, torch.Tensor | str]:
        item: dict[str, torch.Tensor | str] = {}
        bad: list[str] = []
        for name, source, index in zip(self.names, self.sources, indices, strict=True):
            item[name], failed = source.load(int(index))
            bad += failed
        item["bad"] = "\n".join(bad)  # strings collate into a list; the loop splits and counts them
        return item


def draw_indices(seed: int, item: int, sizes: Sequence[int]) -> tuple[int, ...]:
    """Independent uniform indices, one per source, for item number `item` of a run seeded with `seed`."""
    rng = np.random.default_rng([seed, item])
    return tuple(int(rng.integers(size)) for size in sizes)


class RandomDrawSampler(Sampler):
    """An endless stream of index tuples; rank `r` of `world_size` takes its slice of each global micro-batch.

    Global micro-batch `k` holds items `[k*W*b, (k+1)*W*b)` (W ranks, b images per rank); rank `r` reads
    `[k*W*b + r*b, k*W*b + (r+1)*b)`. Starting at micro-batch `start` is exactly resuming there.
    """

    def __init__(
        self, sizes: Sequence[int], *, seed: int, batch_size: int, start: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        self.sizes = tuple(sizes)
        self.seed, self.batch_size, self.start = seed, batch_size, start
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        k = self.start
        while True:
            first = (k * self.world_size + self.rank) * self.batch_size
            for item in range(first, first + self.batch_size):
                yield draw_indices(self.seed, item, self.sizes)
            k += 1


def make_loader(
    dataset: UnpairedFolders,
    *,
    seed: int,
    batch_size: int,
    start: int = 0,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[dict]:
    """An endless iterator of micro-batches (dicts of `[b, 3, H, W]` tensors plus `"bad"`), from micro-batch `start`."""
    sampler = RandomDrawSampler(
        dataset.sizes, seed=seed, batch_size=batch_size, start=start, rank=rank, world_size=world_size
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        # The loader's own generator: creating the iterator must not consume the global torch RNG,
        # which is part of the resumable state.
        generator=torch.Generator().manual_seed(seed),
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )
    # Worker processes read ahead by themselves; without them a thread reads the next batch during the step.
    return iter(loader) if workers else ReadAhead(iter(loader))


class ReadAhead(Iterator):
    """`items` in the same order, read ahead by a background thread: up to `depth` wait in a queue while the
    thread reads one more.

    Image decoding releases the GIL, so the next batch is read while the training step runs. An exception
    raised by `items` is raised by the consumer at the same position (and the reader is exhausted after it).
    `close()` stops the thread and waits for it (dropping the reader stops it too, without waiting).
    """

    def __init__(self, items: Iterator, depth: int = 1) -> None:
        self._ready: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(items, self._ready, self._stop),
                                        name="mmfs-read-ahead", daemon=True)  # fmt: skip
        self._thread.start()

    @staticmethod
    def _produce(items: Iterator, ready: queue.Queue, stop: threading.Event) -> None:
        # A static method: the thread must not hold the reader, or dropping the reader could never stop it.
        def put(entry: tuple) -> bool:
            # Every put gives up once the consumer has gone, so a full queue never keeps the thread alive.
            while not stop.is_set():
                try:
                    ready.put(entry, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for item in items:
                if not put((item, None)):
                    return
            put((StopIteration, None))
        except BaseException as exc:  # handed to the consumer, raised where the item would have been
            put((None, exc))

    def __next__(self):  # noqa: ANN204
        item, exc = self._ready.get()
        if exc is not None or item is StopIteration:
            self._ready.put((StopIteration, None))  # exhausted for good (the thread has ended)
            if exc is not None:
                raise exc
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the thread and wait for it (at most until the item it is reading is read)."""
        self._stop.set()
        self._thread.join()

    def __del__(self) -> None:
        self._stop.set()

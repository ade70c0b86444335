"""Image files in and out: the only place that converts between files, uint8 arrays and tensors.

Inside the core an image is always a float tensor in [-1, 1], RGB, NCHW. On disk it is whatever the
user has: any format and mode PIL reads (GIF, BMP, TIFF, ...; grayscale, palette, RGBA, CMYK, 16-bit),
possibly rotated by EXIF; of an animated or multi-page file, the first frame.
Every failure to read is an `InputError` with one line naming the file.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import EpsImagePlugin, Image, ImageFile, ImageOps, UnidentifiedImageError

from mmfs.errors import InputError
from mmfs.utils.files import atomic_path, write_failure

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")  # the common ones, for messages


def _readable_extensions() -> frozenset[str]:
    """Every extension PIL has a decoder for here: its registry minus formats it can only identify."""
    Image.init()
    unreadable = {"MPEG"}  # PIL reads an MPEG video's size, not its pictures
    if not EpsImagePlugin.gs_binary:
        unreadable.add("EPS")  # needs Ghostscript
    readable = set()
    for ext, fmt in Image.registered_extensions().items():
        factory = Image.OPEN.get(fmt, (None,))[0]
        stub = isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile)  # BUFR, GRIB, HDF5, WMF
        if factory is not None and not stub and fmt not in unreadable:
            readable.add(ext.lower())
    return frozenset(readable) | frozenset(IMAGE_EXTENSIONS)


# What a folder or glob yields as photos: GIF, BMP, TIFF, TGA, PPM, ICO, JPEG 2000, ... (the PIL build's own list).
READABLE_EXTENSIONS = _readable_extensions()
# Refuse decompression bombs well before they exhaust memory: 100 megapixels is ~300 MB as RGB,
# far more than any face photo needs.
MAX_PIXELS = 100_000_000
SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def load_image(path: str | os.PathLike[str], *, min_side: int = 8) -> np.ndarray:
    """Read an image file as an RGB uint8 array [H, W, 3], upright per its EXIF orientation."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise InputError(f"{path}: broken link (its target {os.readlink(path)} does not exist)")
    if path.is_dir():
        raise InputError(f"{path}: a folder, not an image file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_PIXELS
            try:
                with Image.open(path) as img:
                    img.load()
                    img = ImageOps.exif_transpose(img)
                    array = _to_rgb_array(img)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{path}: image is too large (over {MAX_PIXELS:,} pixels)") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise InputError(f"{path}: corrupt or truncated image ({exc})") from None
    if min(array.shape[:2]) < min_side:
        raise InputError(f"{path}: image is too small ({array.shape[1]}x{array.shape[0]}, need >= {min_side} px)")
    return array


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode to RGB uint8; transparency is composited on white, 16-bit is scaled, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        data = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or data.max() > 255 else 255.0
        gray = np.clip(np.round(data / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        data = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.round(data * (255.0 if data.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def save_image(array: np.ndarray, path: str | os.PathLike[str], *, quality: int = 95) -> Path:
    """Write an RGB uint8 array atomically; the format comes from the extension (png, jpg, webp)."""
    path = Path(path)
    fmt = SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unsupported output extension; use one of {', '.join(SAVE_FORMATS)}")
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    try:
        with atomic_path(path) as tmp:
            Image.fromarray(array).save(tmp, format=fmt, **options)
    except OSError as exc:
        raise write_failure(path, exc) from None
    return path


def to_tensor(array: np.ndarray):
    """RGB uint8 [H, W, 3] -> float32 tensor [3, H, W] in [-1, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def to_uint8(tensor) -> np.ndarray:
    """Float tensor [3, H, W] (or [B, 3, H, W]) in [-1, 1] -> uint8 [H, W, 3] (or [B, H, W, 3]), rounded."""
    x = tensor.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to("cpu").byte()
    return x.permute(*range(x.dim() - 3), -2, -1, -3).numpy()


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in READABLE_EXTENSIONS and not path.name.startswith(".")


# Why a name met in a folder or a glob is not an input; `SkippedFiles.describe` prints the text.
SKIP_REASONS = {
    "extension": "not an image extension",
    "hidden": "hidden (name starts with a dot)",
    "directory": "a folder matched by a glob",
    "folder_link": "a link to a folder (not followed)",
    "broken_link": "a broken link",
    "special_file": "not a regular file",
    "unreadable_folder": "a folder that cannot be listed",
}


class SkippedFiles:
    """The names in input folders and globs that are not taken as inputs, by reason (`SKIP_REASONS`)."""

    def __init__(self) -> None:
        self.paths: dict[str, list[str]] = {}

    def add(self, reason: str, path: Path | str) -> None:
        self.paths.setdefault(reason, []).append(str(path))

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.paths.values())

    def _by_reason(self) -> list[tuple[str, list[str]]]:
        return [(reason, self.paths[reason]) for reason in SKIP_REASONS if reason in self.paths]

    def to_dict(self) -> dict:
        """For `--json` summaries: the total, the count per reason and the paths per reason."""
        return {
            "count": self.count,
            "by_reason": {reason: len(v) for reason, v in self._by_reason()},
            "paths": {reason: list(v) for reason, v in self._by_reason()},
        }

    def describe(self) -> str:
        """One line: 'skipped 3 file(s) in the input folders and globs: 2 not an image extension, 1 a broken link'."""
        parts = ", ".join(f"{len(v)} {SKIP_REASONS[reason]}" for reason, v in self._by_reason())
        return f"skipped {self.count} file(s) in the input folders and globs: {parts}"


def _walk_folder(root: Path, skipped: SkippedFiles) -> list[Path]:
    """Image files under `root` (links to files followed, links to folders not), sorted; the rest is counted."""
    found: list[Path] = []

    def unreadable(exc: OSError) -> None:
        skipped.add("unreadable_folder", exc.filename or root)

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        base = Path(folder)
        for name in dirs:
            if (base / name).is_symlink():
                skipped.add("folder_link", base / name)
        for name in files:
            path = base / name
            if name.startswith("."):
                skipped.add("hidden", path)
            elif path.is_symlink() and not path.exists() and not is_image_path(path):
                skipped.add("broken_link", path)  # named like a photo, it is an input: an error line later
            elif path.is_symlink() and not path.exists():
                found.append(path)
            elif not path.is_file():
                skipped.add("special_file", path)
            elif not is_image_path(path):
                skipped.add("extension", path)
            else:
                found.append(path)
    return sorted(found)


def _glob(pattern: str, skipped: SkippedFiles) -> list[Path]:
    found = []
    for name in sorted(glob.glob(pattern, recursive=True)):
        path = Path(name)
        if path.is_dir():
            skipped.add("directory", path)
        elif path.is_symlink() and not path.exists() and not is_image_path(path):
            skipped.add("broken_link", path)
        elif not is_image_path(path):
            skipped.add("hidden" if path.name.startswith(".") else "extension", path)
        else:
            found.append(path)
    return found


def expand_inputs(
    inputs: Iterable[str], *, stdin_lines: Iterable[str] | None = None, skipped: SkippedFiles | None = None
) -> Iterator[Path]:
    """Expand files, folders (recursive, image extensions only) and globs; `-` reads paths from stdin.

    A plain file is yielded whatever its extension, so that a bad file given by name is reported
    rather than silently skipped; so is a broken link named like an image in a folder. Folders and globs
    yield only image-looking names, sorted; everything else they hold is counted in `skipped` by reason.
    """
    skipped = skipped if skipped is not None else SkippedFiles()
    for item in inputs:
        if item == "-":
            for line in stdin_lines or ():
                if line.strip():
                    yield Path(line.strip())
            continue
        path = Path(item)
        if path.is_dir():
            yield from _walk_folder(path, skipped)
        elif path.exists() or path.is_symlink() or not glob.has_magic(item):
            yield path
        else:
            yield from _glob(item, skipped)

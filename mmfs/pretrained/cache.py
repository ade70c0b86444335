"""Where the converted models live (`MMFS_HOME`) and what is recorded about each one.

`MMFS_HOME` (default: the per-user cache folder, e.g. `~/.cache/mmfs`) holds `models/NAME.safetensors`
with `models/NAME.json`, the record of where it came from and the sha256 of both the downloaded
original and the converted file; `downloads/` holds originals while they are fetched (and partial
downloads that a later run resumes); `originals/` those the user asked to keep.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from mmfs.errors import MMFSError

HOME_ENV = "MMFS_HOME"
MIRROR_ENV = "MMFS_MODEL_MIRROR"
OFFLINE_ENV = "MMFS_OFFLINE"


def home() -> Path:
    """`$MMFS_HOME`, else the per-user cache folder of mmfs (platformdirs: `~/.cache/mmfs` on Linux)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("mmfs", appauthor=False))


def mirror() -> str | None:
    """`$MMFS_MODEL_MIRROR`: a URL or a folder holding the published files under their own names."""
    return os.environ.get(MIRROR_ENV) or None


def offline() -> bool:
    """`MMFS_OFFLINE=1`: never contact the publishers; only the cache and `MMFS_MODEL_MIRROR` are used."""
    return os.environ.get(OFFLINE_ENV, "").lower() in ("1", "true", "yes")


def models_dir() -> Path:
    return home() / "models"


def model_path(name: str) -> Path:
    """The converted file of catalogue model `name` (it may not exist yet)."""
    return models_dir() / f"{name}.safetensors"


def downloads_dir() -> Path:
    return home() / "downloads"


def originals_dir() -> Path:
    return home() / "originals"


@dataclass(frozen=True)
class Record:
    """What is known about a cached model: its converted file and the original it was made from."""

    name: str
    sha256: str  # of the converted file, checked on every later use
    size: int
    source_file: str  # the original's file name
    source_sha256: str  # of the original, recorded at the first download; a later download must match it
    source_size: int
    source: str  # where the original came from (a URL, a mirror, or a file added by hand)
    created: str

    @staticmethod
    def now() -> str:
        return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def record_path(name: str) -> Path:
    return models_dir() / f"{name}.json"


def read_record(name: str) -> Record | None:
    """The record of `name`, or None (none yet, or unreadable: then it is as if none)."""
    path = record_path(name)
    try:
        return Record(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def write_record(record: Record) -> None:
    from mmfs.utils.files import atomic_path

    with atomic_path(record_path(record.name)) as tmp:
        tmp.write_text(json.dumps(asdict(record), indent=2) + "\n")


@contextlib.contextmanager
def locked(name: str, *, on_wait=None) -> Iterator[None]:
    """Hold the lock of model `name`: one process fetches and converts it, the others wait for it.

    `on_wait(message)` is called once when another process holds the lock. The lock is an OS file lock,
    so a process killed while holding it releases it.
    """
    from filelock import FileLock, Timeout

    folder = models_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MMFSError(
            f"cannot create the model cache {folder} ({exc.strerror}); set {HOME_ENV} to a writable folder"
        ) from None
    lock = FileLock(str(folder / f".{name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait(f"waiting for another mmfs process that is fetching {name} ...")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()

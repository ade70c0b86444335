"""Getting a published file onto this machine: from the mirror, Google Drive or a direct URL.

`MMFS_MODEL_MIRROR` comes first (a folder is read in place; a URL is downloaded). Then, unless
`MMFS_OFFLINE` is set, the publisher's sources in the catalogue's order. Downloads go through gdown,
which handles Google Drive's large-file confirmation page and resumes: a transfer that drops is
continued from where it stopped (a few retries), and a partial file left by an interrupted run
(Ctrl-C, SIGKILL, a lost connection) is picked up by the next one. Until a transfer is complete its
bytes live under a temporary `.part` name, never under the file's own name.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mmfs.catalogue import Model
from mmfs.errors import MissingWeightsError, OutputError
from mmfs.pretrained import cache

# Seconds to connect, and to wait for the next bytes, before a source counts as unreachable.
TIMEOUT = (10.0, 60.0)
# Reconnections (each resuming where the transfer stopped) before a dropping source is given up.
RETRIES = 3
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

Message = Callable[[str], None]


@dataclass(frozen=True)
class Original:
    """The published file on this machine: where, from where, and whether it is ours to delete."""

    path: Path
    source: str
    downloaded: bool


def obtain(entry: Model, *, progress: bool = True, on_message: Message | None = None) -> Original:
    """The original of `entry`: the mirror folder's copy, or a finished download in `cache.downloads_dir()`.

    Raises MissingWeightsError (one line: the model, every place tried and why, how to add it by hand)
    when no source gives it, and OutputError when the disk fills up.
    """
    tried: list[str] = []
    urls: list[str] = []
    mirror = cache.mirror()
    if mirror is not None:
        if "://" in mirror and not mirror.startswith("file://"):
            urls.append(mirror.rstrip("/") + "/" + entry.filename)
        else:
            local = Path(mirror.removeprefix("file://")).expanduser() / entry.filename
            if local.is_file():
                return Original(local, f"mirror {local}", downloaded=False)
            tried.append(f"{local} (not in the mirror)")
    if cache.offline():
        tried.append(f"the network ({cache.OFFLINE_ENV} is set)")
    else:
        urls += list(entry.sources)
    for url in urls:
        try:
            _resolvable(url)  # offline: fail at once, without gdown's retries
            if on_message is not None:
                size = f", about {entry.size_mb} MB" if entry.size_mb else ""
                on_message(f"downloading {entry.name} ({entry.filename}{size}) from {url}")
            return Original(download(url, entry.filename, progress=progress), url, downloaded=True)
        except _Unavailable as exc:
            tried.append(f"{url} ({exc})")
    raise MissingWeightsError(unavailable_message(entry, tried))


def unavailable_message(entry: Model, tried: list[str]) -> str:
    """The one line for a model that could not be fetched: what, where from, and the by-hand route."""
    by_hand = " or ".join(entry.sources + entry.manual) or "its publisher"
    return (
        f"model {entry.name!r} ({entry.filename}) is not in the cache {cache.models_dir()} and could not be fetched: "
        f"tried {'; '.join(tried) or 'nothing'}. Download {entry.filename} by hand from {by_hand}, then run: "
        f"mmfs models add {entry.name} {entry.filename}"
    )


class _Unavailable(Exception):
    """This source did not give the file (unreachable, not found, refused, dropped too often)."""


def download(url: str, filename: str, *, progress: bool = True) -> Path:
    """Download `url` to `cache.downloads_dir()/filename` (resuming a partial one); the finished file's path."""
    import gdown
    import requests
    from gdown.exceptions import DownloadError, FileURLRetrievalError

    folder = cache.downloads_dir()
    out = folder / filename

    def fetch() -> None:
        with _progress_bar(filename, progress) as bar:
            gdown.download(**_gdown_source(url), output=str(out), quiet=True, resume=True, use_cookies=False,
                           progress=bar, timeout=TIMEOUT, retries=RETRIES)  # fmt: skip

    try:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fetch()
        except DownloadError as exc:
            if "byte range" not in str(exc):
                raise
            # A server that ignores Range (any plain HTTP server) cannot continue the partial file, and
            # gdown keeps it: without this every later run would fail the same way. Start from zero, once.
            _remove_partials(folder, filename)
            fetch()
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            _remove_partials(folder, filename)  # a partial file would only keep the disk full
            raise OutputError(
                f"cannot download {filename} to {folder} ({os.strerror(exc.errno)}); free some space or set "
                f"{cache.HOME_ENV} to a folder on a larger disk"
            ) from None
        if isinstance(exc, requests.exceptions.RequestException):
            raise _Unavailable(_reason(exc)) from None
        raise OutputError(f"cannot write {out} ({exc.strerror or exc})") from None
    except (FileURLRetrievalError, DownloadError) as exc:
        raise _Unavailable(_reason(exc)) from None
    return out


def _resolvable(url: str) -> None:
    """_Unavailable unless the URL's host name resolves (no network, or no DNS: nothing to try)."""
    import socket
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    try:
        socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        raise _Unavailable(f"no network: {host} cannot be resolved") from None


def _gdown_source(url: str) -> dict[str, str]:
    """gdown's arguments for `url`: a Google Drive page becomes its file id (gdown then confirms large files)."""
    marker = "drive.google.com/file/d/"
    if marker in url:
        return {"id": url.split(marker, 1)[1].split("/", 1)[0]}
    return {"url": url}


def _reason(exc: BaseException) -> str:
    """A short why for the one-line error: the first line of gdown's / requests' message, without noise."""
    import requests

    if not isinstance(exc, requests.exceptions.RequestException) and isinstance(
        exc.__cause__, requests.exceptions.RequestException
    ):
        exc = exc.__cause__  # gdown's "failed after N retries" around the network's own error
    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = str(exc)
        if "Name or service not known" in text or "Temporary failure in name resolution" in text:
            return "no network: the host name cannot be resolved"
        if "Connection refused" in text:
            return "connection refused"
        return "connection failed" if "incomplete" not in text.lower() else "the connection dropped"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    text = " ".join(str(exc).split())
    if "incomplete" in text.lower():
        return "the connection kept dropping; the partial download is resumed next time"
    return text[:160]


def _remove_partials(folder: Path, filename: str) -> None:
    for part in folder.glob(f"{filename}*.part"):
        part.unlink(missing_ok=True)


class _progress_bar:
    """gdown's progress callback drawing a tqdm bar on stderr (only on a terminal, and not with `progress=False`)."""

    def __init__(self, filename: str, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(desc=filename, unit="B", unit_scale=True, unit_divisor=1024, disable=None if enabled else True)

    def __enter__(self) -> _progress_bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def __call__(self, done: int, total: int | None) -> None:
        if total is not None and self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

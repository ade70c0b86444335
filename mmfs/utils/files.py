"""Atomic file output: nothing half-written is ever left under a final name."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mmfs.errors import OutputError

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success it is fsynced and renamed onto `final`.

    The temporary file lives in the same folder so that the rename is atomic on POSIX. On any
    exception (including KeyboardInterrupt) the temporary file is removed and `final` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real suffix last: writers such as PIL and safetensors pick the format from it.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".partial{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def remove_partials(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that writers killed mid-write (SIGKILL, power loss) left in `folder`."""
    removed = []
    for tmp in Path(folder).glob(".*.partial*"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_failure(path: str | os.PathLike[str], exc: BaseException, what: str = "output") -> OutputError:
    """The one-line error for a failed write of `what` to `path` (an OSError, or safetensors' I/O error)."""
    code = getattr(exc, "errno", None)
    if code is None:  # safetensors (Rust) reports "... I/O error: ... (os error 28)"
        found = re.search(r"os error (\d+)", str(exc))
        code = int(found.group(1)) if found else None
    reason = os.strerror(code) if code else str(exc)
    hint = "; free some space or choose another output folder" if code in _NO_SPACE else ""
    return OutputError(f"{path}: cannot write {what} ({reason}){hint}")


def file_sha256(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """sha256 (hex) of a file's bytes, read in chunks: memory stays at one chunk whatever the file size."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()

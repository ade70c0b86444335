"""What every command shares: one-line errors with proper exit codes, stderr messages, shared options."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

# Exit codes (documented in docs/cli.md): 0 success, 1 some inputs failed or a user error,
# 2 usage error (Typer's own), 130 interrupted.
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def echo_err(message: str) -> None:
    """A message for the person at the terminal (stderr), never mixed into machine-readable stdout."""
    typer.echo(message, err=True)


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Turn user-facing errors into one line on stderr plus a non-zero exit; Ctrl-C exits 130 quietly.

    An `OptionError` (a value that does not fit) is a usage error, reported as Typer reports its own (exit 2).
    Any exception that is not an `MMFSError` is a bug and keeps its traceback.
    """
    from mmfs.errors import MMFSError, OptionError

    try:
        yield
    except OptionError as exc:
        raise typer.BadParameter(exc.message, param_hint=exc.flag) from None
    except MMFSError as exc:
        echo_err(f"error: {exc}")
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        echo_err("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def report_failures(errors: list[str], limit: int = 20) -> None:
    """The end-of-batch list of what failed (one line each, the first `limit`), so nothing scrolls away unseen."""
    if not errors:
        return
    echo_err(f"failed ({len(errors)}):")
    for error in errors[:limit]:
        echo_err(f"  {error}")
    if len(errors) > limit:
        echo_err(f"  ... and {len(errors) - limit} more (--json lists them all)")


def stdin_lines() -> list[str]:
    """Paths piped on stdin for the `-` input; empty when stdin is a terminal."""
    return [] if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read().splitlines()


def inputs_argument(help: str) -> Any:  # noqa: A002
    """The INPUTS argument of a command that reads photos (files, folders, globs): optional, many."""
    return Annotated[list[str] | None, typer.Argument(help=help, metavar="INPUTS", show_default=False)]

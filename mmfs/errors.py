"""User-facing errors.

Anything a user can cause (a bad file, a missing weight, a wrong checkpoint) raises an `MMFSError`
with a one-line message that says what is wrong and what to do. The CLI prints that line and exits
non-zero; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class MMFSError(Exception):
    """Base class of every error whose message is meant for the user."""

    exit_code = 1


class InputError(MMFSError):
    """An input file cannot be used (unreadable, corrupt, not an image, too large, no face)."""


class OutputError(MMFSError):
    """An output cannot be written (disk full, file too large, read-only, no permission): a batch stops here."""


class CheckpointError(MMFSError):
    """A checkpoint is missing, truncated, of the wrong kind, or does not fit the model."""


class MissingWeightsError(MMFSError):
    """Pretrained weights are needed but not available locally; the message says how to get them."""


class NoFaceError(InputError):
    """No face was found in an image."""


class OptionError(MMFSError, ValueError):
    """An option's value is out of its range or does not fit the others: a usage error (exit 2) naming the option.

    `field` is "" for a rule between several options (the message names them)."""

    exit_code = 2

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field, self.message = field, message

    @property
    def flag(self) -> str | None:
        """The option as a command line spells it: `r1_every` -> `--r1-every` (None for a rule between options)."""
        return "--" + self.field.replace("_", "-") if self.field else None

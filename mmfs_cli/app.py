"""The root `mmfs` command: registers every sub-command module.

Each command module exposes `register(app)`. Modules import torch and the rest only inside their
command bodies, so building this app (and `mmfs --help`) does not import torch.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer

app = typer.Typer(
    name="mmfs",
    help="Artistic face stylization with a StyleGAN2 generative prior (MMFS): train, stylize, adapt, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(asked: bool) -> None:
    if asked:
        from mmfs.utils.environment import describe_environment

        typer.echo("\n".join(describe_environment()))
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print mmfs's and torch's versions and the device commands would use (CPU capability or GPU), then exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Artistic face stylization with a StyleGAN2 generative prior (MMFS): train, stylize, adapt, evaluate."""


# Order is the order of `mmfs --help`: the user's journey from weights to results.
COMMAND_MODULES = ("models", "convert", "train", "align", "stylize", "adapt", "evaluate", "demo", "web", "info")

for _name in COMMAND_MODULES:
    importlib.import_module(f"mmfs_cli.{_name}").register(app)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ARG001
    """Warnings reach the user as `warning: ...` lines on stderr, like the errors, not as source excerpts."""
    return f"warning: {message}\n"


def main() -> None:
    import warnings

    warnings.formatwarning = _one_line_warning
    if not {"--help", "-h", "--version"} & set(sys.argv[1:]):  # only a command that computes needs it
        from mmfs.utils.openmp import choose_wait_policy

        choose_wait_policy()  # before any command imports torch
    app()


if __name__ == "__main__":
    main()

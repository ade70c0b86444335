"""`mmfs models`: the published models by name (`mmfs.catalogue`), and the cache they are converted into.

    mmfs models list                 # name, kind, size, licence, cached or not
    mmfs models download mmfs        # fetch, check and convert now (else: on first use)
    mmfs models add mmfs phase3_pretrain_10000.pth    # a file fetched by hand (say from Baidu)

The cache is `$MMFS_HOME` (default: the per-user cache folder); `$MMFS_MODEL_MIRROR` (a URL or a folder
holding the published file names) is tried before the publishers' links. docs/models.md has the details.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mmfs_cli.common import echo_err, guarded

models_app = typer.Typer(
    help="The published models by name: list, download, path, add, remove (fetched on first use otherwise).\n\n"
    "Example: mmfs models list",
    no_args_is_help=True,
)

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
Names = Annotated[list[str] | None, typer.Argument(help="Model names (see `mmfs models list`).", show_default=False)]


@models_app.command("list")
def list_models(as_json: AsJson = False) -> None:
    """Every published model mmfs knows: name, kind, download size, licence, and whether it is cached.

    Example: mmfs models list
    """
    with guarded():
        from mmfs.catalogue import KINDS
        from mmfs.pretrained import status
        from mmfs.pretrained.cache import models_dir

        rows = status()
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        typer.echo(f"{'NAME':15} {'KIND':38} {'SIZE':>8}  {'CACHED':6}  LICENCE")
        for row in rows:
            size = f"{row['size_mb']} MB" if row["size_mb"] else "?"
            licence = row["licence"].split(" (")[0].split(";")[0]
            cached = "yes" if row["cached"] else "no"
            typer.echo(f"{row['name']:15} {KINDS[row['kind']]:38} {size:>8}  {cached:6}  {licence}")
        echo_err(f"cache: {models_dir()} (set MMFS_HOME to move it); details: docs/models.md")


@models_app.command("download")
def download(
    names: Names = None,
    all_models: Annotated[bool, typer.Option("--all", help="Every model of the catalogue.")] = False,
    keep_original: Annotated[
        bool, typer.Option("--keep-original", help="Keep the downloaded original file (in $MMFS_HOME/originals).")
    ] = False,
) -> None:
    """Fetch, check and convert models now (otherwise the first command that names one does); prints each path.

    Example: mmfs models download mmfs pop-art
    """
    with guarded():
        from mmfs.catalogue import MODELS
        from mmfs.pretrained import model_file
        from mmfs.pretrained.store import entry

        chosen = list(MODELS) if all_models else list(names or ())
        if not chosen:
            raise typer.BadParameter("name the models to download, or pass --all")
        for name in chosen:
            entry(name)  # every name is checked before the first download
        for name in chosen:
            typer.echo(str(model_file(name, keep_original=keep_original)))


@models_app.command("path")
def path(name: Annotated[str, typer.Argument(help="A model name.")]) -> None:
    """Print the cached file of a model (exit 1 when it is not cached: `mmfs models download NAME`).

    Example: mmfs models path mmfs
    """
    with guarded():
        from mmfs.errors import MissingWeightsError
        from mmfs.pretrained.cache import model_path, read_record
        from mmfs.pretrained.store import entry

        entry(name)
        target = model_path(name)
        if not target.is_file() or read_record(name) is None:
            raise MissingWeightsError(f"model {name!r} is not in the cache; fetch it with: mmfs models download {name}")
        typer.echo(str(target))


@models_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The model name the file is (see `mmfs models list`).")],
    file: Annotated[Path, typer.Argument(help="The published file, downloaded by hand.")],
) -> None:
    """Register a file fetched by hand (from Baidu, or a colleague): checked and converted as a download is.

    The file itself is left where it is. Example: mmfs models add mmfs phase3_pretrain_10000.pth
    """
    with guarded():
        from mmfs.pretrained import add as add_model

        typer.echo(str(add_model(name, file)))


@models_app.command("remove")
def remove(names: Names = None) -> None:
    """Delete models from the cache (converted file, record, kept original, partial downloads).

    Example: mmfs models remove pop-art
    """
    with guarded():
        from mmfs.pretrained import remove as remove_model
        from mmfs.pretrained.store import entry

        if not names:
            raise typer.BadParameter("name the models to remove")
        for name in names:
            entry(name)
        for name in names:
            removed = remove_model(name)
            echo_err(f"{name}: removed {len(removed)} file(s)" if removed else f"{name}: not in the cache")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")

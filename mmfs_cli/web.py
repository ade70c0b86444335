"""`mmfs web`: a local page to try styles on your own photos (mmfs.web; needs the `web` extra, Gradio).

The options are fields of `mmfs.config.web.WebOptions`; MODELS are the .safetensors files to offer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmfs.config.web import WebOptions
from mmfs_cli.common import echo_err, guarded
from mmfs_cli.options import Group, command

Models = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Stylizer .safetensors files to offer in the page (besides the published models, by name).",
        metavar="MODELS",
        show_default=False,
    ),
]


@command(options=Group(WebOptions))
def web(models: Models = None, *, options: WebOptions) -> None:
    """Serve a page to stylize photos, adapt styles and stylize videos in a browser, on the same core as the commands.

    Listens on 127.0.0.1:7860 (this machine only) unless --host / --port say otherwise; no public link
    unless --share. One job runs at a time; the page shows each waiting job's place in the queue.
    Needs the `web` extra: pip install 'mmfs[web]'.

    Example: mmfs web --demo
    Example: mmfs web model.safetensors my-style.safetensors --port 8080
    """
    with guarded():
        import importlib.util

        from mmfs.errors import MissingWeightsError

        if importlib.util.find_spec("gradio") is None:
            raise MissingWeightsError("`mmfs web` needs Gradio: pip install 'mmfs[web]'")
        from mmfs.web.serve import serve

        running = serve(options, list(models or ()))
        echo_err(f"serving {running.url} (Ctrl-C stops)")
    running.wait()
    echo_err("stopped")


def register(app: typer.Typer) -> None:
    app.command("web")(web)

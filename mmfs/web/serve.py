"""`mmfs web`: gather the models, examples and adapt recipe, then serve the page on this machine.

Gradio is told to stay offline (no analytics, no version check, no share link unless asked, no
server-side rendering process, system fonts), so the page starts in seconds without a network.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmfs.config.web import WebOptions
from mmfs.errors import MMFSError, OutputError
from mmfs.web.models import DEMO_MODEL, ModelList, model_list, resolution

EXAMPLE_FACES = 6  # the demo's held-out faces offered as examples (the contact sheet's columns)
# Small models' outputs (64 px for the demo's) are shown filling their boxes, pixel for pixel, not as stamps.
PAGE_CSS = """
#photo img, #result img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
#gallery img { image-rendering: pixelated; }
"""
ADAPT_FACES = 64  # synthetic photos the demo's Adapt tab adapts on when no demo output is there


@dataclass
class Running:
    """A page being served: its URL, its Gradio Blocks, and the work folder (deleted on `close` if temporary)."""

    url: str
    page: Any
    workdir: Path
    temporary: bool

    def wait(self) -> None:
        """Serve until Ctrl-C (or SIGTERM); then stop and clean up."""
        import signal
        import time

        def interrupt(*_: Any) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, interrupt)
        try:
            while self.page.is_running:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.close()

    def close(self) -> None:
        self.page.close()
        if self.temporary:
            shutil.rmtree(self.workdir, ignore_errors=True)


def offline_gradio(workdir: Path) -> None:
    """Environment for Gradio before it is imported: no analytics or version check, uploads under `workdir`."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "uploads")


def serve(options: WebOptions, files: list[Path] = ()) -> Running:
    """Start the page in a background thread; returns at once (`Running.wait()` serves until Ctrl-C)."""
    workdir, temporary = _workdir(options.workdir)
    try:
        models = model_list(list(files), demo=options.demo, demo_dir=options.demo_dir)
        offline_gradio(workdir)
        from mmfs.web.page import Server, build_page

        server = Server(models, _settings(options, workdir), _recipe(options, models, workdir),
                        _identity(options), _examples(options, models, workdir), max_frames=options.max_frames)  # fmt: skip
        page = build_page(server)
        page.queue(default_concurrency_limit=1)
        _, url, _ = _launch(page, options, workdir)
    except BaseException:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    return Running(url, page, workdir, temporary)


def _launch(page: Any, options: WebOptions, workdir: Path) -> tuple:
    import gradio as gr

    system = ["ui-sans-serif", "system-ui", "sans-serif"]  # the default theme would fetch web fonts
    try:
        return page.launch(
            server_name=options.host, server_port=options.port, share=options.share, prevent_thread_lock=True,
            max_file_size=int(options.max_upload_mb * 1024 * 1024), allowed_paths=[str(workdir)], ssr_mode=False,
            mcp_server=False, pwa=False, enable_monitoring=False, quiet=True,
            theme=gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"]), css=PAGE_CSS,
        )  # fmt: skip
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise MMFSError(f"cannot listen on {options.host}:{options.port} ({exc}); choose another --port") from None


def _workdir(given: Path | None) -> tuple[Path, bool]:
    if given is not None:
        try:
            given.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file of that name, a read-only disk, no permission: --workdir's fault
            raise OutputError(
                f"cannot use {given} as the work folder ({exc.strerror or exc}); pass another --workdir"
            ) from None
        return given.resolve(), False
    return Path(tempfile.mkdtemp(prefix="mmfs-web-")), True


def _settings(options: WebOptions, workdir: Path):
    from mmfs.web.jobs import Settings

    noise = options.noise or ("zero" if options.demo else "seeded")  # the demo stylizes without noise
    return Settings(workdir, options.device, noise)


def _identity(options: WebOptions):
    from mmfs.web.jobs import Identity

    return Identity(options.arcface)


def _recipe(options: WebOptions, models: ModelList, workdir: Path):
    """The demo's adapt recipe on the demo's photos with --demo, else the reference's on --adapt-photos."""
    from mmfs.web.jobs import AdaptRecipe

    if not options.demo:
        return AdaptRecipe(options.adapt_photos, options.dino)
    if options.adapt_photos is not None:
        return AdaptRecipe.demo(options.adapt_photos)
    if (options.demo_dir / "data" / "photos").is_dir():
        return AdaptRecipe.demo(options.demo_dir / "data" / "photos")
    size = _resolution(models)

    def make_photos(folder: Path) -> None:
        from mmfs.demo.synthetic import make_dataset

        # The first of the demo's own training photos (its seed), so the page adapts on what the demo did.
        made = make_dataset(folder.parent / ".making", n_photos=ADAPT_FACES, n_art_per_style=0, size=size, seed=0)
        made["photos"].rename(folder)  # whole or not at all

    return AdaptRecipe.demo(workdir / "adapt-photos", make_photos)


def _examples(options: WebOptions, models: ModelList, workdir: Path):
    """The astronaut (a real photo) and, with --demo, the demo's held-out synthetic faces and style references."""
    import numpy as np
    from skimage import data as skdata

    from mmfs.data.images import save_image
    from mmfs.web.page import Examples

    examples = Examples()
    if options.demo:
        heldout, refs = options.demo_dir / "data" / "heldout" / "photos", options.demo_dir / "data" / "refs" / "art"
        if not heldout.is_dir() or not refs.is_dir():
            from mmfs.demo.synthetic import make_dataset

            # The seeds `mmfs demo` draws its held-out faces and references from (mmfs.demo.run._make_data).
            size, root = _resolution(models), workdir / "examples"
            heldout = make_dataset(root / "heldout", n_photos=EXAMPLE_FACES, n_art_per_style=0, size=size,
                                   seed=1000)["photos"]  # fmt: skip
            refs = make_dataset(root / "refs", n_photos=0, n_art_per_style=1, size=size, seed=2000)["art"]
        examples.photos = [(p, True) for p in sorted(heldout.iterdir())[:EXAMPLE_FACES]]
        examples.references = sorted(next(d.iterdir()) for d in sorted(refs.iterdir()) if d.is_dir())
    astronaut = save_image(np.ascontiguousarray(skdata.astronaut()), workdir / "examples" / "astronaut.png")
    examples.photos.append((astronaut, False))
    return examples


def _resolution(models: ModelList) -> int:
    """The side of the demo's faces: its Stylizer's resolution (with --demo, the list has a "demo")."""
    return resolution(models.get(DEMO_MODEL).checkpoint)

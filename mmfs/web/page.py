"""The `mmfs web` page (Gradio): Stylize, Adapt and Video tabs over `mmfs.web.jobs`.

The page only collects values and shows results: every click becomes a call into `mmfs.web.jobs`,
which builds the same request objects as the command line. Generator work (stylize, adapt, video) shares
one queue slot, so one job runs at a time and Gradio shows every waiting visitor their place in the queue.
A visitor's mistake (not an image, a decompression bomb, no face, an upload over the limit) is a message
in the page; the server keeps serving.
"""

from __future__ import annotations

import contextlib
import functools
import random
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from mmfs.errors import MMFSError
from mmfs.web.jobs import (
    GRID_SEEDS,
    STYLE_KINDS,
    AdaptRecipe,
    Identity,
    Settings,
    StyleChoice,
    adapt_style,
    stylize_photo,
    stylize_video,
)
from mmfs.web.models import ModelList

GENERATOR = "generator"  # the one concurrency slot every job that runs the networks shares
SEED_SLIDER_MAX = 9999  # the seed slider's range (Gradio refuses values outside it)


@dataclass
class Examples:
    """Files the page offers as examples: photos (each with whether it is an aligned crop) and style references."""

    photos: list[tuple[Path, bool]] = field(default_factory=list)
    references: list[Path] = field(default_factory=list)


class RunningAdapts:
    """The adapt each visitor (browser session) has running, and whether they asked to cancel it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, threading.Event] = {}

    @contextlib.contextmanager
    def running(self, session: str) -> Iterator[threading.Event]:
        """While an adapt of `session` runs: its cancel flag."""
        flag = threading.Event()
        with self._lock:
            self._running[session] = flag
        try:
            yield flag
        finally:
            with self._lock:
                self._running.pop(session, None)

    def cancel(self, session: str) -> bool:
        """Ask the running adapt of `session` to stop; False when it has none running."""
        with self._lock:
            flag = self._running.get(session)
        if flag is not None:
            flag.set()
        return flag is not None


@dataclass
class Server:
    """What the page serves: the model list, the job settings, the adapt recipe and the examples."""

    models: ModelList
    settings: Settings
    recipe: AdaptRecipe
    identity: Identity
    examples: Examples = field(default_factory=Examples)
    max_frames: int = 300
    title: str = "mmfs: artistic face stylization"
    adapts: RunningAdapts = field(default_factory=RunningAdapts)


def photo_input(**kwargs: Any) -> gr.Image:
    """An image upload handed to mmfs's own reader as the uploaded file, unread.

    gr.Image opens every upload with PIL before the handler runs, so a file that is not an image, or a
    decompression bomb, would fail inside Gradio with a bare "error"; mmfs's reader names both in one line.
    (Set on the instance: a subclass of a Gradio component makes Gradio write a stub file next to this one.)
    """
    image = gr.Image(type="filepath", **kwargs)
    decode = image.preprocess

    def preprocess(payload: Any) -> Any:
        if payload is None or str(getattr(payload, "url", None) or "").startswith("data:"):
            return decode(payload)  # a webcam frame sent inline: Gradio decodes it
        return str(payload.path)

    image.preprocess = preprocess
    return image


def shown(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a handler; a user's mistake (`MMFSError`) becomes a message in the page, a bug one too (and a traceback)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except MMFSError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception as exc:  # noqa: BLE001 - a bug: the page says so, the server keeps serving
            traceback.print_exc(file=sys.stderr)
            raise gr.Error(f"internal error: {type(exc).__name__}: {exc}", print_exception=False) from None

    return run


def build_page(server: Server) -> gr.Blocks:
    """The Blocks of the page (not launched)."""
    names = server.models.names()
    with gr.Blocks(title=server.title, analytics_enabled=False) as page:
        gr.Markdown(f"## {server.title}\nUpload a face photo, pick a model and a style, and press **Stylize**.")
        with gr.Tab("Stylize"):
            stylize_tab = _stylize_tab(server, names)
        with gr.Tab("Adapt"):
            adapt_tab = _adapt_tab(server, names)
        with gr.Tab("Video"):
            video_tab = _video_tab(server, names)
        dropdowns = [stylize_tab["model"], adapt_tab["model"], video_tab["model"]]

        def refresh() -> list[Any]:
            return [gr.Dropdown(choices=server.models.names())] * len(dropdowns)

        # An adapted style joins every tab's list; a page opened later lists it too.
        adapt_tab["adapted"].success(refresh, None, dropdowns, queue=False, api_visibility="private")
        page.load(refresh, None, dropdowns, queue=False, api_visibility="private")
    return page


def _model_dropdown(names: list[str], label: str, elem_id: str) -> gr.Dropdown:
    # Adapted styles join the list while the server runs, so the name is checked against the live list
    # (`ModelList.get`), not the one Gradio saw when the page was built.
    return gr.Dropdown(names, value=names[0] if names else None, label=label, elem_id=elem_id, allow_custom_value=True)


def _style_inputs(prefix: str, with_reference: bool = True) -> dict[str, Any]:
    """Seed (slider + random), text prompt, reference image: the three ways to give a style."""
    kinds = list(STYLE_KINDS) if with_reference else [k for k in STYLE_KINDS if k != "reference"]
    kind = gr.Radio(kinds, value=kinds[0], label="Style", elem_id=f"{prefix}-style-kind")
    with gr.Row():
        seed = gr.Slider(0, SEED_SLIDER_MAX, value=0, step=1, label="Seed", elem_id=f"{prefix}-seed", scale=4)
        lucky = gr.Button("Random seed", elem_id=f"{prefix}-random", scale=1)
    text = gr.Textbox(label="Text prompt (needs a model with a CLIP mapper)", placeholder="pop art", visible=False,
                      elem_id=f"{prefix}-text")  # fmt: skip
    ref = photo_input(sources=["upload"], label="Style reference image", visible=False,
                     elem_id=f"{prefix}-ref", height=200)  # fmt: skip
    lucky.click(lambda: random.randint(0, SEED_SLIDER_MAX), None, seed, queue=False, api_visibility="private")
    kind.change(
        lambda k: [gr.Slider(visible=k == "seed"), gr.Button(visible=k == "seed"), gr.Textbox(visible=k == "text"),
                   gr.Image(visible=k == "reference")],
        kind, [seed, lucky, text, ref], queue=False, api_visibility="private",
    )  # fmt: skip
    return {"kind": kind, "seed": seed, "text": text, "ref": ref}


def _choice(kind: str, seed: float, text: str, ref: str | None) -> StyleChoice:
    return StyleChoice(kind or "seed", int(seed or 0), text or "", Path(ref) if ref else None)


def _stylize_tab(server: Server, names: list[str]) -> dict[str, Any]:
    with gr.Row():
        with gr.Column():
            photo = photo_input(sources=["upload", "webcam"], label="Photo", elem_id="photo",
                               height=320)  # fmt: skip
            aligned = gr.Checkbox(False, label="The photo is an FFHQ-aligned face crop (skip face detection)",
                                  elem_id="aligned")  # fmt: skip
        with gr.Column():
            result = gr.Image(label="Stylized", type="filepath", format="png", interactive=False, elem_id="result",
                              height=320, buttons=["download", "fullscreen"])  # fmt: skip
            info = gr.Markdown(elem_id="stylize-info")
    with gr.Row():
        with gr.Column():
            model = _model_dropdown(names, label="Model", elem_id="model")
            style = _style_inputs("stylize")
            paste = gr.Checkbox(True, label="Paste the stylized faces back into the photo (off: one crop per face)",
                                elem_id="paste-back")  # fmt: skip
        with gr.Column():
            with gr.Row():
                go = gr.Button("Stylize", variant="primary", elem_id="stylize")
                grid_go = gr.Button(f"Grid of {GRID_SEEDS} seeds", elem_id="grid")
            gallery = gr.Gallery(label="All outputs (every face; the seed grid)", columns=4, height=300, preview=False,
                                 elem_id="gallery", format="png")  # fmt: skip
            files = gr.File(label="Download", file_count="multiple", interactive=False, elem_id="downloads")
    if server.examples.photos:
        gr.Examples([[str(p), a] for p, a in server.examples.photos], [photo, aligned], label="Example photos")
    if server.examples.references:
        gr.Examples([[str(p), "reference"] for p in server.examples.references], [style["ref"], style["kind"]],
                    label="Example style references")  # fmt: skip

    @shown
    def run(photo_path, is_aligned, model_name, kind, seed, text, ref, paste_back, grid=False):
        choice = _choice(kind, seed, text, ref)
        if grid and choice.kind != "seed":
            raise gr.Error("the grid shows seeds: choose the seed style")
        done = stylize_photo(server.settings, server.models.get(model_name), Path(photo_path) if photo_path else None,
                             choice, paste_back=bool(paste_back), aligned=bool(is_aligned), grid=grid,
                             identity=server.identity)  # fmt: skip
        first = str(done.outputs[0][0])
        lines = [f"{done.faces} face(s); {len(done.outputs)} output(s)"]
        if done.distances is not None:
            values = ", ".join(f"{d:.3f}" for d in done.distances)
            lines.append(f"identity distance ({server.identity.name}, lower keeps more of the person): {values}")
        elif server.identity.unavailable and not grid:
            lines.append(f"identity distance: not available ({server.identity.unavailable})")
        gallery_items = [(str(p), caption) for p, caption in done.outputs]
        return first, "\n\n".join(lines), gallery_items, [str(p) for p, _ in done.outputs]

    inputs = [photo, aligned, model, style["kind"], style["seed"], style["text"], style["ref"], paste]
    outputs = [result, info, gallery, files]
    go.click(run, inputs, outputs, api_name="stylize", concurrency_id=GENERATOR, concurrency_limit=1)
    grid_go.click(functools.partial(run, grid=True), inputs, outputs, api_name="seed_grid", concurrency_id=GENERATOR,
                  concurrency_limit=1)  # fmt: skip
    return {"model": model}


def _adapt_tab(server: Server, names: list[str]) -> dict[str, Any]:
    gr.Markdown(
        "Adapt a model's decoder to a text prompt or a reference image (`mmfs adapt`). The adapted style then"
        " appears in the model lists of every tab."
        + ("" if server.recipe.photos else "\n\n**This server was started without --adapt-photos: adapting is off.**")
    )
    model = _model_dropdown(names, label="Base model (with a CLIP mapper)",
                        elem_id="adapt-model")  # fmt: skip
    kind = gr.Radio(["text", "reference"], value="text", label="Adapt to", elem_id="adapt-kind")
    text = gr.Textbox(label="Text prompt", placeholder="pop art", elem_id="adapt-text")
    ref = photo_input(sources=["upload"], label="Style reference image", visible=False,
                     elem_id="adapt-ref", height=200)  # fmt: skip
    kind.change(lambda k: [gr.Textbox(visible=k == "text"), gr.Image(visible=k == "reference")], kind, [text, ref],
                queue=False, api_visibility="private")  # fmt: skip
    steps = gr.Slider(1, 1000, value=server.recipe.steps, step=1, label="Steps", elem_id="adapt-steps")
    with gr.Row():
        go = gr.Button("Adapt", variant="primary", elem_id="adapt")
        stop = gr.Button("Cancel", variant="stop", elem_id="adapt-cancel")
    status = gr.Markdown(elem_id="adapt-status")
    new_model = gr.Textbox(label="New model", interactive=False, elem_id="adapt-new-model")

    @shown
    def run(model_name, style_kind, prompt, ref_path, n_steps, request: gr.Request, progress=gr.Progress()):
        choice = StyleChoice(style_kind, text=prompt or "", ref=Path(ref_path) if ref_path else None)
        with server.adapts.running(request.session_hash or "") as cancelled:

            def on_step(step: int, total: int) -> None:
                if cancelled.is_set():
                    raise MMFSError(f"adapting cancelled at step {step} of {total}; no model was written")
                progress((step, total), desc="adapting", unit="steps")

            entry = adapt_style(server.settings, server.models.get(model_name), choice, server.recipe,
                                steps=int(n_steps), on_step=on_step)  # fmt: skip
        server.models.add(entry)
        return f"adapted in {int(n_steps)} steps: **{entry.name}** is now in the model lists", entry.name

    def cancel(request: gr.Request) -> str:
        if server.adapts.cancel(request.session_hash or ""):
            return "cancelling..."
        return "nothing to cancel: no adapt of yours is running (one still waiting in the queue can be cancelled once it starts)"

    adapted = go.click(run, [model, kind, text, ref, steps], [status, new_model], api_name="adapt",
                    concurrency_id=GENERATOR, concurrency_limit=1)  # fmt: skip
    # Not queued: a cancel must get through while the adapt holds the queue's slot.
    stop.click(cancel, None, status, queue=False, api_name="cancel_adapt")
    return {"model": model, "adapted": adapted}


def _video_tab(server: Server, names: list[str]) -> dict[str, Any]:
    gr.Markdown("Every frame is detected, stylized with one style and pasted back; the sound is kept.")
    with gr.Row():
        with gr.Column():
            video = gr.Video(sources=["upload"], label="Video", elem_id="video-in", height=320)
            model = _model_dropdown(names, label="Model", elem_id="video-model")
            style = _style_inputs("video")
            frames = gr.Slider(1, server.max_frames, value=min(60, server.max_frames), step=1,
                               label="Stylize at most this many frames (from the start)", elem_id="video-frames")  # fmt: skip
            go = gr.Button("Stylize video", variant="primary", elem_id="video-go")
        with gr.Column():
            out = gr.Video(label="Stylized video", interactive=False, elem_id="video-out", height=320)
            info = gr.Markdown(elem_id="video-info")

    @shown
    def run(video_path, model_name, kind, seed, text, ref, max_frames, progress=gr.Progress(track_tqdm=True)):
        path, summary = stylize_video(server.settings, server.models.get(model_name),
                                      Path(video_path) if video_path else None, _choice(kind, seed, text, ref),
                                      int(max_frames))  # fmt: skip
        return str(path), summary

    go.click(run, [video, model, style["kind"], style["seed"], style["text"], style["ref"], frames], [out, info],
             api_name="stylize_video", concurrency_id=GENERATOR, concurrency_limit=1)  # fmt: skip
    return {"model": model}

"""`mmfs web`'s options, declared once (the page itself: `mmfs.web`).

Torch-free and Gradio-free: the CLI reads these declarations for --help.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmfs.config.options import Options, option
from mmfs.config.stylize import NOISE_MODES
from mmfs.config.train import DINO_HELP


@dataclass(frozen=True)
class WebOptions(Options):
    """Where the page listens, which models it serves, and the limits on what a visitor may send."""

    host: str = option("127.0.0.1", "Address to listen on (127.0.0.1: this machine only).")
    port: int = option(7860, "Port to listen on.", min=1, max=65535)
    share: bool = option(False, "Also ask Gradio for a public share link (off by default: the page stays local).")
    demo: bool = option(False, "Serve the demo's models, with the demo's synthetic faces as examples: the models of"
                        " --demo-dir when it holds a `mmfs demo` output, else the tiny Stylizer shipped with mmfs"
                        " (offline, no download).", flags="--demo")  # fmt: skip
    demo_dir: Path = option(Path("demo_out"), "With --demo: a `mmfs demo` output folder to reuse when it exists.")
    adapt_photos: Path | None = option(None, "Folder of FFHQ-aligned face photos the Adapt tab adapts on (with"
                                       " --demo: synthetic faces).", path=True, show_default=False)  # fmt: skip
    dino: str = option("dino_vitb8", "For the Adapt tab: " + DINO_HELP + " (with --demo: tiny)")
    noise: str | None = option(None, "Noise of the styled convs, as `mmfs stylize --noise` (default: seeded; with"
                               " --demo: zero, as the demo stylizes).", choices=NOISE_MODES, show_default=False)  # fmt: skip
    arcface: Path | None = option(None, "ArcFace ONNX file for the identity distance (default: dlib's offline"
                                  " descriptor, when installed).", path=True, show_default=False)  # fmt: skip
    max_upload_mb: float = option(20.0, "Largest upload accepted, in MB (photos, references and videos).", min=0.01)
    max_frames: int = option(300, "Most video frames a visitor may ask for.", min=1)
    workdir: Path | None = option(None, "Folder for adapted models and results (default: a temporary folder, deleted"
                                  " on exit).", path=True, show_default=False)  # fmt: skip
    device: str = option("auto", "auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")

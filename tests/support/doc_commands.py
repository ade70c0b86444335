"""The documented command lines as the real-size tier runs them (tests/test_realsize.py, benchmarks/realsize_commands.py).

Every command line in README.md and docs/*.md that names a public weight file (a `--*-weights` flag, an
upstream `.pt` / `.pth` / `.bin` / `.onnx` file, a published model's name after `-c`, `--prior` or
`--init`, or an `mmfs models` line) is read from the docs, in the order the docs give,
after docs/cli.md's "From nothing to a stylized photo", which comes first and whole. Only two things
change: file names become the stand-ins (`tests/support/standins.py`) and the tier's own inputs, and each
training or evaluation gets a budget of one step (`--steps 1 --batch-size 1`, `evaluate --n 8`).
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

from mmfs.catalogue import MODELS

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
QUICK_START = (REPO / "docs" / "cli.md", "## From nothing to a stylized photo")

# A public weight file as the docs name it (the downloaded file, not one mmfs wrote).
_WEIGHT_FILE = re.compile(r"[\w.~/-]+\.(?:pt|pth|bin|onnx)\b|--\w+-weights\b")
# A published model by name (`mmfs.catalogue`): the tier serves it from the stand-ins (MMFS_MODEL_MIRROR).
_MODEL_NAME = re.compile(r"(?:^mmfs models |(?:-c|--checkpoint|--prior|--init) (?:" + "|".join(
    re.escape(name) for name in MODELS) + r")(?:\s|$))")  # fmt: skip
# Doc file name -> stand-in file (`tests/support/standins.py`: `STANDINS`).
STANDIN_FOR = {
    "stylegan2-ffhq-config-f.pt": "stylegan2-ffhq-config-f.pt",
    "phase2_pretrain_90000.pth": "phase2_pretrain_90000.pth",
    "phase3_pretrain_10000.pth": "phase3_pretrain_10000.pth",
    "example_ref01.pth": "example_ref01.pth",
    "open_clip_pytorch_model.bin": "open_clip_pytorch_model.bin",
    "dino_vitbase8_pretrain.pth": "dino_vitbase8_pretrain.pth",
    "dino_vitb8.safetensors": "model.safetensors",  # timm's file, saved under a telling name
    "pt_inception-2015-12-05-6726825d.pth": "weights-inception-2015-12-05-6726825d.pth",  # the same state dict
    "weights-inception-2015-12-05-6726825d.pth": "weights-inception-2015-12-05-6726825d.pth",
    "w600k_r50.onnx": "w600k_r50.onnx",
    "alexnet-owt-7be5be79.pth": "alexnet-owt-7be5be79.pth",
}
# Checkpoints the docs' examples name generically -> what the quick start made.
MADE_BY_QUICK_START = {
    "mapper.safetensors": "runs/00002-train-mapper/final.safetensors",
    "final.safetensors": "runs/00001-finetune/final.safetensors",
}
# Lines the tier cannot run yet: insightface's SCRFD face detector (det_10g.onnx) has no stand-in.
NOT_IN_TIER = ("mmfs align photos/ --outdir aligned --detector insightface",)
TRAINING = ("pretrain-encoder", "finetune", "train-mapper")
# The tier's budget: one step of everything (the options are set, whatever the docs' values).
BUDGET = {
    "pretrain-encoder": {"--steps": "1", "--batch-size": "1", "--preview-every": "0"},
    **{
        command: {"--steps": "1", "--batch-size": "1", "--preview-every": "0", "--workers": "0"}
        for command in TRAINING[1:]
    },
    "adapt": {"--steps": "1", "--batch-size": "1"},
    "evaluate": {"--n": "8", "--batch-size": "8"},
}


def doc_commands(path: Path, heading: str | None = None) -> list[str]:
    """The `mmfs ...` lines of the bash blocks of a doc (under `heading` only, when given), as written.

    Continuation lines are joined and `NAME="..."` assignments of the block are expanded; comments go, and
    so do the lines the docs mark as meant to fail (`<!-- fails: ... -->` before the block).
    """
    text = path.read_text()
    if heading is not None:
        text = text.split(heading, 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.finditer(r"(<!-- fails.*?-->\s*)?```bash\n(.*?)```", text, flags=re.S):
        if block.group(1) is None:
            commands += [line for _, line in block_lines(block.group(2)) if line.startswith("mmfs ")]
    return commands


def block_lines(block: str) -> list[tuple[int, str]]:
    """(line offset in the block, line) of a shell block: continuations joined, comments gone, and the
    block's `NAME="..."` assignments expanded in the lines after them (the assignments themselves go)."""
    variables: dict[str, str] = {}
    lines = []
    offset = 0
    for raw in re.split(r"(?<!\\)\n", block):  # a line with its continuations
        first = offset
        offset += raw.count("\n") + 1
        line = re.sub(r"\s+#.*$|^#.*$", "", raw.replace("\\\n", " ")).strip()
        assignment = re.fullmatch(r'(\w+)="(.*)"', line)
        if assignment:
            variables[assignment.group(1)] = assignment.group(2)
        elif line:
            for name, value in variables.items():
                line = line.replace(f"${name}", value)
            lines.append((first, " ".join(line.split())))
    return lines


def tier_commands() -> list[tuple[str, str]]:
    """(doc, command) in run order: the quick start whole, then every other doc line naming a weight file."""
    quick = [(QUICK_START[0].name, c) for c in doc_commands(*QUICK_START)]
    seen = {c for _, c in quick}
    rest = []
    for doc in DOCS:
        for command in doc_commands(doc):
            named = _WEIGHT_FILE.search(command) or _MODEL_NAME.search(command)
            if named and command not in seen and not command.startswith(NOT_IN_TIER):
                seen.add(command)
                rest.append((doc.name, command))
    return quick + rest


def runnable(command: str, standins: Path) -> list[str]:
    """A doc line as the tier runs it: stand-in file names and the one-step budget, nothing else."""
    args = shlex.split(command.replace("~/models/", ""))
    out = []
    for arg in args:
        name = Path(arg).name
        if name in STANDIN_FOR and not Path(arg).exists():
            arg = str(standins / STANDIN_FOR[name])
        out.append(MADE_BY_QUICK_START.get(arg, arg))
    budget = BUDGET.get(out[1], {})
    if "--resume" not in out:
        for option, value in budget.items():
            if option in out:
                out[out.index(option) + 1] = value
            else:
                out[2:2] = [option, value]
    return [str(Path(sys.executable).with_name("mmfs")), *out[1:]]


def tier_env(root: Path, standins: Path, mmfs_home: Path) -> dict[str, str]:
    """The environment the tier runs the doc lines in: offline, caches under `root`, and the published models
    (`-c pop-art`, `mmfs models ...`) converted from the stand-ins, read in place as a mirror folder."""
    import os

    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
        "TORCH_HOME": str(root / "torch"),
        "MMFS_CACHE": str(root / "cache"),
        "MMFS_HOME": str(mmfs_home),
        "MMFS_MODEL_MIRROR": str(standins),
        "MMFS_OFFLINE": "1",
    }


# What `user_files` writes: every page's commands see these (and the quick start's `runs/`).
USER_FILES = ("ffhq", "ffhq-test", "aligned", "data", "aahq", "me.jpg", "face.jpg", "photos", "style.png")


def folder_for(root: Path, doc: str) -> Path:
    """Where a doc page's commands run: `root` for the quick start, else a folder of its own.

    Pages are read independently, so two pages may name the same output (`--out style.safetensors`);
    each page's folder links the user's files and the quick start's `runs/` (the checkpoints other
    pages start from), and keeps the page's own outputs apart.
    """
    if doc == QUICK_START[0].name:
        return root
    folder = root / "pages" / Path(doc).stem
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for name in (*USER_FILES, "runs"):
            (folder / name).symlink_to(root / name)
    return folder


def user_files(root: Path) -> Path:
    """The files a new user has, under `root`: aligned photos, an art folder, a selfie, a style image.

    The photos and the art are the demo's synthetic faces at 512 px; the selfie is scikit-image's
    astronaut (public domain), a real face for detection and paste-back.
    """
    import numpy as np
    from skimage.data import astronaut

    from mmfs.data.images import save_image
    from mmfs.demo.synthetic import make_dataset

    dirs = make_dataset(root / "data", n_photos=3, n_art_per_style=1, size=512, seed=0)
    for name in ("ffhq", "ffhq-test", "aligned", "data/ffhq"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for photo in sorted(dirs["photos"].glob("*.png")):
            (root / name / photo.name).write_bytes(photo.read_bytes())
    (root / "aahq").mkdir()
    for art in sorted(dirs["art"].rglob("*.png")):
        (root / "aahq" / art.name).write_bytes(art.read_bytes())
    (root / "data" / "aahq").symlink_to(root / "aahq")
    save_image(np.ascontiguousarray(astronaut()), root / "me.jpg")
    (root / "face.jpg").write_bytes((root / "me.jpg").read_bytes())
    (root / "photos").mkdir()
    (root / "photos" / "me.jpg").write_bytes((root / "me.jpg").read_bytes())
    (root / "style.png").write_bytes(next((root / "aahq").glob("*.png")).read_bytes())
    return root

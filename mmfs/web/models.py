"""The models a page offers: names a visitor picks from, each standing for what `--checkpoint` is given.

A visitor never types a path: the list holds the published models' names, the `.safetensors` files
given on the command line, the demo's models with `--demo`, and the styles adapted in the page.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from mmfs.errors import InputError

DEMO_MODEL = "demo"  # the demo's Stylizer (its adapted models: demo-<style>)


@dataclass(frozen=True)
class ModelEntry:
    """One model of the list: its name in the page, what `--checkpoint` gets, and the CLIP its mapper reads."""

    name: str
    checkpoint: str  # a path, or a published model's name
    clip_model: str = "ViT-B-32"
    clip_weights: Path | None = None  # None: what the checkpoint records (`mmfs.external.build`)


def published_names() -> list[str]:
    """The catalogue's Stylizers (`mmfs`, `pop-art`, ...): fetched, checked and converted when first used."""
    from mmfs.catalogue import names
    from mmfs.inference.models import STYLIZER_MODELS  # the catalogue kinds a Stylizer is loaded from

    return [name for kind in STYLIZER_MODELS for name in names(kind)]


class ModelList:
    """The page's models, in the order shown; thread-safe, since the Adapt tab adds to it while others read."""

    def __init__(self, entries: list[ModelEntry] = ()) -> None:
        self._entries: dict[str, ModelEntry] = {}
        self._lock = threading.Lock()
        for entry in entries:
            self.add(entry)

    def add(self, entry: ModelEntry) -> ModelEntry:
        """Add (or replace, by name) a model; returns it."""
        with self._lock:
            self._entries[entry.name] = entry
        return entry

    def names(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def get(self, name: str | None) -> ModelEntry:
        """The model called `name`; a one-line error for a name that is not in the list."""
        with self._lock:
            entry = self._entries.get(name or "")
        if entry is None:
            raise InputError(f"choose a model from the list (got {name!r})" if name else "choose a model first")
        return entry


def model_list(files: list[Path], *, demo: bool = False, demo_dir: Path | None = None) -> ModelList:
    """The demo's models (with `demo`), `files`, then the published names; a one-line error for a missing file.

    The local models come first: the page opens on one that needs no download.
    """
    entries = demo_models(demo_dir) if demo else []
    for path in files:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such model file")
        if path.suffix != ".safetensors":
            raise InputError(f"{path}: not a .safetensors file (import other weights with `mmfs convert`)")
        entries.append(ModelEntry(path.stem, str(path.resolve()), clip_model=_recorded_clip(path) or "ViT-B-32"))
    entries += [ModelEntry(name, name) for name in published_names()]
    names = [e.name for e in entries]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        raise InputError(f"two models are called {clash!r}; rename the file")
    return ModelList(entries)


def demo_models(demo_dir: Path | None) -> list[ModelEntry]:
    """The models of a finished `mmfs demo` output in `demo_dir`, else the Stylizer shipped with mmfs.

    Their mappers read the demo's tiny CLIP: the one shipped with mmfs (a demo run with --train-clip
    records its own, which is then used).
    """
    from mmfs.demo.clip import shipped_clip
    from mmfs.demo.stylizer import shipped_stylizer

    found = _demo_output(demo_dir) if demo_dir is not None else None
    if found is None:
        return [ModelEntry(DEMO_MODEL, str(shipped_stylizer()), "tiny", shipped_clip())]
    mapper, adapted, clip = found
    entries = [ModelEntry(DEMO_MODEL, str(mapper), "tiny", clip)]
    entries += [ModelEntry(f"{DEMO_MODEL}-{p.stem.removeprefix('adapted-')}", str(p), "tiny", clip) for p in adapted]
    return entries


def _demo_output(demo_dir: Path) -> tuple[Path, list[Path], Path] | None:
    """(mapper file, adapted files, CLIP file) of a finished demo under `demo_dir`, or None."""
    import json

    summary = demo_dir / "summary.json"
    if not summary.is_file():
        return None
    try:
        data = json.loads(summary.read_text())
        mapper = demo_dir / data["checkpoints"]["mapper"]
        adapted = [demo_dir / p for p in data["checkpoints"].get("adapted", {}).values()]
        clip = Path(data["clip"]["path"])
    except (ValueError, KeyError, TypeError):
        return None
    if not mapper.is_file() or not clip.is_file():
        return None
    return mapper, [p for p in adapted if p.is_file()], clip


def resolution(checkpoint: str | Path) -> int:
    """The output side of a model file, read from its metadata (no tensors loaded)."""
    from mmfs.checkpoint import describe_checkpoint

    return int(describe_checkpoint(checkpoint)["config"]["resolution"])


def _recorded_clip(path: Path) -> str | None:
    """The CLIP model name recorded with a checkpoint's mapper, if any."""
    from mmfs.checkpoint import read_metadata

    return read_metadata(path).get("mmfs.clip_model") or None

"""Is a downloaded file the published one? Read from its bytes before anything is unpickled.

The checks, cheapest first: not an HTML page (what a sign-in, quota or error page gives instead of a
file); a torch.save container holding nothing but tensors (`mmfs.foreign`); the keys and shapes its
pickle lists, against the network the catalogue says it holds (every tensor's bytes present: a truncated
file fails here); and its sha256 against the one known for it (the catalogue's, or the one recorded at
its first download). The conversion after this loads it with `weights_only=True` and checks every key
and shape again against the network it builds.
"""

from __future__ import annotations

from pathlib import Path

from mmfs.catalogue import Model
from mmfs.errors import CheckpointError

# Shapes of OpenAI's CLIP ViT-B/32 as open_clip stores it (patch 32 at 224 px: 7 x 7 + 1 tokens).
_CLIP_VIT_B_32 = {
    "visual.conv1.weight": (768, 3, 32, 32),
    "visual.positional_embedding": (50, 768),
    "visual.proj": (768, 512),
    "token_embedding.weight": (49408, 512),
    "positional_embedding": (77, 512),
    "text_projection": (512, 512),
}


def check_original(entry: Model, path: Path, *, sha256: str | None = None) -> str:
    """The sha256 of `path` once it passed every check; a one-line CheckpointError naming what is wrong."""
    from mmfs.foreign import container, python_objects, tensor_layout
    from mmfs.utils.files import file_sha256

    what = f"{entry.name}: {path.name}"
    with open(path, "rb") as fh:
        head = fh.read(512)
    if _is_html(head):
        raise CheckpointError(f"{what} is an HTML page, not the checkpoint (a sign-in, quota or error page)")
    kind = container(path)
    if kind != "torch":
        raise CheckpointError(
            f"{what} is not a complete PyTorch checkpoint ({kind or 'truncated, damaged or another kind of file'})"
        )
    objects = python_objects(path)
    if objects:
        raise CheckpointError(f"{what} holds Python objects besides tensors ({', '.join(objects[:3])}); refused")
    layout = tensor_layout(path)
    if layout is not None:  # a torch zip (the legacy stream is checked by the conversion's strict load only)
        if layout.missing:
            raise CheckpointError(
                f"{what} is truncated or damaged: the bytes of {len(layout.missing)} tensors are missing "
                f"(first: {layout.missing[0]})"
            )
        _check_shapes(what, layout.tensors, expected_shapes(entry))
    found = file_sha256(path)
    if sha256 is not None and found != sha256:
        raise CheckpointError(
            f"{what} has sha256 {found}, not the expected {sha256} (the file changed since it was first "
            f"downloaded, or it is another file); remove it with `mmfs models remove {entry.name}` to accept a new one"
        )
    return found


def _is_html(head: bytes) -> bool:
    start = head.lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in start[:200]


def expected_shapes(entry: Model) -> dict[str, tuple[int, ...]]:
    """The tensors (dotted key -> shape) the published file must hold: the network of `entry.network`."""
    if entry.layout == "open_clip":
        return dict(_CLIP_VIT_B_32)
    from mmfs.config import PRESETS
    from mmfs.nn import Generator, Stylizer

    # Built on the CPU: a second or so at full size, while torch's meta device costs seconds of imports.
    cfg = PRESETS[entry.network]
    if entry.layout == "rosinality":
        prefix, net = "g_ema.", Generator(cfg)
    else:
        prefix, net = "G_ema_model.", Stylizer(cfg, with_mapper=entry.with_mapper)
    return {prefix + k: tuple(v.shape) for k, v in net.state_dict().items()}


def _check_shapes(what: str, found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> None:
    missing = [k for k in expected if k not in found]
    if missing:
        raise CheckpointError(
            f"{what} is not the published file: it lacks {len(missing)} of the {len(expected)} expected tensors "
            f"(first: {missing[0]})"
        )
    wrong = [k for k, shape in expected.items() if found[k] != shape]
    if wrong:
        key = wrong[0]
        raise CheckpointError(
            f"{what} is not the published file: {key} has shape {list(found[key])}, expected {list(expected[key])}"
        )

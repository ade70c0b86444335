"""The cache of published models: a name in, a checked and converted safetensors file out.

`model_file(name)` returns `MMFS_HOME/models/NAME.safetensors`: on first use it fetches the published
original (`fetch`), checks it without unpickling (`check`), converts it once (`mmfs convert`'s own
code; CLIP to a plain safetensors state dict) and records both files' sha256; later uses check the
converted file against that record and download nothing. One process fetches a model at a time (a file
lock); the others wait and then use its result. The downloaded original is deleted unless kept.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from mmfs import catalogue
from mmfs.catalogue import Model
from mmfs.errors import CheckpointError, MMFSError, OptionError
from mmfs.pretrained import cache
from mmfs.pretrained.check import check_original
from mmfs.pretrained.fetch import Message, Original, obtain


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def entry(name: str) -> Model:
    """The catalogue entry of `name`; an OptionError listing the names for an unknown one."""
    try:
        return catalogue.MODELS[name]
    except KeyError:
        raise OptionError("", f"unknown model {name!r}; the models are: {', '.join(catalogue.MODELS)}") from None


def model_file(
    name: str, *, progress: bool = True, keep_original: bool = False, on_message: Message | None = _say
) -> Path:
    """The converted file of catalogue model `name`, fetched, checked and converted on first use."""
    model = entry(name)
    with cache.locked(name, on_wait=on_message):
        target = cache.model_path(name)
        for stale in target.parent.glob(f".{name}.*.partial*"):  # a conversion killed midway (SIGKILL, power)
            stale.unlink(missing_ok=True)
        record = cache.read_record(name)
        if target.is_file():
            if record is not None and _intact(target, record):
                return target
            if on_message is not None:
                on_message(f"the cached {name} ({target}) does not match its record; fetching it again")
            target.unlink()
        original = obtain(model, progress=progress, on_message=on_message)
        return _install(model, original, record, keep_original=keep_original)


def resolve_file(value: str | os.PathLike[str], *, kinds: tuple[str, ...] = (), flag: str = "--checkpoint") -> Path:
    """A file for an option that takes a catalogue name or a path: the cached model, or the path itself.

    `kinds` are the catalogue kinds the option accepts (empty: any); another kind is a usage error.
    """
    if not catalogue.is_model_name(str(value)):
        return Path(value)
    model = catalogue.MODELS[str(value)]
    if kinds and model.kind not in kinds:
        fitting = [n for n, m in catalogue.MODELS.items() if m.kind in kinds]
        raise OptionError(
            flag.lstrip("-").replace("-", "_"),
            f"{model.name} is a {catalogue.KINDS[model.kind]}; {flag} takes {', '.join(fitting)} or a file",
        )
    return model_file(str(value))


def add(name: str, file: str | os.PathLike[str], *, on_message: Message | None = _say) -> Path:
    """Register a file fetched by hand (say from Baidu) as model `name`: checked and converted like a download."""
    model = entry(name)
    source = Path(file).expanduser()
    if not source.is_file():
        raise MMFSError(f"{source}: no such file")
    with cache.locked(name, on_wait=on_message):
        record = cache.read_record(name)
        return _install(model, Original(source.resolve(), f"added by hand from {source.resolve()}", False), record)


def remove(name: str) -> list[Path]:
    """Delete model `name` from the cache (converted file, record, kept original, partial downloads)."""
    model = entry(name)
    with cache.locked(name):
        candidates = [cache.model_path(name), cache.record_path(name), cache.originals_dir() / model.filename]
        candidates += sorted(cache.downloads_dir().glob(f"{model.filename}*"))
        removed = [p for p in candidates if p.is_file()]
        for path in removed:
            path.unlink()
    return removed


def status() -> list[dict]:
    """One row per catalogue model (`mmfs models list --json`): name, kind, summary, size, licence, origin, sources,
    the default prompt or reference, and whether (and where) it is cached."""
    rows = []
    for name, model in catalogue.MODELS.items():
        target, record = cache.model_path(name), cache.read_record(name)
        cached = target.is_file() and record is not None
        rows.append({
            "name": name,
            "kind": model.kind,
            "summary": model.summary,
            "file": model.filename,
            "size_mb": model.size_mb,
            "licence": model.licence,
            "cached": cached,
            "path": str(target) if cached else None,
            "sha256": record.sha256 if cached else None,
            "source_sha256": record.source_sha256 if record is not None else None,
            "sources": list(model.sources),
            "manual": list(model.manual),
            "origin": model.origin,
            "text": model.text,
            "ref": model.ref,
        })  # fmt: skip
    return rows


def _intact(target: Path, record: cache.Record) -> bool:
    """The converted file is the one recorded (size, then sha256: a damaged cache is fetched again)."""
    from mmfs.utils.files import file_sha256

    return target.stat().st_size == record.size and file_sha256(target) == record.sha256


def _install(model: Model, original: Original, previous: cache.Record | None, *, keep_original: bool = False) -> Path:
    """Check and convert `original` into the cache; record both sha256; drop the downloaded original."""
    from mmfs.utils.files import file_sha256

    target = cache.model_path(model.name)
    try:
        pin = model.sha256 or (previous.source_sha256 if previous is not None else None)
        source_sha = check_original(model, original.path, sha256=pin)
        if previous is not None and target.is_file() and _intact(target, previous):
            return target  # `mmfs models add` of the very file already converted: nothing to do
        _convert(model, original.path, target)
    except MMFSError:
        if original.downloaded:  # the wrong file, or one that cannot be used: never kept
            original.path.unlink(missing_ok=True)
        raise
    cache.write_record(cache.Record(
        name=model.name, sha256=file_sha256(target), size=target.stat().st_size, source_file=model.filename,
        source_sha256=source_sha, source_size=original.path.stat().st_size, source=original.source,
        created=cache.Record.now(),
    ))  # fmt: skip
    if original.downloaded:
        if keep_original:
            cache.originals_dir().mkdir(parents=True, exist_ok=True)
            shutil.move(original.path, cache.originals_dir() / model.filename)
        else:
            original.path.unlink(missing_ok=True)
    return target


def _convert(model: Model, source: Path, target: Path) -> None:
    """The published file -> safetensors in the cache: `mmfs convert` for MMFS and StyleGAN2 files, CLIP as is."""
    if model.layout == "open_clip":
        import torch

        from mmfs.checkpoint import save_checkpoint

        try:
            state = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure to read is the file's fault
            raise CheckpointError(f"{model.name}: {source.name} cannot be read ({str(exc).splitlines()[0]})") from None
        save_checkpoint(target, state, kind="clip", meta={"converted_from": model.filename})
        return
    from mmfs.config.convert import ConvertOptions
    from mmfs.nn.convert import convert_file

    convert_file(source, target, ConvertOptions(overwrite=True))


def clip_weights(
    weights: str | os.PathLike[str] | None, model_name: str, tag: str | None
) -> str | os.PathLike[str] | None:
    """The CLIP weights file to use: `weights` when given; for a catalogue CLIP (ViT-B-32 / openai) the file
    open_clip already cached from the Hugging Face hub, else the catalogue's (fetched on first use).

    None for any other CLIP: open_clip then loads it by its tag, as before.
    """
    if weights is not None:
        return weights
    name = catalogue.CLIP_FOR.get((model_name, tag or ""))
    if name is None:
        return None
    return _hub_cached(model_name, tag or "") or model_file(name)


def _hub_cached(model_name: str, tag: str) -> str | None:
    """open_clip's file for (model, tag) when its Hugging Face cache already holds it (no download)."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    repo = (open_clip.get_pretrained_cfg(model_name, tag) or {}).get("hf_hub", "").strip("/")
    for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename) if repo else None
        if isinstance(found, str):
            return found
    return None

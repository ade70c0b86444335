"""Stylize aligned faces: style sources produce w+ codes, `StylizePipeline` runs them through the Stylizer.

A *style* is one w+ code `[num_ws, w_dim]` plus a label (names the output files) and a noise seed.
A *style source* is any object with `styles(model) -> list[Style]`: `SeedStyles` (random styles from
seeded z), `LatentStyles` (a saved w-file, see `mmfs.inference.latents`) and `EmbeddingStyles` (CLIP embeddings
through the checkpoint's mapper: the hook the `--text` / `--ref` options plug into).

Reproducibility: z and the noise maps come from `torch.Generator(seed)` on the CPU, so they do not
depend on the device or on what else is in the run. The generator always runs on fixed-shape batches
of `batch_size` faces (a short last batch is padded), because batched BLAS / oneDNN kernels round
differently for different batch sizes: an image's bytes depend on its pixels, its style, the
checkpoint, the device, the dtype and `batch_size`, and on nothing else (not its neighbours in the
batch, not the input order, not a resumed run).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from mmfs.config.seeds import check_seed
from mmfs.config.stylize import NOISE_MODES  # seeded, fresh, zero: what each means is said there
from mmfs.inference.latents import Latents, load_latents

DEFAULT_NOISE_SEED = 0  # noise of styles that carry no seed (w-file rows without one, CLIP styles)
_NOISE_CACHE = 32  # styles whose noise maps stay on the device (each ~2.8 MB at 512 px)


@dataclass(frozen=True, eq=False)
class Style:
    """One style: its w+ code, the label that names its outputs, and the seed of its noise maps."""

    label: str
    ws: Tensor  # [num_ws, w_dim] float32 on the CPU
    seed: int | None = None  # None: noise from DEFAULT_NOISE_SEED
    info: Mapping[str, Any] = field(default_factory=dict)  # JSON-able description ({"seed": 5}, {"w": path})

    @property
    def noise_seed(self) -> int:
        return DEFAULT_NOISE_SEED if self.seed is None else self.seed

    def describe(self) -> dict[str, Any]:
        """The JSON form used in `mmfs stylize --json` summaries."""
        return {"label": self.label, "seed": self.seed, **self.info}


class StyleSource(Protocol):
    """Anything that turns itself into styles for a given Stylizer (seeds, a w-file, CLIP prompts)."""

    def styles(self, model: torch.nn.Module) -> list[Style]: ...


def seed_z(seed: int, z_dim: int) -> Tensor:
    """The z [1, z_dim] of a seed: the first draw of `torch.Generator().manual_seed(seed)` on the CPU."""
    return torch.randn(1, z_dim, generator=torch.Generator().manual_seed(seed))


def seed_noise(model: torch.nn.Module, seed: int) -> list[Tensor]:
    """A seed's noise maps [1, 1, H, W] (CPU): drawn right after its z from the same generator."""
    generator = torch.Generator().manual_seed(seed)
    torch.randn(1, model.cfg.z_dim, generator=generator)  # skip z: noise follows it in the stream
    return model.make_noise(1, generator=generator, device="cpu", dtype=torch.float32)


def face_noise_seed(face: Tensor, seed: int) -> int:
    """The 63-bit noise seed of one face under `noise="fresh"`: a sha256 of `seed` and the face's fp32 pixels."""
    pixels = face.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    digest = hashlib.sha256(seed.to_bytes(8, "little") + pixels).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class SeedStyles:
    """Random styles: w = mapping(z) with z drawn from a seeded generator, one style per seed."""

    def __init__(self, seeds: Sequence[int]) -> None:
        if not seeds:
            raise ValueError("need at least one seed")
        self.seeds = [check_seed(s) for s in seeds]

    def styles(self, model: torch.nn.Module) -> list[Style]:
        out = []
        with torch.inference_mode():
            for seed in self.seeds:  # one at a time: a batched GEMM would round differently per batch
                ws = model.ws_from_z(seed_z(seed, model.cfg.z_dim).to(_device(model)))
                out.append(Style(f"seed{seed}", ws[0].float().cpu(), seed, {"source": "seed"}))
        return out


class LatentStyles:
    """The styles saved in a w-file (`mmfs.inference.latents`): every row, or the rows at `indices`."""

    def __init__(self, latents: Latents | str | os.PathLike[str], indices: Sequence[int] | None = None) -> None:
        self.latents = latents
        self.indices = list(indices) if indices is not None else None

    def styles(self, model: torch.nn.Module) -> list[Style]:
        lat = self.latents
        if isinstance(lat, Latents):
            from mmfs.inference.latents import check_fits

            check_fits(lat, model.cfg)
        else:
            lat = load_latents(lat, config=model.cfg)
        rows = self.indices if self.indices is not None else range(len(lat))
        where = str(lat.path) if lat.path else "memory"
        unique = len(set(lat.labels)) == len(lat.labels)  # repeated labels would name the same files
        out = []
        for i in rows:
            if not -len(lat) <= i < len(lat):
                raise ValueError(f"{where}: has {len(lat)} styles, no index {i}")
            label = lat.labels[i] if unique else f"{lat.labels[i]}-{i}"
            out.append(Style(label, lat.ws[i].clone(), lat.seeds[i], {"source": "w", "w": where, "index": i}))
        return out


class EmbeddingStyles:
    """Styles from CLIP embeddings [N, clip_dim] through the checkpoint's mapper (text or image prompts).

    The CLIP side (encoding `--text` prompts or `--ref` images, L2-normalised as the reference does)
    happens outside; this turns the embeddings into styles with one label and description each.
    """

    def __init__(self, embeddings: Tensor, labels: Sequence[str], infos: Sequence[Mapping[str, Any]] | None = None):
        if embeddings.dim() != 2 or embeddings.shape[0] != len(labels) or embeddings.shape[0] == 0:
            raise ValueError(f"need embeddings [N, clip_dim] with one label each, got {tuple(embeddings.shape)}")
        self.embeddings = embeddings
        self.labels = list(labels)
        self.infos = list(infos) if infos is not None else [{"source": "clip"}] * len(self.labels)

    def styles(self, model: torch.nn.Module) -> list[Style]:
        out = []
        with torch.inference_mode():
            for i, label in enumerate(self.labels):
                ws = model.ws_from_clip(self.embeddings[i : i + 1].float().to(_device(model)))
                out.append(Style(label, ws[0].float().cpu(), None, dict(self.infos[i])))
        return out


def channels_last_(model: torch.nn.Module) -> torch.nn.Module:
    """Store every 4-D weight channels-last (5-D modulated-conv weights stay as they are)."""
    for p in model.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
    return model


class StylizePipeline:
    """Aligned faces [N, 3, R, R] in [-1, 1] + one style each -> stylized faces, in fixed-shape batches."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        dtype: torch.dtype = torch.float32,  # compute precision (bf16 runs under autocast)
        batch_size: int = 1,  # faces per generator call; a short last batch is padded to this size
        noise: str = "seeded",  # "seeded" (the style's maps), "fresh" (each face its own) or "zero" (none)
        channels_last: bool = False,  # channels-last activations/weights (pays on CUDA)
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}")
        self.model = model.eval().requires_grad_(False)
        self.device = _device(model)
        self.dtype = dtype
        self.batch_size = batch_size
        self.noise = noise
        self.channels_last = channels_last
        if channels_last:
            channels_last_(self.model)
        self._noise: OrderedDict[int, list[Tensor]] = OrderedDict()

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], *, device: str | torch.device = "auto", dtype: str = "fp32", **kwargs: Any
    ) -> StylizePipeline:
        """Load any stylizer checkpoint or published model name (`mmfs.inference.models.load_stylizer`) onto `device`
        ("auto": CUDA if present)."""
        from mmfs.inference.models import load_stylizer
        from mmfs.utils.device import parse_dtype, pick_device

        compute = parse_dtype(dtype)  # a wrong name fails before anything loads
        dev = device if isinstance(device, torch.device) else pick_device(device)
        kwargs.setdefault("channels_last", dev.type == "cuda")
        return cls(load_stylizer(path, device=dev), dtype=compute, **kwargs)

    from_pretrained = from_checkpoint  # a published model's name works too: StylizePipeline.from_pretrained("mmfs")

    @property
    def resolution(self) -> int:
        return self.model.cfg.resolution

    def styles(self, source: StyleSource) -> list[Style]:
        """Resolve a style source against this pipeline's model."""
        return source.styles(self.model)

    def _noise_maps(self, seed: int) -> list[Tensor]:
        if seed in self._noise:
            self._noise.move_to_end(seed)
        else:
            self._noise[seed] = [n.to(self.device) for n in seed_noise(self.model, seed)]
            if len(self._noise) > _NOISE_CACHE:
                self._noise.popitem(last=False)
        return self._noise[seed]

    def __call__(self, images: Tensor, styles: Style | Sequence[Style]) -> Tensor:
        """Stylize `images` [N, 3, R, R] in [-1, 1], face i with `styles[i]` (or one style for all) -> float32 CPU."""
        if isinstance(styles, Style):
            styles = [styles] * images.shape[0]
        if images.dim() != 4 or images.shape[1:] != (3, self.resolution, self.resolution):
            raise ValueError(f"images must be [N, 3, {self.resolution}, {self.resolution}], got {tuple(images.shape)}")
        if len(styles) != images.shape[0]:
            raise ValueError(f"need one style per image: {images.shape[0]} images, {len(styles)} styles")
        outs = [self._run(images[i : i + self.batch_size], styles[i : i + self.batch_size])
                for i in range(0, images.shape[0], self.batch_size)]  # fmt: skip
        return torch.cat(outs) if outs else images.new_zeros((0, 3, self.resolution, self.resolution))

    def _run(self, x: Tensor, styles: Sequence[Style]) -> Tensor:
        from mmfs.utils.device import autocast

        n, pad = x.shape[0], self.batch_size - x.shape[0]
        if pad:  # fixed shapes: repeat the last face, drop its results
            x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)])
            styles = list(styles) + [styles[-1]] * pad
        noise: str | list[Tensor] = "zero"
        if self.noise != "zero":
            if self.noise == "fresh":  # not cached: a face's maps are used once
                seeds = [face_noise_seed(face, s.noise_seed) for face, s in zip(x, styles, strict=True)]
                per_face = [[n.to(self.device) for n in seed_noise(self.model, seed)] for seed in seeds]
            else:
                per_face = [self._noise_maps(s.noise_seed) for s in styles]
            noise = [torch.cat(maps) for maps in zip(*per_face, strict=True)]
        x = x.to(self.device, torch.float32)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ws = torch.stack([s.ws for s in styles]).to(self.device)
        with torch.inference_mode(), autocast(self.device, self.dtype):
            out = self.model(x, ws, noise=noise)
        return out[:n].float().cpu()

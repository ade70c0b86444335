"""The tiny CLIP that `mmfs demo` ships: trained on the demo's synthetic faces, so it knows their styles.

A random tiny CLIP reads an image as little more than its colours: the mapper then reads the four style
references as four palettes, and `adapt`'s CLIP directions point at colours, not at outlines, washes or
greyscale. This one is trained contrastively on captioned synthetic images: the same faces as photos and in
the four art styles, each captioned with a style phrase and the colours of its background, hair and face
("a pop art portrait, magenta face, cyan background"). Naming the colours keeps them in the embedding,
which the mapper needs to rebuild a Stage II output from it; naming the style makes `--text "pop art"`
and a sketch reference mean something.

The architecture is `mmfs.external.tiny.tiny_clip` at the demo's resolution (64 px, 16 px patches), so
`--clip-model tiny --clip-weights FILE` loads it. The file is a "clip" checkpoint in fp16 (about 3.5 MB,
mostly the token embedding the stock BPE tokenizer needs) whose metadata holds its recipe; docs/demo.md
has the command that made it (`mmfs demo --train-clip`).

Written by hand: the captions, and a contrastive loss that counts equal captions in a batch as positives
(open_clip's `ClipLoss` would count them as negatives; short captions such as "pop art" repeat often).
"""

from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: `mmfs.demo.run` reads `ClipRecipe` before torch loads
    from torch import Tensor

SHIPPED_CLIP = Path(__file__).with_name("clip-tiny64.safetensors")
PHOTO = "photo"
# Style phrases per domain; the short forms are what a user types (`--text "pop art"`; adapt's
# zero-shot source prompt is "photo", as in the reference).
PHRASES = {
    PHOTO: ("photo", "a photo of a face", "a portrait photo", "a photograph of a person"),
    "cel": ("cel shading", "a cel-shaded portrait", "a cartoon face with flat colours and outlines"),
    "popart": ("pop art", "a pop art portrait", "a pop art painting of a face"),
    "sketch": ("sketch", "a pencil sketch of a face", "a pencil drawing of a face"),
    "watercolor": ("watercolor", "a watercolour portrait", "a watercolor painting of a face"),
}
COLOURS = {
    "black": (20, 20, 20), "grey": (128, 128, 128), "white": (240, 240, 240), "red": (200, 40, 40),
    "orange": (230, 140, 40), "yellow": (240, 220, 40), "green": (50, 190, 80), "cyan": (30, 190, 240),
    "blue": (40, 60, 200), "purple": (120, 60, 160), "magenta": (240, 40, 150), "pink": (240, 170, 190),
    "brown": (110, 70, 40), "beige": (225, 195, 160),
}  # fmt: skip
_REGIONS = {"background": 0, "hair": 1, "face": 2}  # label values of `mmfs.demo.synthetic.render_face`


@dataclass(frozen=True)
class ClipRecipe:
    """How the shipped tiny CLIP was trained (`mmfs demo --train-clip` reruns it)."""

    faces: int = 2000  # each one a photo and four artworks
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    embed_dim: int = 64  # the tiny64 preset's clip_dim
    image_size: int = 64  # the demo's resolution, so one-pixel outlines reach the patch embedding
    patch_size: int = 16  # 4 x 4 tokens of width 64, as the random tiny CLIP: with 8 x 8 they span the token space
    seed: int = 0


def shipped_clip() -> Path:
    """The packaged tiny CLIP file; a one-line error when the installation lacks it."""
    from mmfs.demo.prior import require_shipped

    return require_shipped(SHIPPED_CLIP, "tiny CLIP", "--train-clip")


def colour_name(rgb: np.ndarray) -> str:
    """The nearest of `COLOURS` to an RGB triple."""
    names = list(COLOURS)
    table = np.array([COLOURS[n] for n in names], np.float32)
    return names[int(np.argmin(((table - np.asarray(rgb, np.float32)) ** 2).sum(1)))]


def region_colours(image: np.ndarray, labels: np.ndarray) -> dict[str, str]:
    """Colour names of the background, hair and face of a rendered face (a region it lacks is left out)."""
    found = {}
    for region, label in _REGIONS.items():
        pixels = image[labels == label]
        if len(pixels) >= 8:
            found[region] = colour_name(np.median(pixels, axis=0))
    return found


def caption(domain: str, colours: dict[str, str], rng: random.Random) -> str:
    """A random caption: one of the domain's phrases, then none, some or all of its colours."""
    parts = [rng.choice(PHRASES[domain])]
    for region in rng.sample(sorted(colours), k=rng.randint(0, len(colours))):
        parts.append(f"{colours[region]} {region}")
    return ", ".join(parts)


def make_captioned_images(faces: int, size: int, seed: int) -> tuple[Tensor, list[str], list[dict[str, str]]]:
    """`faces` synthetic faces, each as a photo and in every style: uint8 images `[5F, 3, S, S]`, domains, colours."""
    import torch

    from mmfs.demo.synthetic import STYLES, FaceParams, render_face, stylize_face

    rng = np.random.default_rng(seed)
    images, domains, colours = [], [], []
    for _ in range(faces):
        photo, labels = render_face(FaceParams.sample(rng), size)
        for domain in (PHOTO, *STYLES):
            image = photo if domain == PHOTO else stylize_face(photo, labels, domain, rng)
            images.append(image)
            domains.append(domain)
            colours.append(region_colours(image, labels))
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), domains, colours


def contrastive_loss(image_emb: Tensor, text_emb: Tensor, captions: list[str], logit_scale: Tensor) -> Tensor:
    """Symmetric CLIP loss where every pair with the same caption text is a positive.

    The targets of each row are spread evenly over its positives (one per row when captions are unique,
    which is open_clip's `ClipLoss`).
    """
    import torch
    import torch.nn.functional as F

    logits = logit_scale.exp().clamp(max=100) * image_emb @ text_emb.T
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    index = torch.tensor([ids[c] for c in captions], device=logits.device)
    same = (index[:, None] == index[None, :]).float()
    targets = same / same.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def train_tiny_clip(
    out: str | os.PathLike[str],
    recipe: ClipRecipe = ClipRecipe(),
    *,
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """Train a tiny CLIP with `recipe` and write it to `out` as an fp16 "clip" checkpoint; returns `out`."""
    import open_clip
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from mmfs.checkpoint import module_state, save_checkpoint
    from mmfs.external.base import CLIP_MEAN, CLIP_STD, normalize, stats_buffer
    from mmfs.external.tiny import TINY_CLIP_META, register_tiny_clip, tiny_clip_model

    started = time.perf_counter()
    images, domains, colours = make_captioned_images(recipe.faces, recipe.image_size, recipe.seed)
    model, _ = tiny_clip_model(recipe.embed_dim, recipe.image_size, recipe.seed, recipe.patch_size)
    model.to(device).train()
    tokenizer = open_clip.get_tokenizer(register_tiny_clip(recipe.embed_dim, recipe.image_size, recipe.patch_size))
    mean, std = stats_buffer(CLIP_MEAN).to(device), stats_buffer(CLIP_STD).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    warmup = max(1, recipe.steps // 20)

    def lr_factor(step: int) -> float:  # linear warm-up, then cosine decay to zero
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(step, recipe.steps) / recipe.steps))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    rng, picker = random.Random(recipe.seed), torch.Generator().manual_seed(recipe.seed)
    bar = tqdm(range(recipe.steps), desc="tiny CLIP", unit="step", file=sys.stderr, disable=not progress)
    losses = []
    for _ in bar:
        index = torch.randint(len(images), (recipe.batch_size,), generator=picker)
        batch = images[index].to(device).float() / 255.0
        flip = torch.rand(len(batch), generator=picker) < 0.5  # faces are left-right symmetric
        batch[flip.to(device)] = batch[flip.to(device)].flip(-1)
        texts = [caption(domains[i], colours[i], rng) for i in index.tolist()]
        image_emb = F.normalize(model.encode_image(normalize(batch, mean, std)), dim=-1)  # as OpenClipEncoder.prepare
        text_emb = F.normalize(model.encode_text(tokenizer(texts).to(device)), dim=-1)
        loss = contrastive_loss(image_emb, text_emb, texts, model.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in module_state(model).items()}
    meta = {
        TINY_CLIP_META: {
            "embed_dim": recipe.embed_dim,
            "image_size": recipe.image_size,
            "patch_size": recipe.patch_size,
        },
        "recipe": {**asdict(recipe), "wall_seconds": round(time.perf_counter() - started, 1)},
        "loss": {"first": round(float(np.mean(losses[:20])), 4), "last": round(float(np.mean(losses[-20:])), 4)},
        "dtype": "fp16",
    }
    return save_checkpoint(out, tensors, kind="clip", meta=meta)


def style_accuracy(clip, faces: int = 20, seed: int = 12345) -> float:
    """Zero-shot accuracy of a CLIP encoder telling photo and the four styles apart on unseen synthetic faces.

    Each image is given the domain whose short phrase ("photo", "pop art", ...) its embedding is closest to.
    """
    import torch

    images, domains, _ = make_captioned_images(faces, clip.image_size[0], seed)
    names = list(PHRASES)
    with torch.no_grad():
        text = clip.encode_text([PHRASES[name][0] for name in names])
        image = clip.encode_image(images.float().to(text.device) / 127.5 - 1.0)
    guess = (image @ text.T).argmax(1).cpu()
    truth = torch.tensor([names.index(d) for d in domains])
    return float((guess == truth).float().mean())


def describe(path: str | os.PathLike[str]) -> dict:
    """The recipe and losses recorded in a tiny CLIP file."""
    from mmfs.checkpoint import describe_checkpoint

    meta = describe_checkpoint(path)
    return {k: meta[k] for k in ("recipe", "loss") if k in meta}

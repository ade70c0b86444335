"""A synthetic face data set the project makes itself, so the whole method can run offline.

"Photos" are smoothly shaded, FFHQ-aligned cartoon faces with varied geometry, skin, eyes, hair and
background. Each can also be rendered in four artistic styles (cel shading with outlines, posterised
pop art, pencil sketch, watercolour), giving the unpaired photo/art domains Stage II needs.

Eye and mouth positions follow the FFHQ crop recipe (eyes at about 37.5 % / 62.5 % across and 47 %
down, mouth at about 75 % down), so the synthetic photos look like aligned crops to the networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from mmfs.data.images import save_image

STYLES = ("cel", "popart", "sketch", "watercolor")
_SUPERSAMPLE = 2  # draw at 2x and downsample: cheap anti-aliasing


@dataclass(frozen=True)
class FaceParams:
    """Everything that varies between synthetic faces."""

    face_w: float  # half-width of the face ellipse (fraction of the image)
    face_h: float  # half-height
    jaw: float  # 0 round .. 1 narrow chin
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: int  # 0 short, 1 long, 2 bald-ish, 3 bun
    iris: tuple[int, int, int]
    lip: tuple[int, int, int]
    background: tuple[tuple[int, int, int], tuple[int, int, int]]  # vertical gradient
    eye_size: float
    mouth_width: float
    smile: float  # -1 frown .. 1 smile
    brow_tilt: float
    light: float  # horizontal light direction, -1 .. 1

    @classmethod
    def sample(cls, rng: np.random.Generator) -> FaceParams:
        skin_tone = rng.uniform(0, 1)
        skin = tuple(int(v) for v in np.array([255, 224, 196]) * (1 - skin_tone) + np.array([120, 78, 50]) * skin_tone)
        hair_palette = [(30, 20, 15), (90, 55, 25), (200, 160, 90), (150, 40, 20), (120, 120, 125), (20, 20, 60)]
        iris_palette = [(70, 45, 25), (50, 100, 160), (60, 120, 70), (100, 80, 50)]
        bg_a = tuple(int(v) for v in rng.integers(40, 230, 3))
        bg_b = tuple(int(v) for v in np.clip(np.array(bg_a) + rng.integers(-60, 60, 3), 0, 255))
        return cls(
            face_w=float(rng.uniform(0.25, 0.30)),
            face_h=float(rng.uniform(0.32, 0.37)),
            jaw=float(rng.uniform(0, 1)),
            skin=skin,
            hair=hair_palette[int(rng.integers(len(hair_palette)))],
            hair_style=int(rng.integers(4)),
            iris=iris_palette[int(rng.integers(len(iris_palette)))],
            lip=tuple(int(v) for v in np.array([190, 90, 90]) + rng.integers(-30, 30, 3)),
            background=(bg_a, bg_b),
            eye_size=float(rng.uniform(0.04, 0.05)),
            mouth_width=float(rng.uniform(0.09, 0.13)),
            smile=float(rng.uniform(-0.3, 1.0)),
            brow_tilt=float(rng.uniform(-0.3, 0.3)),
            light=float(rng.uniform(-1, 1)),
        )


def render_face(params: FaceParams, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one face photo; returns (RGB uint8 [size, size, 3], region labels [size, size] uint8)."""
    s = size * _SUPERSAMPLE
    p = params
    img = Image.fromarray(_gradient(s, *p.background))
    labels = Image.new("L", (s, s), 0)  # 0 background, 1 hair, 2 skin, 3 eyes, 4 mouth, 5 brows
    draw, lab = ImageDraw.Draw(img), ImageDraw.Draw(labels)
    cx, cy = 0.5 * s, 0.52 * s
    fw, fh = p.face_w * s, p.face_h * s

    def ellipse(box, fill, label):
        draw.ellipse(box, fill=fill)
        lab.ellipse(box, fill=label)

    # hair behind the face
    if p.hair_style == 1:
        ellipse([cx - fw * 1.35, cy - fh * 1.25, cx + fw * 1.35, cy + fh * 1.3], p.hair, 1)
    elif p.hair_style == 3:
        ellipse([cx - fw * 0.5, cy - fh * 1.65, cx + fw * 0.5, cy - fh * 0.9], p.hair, 1)
    if p.hair_style != 2:
        ellipse([cx - fw * 1.12, cy - fh * 1.15, cx + fw * 1.12, cy + fh * 0.25], p.hair, 1)
    # face: an ellipse whose lower half narrows towards the chin
    face = [
        (cx + fw * math.cos(t) * (1 - p.jaw * 0.25 * max(0.0, math.sin(t))), cy + fh * math.sin(t))
        for t in np.linspace(0, 2 * math.pi, 120)
    ]
    draw.polygon(face, fill=p.skin)
    lab.polygon(face, fill=2)
    if p.hair_style != 2:  # fringe
        ellipse([cx - fw * 1.02, cy - fh * 1.08, cx + fw * 1.02, cy - fh * 0.45], p.hair, 1)
    # eyes at the FFHQ positions
    eye_y, eye_dx, r = 0.47 * s, 0.125 * s, p.eye_size * s
    for side in (-1, 1):
        ex = cx + side * eye_dx
        ellipse([ex - r * 1.5, eye_y - r, ex + r * 1.5, eye_y + r], (250, 250, 250), 3)
        draw.ellipse([ex - r * 0.75, eye_y - r * 0.75, ex + r * 0.75, eye_y + r * 0.75], fill=p.iris)
        draw.ellipse([ex - r * 0.35, eye_y - r * 0.35, ex + r * 0.35, eye_y + r * 0.35], fill=(15, 15, 15))
        brow_y = eye_y - r * 2.2
        tilt = side * p.brow_tilt * r
        draw.line([ex - r * 1.6, brow_y + tilt, ex + r * 1.6, brow_y - tilt], fill=p.hair, width=max(2, int(r * 0.5)))
        lab.line([ex - r * 1.6, brow_y + tilt, ex + r * 1.6, brow_y - tilt], fill=5, width=max(2, int(r * 0.5)))
    # nose: a soft shadow line
    nose_shade = tuple(int(c * 0.8) for c in p.skin)
    draw.line([cx, eye_y + r, cx + p.light * r * 0.5, 0.63 * s], fill=nose_shade, width=max(1, int(r * 0.4)))
    # mouth at ~75 % down, curved by the smile
    mw, my = p.mouth_width * s, 0.745 * s
    curve = [(cx + t * mw, my - p.smile * (1 - t * t) * -0.35 * mw) for t in np.linspace(-1, 1, 30)]
    draw.line(curve, fill=p.lip, width=max(2, int(s * 0.03)), joint="curve")
    lab.line(curve, fill=4, width=max(2, int(s * 0.03)))

    rgb = np.asarray(img, dtype=np.float32)
    rgb *= _lighting(s, cx, cy, fw, fh, p.light)[..., None]  # shading makes it look like a photo, not a flat drawing
    rgb += np.random.default_rng(int(p.face_w * 1e6)).normal(0, 3.0, rgb.shape)  # sensor-like grain
    rgb_img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).resize((size, size), Image.LANCZOS)
    label_img = labels.resize((size, size), Image.NEAREST)
    return np.asarray(rgb_img), np.asarray(label_img)


def stylize_face(photo: np.ndarray, labels: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    """Render a synthetic photo in one of `STYLES`; the geometry is kept, the look changes.

    The looks are flat, without fine texture (no halftone dots, hatching or paper grain): with them, the
    discriminator of the demo's few hundred Stage II steps keyed on texture and the Stylizer answered
    with speckle instead of palettes, outlines and washes.
    """
    img = Image.fromarray(photo)
    edges = _edges(labels)
    if style == "cel":
        flat = ImageOps.posterize(img.filter(ImageFilter.MedianFilter(5)), 3)
        out = np.asarray(flat, dtype=np.float32)
        out[edges] = (25, 20, 20)
    elif style == "popart":
        palette = rng.permutation(np.array([[255, 230, 0], [255, 40, 140], [0, 190, 255], [40, 220, 90]], np.float32))
        gray = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        levels = np.clip((gray * 3).astype(int), 0, 2)
        out = palette[levels].copy()
        out[edges] = (10, 10, 10)
    elif style == "sketch":
        gray = np.asarray(img.convert("L"), dtype=np.float32)
        blurred = np.asarray(
            Image.fromarray(255 - gray.astype(np.uint8)).filter(ImageFilter.GaussianBlur(3)), np.float32
        )
        dodge = np.clip(gray * 255.0 / np.maximum(255.0 - blurred, 1.0), 0, 255)  # colour-dodge pencil look
        dodge[edges] = np.minimum(dodge[edges], 70)
        out = np.repeat(np.minimum(dodge, 235)[..., None], 3, axis=2)
    elif style == "watercolor":
        soft = img.filter(ImageFilter.GaussianBlur(2)).filter(ImageFilter.ModeFilter(5))
        out = np.asarray(soft, dtype=np.float32) * 0.75 + 255 * 0.25  # washed-out pigments
        out += rng.normal(0, 1, (1, 1, 3)) * 12  # a paper tint per painting
        out[edges] *= 0.8
    else:
        raise ValueError(f"unknown style {style!r}; choose from {', '.join(STYLES)}")
    return np.clip(out, 0, 255).astype(np.uint8)


def make_dataset(
    root: Path, *, n_photos: int, n_art_per_style: int, size: int, seed: int = 0, styles: tuple[str, ...] = STYLES
) -> dict[str, Path]:
    """Write `photos/` and `art/<style>/` folders of PNGs under `root`; returns their paths.

    Art faces are drawn from a separate random stream, so photos and art are unpaired, as in FFHQ/AAHQ.
    """
    rng = np.random.default_rng(seed)
    photos = root / "photos"
    for i in range(n_photos):
        image, _ = render_face(FaceParams.sample(rng), size)
        save_image(image, photos / f"photo_{i:05d}.png")
    art_rng = np.random.default_rng(seed + 1)
    dirs = {"photos": photos, "art": root / "art"}
    for style in styles:
        for i in range(n_art_per_style):
            image, labels = render_face(FaceParams.sample(art_rng), size)
            save_image(stylize_face(image, labels, style, art_rng), root / "art" / style / f"{style}_{i:05d}.png")
        dirs[style] = root / "art" / style
    return dirs


def _gradient(s: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> np.ndarray:
    t = np.linspace(0, 1, s, dtype=np.float32)[:, None, None]
    row = np.array(top, np.float32) * (1 - t) + np.array(bottom, np.float32) * t
    return np.broadcast_to(row, (s, s, 3)).astype(np.uint8)


def _lighting(s: int, cx: float, cy: float, fw: float, fh: float, light: float) -> np.ndarray:
    yy, xx = np.mgrid[:s, :s].astype(np.float32)
    dx, dy = (xx - cx) / (fw * 1.4), (yy - cy) / (fh * 1.4)
    shade = 1.0 - 0.25 * np.clip(dx * dx + dy * dy, 0, 1) + 0.12 * light * np.clip(dx, -1, 1)
    return np.clip(shade, 0.6, 1.15)


def _edges(labels: np.ndarray) -> np.ndarray:
    """Boundaries between labelled regions, one pixel wide."""
    edge = np.zeros(labels.shape, bool)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    return edge

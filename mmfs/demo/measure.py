"""Is each stylized face still *its* face? Identify it among all held-out sources by colour-free structure.

The synthetic faces share one layout (eyes, nose and mouth at the FFHQ positions), so a plain edge
correlation finds every stylized face about equally close to every source: it cannot tell "this face's
structure was kept" from "an unrelated face". What tells faces apart is where each differs from the
average face: its face outline and jaw, hair style, eye size, mouth width and curve, brow tilt. So:

1. features: the edge strength of each image, colour-free (the largest gradient over the RGB channels,
   of a slightly blurred image, divided by the image's own 90th percentile and clipped, so neither the
   palette nor the contrast of a style matters), blurred again to forgive one-pixel shifts;
2. centring: subtract the mean feature of the set (the shared layout, and a style's own constant
   marks), separately for the sources and for the stylized outputs;
3. identification: each output is matched to the source with the highest cosine similarity of the
   centred features; the score is the fraction matched to their own source (chance: 1 / sources).

`check_measure` verifies it on the generator's own renderings of the same faces in the four art styles
(ground truth: every painting's source is known), against the uncentred edge correlation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

# Chosen on the generator's own art renderings of 32 faces (see `check_measure`): 0.84 / 0.81 / 0.66 / 0.91
# top-1 for cel / pop art / sketch / watercolour (chance 0.03); more blur loses the small features.
PRE_BLUR = 0.7  # pixels (at 64 px): removes grain before the gradient
POST_BLUR = 1.0  # pixels: one-pixel misplacements of an edge still match
CLIP_QUANTILE = 90  # per-image contrast normalisation


def structure_features(images: np.ndarray, *, centre: bool = True) -> np.ndarray:
    """Colour-free edge features of uint8 images [N, H, W, 3] -> [N, H*W] float (unit length).

    With `centre`, the set's mean feature is removed first (what every image shares).
    """
    x = np.asarray(images, dtype=np.float32) / 255.0
    scale = x.shape[1] / 64.0
    x = gaussian_filter(x, sigma=(0, PRE_BLUR * scale, PRE_BLUR * scale, 0))
    gy, gx = np.gradient(x, axis=(1, 2))
    edges = np.sqrt(gx**2 + gy**2).max(axis=3)  # an edge in any channel: no palette dependence
    top = np.percentile(edges.reshape(len(edges), -1), CLIP_QUANTILE, axis=1)
    edges = np.clip(edges / np.maximum(top, 1e-6)[:, None, None], 0, 1)
    edges = gaussian_filter(edges, sigma=(0, POST_BLUR * scale, POST_BLUR * scale)).reshape(len(edges), -1)
    if centre:
        edges = edges - edges.mean(axis=0, keepdims=True)
    return edges / np.maximum(np.linalg.norm(edges, axis=1, keepdims=True), 1e-8)


def identification_accuracy(outputs: np.ndarray, sources: np.ndarray, *, centre: bool = True) -> float:
    """Fraction of outputs[i] whose most similar source (by `structure_features`) is sources[i]."""
    if len(outputs) != len(sources) or len(sources) < 2:
        raise ValueError(f"need one output per source and at least two sources, got {len(outputs)} and {len(sources)}")
    similarity = structure_features(outputs, centre=centre) @ structure_features(sources, centre=centre).T
    return float(np.mean(similarity.argmax(axis=1) == np.arange(len(sources))))


def check_measure(n: int = 32, size: int = 64, seed: int = 0) -> dict[str, Any]:
    """The measure on ground truth: `n` synthetic faces and the generator's own paintings of them.

    Returns, per art style, the top-1 identification of each painting's source with the centred
    features (the measure) and with plain, uncentred edge correlations; and the mean plain edge
    similarity of a painting to its own source and to the other sources, which shows why a plain
    correlation *value* cannot tell a kept face from an unrelated one (they share the layout).
    """
    from mmfs.demo.synthetic import STYLES, FaceParams, render_face, stylize_face

    rng = np.random.default_rng(seed)
    faces = [render_face(FaceParams.sample(rng), size) for _ in range(n)]
    sources = np.stack([photo for photo, _ in faces])
    result: dict[str, Any] = {"centred": {}, "plain_edges": {}, "plain_similarity": {}}
    own, other = [], []
    for style in STYLES:
        art = np.stack([stylize_face(photo, labels, style, rng) for photo, labels in faces])
        result["centred"][style] = identification_accuracy(art, sources)
        result["plain_edges"][style] = identification_accuracy(art, sources, centre=False)
        similarity = structure_features(art, centre=False) @ structure_features(sources, centre=False).T
        own.append(np.diag(similarity).mean())
        other.append(similarity[~np.eye(n, dtype=bool)].mean())
    result["plain_similarity"] = {"own_source": float(np.mean(own)), "unrelated_sources": float(np.mean(other))}
    return result


def measure_structure(styles, photos) -> dict:
    """Stylize `photos` (held-out aligned faces) with every style of the demo and identify each output's source.

    `styles` is the demo's `DemoStyles`. Returns the score per style row, their mean and minimum, the
    chance level, and `check_measure` on the same number of faces (the measure's own ground truth).
    """
    import torch

    from mmfs.data.images import load_image, to_tensor, to_uint8

    sources = np.stack([load_image(p) for p in photos])
    batch = torch.stack([to_tensor(image) for image in sources])
    scores, plain = {}, {}
    for name, pipeline, style in styles.kinds():
        outputs = to_uint8(pipeline(batch, style))
        scores[name] = identification_accuracy(outputs, sources)
        plain[name] = identification_accuracy(outputs, sources, centre=False)
    values = list(scores.values())
    return {
        "what": "fraction of stylized held-out faces whose most similar source, by colour-free edge structure"
        " centred on the set's mean face, is their own (see mmfs/demo/measure.py)",
        "sources": len(sources),
        "chance": 1.0 / len(sources),
        "per_style": scores,
        "mean": float(np.mean(values)),
        "min": float(np.min(values)),
        "per_style_plain_edges": plain,
        "check_on_synthetic_art": check_measure(n=len(sources), size=sources.shape[1]),
    }

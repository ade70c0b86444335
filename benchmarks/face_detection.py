"""Face detection recall and time per photo: dlib HOG, HOG with turned retries, dlib's CNN, HOG then CNN.

The detection set is built here, at run time, from photos that ship in scikit-image (nothing is
written to disk): the public-domain astronaut upright, scaled down, turned by quarter turns (a phone
photo that lost its EXIF orientation), tilted, tiled into groups, partly cropped, covered, blurred
and dimmed; sheets of LFW faces from `skimage.data.lfw_subset()` (25 px crops, upscaled); and
photos without a face (coffee, a cat, a rocket, coins, a micrograph, galaxies) for false detections.
Large photos are collages on a mosaic of those face-less photos: small faces (64, 96 and 128 px boxes)
in 12 and 24 MP photos, groups of 10 faces, upright faces beside tilted ones, and 12/24 MP photos with
no face (what looking everywhere costs).

A face counts as found when a detection's landmark centre lies within 0.6 eye distances of the true
one (the astronaut's landmarks from HOG on the upright photo, mapped through each transform; LFW
faces sit at the centre of their crops). Prints markdown tables: recall and false detections per
group, seconds per photo (mean and max), and what the turned retries cost on photos whose face is
found at once.

    python benchmarks/face_detection.py                 # every detector (about 20 minutes on a busy 2-core machine)
    python benchmarks/face_detection.py --detectors hog hog+turns --repeat 3
    python benchmarks/face_detection.py --groups "small faces, 12 MP" "mixed lean" --detectors hog+turns every-angle
    python benchmarks/face_detection.py --scan-cost 3 12 24 50   # seconds per face-less photo of these MP
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Case:
    """One photo of the set: its group, pixels, and each true face as (centre x, centre y, radius)."""

    name: str
    group: str
    image: np.ndarray
    truths: list[tuple[float, float, float]] = field(default_factory=list)


def _astronaut_truth() -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    from mmfs.faces import build_detector

    photo = data.astronaut()
    (face,) = build_detector("dlib", rotate=False).detect(photo)
    return photo, face.landmarks


def _truth(landmarks: np.ndarray, matrix: np.ndarray | None = None) -> tuple[float, float, float]:
    from mmfs.faces.align import apply_affine

    lm = apply_affine(matrix, landmarks) if matrix is not None else landmarks
    centre = lm.mean(0)
    return float(centre[0]), float(centre[1]), 0.6 * float(np.hypot(*(lm[1] - lm[0])))


def _scaled(image: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    h, w = image.shape[:2]
    size = (round(w * scale), round(h * scale))
    sx, sy = size[0] / w, size[1] / h
    out = np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))
    return out, np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])


# The upright astronaut's HOG box is 88 px wide: a face of `px` pixels is her head scaled by px / 88.
ASTRONAUT_BOX = 88.0


def mosaic(width: int, height: int, seed: int) -> np.ndarray:
    """A large face-less photo: rows of the face-less skimage photos, enlarged to the row's height, in a seeded order."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    sources = []
    for name in ("coffee", "chelsea", "rocket", "coins", "immunohistochemistry", "hubble_deep_field"):
        image = getattr(data, name)()
        sources.append(np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3])
    canvas = np.zeros((height, width, 3), np.uint8)
    y = 0
    while y < height:
        x, row = 0, int(rng.integers(800, 1400))
        while x < width:
            image = sources[int(rng.integers(len(sources)))]
            size = (round(image.shape[1] * row / image.shape[0]), row)
            big = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))
            h, w = min(row, height - y), min(big.shape[1], width - x)
            canvas[y : y + h, x : x + w] = big[:h, :w]
            x += w
        y += row
    return canvas


def place(canvas: np.ndarray, head: np.ndarray, lm: np.ndarray, centre, px: float, angle: float = 0.0,
          mirror: bool = False) -> tuple[float, float, float]:  # fmt: skip
    """Paste `head` (landmarks `lm`) so its face box is `px` wide, turned `angle` degrees counter-clockwise
    (mirrored first if asked), with its landmark centre at `centre`; returns the truth."""
    from mmfs.faces.align import apply_affine, invert_affine, warp

    scale = px / ASTRONAUT_BOX
    a = np.radians(angle)
    linear = scale * np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    if mirror:
        linear = linear @ np.diag([-1.0, 1.0])
    offset = np.asarray(centre, dtype=np.float64) - linear @ lm.mean(0)
    src_to_canvas = np.concatenate([linear, offset[:, None]], axis=1)
    radius = int(np.ceil(scale * max(head.shape[:2]) * 0.75))
    x0, y0 = int(centre[0]) - radius, int(centre[1]) - radius
    shift = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]])
    to_src = invert_affine((np.vstack([shift, [0, 0, 1]]) @ np.vstack([src_to_canvas, [0, 0, 1]]))[:2])
    patch = warp(head, to_src, 2 * radius, 2 * radius, pad="zero", resample="bilinear")
    mask = warp(np.ones(head.shape[:2], np.float32), to_src, 2 * radius, 2 * radius, pad="zero")[..., None]
    h, w = canvas.shape[:2]  # the part of the patch inside the canvas
    a, b = max(0, -x0), max(0, -y0)
    c, d = min(2 * radius, w - x0), min(2 * radius, h - y0)
    region = canvas[y0 + b : y0 + d, x0 + a : x0 + c]
    mask, patch = mask[b:d, a:c], patch[b:d, a:c]
    region[:] = np.clip(mask * patch + (1 - mask) * region, 0, 255).astype(np.uint8)
    points = apply_affine(src_to_canvas, lm)
    if mirror:
        points = points[[1, 0, 2, 4, 3]]
    return _truth(points)


def build_large_set(photo: np.ndarray, lm: np.ndarray) -> list[Case]:
    """Collages on face-less mosaics: small faces in 12/24 MP photos, groups of 10, mixed leans, no face."""
    head_box = (10, 100, 270, 360)  # y0, x0, y1, x1: the astronaut's head with some shoulder and background
    head = np.ascontiguousarray(photo[head_box[0] : head_box[2], head_box[1] : head_box[3]])
    hlm = lm - [head_box[1], head_box[0]]
    cases = []
    rng = np.random.default_rng(28)
    for mp, (w, h) in ((12, (4000, 3000)), (24, (6000, 4000))):
        for px in (64, 96, 128):
            canvas = mosaic(w, h, seed=mp + px)
            # 8 faces on a jittered 4 x 2 grid: one of them across the middle, where tiles meet
            truths = []
            for k in range(8):
                cx = (k % 4 + 0.5) * w / 4 + rng.uniform(-0.1, 0.1) * w / 4
                cy = (k // 4 + 0.5) * h / 2 + rng.uniform(-0.1, 0.1) * h / 2
                if k == 1:
                    cx = w / 2
                truths.append(place(canvas, head, hlm, (cx, cy), px, mirror=bool(k % 2)))
            cases.append(Case(f"{px} px faces, {mp} MP", f"small faces, {mp} MP", canvas, truths))
    # groups of 10: two rows of five, sizes 100-180 px (a 6 MP photo) and 64-120 px (a 12 MP photo)
    for name, (w, h), sizes in (("group of 10, 6 MP", (3000, 2000), (100, 180)),
                                ("group of 10, 12 MP", (4000, 3000), (64, 120))):  # fmt: skip
        canvas = mosaic(w, h, seed=w)
        truths = []
        for k in range(10):
            px = float(rng.uniform(*sizes))
            cx, cy = w * (0.15 + 0.175 * (k % 5)), h * (0.35 + 0.3 * (k // 5)) + rng.uniform(-0.05, 0.05) * h
            truths.append(place(canvas, head, hlm, (cx, cy), px, angle=float(rng.uniform(-15, 15)), mirror=bool(k % 2)))
        cases.append(Case(name, "group of 10", canvas, truths))
    # upright faces beside tilted ones (heads leaning 30-60 degrees, one lying at 90)
    for k, leans in enumerate(((0, 45), (0, -40, 15), (0, 60, -50), (-10, 35, 90), (5, -55, 0, 50))):
        canvas = mosaic(1600 + 400 * (len(leans) - 2), 1200, seed=100 + k)
        step = canvas.shape[1] / len(leans)
        truths = [place(canvas, head, hlm, ((i + 0.5) * step, 600), float(rng.uniform(110, 170)), angle=float(a),
                        mirror=bool(i % 2)) for i, a in enumerate(leans)]  # fmt: skip
        cases.append(Case("leans " + " ".join(f"{a:+d}" for a in leans), "mixed lean", canvas, truths))
    for mp, (w, h) in ((12, (4000, 3000)), (24, (6000, 4000))):
        cases.append(Case(f"mosaic {mp} MP", "no face, 12/24 MP", mosaic(w, h, seed=7 * mp)))
    return cases


def build_set() -> list[Case]:
    from PIL import Image, ImageFilter
    from skimage import data

    from mmfs.faces.search import turned_copy

    photo, lm = _astronaut_truth()
    cases = [Case("upright", "upright", photo, [_truth(lm)])]
    for scale in (0.5, 0.35, 0.25):
        small, m = _scaled(photo, scale)
        cases.append(Case(f"scaled x{scale}", "scaled down", small, [_truth(lm, m)]))
    for angle in (90, 180, 270):
        turned, m = turned_copy(photo, angle)
        cases.append(Case(f"turned {angle}", "sideways / upside down", turned, [_truth(lm, m)]))
        small, s = _scaled(turned, 0.5)
        cases.append(
            Case(f"turned {angle} x0.5", "sideways / upside down", small, [_truth(lm, s @ np.vstack([m, [0, 0, 1]]))])
        )
    for angle in (20, -20, 35, -35, 50, -50, 65):
        tilted, m = turned_copy(photo, angle)
        cases.append(Case(f"tilted {angle}", "tilted", tilted, [_truth(lm, m)]))
    # groups: four faces of different sizes and sides, and a row of three
    canvas = np.full((900, 1200, 3), 90, np.uint8)
    truths = []
    for (x, y), scale, mirror in (
        ((0, 0), 0.8, False),
        ((620, 20), 0.6, True),
        ((60, 480), 0.5, True),
        ((700, 500), 0.7, False),
    ):
        small, m = _scaled(photo[:, ::-1] if mirror else photo, scale)
        h, w = small.shape[:2]
        canvas[y : y + h, x : x + w] = small
        base = lm.copy()
        if mirror:
            base = np.stack([511 - base[:, 0], base[:, 1]], 1)[[1, 0, 2, 4, 3]]
        truths.append(_truth(base, m + np.array([[0, 0, x], [0, 0, y]])))
    cases.append(Case("four faces", "group", canvas, truths))
    head = photo[0:300, 80:380]
    row = np.concatenate([head, head[:, ::-1], head], axis=1)
    heads = [_truth(lm - [80, 0]), _truth(np.stack([299 - (lm[:, 0] - 80), lm[:, 1]], 1)[[1, 0, 2, 4, 3]] + [300, 0])]
    heads.append(_truth(lm - [80, 0] + [600, 0]))
    cases.append(Case("row of three", "group", np.ascontiguousarray(row), heads))
    # partly cropped or covered
    cx = int(lm[:, 0].mean())
    for name, x0, y0, x1, y1 in (("left third of face cut", cx - 8, 0, 512, 512), ("chin cut", 0, 0, 512, int(lm[3:, 1].mean()) + 8),
                                  ("right half cut", 0, 0, cx + 4, 512)):  # fmt: skip
        crop = np.ascontiguousarray(photo[y0:y1, x0:x1])
        cases.append(Case(name, "partly cropped / covered", crop, [_truth(lm - [x0, y0])]))
    patched = photo.copy()
    ex, ey = lm[1].astype(int)
    patched[ey - 12 : ey + 12, ex - 14 : ex + 14] = 20
    cases.append(Case("eye covered", "partly cropped / covered", patched, [_truth(lm)]))
    masked = photo.copy()
    masked[int(lm[2, 1]) : int(lm[3:, 1].mean()) + 25, int(lm[0, 0]) - 25 : int(lm[1, 0]) + 25] = 230
    cases.append(Case("mouth covered", "partly cropped / covered", masked, [_truth(lm)]))
    # poor pictures
    img = Image.fromarray(photo)
    for radius in (3, 5):
        cases.append(
            Case(
                f"blur {radius}",
                "blurred / dim",
                np.asarray(img.filter(ImageFilter.GaussianBlur(radius))),
                [_truth(lm)],
            )
        )
    cases.append(Case("dim x0.15", "blurred / dim", (photo * 0.15).astype(np.uint8), [_truth(lm)]))
    low, _ = _scaled(photo, 0.12)
    cases.append(
        Case(
            "pixelated",
            "blurred / dim",
            np.asarray(Image.fromarray(low).resize((512, 512), Image.NEAREST)),
            [_truth(lm)],
        )
    )
    # sheets of 25 px LFW faces, upscaled 4x with a margin: low-resolution group photos
    faces = data.lfw_subset()[:100]
    for sheet in range(2):
        canvas = np.full((4 * 160, 4 * 160, 3), 128, np.uint8)
        truths = []
        for k in range(16):
            face = (faces[16 * sheet + k] * 255).astype(np.uint8)
            big = np.asarray(Image.fromarray(face).resize((100, 100), Image.BICUBIC))
            y, x = 160 * (k // 4) + 30, 160 * (k % 4) + 30
            canvas[y : y + 100, x : x + 100] = big[..., None]
            truths.append((x + 50.0, y + 55.0, 35.0))
        cases.append(Case(f"lfw sheet {sheet}", "LFW faces (25 px, upscaled)", canvas, truths))
    # no face at all
    for name in ("coffee", "chelsea", "rocket", "coins", "immunohistochemistry", "hubble_deep_field"):
        image = getattr(data, name)()
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        cases.append(Case(name, "no face", np.ascontiguousarray(image[..., :3])))
    return cases + build_large_set(photo, lm)


def match(faces, truths) -> tuple[int, int]:
    """(true faces found, detections that match no true face)."""
    found, used = 0, set()
    for tx, ty, radius in truths:
        dists = [np.hypot(*(f.landmarks.mean(0) - [tx, ty])) for f in faces]
        free = [i for i in np.argsort(dists) if i not in used and dists[i] < radius] if dists else []
        if free:
            used.add(free[0])
            found += 1
    return found, len(faces) - len(used)


# label: build_detector keywords (the mmfs options: docs/benchmarks.md#face-detection)
DETECTORS = {
    "hog, shrunk scan only": dict(name="dlib", rotate=False, min_face=None),
    "hog": dict(name="dlib", rotate=False),
    "hog+turns": dict(name="dlib"),
    "every-angle": dict(name="dlib", every_angle=True),
    "cnn": dict(name="dlib-cnn", rotate=False),
    "hog+turns, then cnn": dict(name="dlib+cnn"),
}


def scan_cost(megapixels: list[float], repeat: int) -> None:
    """Seconds per face-less photo (a 4:3 mosaic) of each size: the shrunk scan alone, with the tiled
    full-resolution scan (the default), and the default search with --every-angle; interleaved, best of `repeat`."""
    from mmfs.faces import build_detector
    from mmfs.faces.detect import DLIB_SMALLEST_BOX, DLIB_TILE_SIDE
    from mmfs.faces.tiles import tile_grid

    ways = {
        "shrunk scan only (--min-face 0)": build_detector("dlib", rotate=False, min_face=None),
        "with the tiled scan (default)": build_detector("dlib", rotate=False),
        "default (+ turned retries: 6 runs)": build_detector("dlib"),
        "--every-angle": build_detector("dlib", every_angle=True),
    }
    print("| photo | tiles | " + " | ".join(ways) + " |")
    print("|---|---|" + "---|" * len(ways))
    for mp in megapixels:
        w = round((mp * 1e6 * 4 / 3) ** 0.5)
        h = round(w * 3 / 4)
        photo = mosaic(w, h, seed=int(mp))
        scale = min(1.0, 2048 / max(w, h))
        tiles = len(tile_grid(w, h, DLIB_TILE_SIDE, int(np.ceil(1.5 * DLIB_SMALLEST_BOX / scale)))) if scale < 1 else 0
        best = {name: float("inf") for name in ways}
        for _ in range(repeat):
            for name, detector in ways.items():
                start = time.perf_counter()
                detector.detect(photo)
                best[name] = min(best[name], time.perf_counter() - start)
        base = best["shrunk scan only (--min-face 0)"]
        cells = [f"{t:.2f} s ({t / base:.1f}x)" for t in best.values()]
        print(f"| {w} x {h} ({mp:g} MP) | {tiles} | " + " | ".join(cells) + " |", flush=True)
        del photo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=list(DETECTORS))
    parser.add_argument("--repeat", type=int, default=1, help="time each photo this many times (best kept)")
    parser.add_argument("--groups", nargs="+", help="only these groups of photos (default: all)")
    parser.add_argument("--scan-cost", nargs="+", type=float, metavar="MP",
                        help="instead: seconds per face-less photo of these megapixels, each way of scanning")  # fmt: skip
    args = parser.parse_args()
    if args.scan_cost:
        scan_cost(args.scan_cost, args.repeat)
        return

    from mmfs.faces import build_detector

    cases = [c for c in build_set() if not args.groups or c.group in args.groups]
    groups = list(dict.fromkeys(c.group for c in cases))
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )
    print(f"# {len(cases)} photos, {sum(len(c.truths) for c in cases)} faces\n")
    results: dict[str, dict[str, list]] = {}
    per_photo: dict[str, list[tuple[Case, float, int]]] = {}
    for label in args.detectors:
        detector = build_detector(**DETECTORS[label])
        detector.detect(cases[0].image[:512, :512])  # load and warm up
        rows = per_photo.setdefault(label, [])
        for case in cases:
            best, faces = float("inf"), []
            for _ in range(args.repeat):
                detector.calls = 0
                start = time.perf_counter()
                faces = detector.detect(case.image)
                best = min(best, time.perf_counter() - start)
            found, false = match(faces, case.truths)
            rows.append((case, best, detector.calls))
            stats = results.setdefault(label, {}).setdefault(case.group, [0, 0, 0, []])
            stats[0] += found
            stats[1] += len(case.truths)
            stats[2] += false
            stats[3].append(best)
            print(
                f"  {label:>20} {case.name:<26} {found}/{len(case.truths)} found, {false} false, {best:6.2f} s, {detector.calls} calls",
                flush=True,
            )

    labels = args.detectors
    print("\n| group (photos, faces) | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for group in groups:
        n_photos = sum(c.group == group for c in cases)
        n_faces = sum(len(c.truths) for c in cases if c.group == group)
        cells = []
        for label in labels:
            found, total, false, times = results[label][group]
            hit = f"{found}/{total}" if total else "-"
            cells.append(f"{hit}, {false} false; {np.mean(times):.2f} s (max {max(times):.2f})")
        print(f"| {group} ({n_photos}, {n_faces}) | " + " | ".join(cells) + " |")
    totals = []
    for label in labels:
        found = sum(v[0] for v in results[label].values())
        total = sum(v[1] for v in results[label].values())
        false = sum(v[2] for v in results[label].values())
        times = [t for v in results[label].values() for t in v[3]]
        totals.append(
            f"**{found}/{total} ({100 * found / total:.0f}%)**, {false} false; {np.mean(times):.2f} s (max {max(times):.2f})"
        )
    print(f"| all ({len(cases)}, {sum(len(c.truths) for c in cases)}) | " + " | ".join(totals) + " |")

    if "hog" in per_photo and "hog+turns" in per_photo:
        # The cost of retries where the face is found at once: same photos, same run.
        pairs = [(a[1], b[1]) for a, b in zip(per_photo["hog"], per_photo["hog+turns"], strict=True) if b[2] == 1]
        plain, turned = sum(p for p, _ in pairs), sum(t for _, t in pairs)
        print(f"\nfound at once by hog+turns ({len(pairs)} photos, 1 detector call each): hog {plain:.2f} s, "
              f"hog+turns {turned:.2f} s, ratio {turned / plain:.3f}")  # fmt: skip
        levelled = [
            (c.name, b[2])
            for (c, _, _), b in zip(per_photo["hog"], per_photo["hog+turns"], strict=True)
            if b[2] > 1 and c.truths
        ]
        print(f"photos that took more calls (turns or levelling): {levelled}")
        none = [b[1] for b in per_photo["hog+turns"] if b[0].group == "no face"]
        base = [a[1] for a in per_photo["hog"] if a[0].group == "no face"]
        print(f"no-face photos: hog {np.mean(base):.2f} s, hog+turns {np.mean(none):.2f} s per photo (6 calls)")
    if "hog+turns" in per_photo and "every-angle" in per_photo:
        # The cost of --every-angle where no face is tilted: photos hog+turns settles with one call.
        pairs = [(a[1], b[1]) for a, b in zip(per_photo["hog+turns"], per_photo["every-angle"], strict=True)
                 if a[2] == 1]  # fmt: skip
        if pairs:
            plain, every = sum(p for p, _ in pairs), sum(e for _, e in pairs)
            print(f"faces found upright at once ({len(pairs)} photos): hog+turns {plain:.2f} s, every-angle "
                  f"{every:.2f} s, ratio {every / plain:.2f}")  # fmt: skip
    if "hog, shrunk scan only" in per_photo and "hog" in per_photo:
        # The cost of the tiled full-resolution scan, per photo size (it runs on photos over 2048 px).
        sizes: dict[str, list[tuple[float, float]]] = {}
        for a, b in zip(per_photo["hog, shrunk scan only"], per_photo["hog"], strict=True):
            megapixels = a[0].image.shape[0] * a[0].image.shape[1] / 1e6
            if max(a[0].image.shape[:2]) > 2048:
                sizes.setdefault(f"{megapixels:.0f} MP", []).append((a[1], b[1]))
        for size, pairs in sizes.items():
            shrunk, tiled = np.mean([p for p, _ in pairs]), np.mean([t for _, t in pairs])
            print(
                f"{size} ({len(pairs)} photos): shrunk scan {shrunk:.2f} s, with the tiled scan {tiled:.2f} s per photo"
            )


if __name__ == "__main__":
    main()

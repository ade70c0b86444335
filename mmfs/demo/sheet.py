"""The demo's stylization step and its contact sheet.

Stylization goes through `mmfs.inference.files.stylize_files`, the engine of `mmfs stylize`: the held-out
photos as aligned crops, the astronaut through dlib detection, FFHQ alignment and paste-back. The
contact sheet has one column per input and one row per style kind (inputs, random styles,
reference-guided styles through the mapper and one-shot adapted models, each with its reference shown in the
label column).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from mmfs.errors import MMFSError

# `mmfs stylize --noise zero`: after minutes of training at 64 px the per-pixel noise inputs only add speckle.
STYLIZE_NOISE = "zero"
ASTRONAUT_MARGIN = 0.6  # the sheet's astronaut crop: the face box grown by this fraction on each side


@dataclass
class Row:
    """One contact-sheet row: a label, one image per column (None: nothing to show), an optional thumbnail."""

    label: str
    cells: list[np.ndarray | None]
    thumb: np.ndarray | None = None


@dataclass
class Sheet:
    """Column titles and rows of the contact sheet."""

    columns: list[str]
    rows: list[Row]
    notes: list[str]  # problems worth reporting (e.g. no face found in the astronaut photo)


def _read(path: str | os.PathLike[str]) -> np.ndarray:
    from mmfs.data.images import load_image

    return load_image(path)


def _crop(image: np.ndarray, box: list[float]) -> np.ndarray:
    """A square crop around a face box, grown by ASTRONAUT_MARGIN and clipped to the image."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * ASTRONAUT_MARGIN)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = image.shape[:2]
    side = min(side, h, w)
    left = int(round(min(max(cx - side / 2, 0), w - side)))
    top = int(round(min(max(cy - side / 2, 0), h - side)))
    return image[top : top + int(side), left : left + int(side)]


def _stylize(pipeline, files: list, styles: list, outdir: Path, *, aligned: bool, detector: Any = None) -> list:
    """Run `stylize_files` (overwriting) and return its results, one per input."""
    from mmfs.inference.files import PhotoOutput, stylize_files

    opts = PhotoOutput(outdir=outdir, aligned=aligned, paste_back=not aligned, overwrite=True, workers=1)
    return list(stylize_files(pipeline, files, styles, opts, detector=detector))


def _outputs(results: list) -> dict[tuple[str, str], str]:
    """(input path, style label) -> output path, over every successful result."""
    return {(r.input, o["style"]): o["path"] for r in results for o in r.outputs}


@dataclass
class DemoStyles:
    """The trained models and every style the sheet and the structure measure use."""

    base: Any  # StylizePipeline of the mapper checkpoint (Stage II weights + the CLIP mapper)
    adapted: list  # StylizePipeline of each reference's one-shot adapted checkpoint
    random: list  # seed styles
    refs: list  # one reference-guided style per art style (through the mapper)
    adapt: list  # each adapted model's style (its reference through the mapper)
    ref_paths: list[Path]

    @property
    def ref_names(self) -> list[str]:
        return [Path(p).parent.name for p in self.ref_paths]

    def kinds(self) -> list[tuple[str, Any, Any]]:
        """(name, pipeline, style) of every stylized row: random seeds, references, the adapted models."""
        rows = [(f"random {s.label}", self.base, s) for s in self.random]
        rows += [(f"reference {name}", self.base, s) for s, name in zip(self.refs, self.ref_names, strict=True)]
        adapted = zip(self.ref_names, self.adapted, self.adapt, strict=True)
        return rows + [(f"adapted {name}", pipeline, s) for name, pipeline, s in adapted]


def load_styles(paths: dict[str, Any], b: Any, device: torch.device, seed: int) -> DemoStyles:
    """The base and adapted pipelines and their styles (random seeds, one reference per style, adapted)."""
    from mmfs.external.build import build_clip
    from mmfs.inference.pipeline import SeedStyles, StylizePipeline
    from mmfs.inference.styles import reference_styles

    kwargs = {"device": device, "batch_size": b.batch_size, "noise": STYLIZE_NOISE}
    base = StylizePipeline.from_checkpoint(paths["mapper"], **kwargs)
    refs = list(paths["refs"])
    adapted = [StylizePipeline.from_checkpoint(paths["adapted"][Path(ref).parent.name], **kwargs) for ref in refs]
    clip = build_clip("tiny", paths["clip"], embed_dim=base.model.cfg.clip_dim, device=device)  # the mapper's
    return DemoStyles(
        base=base,
        adapted=adapted,
        random=base.styles(SeedStyles([seed + k for k in range(b.random_styles)])),
        refs=base.styles(reference_styles(clip, refs)),
        adapt=[pipeline.styles(reference_styles(clip, [ref]))[0] for pipeline, ref in zip(adapted, refs, strict=True)],
        ref_paths=refs,
    )


@torch.no_grad()
def stage_rows(paths: dict[str, Any], count: int, device: torch.device, seed: int) -> list[Row]:
    """Prior samples for fixed z, and the same samples reconstructed by the Stage I Stylizer (its training task)."""
    from mmfs.data.images import to_uint8
    from mmfs.demo.prior import prior_samples
    from mmfs.inference.models import load_stylizer

    z, samples = prior_samples(paths["prior"], count, seed, device)
    stage1 = load_stylizer(paths["encoder"], device=device)
    recon = stage1(samples, stage1.ws_from_z(z), noise="zero")
    return [
        Row("the prior: random samples", list(to_uint8(samples))),
        Row("Stage I: those samples rebuilt through the encoder", list(to_uint8(recon))),
    ]


def stylize_all(outdir: Path, paths: dict[str, Any], styles: DemoStyles, b: Any, seed: int) -> Sheet:
    """Stylize held-out photos and the astronaut with every style kind; returns the contact sheet's content."""
    from mmfs.faces import build_detector
    from mmfs.inference.files import collect_inputs

    notes: list[str] = []
    base, random_styles, ref_styles = styles.base, styles.random, styles.refs
    heldout = collect_inputs([str(p) for p in paths["sheet_heldout"]])
    astronaut = collect_inputs([str(paths["astronaut"])])
    detector = build_detector("dlib")
    out = outdir / "stylized"
    results = {
        "base": _stylize(base, heldout, random_styles + ref_styles, out / "heldout", aligned=True),
        "astro-base": _stylize(base, astronaut, random_styles + ref_styles, out / "astronaut", aligned=False,
                          detector=detector),
    }  # fmt: skip
    for name, pipeline, style in zip(styles.ref_names, styles.adapted, styles.adapt, strict=True):
        # each adapted model in its own folder: its outputs carry the same style label as the mapper's
        results[f"adapted-{name}"] = _stylize(pipeline, heldout, [style], out / f"heldout-adapted-{name}", aligned=True)
        results[f"astro-adapted-{name}"] = _stylize(pipeline, astronaut, [style], out / f"astronaut-adapted-{name}",
                                                    aligned=False, detector=detector)  # fmt: skip
    for key, items in results.items():
        for r in items:
            if r.status == "error":
                if key.startswith("astro"):
                    notes.append(f"astronaut: {r.error}")
                else:
                    raise MMFSError(f"demo stylization failed: {r.error}")
    done = {key: _outputs(items) for key, items in results.items()}
    astro = results["astro-base"][0]
    box = astro.boxes[0] if astro.status != "error" and astro.boxes else None
    columns = heldout + astronaut

    def cells(model: str, label: str) -> list[np.ndarray | None]:
        """One row's images: `model`'s outputs with the style `label`, for every column (None: failed)."""
        row = []
        for item in columns:
            astro_item = item is astronaut[0]
            path = done[f"astro-{model}" if astro_item else model].get((str(item.path), label))
            image = None if path is None else _read(path)
            row.append(_crop(image, box) if image is not None and astro_item and box is not None else image)
        return row

    rows = stage_rows(paths, len(columns), base.device, seed)
    photo = [_read(f.path) for f in heldout] + [_crop(_read(astronaut[0].path), box) if box else None]
    rows.append(Row("input photos (held out: never trained on)", photo))
    rows += [Row(f"random style {s.label}", cells("base", s.label)) for s in random_styles]
    refs = list(zip(styles.ref_names, styles.ref_paths, strict=True))
    for style, (name, ref) in zip(ref_styles, refs, strict=True):
        rows.append(Row(f"mapper, from the reference: {name}", cells("base", style.label), _read(ref)))
    for style, (name, ref) in zip(styles.adapt, refs, strict=True):
        rows.append(
            Row(f"one-shot adapted to the reference: {name}", cells(f"adapted-{name}", style.label), _read(ref))
        )
    titles = [f"held-out {i + 1}" for i in range(len(heldout))] + [ASTRONAUT_TITLE]
    return Sheet(titles, rows, notes)


# A real photo, unlike anything the 64 px networks saw: detected, aligned, stylized, pasted back.
ASTRONAUT_TITLE = "astronaut: real photo, out of distribution"


# ------------------------------------------------------------------------------------------ drawing


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # an old Pillow or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def render_sheet(sheet: Sheet, cell: int) -> np.ndarray:
    """The contact sheet as an RGB uint8 array: a title row, then a label column and one cell per input."""
    pad, label_w, header_h = 4, int(cell * 1.6), max(30, cell * 3 // 8)  # up to three title lines
    cols, rows = len(sheet.columns), len(sheet.rows)
    width = label_w + cols * (cell + pad) + pad
    height = header_h + rows * (cell + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(max(10, cell // 8))
    for c, title in enumerate(sheet.columns):
        x = label_w + pad + c * (cell + pad)
        for i, line in enumerate(_wrap(draw, title, font, cell)[:3]):
            draw.text((x, 2 + i * (font.size if hasattr(font, "size") else 11)), line, fill=(0, 0, 0), font=font)
    for r, row in enumerate(sheet.rows):
        y = header_h + pad + r * (cell + pad)
        line_h = (font.size if hasattr(font, "size") else 11) + 2
        lines = _wrap(draw, row.label, font, label_w - 2 * pad)
        for i, line in enumerate(lines):
            draw.text((pad, y + i * line_h), line, fill=(0, 0, 0), font=font)
        if row.thumb is not None:  # the reference image, in the label column's lower part
            side = max(8, min(cell - len(lines) * line_h - pad, label_w - 2 * pad))
            thumb = Image.fromarray(row.thumb).resize((side, side), Image.LANCZOS)
            canvas.paste(thumb, (pad, y + cell - side))
        for c, image in enumerate(row.cells):
            x = label_w + pad + c * (cell + pad)
            if image is None:
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(225, 225, 225))
                draw.text((x + pad, y + cell // 2 - 6), "n/a", fill=(90, 90, 90), font=font)
                continue
            canvas.paste(Image.fromarray(image).resize((cell, cell), Image.LANCZOS), (x, y))
    return np.asarray(canvas)


def write_contact_sheet(path: Path, sheet: Sheet, cell: int) -> Path:
    """Render and save the contact sheet PNG (atomically)."""
    from mmfs.data.images import save_image

    return save_image(render_sheet(sheet, cell), path)

"""`mmfs align` over many photos: each face's FFHQ crop plus a JSON record of how to paste it back.

`<stem>_face<k>.png` holds face k's crop and `<stem>.json` (format `mmfs-align/1`, docs/align.md) each
face's box, landmarks, crop quad and photo-to-crop matrix at full float precision. A photo that cannot be
read or has no face is one failed result; a failed write (disk full, read-only) stops the batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmfs.config.align import AlignRequest
from mmfs.config.faces import FaceDetection
from mmfs.data.images import SkippedFiles, expand_inputs, load_image, save_image
from mmfs.errors import InputError, MMFSError, OutputError
from mmfs.utils.files import atomic_path

from .align import AlignedFace, detect_and_align
from .search import detector_for

ALIGN_FORMAT = "mmfs-align/1"


def collect_photos(inputs: Iterable[str], *, stdin_lines: Iterable[str] | None, skipped: SkippedFiles) -> list[Path]:
    """The photos named by files, folders, globs and `-`; InputError when there are none."""
    paths = list(expand_inputs(inputs, stdin_lines=stdin_lines, skipped=skipped))
    if not paths:
        raise InputError("no input images found" + (f" ({skipped.describe()})" if skipped.count else ""))
    return paths


@dataclass
class AlignResult:
    """What one photo gave: its JSON record and crops, or the error that skipped it."""

    input: Path
    json: Path | None = None
    crops: list[Path] = field(default_factory=list)
    rotations: list[float] = field(default_factory=list)  # how far each face's photo copy was turned to find it
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"input": str(self.input), "error": self.error}
        return {"input": str(self.input), "json": str(self.json), "crops": [str(c) for c in self.crops],
                "rotations": self.rotations}  # fmt: skip


class PhotoAligner:
    """Aligns photos one at a time into `request.outdir`; the detector is built (weights checked) first."""

    def __init__(self, request: AlignRequest, detection: FaceDetection) -> None:
        self.detector = detector_for(detection)
        self.request, self.detector_name = request, detection.detector
        self._stems: dict[str, int] = {}
        request.outdir.mkdir(parents=True, exist_ok=True)

    def align(self, path: Path) -> AlignResult:
        """Detect, align and write one photo; a bad photo is a failed result, a failed write an OutputError."""
        stem = self._unique_stem(path.stem)
        try:
            return self._align(path, stem)
        except OutputError:
            raise  # disk full or read-only: every later photo would fail the same way
        except MMFSError as exc:
            return AlignResult(path, error=str(exc))

    def _align(self, path: Path, stem: str) -> AlignResult:
        outdir, size = self.request.outdir, self.request.size
        image = load_image(path)
        json_path = outdir / f"{stem}.json"
        self._refuse_existing([json_path])
        try:
            faces = detect_and_align(image, self.detector, size)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
        crops = [outdir / f"{stem}_face{k}.png" for k in range(len(faces))]
        self._refuse_existing(crops)
        for aligned, crop in zip(faces, crops, strict=True):
            save_image(aligned.image, crop)
        record = align_record(path, image.shape, size, self.detector_name, faces, crops)
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        return AlignResult(path, json_path, crops, [a.face.rotation for a in faces])

    def _unique_stem(self, stem: str) -> str:
        """Two inputs with the same name (a/x.jpg, b/x.jpg) get x and x-2 rather than overwriting each other."""
        count = self._stems.get(stem, 0) + 1
        self._stems[stem] = count
        return stem if count == 1 else f"{stem}-{count}"

    def _refuse_existing(self, paths: list[Path]) -> None:
        if not self.request.overwrite:
            for p in paths:
                if p.exists():
                    raise InputError(f"{p}: already exists; pass --overwrite to replace it")


def align_record(
    path: Path, shape: tuple, size: int, detector: str, faces: Sequence[AlignedFace], crops: Sequence[Path]
) -> dict[str, Any]:
    """Everything needed to paste a crop back (full float precision, so the JSON reproduces the crop exactly)."""
    return {
        "format": ALIGN_FORMAT,
        "source": str(path.resolve()),
        "image_size": [int(shape[1]), int(shape[0])],
        "crop_size": size,
        "detector": detector,
        "faces": [
            {
                "index": k,
                "crop": crop.name,
                "box": [float(v) for v in a.face.box],
                "landmarks": [[float(x), float(y)] for x, y in a.face.landmarks],
                "score": float(a.face.score),
                "rotation": float(a.face.rotation),
                "quad": [[float(x), float(y)] for x, y in a.quad],
                "matrix": [[float(v) for v in row] for row in a.matrix],
            }
            for k, (a, crop) in enumerate(zip(faces, crops, strict=True))
        ],
    }


def align_summary(results: Sequence[AlignResult], skipped: SkippedFiles, outdir: Path) -> dict[str, Any]:
    """The `--json` summary of a batch: counts, what was skipped, every output and every error."""
    written = [r.to_dict() for r in results if r.error is None]
    errors = [r.to_dict() for r in results if r.error is not None]
    faces = sum(len(r.crops) for r in results)
    return {"ok": len(written), "failed": len(errors), "faces": faces, "outdir": str(outdir),
            "skipped_files": skipped.to_dict(), "outputs": written, "errors": errors}  # fmt: skip

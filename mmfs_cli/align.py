"""`mmfs align`: detect every face in ordinary photos and write FFHQ-aligned crops plus their transforms."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from mmfs_cli.common import EXIT_FAILED, Detector, OutdirOpt, QuietOpt, echo_err, guarded, report_failures, stdin_lines

FORMAT = "mmfs-align/1"


def align(
    inputs: Annotated[
        list[str], typer.Argument(help="Image files, folders (recursive), globs, or - to read paths from stdin.")
    ],
    outdir: OutdirOpt = Path("aligned"),
    size: Annotated[int, typer.Option(min=16, max=4096, help="Side of the square aligned crops, in pixels.")] = 512,
    detector: Annotated[
        Detector,
        typer.Option(
            help="dlib: HOG + 68 landmarks, offline. dlib-cnn: dlib's CNN (slower, 3.5-5 s a photo). "
            "dlib+cnn: HOG, then the CNN when HOG finds nothing. insightface: SCRFD, needs --detector-model."
        ),
    ] = Detector.dlib,
    detector_model: Annotated[
        Path | None,
        typer.Option(help="Detector weights: a SCRFD .onnx (e.g. det_10g.onnx) or another dlib 68-point .dat."),
    ] = None,
    rotate: Annotated[
        bool,
        typer.Option(help="When no face is found upright, look again on the photo turned 90/180/270 and +-45 degrees."),
    ] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace crops and JSON files that already exist.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Detect every face, align each to the FFHQ crop and write <stem>_face<k>.png plus <stem>.json.

    The JSON holds each face's box, five landmarks, crop quad and photo-to-crop 2x3 matrix (docs/align.md).

    A file that cannot be read or has no face is reported on stderr and skipped; then the exit code is 1.

    Example: mmfs align photos/ --outdir aligned --size 512
    """
    with guarded():
        from tqdm import tqdm

        from mmfs.data.images import SkippedFiles, expand_inputs, load_image, save_image
        from mmfs.errors import InputError, MMFSError, OutputError
        from mmfs.faces import build_detector, detect_and_align

        skipped = SkippedFiles()
        paths = list(expand_inputs(inputs, stdin_lines=stdin_lines() if "-" in inputs else None, skipped=skipped))
        if not paths:
            raise InputError("no input images found" + (f" ({skipped.describe()})" if skipped.count else ""))
        face_detector = build_detector(detector.value, detector_model, rotate=rotate)
        outdir.mkdir(parents=True, exist_ok=True)

        written: list[dict] = []
        errors: list[dict] = []
        used_stems: dict[str, int] = {}
        for path in tqdm(paths, desc="align", unit="img", disable=quiet, dynamic_ncols=True):
            stem = _unique_stem(path.stem, used_stems)
            try:
                image = load_image(path)
                json_path = outdir / f"{stem}.json"
                _refuse_existing([json_path], overwrite)
                try:
                    faces = detect_and_align(image, face_detector, size)
                except InputError as exc:
                    raise InputError(f"{path}: {exc}") from None
                crops = [outdir / f"{stem}_face{k}.png" for k in range(len(faces))]
                _refuse_existing(crops, overwrite)
                for aligned, crop in zip(faces, crops, strict=True):
                    save_image(aligned.image, crop)
                record = _record(path, image.shape, size, detector.value, faces, crops)
                _write_json(json_path, record)
            except OutputError:
                raise  # disk full or read-only: every later image would fail the same way
            except MMFSError as exc:
                tqdm.write(f"error: {exc}", file=sys.stderr)
                errors.append({"input": str(path), "error": str(exc)})
                continue
            rotations = [a.face.rotation for a in faces]
            written.append({"input": str(path), "json": str(json_path), "crops": [str(c) for c in crops],
                            "rotations": rotations})  # fmt: skip

        n_faces = sum(len(w["crops"]) for w in written)
        if skipped.count and not quiet:
            echo_err(skipped.describe())
        if as_json:
            summary = {"ok": len(written), "failed": len(errors), "faces": n_faces, "outdir": str(outdir)}
            report = {**summary, "skipped_files": skipped.to_dict(), "outputs": written, "errors": errors}
            typer.echo(json.dumps(report, indent=2))
        elif not quiet:
            echo_err(f"aligned {n_faces} face(s) from {len(written)} image(s) into {outdir}; {len(errors)} failed")
        if not as_json:
            report_failures([e["error"] for e in errors])  # even with --quiet
        if errors:
            raise typer.Exit(EXIT_FAILED)


def _unique_stem(stem: str, used: dict[str, int]) -> str:
    """Two inputs with the same name (a/x.jpg, b/x.jpg) get x and x-2 rather than overwriting each other."""
    count = used.get(stem, 0) + 1
    used[stem] = count
    return stem if count == 1 else f"{stem}-{count}"


def _refuse_existing(paths: list[Path], overwrite: bool) -> None:
    from mmfs.errors import InputError

    if not overwrite:
        for p in paths:
            if p.exists():
                raise InputError(f"{p}: already exists; pass --overwrite to replace it")


def _record(path: Path, shape: tuple, size: int, detector: str, faces: list, crops: list[Path]) -> dict:
    """Everything needed to paste a crop back (full float precision, so the JSON reproduces the crop exactly)."""
    return {
        "format": FORMAT,
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


def _write_json(path: Path, record: dict) -> None:
    from mmfs.utils.files import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def register(app: typer.Typer) -> None:
    app.command("align")(align)

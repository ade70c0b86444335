"""Every published weight file mmfs can use, by a short name: what it is, where it is published, its terms.

A name goes wherever a file goes (`--checkpoint/-c`, `--prior`, `--init`, the Python loaders); the first
use downloads, checks and converts it (`mmfs.pretrained`). This module is only the data: it imports
nothing heavy, so `mmfs --help` and the option checks can read it.

Sources are recorded as the publishers give them: the Google Drive file ids and Baidu Netdisk links of
the official MMFS README (github.com/dong-y21/MMFS, mirrored as github.com/mmfs-paper/MMFS), and a
direct URL where one exists. Baidu links are for people who fetch by hand (`mmfs models add`); they need
a browser and the access code in the link. No sha256 is recorded for the published files here: mmfs has
never downloaded them, so each one's sha256 is recorded at its first download (`mmfs.pretrained`).
"""

from __future__ import annotations

from dataclasses import dataclass

MMFS_README = "https://github.com/dong-y21/MMFS"
# The official README names no licence, and its repository has no licence file.
MMFS_TERMS = (
    "no licence stated (the official MMFS repository has none); trained from NVIDIA's StyleGAN2 FFHQ model"
    " (Nvidia Source Code License-NC: non-commercial)"
)

KINDS = {
    "stylizer": "multi-modal Stylizer with CLIP mapper",
    "base": "Stage II base model (no mapper)",
    "one-shot": "one-shot adapted Stylizer",
    "zero-shot": "zero-shot adapted Stylizer",
    "prior": "StyleGAN2 prior",
    "clip": "CLIP image/text encoder",
}
# How a file is read and converted: the official MMFS `save_networks` dict, rosinality's StyleGAN2 dict,
# or open_clip's state dict.
LAYOUTS = ("mmfs", "rosinality", "open_clip")


@dataclass(frozen=True)
class Model:
    """One published file and what mmfs makes of it.

    Attributes:
        name: what a person types (`mmfs`, `pop-art`, `stylegan2-ffhq`).
        kind: a key of `KINDS`.
        summary: one line: what it is and what it was trained or adapted to.
        filename: the published file's name (a mirror holds it under this name).
        layout: a member of `LAYOUTS`.
        network: the `mmfs.config.PRESETS` name its tensors must fit (checked before conversion).
        gdrive: the publisher's Google Drive file id, or None.
        urls: direct download URLs, tried after Google Drive.
        manual: pages for fetching by hand (Baidu Netdisk, with its access code in the link).
        licence: the terms the file comes with.
        origin: who published it, and where the sources above were read.
        size_mb: about how large the download is (from a file of the same layout), for `mmfs models list`.
        text: for a zero-shot model, the prompt it was adapted to (its default style).
        ref: for a one-shot model, the reference image it was adapted to (in the official repository).
        sha256: the published file's sha256 when known (else recorded at the first download).
    """

    name: str
    kind: str
    summary: str
    filename: str
    layout: str
    network: str
    gdrive: str | None = None
    urls: tuple[str, ...] = ()
    manual: tuple[str, ...] = ()
    licence: str = MMFS_TERMS
    origin: str = f"the MMFS authors (Li, Dong, Lin, Huang, Wan, Ma; PG 2023): {MMFS_README}"
    size_mb: int = 0
    text: str | None = None
    ref: str | None = None
    sha256: str | None = None

    @property
    def sources(self) -> tuple[str, ...]:
        """Where the file can be downloaded, in the order tried (Google Drive first)."""
        drive = (gdrive_url(self.gdrive),) if self.gdrive else ()
        return drive + self.urls

    @property
    def with_mapper(self) -> bool:
        """True when the file holds a CLIP mapper (the text and reference styles)."""
        return self.kind in ("stylizer", "one-shot", "zero-shot")


def gdrive_url(file_id: str) -> str:
    """The page of a Google Drive file, as a person opens it."""
    return f"https://drive.google.com/file/d/{file_id}/view"


def _release(name: str, kind: str, summary: str, filename: str, gdrive: str, baidu: str, **extra) -> Model:
    """An official MMFS release: its `save_networks` dict of a 512 px Stylizer, from the official README."""
    size = 650 if kind == "base" else 850  # G, G_ema, D and their Adam states; with the mapper
    return Model(name, kind, summary, filename, "mmfs", "ffhq512", gdrive=gdrive, manual=(baidu,), size_mb=size,
                 **extra)  # fmt: skip


_REFERENCE = "example/reference/{:02d}.png of the official MMFS repository"

MODELS: dict[str, Model] = {
    m.name: m
    for m in (
        _release(
            "mmfs", "stylizer",
            "the MMFS model: Stage II on AAHQ plus the CLIP mapper (random, text and reference styles); phase 3",
            "phase3_pretrain_10000.pth", "12AfgFfOs8PjagtYwglmO9bquO2AEzPof",
            "https://pan.baidu.com/s/1w2OLkAUSPQbwxXu_30naCw?pwd=ncm9",
        ),
        _release(
            "mmfs-phase2", "base",
            "the Stage II base model on AAHQ (random styles only, no mapper); phase 2",
            "phase2_pretrain_90000.pth", "1jPXIR5UqkWS7chsMZ-SR-yAs0WIGCO3p",
            "https://pan.baidu.com/s/1rz7rPjngmdcL28sWwPJmKw?pwd=2xsg",
        ),
        *(
            _release(
                f"ref{i:02d}", "one-shot", f"one-shot adapted to the README's reference {i:02d} ({_REFERENCE.format(i)})",
                f"example_ref{i:02d}.pth", gdrive, baidu, ref=_REFERENCE.format(i),
            )
            for i, gdrive, baidu in (
                (1, "1nip981zqzASsPu6EiRRXBYvHOAosqPMj", "https://pan.baidu.com/s/1S2YCXh14hLq2bILW3asmQw?pwd=wjmd"),
                (2, "1Lq1PqeHKWbNgoIFsCHCSzXPIKmHRDtlh", "https://pan.baidu.com/s/17uclEk1bPOmwjDDtU9rtuQ?pwd=qvjx"),
                (3, "1UCBpnT7BC4fd1l7vu7YalyPz8ugPbom8", "https://pan.baidu.com/s/1ma6ueCq0o45mWEC8uSnecg?pwd=37md"),
                (4, "1qEjDFsX-z1anpDr54dP5VG2LmSS1DU3R", "https://pan.baidu.com/s/1Q60Jejc9EuE3lDr7-mPv1w?pwd=x8d4"),
            )
        ),
        _release(
            "pop-art", "zero-shot", 'zero-shot adapted to the prompt "pop art"',
            "pop_art.pth", "17a0OJjF4PuSCIouDMnVuc5iiGLRPZhOx",
            "https://pan.baidu.com/s/1hkjJQrwIPHWEasZmL3aViA?pwd=4uxi", text="pop art",
        ),
        _release(
            "watercolor", "zero-shot", 'zero-shot adapted to the prompt "watercolor painting"',
            "watercolor_painting.pth", "1QGgzsiXQgJt_gjRMFQbv5_qS0kgntzBV",
            "https://pan.baidu.com/s/1kQHr0Plbcux9cZ9GOdfWNA?pwd=atve", text="watercolor painting",
        ),
        Model(
            "stylegan2-ffhq", "prior",
            "StyleGAN2 config-f on FFHQ at 1024 px, in rosinality's layout: the prior training starts from",
            "stylegan2-ffhq-config-f.pt", "rosinality", "ffhq1024",
            # rosinality's README links only a folder; this id is the converted file the pSp / e4e READMEs publish.
            gdrive="1EM87UquaoQmk17Q8d5kYIAHqu0dkYqdT",
            licence="Nvidia Source Code License-NC (non-commercial), as NVIDIA's StyleGAN2 release it is converted from",
            origin="NVIDIA's stylegan2-ffhq-config-f.pkl converted by rosinality's convert_weight.py; Google Drive id"
            " from the pixel2style2pixel README (github.com/eladrich/pixel2style2pixel, 'FFHQ StyleGAN')",
            size_mb=380,
        ),
        Model(
            "clip-vit-b-32", "clip",
            "OpenAI's CLIP ViT-B/32 (open_clip ViT-B-32, tag openai): the CLIP the mapper was trained with",
            "open_clip_pytorch_model.bin", "open_clip", "",
            urls=("https://huggingface.co/timm/vit_base_patch32_clip_224.openai/resolve/main/open_clip_pytorch_model.bin",),
            licence="MIT (OpenAI's CLIP)",
            origin="OpenAI (github.com/openai/CLIP), as open_clip's pretrained table stores it on the Hugging Face hub"
            " (timm/vit_base_patch32_clip_224.openai)",
            size_mb=605,
        ),
    )
}  # fmt: skip

DEFAULT_STYLIZER = "mmfs"
# The CLIP a mapper is read with unless told otherwise: open_clip's (architecture, tag) of this entry.
CLIP_FOR = {("ViT-B-32", "openai"): "clip-vit-b-32"}


def is_model_name(value: object) -> bool:
    """True when `value` is a catalogue name (a path is never one: names have no separator and no suffix)."""
    return isinstance(value, str) and value in MODELS


def names(kind: str | None = None) -> list[str]:
    """The catalogue's names (of one kind)."""
    return [n for n, m in MODELS.items() if kind is None or m.kind == kind]


def default_text(value: object) -> str | None:
    """The prompt a zero-shot catalogue model was adapted to (its style when none is given), else None."""
    return MODELS[value].text if is_model_name(value) else None

"""Random-weight stand-ins for every public weight file mmfs documents, in the real container and layout.

No pretrained file can be downloaded here, yet the commands must work on the files a researcher gets.
Each stand-in has the container (torch.save pickle, TorchScript zip, safetensors, ONNX), the keys, the
shapes and the dtypes of the published file, with random numbers inside. Each network is built by its
own library (open_clip, timm, torchvision, torch-fidelity, lpips, torch.onnx) so that the container
is the one that library writes; the StyleGAN2 files use our rosinality-keyed modules plus the blur
kernels rosinality persists, and the official MMFS files are written from the hand-made key table in
`tests/support/official_layout.py`.

    cd tests && python -m support.standins DIR [NAME ...]     # writes the missing ones; prints DIR/NAME per file

Files are written atomically and kept: a second run only writes what is missing (all of them again
after `STANDINS_VERSION` changes).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from mmfs.utils.files import atomic_path

# torch's default pickle protocol (2), as every published torch.save file of these projects.
Writer = Callable[[Path], None]


def _with_kernels(module: nn.Module) -> dict[str, torch.Tensor]:
    """A rosinality state dict: our weights plus the blur-kernel buffers rosinality persists."""
    state = dict(module.state_dict())
    state.update({name: buf.clone() for name, buf in module.named_buffers() if name.endswith("kernel")})
    return state


def write_rosinality_ffhq1024(path: Path) -> None:
    """`stylegan2-ffhq-config-f.pt`: rosinality's converted FFHQ 1024 release (`g`, `g_ema`, `d`, `latent_avg`)."""
    from mmfs.config import PRESETS
    from mmfs.nn import Discriminator, Generator

    cfg = PRESETS["ffhq1024"]  # 1024 px, 8 mapping layers, channel multiplier 2: config-f
    torch.manual_seed(0)
    g = Generator(cfg)
    # rosinality's convert_weight.py writes g_ema and latent_avg, then g (--gen) and d (--disc), in this order.
    obj = {"g_ema": _with_kernels(g), "latent_avg": torch.randn(cfg.w_dim)}
    obj["g"] = {k: v.clone() for k, v in obj["g_ema"].items()}  # its own storage, as in the release
    obj["d"] = _with_kernels(Discriminator(cfg))
    _save(obj, path)


def _adam_and_scheduler(tensors: dict[str, torch.Tensor], lr: float) -> tuple[dict, dict]:
    """State dicts of a torch Adam that has taken one step over `tensors`, and of its LambdaLR."""
    params = [torch.zeros_like(v, requires_grad=True) for k, v in tensors.items() if not k.endswith("kernel")]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.0, 0.99))
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0)
    return opt.state_dict(), scheduler.state_dict()


def _official_release(path: Path, *, with_mapper: bool, total_iters: int, seed: int) -> None:
    """An official MMFS `save_networks` file: G / G_ema / D state dicts, optimizers, schedulers, counters."""
    from .official_layout import official_discriminator_shapes, official_stylizer_shapes, official_tensors

    gen = torch.Generator().manual_seed(seed)
    g_ema = official_tensors(official_stylizer_shapes(with_mapper), gen)
    d = official_tensors(official_discriminator_shapes(), gen)
    g = {
        k: v + 0.01 * torch.randn(v.shape, generator=gen) if not k.endswith("kernel") else v.clone()
        for k, v in g_ema.items()
    }
    opt_g, sched_g = _adam_and_scheduler(g, 2e-3)
    opt_d, sched_d = _adam_and_scheduler(d, 2e-3)
    obj = {
        "G_model": g,
        "G_ema_model": g_ema,
        "D_model": d,
        "optimizer_0": opt_g,
        "optimizer_1": opt_d,
        "scheduler_0": sched_g,
        "scheduler_1": sched_d,
        "epoch": total_iters,
        "total_iters": total_iters,
        "metric": 0.0,
    }
    _save(obj, path)


def write_phase2(path: Path) -> None:
    """`phase2_pretrain_90000.pth`: the Stage II base model (AAHQ), no CLIP mapper."""
    _official_release(path, with_mapper=False, total_iters=90_000, seed=2)


def write_phase3(path: Path) -> None:
    """`phase3_pretrain_10000.pth`: the base model with its trained CLIP mapper."""
    _official_release(path, with_mapper=True, total_iters=10_000, seed=3)


def write_one_shot(path: Path) -> None:
    """`example_ref01.pth`: a one-shot (phase 4) model, fine-tuned from phase 3, mapper included."""
    _official_release(path, with_mapper=True, total_iters=200, seed=4)


def write_zero_shot(path: Path) -> None:
    """`pop_art.pth`: a zero-shot (phase 4) model; the same layout as a one-shot one, mapper included."""
    _official_release(path, with_mapper=True, total_iters=200, seed=5)


def _openai_clip():
    """open_clip's ViT-B-32 with QuickGELU: the architecture of OpenAI's CLIP ViT-B/32."""
    import open_clip

    torch.manual_seed(0)
    return open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True).eval()


def write_open_clip_bin(path: Path) -> None:
    """`open_clip_pytorch_model.bin` (hf timm/vit_base_patch32_clip_224.openai): open_clip's state dict."""
    _save(_openai_clip().state_dict(), path)


class _OpenAIArchive(nn.Module):
    """CLIP's own sub-modules and parameters at the top level, plus OpenAI's three size tensors.

    open_clip keeps `context_length` and `vocab_size` as plain attributes, so the traced module is this
    wrapper: it holds the same modules under the same names and calls CLIP's encoders.
    """

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "clip", clip)  # not a sub-module: its children are registered directly
        self._modules.update(clip._modules)
        self._parameters.update(clip._parameters)
        # TorchScript saves every buffer; open_clip's non-persistent attn_mask becomes a traced constant instead.
        self._buffers.update({k: v for k, v in clip._buffers.items() if k not in clip._non_persistent_buffers_set})
        for name, value in (("input_resolution", 224), ("context_length", 77), ("vocab_size", 49408)):
            self.register_buffer(name, torch.tensor(value))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.clip.encode_image(image), self.clip.encode_text(text)


def write_openai_clip_jit(path: Path) -> None:
    """`ViT-B-32.pt` (OpenAI's release): a TorchScript archive of a traced CLIP.

    OpenAI's archive is the traced `clip.model.CLIP`, whose state dict has open_clip's keys plus the
    `input_resolution`, `context_length` and `vocab_size` tensors; this trace has the same state dict.
    """
    archive = _OpenAIArchive(_openai_clip())
    image = torch.zeros(1, 3, 224, 224)
    text = torch.zeros(1, 77, dtype=torch.long)
    traced = torch.jit.trace(archive, (image, text), check_trace=False)
    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp))


def _dino_vitb8() -> nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_base_patch8_224", pretrained=False, num_classes=0).eval()


def write_dino_hub(path: Path) -> None:
    """`dino_vitbase8_pretrain.pth` (torch.hub facebookresearch/dino): the backbone state dict, no head."""
    _save(_dino_vitb8().state_dict(), path)


def write_dino_timm(path: Path) -> None:
    """timm's `model.safetensors` for `vit_base_patch8_224.dino`."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in _dino_vitb8().state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})


class _IBasicBlock(nn.Module):
    """insightface's iresnet block: BN, conv3x3, BN, PReLU, conv3x3 (stride), BN, plus a projection skip."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet50(nn.Module):
    """The ArcFace r50 backbone of insightface's `w600k_r50.onnx`: 112x112 RGB -> 512-d embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU(64)
        blocks, cin = [], 64
        for cout, depth in ((64, 3), (128, 4), (256, 14), (512, 3)):
            for i in range(depth):
                blocks.append(_IBasicBlock(cin, cout, 2 if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.bn2 = nn.BatchNorm2d(512)
        self.fc = nn.Linear(512 * 7 * 7, 512)
        self.features = nn.BatchNorm1d(512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.prelu(self.bn1(self.conv1(x))))
        return self.features(self.fc(torch.flatten(self.bn2(x), 1)))


# w600k_r50.onnx (buffalo_l): input "input.1" [None, 3, 112, 112] float32, output "683" [1, 512].
ARCFACE_INPUT = "input.1"
ARCFACE_OUTPUT = "683"


def write_arcface_onnx(path: Path) -> None:
    """`w600k_r50.onnx`: an iresnet50 exported to ONNX with the release's input and output names."""
    import onnx

    torch.manual_seed(0)
    net = IResNet50().eval()
    with atomic_path(path) as tmp:
        # The legacy exporter rejects a numeric output name, so the output is renamed in the graph after export.
        torch.onnx.export(
            net,
            (torch.zeros(1, 3, 112, 112),),
            str(tmp),
            input_names=[ARCFACE_INPUT],
            output_names=["embedding"],
            dynamic_axes={ARCFACE_INPUT: {0: "None"}},
            opset_version=11,
            dynamo=False,
        )
        model = onnx.load(str(tmp))
        for node in model.graph.node:
            node.output[:] = [ARCFACE_OUTPUT if name == "embedding" else name for name in node.output]
        model.graph.output[0].name = ARCFACE_OUTPUT
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))


def write_fid_inception(path: Path) -> None:
    """torch-fidelity's `weights-inception-2015-12-05-6726825d.pth` (pytorch-fid's `pt_inception-...` twin)."""
    from mmfs.external.inception import build_fid_inception, random_fid_inception_state_dict

    state = random_fid_inception_state_dict(seed=0)
    build_fid_inception(state)  # torch-fidelity's own network accepts it strictly
    _save(state, path)


def write_alexnet(path: Path) -> None:
    """torchvision's `alexnet-owt-7be5be79.pth`: the LPIPS backbone."""
    import torchvision

    torch.manual_seed(0)
    _save(torchvision.models.alexnet(weights=None).state_dict(), path, legacy=True)  # published 2017


def write_lpips_linear(path: Path) -> None:
    """lpips' `weights/v0.1/alex.pth`: the five linear layers `lin{0..4}.model.1.weight`, legacy container.

    The published file (shipped inside the lpips package) is a legacy torch stream whose storages are
    tagged `cuda`; without a GPU the stand-in's are tagged `cpu`.
    """
    from mmfs.external.lpips import build_lpips_alex

    torch.manual_seed(0)
    net = build_lpips_alex()
    lin = {k: torch.rand_like(v) for k, v in net.state_dict().items() if re.fullmatch(r"lin\d\.model\.1\.weight", k)}
    _save(lin, path, legacy=True)


# Bump when a writer changes, so that cached stand-ins are written again.
STANDINS_VERSION = 5
# File name (as published) -> writer. The names are the ones the docs tell users to download.
STANDINS: dict[str, Writer] = {
    "stylegan2-ffhq-config-f.pt": write_rosinality_ffhq1024,
    "phase2_pretrain_90000.pth": write_phase2,
    "phase3_pretrain_10000.pth": write_phase3,
    "example_ref01.pth": write_one_shot,
    "pop_art.pth": write_zero_shot,
    "open_clip_pytorch_model.bin": write_open_clip_bin,
    "ViT-B-32.pt": write_openai_clip_jit,
    "dino_vitbase8_pretrain.pth": write_dino_hub,
    "model.safetensors": write_dino_timm,
    "w600k_r50.onnx": write_arcface_onnx,
    "weights-inception-2015-12-05-6726825d.pth": write_fid_inception,
    "alexnet-owt-7be5be79.pth": write_alexnet,
    "alex.pth": write_lpips_linear,
}


def ensure_standins(folder: str | os.PathLike[str], names: list[str] | None = None) -> dict[str, Path]:
    """Write every missing stand-in (or the `names` given) into `folder`; return name -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(names or ()) - set(STANDINS))
    if unknown:
        raise KeyError(f"no stand-in named {', '.join(unknown)}; known: {', '.join(STANDINS)}")
    stamp = folder / ".standins-version"
    if not stamp.is_file() or stamp.read_text().strip() != str(STANDINS_VERSION):
        for name in STANDINS:  # written by another version of this module: write them again
            (folder / name).unlink(missing_ok=True)
        stamp.write_text(f"{STANDINS_VERSION}\n")
    out = {}
    for name in names or list(STANDINS):
        path = folder / name
        if not path.is_file():
            STANDINS[name](path)
        out[name] = path
    return out


def _save(obj: object, path: Path, *, legacy: bool = False) -> None:
    """torch.save, atomically; `legacy`: the pre-1.6 stream format of files published before torch 1.6 (2020)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp, _use_new_zipfile_serialization=not legacy)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m support.standins", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("names", nargs="*", help=f"a subset of: {', '.join(STANDINS)}")
    args = parser.parse_args(argv)
    try:
        paths = ensure_standins(args.folder, args.names or None)
    except KeyError as exc:
        parser.error(exc.args[0])
    for path in paths.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

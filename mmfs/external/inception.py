"""The FID feature extractor: the standard "FID Inception" network behind one small wrapper.

The real network is torch-fidelity's `FeatureExtractorInceptionV3` (the TF-ported Inception-v3 with the
FIDInceptionA..E blocks, the same state dict as pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`).
It takes uint8 images of any size and resizes them to 299 px with its own TF1-exact bilinear filter, so
the wrapper hands it exactly that: our [-1, 1] images rounded to uint8 the way `save_image` rounds them.
A FID computed here therefore equals torch-fidelity's FID of the saved PNGs (same features, same
covariance; the Frechet formula is pytorch-fid's, see `mmfs.inference.metrics.fid`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from mmfs.data.images import to_uint8
from mmfs.errors import CheckpointError, MissingWeightsError, MMFSError
from mmfs.external.base import FrozenExternal
from mmfs.utils.files import file_sha256

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
# torch hub names files <stem>-<first 8 hex digits of their sha256>: this is the standard file's.
FID_WEIGHTS_SHA256_PREFIX = "6726825d"
FID_FEATURE_DIM = 2048
FID_INPUT_SIZE = 299
WEIGHTS_HINT = (
    f"{FID_WEIGHTS_FILE} (pytorch-fid's FID Inception weights, also torch-fidelity's "
    "weights-inception-2015-12-05-6726825d.pth); pass --inception-weights PATH"
)


class InceptionFeatures(FrozenExternal):
    """Images ([-1, 1] float or uint8, [B, 3, H, W]) -> FID features [B, D] float32, no gradients.

    `net` takes uint8 [B, 3, H, W] and returns [B, D] (or a tuple whose first item is that), and does
    its own resizing: torch-fidelity's Inception, or a tiny stand-in from `tiny_metrics`.
    `extractor_id` names the network and its weights; FID statistics carry it so that statistics of
    different extractors are never compared.
    """

    def __init__(
        self,
        net: nn.Module,  # uint8 images -> features
        *,
        feature_dim: int,  # D, the feature size
        extractor_id: str,  # e.g. "inception-v3-fid-2048:sha256=6726825d..."
    ) -> None:
        super().__init__()
        self.net = net
        self.feature_dim = feature_dim
        self.extractor_id = extractor_id
        self.freeze()

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            # The same rounding as saving a PNG, so in-memory and on-disk FIDs agree exactly.
            images = torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2)
        out = self.net(images.to(self.device))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.float()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Same as calling the module (the `FeatureExtractor` protocol of `mmfs.external.base`)."""
        return self(images)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str] | None, *, device: torch.device | str = "cpu"
    ) -> InceptionFeatures:
        """The standard FID Inception from a local .pth (read with weights_only=True) or .safetensors file."""
        if path is None:
            raise MissingWeightsError(f"FID needs {WEIGHTS_HINT}")
        path = Path(path)
        if not path.is_file():
            raise MissingWeightsError(f"{path}: no such file; FID needs {WEIGHTS_HINT}")
        digest = file_sha256(path)
        net = build_fid_inception(read_state_dict(path), source=str(path)).to(device)
        return cls(net, feature_dim=FID_FEATURE_DIM, extractor_id=f"inception-v3-fid-{FID_FEATURE_DIM}:sha256={digest}")

    @property
    def is_standard(self) -> bool:
        """True when the weights are the published FID Inception file (numbers comparable with papers)."""
        return f"sha256={FID_WEIGHTS_SHA256_PREFIX}" in self.extractor_id


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A flat tensor dict from .safetensors, or from a .pth/.pt pickle loaded with weights_only=True."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a checkpoint, or a pickle with arbitrary objects
        raise CheckpointError(
            f"{path}: cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return state


def build_fid_inception(state_dict: dict[str, torch.Tensor], *, source: str = "state dict") -> nn.Module:
    """torch-fidelity's FID Inception (2048-d pool features) holding `state_dict`."""
    try:
        import torch_fidelity.feature_extractor_inceptionv3 as fidelity
    except ImportError:
        raise MMFSError("FID needs torch-fidelity: pip install 'mmfs[metrics]'") from None

    # torch-fidelity's constructor loads its weights itself: `torch.load(path, weights_only=False)` (an
    # unpickling) or, without a path, its module-level `load_state_dict_from_url`. We already read the
    # file safely, so that one name is pointed at our tensor dict while the network is built: the
    # constructor then calls its own strict `load_state_dict` on it, nothing is pickled or downloaded.
    tensors = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    download = fidelity.load_state_dict_from_url
    fidelity.load_state_dict_from_url = lambda *args, **kwargs: tensors
    try:
        return fidelity.FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=None
        )
    except RuntimeError as exc:  # missing/unexpected keys or wrong shapes
        raise CheckpointError(
            f"{source}: not FID Inception weights ({str(exc).splitlines()[0]}); FID needs {WEIGHTS_HINT}"
        ) from None
    finally:
        fidelity.load_state_dict_from_url = download


def random_fid_inception_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with the FID Inception's exact keys and shapes (tests, benchmarks; meaningless numbers)."""
    import torchvision

    # torchvision's Inception-v3 without aux logits and with 1008 classes has the same parameters as the
    # FID network (the FID blocks differ only in pooling, which has no weights); on "meta" it costs nothing.
    with torch.device("meta"):
        net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, meta in net.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        if meta.dim() > 1:  # He-scaled weights keep activations O(1) through the identity batch norms
            state[key] = torch.randn(meta.shape, generator=generator) * (2.0 / meta[0].numel()) ** 0.5
        elif key.endswith(("running_var", "bn.weight")):
            state[key] = torch.ones(meta.shape)
        else:
            state[key] = torch.zeros(meta.shape)
    return state

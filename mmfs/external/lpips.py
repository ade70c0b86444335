"""LPIPS (AlexNet, v0.1) through the `lpips` package: a perceptual distance per image pair.

The reference trains with no LPIPS term; mmfs uses it for the LPIPS-diversity metric. LPIPS takes
[-1, 1] images directly (its own scaling layer does the normalisation) at any size of at least 32 px.
The linear heads ship inside the `lpips` package; only torchvision's AlexNet backbone
(`alexnet-owt-7be5be79.pth`) is needed, which we always load ourselves so nothing is downloaded.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmfs.errors import MissingWeightsError
from mmfs.external.base import FrozenExternal, check_images, require_file

WEIGHTS_FLAG = "--lpips-weights"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"
# torchvision `features.{i}` -> lpips `slice{k}.{i}`: the layer ranges lpips splits AlexNet at.
_SLICE_ENDS = (2, 5, 8, 10, 12)


class Lpips(FrozenExternal):
    """A frozen `lpips.LPIPS` network: `distance(x, y) -> [B]` on [-1, 1] images of equal size.

    Args:
        net: a built `lpips.LPIPS` module.
    """

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net
        self.freeze()

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        """LPIPS distance of each pair `(x[b], y[b])`: `[B]`."""
        check_images(x, "x")
        check_images(y, "y")
        if x.shape != y.shape:
            raise ValueError(f"LPIPS needs images of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        return self.net(x, y).flatten()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Same as `distance`."""
        return self.distance(x, y)

    @classmethod
    def from_pretrained(
        cls, weights: str | os.PathLike[str] | None = None, *, device: str | torch.device = "cpu"
    ) -> Lpips:
        """LPIPS-alex with the AlexNet backbone from `weights`, or from the torch hub cache when None."""
        if weights is None:
            path = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
            if not path.is_file():
                raise MissingWeightsError(
                    f"LPIPS needs the AlexNet weights {ALEXNET_FILE}: download {ALEXNET_URL} "
                    f"into {path.parent} or pass {WEIGHTS_FLAG} PATH"
                )
        else:
            path = require_file(weights, f"LPIPS AlexNet weights ({ALEXNET_FILE})", WEIGHTS_FLAG)
        net = build_lpips_alex()
        net.net.load_state_dict(alexnet_to_lpips_keys(_load_state_dict(path)), strict=True)
        return cls(net).to(device)


def build_lpips_alex() -> Any:
    """`lpips.LPIPS(net="alex")` with the package's linear heads on a random (not downloaded) backbone."""
    import lpips

    with warnings.catch_warnings():
        # torchvision deprecates the `pretrained=` keyword lpips still passes.
        warnings.simplefilter("ignore", UserWarning)
        return lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)


def alexnet_to_lpips_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map torchvision AlexNet keys (`features.3.weight`) to lpips' (`slice2.3.weight`); drop the classifier."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("slice"):  # already in lpips layout
            out[key] = value
        elif key.startswith("features."):
            index = int(key.split(".")[1])
            slice_no = next(k for k, end in enumerate(_SLICE_ENDS, start=1) if index < end)
            out[f"slice{slice_no}.{key[len('features.') :]}"] = value
    return out


def _load_state_dict(path: Path) -> dict[str, Tensor]:
    """A state dict from `.safetensors`, or from a `.pth` pickle restricted to tensors."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: one line for the user
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise MissingWeightsError(
            f"{path}: not a readable AlexNet state dict ({reason}); check {WEIGHTS_FLAG}"
        ) from None

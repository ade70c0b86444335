"""Fetch a test model in a process of its own (two at once, or one to SIGKILL): `python -m support.fetch_model FILE`.

FILE is a tiny rosinality prior that the test serves; it is registered as catalogue model `tiny-prior`
(see `tiny_prior_entry`), then fetched through `mmfs.pretrained.model_file` with the environment's
MMFS_HOME and MMFS_MODEL_MIRROR. Prints the converted file's path.
"""

from __future__ import annotations

import sys

from mmfs import catalogue
from mmfs.catalogue import Model


def tiny_prior_entry(filename: str = "tiny-prior.pt", **changes) -> Model:
    """A catalogue entry for a tiny StyleGAN2 prior in rosinality's layout (the `tiny64` preset)."""
    fields = dict(name="tiny-prior", kind="prior", summary="a tiny StyleGAN2 prior (tests)", filename=filename,
                  layout="rosinality", network="tiny64", licence="test data", origin="tests", size_mb=1)  # fmt: skip
    return Model(**{**fields, **changes})


if __name__ == "__main__":
    from mmfs.pretrained import model_file

    catalogue.MODELS["tiny-prior"] = tiny_prior_entry(sys.argv[1])
    print(model_file("tiny-prior", progress=False))

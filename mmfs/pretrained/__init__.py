"""The published models by name: fetched, checked and converted on first use, then reused from a cache.

    from mmfs.pretrained import model_file
    model_file("mmfs")          # ~/.cache/mmfs/models/mmfs.safetensors (downloaded the first time)

`mmfs.catalogue` says what each name is; `cache` where files live (`MMFS_HOME`, `MMFS_MODEL_MIRROR`);
`fetch` downloads an original (mirror, Google Drive, direct URLs; resumed, locked); `check` reads the
original without unpickling it; `store` ties them together (`model_file`, `add`, `remove`, `status`).
Importing this package is cheap; torch is imported when a file is converted.
"""

from mmfs.pretrained.store import add, clip_weights, model_file, remove, resolve_file, status

__all__ = ["add", "clip_weights", "model_file", "remove", "resolve_file", "status"]

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmfs.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    load_state_strict,
    module_state,
    read_metadata,
    save_checkpoint,
)
from mmfs.config import PRESETS, ModelConfig
from mmfs.errors import CheckpointError


def test_round_trip_is_bit_exact_with_config_and_meta(tmp_path):
    tensors = {"a.weight": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64), "h": torch.randn(2).half()}
    path = save_checkpoint(
        tmp_path / "x.safetensors", tensors, kind="stylizer", config=PRESETS["tiny"], meta={"step": 7}
    )
    ckpt = load_checkpoint(path, kind="stylizer")
    assert ckpt.kind == "stylizer"
    assert ckpt.config == PRESETS["tiny"]
    assert ckpt.meta == {"step": "7"}
    assert set(ckpt.tensors) == set(tensors)
    for k, v in tensors.items():
        assert ckpt.tensors[k].dtype == v.dtype
        assert torch.equal(ckpt.tensors[k], v)
    assert read_metadata(path)["mmfs.format_version"] == FORMAT_VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]  # no temp file left behind


def test_wrong_kind_missing_truncated_and_foreign_files_are_clear(tmp_path):
    path = save_checkpoint(tmp_path / "p.safetensors", {"w": torch.zeros(100, 100)}, kind="prior")
    with pytest.raises(CheckpointError, match="is a 'prior' checkpoint, expected 'stylizer'"):
        load_checkpoint(path, kind="stylizer")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.safetensors")
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(truncated)
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(garbage)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="not an mmfs checkpoint"):
        load_checkpoint(tmp_path / "foreign.safetensors")


def test_strict_loading_names_the_first_mismatches():
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    state = module_state(net)
    other = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    load_state_strict(other, state)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values(), strict=True))
    bad = dict(state)
    bad["0.weight"] = torch.zeros(4, 2)
    del bad["1.bias"]
    bad["extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_state_strict(other, bad, source="x.safetensors")
    message = str(err.value)
    assert "missing 1.bias" in message and "unexpected extra" in message and "0.weight (4, 2) != (3, 2)" in message
    assert "\n" not in message


def test_module_state_strips_compile_and_ddp_prefixes():
    net = nn.Linear(2, 2)
    compiled = torch.compile(net)
    assert set(module_state(compiled)) == {"weight", "bias"}


def test_model_config_json_round_trip_and_validation():
    for cfg in PRESETS.values():
        assert ModelConfig.from_json(cfg.to_json()) == cfg
    assert PRESETS["ffhq512"].num_ws == 10 and PRESETS["ffhq512"].prior_num_ws == 16
    assert PRESETS["ffhq512"].prior_ws_offset == 6
    assert [PRESETS["ffhq512"].channels(r) for r in (32, 64, 128, 256, 512)] == [512, 512, 256, 128, 64]
    with pytest.raises(ValueError, match="power of two"):
        ModelConfig(resolution=500)
    with pytest.raises(ValueError, match="unknown model config keys: bogus"):
        ModelConfig.from_dict({"bogus": 1})


def test_the_package_writes_no_pickle():
    """Everything mmfs writes is safetensors/JSON/images: no `torch.save` or `pickle.dump` in its sources
    (stand-ins of upstream pickled files are written by tests/support, outside the package)."""
    import re
    from pathlib import Path

    import mmfs
    import mmfs_cli

    writers = re.compile(r"\btorch\.save\(|\bpickle\.dumps?\(|\btorch\.jit\.save\(")
    found = [
        f"{path}:{number}"
        for package in (mmfs, mmfs_cli)
        for path in Path(package.__file__).parent.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if writers.search(line)
    ]
    assert found == []

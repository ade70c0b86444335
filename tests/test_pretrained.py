"""Published models by name: fetched from a real HTTP server on 127.0.0.1, checked, converted, and every fault.

The served file is a tiny StyleGAN2 prior in rosinality's own layout (the catalogue's `stylegan2-ffhq` at
the `tiny64` preset, 3 MB: more than gdown's 512 kB chunks, so a dropped transfer has bytes to resume from): the fault logic does not need full-size weights. The real-size tier runs the published
names on full-size stand-ins (tests/test_realsize.py).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mmfs import catalogue
from mmfs.errors import CheckpointError, MissingWeightsError, MMFSError, OptionError, OutputError
from mmfs.pretrained import add, cache, fetch, model_file, remove, resolve_file
from mmfs_cli.app import app
from support.fetch_model import tiny_prior_entry
from support.model_server import ModelServer

TESTS = Path(__file__).resolve().parent
NAME, FILE = "tiny-prior", "tiny-prior.pt"


def write_tiny_prior(path: Path, *, seed: int = 0, preset: str = "tiny64") -> Path:
    """rosinality's layout: `g_ema` and `d` state dicts with their blur kernels, as torch.save writes them."""
    from mmfs.config import PRESETS
    from mmfs.nn import Discriminator, Generator

    torch.manual_seed(seed)

    def upstream(module: torch.nn.Module) -> dict:
        state = dict(module.state_dict())
        state.update({k: b.clone() for k, b in module.named_buffers() if k.endswith("kernel")})
        return state

    cfg = PRESETS[preset]
    torch.save({"g_ema": upstream(Generator(cfg)), "d": upstream(Discriminator(cfg)), "latent_avg": torch.zeros(32)},
               path)  # fmt: skip
    return path


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A server holding the tiny prior, registered as catalogue model `tiny-prior` and set as the mirror."""
    monkeypatch.setenv("MMFS_HOME", str(tmp_path / "home"))  # each test starts with an empty cache
    folder = tmp_path / "mirror"
    folder.mkdir()
    write_tiny_prior(folder / FILE)
    monkeypatch.setitem(catalogue.MODELS, NAME, tiny_prior_entry(FILE))
    monkeypatch.setattr(fetch, "RETRIES", 1)  # gdown's backoff between retries is random, up to seconds
    with ModelServer(folder) as server:
        monkeypatch.setenv("MMFS_MODEL_MIRROR", server.url)
        yield server


def no_file_under_final_names() -> bool:
    return not cache.model_path(NAME).exists() and not (cache.downloads_dir() / FILE).exists()


def test_first_use_downloads_checks_converts_then_reuses_without_downloading(served):
    from mmfs.checkpoint import load_checkpoint

    stale = cache.models_dir() / f".{NAME}.x1y2.partial.safetensors"  # what a conversion killed midway leaves
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    path = model_file(NAME, progress=False)
    assert not stale.exists()
    assert path == cache.model_path(NAME) and load_checkpoint(path, kind="prior").config.resolution == 64
    record = json.loads(cache.record_path(NAME).read_text())
    assert record["source"] == served.url + FILE and len(record["source_sha256"]) == 64
    assert not (cache.downloads_dir() / FILE).exists()  # the original is deleted once converted
    assert model_file(NAME, progress=False) == path
    assert served.gets(FILE) == [""]  # one download, then the cache


def test_a_mirror_folder_is_read_in_place_and_the_original_can_be_kept(served, monkeypatch):
    monkeypatch.setenv("MMFS_MODEL_MIRROR", str(served.folder))
    assert model_file(NAME, progress=False).is_file() and served.requests == []
    assert (served.folder / FILE).is_file()  # the mirror's file is never moved or deleted
    monkeypatch.setenv("MMFS_MODEL_MIRROR", served.url)
    cache.model_path(NAME).unlink()
    model_file(NAME, progress=False, keep_original=True)
    assert (cache.originals_dir() / FILE).read_bytes() == (served.folder / FILE).read_bytes()


def test_a_dropped_connection_is_resumed_where_it_stopped(served):
    served.fault, served.drops = "drop", 1
    model_file(NAME, progress=False)
    first, second = served.gets(FILE)
    offset = int(second.removeprefix("bytes=").rstrip("-"))
    size = (served.folder / FILE).stat().st_size
    assert first == "" and 0 < offset <= size // 2  # the second request asks only for the bytes not yet written


def test_a_connection_that_keeps_dropping_fails_in_one_line_and_the_next_run_resumes(served):
    served.fault = "drop"
    with pytest.raises(MissingWeightsError) as caught:
        model_file(NAME, progress=False)
    message = str(caught.value)
    assert "\n" not in message and f"model '{NAME}' ({FILE})" in message and "kept dropping" in message
    assert f"mmfs models add {NAME} {FILE}" in message
    assert no_file_under_final_names()
    assert len(list(cache.downloads_dir().glob(f"{FILE}*.part"))) == 1  # kept for the next run
    served.fault = None
    model_file(NAME, progress=False)
    assert served.gets(FILE)[-1].startswith("bytes=") and served.gets(FILE)[-1] != "bytes=0-"


def test_a_mirror_that_ignores_range_starts_a_dropped_download_again(served):
    served.ranges, served.fault, served.drops = False, "drop", 1  # a plain HTTP server: http.server ignores Range
    assert model_file(NAME, progress=False).is_file()  # dropped once, not resumable: fetched whole again
    assert served.gets(FILE)[-1] == "" and no_partial_downloads()
    remove(NAME)
    served.fault, served.drops = "drop", -1
    with pytest.raises(MissingWeightsError):
        model_file(NAME, progress=False)  # keeps dropping: the bytes so far are kept, as for any server
    served.fault = None
    assert model_file(NAME, progress=False).is_file()  # the next run cannot resume them here: starts again
    assert no_partial_downloads()


def no_partial_downloads() -> bool:
    return not list(cache.downloads_dir().glob(f"{FILE}*.part"))


def test_an_html_page_instead_of_the_file_is_deleted_with_one_line(served):
    served.fault = "html"
    with pytest.raises(CheckpointError, match=f"^{NAME}: {FILE} is an HTML page, not the checkpoint"):
        model_file(NAME, progress=False)
    assert no_file_under_final_names() and not list(cache.downloads_dir().iterdir())


def test_a_truncated_file_is_refused_and_deleted(served):
    data = (served.folder / FILE).read_bytes()
    (served.folder / FILE).write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CheckpointError, match="is not a complete PyTorch checkpoint"):
        model_file(NAME, progress=False)
    assert no_file_under_final_names() and not list(cache.downloads_dir().iterdir())


def test_a_tensor_with_missing_bytes_is_found_without_unpickling(tmp_path):
    """A zip whose directory is intact but one tensor's bytes are cut short: foreign.tensor_layout names it."""
    from mmfs.foreign import tensor_layout

    whole = write_tiny_prior(tmp_path / "whole.pt")
    cut = tmp_path / "cut.pt"
    with zipfile.ZipFile(whole) as src, zipfile.ZipFile(cut, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data[: len(data) // 2] if info.filename.endswith("data/0") else data)
    layout = tensor_layout(whole)
    assert layout.keys == ("g_ema", "d", "latent_avg") and layout.missing == ()
    assert layout.tensors["g_ema.style.1.weight"] == (64, 64) and layout.tensors["latent_avg"] == (32,)
    assert len(tensor_layout(cut).missing) == 1


def test_a_tensor_record_that_is_not_numbers_is_refused_in_one_line(served, tmp_path):
    """A torch zip whose pickle gives a tensor a non-numeric offset (damage, or a hostile file): an error line."""
    import io
    import pickle

    import torch._utils

    class Storage:
        pass

    class Tensor:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (Storage(), "x", (2, 2), (2, 1), False, None)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", "FloatStorage", "0", "cpu", 4) if isinstance(obj, Storage) else None

    blob = io.BytesIO()
    Pickler(blob, protocol=2).dump({"g_ema": {"w": Tensor()}})
    odd = tmp_path / "odd.pt"
    with zipfile.ZipFile(odd, "w") as zf:
        zf.writestr("archive/data.pkl", blob.getvalue())
        zf.writestr("archive/data/0", bytes(16))
    with pytest.raises(MMFSError) as caught:
        add(NAME, odd)
    assert "odd.pt" in str(caught.value) and "\n" not in str(caught.value)
    assert not cache.model_path(NAME).exists()


def test_a_file_with_other_shapes_is_not_the_published_one(served):
    write_tiny_prior(served.folder / FILE, preset="tiny")
    with pytest.raises(
        CheckpointError,
        match="is not the published file: it lacks 20 of the 83 expected tensors \\(first: g_ema.style.3.weight\\)",
    ):
        model_file(NAME, progress=False)
    assert no_file_under_final_names()


def test_a_changed_sha256_is_refused(served, monkeypatch):
    monkeypatch.setitem(catalogue.MODELS, NAME, tiny_prior_entry(FILE, sha256="0" * 64))
    with pytest.raises(CheckpointError, match=f"has sha256 [0-9a-f]{{64}}, not the expected {'0' * 64}"):
        model_file(NAME, progress=False)
    assert no_file_under_final_names()
    # No sha256 in the catalogue: the one recorded at the first download is what a later download must match.
    monkeypatch.setitem(catalogue.MODELS, NAME, tiny_prior_entry(FILE))
    model_file(NAME, progress=False)
    cache.model_path(NAME).write_bytes(b"damaged")  # the cached file is checked on use: fetched again
    write_tiny_prior(served.folder / FILE, seed=1)  # ... but the server now has another file
    with pytest.raises(CheckpointError, match=f"not the expected .+ `mmfs models remove {NAME}`"):
        model_file(NAME, progress=False)
    assert no_file_under_final_names()


def test_a_full_disk_is_a_clear_error_and_leaves_nothing_behind(served, monkeypatch):
    import builtins

    class FullDisk:
        def __init__(self, path, mode):
            self.file = builtins.open(path, mode)

        def write(self, data):
            self.file.write(data[:100])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.file, name)

    gdown_module = sys.modules[__import__("gdown").download.__module__]
    monkeypatch.setattr(gdown_module, "open", FullDisk, raising=False)  # gdown's write of the download
    with pytest.raises(OutputError) as caught:
        model_file(NAME, progress=False)
    assert str(caught.value) == (
        f"cannot download {FILE} to {cache.downloads_dir()} (No space left on device); free some space or set "
        "MMFS_HOME to a folder on a larger disk"
    )
    assert no_file_under_final_names() and not list(cache.downloads_dir().iterdir())


def _fetch_in_a_process(served: ModelServer) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    return subprocess.Popen(
        [sys.executable, "-m", "support.fetch_model", FILE], cwd=TESTS, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_two_processes_fetching_at_once_download_once(served):
    served.pause_after = 1 << 20  # the first transfer holds after 1 MB until the second process waits for it
    first = _fetch_in_a_process(served)
    _wait_for(lambda: served.bytes_sent > 0)  # the first process holds the model's lock now
    second = _fetch_in_a_process(served)
    waiting = second.stderr.readline()
    assert waiting == "waiting for another mmfs process that is fetching tiny-prior ...\n"
    served.go.set()
    outs = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    assert outs[0][0] == outs[1][0] == f"{cache.model_path(NAME)}\n"
    assert served.gets(FILE) == [""]  # one download: the other process waited for it, then used it


def test_a_download_killed_midway_leaves_no_file_under_its_name_and_is_resumed(served, monkeypatch):
    served.pause_after = 1_500_000  # more than gdown's two 512 kB chunks, then the transfer holds
    child = _fetch_in_a_process(served)
    _wait_for(lambda: any(p.stat().st_size > 0 for p in cache.downloads_dir().glob(f"{FILE}*.part")))
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    served.pause_after = None
    served.go.set()
    assert child.returncode == -signal.SIGKILL
    monkeypatch.setitem(catalogue.MODELS, NAME, tiny_prior_entry(FILE))
    assert no_file_under_final_names()
    (part,) = cache.downloads_dir().glob(f"{FILE}*.part")
    kept = part.stat().st_size
    assert 0 < kept < (served.folder / FILE).stat().st_size
    model_file(NAME, progress=False)  # the next run (the lock died with the process) resumes the partial file
    assert served.gets(FILE)[-1] == f"bytes={kept}-" and not part.exists()


def test_ctrl_c_midway_keeps_the_partial_download_for_the_next_run(served, monkeypatch):
    def interrupt(self, done, total):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(fetch._progress_bar, "__call__", interrupt)  # Ctrl-C after the first chunk is written
        with pytest.raises(KeyboardInterrupt):
            model_file(NAME, progress=False)
    assert no_file_under_final_names()
    (part,) = cache.downloads_dir().glob(f"{FILE}*.part")
    kept = part.stat().st_size
    assert kept > 0
    model_file(NAME, progress=False)
    assert served.gets(FILE)[-1] == f"bytes={kept}-"  # gdown asks for the rest after its first look at the file


def _wait_for(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_offline_with_an_empty_cache_is_one_line_naming_the_model_and_the_add_command(tmp_path):
    import numpy as np
    from skimage.data import astronaut

    from mmfs.data.images import save_image

    save_image(np.ascontiguousarray(astronaut()), tmp_path / "face.jpg")
    result = CliRunner().invoke(app, ["stylize", str(tmp_path / "face.jpg"), "--text", "pop art"])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: model 'mmfs' (phase3_pretrain_10000.pth) is not in the cache")
    assert "drive.google.com/file/d/12AfgFfOs8PjagtYwglmO9bquO2AEzPof" in line and "pan.baidu.com" in line
    assert line.endswith("then run: mmfs models add mmfs phase3_pretrain_10000.pth")
    assert not cache.model_path("mmfs").exists()


def test_models_add_path_list_remove(served, tmp_path, monkeypatch):
    monkeypatch.delenv("MMFS_MODEL_MIRROR")
    runner = CliRunner()
    missing = runner.invoke(app, ["models", "path", NAME])
    assert missing.exit_code == 1 and f"mmfs models download {NAME}" in missing.stderr
    added = runner.invoke(app, ["models", "add", NAME, str(served.folder / FILE)])
    assert added.exit_code == 0, added.output
    assert added.stdout.strip() == str(cache.model_path(NAME)) and (served.folder / FILE).is_file()
    assert runner.invoke(app, ["models", "path", NAME]).stdout.strip() == str(cache.model_path(NAME))
    rows = {r["name"]: r for r in json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)}
    assert rows[NAME]["cached"] and not rows["mmfs"]["cached"] and rows["mmfs"]["file"] == "phase3_pretrain_10000.pth"
    listed = runner.invoke(app, ["models", "list"]).stdout
    assert "pop-art" in listed and "stylegan2-ffhq" in listed and "Nvidia Source Code License-NC" in listed
    wrong = tmp_path / "page.pt"
    wrong.write_text("<html><body>sign in</body></html>")
    refused = runner.invoke(app, ["models", "add", NAME, str(wrong)])
    assert refused.exit_code == 1 and "is an HTML page" in refused.stderr and wrong.is_file()  # the user's file stays
    removed = runner.invoke(app, ["models", "remove", NAME])
    assert removed.exit_code == 0 and not cache.model_path(NAME).exists() and not cache.record_path(NAME).exists()
    unknown = runner.invoke(app, ["models", "download", "nope"])
    assert unknown.exit_code == 2 and "unknown model 'nope'; the models are: mmfs, mmfs-phase2" in unknown.output


def test_names_go_where_files_go_and_a_wrong_kind_is_a_usage_error(served, tmp_path):
    with pytest.raises(OptionError, match="mmfs is a multi-modal Stylizer with CLIP mapper; --prior takes"):
        resolve_file("mmfs", kinds=("prior",), flag="--prior")
    assert resolve_file(str(tmp_path / "x.safetensors")) == tmp_path / "x.safetensors"  # a path stays a path
    # The CLI keeps a name as a name (not ./tiny-prior); the run fetches it and records the cached file.
    result = CliRunner().invoke(app, ["pretrain-encoder", "--prior", NAME, "--dry-run", "-o", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert served.gets(FILE) == [""] and json.loads(result.stdout)["options"]["prior"] == str(cache.model_path(NAME))


def test_a_published_zero_shot_model_by_name_stylizes_with_its_own_prompt(tmp_path, monkeypatch):
    """The official MMFS layout (G_model, G_ema_model, D_model, optimizer) at a small size, named like `pop-art`:
    fetched, checked against the Stylizer-with-mapper shapes, converted, loaded by name, its prompt the style."""
    from mmfs.config import PRESETS, ModelConfig
    from mmfs.inference.models import from_pretrained
    from mmfs.inference.pipeline import StylizePipeline
    from mmfs.nn import Discriminator, Stylizer

    small = ModelConfig(resolution=64, feature_resolution=32, z_dim=32, w_dim=32, mapping_layers=2, channel_base=1024,
                        channel_max=32, encoder_channels=8, clip_dim=32, mapper_layers=2, mapper_ffn_dim=64)  # fmt: skip
    monkeypatch.setitem(PRESETS, "small-official", small)
    monkeypatch.setenv("MMFS_HOME", str(tmp_path / "home"))
    folder = tmp_path / "mirror"
    folder.mkdir()

    def upstream(module: torch.nn.Module) -> dict:
        state = dict(module.state_dict())
        state.update({k: b.clone() for k, b in module.named_buffers() if k.endswith("kernel")})
        return state

    g = upstream(Stylizer(small, with_mapper=True))
    torch.save({"G_model": {k: v.clone() for k, v in g.items()}, "G_ema_model": g, "D_model": upstream(Discriminator(small)),
                "optimizer_0": {"state": {}, "param_groups": []}, "total_iters": 200}, folder / "small_pop_art.pth")  # fmt: skip
    entry = catalogue.Model("small-pop", "zero-shot", "tests", "small_pop_art.pth", "mmfs", "small-official",
                            text="pop art", licence="test data", origin="tests")  # fmt: skip
    monkeypatch.setitem(catalogue.MODELS, "small-pop", entry)
    monkeypatch.setenv("MMFS_MODEL_MIRROR", str(folder))

    assert from_pretrained("small-pop").cfg == small
    assert StylizePipeline.from_pretrained("small-pop", device="cpu").resolution == 64
    crop = tmp_path / "crop.png"
    from PIL import Image

    Image.new("RGB", (64, 64), (120, 90, 80)).save(crop)
    result = CliRunner().invoke(app, ["stylize", str(crop), "-c", "small-pop", "--aligned", "--clip-model", "tiny",
                                      "-o", str(tmp_path / "out"), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["checkpoint"] == str(cache.model_path("small-pop")) and report["styles"][0]["label"] == "pop-art"
    assert (tmp_path / "out" / "crop_pop-art.png").is_file()


def test_the_catalogue_is_consistent_and_its_names_cannot_be_paths():
    from mmfs.config import PRESETS

    files = [m.filename for m in catalogue.MODELS.values()]
    assert len(set(files)) == len(files) and catalogue.DEFAULT_STYLIZER in catalogue.MODELS
    for name, model in catalogue.MODELS.items():
        assert model.name == name and "/" not in name and "." not in name, name  # a path never looks like a name
        assert model.kind in catalogue.KINDS and model.layout in catalogue.LAYOUTS
        assert model.layout == "open_clip" or model.network in PRESETS
        assert model.sources and model.licence and model.origin
        assert (model.text is not None) == (model.kind == "zero-shot") and (model.ref is not None) == (
            model.kind == "one-shot"
        )
    assert set(catalogue.CLIP_FOR.values()) <= set(catalogue.names("clip"))
    assert fetch._gdown_source(catalogue.gdrive_url("1abc_D-e")) == {"id": "1abc_D-e"}  # gdown confirms large files
    assert fetch._gdown_source("http://127.0.0.1:9/x.pth") == {"url": "http://127.0.0.1:9/x.pth"}

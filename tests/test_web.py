"""`mmfs web` over HTTP: gradio_client against a live server on 127.0.0.1 (the page's own API).

One server for the module, started as `mmfs web --demo` starts it (the Stylizer shipped with mmfs, the
demo's synthetic faces), in this process so a test can see how many jobs run at once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from PIL import Image  # noqa: E402

from mmfs.config.web import WebOptions  # noqa: E402
from mmfs.data.images import load_image  # noqa: E402
from support.web import free_port  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
UPLOAD_LIMIT_MB = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from mmfs.web.serve import serve

    root = tmp_path_factory.mktemp("web")
    options = WebOptions(port=free_port(), demo=True, demo_dir=root / "no-demo-here", workdir=root / "work",
                         max_upload_mb=UPLOAD_LIMIT_MB, max_frames=8, device="cpu")  # fmt: skip
    running = serve(options)
    yield running
    running.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The astronaut (a real photo: detected, aligned, pasted back), a synthetic aligned face, bad uploads."""
    from skimage import data as skdata

    from mmfs.demo.synthetic import FaceParams, render_face

    root = tmp_path_factory.mktemp("uploads")
    Image.fromarray(skdata.astronaut()).save(root / "astronaut.png")
    face, _ = render_face(FaceParams.sample(np.random.default_rng(1000)), 64)
    Image.fromarray(face).save(root / "face.png")
    (root / "notes.png").write_text("this is not an image\n")
    Image.new("RGB", (128, 128), (128, 128, 128)).save(root / "wall.png")
    Image.new("1", (20000, 20000)).save(root / "bomb.png")  # 400 Mpx in about 50 kB
    (root / "big.png").write_bytes(np.random.default_rng(0).bytes(int(1.5 * UPLOAD_LIMIT_MB * 2**20)))
    return root


def stylize(client, photo: Path, *, aligned=False, kind="seed", seed=3, text="", ref=None, paste=True, api="stylize"):
    """The Stylize tab's call: (result file, info text, gallery, download files)."""
    ref = handle_file(str(ref)) if ref is not None else None
    return client.predict(handle_file(str(photo)), aligned, "demo", kind, seed, text, ref, paste, api_name=f"/{api}")


def test_stylizes_a_photo_and_pastes_the_face_back(client, photos):
    result, info, gallery, files = stylize(client, photos / "astronaut.png")
    photo, out = load_image(photos / "astronaut.png"), load_image(result)
    assert out.shape == photo.shape  # pasted back into the whole photo
    changed = np.abs(out.astype(int) - photo.astype(int)).max(axis=2) > 30
    assert 0.005 < changed.mean() < 0.3  # the face changed, the rest of the photo did not
    assert info.startswith("1 face(s); 1 output(s)")
    assert "identity distance (dlib_id_dist" in info  # dlib's descriptor ships with the faces extra
    assert len(gallery) == 1 and len(files) == 1


def test_one_crop_per_face_without_paste_back_with_its_identity_distance(client, photos):
    result, info, gallery, _ = stylize(client, photos / "astronaut.png", paste=False)
    assert load_image(result).shape == (64, 64, 3)  # the model's aligned crop
    assert info.startswith("1 face(s); 1 output(s)") and "identity distance (dlib_id_dist" in info
    assert gallery[0]["caption"] == "face 0, seed3"


def test_seed_grid_gives_eight_different_styles(client, photos):
    _, info, gallery, _ = stylize(client, photos / "face.png", aligned=True, api="seed_grid")
    assert info.startswith("1 face(s); 8 output(s)")
    images = [load_image(item["image"]) for item in gallery]
    assert [item["caption"] for item in gallery] == [f"seed{s}" for s in range(3, 11)]
    assert len({im.tobytes() for im in images}) == 8


def test_text_and_reference_styles_through_the_shipped_tiny_clip(client, photos):
    by_text, _, _, _ = stylize(client, photos / "face.png", aligned=True, kind="text", text="pop art")
    by_ref, _, _, _ = stylize(client, photos / "face.png", aligned=True, kind="reference", ref=photos / "face.png")
    by_seed, _, _, _ = stylize(client, photos / "face.png", aligned=True)
    outputs = [load_image(p) for p in (by_text, by_ref, by_seed)]
    assert all(o.shape == (64, 64, 3) for o in outputs)
    assert len({o.tobytes() for o in outputs}) == 3


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("notes.png", "notes.png: not an image file PIL can read"),
        ("bomb.png", "bomb.png: image is too large"),
        ("wall.png", "wall.png: no face found"),
        ("big.png", "exceeds the maximum file size"),
    ],
)
def test_bad_upload_is_a_message_and_the_server_keeps_serving(client, photos, name, message):
    with pytest.raises(AppError if name != "big.png" else Exception, match=message):
        stylize(client, photos / name)
    result, _, _, _ = stylize(client, photos / "face.png", aligned=True)
    assert load_image(result).shape == (64, 64, 3)


def test_a_published_model_not_fetched_yet_is_a_message_offline(client, photos):
    # The page offers the catalogue's names; with an empty cache and no network (MMFS_OFFLINE, as in every
    # test) choosing one says in one line how to get it, as `mmfs stylize -c mmfs` does.
    with pytest.raises(AppError, match="mmfs models add mmfs"):
        client.predict(handle_file(str(photos / "face.png")), True, "mmfs", "seed", 0, "", None, True,
                       api_name="/stylize")  # fmt: skip


def test_bad_choices_are_messages(client, photos):
    with pytest.raises(AppError, match="choose a model from the list"):
        client.predict(handle_file(str(photos / "face.png")), True, "/etc/passwd", "seed", 0, "", None, True,
                       api_name="/stylize")  # fmt: skip
    with pytest.raises(AppError, match="type a style prompt"):
        stylize(client, photos / "face.png", aligned=True, kind="text", text="  ")
    with pytest.raises(AppError, match="upload a photo"):
        client.predict(None, True, "demo", "seed", 0, "", None, True, api_name="/stylize")


def test_eight_clients_at_once_one_job_at_a_time_with_queue_places(client, server, photos, monkeypatch):
    import mmfs.inference.stylize as core

    running, most = [0], [0]
    lock = threading.Lock()
    real = core.stylize

    def counted(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(core, "stylize", counted)
    results: dict[int, object] = {}
    ranks: list[int] = []

    def visitor(i: int) -> None:
        own = Client(server.url, verbose=False)  # a session of its own, as another browser would be
        photo = photos / ("notes.png" if i == 4 else "face.png")
        job = own.submit(handle_file(str(photo)), True, "demo", "seed", i, "", None, True, api_name="/stylize")
        while not job.done():
            status = job.status()
            if status.rank is not None and status.code.name == "IN_QUEUE":
                ranks.append(status.rank)
            time.sleep(0.02)
        try:
            results[i] = job.result()
        except Exception as exc:  # noqa: BLE001 - the bad upload's message is what is checked
            results[i] = exc

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(results) == 9
    bad = results.pop(4)
    assert isinstance(bad, AppError) and "notes.png: not an image file" in str(bad)
    seeds = {}
    for i, value in results.items():
        assert not isinstance(value, Exception), f"visitor {i}: {value}"
        seeds[i] = load_image(value[0]).tobytes()
    assert len(set(seeds.values())) == 8  # every visitor got their own seed's style
    assert most[0] == 1  # one generator job at a time
    assert ranks and max(ranks) >= 1  # waiting visitors were told their place in the queue


def test_adapt_adds_a_model_and_cancel_stops_it(client, server, photos):
    models = server.workdir / "models"
    assert client.predict(api_name="/cancel_adapt").startswith("nothing to cancel")  # and nothing left armed
    job = client.submit("demo", "text", "pop art", None, 500, api_name="/adapt")
    deadline = time.monotonic() + 120
    while not (job.status().progress_data or job.done()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.status().progress_data, "the page shows the adapt's progress"
    assert client.predict(api_name="/cancel_adapt") == "cancelling..."
    with pytest.raises(AppError, match="adapting cancelled at step"):
        job.result()
    assert not models.exists() or not list(models.iterdir())  # nothing written, not even a partial file

    status, name = client.predict("demo", "text", "pop art", None, 2, api_name="/adapt")
    assert name == "demo-pop-art" and "is now in the model lists" in status
    assert (models / "demo-pop-art.safetensors").is_file()
    result = client.predict(handle_file(str(photos / "face.png")), True, name, "text", 0, "pop art", None, True,
                            api_name="/stylize")[0]  # fmt: skip
    assert load_image(result).shape == (64, 64, 3)


def test_video_is_capped_stylized_and_keeps_its_sound(client, photos, tmp_path):
    pytest.importorskip("av")
    from test_video import face_frames, probe, write_clip

    clip = write_clip(tmp_path / "clip.mp4", face_frames(12))
    with pytest.raises(AppError, match="greater than maximum value 8"):  # the server's --max-frames
        client.predict(handle_file(str(clip)), "demo", "seed", 1, "", None, 9, api_name="/stylize_video")
    out, info = client.predict(handle_file(str(clip)), "demo", "seed", 1, "", None, 6,
                               api_name="/stylize_video")  # fmt: skip
    facts, source = probe(Path(out)), probe(clip)
    assert len(facts["frames"]) == 6
    assert facts["audio"] is not None and abs(facts["audio"]["peak_hz"] - source["audio"]["peak_hz"]) < 5
    styled = np.abs(facts["frames"][0].astype(int) - source["frames"][0].astype(int)).max(axis=2) > 30
    assert styled.any()
    assert info.startswith("clip.mp4 -> clip_seed1.mp4: 6 frames")  # no server folder in the message


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["missing.safetensors"], 1, "missing.safetensors: no such model file"),
        (["--demo", "--port", "0"], 2, "--port"),
        (["--demo", "--noise", "loud"], 2, "--noise"),
        (["--demo", "--workdir", "/dev/null/work"], 1, "error: cannot use /dev/null/work as the work folder"),
    ],
)
def test_command_line_mistakes_are_one_line(tmp_path, monkeypatch, args, code, message):
    from typer.testing import CliRunner

    from mmfs_cli.app import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["web", *args])
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output


def test_a_taken_port_is_one_line(server, tmp_path):
    from mmfs.errors import MMFSError
    from mmfs.web.serve import serve

    port = int(server.url.rstrip("/").rsplit(":", 1)[1])
    with pytest.raises(MMFSError, match=f"cannot listen on 127.0.0.1:{port}"):
        serve(WebOptions(port=port, demo=True, demo_dir=tmp_path, workdir=tmp_path / "w"))

"""`mmfs stylize` / `mmfs adapt` requests (mmfs/config/stylize.py): every usage check, without running anything,
and the CLI options generated from them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click
import pytest
import typer

from mmfs.config.common import MAX_SEED, Runtime
from mmfs.config.faces import FaceDetection
from mmfs.config.options import cli_spec
from mmfs.config.seeds import MAX_SEEDS, parse_seeds
from mmfs.config.stylize import (
    AdaptRun,
    PhotoOutput,
    StyleSource,
    StylizeRequest,
    StylizerModel,
    VideoOptions,
    is_video_path,
)
from mmfs.config.train import AdaptOptions, LoopConfig, Pretrained
from mmfs.errors import OptionError
from mmfs_cli.app import app

MODEL = StylizerModel(Path("model.safetensors"))


def request(*inputs: str, style: dict | None = None, **groups) -> StylizeRequest:
    model = groups.pop("model", MODEL)
    return StylizeRequest(inputs, model, StyleSource(**(style or {"seed": 1})), **groups)


def refused(build, field: str, message: str) -> None:
    with pytest.raises(OptionError, match=message) as caught:
        build()
    assert caught.value.field == field


def test_seeds_parse_in_order_without_repeats_and_refuse_the_rest():
    assert parse_seeds("3, 1,5-7,3") == [3, 1, 5, 6, 7]
    assert parse_seeds(f"0,{MAX_SEED}") == [0, MAX_SEED]
    for text, message in [
        ("1,a", "'a' is not a seed or a range like 5-7"),
        ("7-5", "'7-5' is not a seed"),
        (f"0-{MAX_SEEDS}", f"range 0-{MAX_SEEDS} has more than {MAX_SEEDS} seeds"),
        (f"{MAX_SEED + 1}", "must be in \\[0, 2\\*\\*63 - 1\\]"),
    ]:
        refused(lambda text=text: parse_seeds(text), "seeds", message)


def test_exactly_one_style_source():
    none = "choose exactly one style source: --seed, --seeds, --w, --text, --ref \\(none was given\\)"
    assert StyleSource().source is None  # none yet: the request decides (a zero-shot model has its own prompt)
    refused(lambda: StylizeRequest(("a.jpg",), StylizerModel(Path("m.safetensors")), StyleSource()), "seed", none)
    refused(
        lambda: StylizeRequest(("a.jpg",), StylizerModel(Path("ref01")), StyleSource()), "seed", "pass it with --ref"
    )
    popart = StylizeRequest(("a.jpg",), StylizerModel(Path("pop-art")), StyleSource())
    assert (popart.style.source, popart.style.text) == ("--text", ["pop art"])
    assert StylizerModel().checkpoint == Path("mmfs")  # the published multi-modal model by default
    refused(lambda: StyleSource(seed=1, w=Path("x.safetensors")), "w", "got --seed and --w")
    refused(lambda: StyleSource(text=["a"], ref=[Path("r.png")]), "ref", "got --text and --ref")
    assert StyleSource(seed=1, text=[]).source == "--seed"  # an empty repeatable option is "not given"
    refused(lambda: StyleSource(seed=-1), "seed", "must be in")
    refused(lambda: StyleSource(seed=MAX_SEED + 1), "seed", "must be in")
    refused(lambda: StyleSource(seeds="1,x"), "seeds", "'x' is not a seed")
    seeds = StyleSource(seeds="4,2-3")
    assert (seeds.source, seeds.seed_list(), seeds.count()) == ("--seeds", [4, 2, 3], 3)
    assert StyleSource(text=["a", "b"]).count() == 2 and StyleSource(w=Path("w.safetensors")).count() is None


def test_photo_output_checks():
    refused(lambda: PhotoOutput(paste_back=True, aligned=True), "paste_back", "cannot be used with --aligned")
    refused(lambda: PhotoOutput(paste_back=True, size=64), "size", "--paste-back keeps the photo's own size")
    refused(lambda: PhotoOutput(ext="gif"), "ext", "must be one of png, jpg, webp")
    refused(lambda: PhotoOutput(quality=0), "quality", "must be >= 1")
    refused(lambda: PhotoOutput(feather=0.6), "feather", "must be <= 0.5")
    refused(lambda: StylizerModel(Path("m"), noise="random"), "noise", "must be one of seeded, fresh, zero")
    assert PhotoOutput(outdir="out").outdir == Path("out")


def test_request_checks_between_groups():
    refused(lambda: request(), "", "give INPUTS \\(files, folders, globs or -\\), or --save-w")
    assert request(style={"seed": 1, "save_w": Path("w.safetensors")}).inputs == ()  # only saving the styles
    refused(lambda: request("a.png", video=VideoOptions(out=Path("o.mp4"))), "out", "names the output of a video")
    refused(lambda: request("a.png", video=VideoOptions(hold_frames=2)), "hold_frames", "is for video inputs")
    refused(lambda: request("a.png", video=VideoOptions(max_frames=5)), "max_frames", "is for video inputs")
    refused(lambda: VideoOptions(max_frames=0), "max_frames", "must be >= 1")
    video = "clip.MOV"
    assert is_video_path(video) and not is_video_path("-") and request(video).video_input == Path(video)
    cases = [
        (dict(inputs=(video, "a.png")), "", "give one video per call"),
        (dict(style={"seeds": "1,2"}), "seeds", "a video takes one style"),
        (dict(style={"text": ["a", "b"]}), "text", "a video takes one style"),
        (dict(photos=PhotoOutput(aligned=True)), "aligned", "is for photos"),
        (dict(photos=PhotoOutput(size=64)), "size", "is for photos"),
        (dict(style={"seed": 1, "save_w": Path("w.safetensors")}), "save_w", "is for photo runs"),
        (dict(model=StylizerModel(Path("m"), noise="fresh")), "noise", "a video keeps one set of noise maps"),
    ]
    for kwargs, field, message in cases:
        inputs = kwargs.pop("inputs", (video,))
        refused(lambda inputs=inputs, kwargs=kwargs: request(*inputs, **kwargs), field, message)
    assert request(video, style={"w": Path("one.safetensors")}).video_input  # a w-file's count is only known later


def _options(name: str) -> dict[str, click.Parameter]:
    command = typer.main.get_command(app).commands[name]
    return {p.name: p for p in command.params if p.name != "help"}


def _cli_fields(cls: type, only: tuple[str, ...] = ()) -> dict[str, dataclasses.Field]:
    fields = {f.name: f for f in dataclasses.fields(cls) if cli_spec(f) is not None}
    return {k: v for k, v in fields.items() if not only or k in only}


def test_stylize_options_are_the_request_fields():
    groups = (StylizerModel, StyleSource, PhotoOutput, VideoOptions, FaceDetection, Runtime)
    fields = {name: f for cls in groups for name, f in _cli_fields(cls).items()}
    params = _options("stylize")
    assert set(params) == {"inputs", *fields}
    for name, field in fields.items():
        default = None if field.default is dataclasses.MISSING else field.default
        assert params[name].default == default, name
        assert params[name].required == (field.default is dataclasses.MISSING), name
    assert params["checkpoint"].opts == ["--checkpoint", "-c"] and params["outdir"].opts == ["--outdir", "-o"]
    assert params["paste_back"].secondary_opts == ["--no-paste-back"] and params["as_json"].opts == ["--json"]
    from typer.testing import CliRunner

    from mmfs.faces import DETECTORS  # the one list the detectors are built from

    def detector_exit(name: str) -> int:  # exit 1: accepted, then the missing photo is reported
        args = ["stylize", "missing.png", "-c", "m.safetensors", "--seed", "1", "--detector", name]
        return CliRunner().invoke(app, args).exit_code

    assert [detector_exit(name) for name in (*DETECTORS, "mtcnn")] == [1] * len(DETECTORS) + [2]


def test_adapt_options_are_the_stage_run_and_stylize_fields():
    from mmfs_cli.adapt import INPUTS_OUTPUT, LOOP_OPTIONS

    groups = [
        _cli_fields(AdaptOptions), _cli_fields(Pretrained), _cli_fields(LoopConfig, LOOP_OPTIONS), _cli_fields(AdaptRun),
        _cli_fields(PhotoOutput, INPUTS_OUTPUT), _cli_fields(FaceDetection, ("detector",)),
        _cli_fields(Runtime, ("as_json", "quiet")),
    ]  # fmt: skip
    params = _options("adapt")
    assert set(params) == {"inputs"}.union(*groups)
    assert params["checkpoint"].opts == ["--checkpoint", "-c"]
    assert not params["checkpoint"].required and params["checkpoint"].default == "mmfs"  # the published model
    # the loop options show the stage's reference values and pass only what is given
    for name in ("steps", "batch_size", "lr"):
        assert f"(default: {AdaptOptions.loop_defaults[name]})" in params[name].help and params[name].default is None
    assert (AdaptOptions.loop_defaults["steps"], AdaptOptions.loop_defaults["batch_size"]) == (200, 8)


def test_adapted_inputs_are_stylized_with_the_adapted_file_and_its_style(tmp_path):
    from mmfs.train.adapt import Adapted, adapted_request, photos_from_inputs

    options = AdaptOptions(checkpoint="base.safetensors", photos="p", ref=str(tmp_path / "r.png"), clip_tag="t")
    adapted = Adapted(tmp_path / "a.safetensors", None, options)
    made = adapted_request(adapted, ["x.png"], PhotoOutput(aligned=True, overwrite=True))
    assert made.model.checkpoint == tmp_path / "a.safetensors" and made.inputs == ("x.png",)
    assert (made.style.source, made.style.ref, made.style.clip_tag) == ("--ref", [tmp_path / "r.png"], "t")
    assert made.photos.overwrite and made.runtime == Runtime()
    with pytest.raises(Exception, match="needs --photos \\(a folder"):
        photos_from_inputs([])
    with pytest.raises(Exception, match="INPUTS must be one folder of aligned crops"):
        photos_from_inputs([str(tmp_path / "missing")])
    assert photos_from_inputs([str(tmp_path)]) == tmp_path

"""Options declared once: the CLI generated from dataclass fields (mmfs.config.options + mmfs_cli.options)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import typer
from typer.testing import CliRunner

from mmfs.config import PRESETS
from mmfs.config.common import DTYPES, Runtime
from mmfs.config.options import Options, cli_spec, option
from mmfs.config.stylize import PhotoOutput, StyleSource, StylizeRequest, StylizerModel
from mmfs.config.train import (
    OPTIONS,
    TRAIN_DTYPES,
    AdaptOptions,
    FinetuneOptions,
    LoopConfig,
    StageOptions,
    make_config,
)
from mmfs.errors import OptionError
from mmfs_cli.app import app as mmfs_app
from mmfs_cli.options import Group, command


@dataclass(frozen=True)
class Demo(Options):
    folder: str = option("", "A folder.", path=True)
    weight: float = option(0.5, "A loss weight.", min=0.0)
    kind: str = option("a", "A kind.", choices=("a", "b+c"))
    mirror: bool = option(True, "Flip.")
    tiny: bool = option(False, "Tiny stand-ins.", flags="--tiny")
    hidden: int = option(3, cli=False)


def _app(**groups: Group) -> tuple[typer.Typer, list]:
    seen: list = []
    app = typer.Typer()

    @app.command()
    @command(**groups)
    def run(**built) -> None:  # noqa: ANN003
        seen.append(built)

    return app, seen


def _invoke(app: typer.Typer, *args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})  # --help lines unwrapped


def test_fields_become_options_with_their_defaults_flags_and_bounds(tmp_path, monkeypatch):
    app, seen = _app(demo=Group(Demo))
    monkeypatch.chdir(tmp_path)
    result = _invoke(app, "--folder", "data", "--weight", "2", "--kind", "b+c", "--no-mirror", "--tiny")
    assert result.exit_code == 0, result.output
    assert seen[-1]["demo"] == Demo(str(tmp_path / "data"), 2.0, "b+c", False, True, 3)  # the path made absolute
    assert _invoke(app).exit_code == 0 and seen[-1]["demo"] == Demo()  # nothing given: the declared defaults
    bad = _invoke(app, "--weight", "-1")
    assert bad.exit_code == 2 and "--weight" in bad.output
    assert _invoke(app, "--kind", "z").exit_code == 2
    assert _invoke(app, "--hidden", "4").exit_code == 2  # cli=False: no such option
    help_text = " ".join(_invoke(app, "--help").output.split())
    assert "A loss weight." in help_text and "--no-mirror" in help_text and "--no-tiny" not in help_text


def test_an_override_group_passes_only_what_was_given_and_shows_the_command_defaults():
    app, seen = _app(loop=Group(LoopConfig, overrides=True, defaults={"lr": 0.125}))
    assert _invoke(app, "--steps", "7", "--workers", "0").exit_code == 0
    assert dict(seen[-1]["loop"]) == {"steps": 7, "workers": 0} and seen[-1]["loop"].lr is None
    assert "(default: 0.125)" in " ".join(_invoke(app, "--help").output.split())


def test_a_check_in_the_dataclass_is_a_usage_error_naming_the_flag():
    @dataclass(frozen=True)
    class Pair:
        low: int = option(0, "Low.")
        high: int = option(1, "High.")

        def __post_init__(self) -> None:
            if self.high <= self.low:
                raise OptionError("high", f"must be above --low ({self.low})")

    app, _ = _app(pair=Group(Pair))
    result = _invoke(app, "--low", "5", "--high", "2")
    assert result.exit_code == 2 and "--high" in result.output and "must be above --low (5)" in result.output


def test_a_name_offered_twice_is_refused_when_the_command_is_built():
    with pytest.raises(TypeError, match="declared twice"):
        _app(a=Group(Demo), b=Group(Demo))


def test_a_new_stage_ii_loss_weight_is_one_field():
    """The example of docs/architecture.md: one field makes the flag, its help, its bound and its config key."""
    extended = dataclasses.make_dataclass(
        "FinetuneWithTV",
        [("tv", float, option(0.0, "Total-variation loss weight.", min=0.0))],
        bases=(FinetuneOptions,),
        frozen=True,
    )
    app, seen = _app(options=Group(extended))
    assert _invoke(app, "--tv", "0.1", "--structure", "1").exit_code == 0
    built = seen[-1]["options"]
    assert (built.tv, built.structure) == (0.1, 1.0) and dataclasses.asdict(built)["tv"] == 0.1
    assert _invoke(app, "--tv", "-1").exit_code == 2


@pytest.mark.parametrize("command", ["train-prior", "pretrain-encoder", "finetune", "train-mapper"])
def test_every_stage_option_is_a_flag_of_its_command(command):
    import typer.main

    click_command = typer.main.get_command(mmfs_app).commands[command]
    flags = {opt for param in click_command.params for opt in param.opts}
    for field in dataclasses.fields(OPTIONS[command]):
        assert f"--{field.name.replace('_', '-')}" in flags, (command, field.name)
    for field in dataclasses.fields(LoopConfig):
        if field.metadata["cli"] is not None:
            assert f"--{field.name.replace('_', '-')}" in flags, (command, field.name)


def test_paths_stay_relative_in_a_path_field(tmp_path):
    @dataclass(frozen=True)
    class Out:
        out: Path | None = option(None, "Output.", path=True)

    app, seen = _app(o=Group(Out))
    assert _invoke(app, "--out", "x.png").exit_code == 0 and seen[-1]["o"].out == Path("x.png")


@dataclass(frozen=True)
class Tf32ByDefault(StageOptions):
    """A stage whose reference loop turns TF32 and compile on: the user must be able to turn them off."""

    command: ClassVar[str] = "test-tf32-by-default"
    loop_defaults: ClassVar[dict[str, Any]] = {"tf32": True, "compile": True}


def test_a_boolean_loop_option_can_be_overridden_to_false_and_reaches_the_loop_config():
    app, seen = _app(loop=Group(LoopConfig, overrides=True, defaults=Tf32ByDefault.loop_defaults))
    assert _invoke(app, "--no-tf32", "--steps", "3").exit_code == 0
    given = seen[-1]["loop"]
    assert given.tf32 is False and given.steps == 3 and given.compile is None  # None: not given
    assert dict(given) == {"tf32": False, "steps": 3}
    loop = make_config(Tf32ByDefault.command, PRESETS["tiny"], **given).loop
    assert (loop.tf32, loop.compile, loop.steps) == (False, True, 3)  # the user's False, the stage's True
    assert (
        _invoke(app).exit_code == 0
        and make_config(Tf32ByDefault.command, PRESETS["tiny"], **seen[-1]["loop"]).loop.tf32
    )
    assert "--no-compile" in " ".join(_invoke(app, "--help").output.split())


@pytest.mark.parametrize(
    ("build", "flag"),
    [
        (lambda: LoopConfig(batch_size=6, accum=4), "--accum"),
        (lambda: LoopConfig(dtype="fp16"), "--dtype"),
        (lambda: AdaptOptions(checkpoint="m", photos="p"), "--text"),
        (lambda: AdaptOptions(checkpoint="m", photos="p", text="a", ref="r.png"), "--ref"),
        (lambda: AdaptOptions(checkpoint="m", photos="p", text=" "), "--text"),
        (lambda: StylizeRequest(("a.jpg",), StylizerModel(Path("m.safetensors")), StyleSource()), "--seed"),
        (lambda: StyleSource(seed=1, text=["a"]), "--text"),
        (lambda: PhotoOutput(paste_back=True, size=64), "--size"),
        (lambda: Runtime(dtype="fp64"), "--dtype"),
    ],
)
def test_every_option_error_names_the_flag_to_change(build, flag):
    with pytest.raises(OptionError) as caught:
        build()
    assert caught.value.flag == flag


def test_the_dtype_names_are_the_ones_the_device_layer_implements():
    from mmfs.utils.device import DTYPES as TORCH_DTYPES

    assert set(DTYPES) == set(TORCH_DTYPES) and set(TRAIN_DTYPES) < set(DTYPES)
    assert cli_spec(next(f for f in dataclasses.fields(Runtime) if f.name == "dtype")).choices == DTYPES

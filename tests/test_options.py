"""Options declared once: the CLI generated from dataclass fields (mmfs.config.options + mmfs_cli.options)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mmfs.config.options import check_fields, option
from mmfs.config.train import OPTIONS, FinetuneOptions, LoopConfig
from mmfs.errors import OptionError
from mmfs_cli.app import app as mmfs_app
from mmfs_cli.options import Group, command


@dataclass(frozen=True)
class Demo:
    folder: str = option("", "A folder.", path=True)
    weight: float = option(0.5, "A loss weight.", min=0.0)
    kind: str = option("a", "A kind.", choices=("a", "b+c"))
    mirror: bool = option(True, "Flip.")
    tiny: bool = option(False, "Tiny stand-ins.", flags="--tiny")
    hidden: int = option(3, cli=False)

    def __post_init__(self) -> None:
        check_fields(self)


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
    assert seen[-1]["loop"] == {"steps": 7, "workers": 0}
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

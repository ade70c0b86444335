"""Typer options generated from the core's option dataclasses, so that each option is declared once.

A command names the dataclasses whose fields are its options:

    @command(options=Group(FinetuneOptions), loop=Group(LoopConfig, overrides=True))
    def finetune(options: FinetuneOptions, loop: Overrides) -> None: ...

Typer sees one option per field (type, default and help from `mmfs.config.options.option`); the function
receives one built dataclass per group, or with `overrides=True` the `Overrides` the user gave (an option
left out is "not given", so that a stage's own defaults apply; a bool is offered as --x/--no-x then). A
group's bounds and checks run when its dataclass is built (`mmfs.config.options.Options`); a failure
there is a usage error (exit 2), as Typer's own are.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from mmfs.catalogue import is_model_name
from mmfs.config.options import Cli, Overrides, cli_spec, rule_help
from mmfs.errors import MMFSError, OptionError


@dataclass(frozen=True)
class Group:
    """The fields of `cls` that a command offers, and how they reach the command."""

    cls: type
    only: tuple[str, ...] = ()  # offer just these fields (default: every field declared for the CLI)
    exclude: tuple[str, ...] = ()
    overrides: bool = False  # pass the `Overrides` given instead of a built `cls`
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # this command's defaults, shown in help
    panel: str | None = None  # the --help panel that lists these options

    def fields(self) -> list[dataclasses.Field]:
        chosen = [f for f in dataclasses.fields(self.cls) if cli_spec(f) is not None]
        if self.only:
            unknown = set(self.only) - {f.name for f in chosen}
            if unknown:
                raise TypeError(f"{self.cls.__name__} has no CLI fields {sorted(unknown)}")
            chosen = [f for f in chosen if f.name in self.only]
        return [f for f in chosen if f.name not in self.exclude]


def command(**groups: Group) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: the command's own parameters, then one Typer option per field of each group."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        own_hints = typing.get_type_hints(fn, include_extras=True)  # `from __future__ import annotations`: strings
        own = [
            p.replace(annotation=own_hints.get(name, p.annotation))
            for name, p in inspect.signature(fn).parameters.items()
            if name not in groups and p.kind is not inspect.Parameter.VAR_KEYWORD  # `**groups` receives them all
        ]
        routes: dict[str, tuple[str, dataclasses.Field, Any]] = {}  # option -> its group, field and annotation
        params = list(own)
        for group_name, group in groups.items():
            hints = typing.get_type_hints(group.cls)
            for field in group.fields():
                if field.name in routes or any(p.name == field.name for p in own):
                    raise TypeError(f"{fn.__name__}: option {field.name!r} is declared twice")
                routes[field.name] = (group_name, field, hints[field.name])
                params.append(_parameter(field, hints[field.name], group))

        def build(**kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
            """The parsed parameters -> the command's own values and one built group each (their checks run here)."""
            values: dict[str, dict[str, Any]] = {name: {} for name in groups}
            own_values = {}
            for name, value in kwargs.items():
                if name in routes:
                    group_name, field, annotation = routes[name]
                    if value is None and (field.default is not None or groups[group_name].overrides):
                        continue  # an option left out: the field's own (or the stage's) default applies
                    values[group_name][name] = _to_core(value, field, annotation)
                else:
                    own_values[name] = value
            return own_values, {name: _build(groups[name], vals) for name, vals in values.items()}

        def run(**kwargs: Any) -> Any:
            own_values, built = build(**kwargs)
            return fn(**own_values, **built)

        # What a reader of the command line needs without running it (tests/support/doc_lines.py checks
        # documented lines with them): the groups, and the step that builds and checks them.
        run.groups, run.build = groups, build  # type: ignore[attr-defined]
        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        run.__name__, run.__qualname__, run.__doc__, run.__module__ = (
            fn.__name__, fn.__qualname__, fn.__doc__, fn.__module__,
        )  # fmt: skip
        return run

    return decorate


def _parameter(field: dataclasses.Field, annotation: Any, group: Group) -> inspect.Parameter:
    spec: Cli = cli_spec(field)
    default = group.defaults.get(field.name, field.default)
    cli_type = _cli_type(annotation, spec)
    rules = rule_help(group.cls, field.name) if default is not dataclasses.MISSING else ""  # else Typer: [required]
    help_text = f"{spec.help} {rules}" if rules else spec.help
    flags = spec.flags
    show_default: bool | str = spec.show_default
    if group.overrides:  # None: "not given", so that the default the command applies later shows through
        if default is not None and default is not False and spec.show_default:
            help_text = f"{help_text} (default: {default})"  # round brackets: Rich reads square ones as markup
        show_default, default, cli_type = False, None, cli_type | None
        if _base(annotation) is bool and flags:  # `--tf32` -> `--tf32/--no-tf32`: False can be given too
            flags = (f"{flags[0]}/--no-{flags[0].removeprefix('--')}", *flags[1:])
    extra: dict[str, Any] = {}
    if spec.min is not None:
        extra["min"] = spec.min
    if spec.max is not None:
        extra["max"] = spec.max
    if spec.metavar:
        extra["metavar"] = spec.metavar
    info = typer.Option(*flags, help=help_text, show_default=show_default, rich_help_panel=group.panel, **extra)
    if default is dataclasses.MISSING:
        default = ...
    elif spec.path and default == "":  # "no path yet": Typer would turn "" into Path(".")
        default, cli_type = None, cli_type | None
    return inspect.Parameter(
        field.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[cli_type, info]
    )


def _base(annotation: Any) -> Any:
    """`X` of `X | None`."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def _cli_type(annotation: Any, spec: Cli) -> Any:
    optional = _base(annotation) is not annotation
    base = _base(annotation)
    if typing.get_origin(base) is list:  # a repeatable option
        base = list[Path] if spec.path else base
    elif spec.path:
        base = Path
    if spec.choices:
        base = typing.Literal[spec.choices]  # Typer lists them in --help and refuses others (exit 2)
    return base | None if optional else base


def _to_core(value: Any, field: dataclasses.Field, annotation: Any) -> Any:
    """CLI value -> the field's own type: a path into an absolute string for a str field (config.json outlives the cwd)."""
    spec = cli_spec(field)
    if not value or spec is None or not spec.path:  # None and "" stay "not given"
        return value
    if is_model_name(str(value)):  # a published model's name (`-c mmfs`, `--prior stylegan2-ffhq`), not a path
        return str(value) if _base(annotation) is str else value
    if _base(annotation) is str:
        return str(Path(value).expanduser().resolve())
    return value


def _build(group: Group, values: dict[str, Any]) -> Any:
    if group.overrides:
        return Overrides(group.cls, values)
    try:
        return group.cls(**values)
    except OptionError as exc:
        raise typer.BadParameter(exc.message, param_hint=exc.flag) from None
    except (ValueError, MMFSError) as exc:
        raise typer.BadParameter(str(exc)) from None

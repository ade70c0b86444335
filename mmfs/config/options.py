"""Declaring an option once: a dataclass field that carries its type, default and help.

Every option of every command is a field of a frozen dataclass in the core, written with `option()`:

    structure: float = option(0.5, "DINO structure loss weight (reference lambda_ST).", min=0.0)

The field's annotation is the option's type and its default the option's default; the help and the
command-line details (flag names, bounds, choices, whether the CLI takes a path) travel in the field's
metadata. `mmfs_cli.options` turns the fields into Typer options, so a new field is a new flag, with its
help, and (for training) a new key in `config.json`, without touching the CLI.

This module imports nothing heavy: `mmfs --help` reads these declarations without importing torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mmfs.errors import OptionError


@dataclass(frozen=True)
class Cli:
    """How one field appears on the command line."""

    help: str
    flags: tuple[str, ...] = ()  # default: --field-name, and --no-field-name for any bool; given: just these
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()  # the accepted strings of a str option (--help lists them; the parser refuses others)
    legacy: tuple[str, ...] = ()  # values only files saved by older versions hold: read back, never offered
    path: bool = False  # the CLI takes a path; a str field stores it absolute (config.json outlives the cwd)
    show_default: bool = True
    metavar: str | None = None


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",  # noqa: A002 (the word every CLI library uses)
    *,
    flags: tuple[str, ...] | str = (),
    min: float | None = None,  # noqa: A002
    max: float | None = None,  # noqa: A002
    choices: tuple[str, ...] = (),
    legacy: tuple[str, ...] = (),
    path: bool = False,
    show_default: bool = True,
    metavar: str | None = None,
    cli: bool = True,
) -> Any:
    """A dataclass field declared with its command-line help; `cli=False` keeps it off the command line."""
    spec = None
    if cli:
        flags = (flags,) if isinstance(flags, str) else tuple(flags)
        spec = Cli(help, flags, min, max, tuple(choices), tuple(legacy), path, show_default, metavar)
    return dataclasses.field(default=default, metadata={"cli": spec, "help": help})


def cli_spec(field: dataclasses.Field) -> Cli | None:
    """The command-line spec of a field declared with `option()`, or None (not on the command line)."""
    return field.metadata.get("cli")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """OptionError naming the choices when `value` is not one of them (None passes: "not given")."""
    if value is not None and choices and value not in choices:
        raise OptionError(name, f"must be one of {', '.join(choices)}, got {value!r}")


def check_fields(instance: Any, *, legacy: bool = True) -> None:
    """Apply every field's declared bounds and choices, then the class's `one_of` rules: OptionError on the
    first miss (`Options` calls it).

    `legacy=False` also refuses the values only older saved files hold (what a new run may not ask for).
    """
    for field in dataclasses.fields(instance):
        spec = cli_spec(field)
        if spec is None:
            continue
        value = getattr(instance, field.name)
        if not (legacy and value in spec.legacy):
            check_choice(field.name, value, spec.choices)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if spec.min is not None and value < spec.min:
                raise OptionError(field.name, f"must be >= {spec.min}, got {value}")
            if spec.max is not None and value > spec.max:
                raise OptionError(field.name, f"must be <= {spec.max}, got {value}")
    check_one_of(instance)


# --- Rules between fields: what a command needs that no single option can be marked required for -----
# A class lists them in `rules` (a ClassVar). `--help` prints each with the options it names
# (mmfs_cli.options), the checks below apply them when the command runs, and tests/test_doc_lines.py
# reads them to check every documented command line.


@dataclass(frozen=True)
class Rule:
    """`required`: each field must be given (unless one of the `unless` words is); `one_of`: exactly one."""

    kind: str
    fields: tuple[str, ...]
    what: str = ""  # one_of: what each of the fields is, e.g. "style source"
    unless: tuple[str, ...] = ()  # what stands in for the fields, e.g. "--resume RUN_DIR" (one_of: for none of them)


def required(*fields: str, unless: tuple[str, ...] | str = ()) -> Rule:
    """The fields a run needs, though the command line cannot require them (e.g. `--resume` brings them)."""
    return Rule("required", fields, unless=(unless,) if isinstance(unless, str) else tuple(unless))


def one_of(*fields: str, what: str, unless: tuple[str, ...] | str = ()) -> Rule:
    """Exactly one of the fields must be given; with `unless`, none is also fine when that holds (checked by the
    code that knows it: `check_fields` then refuses only two or more)."""
    return Rule("one_of", fields, what=what, unless=(unless,) if isinstance(unless, str) else tuple(unless))


def rules_of(cls: Any) -> tuple[Rule, ...]:
    """The rules a class (or an instance) declares."""
    return tuple(getattr(cls, "rules", ()))


def flag_of(cls: Any, name: str) -> str:
    """A field's option as typed: its first declared long flag, else `--field-name`."""
    spec = next((cli_spec(f) for f in dataclasses.fields(cls) if f.name == name), None)
    long = [flag for flag in (spec.flags if spec else ()) if flag.startswith("--")]
    return long[0] if long else "--" + name.replace("_", "-")


def is_given(value: Any) -> bool:
    """A field counts as given unless it holds one of the "not given" values (None, False, "", empty list)."""
    return value is not None and value is not False and not (isinstance(value, (str, list, tuple)) and not value)


def rule_help(cls: Any, name: str) -> str:
    """What `--help` adds to a field's help: the rules that name it."""
    notes = []
    for rule in rules_of(cls):
        if name not in rule.fields:
            continue
        if rule.kind == "required":
            notes.append("Required" + (f" (or {' or '.join(rule.unless)})" if rule.unless else "") + ".")
        else:
            alternative = f" (or none, with {' or '.join(rule.unless)})" if rule.unless else ""
            notes.append(f"Exactly one {rule.what}{alternative}: {', '.join(flag_of(cls, f) for f in rule.fields)}.")
    return " ".join(notes)


def check_one_of(instance: Any) -> None:
    """OptionError when a `one_of` rule does not hold (`check_fields` calls it, so every options class does)."""
    for rule in rules_of(instance):
        if rule.kind == "one_of":
            given = [name for name in rule.fields if is_given(getattr(instance, name))]
            if len(given) > 1 or (not given and not rule.unless):
                raise one_of_error(instance, rule)


def one_of_error(instance: Any, rule: Rule, hint: str = "") -> OptionError:
    """The usage error of a `one_of` rule that does not hold, naming the second option given (or the first one
    that could be); `hint` ends the line."""
    given = [name for name in rule.fields if is_given(getattr(instance, name))]
    what = "none was given" if not given else f"got {' and '.join(flag_of(instance, name) for name in given)}"
    flags = ", ".join(flag_of(instance, name) for name in rule.fields)
    return OptionError(given[1] if given else rule.fields[0], f"choose exactly one {rule.what}: {flags} ({what}){hint}")


def missing_required(instance: Any, given_words: tuple[str, ...] = (), provided: tuple[str, ...] = ()) -> str | None:
    """The one-line "needs ..." of the `required` rules left unmet, or None.

    `given_words` are the command-line words given besides the instance's fields (e.g. `--resume`); a rule
    whose `unless` starts with one of them is met. A command that has already taken such a path (a resumed
    run) does not ask. `provided` names fields the caller supplies another way (Python: injected networks).
    """
    missing, alternatives = [], []
    for rule in rules_of(instance):
        if rule.kind != "required" or any(word.split()[0] in given_words for word in rule.unless):
            continue
        names = [
            flag_of(instance, name)
            for name in rule.fields
            if name not in provided and not is_given(getattr(instance, name))
        ]
        if names:
            missing += names
            alternatives += [word for word in rule.unless if word not in alternatives]
    if not missing:
        return None
    return f"needs {', '.join(missing)}" + (f" (or {' or '.join(alternatives)})" if alternatives else "")


def check_required(
    instance: Any,
    command: str,
    *,
    given_words: tuple[str, ...] = (),
    provided: tuple[str, ...] = (),
    detail: str = "",
) -> None:
    """A usage error (`OptionError`, exit 2) when a `required` rule is unmet: "`mmfs COMMAND` needs ...", then
    `detail`. One raise for every command, so the line and the exit code are the same wherever it is asked."""
    needs = missing_required(instance, given_words, provided)
    if needs:
        raise OptionError("", f"`mmfs {command}` {needs}{detail}")


@dataclass(frozen=True)
class Options:
    """Base of every options dataclass: building one checks each field's declared bounds and choices.

    A subclass with rules between its fields extends `__post_init__`: `super().__post_init__()` first, then
    its rules, each an `OptionError` naming the flag the user should change.
    """

    def __post_init__(self) -> None:
        check_fields(self)


class Overrides(Mapping[str, Any]):
    """The fields of an options class a user gave, to lay over defaults chosen later (a stage's `loop_defaults`).

    Reads like the dataclass (`loop.steps`: the value given, or None when not given) and like a dict of
    exactly the given values (`**loop`, `"dtype" in loop`). False and 0 are values like any other, so a
    boolean can be overridden either way.
    """

    def __init__(self, cls: type, given: Mapping[str, Any]) -> None:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - names)
        if unknown:
            raise TypeError(f"{cls.__name__} has no fields {unknown}")
        self._cls, self._names = cls, names
        self._given = {name: value for name, value in given.items() if value is not None}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self._names:
            raise AttributeError(name)
        return self._given.get(name)

    def __getitem__(self, name: str) -> Any:
        return self._given[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._given)

    def __len__(self) -> int:
        return len(self._given)

    def __repr__(self) -> str:
        return f"Overrides({self._cls.__name__}, {self._given!r})"

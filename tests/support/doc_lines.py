"""Every documented `mmfs ...` line, read from README.md and docs/, checked against the commands' real parameters.

Nothing is run: a line is parsed with the click command objects that `mmfs` itself builds (Typer), so
the subcommand must exist, every option must exist and have its value, and choices and ranges must hold.
A full line then goes through the same step a run starts with (`run.build` of `mmfs_cli.options.command`:
every option group built, with its checks and `one_of` rules), the `required` rules the option classes
declare (`mmfs.config.options`), and for `mmfs stylize` the request's own checks (inputs, video rules).

What counts as a line:
- in a code block (any but json/python), every command a shell would run: continuations joined, the
  block's `NAME="..."` assignments expanded, each `mmfs` of a pipe or `&&` list, `torchrun ... -m mmfs_cli.app`;
- in the text, an inline code span that starts with `mmfs `. A span is checked as a full command, except
  `mmfs COMMAND` alone (a name) and a *template*: a span with `...` or an ALL-CAPS placeholder (`N`, `FILE`)
  or `[`, whose options must still exist (their values are checked unless they are placeholders).

A line meant to fail is marked in the docs: `<!-- fails: MESSAGE -->` right after an inline span or right
before a code block. The check must then fail with MESSAGE. `<!-- fails when run: MESSAGE -->` marks a line
that only fails on a file's contents: it must pass every check here (so that the user gets as far as the
documented error) and MESSAGE must be a piece of an error the package raises, as its source spells it (a
piece without `{...}` placeholders; tests that run it: test_foreign.py).

Files made by one line and used by a later one: a file `mmfs adapt --out` writes is stylized with the same
`--text`/`--ref` (`mmfs adapt --help`: "stylize it with the same --text/--ref").
"""

from __future__ import annotations

import ast
import builtins
import importlib
import re
import shlex
import textwrap
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from mmfs.config.options import check_required
from mmfs.errors import OptionError

from .doc_commands import DOCS, REPO, block_lines

try:  # Typer ships its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors

SKIPPED_BLOCKS = ("json", "python")
_MARKER = r"<!--\s*fails(?P<when_run> when run)?:\s*(?P<message>.*?)\s*-->"
_PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*(\.\w+)?|\$\w+|\$\{\w+\}")  # N, FILE, FILE.safetensors, $VAR


@dataclass(frozen=True)
class DocLine:
    """One documented command, as the checks read it."""

    where: str  # "docs/adapt.md:39"
    text: str  # "mmfs ..." (whitespace collapsed, continuations joined, variables expanded)
    inline: bool
    fails: str | None = None  # the documented message of a line meant to fail
    when_run: bool = False  # it fails only on a file's contents (see the module doc)


def documented_lines(docs: list[Path] = DOCS) -> list[DocLine]:
    """Every `mmfs` line of the docs, in order, then the examples of every command's `--help`."""
    lines = []
    for path in docs:
        lines += lines_of(path.read_text(), str(path.relative_to(REPO)))
    return lines + help_examples()


def help_examples() -> list[DocLine]:
    """The `Example: mmfs ...` lines of each command's `--help` (its docstring)."""
    _, callbacks = _cli()
    return [
        DocLine(f"mmfs {name} --help", " ".join(example.split()), inline=False)
        for name, callback in callbacks.items()
        for example in re.findall(r"Example: (mmfs .*)", callback.__doc__ or "")
    ]


def lines_of(text: str, name: str) -> list[DocLine]:
    """The `mmfs` lines of one markdown text (`name` for the reports), in the order they appear."""
    found: list[tuple[int, DocLine]] = []
    fence = re.compile(r"(?:" + _MARKER + r"\s*)?^[ \t]*```(\w*)\n(.*?)^[ \t]*```", flags=re.S | re.M)
    prose_parts, last = [], 0
    for block in fence.finditer(text):
        prose_parts.append((last, text[last : block.start()]))
        last = block.end()
        lang, body = block.group(3), block.group(4)
        if lang in SKIPPED_BLOCKS:
            continue
        first = text[: block.start(4)].count("\n") + 1
        fails, when_run = block.group("message"), bool(block.group("when_run"))
        for offset, line in block_lines(textwrap.dedent(body)):
            for command in shell_commands(line):
                found.append((block.start(), DocLine(f"{name}:{first + offset}", command, False, fails, when_run)))
    prose_parts.append((last, text[last:]))
    for start, prose in prose_parts:
        prose = re.sub(r"<!--(?!\s*fails).*?-->", "", prose, flags=re.S)  # other comments hide nothing
        for span in re.finditer(r"`(mmfs\s[^`]*)`(?:\s*" + _MARKER + ")?", prose):
            where = f"{name}:{text[: start + span.start()].count(chr(10)) + 1}"
            command = " ".join(span.group(1).split())
            fails, when_run = span.group("message"), bool(span.group("when_run"))
            found.append((start + span.start(), DocLine(where, command, True, fails, when_run)))
    return [line for _, line in sorted(found, key=lambda item: item[0])]


def shell_commands(line: str) -> list[str]:
    """The `mmfs` commands of a shell line (pipes, `&&`, `;`, `for ... do`), `torchrun -m mmfs_cli.app X` as `mmfs X`."""
    protected, substitutions = _protect(line)
    commands = []
    for part in re.split(r"\s(?:\|\|?|&&|;)\s|;\s", protected):
        words = part.split()
        while words and words[0] in ("do", "then", "time", "nice", "!"):
            words = words[1:]
        if "mmfs_cli.app" in words and words[0] in ("torchrun", "python", "python3"):
            words = ["mmfs", *words[words.index("mmfs_cli.app") + 1 :]]
        if words and words[0] == "mmfs":
            commands.append(_restore(" ".join(words), substitutions))
    return commands


def _protect(line: str) -> tuple[str, list[str]]:
    """`line` with each `$( ... )` replaced by `__SUBSTn__` (so the shell operators inside it stay inside)."""
    substitutions: list[str] = []
    out, i = [], 0
    while i < len(line):
        if line.startswith("$(", i):
            depth, j = 1, i + 2
            while j < len(line) and depth:
                depth += {"(": 1, ")": -1}.get(line[j], 0)
                j += 1
            out.append(f"__SUBST{len(substitutions)}__")
            substitutions.append(line[i:j])
            i = j
        else:
            out.append(line[i])
            i += 1
    return "".join(out), substitutions


def _restore(text: str, substitutions: list[str]) -> str:
    for n, value in enumerate(substitutions):
        text = text.replace(f"__SUBST{n}__", value)
    return text


# --- the checks ----------------------------------------------------------------------------------


@cache
def _cli():
    import typer.main

    from mmfs_cli.app import app

    return typer.main.get_command(app), _callbacks(app)


def _callbacks(app, prefix: str = "") -> dict[str, object]:
    """ "stylize" -> its function, "models add" -> that of `mmfs models add`, ...: every command of a Typer app."""
    found = {f"{prefix}{info.name}": info.callback for info in app.registered_commands}
    for group in app.registered_groups:
        found.update(_callbacks(group.typer_instance, f"{prefix}{group.name} "))
    return found


def check_line(line: DocLine) -> str | None:
    """Why the line would not run as written (one line, as the user would read it), or None."""
    text, substitutions = _protect(line.text)
    for substitution in substitutions:
        error = _check_substitution(substitution)
        if error:
            return error
    try:
        words = _without_redirections(shlex.split(text))
    except ValueError as exc:
        return f"not a shell line: {exc}"
    if line.inline and len(words) <= 3 and all(re.fullmatch(r"[a-z][a-z-]*", w) for w in words):
        kind = "name"  # `mmfs stylize`, `mmfs models add`: a command's name
    elif "..." in words or any(w.startswith("[") for w in words) or any(_PLACEHOLDER.fullmatch(w) for w in words):
        kind = "template"
    else:
        kind = "full"
    return check_words([SUBSTITUTED if "__SUBST" in w else w for w in words[1:]], kind)


def _without_redirections(words: list[str]) -> list[str]:
    """`> run.json`, `2> log`, `< list.txt` are the shell's, not the command's."""
    out, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif re.fullmatch(r"\d?(>>?|<)(&\d)?", word):
            skip = not word.endswith(("&1", "&2"))
        else:
            out.append(word)
    return out


SUBSTITUTED = "1"  # what a `$(...)` in a full line stands for when it is parsed (its code is checked apart)


def check_words(args: list[str], kind: str = "full") -> str | None:
    """Check `mmfs ARGS`; kind "full" (every check), "template" (options and given values) or "name"."""
    import typer

    root, callbacks = _cli()
    if args and args[0].startswith("-"):
        return _parse(root, "mmfs", args, "template")[1]
    if not args or (kind != "full" and (args[0] == "..." or _PLACEHOLDER.fullmatch(args[0]))):
        return None  # `mmfs COMMAND --help`, `mmfs ...`
    command, path = root, []
    while hasattr(command, "commands") and args and not args[0].startswith("-"):  # `mmfs models add ...`
        if kind != "full" and (args[0] == "..." or _PLACEHOLDER.fullmatch(args[0])):
            return None  # `mmfs models ...`
        if args[0] not in command.commands:
            return f"No such command '{args[0]}'."
        command, path, args = command.commands[args[0]], [*path, args[0]], args[1:]
    name = " ".join(path)
    if not args or hasattr(command, "commands"):
        return None  # a command's (or a group's) name
    kind = "template" if kind == "name" else kind  # `mmfs info FILE`: the words after the name are checked
    ctx, error = _parse(command, name, args, kind)
    build = getattr(callbacks.get(name), "build", None)  # a command without option groups (`mmfs info`): parsed is all
    if error or ctx is None or kind != "full" or build is None:
        return error
    try:
        own, built = build(**ctx.params)
        request_error = _request(name, own, built)
        if request_error:
            return request_error
    except typer.BadParameter as exc:
        return exc.format_message()
    given = tuple(_given_words(ctx))
    for group in built.values():
        if not isinstance(group, dict):  # a dict: the loop's overrides, no rules
            try:
                check_required(group, name, given_words=given)  # the check the command itself makes
            except OptionError as exc:
                return str(exc)
    return None


def _request(name: str, own: dict, built: dict) -> str | None:
    """The checks a command body makes before it loads anything (`mmfs stylize`: the request's rules)."""
    if name != "stylize":
        return None
    from mmfs.config.stylize import StylizeRequest

    try:
        StylizeRequest(tuple(own["inputs"] or ()), **built)
    except OptionError as exc:
        return str(exc)
    return None


def _parse(command, name: str, args: list[str], kind: str):
    """(the click context with the parsed values, None), or (None, the error as click words it).

    A template keeps only the options it gives values for: a placeholder value, a flag without its value
    and `[`/`]`/`|` are dropped, and the options the template leaves out are not asked for."""
    if any(a == "--help" or getattr(_option(command, a), "is_eager", False) for a in args):
        # `--help`, `--version`: they act while parsing (print, exit), so only the options' names are checked
        unknown = [a for a in args if a.startswith("-") and a != "--help" and not _option(command, a)]
        return None, (f"No such option: {unknown[0]}" if unknown else None)
    if kind == "template":
        args = _template_args(command, args)
    try:
        ctx = command.make_context(name, list(args))
    except click_errors.MissingParameter as exc:
        return (None, None) if kind == "template" else (None, exc.format_message())
    except click_errors.ClickException as exc:
        return None, exc.format_message()
    return ctx, None


def _option(command, word: str):
    flag = word.split("=", 1)[0]
    return next((p for p in command.params if flag in (*p.opts, *getattr(p, "secondary_opts", ()))), None)


def _template_args(command, args: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(args):
        word = args[i].strip("[]")
        i += 1
        if not word or word in ("...", "|"):
            continue
        if not word.startswith("-") or word == "-":
            continue  # INPUTS and placeholders: a template does not fix them
        param = _option(command, word)
        if param is None or param.param_type_name != "option" or param.is_flag or "=" in word:
            out.append(word)  # an unknown option stays, for click to name
            continue
        value = args[i].strip("[]") if i < len(args) else ""
        if value and not value.startswith("-") and value != "...":
            i += 1
            if not _PLACEHOLDER.fullmatch(value) and "|" not in value:
                out += [word, value]
    return out


def _given_words(ctx) -> list[str]:
    """The options given on the line (every spelling), and INPUTS when arguments were given."""
    words = []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if source is not None and source.name == "COMMANDLINE":
            words += param.opts if param.param_type_name == "option" else ["INPUTS"]
    return words


def _check_substitution(substitution: str) -> str | None:
    """A `$(python -c "CODE")` in a line: CODE must parse, what it imports from mmfs must exist, and every
    name it reads must be defined in it."""
    inner = substitution[2:-1].strip()
    words = shlex.split(inner)
    if words[:2] not in (["python", "-c"], ["python3", "-c"]):
        return None
    code = re.sub(r"\$\{?\w+\}?", "0", words[2])  # shell variables are expanded before python sees them
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return f"python -c: {exc.msg}"
    defined = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmfs"):
            module = importlib.import_module(node.module)
            absent = [alias.name for alias in node.names if not hasattr(module, alias.name)]
            if absent:
                return f"python -c: cannot import {absent[0]!r} from {node.module}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
    undefined = sorted(
        {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - defined
    )
    return f"python -c: name {undefined[0]!r} is not defined" if undefined else None


# --- lines that depend on the lines before them ---------------------------------------------------


def check_flow(lines: list[DocLine]) -> dict[str, str]:
    """where -> error, for lines that use a file an earlier line of the same doc made, in a way that does not fit:
    an adapted file (`mmfs adapt --out F`) stylized with another style than it was adapted to."""
    adapted: dict[str, tuple[str, str]] = {}  # out file -> (--text|--ref, value)
    errors = {}
    for line in lines:
        doc = line.where.split(":")[0]
        try:
            words = shlex.split(_protect(line.text)[0])
        except ValueError:
            continue
        if len(words) < 2:
            continue
        options = _options(words[2:])
        if words[1] == "adapt" and "--out" in options:
            style = next(((flag, options[flag][0]) for flag in ("--text", "--ref") if flag in options), None)
            if style:
                adapted[f"{doc}|{options['--out'][0]}"] = style
        elif words[1] == "stylize":
            checkpoint = (options.get("--checkpoint") or options.get("-c") or [None])[0]
            style = adapted.get(f"{doc}|{checkpoint}")
            if style and style[1] not in options.get(style[0], []):
                errors[line.where] = (
                    f"{checkpoint} was adapted to {style[0]} {style[1]!r}: stylize it with the same {style[0]}"
                    " (mmfs adapt --help)"
                )
    return errors


def _options(words: list[str]) -> dict[str, list[str]]:
    """flag -> the values it was given (a flag's value is the word after it, when that is not a flag)."""
    out: dict[str, list[str]] = {}
    for i, word in enumerate(words):
        if word.startswith("-") and len(word) > 1:
            nxt = words[i + 1] if i + 1 < len(words) else ""
            out.setdefault(word, []).append("" if nxt.startswith("-") else nxt)
    return out

"""Every `mmfs ...` line in README.md and docs/ runs as written (checked, not run: tests/support/doc_lines.py).

Also: `--help` shows the rules the option classes declare (`required`, `one_of` in mmfs/config/options.py),
from which the checks read them, and the checks refuse the lines issue 30 found broken.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import typer.main

from mmfs.config.options import rule_help, rules_of
from support.doc_lines import check_flow, check_line, check_words, documented_lines, lines_of

LINES = documented_lines()
FLOW = check_flow(LINES)
PACKAGE_SOURCE = "\n".join(p.read_text() for p in (Path(__file__).parents[1] / "mmfs").rglob("*.py"))


def problem(line, flow: dict[str, str]) -> str | None:
    """What is wrong with a documented line: it does not run as written, or it does not fail as documented."""
    error = check_line(line) or flow.get(line.where)
    if line.fails is None:
        return error and f"{line.text}\n    {error}"
    if line.when_run:  # fails on a file's contents: nothing may stop it earlier, and the package says it
        if error:
            return f"{line.text}\n    {error} (before the documented error)"
        return None if line.fails in PACKAGE_SOURCE else f"{line.fails!r} is not an error mmfs raises"
    if error is None or line.fails not in error:
        return f"{line.text}\n    documented to fail with: {line.fails}\n    got: {error}"
    return None


@pytest.mark.parametrize("line", LINES, ids=[line.where for line in LINES])
def test_documented_line_runs_as_written(line):
    assert problem(line, FLOW) is None, problem(line, FLOW)


def test_the_docs_are_read_whole():
    """Blocks, inline commands, continuations, pipes and torchrun lines are all found."""
    texts = [line.text for line in LINES]
    assert len(LINES) > 200 and sum(line.inline for line in LINES) > 100
    assert any(t.startswith("mmfs finetune") and "--batch-size 32" in t for t in texts)  # torchrun, continued
    assert any(t.startswith("mmfs align - ") for t in texts)  # after a pipe
    assert any(line.fails and not line.when_run for line in LINES) and any(line.when_run for line in LINES)


# The five lines issue 30 found that did not run as written, each with the lines it depends on.
ISSUE_30 = {
    "evaluate.md:235": 'Output i: `mmfs stylize PHOTO --aligned --seed $(python -c "from mmfs.inference.evaluate'
    ' import style_seed; print(style_seed(0, i))")` gives the same image.',
    # Since issue 25 the line itself runs (adapt on the INPUTS' faces): what was wrong is the claim that it fails.
    "adapt.md:39": "`mmfs adapt --ref style.png photos/ -o out` <!-- fails: needs --photos --> is therefore refused.",
    "checkpoints.md:74": "A downloaded `.pt`/`.pth` passed where an mmfs checkpoint is expected (`mmfs stylize -c\n"
    "  phase2_pretrain_90000.pth`) is named as an upstream PyTorch file.",
    "README.md:42": "```bash\n"
    "mmfs adapt --ref style.png --checkpoint model.safetensors --photos faces/ --out style.safetensors\n"
    "mmfs stylize clip.mp4 --checkpoint style.safetensors --seed 1 --out clip_styled.mp4  # a video, sound kept\n"
    "```\n",
    "architecture.md:121": "`mmfs finetune --tv 0.1` then works, `mmfs finetune --help` lists it.",
}


@pytest.mark.parametrize("where", ISSUE_30)
def test_the_lines_issue_30_found_are_refused(where):
    lines = lines_of(ISSUE_30[where], where)
    flow = check_flow(lines)
    assert any(problem(line, flow) for line in lines)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ("strange photo.jpg", "No such command 'strange'"),
        ("stylize me.jpg -c m.safetensors --seed 1 --noise loud", "Invalid value for '--noise'"),
        ("stylize me.jpg -c m.safetensors --seed 1 --quality 500", "Invalid value for '--quality'"),
        ("stylize me.jpg -c m.safetensors --seed", "requires an argument"),
        ("stylize me.jpg -c ref01", "ref01 was adapted to"),
        ("stylize me.jpg -c m.safetensors", "choose exactly one style source"),
        ("stylize me.jpg -c m.safetensors --seed 1 --text a", "got --seed and --text"),
        ("stylize me.jpg -c m.safetensors --seed 1 --paste-back --aligned", "cannot be used with --aligned"),
        ("stylize -c m.safetensors --seed 1", "give INPUTS"),
        ("stylize a.mp4 -c m.safetensors --seeds 1,2", "a video takes one style"),
        ("finetune --photos ffhq/ --art aahq/", "`mmfs finetune` needs --init (or --resume RUN_DIR)"),
        ("train-mapper --init runs/1", "needs --photos"),
        ("adapt -c m.safetensors --text a --ref b.png --photos p/", "choose exactly one style: --text, --ref"),
        ("adapt -c m.safetensors --text a", "`mmfs adapt` needs --photos (or INPUTS)"),
        ("evaluate --n 10", "`mmfs evaluate` needs --photos"),
        ("convert a.pt", "Missing argument"),
        ("demo --threads 0", "Invalid value for '--threads'"),
    ],
)
def test_the_checks_refuse_what_a_run_would(args, error):
    assert error in (check_words(args.split()) or ""), check_words(args.split())


@pytest.mark.parametrize(
    "args",
    [
        "finetune --resume runs/00001-finetune --steps 10",
        "adapt -c m.safetensors --text a --aligned crops/",
        "stylize -c m.safetensors --seed 5 --save-w pop.safetensors",
        "stylize me.jpg -c pop-art",
        "adapt --ref style.png photos/ -o out",
        "align photos/ --outdir aligned --no-rotate",
    ],
)
def test_the_checks_pass_what_a_run_takes(args):
    assert check_words(args.split()) is None


def test_help_shows_the_declared_rules():
    """Each rule a command's option class declares is in the --help text of every option it names."""
    from mmfs_cli.app import app

    root = typer.main.get_command(app)
    seen = 0
    for info in app.registered_commands:
        params = {p.name: p for p in root.commands[info.name].params}
        for group in getattr(info.callback, "groups", {}).values():
            for field in group.fields():
                note = rule_help(group.cls, field.name)
                if note and not params[field.name].required:
                    assert note in params[field.name].help, (info.name, field.name)
                    seen += 1
    assert seen >= 12  # stylize's five style sources, the stages' required folders and files, adapt's


def test_rules_name_real_fields():
    from mmfs.config import stylize, train

    for module in (stylize, train):
        for cls in vars(module).values():
            if dataclasses.is_dataclass(cls):
                names = {f.name for f in dataclasses.fields(cls)}
                for rule in rules_of(cls):
                    assert set(rule.fields) <= names, (cls, rule)


def test_the_pages_list_what_help_lists():
    """stylize.md's option table has every `mmfs stylize` option with its default; video.md and `--help` list the
    code's video types."""
    from mmfs.config.stylize import VIDEO_EXTENSIONS
    from mmfs_cli.app import app

    docs = Path(__file__).parents[1] / "docs"
    command = typer.main.get_command(app).commands["stylize"]
    table = (docs / "stylize.md").read_text().split("## All options", 1)[1].split("\n## ", 1)[0]
    for param in command.params:
        if param.param_type_name == "option":
            assert any(f"`{flag}" in table for flag in param.opts), param.opts
    checked = 0
    for row in re.findall(r"^\| `(-[^`|]*)` \| ([^|]*) \|", table, flags=re.M):  # one option, one default
        param = next((p for p in command.params if row[0].split()[0] in p.opts), None)
        documented = row[1].strip().strip("`")
        if param is None or not re.fullmatch(r"[\w.+-]+", documented) or documented in ("on", "off"):
            continue  # several options in a row, or a default in words
        said = str(param.default) == documented or re.search(rf"default:? {re.escape(documented)}\b", param.help)
        assert said, (row[0], documented, param.default, param.help)
        checked += 1
    assert checked >= 8  # -c, --outdir, --feather, --workers, --noise, --hold-frames, --device, --dtype, ...
    assert f"`{' '.join(VIDEO_EXTENSIONS)}`" in (docs / "video.md").read_text()
    assert all(ext in " ".join(command.help.split()) for ext in VIDEO_EXTENSIONS)

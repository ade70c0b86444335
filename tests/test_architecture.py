"""The layering in docs/architecture.md holds: every import (module or function level) goes upwards, no cycles."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mmfs", "mmfs_cli")


def layers() -> list[list[str]]:
    """The units of each layer, top (lowest) first, from the fenced block of docs/architecture.md."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"<!-- layers -->\s*```\n(.*?)```\s*<!-- /layers -->", text, re.S)
    assert block, "docs/architecture.md lost its layers block"
    rows = [line for line in block.group(1).splitlines() if line.strip()]
    return [[unit.strip() for unit in re.split(r"[|,]", row)] for row in rows]


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, module) of every import of our packages in the file of `module`, wherever it stands (functions
    included); a relative import (`from .io import X`, `from .. import y`) is read as the absolute name it means."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[0] in PACKAGES]
    return found


def unit_of(module: str, units: set[str]) -> str:
    """The longest declared unit that `module` is or lies in."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in units:
            return ".".join(parts[:i])
    raise AssertionError(f"{module} belongs to no layer of docs/architecture.md")


def module_of(name: str, known: dict[str, Path]) -> str | None:
    """`mmfs.a.b.Name` -> the module `mmfs.a.b` (the longest known prefix)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def test_every_package_is_in_exactly_one_layer():
    units = [u for row in layers() for u in row]
    assert len(units) == len(set(units))
    subpackages = {f"mmfs.{p.name}" for p in (ROOT / "mmfs").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    top_modules = {f"mmfs.{p.stem}" for p in (ROOT / "mmfs").glob("*.py") if p.stem != "__init__"}
    assert subpackages | top_modules | {"mmfs", "mmfs_cli"} == set(units)


def against_layers(module: str, path: Path) -> list[str]:
    """The imports of `module` (its file `path`) that go to a peer or a higher layer of docs/architecture.md."""
    rank = {unit: i for i, row in enumerate(layers()) for unit in row}
    mine = unit_of(module, set(rank))
    wrong = []
    for line, name in imports(path, module):
        theirs = unit_of(name, set(rank))
        if theirs != mine and theirs != "mmfs" and rank[theirs] >= rank[mine]:
            wrong.append(f"{path.name}:{line}: {mine} imports {name} ({theirs} is not below it)")
    return wrong


def test_every_import_goes_to_its_own_unit_or_a_lower_layer():
    wrong = [line for module, path in modules().items() for line in against_layers(module, path)]
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(wrong)


def test_relative_imports_are_read_and_held_against_the_layers(tmp_path):
    """`faces/` and `inference/video/` import their siblings relatively: those imports count like any other."""
    init, module = tmp_path / "__init__.py", tmp_path / "stream.py"
    init.write_text("from .stream import run\n")
    module.write_text(
        "from . import io\nfrom .io import Reader\nfrom ..pipeline import X\n\ndef f():\n    from ...train import loop\n"
    )
    assert [n for _, n in imports(init, "mmfs.inference.video")] == [
        "mmfs.inference.video.stream",
        "mmfs.inference.video.stream.run",
    ]
    assert [n for _, n in imports(module, "mmfs.inference.video.stream")] == [
        "mmfs.inference.video", "mmfs.inference.video.io",
        "mmfs.inference.video.io", "mmfs.inference.video.io.Reader",
        "mmfs.inference.pipeline", "mmfs.inference.pipeline.X",
        "mmfs.train", "mmfs.train.loop",
    ]  # fmt: skip
    wrong = against_layers("mmfs.inference.video.stream", module)
    assert wrong == [
        "stream.py:6: mmfs.inference imports mmfs.train (mmfs.train is not below it)",
        "stream.py:6: mmfs.inference imports mmfs.train.loop (mmfs.train is not below it)",
    ]


def test_no_import_cycle_between_modules():
    known = modules()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        targets = {module_of(name, known) for _, name in imports(path, module)}
        # A module importing its own package's __init__ (or itself) is not an edge of a cycle we care about.
        graph[module] = {t for t in targets if t and t != module and not module.startswith(t + ".")}
    cycles = strongly_connected(graph)
    assert not cycles, f"import cycles: {cycles}"


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_the_configuration_imports_no_torch():
    """Every option's declaration is read when `mmfs --help` builds: mmfs.config must stay torch-free."""
    names = sorted(m for m in modules() if m.startswith("mmfs.config"))
    code = f"import sys\nfor n in {names!r}: __import__(n)\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"

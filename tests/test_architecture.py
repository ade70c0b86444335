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


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of our packages in a file, wherever it stands (functions included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
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


def test_every_import_goes_to_its_own_unit_or_a_lower_layer():
    rank = {unit: i for i, row in enumerate(layers()) for unit in row}
    units = set(rank)
    wrong = []
    for module, path in modules().items():
        mine = unit_of(module, units)
        for line, name in imports(path):
            theirs = unit_of(name, units)
            if theirs != mine and theirs != "mmfs" and rank[theirs] >= rank[mine]:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {mine} imports {name} ({theirs} is not below it)")
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(wrong)


def test_no_import_cycle_between_modules():
    known = modules()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        targets = {module_of(name, known) for _, name in imports(path)}
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

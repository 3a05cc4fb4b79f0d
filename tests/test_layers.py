"""The layers of docs/architecture.md: each module imports only from its own layer or the layers before it;
workflows never import each other (pipelines compose them); no import circle anywhere in the package."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

from conftest import REPO

ORDER = ["base", "config", "data", "models", "retrieval", "figures", "runs", "workflows", "pipelines", "cli"]


def _layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "bioclip_cli":
        return ""
    if len(parts) == 1 or parts[1] in ("errors", "progress", "__init__", "__main__"):
        return "base"
    return parts[1] if parts[1] in ORDER else "base"


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every absolute import of the file, at the top or inside a function (`from a import b`: a, and a.b
    when that is a module of the package)."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [
                (node.lineno, f"{node.module}.{alias.name}")
                for alias in node.names
                if f"{node.module}.{alias.name}" in _modules()
            ]
    return found


@functools.cache
def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package is its __init__.py)."""
    out = {}
    for path in (REPO / "bioclip_cli").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def test_no_module_imports_a_later_layer():
    root = REPO / "bioclip_cli"
    problems = []
    for path in sorted(root.rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        if module == "bioclip_cli.__main__":
            continue
        mine = ORDER.index(_layer(module))
        for lineno, imported in _imports(path):
            layer = _layer(imported)
            if layer and ORDER.index(layer) > mine:
                problems.append(f"{path.relative_to(REPO)}:{lineno} ({_layer(module)}) imports {imported} ({layer})")
    assert not problems, "backward imports:\n" + "\n".join(problems)


def test_no_utils_grab_bag():
    assert not list((REPO / "bioclip_cli").rglob("utils.py"))


def test_no_workflow_imports_another_workflow():
    """A workflow calls engines of the lower layers; composing workflows is what bioclip_cli.pipelines is for."""
    problems = []
    for module, path in sorted(_modules().items()):
        if not module.startswith("bioclip_cli.workflows."):
            continue
        for lineno, imported in _imports(path):
            if imported.startswith("bioclip_cli.workflows.") and imported != module:
                problems.append(f"{path.relative_to(REPO)}:{lineno} imports {imported}")
    assert not problems, "workflows importing workflows:\n" + "\n".join(problems)


def test_no_import_circle():
    """No chain of imports (at the top of a module or inside a function) leads from a module back to itself."""
    modules = _modules()
    graph = {m: sorted({i for _, i in _imports(p) if i in modules and i != m}) for m, p in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in graph[module]:
            if state.get(imported) == 1:
                circles.append(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(circles)

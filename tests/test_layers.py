"""The layers of docs/architecture.md: each module imports only from its own layer or the layers before it."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

ORDER = ["base", "config", "data", "models", "retrieval", "workflows", "cli"]


def _layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "bioclip_cli":
        return ""
    if len(parts) == 1 or parts[1] in ("errors", "progress", "__init__", "__main__"):
        return "base"
    return parts[1] if parts[1] in ORDER else "base"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


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

"""The repository explains itself: code points into docs/, whose pages hold the sections it points to."""

from __future__ import annotations

import re

from conftest import REPO

PACKAGE = REPO / "bioclip_cli"
METHOD_SECTIONS = (
    "Model",
    "Contrastive loss",
    "Training recipes",
    "Data",
    "Evaluation",
    "INSECT dataset",
    "BZSL",
    "Hybrid seen/unseen rules",
    "Partitions and per-split export",
    "Figures",
    "Reference numbers",
)
OUTSIDE = re.compile(r"\bSPEC\b|\.\./shared|\bDESIGN\.md\b|\bSTYLE\.md\b")  # files that are not in the repository


def test_the_package_points_to_its_own_docs_only():
    offenders = []
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix not in (".py", ".yaml", ".md", ".txt") or "__pycache__" in path.parts:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_docs_hold_the_sections_the_code_points_to():
    method = (REPO / "docs" / "method.md").read_text()
    assert [s for s in METHOD_SECTIONS if f"\n## {s}\n" not in method] == []
    pointed = set()
    for path in PACKAGE.rglob("*.py"):
        pointed |= set(re.findall(r"docs/method\.md, \"?([A-Z][A-Za-z /-]+?)\"?[):,]", path.read_text()))
    assert pointed and {p for p in pointed if p not in METHOD_SECTIONS} == set()
    architecture = (REPO / "docs" / "architecture.md").read_text()
    for section in ("Layers", "Data flow", "Where each command's engine lives", "Outputs", "How to add a command"):
        assert f"\n## {section}\n" in architecture, section

"""The report of a dataset build (`OUT.report.json`): rows per group, every bad input by kind, timing."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path


@dataclass
class BuildReport:
    """What a build did: rows per group, bad inputs by kind (with ids), timing. Saved as ``OUT.report.json``."""

    out: str
    dataset: str
    root: str
    metadata_rows: int = 0
    rows_written: int = 0  # distinct records stored (a record may be in several groups)
    rows_not_selected: int = 0  # valid rows of splits/groups left out by --splits
    groups: dict[str, int] = field(default_factory=dict)
    groups_skipped: list[str] = field(default_factory=list)
    problems: dict[str, dict] = field(default_factory=dict)
    missing_ranks: dict[str, int] = field(default_factory=dict)  # rows stored with a rank -> not_classified
    image_bytes: int = 0
    seconds: float = 0.0
    rows_per_second: float = 0.0
    options: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # e.g. every group is empty

    @property
    def report_path(self) -> Path:
        return Path(self.out + ".report.json")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_json(self) -> str:
        """Indented JSON, with each problem's id list and details on one line (fast for 10,000s of ids)."""
        lists: list[str] = []
        problems = {}
        for kind, entry in self.problems.items():
            problems[kind] = dict(entry)
            for key in ("ids", "details"):
                if key in entry:
                    problems[kind][key] = f"\0{len(lists)}"  # a placeholder no path or option can hold
                    lists.append(json.dumps(entry[key], ensure_ascii=False))
        text = json.dumps(dict(self.to_dict(), problems=problems), indent=2, ensure_ascii=False)
        return re.sub(r'"\\u0000(\d+)"', lambda m: lists[int(m.group(1))], text) + "\n"

    def group_rows(self) -> list[dict]:
        return [{"group": g, "rows": n} for g, n in self.groups.items()]

    def problem_rows(self) -> list[dict]:
        return [
            {"problem": k, "rows": e["count"], "action": e["action"], "first ids": ", ".join(e["ids"][:3])}
            for k, e in self.problems.items()
        ]

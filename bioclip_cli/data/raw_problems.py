"""Bad input of the raw BIOSCAN releases: the row checks and the log that counts and lists every problem.

:func:`barcode_problems` finds empty barcodes, alignment gaps and other characters outside ACGTN, :func:`missing_rank_bits` the
unclassified ranks; :class:`ProblemLog` counts every bad input by kind with (capped) id lists, so that
`build-hdf5` drops nothing silently and its report says what was skipped and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bioclip_cli.data.dna import gap_count
from bioclip_cli.data.taxonomy import NOT_CLASSIFIED


def barcode_problems(barcodes: list[bytes]) -> list[tuple[int, str, str | None]]:
    """``(row, kind, detail)`` for every empty barcode (UTF-8 bytes) or one with characters outside ACGTN (one
    pass over the joined column when all are clean)."""
    if b"" not in barcodes and not b"".join(barcodes).translate(None, b"ACGTN"):
        return []
    out = []
    for i, seq in enumerate(barcodes):
        if not seq:
            out.append((i, "empty_barcode", None))
            continue
        gaps = gap_count(seq)  # alignment gaps: stored as given, removed when tokenised (data/dna.py)
        if gaps:
            out.append((i, "alignment_gaps", f"{gaps} gap character(s) '-'/'.', removed when tokenised"))
        odd = sorted(set(seq.decode("utf-8")) - set("ACGTN-."))
        if odd:
            out.append((i, "barcode_chars", "characters " + "".join(odd[:20])))
    return out


def missing_rank_bits(ranks: Sequence[list[bytes]]) -> np.ndarray:
    """Per row, bit k set when rank k of `ranks` (order, family, genus, species columns, UTF-8 bytes) is
    ``not_classified``."""
    n = len(ranks[0]) if ranks else 0
    missing = NOT_CLASSIFIED.encode()
    bits = np.zeros(n, dtype=np.int64)
    for k, column in enumerate(ranks):
        if missing in column:
            bits |= np.fromiter(map(missing.__eq__, column), dtype=bool, count=n).astype(np.int64) << k
    return bits


@dataclass
class ProblemLog:
    """Counts and ids of every bad input, by kind. ID lists are capped (`max_ids`); counts never are."""

    max_ids: int = 10_000
    kinds: dict[str, dict] = field(default_factory=dict)

    def add(self, kind: str, record_id: str, action: str, detail: str | None = None) -> None:
        entry = self.kinds.setdefault(kind, {"count": 0, "action": action, "ids": [], "details": {}})
        entry["count"] += 1
        if len(entry["ids"]) < self.max_ids:
            entry["ids"].append(record_id)
            if detail:
                entry["details"][record_id] = detail

    def room(self, kind: str) -> int:
        """How many more ids of `kind` are listed (beyond that only counted)."""
        return self.max_ids - len(self.kinds[kind]["ids"]) if kind in self.kinds else self.max_ids

    def add_many(
        self, kind: str, record_ids: list[str], action: str, details: list[str] | None = None, count: int | None = None
    ) -> None:
        """:meth:`add` for several rows of one kind at once (in order); `count` when more rows than the ids
        given (the ids beyond :meth:`room` need not be given)."""
        count = len(record_ids) if count is None else count
        if not count:
            return
        entry = self.kinds.setdefault(kind, {"count": 0, "action": action, "ids": [], "details": {}})
        entry["count"] += count
        room = self.max_ids - len(entry["ids"])
        if room > 0:
            entry["ids"].extend(record_ids[:room])
            if details is not None:
                entry["details"].update((i, d) for i, d in zip(record_ids[:room], details[:room]) if d)

    def count(self, kind: str) -> int:
        return self.kinds.get(kind, {}).get("count", 0)

    def to_dict(self) -> dict:
        out = {}
        for kind, entry in sorted(self.kinds.items()):
            out[kind] = dict(entry, ids_truncated=entry["count"] > len(entry["ids"]))
            if not entry["details"]:
                out[kind].pop("details")
        return out

    def rows(self) -> list[dict]:
        return [
            {"problem": kind, "rows": e["count"], "action": e["action"], "first ids": ", ".join(e["ids"][:3])}
            for kind, e in sorted(self.kinds.items())
        ]

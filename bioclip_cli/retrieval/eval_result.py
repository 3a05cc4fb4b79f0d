"""The result of a retrieval evaluation (docs/method.md, "Evaluation"), typed.

:class:`EvalResult` holds one accuracy per (query, key) pair, query split, average, k and taxonomic level,
as a fraction in [0, 1]::

    result.accuracy("image", "dna", "unseen", "micro", 1, "species")
    result.mean_seen_unseen("image", "dna", "micro", 1, "genus")   # training's `best` criterion
    result.rows(percent=True)                                      # the paper-like table

The split is `seen`, `unseen` or `harmonic_mean` (present when both query groups are). Alongside: the k
values and levels evaluated, the query and key counts, the inputs, notes (e.g. an empty unseen group), the
approximate-search report (`index="ivf"`) and the per-class rows (when asked for).

:meth:`EvalResult.to_json` is the published JSON shape (`results/eval_{split}.json`, `bioclip eval --json`)::

    {"results": {"image|dna": {"seen": {"micro": {"1": {"order": f, ...}, ...}, "macro": {...}},
                               "unseen": {...}, "harmonic_mean": {"micro": {...}, "macro": {...}}}, ...},
     "k": [1, 3, 5], "levels": [...], "n_queries": {"seen": n, "unseen": n}, "n_keys": n, "inputs": {...},
     "notes": [...], "search": {...}, "per_class": [...]}          # the last three only when they apply

and :meth:`EvalResult.from_json` reads it back. The `"query|key"` and `"k"` string keys of that shape are
made and parsed here only; everything else asks the object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Pair = tuple[str, str]
# split -> average -> k -> level -> fraction
Scores = dict[str, dict[str, dict[int, dict[str, float]]]]

QUERY_SPLITS = ("seen", "unseen")
SPLITS = (*QUERY_SPLITS, "harmonic_mean")
AVERAGES = ("micro", "macro")
_SEPARATOR = "|"


def pair_label(query: str, key: str) -> str:
    """`query|key`: how a pair is named in the JSON, the notes and the progress bar."""
    return f"{query}{_SEPARATOR}{key}"


def _pair(label: str) -> Pair:
    query, _, key = label.partition(_SEPARATOR)
    return query, key


@dataclass
class SearchReport:
    """How an approximate (IVF) search was set up, and its recall@max(k) against exact search per pair."""

    nlist: int
    nprobe: int
    recall_sample: int
    recall_at_k: dict[Pair, float]
    index: str = "ivf"

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "recall_sample": self.recall_sample,
            "recall_at_k": {pair_label(*pair): value for pair, value in self.recall_at_k.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SearchReport:
        recall = {_pair(label): float(v) for label, v in data["recall_at_k"].items()}
        return cls(int(data["nlist"]), int(data["nprobe"]), int(data["recall_sample"]), recall, data["index"])


@dataclass
class EvalResult:
    """Top-k accuracies of every evaluated (query, key) pair; see the module docstring."""

    scores: dict[Pair, Scores]  # in evaluation order
    k: list[int]
    levels: list[str]
    n_queries: dict[str, int]
    n_keys: int
    inputs: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    search: SearchReport | None = None
    per_class: list[dict] | None = None  # None: not asked for

    @property
    def combinations(self) -> list[Pair]:
        """The (query, key) pairs evaluated, in order."""
        return list(self.scores)

    def splits(self, query: str, key: str) -> list[str]:
        """The splits of a pair: seen and/or unseen, and harmonic_mean when both are there."""
        return list(self._pair_scores(query, key))

    def accuracy(self, query: str, key: str, split: str, average: str, k: int, level: str) -> float:
        """One accuracy (a fraction) of the `query` -> `key` search: `split` seen, unseen or harmonic_mean,
        `average` micro or macro, top-`k`, at taxonomic `level`."""
        scores = self._pair_scores(query, key)
        try:
            return scores[split][average][int(k)][level]
        except KeyError:
            raise KeyError(
                f"no {split}/{average}/top-{k}/{level} accuracy for {pair_label(query, key)} "
                f"(splits: {', '.join(scores)}; k: {self.k}; levels: {', '.join(self.levels)})"
            ) from None

    def mean_seen_unseen(self, query: str, key: str, average: str, k: int, level: str) -> float:
        """One accuracy averaged over the query splits present (training's `best` checkpoint criterion)."""
        present = [s for s in QUERY_SPLITS if s in self._pair_scores(query, key)]
        values = [self.accuracy(query, key, s, average, k, level) for s in present]
        return float(sum(values) / len(values))

    def rows(self, *, percent: bool = False) -> list[dict]:
        """The paper-like table: one row per pair x average x k; seen, unseen, then H.M. per level."""
        return _rows(self.scores, self.k, self.levels, percent)

    def _pair_scores(self, query: str, key: str) -> Scores:
        try:
            return self.scores[(query, key)]
        except KeyError:
            have = ", ".join(pair_label(*p) for p in self.scores) or "none"
            raise KeyError(f"{pair_label(query, key)} was not evaluated (pairs: {have})") from None

    # ------------------------------------------------------------------------------------------- JSON

    def to_json(self, *, per_class: bool = True) -> dict:
        """The published JSON shape (module docstring); `per_class=False` leaves the per-class rows out
        (the saved results and `--json` do: they go to their own CSV)."""
        out: dict[str, Any] = {
            "results": {pair_label(*pair): _scores_json(scores) for pair, scores in self.scores.items()},
            "k": list(self.k),
            "levels": list(self.levels),
            "n_queries": dict(self.n_queries),
            "n_keys": self.n_keys,
            "inputs": dict(self.inputs),
        }
        if self.notes:
            out["notes"] = list(self.notes)
        if self.search is not None:
            out["search"] = self.search.to_json()
        if per_class and self.per_class is not None:
            out["per_class"] = [dict(row) for row in self.per_class]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EvalResult:
        """A result read back from :meth:`to_json`'s shape (e.g. a saved `results/eval_val.json`)."""
        scores = {_pair(label): nested_scores(cell) for label, cell in data["results"].items()}
        search = SearchReport.from_json(data["search"]) if "search" in data else None
        per_class = [dict(row) for row in data["per_class"]] if "per_class" in data else None
        return cls(
            scores, [int(k) for k in data["k"]], list(data["levels"]), dict(data["n_queries"]), int(data["n_keys"]),
            dict(data["inputs"]), list(data.get("notes", [])), search, per_class,
        )  # fmt: skip


def json_rows(data: Mapping[str, Any], *, percent: bool = False) -> list[dict]:
    """:meth:`EvalResult.rows` of a result in the JSON shape that carries more than an evaluation (e.g. the
    hybrid rules' result, :mod:`bioclip_cli.retrieval.hybrid`): its `results`, `k` and `levels`."""
    scores = {_pair(label): nested_scores(cell) for label, cell in data["results"].items()}
    return _rows(scores, [int(k) for k in data["k"]], list(data["levels"]), percent)


def _rows(scores: Mapping[Pair, Scores], ks: list[int], levels: list[str], percent: bool) -> list[dict]:
    scale = 100.0 if percent else 1.0
    rows = []
    for (query, key), by_split in scores.items():
        splits = [s for s in SPLITS if s in by_split]
        for average in AVERAGES:
            for k in ks:
                row = {"query": query, "key": key, "metric": average, "k": k}
                for split in splits:
                    label = "H.M." if split == "harmonic_mean" else split
                    for level in levels:
                        row[f"{label} {level}"] = by_split[split][average][k][level] * scale
                rows.append(row)
    return rows


def nested_scores(cell: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]]) -> Scores:
    """Scores from split -> average -> k (a string, as in JSON and in
    :func:`~bioclip_cli.retrieval.metrics.topk_accuracy`) -> level -> fraction."""
    return {
        split: {average: {int(k): dict(levels) for k, levels in by_k.items()} for average, by_k in by_avg.items()}
        for split, by_avg in cell.items()
    }


def _scores_json(scores: Scores) -> dict:
    return {
        split: {average: {str(k): dict(levels) for k, levels in by_k.items()} for average, by_k in by_avg.items()}
        for split, by_avg in scores.items()
    }

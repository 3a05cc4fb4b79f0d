"""The retrieval evaluation engine (docs/method.md, "Evaluation"): embeddings and labels in, the paper's top-k accuracies out.

Queries are the seen and unseen groups, keys one pool (`all_keys`). Each query feature is searched against
each key feature of the same width (image, dna, text, avg, concat; keys also `all`): exact inner product on
re-L2-normalised float32 vectors (faiss `IndexFlatIP`), top max(k) keys, and micro/macro top-k accuracy
per taxonomic level, seen and unseen, with their harmonic mean. The result is an
:class:`~bioclip_cli.retrieval.eval_result.EvalResult` (its `to_json()` is the published JSON shape), with
notes (e.g. an empty unseen group), the IVF settings and recall (`index="ivf"`) and the per-class rows
(`per_class=True`) when they apply. Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from bioclip_cli.config.schema import LEVELS
from bioclip_cli.data.embedding_file import (
    DATASET_FEATURES,
    FEATURE_DATASETS,
    QUERY_GROUPS,
    EmbeddingFile,
    all_key_features,
    derived_features,
    read_embedding_file,
)
from bioclip_cli.errors import BioclipError, DataError
from bioclip_cli.progress import progress_bar
from bioclip_cli.retrieval.eval_result import EvalResult, Pair, SearchReport, nested_scores, pair_label
from bioclip_cli.retrieval.metrics import encode_labels, harmonic_means, per_class_accuracy, topk_accuracy
from bioclip_cli.retrieval.screened_search import exact_index
from bioclip_cli.retrieval.search import IVFIndex, l2_normalize

QUERY_FEATURES: tuple[str, ...] = ("image", "dna", "text", "avg", "concat")
KEY_FEATURES: tuple[str, ...] = (*QUERY_FEATURES, "all")
INDEXES = ("flat", "ivf")
_LOAD_CHUNK = 65536  # rows normalised at a time (float64 files are read block by block)
_RECALL_SAMPLE = 1000


# ------------------------------------------------------------------------------------------- sources


class _Source(Protocol):
    """What the evaluation reads: rows, feature widths, labels and row blocks of each group."""

    where: Path

    def n_rows(self, group: str) -> int: ...
    def widths(self, group: str) -> dict[str, int]: ...
    def labels(self, group: str) -> Mapping[str, np.ndarray]: ...
    def blocks(self, group: str, feature: str) -> Iterator[tuple[int, np.ndarray]]: ...
    def rows(self, group: str, feature: str) -> int: ...
    def describe(self, group: str, feature: str) -> str: ...
    def missing(self, group: str, feature: str) -> DataError: ...


class _FileSource(_Source):
    def __init__(self, ef: EmbeddingFile):
        self.ef = ef
        self.where = ef.h5_path

    def n_rows(self, group):
        return self.ef.n_rows(group) if group in self.ef.labels else 0

    def widths(self, group):
        if group not in self.ef.features:
            return {}
        feats = self.ef.features[group]
        return {DATASET_FEATURES[n]: feats.shape(n)[1] for n in feats if n in DATASET_FEATURES}

    def labels(self, group):
        return self.ef.labels[group]

    def rows(self, group, feature):
        return self.ef.dataset(group, feature).shape[0]

    def blocks(self, group, feature):
        ds = self.ef.dataset(group, feature)
        for s in range(0, ds.shape[0], _LOAD_CHUNK):
            yield s, ds[s : s + _LOAD_CHUNK]

    def describe(self, group, feature):
        return f"{self.where.name}: {group}/{FEATURE_DATASETS[feature]}"

    def missing(self, group, feature):
        try:
            self.ef.dataset(group, feature)
        except DataError as exc:
            return exc
        return DataError(self.where, f"{self.describe(group, feature)} is missing")


class _ArraySource(_Source):
    def __init__(
        self, groups: Mapping[str, Mapping[str, np.ndarray]], labels: Mapping[str, Mapping[str, Sequence[str]]]
    ):
        self.where = Path("<arrays>")
        self._feats = {g: dict(f) for g, f in groups.items()}
        self._labels = {g: {lv: np.asarray(v).astype(str) for lv, v in lab.items()} for g, lab in labels.items()}
        for g, feats in self._feats.items():
            n = self.n_rows(g)
            for name, array in feats.items():
                expected = 3 * n if name == "all" else n
                if array.ndim != 2 or array.shape[0] != expected:
                    raise DataError(
                        self.where,
                        f"{g}/{name} has shape {array.shape} but {g} has {n} label rows (expected {expected} rows)",
                    )

    def n_rows(self, group):
        return len(next(iter(self._labels.get(group, {}).values()), ()))

    def widths(self, group):
        return {name: a.shape[1] for name, a in self._feats.get(group, {}).items()}

    def labels(self, group):
        return self._labels[group]

    def rows(self, group, feature):
        return self._feats[group][feature].shape[0]

    def blocks(self, group, feature):
        array = self._feats[group][feature]
        for s in range(0, array.shape[0], _LOAD_CHUNK):
            yield s, array[s : s + _LOAD_CHUNK]

    def describe(self, group, feature):
        return f"{group}/{feature}"

    def missing(self, group, feature):
        have = ", ".join(self._feats.get(group, {})) or "none"
        return DataError(self.where, f"no {feature!r} embeddings for {group} (it has: {have})")


def _with_derived(feats: Mapping[str, np.ndarray], key_group: bool) -> dict[str, np.ndarray]:
    """Short-named features plus avg/concat (image+dna) and, for keys, all (image+dna+text) when missing."""
    out = {DATASET_FEATURES.get(name, name): np.asarray(a) for name, a in feats.items() if a is not None}
    unknown = set(out) - set(KEY_FEATURES)
    if unknown:
        raise BioclipError(f"unknown feature name(s) {sorted(unknown)}; use {', '.join(KEY_FEATURES)}")
    if "image" in out and "dna" in out and out["image"].shape == out["dna"].shape:
        avg, concat = derived_features(out["image"], out["dna"])
        out.setdefault("avg", avg)
        out.setdefault("concat", concat)
    if key_group and all(m in out for m in ("image", "dna", "text")) and "all" not in out:
        if out["image"].shape == out["dna"].shape == out["text"].shape:
            out["all"] = all_key_features(out["image"], out["dna"], out["text"])
    return out


# ------------------------------------------------------------------------------------------ checking


def _load_unit(source: _Source, group: str, feature: str) -> np.ndarray:
    """Rows of a feature, L2-normalised to float32; DataError on NaN/inf or zero rows, with counts."""
    n = source.rows(group, feature)
    out = None
    nonfinite, zero = [], []
    for s, block in source.blocks(group, feature):
        block = np.asarray(block)
        if out is None:
            out = np.empty((n, block.shape[1]), dtype=np.float32)
        finite = np.isfinite(block).all(axis=1)
        nonfinite.append(s + np.flatnonzero(~finite))
        zero.append(s + np.flatnonzero(finite & ~(block != 0).any(axis=1)))
        out[s : s + len(block)] = l2_normalize(block)
    for bad, what in ((nonfinite, "hold NaN or infinite values"), (zero, "are zero vectors")):
        rows = np.concatenate(bad) if bad else np.array([], dtype=int)
        if rows.size:
            raise DataError(
                source.where,
                f"{source.describe(group, feature)}: {rows.size} of {n} rows {what} (first: row {rows[0]})",
                "re-export the embeddings (`bioclip embed`); a diverged model or a bf16 overflow makes such rows",
            )
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


def _check_levels(source: _Source, groups: Sequence[str], levels: Sequence[str]) -> None:
    for group in groups:
        have = list(source.labels(group))
        missing = [lv for lv in levels if lv not in have]
        if missing:
            raise DataError(
                source.where,
                f"the {group} labels have no level(s) {', '.join(missing)} (they have: {', '.join(have) or 'none'})",
                f"pick levels with --levels from: {', '.join(have)}",
            )


def _feature_widths(source: _Source, splits: Sequence[str]) -> dict[str, int]:
    """Query features present in every non-empty query split, with one width across them."""
    per_split = [source.widths(s) for s in splits]
    out = {}
    for name in QUERY_FEATURES:
        if all(name in w for w in per_split):
            widths = {s: w[name] for s, w in zip(splits, per_split)}
            if len(set(widths.values())) > 1:
                detail = ", ".join(f"{s} {w}" for s, w in widths.items())
                raise DataError(source.where, f"{name} embeddings have different widths across groups ({detail})")
            out[name] = widths[splits[0]]
    return out


def _combinations(
    source: _Source, splits: Sequence[str], queries: Sequence[str] | None, keys: Sequence[str] | None, notes: list
) -> list[tuple[str, str]]:
    """(query, key) pairs to evaluate: the requested ones, or every pair of equal width (paper order)."""
    for names, allowed, flag in ((queries, QUERY_FEATURES, "--query"), (keys, KEY_FEATURES, "--key")):
        for name in names or ():
            if name not in allowed:
                raise BioclipError(f"{flag} {name!r} is not a feature name", f"use one of: {', '.join(allowed)}")
    q_widths = _feature_widths(source, splits)
    k_widths = {n: w for n, w in source.widths("key").items() if n in KEY_FEATURES}
    for names, have, groups in ((queries, q_widths, splits), (keys, k_widths, ["key"])):
        for name in names or ():
            if name not in have:
                group = next((g for g in groups if name not in source.widths(g)), groups[0])
                raise source.missing(group, name)
    qs = list(queries) if queries else [n for n in QUERY_FEATURES if n in q_widths]
    ks = list(keys) if keys else [n for n in KEY_FEATURES if n in k_widths]
    pairs = [(q, k) for q in dict.fromkeys(qs) for k in dict.fromkeys(ks)]
    combos = [(q, k) for q, k in pairs if q_widths[q] == k_widths[k]]
    skipped = [f"{pair_label(q, k)} ({q_widths[q]} vs {k_widths[k]})" for q, k in pairs if q_widths[q] != k_widths[k]]
    if not combos:
        detail = "; ".join(skipped) or "no query or key features in the file"
        raise DataError(source.where, f"no query/key pair of equal width to evaluate: {detail}")
    if skipped and queries and keys:
        notes.append(f"skipped pairs of different widths: {', '.join(skipped)}")
    return combos


# ---------------------------------------------------------------------------------------------- core


def _evaluate(
    source: _Source,
    *,
    queries: Sequence[str] | None,
    keys: Sequence[str] | None,
    ks: Sequence[int],
    levels: Sequence[str],
    index: str,
    device: str,
    per_class: bool,
    inputs: dict,
    search: str = "screened",
) -> EvalResult:
    ks = sorted({int(k) for k in ks})
    levels = list(levels)
    if not ks or ks[0] < 1:
        raise BioclipError(f"k values must be positive integers, got {ks}", "e.g. --k 1,3,5")
    if not levels:
        raise BioclipError("no taxonomic levels to evaluate", f"e.g. --levels {','.join(LEVELS)}")
    if index not in INDEXES:
        raise BioclipError(f"unknown index {index!r}", f"use one of: {', '.join(INDEXES)}")
    notes: list[str] = []
    n_queries = {g: source.n_rows(g) for g in QUERY_GROUPS}
    splits = [g for g in QUERY_GROUPS if n_queries[g] > 0]
    if not splits:
        raise DataError(source.where, "the seen and unseen query groups are both empty: nothing to evaluate")
    notes += [f"the {g} query group is empty: {' and '.join(splits)} only" for g in QUERY_GROUPS if g not in splits]
    n_keys = source.n_rows("key")
    if n_keys < ks[-1]:
        raise DataError(source.where, f"top-{ks[-1]} needs at least {ks[-1]} keys, the key group has {n_keys}")
    _check_levels(source, [*splits, "key"], levels)
    combos = _combinations(source, splits, queries, keys, notes)

    classes, codes = encode_labels(*(source.labels(g) for g in [*splits, "key"]), levels=levels)
    split_codes, key_codes = dict(zip(splits, codes[:-1])), codes[-1]
    bounds = np.cumsum([0, *(n_queries[s] for s in splits)])
    total = bounds[-1]

    unit_queries: dict[str, np.ndarray] = {}
    results: dict[Pair, dict] = {}
    recalls: dict[Pair, float] = {}
    ivf_settings = None
    per_class_rows: list[dict] = []
    key_order = list(dict.fromkeys(k for _, k in combos))
    with progress_bar(len(combos) * total, "Searching", unit="queries") as bar:
        for key in key_order:
            unit_keys = _load_unit(source, "key", key)
            repeat = unit_keys.shape[0] // n_keys  # `all`: image, DNA and text keys stacked, labels repeated
            if unit_keys.shape[0] != repeat * n_keys:
                raise DataError(
                    source.where, f"{source.describe('key', key)} has {unit_keys.shape[0]} rows for {n_keys} labels"
                )
            labels_of_keys = {lv: np.tile(key_codes[lv], repeat) for lv in levels}
            if index == "ivf":
                searcher = IVFIndex(unit_keys, device=device, normalize=False)
                ivf_settings = searcher.settings
            else:
                searcher = exact_index(unit_keys, search=search, device=device, normalize=False)
            inputs.setdefault("backend", f"{searcher.backend} ({searcher.device})")
            for query in [q for q, k in combos if k == key]:
                if query not in unit_queries:
                    unit_queries[query] = np.concatenate([_load_unit(source, s, query) for s in splits])
                bar.update(description=f"Searching {pair_label(query, key)}")
                _, neighbors = searcher.search(unit_queries[query], ks[-1], normalize=False, progress=bar.advance)
                if index == "ivf":
                    recalls[(query, key)], _ = searcher.recall(
                        unit_queries[query], neighbors, sample=_RECALL_SAMPLE, normalize=False
                    )
                cell = {}
                for i, split in enumerate(splits):
                    rows = neighbors[bounds[i] : bounds[i + 1]]
                    cell[split] = topk_accuracy(rows, split_codes[split], labels_of_keys, ks, levels)
                    if per_class:
                        for row in per_class_accuracy(rows, split_codes[split], labels_of_keys, ks, levels, classes):
                            per_class_rows.append({"query": query, "key": key, "split": split, **row})
                if len(splits) == 2:
                    cell["harmonic_mean"] = harmonic_means(cell["seen"], cell["unseen"])
                results[(query, key)] = nested_scores(cell)
            del unit_keys, searcher

    report = None
    if index == "ivf":
        recall_at_k = {pair: recalls[pair] for pair in combos}
        report = SearchReport(ivf_settings.nlist, ivf_settings.nprobe, min(_RECALL_SAMPLE, int(total)), recall_at_k)
    if per_class:
        order = {pair: i for i, pair in enumerate(combos)}
        per_class_rows.sort(key=lambda r: order[(r["query"], r["key"])])
    return EvalResult(
        {pair: results[pair] for pair in combos}, ks, levels, n_queries, n_keys,
        {**inputs, "index": index, **({"search": search} if index == "flat" else {})},
        notes, report, per_class_rows if per_class else None,
    )  # fmt: skip


def evaluate_embeddings(
    embeddings: str | Path | EmbeddingFile,
    labels: str | Path | None = None,
    *,
    queries: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
    ks: Sequence[int] = (1, 3, 5),
    levels: Sequence[str] = LEVELS,
    index: str = "flat",
    device: str = "auto",
    per_class: bool = False,
    search: str = "screened",
) -> EvalResult:
    """Evaluate an extracted-embedding file (ours or a released one) with its labels JSON.

    `queries`/`keys` pick feature names (image, dna, text, avg, concat; keys also all); by default every
    pair of equal width, as the paper's script does (21 pairs for image+DNA+text). `index="ivf"` searches
    approximately and reports recall@k against exact search; exact search is `search="screened"` (the
    same lists at bf16 speed, docs/lowp_search.md) or `"exact"` (plain float32). See the module docstring
    for the result.
    """
    if isinstance(embeddings, EmbeddingFile):
        return _evaluate_file(embeddings, queries, keys, ks, levels, index, device, per_class, search)
    if labels is None:
        raise BioclipError("evaluate_embeddings needs the labels JSON beside the embedding file")
    with read_embedding_file(embeddings, labels) as ef:
        return _evaluate_file(ef, queries, keys, ks, levels, index, device, per_class, search)


def _evaluate_file(ef, queries, keys, ks, levels, index, device, per_class, search) -> EvalResult:
    inputs = {"embeddings": str(ef.h5_path), "labels": str(ef.labels_path)}
    return _evaluate(
        _FileSource(ef), queries=queries, keys=keys, ks=ks, levels=levels, index=index, device=device,
        per_class=per_class, inputs=inputs, search=search,
    )  # fmt: skip


def evaluate_arrays(
    query_feats: Mapping[str, Mapping[str, np.ndarray]],
    key_feats: Mapping[str, np.ndarray],
    query_labels: Mapping[str, Mapping[str, Sequence[str]]],
    key_labels: Mapping[str, Sequence[str]],
    *,
    queries: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
    ks: Sequence[int] = (1, 3, 5),
    levels: Sequence[str] = LEVELS,
    index: str = "flat",
    device: str = "auto",
    per_class: bool = False,
    search: str = "screened",
) -> EvalResult:
    """The same evaluation on in-memory embeddings (e.g. inside training); same result structure.

    `query_feats = {"seen": {"image": [N, d], "dna": ...}, "unseen": {...}}` and `key_feats = {"image": ...}`
    (short or published names); avg and concat are derived from image and dna, and the `all` keys from
    image, dna and text, when not given. `query_labels = {"seen": {level: [...]}, "unseen": ...}`,
    `key_labels = {level: [...]}`, row-aligned.
    """
    groups = {g: _with_derived(query_feats.get(g, {}), False) for g in QUERY_GROUPS}
    groups["key"] = _with_derived(key_feats, True)
    labels = {g: query_labels.get(g, {lv: [] for lv in levels}) for g in QUERY_GROUPS}
    labels["key"] = key_labels
    source = _ArraySource(groups, labels)
    return _evaluate(
        source, queries=queries, keys=keys, ks=ks, levels=levels, index=index, device=device,
        per_class=per_class, inputs={"embeddings": "arrays"}, search=search,
    )  # fmt: skip

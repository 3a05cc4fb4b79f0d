"""Is it a new taxon? Per-level similarity thresholds for "known" vs "new" calls, calibrated on validation.

The score of a query is the cosine similarity of its nearest reference (rank 1). At a level (order, family,
genus, species) the query is called **new** when that score is below the level's threshold, else
**known**; a level under a new one is new too (a new genus holds no known species).

Calibration (:func:`calibrate`) needs queries whose answer is known: the validation seen and unseen
queries, searched against a *reference library that leaves the unseen species out* (the key rows whose
species is among the unseen queries' species are removed; in BIOSCAN-5M that leaves the training species).
A query is then new at a level when its label there is not among the library's labels (queries without a
label at that level, `not_classified`, are left out of that level). Per level, the threshold is the one that
maximises the **balanced accuracy** of the new/known call (the mean of the recall of new and the recall of
known: the validation unseen queries are fewer than the seen ones, and plain accuracy would reward never
calling anything new). Candidates are the distinct validation scores ("new" = score < candidate) and +inf;
ties go to the smallest threshold (the fewest new calls). Precision and recall are those of the "new" call.
A level with no new (or no known) validation query cannot be calibrated: its threshold is None and it is
never called new.

The search is exact cosine (:class:`~bioclip_cli.retrieval.search.FlatIndex`); the sweep over candidates is
vectorised (one sort, `searchsorted` counts).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bioclip_cli.atomic_write import write_text
from bioclip_cli.config.schema import LEVELS
from bioclip_cli.data.taxonomy import NOT_CLASSIFIED
from bioclip_cli.errors import DataError
from bioclip_cli.retrieval.search import FlatIndex

RULE = (
    "per level, the similarity threshold (over the distinct validation scores) maximising the balanced accuracy "
    "of new vs known, where new = the query's label is absent from the reference keys once the unseen species' "
    "keys are left out; called new when the nearest reference's similarity < threshold; ties: the smallest "
    "threshold; a level under a new level is new"
)


def call_stats(scores: np.ndarray, is_new: np.ndarray, threshold: float | None) -> dict:
    """Counts, precision/recall of the "new" call, and balanced accuracy at `threshold` (None: never new)."""
    scores, is_new = np.asarray(scores, dtype=np.float64), np.asarray(is_new, dtype=bool)
    called = scores < threshold if threshold is not None else np.zeros(len(scores), dtype=bool)
    tp = int(np.count_nonzero(called & is_new))
    fp = int(np.count_nonzero(called & ~is_new))
    n_new, n_known = int(np.count_nonzero(is_new)), int(np.count_nonzero(~is_new))
    recall = tp / n_new if n_new else None
    known_recall = (n_known - fp) / n_known if n_known else None
    return {
        "threshold": threshold,
        "n_new": n_new,
        "n_known": n_known,
        "called_new": tp + fp,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": recall,
        "balanced_accuracy": (recall + known_recall) / 2 if recall is not None and known_recall is not None else None,
    }


def choose_threshold(scores: np.ndarray, is_new: np.ndarray) -> dict:
    """The threshold maximising balanced accuracy (module docstring) and its :func:`call_stats`."""
    scores, is_new = np.asarray(scores, dtype=np.float64), np.asarray(is_new, dtype=bool)
    if not is_new.any() or is_new.all():
        out = call_stats(scores, is_new, None)
        out["note"] = "no new validation queries at this level" if not is_new.any() else "no known validation queries"
        return out
    candidates = np.append(np.unique(scores), np.inf)
    new_sorted, known_sorted = np.sort(scores[is_new]), np.sort(scores[~is_new])
    new_below = np.searchsorted(new_sorted, candidates, side="left")  # new queries with score < candidate
    known_below = np.searchsorted(known_sorted, candidates, side="left")
    # balanced accuracy x 2 x n_new x n_known, in integers: equal values tie exactly (no rounding)
    n_new, n_known = len(new_sorted), len(known_sorted)
    balanced = new_below.astype(np.int64) * n_known + (n_known - known_below).astype(np.int64) * n_new
    best = candidates[int(np.argmax(balanced))]  # the first maximum: the smallest threshold
    return call_stats(scores, is_new, float(best))


def _calibration_data(query_feats, query_labels, key_feats, key_labels, levels, device):
    """Rank-1 scores of the validation queries against the library, their labels, and the library's labels."""
    key_feats = np.asarray(key_feats)
    wanted = list(dict.fromkeys(["species", *levels]))
    labels = {lv: np.asarray(key_labels[lv]).astype(str) for lv in wanted}
    repeat = key_feats.shape[0] // len(labels["species"])  # the `all` stack: image, DNA and text keys
    labels = {lv: np.tile(v, repeat) for lv, v in labels.items()}
    unseen_species = set(np.asarray(query_labels["unseen"]["species"]).astype(str).tolist()) - {NOT_CLASSIFIED}
    library = ~np.isin(labels["species"], list(unseen_species))
    if not library.any():
        raise ValueError("every key is of an unseen validation species: no reference library is left to calibrate on")
    queries = np.concatenate([np.asarray(query_feats[s]) for s in ("seen", "unseen")])
    truth = {
        lv: np.concatenate([np.asarray(query_labels[s][lv]).astype(str) for s in ("seen", "unseen")]) for lv in wanted
    }
    scores, _ = FlatIndex(key_feats[library], device=device).search(queries, 1)
    library_labels = {lv: np.unique(v[library]) for lv, v in labels.items()}
    return scores[:, 0].astype(np.float64), truth, library_labels, int(np.count_nonzero(library))


def _level(scores, truth, library_labels, level) -> tuple[np.ndarray, np.ndarray]:
    named = truth[level] != NOT_CLASSIFIED
    return scores[named], ~np.isin(truth[level][named], library_labels[level])


def calibrate(
    query_feats: Mapping[str, np.ndarray],
    query_labels: Mapping[str, Mapping[str, Sequence[str]]],
    key_feats: np.ndarray,
    key_labels: Mapping[str, Sequence[str]],
    levels: Sequence[str] = LEVELS,
    device: str = "auto",
) -> dict:
    """Thresholds per level from validation `seen`/`unseen` queries against keys (module docstring).

    `query_feats = {"seen": [N, d], "unseen": [M, d]}`, `query_labels = {"seen": {level: [...]}, ...}`,
    `key_feats` [K, d] (or the `all` stack [3K, d]: labels repeat) and `key_labels = {level: [...]}`.
    """
    scores, truth, library_labels, n_library = _calibration_data(
        query_feats, query_labels, key_feats, key_labels, levels, device
    )
    return {
        "rule": RULE,
        "n_queries": {s: int(len(query_feats[s])) for s in ("seen", "unseen")},
        "n_library_keys": n_library,
        "stats": "precision/recall of the new call at each level's own threshold (before a level under a new one "
        "is made new too)",
        "levels": {lv: choose_threshold(*_level(scores, truth, library_labels, lv)) for lv in levels},
    }


def calibration_scores(
    query_feats, query_labels, key_feats, key_labels, level: str, device: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """The (scores, is_new) of one level that :func:`calibrate` chose its threshold from (for checking it)."""
    data = _calibration_data(query_feats, query_labels, key_feats, key_labels, [level], device)
    return _level(*data[:3], level)


def decide(similarity: float, thresholds: Mapping[str, float | None], levels: Sequence[str] = LEVELS) -> dict:
    """{level: {"decision": "new"|"known", "threshold", "similarity", "reason"}} for one query's rank-1 similarity."""
    out, parent_new = {}, None
    for lv in levels:
        t = thresholds.get(lv)
        if parent_new is not None:
            decision, reason = "new", f"its {parent_new} is new"
        elif t is None:
            decision, reason = "known", "no calibrated threshold at this level"
        elif similarity < t:
            decision, reason = "new", f"similarity {similarity:.3f} < {t:.3f}"
        else:
            decision, reason = "known", f"similarity {similarity:.3f} >= {t:.3f}"
        if decision == "new" and parent_new is None:
            parent_new = lv
        out[lv] = {"decision": decision, "threshold": t, "similarity": similarity, "reason": reason}
    return out


def annotate(neighbors: Sequence[dict], consensus: Mapping[str, dict], thresholds: Mapping[str, float | None]) -> dict:
    """:func:`decide` on a prediction's rank-1 similarity, plus the nearest label and the answer per level
    ("new", or the consensus label)."""
    nearest = neighbors[0]
    out = decide(float(nearest["similarity"]), thresholds, list(consensus))
    for lv, d in out.items():
        d["nearest"] = nearest[lv]
        d["answer"] = "new" if d["decision"] == "new" else consensus[lv]["label"]
    return out


def summary(novelty: Mapping[str, dict], consensus: Mapping[str, dict], k: int) -> str:
    """Finest level first, e.g. "species: new (nearest: X, similarity 0.410 < 0.550); genus: Y (5/5); ..."."""
    parts = []
    for lv in reversed(list(novelty)):
        d, c = novelty[lv], consensus[lv]
        if d["decision"] == "new":
            parts.append(f"{lv}: new (nearest: {d['nearest']}, {d['reason']})")
        else:
            parts.append(f"{lv}: {c['label']} ({c['votes']}/{k})")
    return "; ".join(parts)


def stored_calibration(ef, path: str | Path, query: str, key: str, device: str = "auto") -> dict:
    """The :func:`calibrate` result of one query/key feature pair of embedding file `ef` (its `seen`/`unseen`
    validation queries against its `key` group), read from the JSON store `path` when it was made from this
    very file (path, size and mtime), else computed and added to the store (written atomically)."""
    path = Path(path)
    st = ef.h5_path.stat()
    stamp = {"path": str(ef.h5_path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        stored = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        stored = {}
    if stored.get("embeddings") != stamp:
        stored = {"embeddings": stamp, "pairs": {}}
    pair = f"{query}|{key}"
    if pair not in stored["pairs"]:
        empty = [g for g in ("seen", "unseen") if ef.n_rows(g) == 0]
        if empty:
            raise DataError(ef.h5_path, f"{ef.h5_path.name} has no {' and '.join(empty)} validation queries to "
                            "calibrate the new-taxon thresholds on", "use --novelty off or a fixed threshold")  # fmt: skip
        levels = [lv for lv in LEVELS if lv in ef.labels["key"]]
        feats = {g: np.asarray(ef.dataset(g, query)[()]) for g in ("seen", "unseen")}
        calibration = calibrate(
            feats, {g: ef.labels[g] for g in ("seen", "unseen")}, np.asarray(ef.dataset("key", key)[()]),
            ef.labels["key"], levels, device=device,
        )  # fmt: skip
        stored["pairs"][pair] = {"query": query, "key": key, **calibration}
        write_text(path, json.dumps(stored, indent=2) + "\n")
    return stored["pairs"][pair]

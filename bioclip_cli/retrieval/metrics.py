"""Top-k accuracy of the retrieval evaluation (docs/method.md, Evaluation): numpy arrays in, numbers out, no
per-query loops.

For each query the prediction at rank j is the label of its j-th nearest key (no voting). A query is a hit
at k when its true label is among the labels of its first k keys. Micro top-k is the share of hits over
queries; macro top-k is the hit rate of each true class present among the queries, averaged over those
classes. `not_classified` is a label like any other. Results are nested dicts keyed like the JSON output:
`{"micro": {"1": {"order": 0.98, ...}, "3": {...}}, "macro": {...}}` (k as a string).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from bioclip_cli.config.schema import LEVELS

Labels = Mapping[str, np.ndarray | Sequence[str] | Sequence[int]]  # level -> one label (or code) per row


def encode_labels(*label_sets: Labels, levels: Sequence[str] = LEVELS) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Integer codes over one shared vocabulary per level, so labels of queries and keys compare as ints.

    Returns `(classes, codes)`: `classes[level]` the sorted distinct labels, and `codes[i][level]` the int64
    code of each row of `label_sets[i]` (an index into `classes[level]`).
    """
    classes: dict[str, np.ndarray] = {}
    codes: list[dict] = [{} for _ in label_sets]
    for level in levels:
        arrays = [np.asarray(s[level]).astype(str) for s in label_sets]
        bounds = np.cumsum([0, *(len(a) for a in arrays)])
        classes[level], inverse = np.unique(np.concatenate(arrays), return_inverse=True)
        for i in range(len(arrays)):
            codes[i][level] = inverse[bounds[i] : bounds[i + 1]].astype(np.int64)
    return classes, codes


def _coded(query_labels: Labels, key_labels: Labels, levels: Sequence[str]) -> tuple[dict, dict, dict | None]:
    """Codes for both sides; labels already given as integer codes are used as they are."""
    if all(np.issubdtype(np.asarray(query_labels[lv]).dtype, np.integer) for lv in levels) and all(
        np.issubdtype(np.asarray(key_labels[lv]).dtype, np.integer) for lv in levels
    ):
        q = {lv: np.asarray(query_labels[lv], dtype=np.int64) for lv in levels}
        k = {lv: np.asarray(key_labels[lv], dtype=np.int64) for lv in levels}
        return q, k, None
    classes, (q, k) = encode_labels(query_labels, key_labels, levels=levels)
    return q, k, classes


def first_hit_rank(neighbor_codes: np.ndarray, true_codes: np.ndarray) -> np.ndarray:
    """0-based rank of the first neighbour whose label is the true one; the list length where none is."""
    eq = neighbor_codes == true_codes[:, None]
    return np.where(eq.any(axis=1), eq.argmax(axis=1), neighbor_codes.shape[1])


def _neighbor_codes(indices: np.ndarray, key_codes: np.ndarray) -> np.ndarray:
    """Labels of the neighbours; a missing neighbour (index -1, approximate search) has label -1."""
    return np.where(indices >= 0, key_codes[np.clip(indices, 0, None)], -1)


def _validate(indices: np.ndarray, ks: Sequence[int], n_queries: int, n_keys: int) -> None:
    if indices.ndim != 2 or indices.shape[0] != n_queries:
        raise ValueError(f"indices of shape {indices.shape} do not match {n_queries} queries")
    if n_queries == 0:
        raise ValueError("no queries: top-k accuracy is undefined")
    if not ks or min(ks) < 1 or max(ks) > indices.shape[1]:
        raise ValueError(f"k values {list(ks)} must be in 1..{indices.shape[1]} (the neighbours searched)")
    if indices.size and indices.max() >= n_keys:
        raise ValueError(f"a neighbour index {indices.max()} is out of range for {n_keys} key labels")


def hit_ranks(indices: np.ndarray, query_labels: Labels, key_labels: Labels, levels: Sequence[str] = LEVELS) -> dict:
    """Per level, the first-hit rank of every query (see :func:`first_hit_rank`); codes or strings in."""
    q, k, _ = _coded(query_labels, key_labels, levels)
    return {lv: first_hit_rank(_neighbor_codes(indices, k[lv]), q[lv]) for lv in levels}


def _checked_ranks(
    indices: np.ndarray, query_labels: Labels, key_labels: Labels, ks: Sequence[int], levels: Sequence[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict | None]:
    """`(ranks, query codes, classes)` after the checks of :func:`_validate`: per level the first-hit rank of
    every query within its first max(ks) neighbours, and the classes when labels came as strings."""
    indices = np.asarray(indices)
    q, kc, classes = _coded(query_labels, key_labels, levels)
    _validate(indices, ks, len(q[levels[0]]), len(kc[levels[0]]))
    ranks = {lv: first_hit_rank(_neighbor_codes(indices[:, : max(ks)], kc[lv]), q[lv]) for lv in levels}
    return ranks, q, classes


def _class_rates(ranks: np.ndarray, true_codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class code: queries of that true class, and how many of them hit within k."""
    return np.bincount(true_codes), np.bincount(true_codes, weights=ranks < k)


def topk_accuracy(
    indices: np.ndarray,
    query_labels: Labels,
    key_labels: Labels,
    ks: Sequence[int] = (1, 3, 5),
    levels: Sequence[str] = LEVELS,
) -> dict[str, dict[str, dict[str, float]]]:
    """Micro and macro top-k accuracy per level, as fractions: `{"micro": {"1": {level: f}}, "macro": ...}`.

    `indices` [Q, >= max(ks)] are key row numbers, nearest first (-1: none). Labels are level -> one string
    (or integer code, see :func:`encode_labels`) per query row and per key row.
    """
    ranks, q, _ = _checked_ranks(indices, query_labels, key_labels, ks, levels)
    return _accuracy_from_ranks(ranks, q, ks, levels)


def topk_accuracy_of_labels(
    predicted: Mapping[str, np.ndarray],
    query_labels: Labels,
    ks: Sequence[int] = (1, 3, 5),
    levels: Sequence[str] = LEVELS,
) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`topk_accuracy` for ranked label lists that are not rows of one key pool (e.g. the hybrid rule,
    which takes each rank's label from one of two lists): `predicted[level]` [Q, >= max(ks)] labels, best first."""
    n = len(query_labels[levels[0]])
    if n == 0:
        raise ValueError("no queries: top-k accuracy is undefined")
    shapes = {lv: np.shape(predicted[lv]) for lv in levels}
    for lv, shape in shapes.items():
        if len(shape) != 2 or shape[0] != n:
            raise ValueError(f"{lv} predictions of shape {shape} do not match {n} queries")
        if not ks or min(ks) < 1 or max(ks) > shape[1]:
            raise ValueError(f"k values {list(ks)} must be in 1..{shape[1]} (the ranks predicted)")
    flat = {lv: np.asarray(predicted[lv]).reshape(-1) for lv in levels}  # one shared vocabulary with the queries
    q, p, _ = _coded(query_labels, flat, levels)
    p = {lv: p[lv].reshape(shapes[lv]) for lv in levels}
    ranks = {lv: first_hit_rank(p[lv][:, : max(ks)], q[lv]) for lv in levels}
    return _accuracy_from_ranks(ranks, q, ks, levels)


def _accuracy_from_ranks(ranks: dict, q: dict, ks: Sequence[int], levels: Sequence[str]) -> dict:
    out: dict[str, dict[str, dict[str, float]]] = {"micro": {}, "macro": {}}
    for k in ks:
        out["micro"][str(k)] = {lv: float(np.count_nonzero(ranks[lv] < k) / len(ranks[lv])) for lv in levels}
        out["macro"][str(k)] = {}
        for lv in levels:
            counts, hits = _class_rates(ranks[lv], q[lv], k)
            present = counts > 0
            out["macro"][str(k)][lv] = float(np.mean(hits[present] / counts[present]))
    return out


def per_class_accuracy(
    indices: np.ndarray,
    query_labels: Labels,
    key_labels: Labels,
    ks: Sequence[int] = (1, 3, 5),
    levels: Sequence[str] = LEVELS,
    classes: Mapping[str, np.ndarray] | None = None,
) -> list[dict]:
    """One row per (level, true class present among the queries): class, n_queries and top-k accuracies.

    Row keys: `level`, `class`, `n_queries`, `top-1`, `top-3`, ... With integer-coded labels pass `classes`
    (from :func:`encode_labels`) to name them; otherwise the codes are used as names.
    """
    ranks, q, found = _checked_ranks(indices, query_labels, key_labels, ks, levels)
    classes = found if found is not None else classes
    rows: list[dict] = []
    for lv in levels:
        present = None
        rates = {}
        for k in ks:
            counts, hits = _class_rates(ranks[lv], q[lv], k)
            present = np.flatnonzero(counts)
            rates[k] = hits[present] / counts[present]
        names = classes[lv][present] if classes is not None else present
        for i, code in enumerate(present):
            row = {"level": lv, "class": str(names[i]), "n_queries": int(counts[code])}
            row.update({f"top-{k}": float(rates[k][i]) for k in ks})
            rows.append(row)
    return rows


def harmonic_mean(seen: float, unseen: float) -> float:
    """2SU / (S + U); 0 when either is 0 (as in the paper's tables)."""
    if seen == 0 or unseen == 0:
        return 0.0
    return 2 * seen * unseen / (seen + unseen)


def harmonic_means(seen: dict, unseen: dict) -> dict:
    """:func:`harmonic_mean` of every cell of two results of :func:`topk_accuracy` (same nesting)."""
    if isinstance(seen, dict):
        return {key: harmonic_means(seen[key], unseen[key]) for key in seen}
    return harmonic_mean(seen, unseen)

"""Top-k metrics (docs/method.md, Evaluation): hand-computed cases, and random cases against a plain per-query reference."""

from __future__ import annotations

import numpy as np
import pytest

from bioclip_cli.retrieval.metrics import (
    encode_labels,
    first_hit_rank,
    harmonic_mean,
    harmonic_means,
    per_class_accuracy,
    topk_accuracy,
)

# 5 keys, two levels; `not_classified` is a class like any other.
KEYS = {
    "genus": ["gA", "gA", "gB", "gB", "gC"],
    "species": ["sA1", "sA2", "sB1", "not_classified", "sC1"],
}
# 3 queries and their neighbour lists (key rows, nearest first).
QUERIES = {"genus": ["gA", "gB", "gA"], "species": ["sA1", "not_classified", "sA2"]}
NEIGHBORS = np.array([[1, 0, 2, 3, 4], [3, 2, 4, 0, 1], [4, 2, 3, 0, 1]])
# By hand: q0 species at rank 1, genus at 0; q1 both at 0; q2 species at rank 4, genus at rank 3.
EXPECTED = {
    "micro": {
        "1": {"genus": 2 / 3, "species": 1 / 3},
        "3": {"genus": 2 / 3, "species": 2 / 3},
        "5": {"genus": 1.0, "species": 1.0},
    },
    # genus classes among the queries: gA (q0 hit@1, q2 miss until 5) and gB (q1 hit@1)
    "macro": {
        "1": {"genus": (1 / 2 + 1) / 2, "species": 1 / 3},
        "3": {"genus": (1 / 2 + 1) / 2, "species": 2 / 3},
        "5": {"genus": 1.0, "species": 1.0},
    },
}


def test_hand_computed_micro_and_macro():
    got = topk_accuracy(NEIGHBORS, QUERIES, KEYS, ks=(1, 3, 5), levels=("genus", "species"))
    assert got == EXPECTED  # exact: the same divisions as by hand
    assert list(got["micro"]) == ["1", "3", "5"]
    assert list(got["micro"]["1"]) == ["genus", "species"]


def test_only_the_first_k_neighbours_count_and_no_voting():
    # Three neighbours labelled sB1 outvote nothing: the prediction at rank 0 alone decides top-1.
    keys = {"species": ["x", "y", "y", "y"]}
    queries = {"species": ["x", "y"]}
    nbrs = np.array([[1, 2, 3, 0], [0, 1, 2, 3]])
    got = topk_accuracy(nbrs, queries, keys, ks=(1, 3, 4), levels=("species",))
    assert got["micro"]["1"]["species"] == 0.0
    assert got["micro"]["3"]["species"] == 0.5
    assert got["micro"]["4"]["species"] == 1.0


def test_not_classified_is_an_ordinary_class():
    keys = {"species": ["not_classified", "s1"]}
    queries = {"species": ["not_classified", "not_classified", "s1"]}
    nbrs = np.array([[0, 1], [1, 0], [1, 0]])
    got = topk_accuracy(nbrs, queries, keys, ks=(1,), levels=("species",))
    assert got["micro"]["1"]["species"] == pytest.approx(2 / 3)
    assert got["macro"]["1"]["species"] == pytest.approx((1 / 2 + 1) / 2)


def test_integer_codes_give_the_same_result_as_strings():
    _, (q, k) = encode_labels(QUERIES, KEYS, levels=("genus", "species"))
    assert topk_accuracy(NEIGHBORS, q, k, levels=("genus", "species")) == topk_accuracy(
        NEIGHBORS, QUERIES, KEYS, levels=("genus", "species")
    )


def test_missing_neighbours_never_hit():
    keys = {"species": ["a", "b"]}
    nbrs = np.array([[-1, 0], [1, -1]])
    got = topk_accuracy(nbrs, {"species": ["a", "a"]}, keys, ks=(1, 2), levels=("species",))
    assert got["micro"]["1"]["species"] == 0.0
    assert got["micro"]["2"]["species"] == 0.5


def test_first_hit_rank():
    codes = np.array([[3, 1, 1], [2, 2, 2], [0, 0, 5]])
    assert first_hit_rank(codes, np.array([1, 7, 5])).tolist() == [1, 3, 2]


def _reference(nbrs, q_labels, k_labels, k):
    """Plain per-query loops, as the published script counts."""
    hits = [q_labels[i] in [k_labels[j] for j in nbrs[i, :k]] for i in range(len(q_labels))]
    micro = sum(hits) / len(hits)
    per_class: dict[str, list[bool]] = {}
    for label, hit in zip(q_labels, hits):
        per_class.setdefault(label, []).append(hit)
    macro = sum(sum(v) / len(v) for v in per_class.values()) / len(per_class)
    return micro, macro


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_cases_match_a_plain_reference(seed):
    rng = np.random.default_rng(seed)
    n_q, n_k, n_nb = 300, 80, 7
    levels = ("order", "family", "genus", "species")
    sizes = {"order": 2, "family": 4, "genus": 9, "species": 25}
    q = {lv: [f"{lv}{i}" for i in rng.integers(0, sizes[lv], n_q)] for lv in levels}
    k = {lv: [f"{lv}{i}" for i in rng.integers(0, sizes[lv] + 3, n_k)] for lv in levels}
    nbrs = np.stack([rng.permutation(n_k)[:n_nb] for _ in range(n_q)])
    got = topk_accuracy(nbrs, q, k, ks=(1, 3, 5, 7), levels=levels)
    for kk in (1, 3, 5, 7):
        for lv in levels:
            micro, macro = _reference(nbrs, q[lv], k[lv], kk)
            assert got["micro"][str(kk)][lv] == pytest.approx(micro, rel=1e-12)
            assert got["macro"][str(kk)][lv] == pytest.approx(macro, rel=1e-12)


def test_per_class_rows():
    rows = per_class_accuracy(NEIGHBORS, QUERIES, KEYS, ks=(1, 5), levels=("genus",))
    assert rows == [
        {"level": "genus", "class": "gA", "n_queries": 2, "top-1": 0.5, "top-5": 1.0},
        {"level": "genus", "class": "gB", "n_queries": 1, "top-1": 1.0, "top-5": 1.0},
    ]
    classes, (q, k) = encode_labels(QUERIES, KEYS, levels=("genus",))
    assert per_class_accuracy(NEIGHBORS, q, k, ks=(1, 5), levels=("genus",), classes=classes) == rows


def test_harmonic_mean():
    assert harmonic_mean(0.5, 0.25) == pytest.approx(2 * 0.5 * 0.25 / 0.75)
    assert harmonic_mean(0.0, 0.9) == 0.0
    assert harmonic_mean(0.9, 0.0) == 0.0
    assert harmonic_mean(1.0, 1.0) == 1.0
    nested = harmonic_means({"micro": {"1": {"species": 0.5}}}, {"micro": {"1": {"species": 0.0}}})
    assert nested == {"micro": {"1": {"species": 0.0}}}


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="k values"):
        topk_accuracy(NEIGHBORS[:, :3], QUERIES, KEYS, ks=(1, 5), levels=("genus",))
    with pytest.raises(ValueError, match="no queries"):
        topk_accuracy(np.empty((0, 5), dtype=int), {"genus": []}, KEYS, ks=(1,), levels=("genus",))
    with pytest.raises(ValueError, match="out of range"):
        topk_accuracy(NEIGHBORS + 1, QUERIES, KEYS, ks=(1,), levels=("genus",))

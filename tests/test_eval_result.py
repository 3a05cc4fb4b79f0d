"""EvalResult: its JSON is byte for byte the shape the untyped result dict had, and it reads back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bioclip_cli.retrieval.eval_result import EvalResult, SearchReport, pair_label
from bioclip_cli.retrieval.evaluation import evaluate_arrays

E = np.eye(5)
KEY_LABELS = {"genus": ["gA", "gA", "gB", "gB", "gC"], "species": ["sA1", "sA2", "sB1", "not_classified", "sC1"]}
SEEN_LABELS = {"genus": ["gA", "gB", "gA"], "species": ["sA1", "not_classified", "sA2"]}
UNSEEN_LABELS = {"genus": ["gC", "gB"], "species": ["sC1", "sB1"]}


def _query(order):
    """A query whose neighbours, nearest first, are the key rows in `order` (keys are e0..e4)."""
    return sum((5 - rank) * E[key] for rank, key in enumerate(order))


SEEN = np.stack([_query([1, 0, 2, 3, 4]), _query([3, 2, 4, 0, 1]), _query([4, 2, 3, 0, 1])])
UNSEEN = np.stack([_query([4, 0, 1, 2, 3]), _query([0, 1, 4, 3, 2])])

# json.dumps of the dicts that evaluate_arrays returned before the result was typed (commit 057aba5), for
# the two cases below: the key order, the "query|key" and "k" strings and every float as they were.
GOLDEN_FLAT = (
    '{"results": {"image|image": {"seen": {"micro": {"1": {"genus": 0.6666666666666666, "species": '
    '0.3333333333333333}, "3": {"genus": 0.6666666666666666, "species": 0.6666666666666666}, "5": {"genus": 1.0, '
    '"species": 1.0}}, "macro": {"1": {"genus": 0.75, "species": 0.3333333333333333}, "3": {"genus": 0.75, '
    '"species": 0.6666666666666666}, "5": {"genus": 1.0, "species": 1.0}}}, "unseen": {"micro": {"1": {"genus": '
    '0.5, "species": 0.5}, "3": {"genus": 0.5, "species": 0.5}, "5": {"genus": 1.0, "species": 1.0}}, "macro": '
    '{"1": {"genus": 0.5, "species": 0.5}, "3": {"genus": 0.5, "species": 0.5}, "5": {"genus": 1.0, "species": '
    '1.0}}}, "harmonic_mean": {"micro": {"1": {"genus": 0.5714285714285715, "species": 0.4}, "3": {"genus": '
    '0.5714285714285715, "species": 0.5714285714285715}, "5": {"genus": 1.0, "species": 1.0}}, "macro": {"1": '
    '{"genus": 0.6, "species": 0.4}, "3": {"genus": 0.6, "species": 0.5714285714285715}, "5": {"genus": 1.0, '
    '"species": 1.0}}}}}, "k": [1, 3, 5], "levels": ["genus", "species"], "n_queries": {"seen": 3, "unseen": 2}, '
    '"n_keys": 5, "inputs": {"embeddings": "arrays", "backend": "faiss-cpu (cpu)", "index": "flat", "search": '
    '"screened"}}'
)
GOLDEN_IVF = (
    '{"results": {"dna|image": {"seen": {"micro": {"1": {"genus": 0.6666666666666666}, "2": {"genus": '
    '0.6666666666666666}}, "macro": {"1": {"genus": 0.75}, "2": {"genus": 0.75}}}}, "dna|dna": {"seen": {"micro": '
    '{"1": {"genus": 0.6666666666666666}, "2": {"genus": 0.6666666666666666}}, "macro": {"1": {"genus": 0.75}, '
    '"2": {"genus": 0.75}}}}}, "k": [1, 2], "levels": ["genus"], "n_queries": {"seen": 3, "unseen": 0}, "n_keys": '
    '5, "inputs": {"embeddings": "arrays", "backend": "faiss-cpu (cpu)", "index": "ivf"}, "notes": ["the unseen '
    'query group is empty: seen only"], "search": {"index": "ivf", "nlist": 1, "nprobe": 1, "recall_sample": 3, '
    '"recall_at_k": {"dna|image": 1.0, "dna|dna": 1.0}}, "per_class": [{"query": "dna", "key": "image", "split": '
    '"seen", "level": "genus", "class": "gA", "n_queries": 2, "top-1": 0.5, "top-2": 0.5}, {"query": "dna", "key": '
    '"image", "split": "seen", "level": "genus", "class": "gB", "n_queries": 1, "top-1": 1.0, "top-2": 1.0}, '
    '{"query": "dna", "key": "dna", "split": "seen", "level": "genus", "class": "gA", "n_queries": 2, "top-1": 0.5, '
    '"top-2": 0.5}, {"query": "dna", "key": "dna", "split": "seen", "level": "genus", "class": "gB", "n_queries": 1, '
    '"top-1": 1.0, "top-2": 1.0}]}'
)


def _flat() -> EvalResult:
    return evaluate_arrays(
        {"seen": {"image": SEEN}, "unseen": {"image": UNSEEN}}, {"image": E * 3.0},
        {"seen": SEEN_LABELS, "unseen": UNSEEN_LABELS}, KEY_LABELS, levels=("genus", "species"), device="cpu",
    )  # fmt: skip


def _ivf_seen_only() -> EvalResult:
    """Two pairs, an empty unseen group (a note), the IVF report and the per-class rows."""
    return evaluate_arrays(
        {"seen": {"dna": SEEN, "image": SEEN}}, {"dna": E, "image": E}, {"seen": SEEN_LABELS}, KEY_LABELS,
        ks=(1, 2), queries=["dna"], keys=["image", "dna"], levels=("genus",), index="ivf", per_class=True,
        device="cpu",
    )  # fmt: skip


@pytest.mark.parametrize(("make", "golden"), [(_flat, GOLDEN_FLAT), (_ivf_seen_only, GOLDEN_IVF)])
def test_to_json_is_the_untyped_dict_of_before(make, golden):
    result = make()
    assert json.dumps(result.to_json()) == golden
    assert result.to_json() == json.loads(golden)
    assert "per_class" not in result.to_json(per_class=False)


@pytest.mark.parametrize(("make", "golden"), [(_flat, GOLDEN_FLAT), (_ivf_seen_only, GOLDEN_IVF)])
def test_from_json_reads_it_back(make, golden):
    again = EvalResult.from_json(json.loads(golden))
    assert again == make()
    assert json.dumps(again.to_json()) == golden


def test_typed_access_is_the_json_cell():
    result, saved = _flat(), json.loads(GOLDEN_FLAT)
    assert result.combinations == [("image", "image")] and result.k == [1, 3, 5]
    assert result.splits("image", "image") == ["seen", "unseen", "harmonic_mean"]
    for split in ("seen", "unseen", "harmonic_mean"):
        for average in ("micro", "macro"):
            for k in (1, 3, 5):
                for level in ("genus", "species"):
                    expected = saved["results"]["image|image"][split][average][str(k)][level]
                    assert result.accuracy("image", "image", split, average, k, level) == expected
    assert result.mean_seen_unseen("image", "image", "macro", 1, "genus") == (0.75 + 0.5) / 2
    assert result.rows()[0]["H.M. genus"] == saved["results"]["image|image"]["harmonic_mean"]["micro"]["1"]["genus"]
    ivf = _ivf_seen_only()
    assert ivf.search == SearchReport(1, 1, 3, {("dna", "image"): 1.0, ("dna", "dna"): 1.0})
    assert ivf.notes == ["the unseen query group is empty: seen only"] and ivf.splits("dna", "dna") == ["seen"]
    assert ivf.mean_seen_unseen("dna", "dna", "micro", 2, "genus") == 2 / 3  # seen only
    assert pair_label("dna", "image") == "dna|image"


def test_missing_cells_say_what_exists():
    result = _flat()
    with pytest.raises(KeyError, match=r"dna\|image was not evaluated \(pairs: image\|image\)"):
        result.accuracy("dna", "image", "seen", "micro", 1, "genus")
    with pytest.raises(KeyError, match=r"no seen/micro/top-2/genus accuracy for image\|image .*k: \[1, 3, 5\]"):
        result.accuracy("image", "image", "seen", "micro", 2, "genus")

"""The evaluation workflow: exact values by hand, a brute-force reference, combinations, files and errors."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from bioclip_cli.data.embedding_file import write_embedding_file
from bioclip_cli.errors import BioclipError, DataError
from bioclip_cli.retrieval.evaluation import evaluate_arrays, evaluate_embeddings
from bioclip_cli.workflows.evaluate import evaluate_run, run_results_path

LEVELS = ("order", "family", "genus", "species")
PAPER_ORDER_IDT = [
    f"{q}|{k}" for q in ("image", "dna", "text", "avg") for k in ("image", "dna", "text", "avg", "all")
] + ["concat|concat"]

# ------------------------------------------------------------------------------------------ by hand

E = np.eye(5)
KEY_LABELS = {"genus": ["gA", "gA", "gB", "gB", "gC"], "species": ["sA1", "sA2", "sB1", "not_classified", "sC1"]}


def _query(order):
    """A query whose neighbours, nearest first, are the key rows in `order` (keys are e0..e4)."""
    return sum((5 - rank) * E[key] for rank, key in enumerate(order))


SEEN = np.stack([_query([1, 0, 2, 3, 4]), _query([3, 2, 4, 0, 1]), _query([4, 2, 3, 0, 1])])
SEEN_LABELS = {"genus": ["gA", "gB", "gA"], "species": ["sA1", "not_classified", "sA2"]}
UNSEEN = np.stack([_query([4, 0, 1, 2, 3]), _query([0, 1, 4, 3, 2])])
UNSEEN_LABELS = {"genus": ["gC", "gB"], "species": ["sC1", "sB1"]}
EXPECTED_SEEN = {
    "micro": {
        "1": {"genus": 2 / 3, "species": 1 / 3},
        "3": {"genus": 2 / 3, "species": 2 / 3},
        "5": {"genus": 1.0, "species": 1.0},
    },
    "macro": {
        "1": {"genus": 0.75, "species": 1 / 3},
        "3": {"genus": 0.75, "species": 2 / 3},
        "5": {"genus": 1.0, "species": 1.0},
    },
}
EXPECTED_UNSEEN = {
    "micro": {
        "1": {"genus": 0.5, "species": 0.5},
        "3": {"genus": 0.5, "species": 0.5},
        "5": {"genus": 1.0, "species": 1.0},
    },
    "macro": {
        "1": {"genus": 0.5, "species": 0.5},
        "3": {"genus": 0.5, "species": 0.5},
        "5": {"genus": 1.0, "species": 1.0},
    },
}


def _hand_result(**options):
    return evaluate_arrays(
        {"seen": {"image": SEEN}, "unseen": {"image": UNSEEN}},
        {"image": E * 3.0},  # not unit length: re-normalised
        {"seen": SEEN_LABELS, "unseen": UNSEEN_LABELS},
        KEY_LABELS,
        levels=("genus", "species"),
        **options,
    )


def test_hand_computed_case_in_the_issue_json_shape():
    result = _hand_result().to_json()
    assert list(result) == ["results", "k", "levels", "n_queries", "n_keys", "inputs"]
    assert result["k"] == [1, 3, 5] and result["levels"] == ["genus", "species"]
    assert result["n_queries"] == {"seen": 3, "unseen": 2} and result["n_keys"] == 5
    assert list(result["results"]) == ["image|image"]
    cell = result["results"]["image|image"]
    assert list(cell) == ["seen", "unseen", "harmonic_mean"]
    assert cell["seen"] == EXPECTED_SEEN
    assert cell["unseen"] == EXPECTED_UNSEEN
    hm = cell["harmonic_mean"]["micro"]["1"]["genus"]
    assert hm == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5)) == pytest.approx(4 / 7)
    assert cell["harmonic_mean"]["macro"]["5"]["species"] == 1.0
    json.dumps(result)  # JSON-ready as it is


def test_result_rows_are_the_paper_table():
    rows = _hand_result().rows()
    assert len(rows) == 1 * 2 * 3  # combinations x (micro, macro) x k
    assert list(rows[0]) == [
        "query", "key", "metric", "k",
        "seen genus", "seen species", "unseen genus", "unseen species", "H.M. genus", "H.M. species",
    ]  # fmt: skip
    assert rows[0]["query"] == "image" and rows[0]["metric"] == "micro" and rows[0]["k"] == 1
    assert rows[0]["seen genus"] == 2 / 3
    assert rows[3]["metric"] == "macro" and rows[3]["seen genus"] == 0.75
    assert _hand_result().rows(percent=True)[3]["seen genus"] == 75.0


def test_per_class_rows_by_hand():
    rows = _hand_result(per_class=True).per_class
    seen_genus = [r for r in rows if r["split"] == "seen" and r["level"] == "genus"]
    assert seen_genus == [
        {"query": "image", "key": "image", "split": "seen", "level": "genus", "class": "gA", "n_queries": 2,
         "top-1": 0.5, "top-3": 0.5, "top-5": 1.0},
        {"query": "image", "key": "image", "split": "seen", "level": "genus", "class": "gB", "n_queries": 1,
         "top-1": 1.0, "top-3": 1.0, "top-5": 1.0},
    ]  # fmt: skip
    assert len(rows) == 2 + 3 + 2 + 2  # classes per (split, level): genus and species, seen and unseen


def test_mean_of_seen_and_unseen():
    assert _hand_result().mean_seen_unseen("image", "image", "micro", 1, "genus") == pytest.approx((2 / 3 + 0.5) / 2)


def test_ivf_index_reports_recall():
    result = _hand_result(index="ivf").to_json()
    assert result["results"] == _hand_result().to_json()["results"]  # 5 keys: one cell, so exact
    assert result["search"]["index"] == "ivf" and result["search"]["nlist"] == 1
    assert result["search"]["recall_at_k"] == {"image|image": 1.0}
    assert result["inputs"]["index"] == "ivf"


# ---------------------------------------------------------------------------------- brute force


def _random_data(seed=0, n=(40, 25, 60), width=8, modalities=("image", "dna", "text")):
    rng = np.random.default_rng(seed)
    feats, labels = {}, {}
    for group, rows in zip(("seen", "unseen", "key"), n):
        feats[group] = {m: rng.standard_normal((rows, width)) for m in modalities}
        species = rng.integers(0, 12, rows)
        labels[group] = {
            "order": [f"o{s % 2}" for s in species],
            "family": [f"f{s % 3}" for s in species],
            "genus": [f"g{s % 5}" if s % 7 else "not_classified" for s in species],
            "species": [f"s{s}" for s in species],
        }
    return feats, labels


def _reference(queries, q_labels, keys, k_labels, k):
    """Plain numpy search and per-query counting, as the published script does."""
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    kn = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    nearest = np.argsort(-(qn @ kn.T), axis=1, kind="stable")[:, :k]
    micro, macro = {}, {}
    for level in LEVELS:
        hits = [q_labels[level][i] in [k_labels[level][j] for j in nearest[i]] for i in range(len(queries))]
        micro[level] = sum(hits) / len(hits)
        by_class = {}
        for label, hit in zip(q_labels[level], hits):
            by_class.setdefault(label, []).append(hit)
        macro[level] = sum(sum(h) / len(h) for h in by_class.values()) / len(by_class)
    return micro, macro


def _reference_features(group, feats):
    f = dict(feats[group])
    f["avg"] = (f["image"] + f["dna"]) / 2
    f["concat"] = np.concatenate([f["image"], f["dna"]], axis=1)
    if group == "key":
        f["all"] = np.concatenate([f["image"], f["dna"], f["text"]])
    return f


def test_every_combination_matches_the_brute_force_reference():
    feats, labels = _random_data()
    result = evaluate_arrays(
        {"seen": feats["seen"], "unseen": feats["unseen"]}, feats["key"],
        {"seen": labels["seen"], "unseen": labels["unseen"]}, labels["key"],
    ).to_json()  # fmt: skip
    assert list(result["results"]) == PAPER_ORDER_IDT  # 21 pairs for image + DNA + text
    keys = _reference_features("key", feats)
    for combo, cell in result["results"].items():
        query, key = combo.split("|")
        key_labels = {lv: labels["key"][lv] * (3 if key == "all" else 1) for lv in LEVELS}  # `all`: labels x3
        for split in ("seen", "unseen"):
            q = _reference_features(split, feats)[query]
            for k in (1, 3, 5):
                micro, macro = _reference(q, labels[split], keys[key], key_labels, k)
                assert cell[split]["micro"][str(k)] == pytest.approx(micro, rel=1e-12), (combo, split, k)
                assert cell[split]["macro"][str(k)] == pytest.approx(macro, rel=1e-12), (combo, split, k)


def test_all_keys_take_the_label_of_the_key_row_they_repeat():
    keys = {"image": np.eye(4)[:3] + 0.1, "dna": np.eye(4)[:3] - 0.1, "text": -np.eye(4)[:3]}
    key_labels = {lv: ["a", "b", "c"] for lv in LEVELS}
    query = -np.eye(4)[1:2]  # equal to text key 1, i.e. row 3 + 1 = 4 of the stacked `all` keys
    result = evaluate_arrays(
        {"seen": {"image": query}}, keys, {"seen": {lv: ["b"] for lv in LEVELS}}, key_labels,
        queries=["image"], keys=["all"], ks=(1,),
    )  # fmt: skip
    assert {lv: result.accuracy("image", "all", "seen", "micro", 1, lv) for lv in LEVELS} == {lv: 1.0 for lv in LEVELS}
    assert result.n_keys == 3


def test_tied_keys_are_predicted_in_faiss_order():
    """Keys 0 and 1 are the same vector with different labels: faiss lists the tie as [1, 0]."""
    keys = {"dna": np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])}
    key_labels = {"species": ["a", "b", "c"]}
    query = {"dna": np.array([[1.0, 0.0], [1.0, 0.0]])}
    for device in ("cpu", "torch"):
        result = evaluate_arrays(
            {"seen": query}, keys, {"seen": {"species": ["b", "a"]}}, key_labels, ks=(1, 2), levels=["species"],
            device=device,
        )  # fmt: skip
        assert result.to_json()["results"]["dna|dna"]["seen"]["micro"] == {"1": {"species": 0.5}, "2": {"species": 1.0}}


def test_torch_search_path_gives_the_same_result():
    assert _hand_result(device="torch").scores == _hand_result(device="cpu").scores


def test_image_dna_model_has_ten_pairs():
    feats, labels = _random_data(modalities=("image", "dna"))
    result = evaluate_arrays(
        {"seen": feats["seen"], "unseen": feats["unseen"]}, feats["key"],
        {"seen": labels["seen"], "unseen": labels["unseen"]}, labels["key"],
    )  # fmt: skip
    assert result.combinations == [(q, k) for q in ("image", "dna", "avg") for k in ("image", "dna", "avg")] + [
        ("concat", "concat")
    ]


def test_chosen_pairs_and_width_mismatches():
    feats, labels = _random_data()
    args = (
        {"seen": feats["seen"], "unseen": feats["unseen"]},
        feats["key"],
        {"seen": labels["seen"], "unseen": labels["unseen"]},
        labels["key"],
    )
    result = evaluate_arrays(*args, queries=["image", "concat"], keys=["dna", "concat"])
    assert result.combinations == [("image", "dna"), ("concat", "concat")]
    assert result.notes == ["skipped pairs of different widths: image|concat (8 vs 16), concat|dna (16 vs 8)"]
    assert evaluate_arrays(*args, queries=["dna"]).combinations == [
        ("dna", "image"),
        ("dna", "dna"),
        ("dna", "text"),
        ("dna", "avg"),
        ("dna", "all"),
    ]
    with pytest.raises(DataError, match=r"no query/key pair of equal width to evaluate: concat\|dna \(16 vs 8\)"):
        evaluate_arrays(*args, queries=["concat"], keys=["dna"])
    with pytest.raises(BioclipError, match="--key 'everything' is not a feature name"):
        evaluate_arrays(*args, keys=["everything"])


# --------------------------------------------------------------------------------------- files


def _write(tmp_path, feats, labels, split="val", **kw):
    out = tmp_path / "runs" / "r1" / "embeddings"
    return write_embedding_file(out, split, feats, labels, **kw)


def test_file_and_arrays_give_the_same_result(tmp_path):
    feats, labels = _random_data(seed=1)
    h5_path, labels_path = _write(
        tmp_path, {g: {m: a.astype(np.float32) for m, a in f.items()} for g, f in feats.items()}, labels
    )
    from_file = evaluate_embeddings(h5_path, labels_path, ks=(1, 5))
    from_arrays = evaluate_arrays(
        {"seen": feats["seen"], "unseen": feats["unseen"]},
        {m: a.astype(np.float32) for m, a in feats["key"].items()},
        {"seen": labels["seen"], "unseen": labels["unseen"]}, labels["key"], ks=(1, 5),
    )  # fmt: skip
    assert from_file.scores == from_arrays.scores
    assert from_file.inputs["embeddings"] == str(h5_path)
    assert from_file.inputs["backend"] == "faiss-cpu (cpu)"


def test_released_style_float64_file(tmp_path):
    """Published dataset names, float64, no sample ids: normalised in float64 like the published script."""
    feats, labels = _random_data(seed=2)
    h5_path = tmp_path / "extracted_feature_from_val_split.hdf5"
    with h5py.File(h5_path, "w") as f:
        for group, fs in feats.items():
            g = f.create_group(group)
            g["encoded_image_feature"], g["encoded_dna_feature"] = fs["image"], fs["dna"]
            g["encoded_language_feature"] = fs["text"]
            g["averaged_feature"] = (fs["image"] + fs["dna"]) / 2
            g["concatenated_feature"] = np.concatenate([fs["image"], fs["dna"]], axis=1)
            if group == "key":
                g["all_key_features"] = np.concatenate([fs["image"], fs["dna"], fs["text"]])
    labels_path = tmp_path / "labels_val.json"
    rows = {
        f"{g}_gt_dict": [dict(zip(LEVELS, r)) for r in zip(*(lab[lv] for lv in LEVELS))] for g, lab in labels.items()
    }
    labels_path.write_text(json.dumps(rows))
    result = evaluate_embeddings(h5_path, labels_path)
    assert list(result.to_json()["results"]) == PAPER_ORDER_IDT
    reference = evaluate_arrays(
        {"seen": feats["seen"], "unseen": feats["unseen"]}, feats["key"],
        {"seen": labels["seen"], "unseen": labels["unseen"]}, labels["key"],
    )  # fmt: skip
    assert result.scores == reference.scores


def test_empty_unseen_group_gives_seen_only_with_a_note(tmp_path):
    feats, labels = _random_data(n=(30, 0, 40))
    result = evaluate_embeddings(*_write(tmp_path, feats, labels), queries=["dna"], keys=["dna"])
    assert result.n_queries == {"seen": 30, "unseen": 0}
    assert result.splits("dna", "dna") == ["seen"]
    assert result.notes == ["the unseen query group is empty: seen only"]
    assert "unseen genus" not in result.rows()[0] and "H.M. genus" not in result.rows()[0]


def test_nan_and_zero_vectors_are_refused_with_counts(tmp_path):
    feats, labels = _random_data()
    feats["seen"]["image"][[3, 9]] = np.nan
    with pytest.raises(
        DataError, match=r"seen/encoded_image_feature: 2 of 40 rows hold NaN or infinite values \(first: row 3\)"
    ):
        evaluate_embeddings(*_write(tmp_path, feats, labels), queries=["image"], keys=["dna"])
    feats, labels = _random_data()
    feats["key"]["dna"][7] = 0
    with pytest.raises(DataError, match=r"key/dna: 1 of 60 rows are zero vectors \(first: row 7\)"):
        evaluate_arrays(
            {"seen": feats["seen"]},
            feats["key"],
            {"seen": labels["seen"]},
            labels["key"],
            queries=["dna"],
            keys=["dna"],
        )


def test_bad_inputs_name_the_dataset_and_counts(tmp_path):
    feats, labels = _random_data(modalities=("image", "dna"))
    paths = _write(tmp_path, feats, labels)
    with pytest.raises(DataError, match=r"group 'seen' has no dataset 'encoded_language_feature' \(it has: "):
        evaluate_embeddings(*paths, queries=["text"])
    with pytest.raises(DataError, match="group 'key' has no dataset 'all_key_features'"):
        evaluate_embeddings(*paths, keys=["all"])
    with pytest.raises(DataError, match=r"no level\(s\) subfamily \(they have: order, family, genus, species\)"):
        evaluate_embeddings(*paths, levels=["order", "subfamily"])
    with pytest.raises(DataError, match="top-100 needs at least 100 keys, the key group has 60"):
        evaluate_embeddings(*paths, ks=(1, 100))
    with pytest.raises(DataError, match=r"seen/image has shape \(40, 8\) but seen has 39 label rows"):
        evaluate_arrays(
            {"seen": feats["seen"]},
            feats["key"],
            {"seen": {lv: v[:-1] for lv, v in labels["seen"].items()}},
            labels["key"],
        )
    with pytest.raises(DataError, match="different widths across groups"):
        evaluate_arrays(
            {"seen": feats["seen"], "unseen": {"image": np.ones((25, 3))}}, feats["key"],
            {"seen": labels["seen"], "unseen": labels["unseen"]}, labels["key"], queries=["image"],
        )  # fmt: skip


# ------------------------------------------------------------------------------------------ runs


def test_evaluate_run_saves_results_in_the_run(tmp_path):
    feats, labels = _random_data()
    _write(tmp_path, feats, labels, split="test")
    run = tmp_path / "runs" / "r1"
    result = evaluate_run(run, split="test", queries=["image"], keys=["image"], ks=(1,))
    saved = json.loads(run_results_path(run, "test").read_text())
    assert run_results_path(run, "test") == run / "results" / "eval_test.json"
    assert saved == json.loads(json.dumps(result.to_json()))
    assert saved["inputs"]["run"] == str(run) and saved["inputs"]["split"] == "test"


def test_run_errors_say_what_exists(tmp_path):
    feats, labels = _random_data()
    _write(tmp_path, feats, labels, split="test")
    (tmp_path / "runs" / "other" / "embeddings").mkdir(parents=True)  # a run: it has embeddings
    (tmp_path / "runs" / "empty").mkdir()  # not a run
    with pytest.raises(DataError, match=r"run directory .*nope does not exist \(runs in .*runs/: other, r1\)"):
        evaluate_run(tmp_path / "runs" / "nope")
    with pytest.raises(
        DataError, match=r"has no val embeddings: .* is missing \(it has: extracted_feature_from_test_split.hdf5\)"
    ) as err:
        evaluate_run(tmp_path / "runs" / "r1", split="val")
    assert err.value.hint == f"bioclip embed --run {tmp_path / 'runs' / 'r1'}"
    with pytest.raises(BioclipError, match="either --run or --embeddings"):
        evaluate_run(tmp_path / "runs" / "r1", embeddings="x.hdf5")
    with pytest.raises(BioclipError, match="nothing to evaluate"):
        evaluate_run()

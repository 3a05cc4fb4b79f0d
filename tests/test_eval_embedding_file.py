"""The extracted-embedding files (published layout): write, resume, read ours and released-style files."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from bioclip_cli.data.embedding_file import (
    EmbeddingFileWriter,
    all_key_features,
    derived_features,
    embedding_file_paths,
    read_embedding_file,
    write_embedding_file,
)
from bioclip_cli.errors import DataError

LEVELS = ("order", "family", "genus", "species")
ROWS = {"seen": 7, "unseen": 5, "key": 9}


def _group(rng, n, width=6):
    feats = {m: rng.standard_normal((n, width)).astype(np.float32) for m in ("image", "dna", "text")}
    labels = {lv: [f"{lv}{i}" for i in rng.integers(0, 3, n)] for lv in LEVELS}
    return feats, labels, [f"PROC{i:04d}" for i in range(n)]


def _dataset(seed=0):
    rng = np.random.default_rng(seed)
    parts = {g: _group(rng, n) for g, n in ROWS.items()}
    return (
        {g: p[0] for g, p in parts.items()},
        {g: p[1] for g, p in parts.items()},
        {g: p[2] for g, p in parts.items()},
    )


def test_write_then_read_round_trip(tmp_path):
    feats, labels, ids = _dataset()
    h5_path, labels_path = write_embedding_file(tmp_path, "val", feats, labels, ids)
    assert (h5_path, labels_path) == embedding_file_paths(tmp_path, "val")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["extracted_feature_from_val_split.hdf5", "labels_val.json"]
    with h5py.File(h5_path) as f:
        assert sorted(f) == ["key", "seen", "unseen"]
        assert sorted(f["key"]) == [
            "all_key_features",
            "averaged_feature",
            "concatenated_feature",
            "encoded_dna_feature",
            "encoded_image_feature",
            "encoded_language_feature",
            "sample_ids",
        ]
        assert "all_key_features" not in f["seen"]
        assert f["seen/encoded_image_feature"].dtype == np.float32
    raw = json.loads(labels_path.read_text())
    assert list(raw) == ["seen_gt_dict", "unseen_gt_dict", "key_gt_dict"]
    assert raw["seen_gt_dict"][0] == {lv: labels["seen"][lv][0] for lv in LEVELS}

    with read_embedding_file(h5_path, labels_path) as ef:
        assert ef.groups == ("seen", "unseen", "key")
        for g in ROWS:
            np.testing.assert_array_equal(ef.features[g]["encoded_image_feature"], feats[g]["image"])
            np.testing.assert_array_equal(ef.features[g]["encoded_language_feature"], feats[g]["text"])
            avg, concat = derived_features(feats[g]["image"], feats[g]["dna"])
            np.testing.assert_array_equal(ef.features[g]["averaged_feature"], (feats[g]["image"] + feats[g]["dna"]) / 2)
            np.testing.assert_array_equal(ef.features[g]["concatenated_feature"], concat)
            assert ef.features[g].shape("concatenated_feature") == (ROWS[g], 12)
            assert ef.labels[g]["species"].tolist() == labels[g]["species"]
            assert ef.sample_ids[g].tolist() == ids[g]
            assert ef.n_rows(g) == ROWS[g]
        stacked = ef.features["key"]["all_key_features"]
        assert stacked.shape == (27, 6)
        np.testing.assert_array_equal(
            stacked, all_key_features(feats["key"]["image"], feats["key"]["dna"], feats["key"]["text"])
        )
        np.testing.assert_array_equal(stacked[9:18], feats["key"]["dna"])


def test_float64_option(tmp_path):
    feats, labels, ids = _dataset()
    h5_path, labels_path = write_embedding_file(tmp_path, "test", feats, labels, ids, dtype="float64")
    assert h5_path.name == "extracted_feature_from_test_split.hdf5" and labels_path.name == "labels_test.json"
    with read_embedding_file(h5_path, labels_path) as ef:
        got = ef.features["key"]["encoded_dna_feature"]
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, feats["key"]["dna"].astype(np.float64))
        assert ef.features["key"]["all_key_features"].dtype == np.float64


def test_batches_give_the_same_file_as_one_call(tmp_path):
    feats, labels, ids = _dataset()
    write_embedding_file(tmp_path / "whole", "val", feats, labels, ids)
    with EmbeddingFileWriter(tmp_path / "batched", "val") as writer:
        for g, n in ROWS.items():
            with writer.group_writer(g, n) as gw:
                for s in range(0, n, 4):  # 4, 4, 1 rows...
                    gw.append(
                        {
                            f"encoded_{m}_feature" if m != "text" else "encoded_language_feature": feats[g][m][
                                s : s + 4
                            ]
                            for m in feats[g]
                        },
                        {lv: labels[g][lv][s : s + 4] for lv in LEVELS},
                        ids[g][s : s + 4],
                    )
        writer.finalize()
    a = read_embedding_file(*embedding_file_paths(tmp_path / "whole", "val"))
    b = read_embedding_file(*embedding_file_paths(tmp_path / "batched", "val"))
    with a, b:
        for g in ROWS:
            assert sorted(a.features[g]) == sorted(b.features[g])
            for name in a.features[g]:
                np.testing.assert_array_equal(a.features[g][name], b.features[g][name])
            assert a.sample_ids[g].tolist() == b.sample_ids[g].tolist()
    assert (
        embedding_file_paths(tmp_path / "whole", "val")[1].read_text()
        == embedding_file_paths(tmp_path / "batched", "val")[1].read_text()
    )


def test_an_interrupted_write_resumes_with_the_missing_groups_only(tmp_path):
    feats, labels, ids = _dataset()
    h5_path, labels_path = embedding_file_paths(tmp_path, "val")
    with EmbeddingFileWriter(tmp_path, "val") as writer:
        writer.write_group("seen", feats["seen"], labels["seen"], ids["seen"])
        with pytest.raises(RuntimeError):  # the encoder dies half-way through the unseen group
            with writer.group_writer("unseen", 5) as gw:
                gw.append(feats["unseen"], labels["unseen"], ids["unseen"])
                raise RuntimeError("out of memory")
    assert not h5_path.exists() and not labels_path.exists()  # nothing half-written under the final names

    writer = EmbeddingFileWriter(tmp_path, "val")
    assert writer.completed_groups == {"seen"}
    writer.close()
    # a rerun passes only what it encoded again; `seen` comes from the partial file
    write_embedding_file(tmp_path, "val", {g: feats[g] for g in ("unseen", "key")}, labels, ids)
    assert sorted(p.name for p in tmp_path.iterdir()) == [h5_path.name, labels_path.name]
    with read_embedding_file(h5_path, labels_path) as ef:
        np.testing.assert_array_equal(ef.features["seen"]["encoded_dna_feature"], feats["seen"]["dna"])
        np.testing.assert_array_equal(ef.features["unseen"]["encoded_dna_feature"], feats["unseen"]["dna"])
        assert ef.labels["seen"]["genus"].tolist() == labels["seen"]["genus"]
    assert EmbeddingFileWriter(tmp_path, "val").completed_groups == {"seen", "unseen", "key"}


def test_a_partial_file_of_another_dtype_is_discarded(tmp_path):
    feats, labels, ids = _dataset()
    with EmbeddingFileWriter(tmp_path, "val", dtype="float64") as writer:
        writer.write_group("seen", feats["seen"], labels["seen"], ids["seen"])
    assert EmbeddingFileWriter(tmp_path, "val", dtype="float64").completed_groups == {"seen"}
    assert EmbeddingFileWriter(tmp_path, "val", dtype="float32").completed_groups == set()


def test_finalize_needs_every_group_and_rows_must_add_up(tmp_path):
    feats, labels, ids = _dataset()
    with EmbeddingFileWriter(tmp_path, "val") as writer:
        writer.write_group("seen", feats["seen"], labels["seen"])
        with pytest.raises(ValueError, match="not written yet"):
            writer.finalize()
        gw = writer.group_writer("key", 10)
        gw.append(feats["key"], labels["key"])
        with pytest.raises(ValueError, match="9 of 10 rows"):
            gw.close()
        with pytest.raises(ValueError, match="different row counts"):
            writer.write_group("unseen", {"image": np.zeros((2, 6))}, {"species": ["a"]})


def test_an_empty_unseen_group_is_written_and_read(tmp_path):
    feats, labels, ids = _dataset()
    feats["unseen"] = {m: np.zeros((0, 6), np.float32) for m in ("image", "dna", "text")}
    labels["unseen"] = {lv: [] for lv in LEVELS}
    ids["unseen"] = []
    with read_embedding_file(*write_embedding_file(tmp_path, "val", feats, labels, ids)) as ef:
        assert ef.n_rows("unseen") == 0
        assert ef.features["unseen"].shape("encoded_image_feature") == (0, 6)
        assert ef.labels["unseen"]["species"].tolist() == []


def _released_style(tmp_path, n=(6, 4, 8), width=5, seed=0):
    """A file made the way the released ones are: float64, published names only, no sample ids."""
    rng = np.random.default_rng(seed)
    h5_path = tmp_path / "extracted_feature_from_val_split.hdf5"
    labels_json, feats = {}, {}
    with h5py.File(h5_path, "w") as f:
        for group, rows in zip(("seen", "unseen", "key"), n):
            g = f.create_group(group)
            image, dna, text = (rng.standard_normal((rows, width)) for _ in range(3))
            feats[group] = {"image": image, "dna": dna, "text": text}
            g["encoded_image_feature"], g["encoded_dna_feature"], g["encoded_language_feature"] = image, dna, text
            g["averaged_feature"] = (image + dna) / 2
            g["concatenated_feature"] = np.concatenate([image, dna], axis=1)
            if group == "key":
                g["all_key_features"] = np.concatenate([image, dna, text])
            labels_json[f"{group}_gt_dict"] = [
                {lv: f"{lv}_{int(v)}" for lv, v in zip(LEVELS, rng.integers(0, 3, 4))} for _ in range(rows)
            ]
    labels_path = tmp_path / "labels_val.json"
    labels_path.write_text(json.dumps(labels_json))
    return h5_path, labels_path, feats, labels_json


def test_reads_a_released_style_float64_file(tmp_path):
    h5_path, labels_path, feats, labels_json = _released_style(tmp_path)
    with read_embedding_file(h5_path, labels_path) as ef:
        assert ef.sample_ids == {"seen": None, "unseen": None, "key": None}
        got = ef.features["key"]["encoded_image_feature"]
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, feats["key"]["image"])
        assert ef.labels["key"]["family"].tolist() == [row["family"] for row in labels_json["key_gt_dict"]]
        assert ef.dataset("key", "all").shape == (24, 5)


def test_read_errors_name_the_problem(tmp_path):
    h5_path, labels_path, _, labels_json = _released_style(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        read_embedding_file(tmp_path / "nope.hdf5", labels_path)
    bad = dict(labels_json, seen_gt_dict=labels_json["seen_gt_dict"][:-1])
    (tmp_path / "short.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"seen/averaged_feature has 6 rows but short.json 'seen_gt_dict' has 5"):
        read_embedding_file(h5_path, tmp_path / "short.json")
    (tmp_path / "nokey.json").write_text(json.dumps({"seen_gt_dict": [], "unseen_gt_dict": []}))
    with pytest.raises(DataError, match="no 'key_gt_dict'"):
        read_embedding_file(h5_path, tmp_path / "nokey.json")
    (tmp_path / "not.json").write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        read_embedding_file(h5_path, tmp_path / "not.json")
    with h5py.File(tmp_path / "nokey.hdf5", "w") as f:
        f.create_group("seen")
    with pytest.raises(DataError, match=r"no group 'key' \(groups: seen\)"):
        read_embedding_file(tmp_path / "nokey.hdf5", labels_path)
    (tmp_path / "text.hdf5").write_text("not hdf5")
    with pytest.raises(DataError, match="not a readable HDF5"):
        read_embedding_file(tmp_path / "text.hdf5", labels_path)


def test_missing_dataset_error_lists_what_exists(tmp_path):
    feats, labels, ids = _dataset()
    for g in feats:
        del feats[g]["text"]  # an image+DNA model: no text, so no `all` keys either
    with read_embedding_file(*write_embedding_file(tmp_path, "val", feats, labels, ids)) as ef:
        assert "all_key_features" not in ef.features["key"]
        with pytest.raises(DataError, match="no dataset 'encoded_language_feature' \\(it has: averaged_feature"):
            ef.dataset("seen", "text")

"""A user's own specimens: input gathering, the specimen/library file, other export formats, per-split files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from bioclip_cli.config import load_config
from bioclip_cli.data.datasets import EvalDataset
from bioclip_cli.data.per_split_export import per_split_path, write_per_split_file
from bioclip_cli.data.sample import sample_root
from bioclip_cli.data.specimen_file import (
    SpecimenVectors,
    merge_specimen_files,
    read_specimen_file,
    with_average,
    write_npz,
    write_parquet,
    write_specimen_file,
)
from bioclip_cli.data.specimen_inputs import Specimen, collect_specimens, expand_image_paths
from bioclip_cli.errors import BioclipError, DataError
from bioclip_cli.models.encode import build_embedding_model, encode_group, encode_specimens
from bioclip_cli.models.fingerprint import model_fingerprint

VAL_IMAGES = sample_root() / "bioscan5m" / "images" / "cropped_256" / "val"


def test_image_paths_from_files_folders_and_globs(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/2.jpg", "a/b/1.JPG", "a/notes.txt", "c.png"):
        (tmp_path / name).write_bytes(b"x")
    got = expand_image_paths([tmp_path / "c.png", tmp_path / "a", str(tmp_path / "a" / "**" / "*.JPG")])
    assert got == [
        tmp_path / "c.png",
        tmp_path / "a" / "2.jpg",
        tmp_path / "a" / "b" / "1.JPG",
        tmp_path / "a" / "b" / "1.JPG",
    ]
    with pytest.raises(DataError, match="does not exist"):
        expand_image_paths([tmp_path / "none.jpg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no image files"):
        expand_image_paths([tmp_path / "empty"])
    with pytest.raises(DataError, match="no image file matches"):
        expand_image_paths([str(tmp_path / "*.tif")])


def test_collect_specimens_pairs_images_and_barcodes_in_order(tmp_path):
    fasta = tmp_path / "b.fasta"
    fasta.write_text(">s1\nACGTACGTAA\n>s2\nTTTTTGGGGG\n")
    images = sorted(VAL_IMAGES.glob("*.jpg"))[:2]
    specimens, problems = collect_specimens(images=images, fasta=fasta)
    assert [(s.id, s.image, s.barcode, s.feature) for s in specimens] == [
        ("s1", images[0], "ACGTACGTAA", "avg"),
        ("s2", images[1], "TTTTTGGGGG", "avg"),
    ] and problems == []
    with pytest.raises(BioclipError, match="counts must match"):
        collect_specimens(images=images[:1], fasta=fasta)
    with pytest.raises(BioclipError, match="nothing to embed"):
        collect_specimens()


def _vectors(fingerprint="f" * 64, ids=("a", "b", "c")) -> SpecimenVectors:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(len(ids), 4)).astype(np.float32)
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    dna = rng.normal(size=(len(ids), 4)).astype(np.float32)
    dna /= np.linalg.norm(dna, axis=1, keepdims=True)
    rows = np.array([True, False, True][: len(ids)])
    return SpecimenVectors(
        list(ids),
        {"order": ["Diptera"] * len(ids), "species": ["x", "y", "z"][: len(ids)]},
        {"image": (np.ones(len(ids), bool), image), "dna": (rows, np.where(rows[:, None], dna, 0))},
        fingerprint,
        "c" * 64,
        ["inputs"],
    )


def test_specimen_file_round_trip_and_average(tmp_path):
    vec = with_average(_vectors())
    assert vec.features["avg"][0].tolist() == [True, False, True]
    np.testing.assert_array_equal(
        vec.features["avg"][1][2], (vec.features["image"][1][2] + vec.features["dna"][1][2]) / 2
    )
    path = write_specimen_file(tmp_path / "emb.h5", vec)
    back = read_specimen_file(path)
    assert back.ids == ["a", "b", "c"] and back.model_fingerprint == "f" * 64 and back.checkpoint_sha256 == "c" * 64
    assert back.taxonomy["species"] == ["x", "y", "z"] and back.taxonomy["genus"] == ["not_classified"] * 3
    for name in ("image", "dna", "avg"):
        np.testing.assert_array_equal(back.features[name][0], vec.features[name][0])
        np.testing.assert_array_equal(back.features[name][1], vec.features[name][1])
    rows, dna = back.vectors("dna")
    assert rows.tolist() == [0, 2] and dna.shape == (2, 4)
    (tmp_path / "other.h5").write_bytes(b"")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = [1]
    with pytest.raises(DataError, match="not a bioscan-clip specimen"):
        read_specimen_file(tmp_path / "other.h5")


def test_merge_refuses_other_models_and_duplicate_ids():
    a, b = _vectors(ids=("a", "b")), _vectors(ids=("c", "d"))
    merged = merge_specimen_files([a, b], ["A", "B"])
    assert merged.ids == ["a", "b", "c", "d"] and merged.features["image"][1].shape == (4, 4)
    b.features.pop("image")  # a part without photos: its rows have no image
    merged = merge_specimen_files([a, b], ["A", "B"])
    assert merged.features["image"][0].tolist() == [True, True, False, False]
    with pytest.raises(DataError, match="another model"):
        merge_specimen_files([a, _vectors("0" * 64, ids=("c", "d"))], ["A", "B"])
    with pytest.raises(DataError, match="more than one input"):
        merge_specimen_files([a, _vectors(ids=("b", "e"))], ["A", "B"])


def test_npz_and_parquet_exports(tmp_path):
    vec = _vectors()
    data = np.load(write_npz(tmp_path / "e.npz", vec))
    assert data["ids"].tolist() == ["a", "b", "c"] and data["dna_rows"].tolist() == [True, False, True]
    np.testing.assert_array_equal(data["image"], vec.features["image"][1])
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(write_parquet(tmp_path / "e.parquet", vec)).to_pydict()
    assert table["id"] == ["a", "b", "c"] and table["order"] == ["Diptera"] * 3
    assert table["dna"][1] is None
    np.testing.assert_allclose(table["dna"][2], vec.features["dna"][1][2], rtol=0, atol=0)


def test_per_split_file_layout(tmp_path):
    feats = {m: np.arange(6, dtype=np.float32).reshape(2, 3) + i for i, m in enumerate(("image", "dna", "text"))}
    labels = {"order": ["Diptera", "Hymenoptera"], "family": ["a", "b"], "genus": ["g", "h"], "species": ["s", "t"]}
    path = write_per_split_file(per_split_path(tmp_path, "val_seen"), feats, labels, ["P1", "P2"])
    assert path.name == "extracted_features_of_val_seen.hdf5"
    with h5py.File(path) as f:
        assert f["encoded_dna_feature"].dtype == np.float64 and f["encoded_dna_feature"][1, 2] == 6.0
        assert f["order_list"][()].tolist() == [b"Diptera", b"Hymenoptera"] and f["processid"][()].tolist() == [
            b"P1",
            b"P2",
        ]


def test_encode_specimens_matches_the_dataset_path(sample_h5, tmp_path):
    """A photograph given as a file embeds exactly as its row of the dataset HDF5 (same JPEG bytes); a broken
    photograph fails alone."""
    cfg = load_config("tiny", [], [f"data.hdf5={sample_h5}"])
    torch.manual_seed(0)
    model = build_embedding_model(cfg, None)
    ds = EvalDataset(cfg.data.hdf5, "val_seen", cfg.data, modalities=cfg.model.modalities,
                     tokenizer=cfg.model.text.tokenizer)  # fmt: skip
    ids = [str(s) for s in ds.sample_ids[:3]]
    expected = encode_group(model, ds, device=torch.device("cpu"), batch_size=8)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xffnot really")
    specimens = [Specimen(i, image=VAL_IMAGES / f"{i}.jpg") for i in ids] + [Specimen("bad", image=broken)]
    feats, failed = encode_specimens(model, specimens, image_cfg=cfg.data.image, dna_cfg=cfg.data.dna,
                                     device=torch.device("cpu"), batch_size=2)  # fmt: skip
    assert list(failed) == [3] and ("damaged" in failed[3] or "not an image" in failed[3])
    for i in range(3):
        np.testing.assert_allclose(feats["image"][i], expected["image"][i], rtol=0, atol=1e-5)
    fp = model_fingerprint(cfg, None)
    assert fp == model_fingerprint(cfg, None) and fp != model_fingerprint(
        load_config("tiny", [], ["train.seed=5"]), None
    )


def test_reference_index_picks_flat_or_ivf_and_checks_recall(monkeypatch):
    from bioclip_cli.retrieval import reference_library
    from bioclip_cli.retrieval.reference_library import ReferenceIndex
    from bioclip_cli.retrieval.search import FlatIndex

    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(3000, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rows = np.ones(3000, bool)
    rows[::10] = False  # a tenth of the specimens have no image: library rows are mapped back
    ref = SpecimenVectors([f"s{i}" for i in range(3000)], {}, {"image": (rows, vecs)}, "f")
    queries = vecs[rows][:50] + 0.01 * rng.normal(size=(50, 16)).astype(np.float32)
    exact = ReferenceIndex(ref, "image")
    assert exact.kind == "flat"
    _, got = exact.search(queries, 5)
    _, want = FlatIndex(vecs[rows]).search(queries, 5)
    np.testing.assert_array_equal(got, np.flatnonzero(rows)[want])
    monkeypatch.setattr(reference_library, "AUTO_IVF_KEYS", 1000)
    approx = ReferenceIndex(ref, "image")
    assert approx.kind == "ivf"
    _, found = approx.search(queries, 5)
    assert approx.notes and "recall@5" in approx.notes[0]
    assert (found[:, 0] == got[:, 0]).mean() > 0.9


def test_embed_per_split_writes_every_group(sample_h5, tmp_path):
    from conftest import run_cli

    out = tmp_path / "per_split"
    proc = run_cli("embed", "--preset", "tiny", "--set", f"data.hdf5={sample_h5}", "--per-split", "--out", str(out),
                   cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with h5py.File(sample_h5) as src:
        groups = list(src)
        assert sorted(p.name for p in out.glob("extracted_features_of_*.hdf5")) == sorted(
            f"extracted_features_of_{g}.hdf5" for g in groups
        )
        for g in ("val_seen", "all_keys"):
            with h5py.File(out / f"extracted_features_of_{g}.hdf5") as f:
                n = len(src[g]["processid"])
                assert f["encoded_image_feature"].dtype == np.float64 and f["encoded_image_feature"].shape[0] == n
                assert f["encoded_dna_feature"].shape[0] == n and f["encoded_language_feature"].shape[0] == n
                assert f["processid"][()].tolist() == src[g]["processid"][()].tolist()
                assert f["species_list"][()].tolist() == [s if s else b"not_classified" for s in src[g]["species"][()]]

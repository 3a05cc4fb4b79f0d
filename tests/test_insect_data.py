"""The INSECT dataset: packaged taxonomy, the raw .mat reader, `build-hdf5 insect` from both releases,
`download insect` (registry, dry run, hub sha256 through --mirror) and the presets."""

from __future__ import annotations

import hashlib
import json

import h5py
import insect_release as ir
import numpy as np
import pytest
from conftest import run_cli
from download_server import FileServer

from bioclip_cli.data.insect_raw import mat_strings, read_raw_insect
from bioclip_cli.data.insect_table import SPLITS, read_insect_metadata
from bioclip_cli.data.insect_taxonomy import TAXONOMY_SHA256, insect_taxonomy, taxonomy_bytes, taxonomy_columns
from bioclip_cli.data.taxonomy import load_text_tokenizer, taxonomy_strings, tokenize_taxonomy
from bioclip_cli.errors import DataError
from bioclip_cli.workflows.build_hdf5 import build_hdf5, insect_metadata_path

QUICK = {"BIOCLIP_DOWNLOAD_RETRIES": "2", "BIOCLIP_DOWNLOAD_BACKOFF": "0.01", "COLUMNS": "500"}
GROUP_SPLITS = {"train": ["train"], "val": ["val"], "trainval": ["trainval"], "test_seen": ["test_seen"],
                "test_unseen": ["test_unseen"], "all_keys": ["train", "val", "test_seen", "test_unseen"]}  # fmt: skip
BAD = {ir.MISSING_ROW, ir.CORRUPT_ROW}


# ----------------------------------------------------------------------------------------------- taxonomy


def test_packaged_taxonomy_is_the_published_table():
    assert hashlib.sha256(taxonomy_bytes()).hexdigest() == TAXONOMY_SHA256
    table = insect_taxonomy()
    assert len(table) == 1213
    orders = [t["order"] for t in table.values()]
    assert (orders.count("Coleoptera"), orders.count("Hymenoptera"), orders.count("Diptera")) == (552, 383, 240)
    unclassified = [s for s, t in table.items() if set(t.values()) == {"not_classified"}]
    assert len(unclassified) == 35
    assert table["Sericoides lineolata"] == {
        "order": "Lineolatales",
        "family": "Lineolataceae",
        "genus": "not_classified",
    }  # fmt: skip  (no genus in the file)
    columns, known = taxonomy_columns(["Poecilus cupreus", "Madeupus fictus"])
    assert known.tolist() == [True, False]
    assert [columns[r][0] for r in ("order", "family", "genus", "species")] == [
        "Coleoptera", "Carabidae", "Poecilus", "Poecilus cupreus"]  # fmt: skip
    assert [columns[r][1] for r in ("order", "family", "genus")] == ["not_classified"] * 3


def test_packaged_taxonomy_equals_the_shared_copy(realdata):
    original = (realdata / "insect_taxonomy" / "specie_to_other_labels.json").read_bytes()
    assert hashlib.sha256(original).hexdigest() == TAXONOMY_SHA256
    assert taxonomy_bytes() == original
    licence = (realdata / "insect_taxonomy" / "LICENSE").read_text()
    from importlib import resources

    shipped = resources.files("bioclip_cli.data").joinpath("insect_taxonomy.LICENSE").read_text()
    assert licence.strip() in shipped


# ------------------------------------------------------------------------------------------------- .mat


def test_mat_strings_accepts_cells_char_matrices_and_nesting(tmp_path):
    from scipy.io import loadmat, savemat

    cells = np.empty((3, 1), dtype=object)
    cells[:, 0] = ["a b", "", "c"]
    nested = np.empty((1, 2), dtype=object)
    nested[0, 0] = np.array([np.array(["x"])], dtype=object)
    nested[0, 1] = np.array(["yz"])
    savemat(tmp_path / "s.mat", {"cells": cells, "chars": np.array(["abc", "d", "ef"]), "nested": nested})
    m = loadmat(tmp_path / "s.mat")
    assert mat_strings(m["cells"]) == ["a b", "", "c"]
    assert mat_strings(m["chars"]) == ["abc", "d", "ef"]  # MATLAB's space padding removed
    assert mat_strings(m["nested"]) == ["x", "yz"]
    assert mat_strings(np.array([list("ab "), list("cde")])) == ["ab", "cde"]  # one character per cell
    with pytest.raises(ValueError):
        mat_strings(np.zeros(3))


def test_raw_reader_makes_labels_and_splits_zero_based(tmp_path):
    t = ir.write_raw(tmp_path)
    table = read_raw_insect(tmp_path)
    assert table.labels.tolist() == t["labels"].tolist()
    assert table.ids == t["ids"] and table.species == t["species"] and table.nucleotides == t["nucleotides"]
    for split in SPLITS:
        assert getattr(table, split).tolist() == t[split].tolist(), split
    assert table.n_classes == len(ir.SPECIES)


def test_raw_reader_refuses_indices_outside_the_rows(tmp_path):
    from scipy.io import savemat

    ir.write_raw(tmp_path)
    locs = {f"{s}_loc": np.array([[1.0]]) for s in SPLITS}
    locs["val_loc"] = np.array([[ir.N_ROWS + 1.0]])
    savemat(tmp_path / "att_splits.mat", locs)
    with pytest.raises(DataError, match=f"val_loc holds row {ir.N_ROWS + 1}, outside 1..{ir.N_ROWS}"):
        read_raw_insect(tmp_path)


# ------------------------------------------------------------------------------------------------ build


@pytest.fixture(scope="module")
def raw_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("insect_raw")
    t = ir.write_raw(root / "release")
    out = root / "INSECT.hdf5"
    report = build_hdf5("insect", root / "release", out, text_tokenizer="bioclip-sample")
    return t, out, report


def _group(path, name) -> dict:
    with h5py.File(path, "r") as f:
        return {k: v[()] for k, v in f[name].items()}


def test_build_from_the_raw_release(raw_build):
    t, out, report = raw_build
    kept = [i for i in range(ir.N_ROWS) if i not in BAD]
    expected_rows = {g: [i for i in kept if any(t[s][i] for s in splits)] for g, splits in GROUP_SPLITS.items()}
    assert report.groups == {g: len(rows) for g, rows in expected_rows.items()}
    assert report.groups == {"train": 14, "val": 6, "trainval": 20, "test_seen": 8, "test_unseen": 6, "all_keys": 34}
    assert report.rows_written == 34 and report.metadata_rows == ir.N_ROWS
    tokenizer = load_text_tokenizer("bioclip-sample")
    for group, rows in expected_rows.items():
        g = _group(out, group)
        assert g["insect_row"].tolist() == rows
        assert g["insect_label"].tolist() == t["labels"][rows].tolist()
        assert [s.decode() for s in g["processid"]] == [t["ids"][i] for i in rows]
        assert [s.decode() for s in g["barcode"]] == [t["nucleotides"][i] for i in rows]
        for k, i in enumerate(rows):  # the JPEG bytes, unchanged
            assert g["image"][k, : g["image_mask"][k]].tobytes() == t["images"][i]
        flags = g["insect_splits"].astype(bool)
        assert flags.tolist() == [[bool(t[s][i]) for s in SPLITS] for i in rows]
        text = taxonomy_strings(*(np.char.decode(g[lv].astype("S"), "utf-8") for lv in ("order", "family", "genus",
                                                                                          "species")))  # fmt: skip
        tokens = tokenize_taxonomy(tokenizer, text, 20)
        assert g["language_tokens_input_ids"].shape == (len(rows), 20)
        np.testing.assert_array_equal(g["language_tokens_input_ids"], tokens["input_ids"])
    keys = _group(out, "all_keys")
    i = int(np.flatnonzero(keys["insect_label"] == 1)[0])
    assert [keys[lv][i].decode() for lv in ("order", "family", "genus", "species")] == [
        "Coleoptera", "Carabidae", "Poecilus", "Poecilus cupreus"]  # fmt: skip
    j = int(np.flatnonzero(keys["insect_label"] == 5)[0])
    assert [keys[lv][j].decode() for lv in ("order", "family", "genus", "species")] == [
        "not_classified", "not_classified", "not_classified", "Madeupus fictus"]  # fmt: skip
    with h5py.File(out, "r") as f:
        assert f.attrs["insect_classes"] == 6 and f.attrs["dataset"] == "insect"


def test_build_reports_every_bad_input(raw_build):
    t, out, report = raw_build
    problems = json.loads(report.report_path.read_text())["problems"]
    assert problems["missing_image"]["ids"] == [t["ids"][ir.MISSING_ROW]]
    assert problems["bad_image"]["ids"] == [t["ids"][ir.CORRUPT_ROW]]
    assert problems["bad_image"]["action"] == problems["missing_image"]["action"] == "skipped"
    assert problems["empty_barcode"] == {"count": 1, "action": "kept", "ids": [t["ids"][ir.EMPTY_BARCODE_ROW]],
                                         "ids_truncated": False}  # fmt: skip
    unknown = [t["ids"][i] for i in range(ir.N_ROWS) if t["labels"][i] == 5]
    assert problems["unknown_species"]["ids"] == unknown
    # class 5's species is unknown, class 4's ("Dicranomyia (Dicranomyia) longipennis") unclassified in the table
    assert insect_taxonomy()[ir.SPECIES[4]] == {"order": "not_classified", "family": "not_classified",
                                                "genus": "not_classified"}  # fmt: skip
    assert report.missing_ranks == {"order": 12, "family": 12, "genus": 12}
    assert not out.with_name(out.name + ".partial").exists()


def test_build_writes_the_metadata_of_the_stored_rows(raw_build):
    t, out, _ = raw_build
    table = read_insect_metadata(insect_metadata_path(out))
    kept = [i for i in range(ir.N_ROWS) if i not in BAD]
    assert table.ids == [t["ids"][i] for i in kept]
    assert table.labels.tolist() == t["labels"][kept].tolist()
    assert table.test_unseen.tolist() == t["test_unseen"][kept].tolist()


def test_processed_pair_gives_the_same_file(raw_build, tmp_path):
    _, raw_out, _ = raw_build
    ir.write_processed(tmp_path / "data" / "INSECT")
    out = tmp_path / "from_processed.hdf5"
    report = build_hdf5("insect", tmp_path, out, text_tokenizer="bioclip-sample")  # found under ROOT/data/INSECT
    assert report.options["source"] == "processed"
    problems = json.loads(report.report_path.read_text())["problems"]
    assert problems["missing_image"]["ids"] == ["IMG0007"] and problems["bad_image"]["ids"] == ["IMG0013"]
    for group in GROUP_SPLITS:
        a, b = _group(raw_out, group), _group(out, group)
        assert sorted(a) == sorted(b)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{group}/{name}")
    assert insect_metadata_path(out).read_text() == insect_metadata_path(raw_out).read_text()


@pytest.mark.slow
def test_build_cli_table_and_errors(tmp_path):
    ir.write_raw(tmp_path / "r")
    out = tmp_path / "o.hdf5"
    proc = run_cli("build-hdf5", "insect", "--root", str(tmp_path / "r"), "--out", str(out), env={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert "all_keys" in proc.stdout and "unknown_species" in proc.stdout and "missing_image" in proc.stdout
    fail = run_cli("build-hdf5", "insect", "--root", str(tmp_path / "r"), "--out", str(tmp_path / "f.hdf5"),
                   "--on-bad-image", "fail")  # fmt: skip
    assert fail.returncode != 0 and "Traceback" not in fail.stderr
    assert "Error: bad input for IMG0007: missing image" in fail.stderr
    assert not (tmp_path / "f.hdf5").exists() and not (tmp_path / "f.hdf5.partial").exists()
    empty = run_cli("build-hdf5", "insect", "--root", str(tmp_path), "--out", str(tmp_path / "e.hdf5"))
    assert "Error: no INSECT release under" in empty.stderr
    assert f"Hint: bioclip download insect --root {tmp_path}" in empty.stderr
    splits = run_cli("build-hdf5", "insect", "--root", str(tmp_path / "r"), "--out", str(tmp_path / "s.hdf5"),
                     "--splits", "train")  # fmt: skip
    assert "Error: --splits do(es) not apply to `build-hdf5 insect`" in splits.stderr


# --------------------------------------------------------------------------------------------- download

HUB = "/datasets/bioscan-ml/clibd/resolve/main/data/INSECT/"


def test_download_insect_dry_run_and_raw_release_without_url(tmp_path):
    dry = run_cli("download", "insect", "--dry-run", "--root", str(tmp_path), env=QUICK)
    assert dry.returncode == 0, dry.stderr
    assert "https://huggingface.co" + HUB + "INSECT_images.hdf5" in dry.stdout
    assert "hub sha256" in dry.stdout and "~2.7 GB" in dry.stdout
    raw = run_cli("download", "insect", "--what", "raw", "--dry-run", "--root", str(tmp_path), env=QUICK)
    assert raw.stdout.count("no published URL") == 6  # source and status of the 3 entries
    assert "no direct HTTPS URL" in raw.stderr
    fail = run_cli("download", "insect", "--what", "raw", "--root", str(tmp_path), env=QUICK)
    assert fail.returncode != 0 and "Hint: the raw INSECT release" in fail.stderr
    assert not (tmp_path / "data").exists()


def test_download_insect_through_a_mirror_verifies_the_hub_sha256(tmp_path):
    files = {"INSECT_images.hdf5": b"\x89HDF fake " * 500, "INSECT_metadata.csv": b"bold_ids,ids\n" * 50}
    with FileServer() as server:
        for name, data in files.items():
            etag = hashlib.sha256(data).hexdigest()
            server.add(HUB + name, data, headers={"X-Linked-Etag": f'"{etag}"', "X-Repo-Commit": "0" * 40})
        args = ("download", "insect", "--root", str(tmp_path), "--mirror", server.base)
        proc = run_cli(*args, env={**QUICK, "HF_HUB_OFFLINE": "0"})
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("sha256 verified") == 2
        for name, data in files.items():
            assert (tmp_path / "data/INSECT" / name).read_bytes() == data
        assert (
            f"bioclip build-hdf5 insect --root {tmp_path} --out {tmp_path / 'data/INSECT/INSECT.hdf5'}" in proc.stderr
        )
        again = run_cli(*args, env={**QUICK, "HF_HUB_OFFLINE": "0"})
        assert again.stdout.count("skipped: present, sha256 verified against the hub") == 2


# ---------------------------------------------------------------------------------------------- presets


def test_insect_presets():
    from bioclip_cli.config import load_config
    from bioclip_cli.workflows.download import plan_downloads

    v1 = load_config("idt-insect")
    assert (v1.data.train_group, v1.data.key_group, v1.data.val_groups) == ("train", "all_keys",
                                                                            ["test_seen", "test_unseen"])  # fmt: skip
    assert (v1.train.batch_size, v1.train.epochs, v1.train.eval_every) == (400, 160, 50)
    assert (v1.train.optimizer, v1.train.lr, v1.train.scheduler, v1.model.image.finetune) == (
        "adamw", 1e-3, "constant", "lora")  # fmt: skip
    assert v1.model.checkpoint == "ckpt/bioscan_clip/trained_with_bioscan_1m/image_dna_text.pth"
    v2 = load_config("idt-insect-clibd")
    assert (v2.train.batch_size, v2.train.epochs, v2.train.lr, v2.train.scheduler) == (100, 80, 3e-6, "onecycle")
    assert v2.train.lr_reference_batch is None and v2.model.dna.finetune == "full"
    assert v2.model.checkpoint == "ckpt/bioscan_clip/ver_1_0/bioscan_1m/image_dna_text_4gpu/best.pth"
    assert [p.name for p in plan_downloads("checkpoints", preset="idt-insect")] == [
        "barcodebert-5mer", "bioscan-clip-1m-image-dna-text"]  # fmt: skip
    assert [p.name for p in plan_downloads("checkpoints", preset="idt-insect-clibd")] == [
        "barcodebert-5mer", "clibd-1m-image-dna-text"]  # fmt: skip


def test_train_names_the_missing_start_checkpoint_and_its_download(raw_build, tmp_path):
    _, out, _ = raw_build
    proc = run_cli("train", "--preset", "idt-insect", "--set", f"data.hdf5={out}", "--out", str(tmp_path / "run"),
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert ("Error: the starting checkpoint ckpt/bioscan_clip/trained_with_bioscan_1m/image_dna_text.pth "
            "(model.checkpoint) does not exist") in proc.stderr  # fmt: skip
    assert "bioclip download checkpoints --preset idt-insect" in proc.stderr
    missing = run_cli("train", "--preset", "idt-insect", "--init", "none", "--out", str(tmp_path / "r2"), cwd=tmp_path)
    assert "Error: dataset file data/INSECT/INSECT.hdf5 does not exist" in missing.stderr
    assert "Hint: bioclip download insect --root data/ && bioclip build-hdf5 insect" in missing.stderr


def test_bzsl_export_refuses_a_file_that_is_not_an_insect_build(sample_h5):
    from bioclip_cli.data.insect_embeddings import read_insect_group

    with pytest.raises(DataError, match="is not an INSECT build: group 'all_keys' has no insect_label") as info:
        read_insect_group(sample_h5, "all_keys")
    assert "bioclip build-hdf5 insect" in info.value.hint


def test_bzsl_export_names_a_class_left_without_rows(tmp_path):
    from bioclip_cli.data.insect_embeddings import class_means

    with pytest.raises(DataError, match=r"1 INSECT class\(es\) have no stored row \(e.g. class 1\)"):
        class_means(np.ones((3, 2)), np.array([0, 2, 2]), 3, tmp_path)
    np.testing.assert_array_equal(class_means(np.array([[1.0, 0], [3, 2], [5, 5]]), np.array([1, 1, 0]), 2, ""),
                                  [[5, 5], [2, 1]])  # fmt: skip

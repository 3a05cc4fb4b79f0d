"""Your own specimens: manifests, `build-hdf5 custom`, the BIOSCAN-1M partition rules and `bioclip split 1m`."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import run_cli

from bioclip_cli.data.build_raw import GROUPS_5M
from bioclip_cli.data.manifest import read_manifest
from bioclip_cli.data.partition_1m import BASE_GROUPS, partition_1m
from bioclip_cli.data.sample import sample_metadata_csv, sample_root
from bioclip_cli.errors import BioclipError
from bioclip_cli.workflows.build_custom import build_custom

HEADER = ["id", "image", "barcode", "order", "family", "genus", "species", "split"]


def _sample_rows() -> list[dict]:
    with open(sample_metadata_csv(), newline="") as fh:
        return list(csv.DictReader(fh))


def _image_rel(row: dict) -> str:
    chunk = f"{row['chunk']}/" if row["chunk"] else ""
    return f"images/cropped_256/{row['split']}/{chunk}{row['processid']}.jpg"


def write_sample_manifest(folder: Path, with_split: bool = True, extra_rows: list[list[str]] = ()) -> Path:
    """A manifest of the bundled sample's specimens (its real barcodes and taxonomy), images copied beside it."""
    shutil.copytree(sample_root() / "bioscan5m" / "images", folder / "images")
    header = HEADER if with_split else HEADER[:-1]
    path = folder / "specimens.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*header, "country"])
        for row in _sample_rows():
            cells = [row["processid"], _image_rel(row), row["dna_barcode"], row["order"], row["family"],
                     row["genus"], row["species"]]  # fmt: skip
            if with_split:
                cells.append(row["split"])
            w.writerow([*cells, "Canada"])
        for cells in extra_rows:
            w.writerow(cells)
    return path


# ------------------------------------------------------------------------------------------- partition


def _synthetic_species(rng) -> list[str]:
    names = []
    for s in range(60):  # 60 common species with 10-30 records
        names += [f"Genus{s % 7} common{s}"] * int(rng.integers(10, 31))
    for s in range(14):  # 14 tail species with 2-9 records
        names += [f"Genus{s % 5} tail{s}"] * int(rng.integers(2, 10))
    names += [f"Genus1 single{s}" for s in range(9)]  # 9 single-record species
    names += [""] * 25 + ["not_classified"] * 5  # 30 records without a species
    order = rng.permutation(len(names))
    return [names[i] for i in order]


def test_partition_1m_follows_the_rules_and_is_reproducible():
    species = _synthetic_species(np.random.default_rng(3))
    groups = partition_1m(species, seed=7)
    arr = np.array(species, dtype=object)
    counts = Counter(s for s in species if s and s != "not_classified")

    # every record in exactly one base group
    base = np.concatenate([groups[g] for g in BASE_GROUPS])
    assert sorted(base.tolist()) == list(range(len(species)))
    assert set(groups["no_split"].tolist()) == {i for i, s in enumerate(species) if s in ("", "not_classified")}
    assert {arr[i] for i in groups["single_species"]} == {s for s, n in counts.items() if n == 1}

    common = {s for s, n in counts.items() if n >= 10}
    seen = {arr[i] for i in groups["train_seen"]}
    assert len(seen) == int(len(common) * 0.8) == 48 and seen <= common
    for name in seen:  # floored 0.7 / 0.8 / 0.9 cuts of each seen species
        n = counts[name]
        got = [int((arr[groups[g]] == name).sum()) for g in ("train_seen", "val_seen", "test_seen", "seen_keys")]
        assert got == [int(n * 0.7), int(n * 0.8) - int(n * 0.7), int(n * 0.9) - int(n * 0.8), n - int(n * 0.9)]
    unseen_common = common - seen
    val_species = {arr[i] for i in groups["val_unseen_keys"]}
    test_species = {arr[i] for i in groups["test_unseen_keys"]}
    assert not val_species & test_species and not (val_species | test_species) & seen
    assert len(val_species & unseen_common) == len(unseen_common) // 2  # half the unseen common species to val
    tail = {s for s, n in counts.items() if 2 <= n < 10}
    assert len(val_species & tail) == len(tail) // 2 and (val_species | test_species) == unseen_common | tail
    for name in val_species:  # each unseen species' records halved (floored) into queries and keys
        assert int((arr[groups["val_unseen"]] == name).sum()) == counts[name] // 2
    # derived groups
    assert np.array_equal(groups["all_keys"], np.sort(np.concatenate(
        [groups["seen_keys"], groups["val_unseen_keys"], groups["test_unseen_keys"]])))  # fmt: skip
    assert np.array_equal(groups["no_split_and_seen_train"], np.sort(np.r_[groups["no_split"], groups["train_seen"]]))
    # reproducible by seed, different for another seed
    again = partition_1m(species, seed=7)
    assert all(np.array_equal(groups[g], again[g]) for g in groups)
    other = partition_1m(species, seed=8)
    assert not np.array_equal(groups["train_seen"], other["train_seen"])


def test_split_1m_command_writes_partition_files(tmp_path):
    species = _synthetic_species(np.random.default_rng(0))
    tsv = tmp_path / "BIOSCAN_Insect_Dataset_metadata.tsv"
    lines = ["sampleid\timage_file\tchunk_number\torder\tfamily\tgenus\tspecies"]
    lines += [f"S{i:05d}\tS{i:05d}.jpg\t1\tDiptera\tF\tG\t{s}" for i, s in enumerate(species)]
    tsv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "part"
    proc = run_cli("split", "1m", "--root", str(tmp_path), "--seed", "5", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    expected = partition_1m(species, 5)
    for group, rows in expected.items():
        listed = (out / f"{group}.txt").read_text().split()
        assert listed == [f"S{i:05d}" for i in rows.tolist()]
    summary = json.loads((out / "partition.json").read_text())
    assert summary["seed"] == 5 and summary["records"] == len(species)
    again = run_cli("split", "1m", "--root", str(tmp_path), "--seed", "5", "--out", str(out))
    assert again.returncode != 0 and "already holds partition files" in again.stderr


# -------------------------------------------------------------------------------------------- manifest


def test_manifest_reports_each_bad_row(tmp_path):
    (tmp_path / "sub").mkdir()
    outside = tmp_path.parent / f"{tmp_path.name}-outside.jpg"
    outside.write_bytes(b"\xff\xd8\xff\xd9")
    path = write_sample_manifest(
        tmp_path / "sub",
        extra_rows=[
            ["X1", "images/none.jpg", "ACGT", "", "", "", "", "train", ""],  # missing file
            ["X2", f"../../{outside.name}", "ACGT", "", "", "", "", "train", ""],  # escapes the folder
            ["X3", "", "ACGTXYZ", "", "", "", "", "train", ""],  # bad barcode characters
            ["X4", "", "ACGT", "", "", "", "", "holiday", ""],  # unknown split
            ["AGAKH078-17", "", "ACGT", "", "", "", "", "train", ""],  # duplicate id
            ["X5", "", "AC-GT..A", "Diptera", "", "", "", "val", ""],  # gaps: kept without them
        ],
    )
    manifest = read_manifest(path)
    kinds = {sid: kind for kind, sid, _ in manifest.problems}
    assert kinds == {"X1": "missing_image", "X2": "path_outside_folder", "X3": "barcode_chars",
                     "X4": "unknown_split", "AGAKH078-17": "duplicate_id"}  # fmt: skip
    x5 = manifest.by_id()["X5"]
    assert x5.barcode == "ACGTA" and x5.image is None and manifest.gap_rows == 1
    assert x5.taxonomy == {"order": "Diptera", "family": "not_classified", "genus": "not_classified",
                           "species": "not_classified"}  # fmt: skip
    assert manifest.extra_columns == ["country"] and x5.extra == {"country": ""}
    assert len(manifest.rows) == len(_sample_rows()) + 1


def test_build_custom_from_the_sample_manifest(tmp_path):
    path = write_sample_manifest(tmp_path, extra_rows=[["BAD1", "images/none.jpg", "ACGT", "", "", "", "", "val", "x"]])
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with open(path, "a", newline="") as fh:
        csv.writer(fh).writerow(["BAD2", "broken.jpg", "ACGT", "", "", "", "", "val", "x"])
    out = tmp_path / "custom.hdf5"
    proc = run_cli(
        "build-hdf5", "custom", "--manifest", str(path), "--out", str(out), "--text-tokenizer", "bioclip-sample"
    )
    assert proc.returncode == 0, proc.stderr
    rows = _sample_rows()
    report = json.loads(Path(str(out) + ".report.json").read_text())
    assert report["problems"]["missing_image"]["ids"] == ["BAD1"]
    assert report["problems"]["bad_image"]["ids"] == ["BAD2"]
    with h5py.File(out) as f:
        for group, splits in GROUPS_5M.items():
            expected = [r["processid"] for r in rows if r["split"] in splits]
            assert [x.decode() for x in f[group]["processid"][:]] == expected, group
            assert report["groups"][group] == len(expected)
        first = next(r for r in rows if r["split"] == "val")
        g = f["val_seen"]
        image = (tmp_path / _image_rel(first)).read_bytes()
        assert bytes(g["image"][0][: g["image_mask"][0]]) == image  # the JPEG bytes as they are
        assert g["barcode"][0].decode() == first["dna_barcode"]
        assert g["species"][0].decode() == (first["species"] or "not_classified")
        assert g["country"][0].decode() == "Canada"  # extra columns kept
        assert g["language_tokens_input_ids"].shape == (len(g["processid"]), 20)
    again = run_cli("build-hdf5", "custom", "--manifest", str(path), "--out", str(out))
    assert again.returncode != 0 and "already exists" in again.stderr


def test_build_custom_draws_a_1m_partition_and_leaves_nothing_on_failure(tmp_path):
    path = write_sample_manifest(tmp_path, with_split=False)
    out = tmp_path / "drawn.hdf5"
    with pytest.raises(BioclipError, match="no split column"):
        build_custom(path, out)
    with pytest.raises(BioclipError, match="needs --seed"):
        build_custom(path, out, split_rule="1m")
    assert not out.exists() and not list(tmp_path.glob(".drawn.hdf5.*"))
    report = build_custom(path, out, split_rule="1m", seed=3)
    species = [r["species"] for r in _sample_rows()]
    expected = partition_1m(species, 3)
    ids = [r["processid"] for r in _sample_rows()]
    with h5py.File(out) as f:
        for group, index in expected.items():
            assert [x.decode() for x in f[group]["processid"][:]] == [ids[i] for i in index.tolist()]
    assert report.groups["no_split"] == sum(1 for s in species if not s)
    with h5py.File(out) as f:
        assert int(f.attrs["seed"]) == 3 and f.attrs["split_rule"] == "1m"


# ------------------------------------------------------------------- embed your specimens, libraries


@pytest.mark.slow
def test_embed_a_manifest_and_build_libraries(demo_run, tmp_path):
    """The demo run embeds a manifest of the sample (ids and taxonomy round-trip); a library made of it and one
    made of the run's own exported keys carry the same model fingerprint and merge; vectors of another model
    are refused."""
    from bioclip_cli.data.specimen_file import read_specimen_file

    run = demo_run["out"]
    path = write_sample_manifest(tmp_path / "m")
    emb = tmp_path / "specimens.h5"
    proc = run_cli("embed", "--run", str(run), "--manifest", str(path), "--out", str(emb))
    assert proc.returncode == 0, proc.stderr
    vec = read_specimen_file(emb)
    rows = _sample_rows()
    assert vec.ids == [r["processid"] for r in rows]
    assert vec.taxonomy["species"] == [r["species"] or "not_classified" for r in rows]
    assert set(vec.features) == {"image", "dna", "avg"} and all(r.all() for r, _ in vec.features.values())
    norms = np.linalg.norm(vec.features["image"][1], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)

    keys_lib = tmp_path / "keys.h5"
    published = run / "embeddings" / "extracted_feature_from_val_split.hdf5"
    proc = run_cli("library", "build", "--from", str(published), "--out", str(keys_lib))
    assert proc.returncode == 0, proc.stderr
    keys = read_specimen_file(keys_lib)
    assert keys.model_fingerprint == vec.model_fingerprint != ""
    with h5py.File(published) as f:
        assert len(keys) == f["key"]["encoded_image_feature"].shape[0]

    # the manifest's own key rows embed like the run's exported keys (same model, same pixels)
    position = {sid: i for i, sid in enumerate(vec.ids)}
    shared = [i for i, sid in enumerate(keys.ids) if sid in position][:5]
    assert shared
    for i in shared:
        np.testing.assert_allclose(
            keys.features["image"][1][i], vec.features["image"][1][position[keys.ids[i]]], atol=2e-5
        )

    merged = tmp_path / "merged.h5"
    other = tmp_path / "fasta.h5"
    fasta = tmp_path / "b.fasta"
    fasta.write_text(">new1\n" + rows[0]["dna_barcode"] + "\n")
    assert run_cli("embed", "--run", str(run), "--fasta", str(fasta), "--out", str(other)).returncode == 0
    proc = run_cli("library", "build", "--from", str(emb), "--from", str(other), "--out", str(merged))
    assert proc.returncode == 0, proc.stderr
    lib = read_specimen_file(merged)  # photos + barcodes, then a barcode alone: it has no image row
    assert lib.ids == [*vec.ids, "new1"] and lib.features["image"][0].tolist() == [True] * len(vec) + [False]
    assert lib.features["dna"][0].all()
    untrained = tmp_path / "untrained.h5"
    proc = run_cli("embed", "--preset", "demo", "--fasta", str(fasta), "--out", str(untrained), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("library", "build", "--from", str(other), "--from", str(untrained), "--out", str(merged))
    assert proc.returncode != 0 and "another model" in proc.stderr
    proc = run_cli(
        "embed", "--run", str(run), "--fasta", str(fasta), "--out", str(tmp_path / "x.npz"), "--format", "npy"
    )
    assert proc.returncode == 0, proc.stderr
    npz = np.load(tmp_path / "x.npz")
    assert npz["ids"].tolist() == ["new1"] and npz["dna"].shape[0] == 1
    np.testing.assert_allclose(npz["dna"][0], lib.features["dna"][1][-1], atol=1e-6)


@pytest.mark.slow
def test_predict_against_your_own_library(demo_run, tmp_path):
    """A manifest of the sample's key specimens -> library with the demo run -> predict a folder of their photos
    with --keys: each photo's top-1 is itself (id and taxonomy come back); --log records the model; a library made
    by another model is refused."""
    from bioclip_cli.models.fingerprint import file_sha256

    run = demo_run["out"]
    rows = [r for r in _sample_rows() if r["split"] in ("train", "key_unseen")][:12]
    (tmp_path / "m").mkdir()
    path = write_sample_manifest(tmp_path / "m")
    lib_manifest = tmp_path / "m" / "keys.csv"
    with open(path) as fh, open(lib_manifest, "w", newline="") as out:
        reader, writer = csv.reader(fh), csv.writer(out)
        writer.writerow(next(reader))
        wanted = {r["processid"] for r in rows}
        writer.writerows(cells for cells in reader if cells[0] in wanted)
    lib = tmp_path / "lib.h5"
    proc = run_cli("library", "build", "--manifest", str(lib_manifest), "--run", str(run), "--out", str(lib))
    assert proc.returncode == 0, proc.stderr
    photos = tmp_path / "photos"
    photos.mkdir()
    for r in rows[:3]:
        shutil.copy(tmp_path / "m" / _image_rel(r), photos / f"{r['processid']}.jpg")
    log = tmp_path / "provenance.json"
    proc = run_cli("predict", str(photos), "--run", str(run), "--keys", str(lib), "--k", "3", "--format", "json",
                   "--log", str(log))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["n_keys"] == 12 and len(result["predictions"]) == 3
    for p, r in zip(result["predictions"], sorted(rows[:3], key=lambda r: r["processid"])):
        top = p["neighbors"][0]
        assert p["id"].endswith(f"{r['processid']}.jpg") and top["sample_id"] == r["processid"]
        assert top["similarity"] == pytest.approx(1.0, abs=1e-5)
        assert top["species"] == (r["species"] or "not_classified")
    record = json.loads(log.read_text())
    assert record["checkpoint_sha256"] == file_sha256(run / "checkpoints" / "best" / "model.safetensors")
    assert record["model_fingerprint"] == record["references_model_fingerprint"] and record["n_references"] == 12
    assert "--keys" in record["arguments"] and len(record["inputs"]) == 3

    other = tmp_path / "other.h5"
    proc = run_cli("library", "build", "--manifest", str(lib_manifest), "--preset", "demo", "--out", str(other),
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("predict", str(photos), "--run", str(run), "--keys", str(other))
    assert proc.returncode != 0 and "another model" in proc.stderr and "Traceback" not in proc.stderr

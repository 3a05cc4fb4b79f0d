"""`build-hdf5`: raw release -> HDF5 -> reader, bad inputs in the report, --splits, safe output, 1M, CLI."""

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

from bioclip_cli.data.build_raw import GROUPS_5M, METADATA_5M
from bioclip_cli.data.hdf5 import BioscanH5
from bioclip_cli.data.sample import sample_metadata_csv, sample_root
from bioclip_cli.data.taxonomy import LEVELS, load_text_tokenizer, taxonomy_strings, tokenize_taxonomy
from bioclip_cli.errors import DataError
from bioclip_cli.workflows.build_hdf5 import build_1m, build_5m


def sample_rows() -> list[dict]:
    with open(sample_metadata_csv(), newline="") as fh:
        return list(csv.DictReader(fh))


def image_path(root: Path, row: dict) -> Path:
    folder = root / "bioscan5m" / "images" / "cropped_256" / row["split"]
    return (folder / row["chunk"] if row["chunk"] else folder) / f"{row['processid']}.jpg"


def write_raw(root: Path, rows: list[dict], copy_images: bool = True) -> Path:
    meta = root / METADATA_5M
    meta.parent.mkdir(parents=True, exist_ok=True)
    with open(meta, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    if copy_images:
        for row in rows:
            src = image_path(sample_root(), row)
            if src.exists():
                dst = image_path(root, row)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
    return root


def test_round_trip_of_the_bundled_sample(sample_h5):
    rows = sample_rows()
    h5 = BioscanH5(sample_h5)
    split_counts = Counter(r["split"] for r in rows)
    assert h5.group_names() == sorted(GROUPS_5M)
    by_id = {r["processid"]: r for r in rows}
    tokenizer = load_text_tokenizer("bioclip-sample")
    for group_name, splits in GROUPS_5M.items():
        g = h5.group(group_name)
        assert len(g) == sum(split_counts[s] for s in splits), group_name
        ids = g.sample_ids().tolist()
        assert all(by_id[i]["split"] in splits for i in ids)
        for i, pid in enumerate(ids):  # bytes identical to the source files
            assert g.image_bytes(i) == image_path(sample_root(), by_id[pid]).read_bytes()
        assert g.barcodes().tolist() == [by_id[p]["dna_barcode"] for p in ids]
        assert g.strings("sampleid").tolist() == [by_id[p]["sampleid"] for p in ids]
        assert g.strings("image_file").tolist() == [f"{p}.jpg" for p in ids]
        tax = g.taxonomy()
        for level in LEVELS:
            assert tax[level].tolist() == [by_id[p][level] or "not_classified" for p in ids]
        expected = tokenize_taxonomy(tokenizer, taxonomy_strings(*(tax[level] for level in LEVELS)), 20)
        stored = g.language_tokens()
        assert all(np.array_equal(stored[k], expected[k]) for k in expected)
    report = json.loads(Path(f"{sample_h5}.report.json").read_text())
    assert report["rows_written"] == len(rows) and report["metadata_rows"] == len(rows)
    assert set(report["problems"]) == {"missing_taxonomy"}  # the pretrain rows have no species
    assert report["problems"]["missing_taxonomy"]["count"] == split_counts["pretrain"]
    assert report["missing_ranks"]["species"] == split_counts["pretrain"]


def test_sample_split_semantics(sample_h5):
    h5 = BioscanH5(sample_h5)
    species = {name: set(h5.group(name).strings("species").tolist()) for name in h5.group_names()}
    assert species["val_seen"] == species["test_seen"] < species["seen_keys"]  # some seen species: train only
    assert species["val_seen"] <= species["all_keys"]
    assert species["val_unseen"] == species["test_unseen"] == species["unseen_keys"]
    assert not species["val_unseen"] & species["seen_keys"]  # unseen species only via key_unseen
    assert species["all_keys"] == species["seen_keys"] | species["unseen_keys"]
    assert len(species["seen_keys"]) == 89 and len(species["unseen_keys"]) == 36 and len(species["val_seen"]) == 39
    # whole genera: every unseen species is a new species of a genus that has seen species (as in BIOSCAN-5M)
    genera = {name: set(h5.group(name).strings("genus").tolist()) for name in ("val_unseen", "seen_keys", "val_seen")}
    assert genera["val_unseen"] <= genera["seen_keys"] and len(genera["val_unseen"]) == 36
    assert len(genera["val_seen"]) == 36 < len(species["val_seen"])  # genera hold several seen species


@pytest.fixture
def bad_raw(tmp_path) -> tuple[Path, dict]:
    """A small raw release with every kind of bad input, one row each."""
    rows = [dict(r) for r in sample_rows() if r["split"] in ("train", "val", "key_unseen", "val_unseen")][:40]
    bad = {}
    bad["missing_image"] = rows[0]["processid"]
    bad["bad_image_random"] = rows[1]["processid"]
    bad["bad_image_truncated"] = rows[2]["processid"]
    bad["empty_barcode"] = rows[3]["processid"]
    rows[3]["dna_barcode"] = ""
    bad["barcode_chars"] = rows[4]["processid"]
    rows[4]["dna_barcode"] = "ACGTRYacgt-" + rows[4]["dna_barcode"]
    bad["missing_taxonomy"] = rows[5]["processid"]
    rows[5]["order"] = ""
    bad["unknown_split"] = rows[6]["processid"]
    rows[6]["split"] = "validation"
    bad["duplicate_processid"] = rows[7]["processid"]
    rows.append(dict(rows[7], dna_barcode="TTTT"))
    root = write_raw(tmp_path / "raw", rows)
    image_path(root, rows[0]).unlink()
    image_path(root, rows[1]).write_bytes(np.random.default_rng(0).bytes(3000))
    data = image_path(root, rows[2]).read_bytes()
    image_path(root, rows[2]).write_bytes(data[: len(data) // 2])
    return root, {"rows": rows, **bad}


def test_every_bad_input_is_counted_and_listed(bad_raw, tmp_path):
    root, bad = bad_raw
    out = tmp_path / "out" / "bad.hdf5"
    report = build_5m(root, out, workers=2)
    problems = report.problems
    assert problems["missing_image"]["ids"] == [bad["missing_image"]]
    assert problems["bad_image"]["ids"] == [bad["bad_image_random"], bad["bad_image_truncated"]]
    assert "not a JPEG" in problems["bad_image"]["details"][bad["bad_image_random"]]
    assert "truncated" in problems["bad_image"]["details"][bad["bad_image_truncated"]]
    assert problems["empty_barcode"]["ids"] == [bad["empty_barcode"]]
    assert problems["barcode_chars"]["ids"] == [bad["barcode_chars"]]
    assert "RYacgt" in problems["barcode_chars"]["details"][bad["barcode_chars"]]
    assert problems["alignment_gaps"]["ids"] == [bad["barcode_chars"]]  # its '-' (issue 16, fault 8)
    assert bad["missing_taxonomy"] in problems["missing_taxonomy"]["ids"]
    assert problems["unknown_split"]["ids"] == [bad["unknown_split"]]
    assert problems["duplicate_processid"]["ids"] == [bad["duplicate_processid"]]
    assert {k: v["action"] for k, v in problems.items()} == {
        "missing_image": "skipped",
        "bad_image": "skipped",
        "empty_barcode": "kept",
        "barcode_chars": "kept",
        "alignment_gaps": "kept",
        "missing_taxonomy": "stored as not_classified",
        "unknown_split": "in no group",
        "duplicate_processid": "kept the first row",
    }
    assert report.metadata_rows == 41 and report.rows_written == 41 - 1 - 3 - 1  # dup, 3 images, unknown split
    on_disk = json.loads(report.report_path.read_text())
    assert on_disk["problems"] == json.loads(json.dumps(problems))
    h5 = BioscanH5(out)
    ids = set()
    for name in h5.group_names():
        ids |= set(h5.group(name).sample_ids().tolist())
    for skipped in ("missing_image", "bad_image_random", "bad_image_truncated", "unknown_split"):
        assert bad[skipped] not in ids

    def find(pid):
        for name in h5.group_names():
            g = h5.group(name)
            ids = g.sample_ids().tolist()
            if pid in ids:
                return g.row(ids.index(pid))
        raise AssertionError(pid)

    first = next(r for r in bad["rows"] if r["processid"] == bad["duplicate_processid"])
    assert find(bad["duplicate_processid"])["barcode"] == first["dna_barcode"]  # the first row is kept
    assert find(bad["empty_barcode"])["barcode"] == ""
    assert find(bad["barcode_chars"])["barcode"].startswith("ACGTRYacgt-")
    assert find(bad["missing_taxonomy"])["order"] == "not_classified"
    assert not Path(f"{out}.partial").exists()


def test_on_bad_image_fail_leaves_nothing(bad_raw, tmp_path):
    root, bad = bad_raw
    out = tmp_path / "fail.hdf5"
    with pytest.raises(DataError, match="missing image|bad image") as info:
        build_5m(root, out, on_bad_image="fail", workers=1)
    assert bad["missing_image"] in info.value.message or bad["bad_image_random"] in info.value.message
    assert not out.exists() and not Path(f"{out}.partial").exists()


def test_decode_check_finds_corruption_inside_a_jpeg(tmp_path):
    rows = [dict(r) for r in sample_rows() if r["split"] == "val"][:4]
    root = write_raw(tmp_path / "raw", rows)
    data = bytearray(image_path(root, rows[0]).read_bytes())
    table = data.find(b"\xff\xc4")
    data[table + 5 : table + 40] = bytes(35)  # markers intact, Huffman table destroyed
    image_path(root, rows[0]).write_bytes(bytes(data))
    quick = build_5m(root, tmp_path / "quick.hdf5", workers=1)
    assert "bad_image" not in quick.problems
    full = build_5m(root, tmp_path / "full.hdf5", check_images="decode", workers=1)
    assert full.problems["bad_image"]["ids"] == [rows[0]["processid"]]
    assert full.groups["val_seen"] == 3


def test_splits_subset_and_output_safety(tmp_path):
    rows = sample_rows()
    out = tmp_path / "eval.hdf5"
    report = build_5m(sample_root(), out, splits=["val", "val_unseen", "key_unseen", "train"], workers=2)
    counts = Counter(r["split"] for r in rows)
    assert report.groups == {
        "seen_keys": counts["train"],
        "unseen_keys": counts["key_unseen"],
        "all_keys": counts["train"] + counts["key_unseen"],
        "val_seen": counts["val"],
        "val_unseen": counts["val_unseen"],
    }
    assert set(report.groups_skipped) == {"no_split_and_seen_train", "test_seen", "test_unseen", "other_heldout"}
    assert (
        report.rows_not_selected
        == counts["pretrain"] + counts["test"] + counts["test_unseen"] + counts["other_heldout"]
    )
    assert BioscanH5(out).group_names() == sorted(report.groups)
    assert not BioscanH5(out).group("val_seen").has_language_tokens()
    before = out.stat().st_mtime_ns
    with pytest.raises(DataError, match="already exists"):
        build_5m(sample_root(), out, splits=["val"])
    assert out.stat().st_mtime_ns == before
    Path(f"{out}.partial").write_bytes(b"stale")  # a crashed earlier run
    again = build_5m(sample_root(), out, splits=["val"], overwrite=True, workers=1)
    assert again.groups == {"val_seen": counts["val"]} and BioscanH5(out).group_names() == ["val_seen"]
    assert not Path(f"{out}.partial").exists()
    with pytest.raises(DataError, match="unknown split"):
        build_5m(sample_root(), tmp_path / "x.hdf5", splits=["validation"])


def test_reencode_quality(tmp_path):
    out = tmp_path / "q.hdf5"
    build_5m(sample_root(), out, splits=["val"], reencode_quality=40, workers=1)
    g = BioscanH5(out).group("val_seen")
    by_id = {r["processid"]: r for r in sample_rows()}
    original = image_path(sample_root(), by_id[g.sample_ids([0])[0]]).read_bytes()
    again = g.image_bytes(0)
    assert again != original and again[:3] == b"\xff\xd8\xff" and len(again) < len(original)
    assert "re-encoded, quality 40" == str(BioscanH5(out).file.attrs["image_bytes"])


def write_raw_1m(root: Path, rows: list[dict]) -> Path:
    images = root / "bioscan1m" / "images" / "cropped_256"
    fields = [
        "sampleid",
        "processid",
        "uri",
        "order",
        "family",
        "genus",
        "species",
        "nucraw",
        "image_file",
        "chunk_number",
    ]
    lines = ["\t".join(fields)]
    for i, r in enumerate(rows):
        image_file = f"{1000 + i}.jpg"
        part = images / f"part{1 + i % 2}"
        part.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image_path(sample_root(), r), part / image_file)
        values = [r["sampleid"], r["processid"], r["dna_bin"], r["order"], r["family"] or "not_classified"]
        values += [r["genus"], r["species"], r["dna_barcode"], image_file, str(1 + i % 2)]
        lines.append("\t".join(values))
    (root / "bioscan1m").mkdir(parents=True, exist_ok=True)
    (root / "bioscan1m" / "BIOSCAN_Insect_Dataset_metadata.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_build_1m_from_tsv_and_partition(tmp_path):
    rows = [r for r in sample_rows() if r["split"] in ("val", "train")][:12]
    root = write_raw_1m(tmp_path / "raw1m", rows)
    partition = tmp_path / "partition"
    partition.mkdir()
    (partition / "val_seen.txt").write_text("\n".join(r["sampleid"] for r in rows[:5]) + "\n")
    (partition / "all_keys.txt").write_text("\n".join(r["sampleid"] for r in rows[3:]) + "\nNOT-A-SAMPLE\n")
    out = tmp_path / "BioScan_data_in_splits.hdf5"
    report = build_1m(root, out, partition=partition, text_tokenizer="bioclip-sample", workers=2)
    assert report.groups == {"val_seen": 5, "all_keys": 9}
    g = BioscanH5(out).group("all_keys")
    assert g.id_column == "image_file" and not g.has("processid")
    assert g.sample_ids().tolist() == [f"{1000 + i}.jpg" for i in range(3, 12)]
    assert g.strings("dna_bin").tolist() == [r["dna_bin"] for r in rows[3:]]
    assert g.image_bytes(0) == image_path(sample_root(), rows[3]).read_bytes()
    assert g.has_language_tokens()
    subset = build_1m(root, tmp_path / "v.hdf5", splits=["val_seen"], partition=partition, workers=1)
    assert subset.groups == {"val_seen": 5}
    with pytest.raises(DataError, match="no partition file"):
        build_1m(root, tmp_path / "w.hdf5", splits=["test_seen"], partition=partition)


@pytest.mark.slow
def test_cli_build_and_errors(tmp_path):
    out = tmp_path / "cli.hdf5"
    ok = run_cli("build-hdf5", "5m", "--root", str(sample_root()), "--out", str(out), "--splits", "val,val_unseen")
    assert ok.returncode == 0, ok.stderr
    assert "val_seen" in ok.stdout and "val_unseen" in ok.stdout and "Traceback" not in ok.stderr
    assert out.exists() and Path(f"{out}.report.json").exists()
    for args, needle in [
        (("build-hdf5", "5m", "--root", str(sample_root()), "--out", str(out)), "already exists"),
        (("build-hdf5", "7m", "--root", str(sample_root()), "--out", str(tmp_path / "y.h5")), "unknown release"),
        (
            ("build-hdf5", "5m", "--root", str(tmp_path / "none"), "--out", str(tmp_path / "z.h5")),
            "no BIOSCAN-5M metadata",
        ),
        (
            (
                "build-hdf5",
                "5m",
                "--root",
                str(sample_root()),
                "--out",
                str(tmp_path / "t.h5"),
                "--text-tokenizer",
                "no/such",
            ),
            "text tokenizer",
        ),
    ]:
        bad = run_cli(*args)
        assert bad.returncode != 0, args
        errors = [line for line in bad.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and needle in errors[0], bad.stderr
        assert "Traceback" not in bad.stderr
    assert not (tmp_path / "t.h5").exists()


@pytest.mark.parametrize("block_chars", [5, 97, 1 << 20])
def test_metadata_table_reads_exactly_what_the_csv_module_reads(tmp_path, monkeypatch, block_chars):
    import io

    import bioclip_cli.data.raw_metadata as raw_metadata

    rows = [["processid", "split", "species"]]
    rows += [[f"P-{i}", "val", "Aedes aegypti"] for i in range(30)]
    rows[5][2] = 'Culex "pipiens", s.l.'  # quotes and a comma: quoted in the file
    rows[9][2] = "two\nlines"  # a newline inside a quoted field
    rows[12] = ["P-12", "val"]  # a short row
    buf = io.StringIO(newline="")
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    text = buf.getvalue() + "\r\n" + "P-99,val,last row without a line end"  # a blank line, then no final newline
    for name, content in (("crlf.csv", text), ("lf.csv", text.replace("\r\n", "\n")), ("cr.csv", "a,b\nx\ry,z\n")):
        path = tmp_path / name
        path.write_bytes(content.encode())
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            next(reader)
            expected = list(reader)
        monkeypatch.setattr(raw_metadata, "_BLOCK_CHARS", block_chars)
        assert list(raw_metadata.Table(path, ",", ())) == expected, name


def test_build_reads_crlf_quoted_metadata_without_optional_columns(tmp_path):
    rows = [dict(r) for r in sample_rows() if r["split"] in ("val", "val_unseen")][:12]
    for r in rows:
        del r["chunk"], r["dna_bin"]  # optional columns (no chunk folders for the evaluation splits)
    rows[2]["species"] = 'Aedes "quoted", species'
    root = tmp_path / "raw"
    for r in rows:
        src = image_path(sample_root(), dict(r, chunk=""))
        dst = image_path(root, dict(r, chunk=""))
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    meta = root / METADATA_5M
    meta.parent.mkdir(parents=True, exist_ok=True)
    with open(meta, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
    report = build_5m(root, tmp_path / "crlf.hdf5", workers=2)
    assert report.metadata_rows == 12 and report.rows_written == 12
    h5 = BioscanH5(tmp_path / "crlf.hdf5")
    got = {}
    for name in ("val_seen", "val_unseen"):
        g = h5.group(name)
        for pid, species, dna_bin in zip(g.sample_ids(), g.strings("species"), g.strings("dna_bin")):
            got[pid] = (species, dna_bin)
    assert got == {r["processid"]: (r["species"] or "not_classified", "") for r in rows}


def test_read_file_reads_large_files_whole(tmp_path):
    from bioclip_cli.data.raw_images import read_file_into

    data = np.random.default_rng(0).bytes((1 << 20) * 2 + 123)
    (tmp_path / "big.jpg").write_bytes(data)
    (tmp_path / "exact.jpg").write_bytes(data[: 1 << 20])
    for name, expected in (("big.jpg", data), ("exact.jpg", data[: 1 << 20])):
        buf, n = read_file_into(str(tmp_path / name), np.empty(1 << 20, dtype=np.uint8), 0)
        assert buf[:n].tobytes() == expected
    with pytest.raises(FileNotFoundError):
        read_file_into(str(tmp_path / "none.jpg"), np.empty(10, dtype=np.uint8), 0)


def h5_contents(path: Path) -> dict:
    """Every dataset's values and every attribute but the ones naming the file's origin."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: out.__setitem__(name, obj[()].tolist()) if isinstance(obj, h5py.Dataset) else None
        )
        out["attrs"] = {k: v for k, v in f.attrs.items() if k != "source_root"}
    return out


def test_build_in_worker_processes_gives_the_same_file(tmp_path):
    """The metadata parsed and the images read by worker processes (the default where there are 2+ CPUs), or all
    in the calling process (--workers 1): the same file and report, bad inputs included."""
    root = tmp_path / "raw"
    rows = [dict(r) for r in sample_rows()]
    rows[5]["dna_barcode"] = "ACGTXX"
    rows[9]["species"] = ""
    rows.append(dict(rows[2]))  # a duplicate
    write_raw(root, rows)
    image_path(root, rows[20]).unlink()
    reports = {}
    for workers in (1, 3):
        reports[workers] = build_5m(root, tmp_path / f"w{workers}.hdf5", workers=workers)
    assert reports[1].problems == reports[3].problems and reports[1].groups == reports[3].groups
    assert reports[1].problems["barcode_chars"]["count"] == 1 and "missing_image" in reports[1].problems
    assert h5_contents(tmp_path / "w1.hdf5") == h5_contents(tmp_path / "w3.hdf5")


@pytest.mark.parametrize("workers", [1, 2])
def test_metadata_that_is_not_utf8_is_an_error(tmp_path, workers):
    root = tmp_path / "raw"
    write_raw(root, [dict(r) for r in sample_rows()[:30]])
    meta = root / "bioscan5m" / "metadata" / "csv" / "BIOSCAN_5M_Insect_Dataset_metadata.csv"
    meta.write_bytes(meta.read_bytes().replace(b"Diptera", b"Dipt\xe9ra", 1))
    with pytest.raises(DataError, match="not UTF-8") as caught:
        build_5m(root, tmp_path / "out.hdf5", workers=workers)
    assert caught.value.path == meta and caught.value.hint
    assert not (tmp_path / "out.hdf5").exists() and not (tmp_path / "out.hdf5.partial").exists()


def test_build_with_many_small_parts_and_many_workers(tmp_path, monkeypatch):
    """Parts of two or three images and more read threads than the default slots: the reader lends one slot per
    part it has in hand, so the stream gets more slots than that (with too few it would wait forever)."""
    import signal

    import bioclip_cli.workflows.build_hdf5 as workflow

    one = build_5m(sample_root(), tmp_path / "one.hdf5", splits=["val", "key_unseen", "train"], workers=1)
    monkeypatch.setattr(workflow, "PART_BYTES", 20_000)
    signal.alarm(120)  # a hang fails the test instead of the suite
    try:
        many = build_5m(sample_root(), tmp_path / "many.hdf5", splits=["val", "key_unseen", "train"], workers=12)
    finally:
        signal.alarm(0)
    assert many.groups == one.groups and many.problems == one.problems
    assert h5_contents(tmp_path / "one.hdf5") == h5_contents(tmp_path / "many.hdf5")

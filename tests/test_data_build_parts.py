"""The pieces of `build-hdf5`: column-wise metadata blocks and the width scan against the csv module, fixed-width
strings, the image reader (caller and threads), the problem log and the report, and BIOSCAN-1M rows from the real
published metadata with their real photographs."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import bioclip_cli.data.build_raw as build_raw
import bioclip_cli.data.raw_images as raw_images
import bioclip_cli.data.raw_metadata as raw_metadata
from bioclip_cli.data.hdf5 import BioscanH5
from bioclip_cli.data.hdf5_writer import BioscanH5Writer
from bioclip_cli.data.raw_images import ImageReader, check_jpeg, read_file_into, read_images
from bioclip_cli.data.raw_metadata import Table
from bioclip_cli.data.raw_problems import ProblemLog
from bioclip_cli.data.sample import sample_metadata_csv, sample_root
from bioclip_cli.errors import BioclipError, DataError
from bioclip_cli.workflows.build_hdf5 import BuildReport, build_1m, build_5m


def tricky_csv(delimiter: str = ",") -> str:
    """Quotes, a newline inside a quoted field, short and long rows, a blank line, non-ASCII, CRLF and no final
    line end: everything the fast column path must hand to the csv module."""
    rows = [["processid", "split", "species", "sampleid"]]
    rows += [[f"P-{i}", "val", "Aedes aegypti", f"S{i}"] for i in range(40)]
    rows[5][2] = 'Culex "pipiens", s.l.'
    rows[9][2] = "two\nlines"
    rows[12] = ["P-12", "val"]  # short
    rows[14] = ["P-14", "val", "Aedes", "S14", "extra"]  # long
    rows[20][2] = "Épithète ñandú"  # non-ASCII: wider in bytes than in characters
    buf = io.StringIO(newline="")
    csv.writer(buf, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return buf.getvalue() + "\r\n" + delimiter.join(["P-99", "val", "last row without a line end", "S99"])


@pytest.mark.parametrize("block_chars", [7, 101, 1 << 20])
@pytest.mark.parametrize("variant", ["crlf", "lf", "plain", "bare-cr"])
def test_column_blocks_and_widths_match_the_csv_module(tmp_path, monkeypatch, block_chars, variant):
    text = tricky_csv()
    if variant == "lf":
        text = text.replace("\r\n", "\n")
    elif variant == "plain":  # the fast path only: every row complete, no quotes
        text = "a,b,c\n" + "".join(f"x{i},{'y' * (i % 7)},é{i}\n" for i in range(300))
    elif variant == "bare-cr":
        text = "a,b,c\nx,y\rlonger,z\n1,2,3\n"
    path = tmp_path / "meta.csv"
    path.write_bytes(text.encode())
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, rows = rows[0], rows[1:]
    names = [*header, "absent"]
    expected = [[row[i] if i < len(row) else "" for row in rows] for i in range(len(header))] + [[""] * len(rows)]
    monkeypatch.setattr(raw_metadata, "_BLOCK_CHARS", block_chars)
    table = Table(path, ",", ())
    got = [[] for _ in names]
    n_rows = 0
    for n, columns in table.column_blocks(names):
        n_rows += n
        for acc, column in zip(got, columns):
            assert len(column) == n and all(isinstance(cell, bytes) for cell in column)
            acc += [cell.decode("utf-8") for cell in column]
    assert n_rows == len(rows) and got == expected
    count, widest = table.widest(names)
    assert count == len(rows)
    exact = [max((len(c.encode()) for c in col), default=0) for col in expected]
    assert all(w >= e for w, e in zip(widest, exact))  # an upper bound always (never a cut string)...
    assert sum(widest) - sum(exact) <= 1  # ...and exact but for a CR counted in the last cell


def test_build_stores_fixed_width_utf8_strings(tmp_path):
    with open(sample_metadata_csv(), newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [r for r in reader if r["split"] == "val"][:6]
    rows[1]["species"] = "Culex épithète"  # non-ASCII
    rows[2]["sampleid"] = "  BIOUG-spaced  "  # stripped
    rows[3]["genus"] = ""  # -> not_classified (wider than any genus here)
    root = tmp_path / "raw"
    meta = root / build_raw.METADATA_5M
    meta.parent.mkdir(parents=True)
    with open(meta, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    for r in rows:
        src = sample_root() / "bioscan5m" / "images" / "cropped_256" / "val" / f"{r['processid']}.jpg"
        dst = root / "bioscan5m" / "images" / "cropped_256" / "val" / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    out = tmp_path / "fixed.hdf5"
    build_5m(root, out, workers=1)
    g = BioscanH5(out).group("val_seen")
    assert g.strings("species").tolist()[1] == "Culex épithète"
    assert g.strings("sampleid").tolist()[2] == "BIOUG-spaced"
    assert g.strings("genus").tolist()[3] == "not_classified"
    with h5py.File(out) as f:
        species = f["val_seen/species"]
        assert species.dtype.kind == "S"  # fixed-width byte strings, as in the published files
        widest = max(len((r["species"] or "not_classified").encode()) for r in rows)
        assert species.dtype.itemsize == max(widest, len("not_classified"))
        assert f["val_seen/processid"].dtype.itemsize == max(len(r["processid"]) for r in rows)
        assert f["val_seen/image_file"].dtype.itemsize == max(len(r["processid"]) for r in rows) + 4


def test_writer_never_cuts_a_string(tmp_path):
    with BioscanH5Writer(tmp_path / "w.hdf5", string_widths={"barcode": 4, "species": 6}) as writer:
        group = writer.group("g")
        group.append({"barcode": ["ACGT", ""], "species": ["épi", "abcdef"]}, images=[b"\xff\xd8\xff1", b"\xff\xd8"])
        with pytest.raises(ValueError, match="wider"):
            group.append({"barcode": ["ACGTA"], "species": ["x"]}, images=[b"x"])
        with pytest.raises(ValueError, match="wider"):
            group.append({"barcode": ["A"], "species": ["ééé_"]}, images=[b"x"])  # 7 bytes, 4 characters
    g = BioscanH5(tmp_path / "w.hdf5").group("g")
    assert g.strings("species").tolist() == ["épi", "abcdef"] and g.barcodes().tolist() == ["ACGT", ""]
    assert g.dataset("image_mask").chunks == (64,)  # a small first append: small chunks


def test_image_reader_in_the_caller_and_in_threads(tmp_path):
    jpeg = (sample_root() / "bioscan5m" / "images" / "cropped_256" / "val").glob("*.jpg")
    paths = [str(p) for p in sorted(jpeg)[:12]]
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    paths[3] = str(tmp_path / "missing.jpg")
    paths[7] = str(tmp_path / "bad.jpg")

    def files(data, ends):  # each file's bytes (b"" when bad)
        return [data[a:b].tobytes() for a, b in zip(np.concatenate([[0], ends[:-1]]), ends)]

    data, ends, problems = read_images(paths, False, None, out=np.empty(100, dtype=np.uint8))  # (grows)
    assert [p[:2] for p in problems] == [(3, "missing_image"), (7, "bad_image")]
    expected = files(data, ends)
    assert expected[0] == Path(paths[0]).read_bytes() and expected[3] == expected[7] == b""
    assert [len(e) for e in expected] == [0 if i in (3, 7) else Path(p).stat().st_size for i, p in enumerate(paths)]
    with ImageReader(2, False, None) as reader:  # files in the page cache: read by the caller
        tasks = [reader.submit(paths[lo : lo + 5]) for lo in range(0, 12, 5)]
        got = [reader.result(t) for t in tasks]
        assert not reader.parallel and all(t.future is None for t in tasks[1:])
    with ImageReader(2, False, None, slow_file=0.0) as reader:  # every file "slow": threads
        tasks = [reader.submit(paths[lo : lo + 5]) for lo in range(0, 12, 5)]
        assert all(t.future is not None for t in tasks)
        threaded = [reader.result(t) for t in reversed(tasks)][::-1]
    for results in (got, threaded):
        datas = [d for data, ends, _ in results for d in files(data, ends)]
        problems = [(lo + i, kind) for lo, (*_, issues) in zip(range(0, 12, 5), results) for i, kind, _ in issues]
        assert datas == expected and problems == [(3, "missing_image"), (7, "bad_image")]


def test_jpeg_marker_check_accepts_trailers_and_finds_truncation(realdata):
    """Every BIOSCAN-1M original photograph has 2,148 bytes after its end-of-image marker."""
    for path in sorted((realdata / "bioscan1m_repo" / "images").glob("*_*.jpg")):
        data = path.read_bytes()
        assert check_jpeg(data) is None, path.name
        assert "truncated" in check_jpeg(data[: len(data) // 2]), path.name
        assert "truncated" in check_jpeg(data[: data.rfind(b"\xff\xd9")]), path.name
    assert check_jpeg(data + bytes(100)) is None and "not a JPEG" in check_jpeg(b"\x89PNG" + data)


def test_read_file_into_a_buffer_of_any_room(tmp_path):
    """A file lands at `pos` whole, whether it fits the buffer exactly, just not, or by far not; what was before
    `pos` is kept when the buffer grows."""
    data = np.random.default_rng(1).bytes(3 * raw_images._READ_SIZE + 5)
    for room in (0, 1, 100, raw_images._READ_SIZE):
        for n in (0, 1, room - 1, room, room + 1, len(data)):
            if n < 0:
                continue
            (tmp_path / "f").write_bytes(data[:n])
            buf = np.full(7 + room, 9, dtype=np.uint8)
            out, got = read_file_into(os.fsencode(tmp_path / "f"), buf, 7)
            assert got == n and out[7 : 7 + n].tobytes() == data[:n] and (out[:7] == 9).all(), (room, n)


def test_problem_log_caps_ids_but_counts_every_row():
    log = ProblemLog(max_ids=5)
    log.add("missing_taxonomy", "A", "stored as not_classified", "species")
    log.add_many("missing_taxonomy", ["B", "C"], "stored as not_classified", ["genus,species", ""])
    assert log.room("missing_taxonomy") == 2 and log.room("other") == 5
    log.add_many("missing_taxonomy", ["D", "E"], "stored as not_classified", ["order", "order"], count=9)
    entry = log.to_dict()["missing_taxonomy"]
    assert entry["count"] == 12 and entry["ids"] == list("ABCDE") and entry["ids_truncated"]
    assert entry["details"] == {"A": "species", "B": "genus,species", "D": "order", "E": "order"}


def test_report_json_lists_ids_on_one_line(tmp_path):
    log = ProblemLog()
    log.add_many("missing_taxonomy", [f"ID-{i}" for i in range(3000)], "stored as not_classified", ["species"] * 3000)
    log.add("bad_image", 'odd "id" \\ é', "skipped", "not a JPEG")
    report = BuildReport(out=str(tmp_path / "x@0@.hdf5"), dataset="5m", root="/data/\0-free", problems=log.to_dict())
    text = report.to_json()
    assert json.loads(text) == json.loads(json.dumps(report.to_dict()))
    assert len(text.splitlines()) < 60  # 6,000 ids and details, one line per list


def test_build_hdf5_rejects_options_of_the_other_release(tmp_path):
    with pytest.raises(DataError, match="--partition is for"):
        build_5m(sample_root(), tmp_path / "x.hdf5", partition=tmp_path)
    with pytest.raises(BioclipError, match="unknown release"):
        build_5m.__globals__["build_hdf5"]("7m", sample_root(), tmp_path / "y.hdf5")


# BIOSCAN-1M rows of the published validation metadata (the BIOSCAN-1M code repository, source columns named
# as in the TSV: `uri` is the BIN, `image_file` the numeric photo name) whose photographs are in the dataset repo.
REAL_1M = {
    "3995976.jpg": "3995976_Blattodea.jpg",
    "5189695.jpg": "5189695_Hymenoptera.jpg",
    "5131549.jpg": "5131549_Neuroptera.jpg",
    "4285466.jpg": "4285466_Plecoptera.jpg",
    "4284053.jpg": "4284053_Odonata.jpg",
}


def test_build_1m_from_real_bioscan1m_rows(realdata, tmp_path):
    repo = realdata / "bioscan1m_repo"
    with open(repo / "taxonomy_records_val_subset.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["bioscan1m_image_file"] in REAL_1M]
    assert len(rows) == len(REAL_1M)
    fields = ["sampleid", "processid", "uri", "phylum", "class", "order", "family", "subfamily", "genus", "species"]
    fields += ["nucraw", "image_file", "chunk_number"]
    lines = ["\t".join(fields)]
    root = tmp_path / "BIOSCAN_1M"
    for k, r in enumerate(rows):
        part = root / "bioscan1m" / "images" / "cropped_256" / f"part{k % 2 + 1}"
        part.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo / "images" / REAL_1M[r["bioscan1m_image_file"]], part / r["bioscan1m_image_file"])
        values = dict(r, uri=r["dna_bin"], nucraw="", image_file=r["bioscan1m_image_file"])
        lines.append("\t".join(values[f] for f in fields[:-1]) + f"\t{k % 2 + 1}")
    (root / "bioscan1m" / "BIOSCAN_Insect_Dataset_metadata.tsv").write_text("\n".join(lines) + "\n")
    partition = root / "bioscan1m" / "partition"
    partition.mkdir()
    (partition / "val_seen.txt").write_text("\n".join(r["sampleid"] for r in rows[:3]) + "\n")
    (partition / "all_keys.txt").write_text("\n".join(r["sampleid"] for r in rows) + "\n")
    out = tmp_path / "BioScan_data_in_splits.hdf5"
    report = build_1m(root, out, workers=2)  # the partition folder found in its default place
    assert report.groups == {"val_seen": 3, "all_keys": 5}
    assert report.problems["empty_barcode"]["count"] == 5  # this metadata publishes no sequences
    assert report.missing_ranks["species"] == 5 and report.missing_ranks["genus"] == 2
    g = BioscanH5(out).group("all_keys")
    assert g.id_column == "image_file" and not g.has("processid")
    assert g.sample_ids().tolist() == [r["bioscan1m_image_file"] for r in rows]
    assert g.strings("dna_bin").tolist() == [r["dna_bin"] for r in rows]
    assert g.strings("sampleid").tolist() == [r["sampleid"] for r in rows]
    assert g.taxonomy()["genus"].tolist() == [r["genus"] or "not_classified" for r in rows]
    for i, r in enumerate(rows):  # 2880x2160 photographs (about 600 KB): longer than a chunk row, bytes unchanged
        assert g.image_bytes(i) == (repo / "images" / REAL_1M[r["bioscan1m_image_file"]]).read_bytes()


def test_build_through_the_threads_gives_the_same_file(tmp_path, monkeypatch):
    """The build's reads handed to the thread pool (as for slow storage) store the same bytes and report."""
    import bioclip_cli.workflows.build_hdf5 as workflow

    caller = build_5m(sample_root(), tmp_path / "caller.hdf5", splits=["val", "key_unseen", "train"], workers=2)

    class Threads(ImageReader):
        def __init__(self, workers, decode, reencode_quality):
            super().__init__(workers, decode, reencode_quality, slow_file=0.0)

    monkeypatch.setattr(workflow, "ImageReader", Threads)
    threads = build_5m(sample_root(), tmp_path / "threads.hdf5", splits=["val", "key_unseen", "train"], workers=3)
    assert threads.groups == caller.groups and threads.problems == caller.problems
    a, b = BioscanH5(tmp_path / "caller.hdf5"), BioscanH5(tmp_path / "threads.hdf5")
    for name in caller.groups:
        ga, gb = a.group(name), b.group(name)
        assert ga.sample_ids().tolist() == gb.sample_ids().tolist()
        assert all(ga.image_bytes(i) == gb.image_bytes(i) for i in range(len(ga)))

"""The BIOSCAN HDF5 reader and writer: round trips, the published variants, errors, fork safety."""

from __future__ import annotations

import multiprocessing
import os
import pickle

import h5py
import numpy as np
import pytest

from bioclip_cli.data import hdf5 as hdf5_module
from bioclip_cli.data.hdf5 import BioscanH5, read_rows
from bioclip_cli.data.hdf5_writer import IMAGE_CHUNK_ROWS, BioscanH5Writer, write_groups
from bioclip_cli.errors import DataError


def fake_jpeg(n: int, seed: int) -> bytes:
    body = np.random.default_rng(seed).integers(1, 255, size=max(0, n - 4), dtype=np.uint8).tobytes()
    return b"\xff\xd8" + body + b"\xff\xd9"


def columns(n: int, offset: int = 0) -> dict:
    ids = [f"PID{i + offset:05d}-24" for i in range(n)]
    return {
        "image": [fake_jpeg(100 + 37 * i, i + offset) for i in range(n)],
        "processid": ids,
        "sampleid": [f"S{i}" for i in range(n)],
        "image_file": [f"{p}.jpg" for p in ids],
        "barcode": ["ACGT" * (i + 1) for i in range(n)],
        "order": ["Diptera"] * n,
        "family": ["Culicidae", ""] * (n // 2) + ["Culicidae"] * (n % 2),
        "genus": [f"Genus{i % 3}" for i in range(n)],
        "species": [f"Genus{i % 3} épithète{i % 5}" for i in range(n)],  # non-ASCII survives UTF-8
    }


@pytest.fixture
def small_h5(tmp_path):
    tokens = {
        "input_ids": np.arange(7 * 20).reshape(7, 20),
        "attention_mask": np.ones((7, 20), dtype=np.int64),
        "token_type_ids": np.zeros((7, 20), dtype=np.int64),
    }
    return write_groups(
        tmp_path / "small.hdf5",
        {"val_seen": dict(columns(7), language_tokens=tokens), "all_keys": columns(3, offset=100)},
    )


def test_round_trip(small_h5):
    cols = columns(7)
    h5 = BioscanH5(small_h5)
    assert h5.group_names() == ["all_keys", "val_seen"]
    g = h5.group("val_seen")
    assert len(g) == 7 and len(h5.group("all_keys")) == 3
    assert g.image_width == max(len(b) for b in cols["image"])
    assert [g.image_bytes(i) for i in range(7)] == cols["image"]
    assert g.image_bytes(-1) == cols["image"][-1]
    assert g.strings("species").tolist() == cols["species"]
    assert g.sample_ids([6, 0, 0]).tolist() == [cols["processid"][6], cols["processid"][0], cols["processid"][0]]
    tax = g.taxonomy([1, 2])
    assert tax["family"].tolist() == ["not_classified", "Culicidae"]  # empty cell -> not_classified
    assert g.barcodes().tolist() == cols["barcode"]
    row = g.row(3)
    assert row == {
        "id": cols["processid"][3],
        "image": cols["image"][3],
        "barcode": cols["barcode"][3],
        "order": "Diptera",
        "family": "not_classified",
        "genus": "Genus0",
        "species": "Genus0 épithète3",
    }
    tokens = g.language_tokens([2, 0])
    assert tokens["input_ids"].tolist() == [list(range(40, 60)), list(range(20))]
    assert g.language_token_row(2)["input_ids"].tolist() == list(range(40, 60))
    assert h5.group("all_keys").language_tokens() is None and not h5.group("all_keys").has_language_tokens()
    with pytest.raises(IndexError):
        g.image_bytes(7)


def test_writer_appends_and_grows_the_width(tmp_path):
    path = tmp_path / "grow.hdf5"
    with BioscanH5Writer(path) as w:
        group = w.group("train")
        a = columns(3)
        big = [fake_jpeg(5000, 9), fake_jpeg(10, 8)]
        group.append({k: v for k, v in a.items() if k != "image"}, images=a["image"])
        group.append({k: v[:2] for k, v in columns(2, offset=50).items() if k != "image"}, images=big)
        with pytest.raises(ValueError, match="different lengths"):
            group.append(
                {"barcode": ["A"], **{k: ["x", "y"] for k in a if k not in ("image", "barcode")}}, images=[b"1"]
            )
    g = BioscanH5(path).group("train")
    assert len(g) == 5 and g.image_width == 5000
    assert [g.image_bytes(i) for i in range(5)] == a["image"] + big
    assert g.dataset("image").chunks[0] == IMAGE_CHUNK_ROWS


def test_writer_chunks_across_appends(tmp_path):
    """Appends that do not fill a chunk: rows wait and land in the right place, also after a width change."""
    path = tmp_path / "pending.hdf5"
    sizes = [3, 5, 7, 1, 2]
    expected = []
    with BioscanH5Writer(path) as w:
        offset = 0
        for k, n in enumerate(sizes):
            cols = columns(n, offset=offset)
            if k == 3:
                cols["image"] = [fake_jpeg(3000, 77)]  # wider than the first chunk width (1024)
            w.group("g").append({key: v for key, v in cols.items() if key != "image"}, images=cols["image"])
            expected += cols["image"]
            offset += n
    g = BioscanH5(path).group("g")
    assert len(g) == sum(sizes) == 18 and g.image_width == 3000
    assert [g.image_bytes(i) for i in range(18)] == expected
    assert g.image_lengths().tolist() == [len(b) for b in expected]


def test_published_variants_fixed_width_strings_and_1m_extras(tmp_path):
    """Files written like the upstream generator: fixed-width byte strings, int32 mask, no processid."""
    path = tmp_path / "published_1m.hdf5"
    images = [fake_jpeg(50, 1), fake_jpeg(80, 2)]
    with h5py.File(path, "w") as f:
        g = f.create_group("val_seen")
        padded = np.zeros((2, 96), dtype=np.uint8)
        for i, b in enumerate(images):
            padded[i, : len(b)] = np.frombuffer(b, dtype=np.uint8)
        g["image"] = padded
        g["image_mask"] = np.array([50, 80], dtype=np.int32)
        for name, values in {
            "barcode": ["ACGTN", "TTT"],
            "order": ["Diptera", "Hemiptera"],
            "family": ["Culicidae", "not_classified"],
            "genus": ["Culex", "not_classified"],
            "species": ["Culex pipiens", "not_classified"],
            "sampleid": ["BIOUG1", "BIOUG2"],
            "image_file": ["123.jpg", "456.jpg"],
            "dna_bin": ["BOLD:AAA0001", "BOLD:AAA0002"],
        }.items():
            g[name] = np.array([v.encode() for v in values])  # fixed-width 'S'
        g["image_features"] = np.zeros((2, 512), dtype=np.float32)
    g = BioscanH5(path).group("val_seen")
    assert g.dataset("barcode").dtype.kind == "S"
    assert [g.image_bytes(0), g.image_bytes(1)] == images
    assert g.id_column == "image_file" and g.sample_ids().tolist() == ["123.jpg", "456.jpg"]
    assert g.strings("dna_bin").tolist() == ["BOLD:AAA0001", "BOLD:AAA0002"]
    assert g.taxonomy()["genus"].tolist() == ["Culex", "not_classified"]
    assert g.row(1)["id"] == "456.jpg" and g.string("barcode", 1) == "TTT"
    assert g.language_tokens() is None


def test_errors_name_file_group_and_what_exists(small_h5, tmp_path):
    h5 = BioscanH5(small_h5)
    with pytest.raises(DataError) as info:
        h5.group("test_seen")
    assert str(small_h5) in info.value.message and "'test_seen'" in info.value.message
    assert "all_keys, val_seen" in info.value.message
    with pytest.raises(DataError) as info:
        h5.group("all_keys").dataset("language_tokens_input_ids")
    assert "'all_keys'" in info.value.message and "barcode" in info.value.message
    with pytest.raises(DataError, match="does not exist"):
        BioscanH5(tmp_path / "missing.hdf5")
    (tmp_path / "junk.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="not a readable HDF5"):
        BioscanH5(tmp_path / "junk.hdf5").group_names()


def test_read_rows_blocks_match_numpy(tmp_path, monkeypatch):
    monkeypatch.setattr(hdf5_module, "_BLOCK", 16)
    data = np.arange(1000) * 3
    with h5py.File(tmp_path / "r.h5", "w") as f:
        f["x"] = data
        f["s"] = np.array([f"v{i}".encode() for i in range(1000)])
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert np.array_equal(read_rows(f["x"]), data)
        rng = np.random.default_rng(0)
        for rows in (rng.integers(0, 1000, 50), np.arange(990, 1000), [5, 5, 999, 0], rng.permutation(1000)):
            assert np.array_equal(read_rows(f["x"], rows), data[np.asarray(rows)])
        assert read_rows(f["x"], [-1]).tolist() == [2997]
        assert read_rows(f["x"], []).shape == (0,)
        with pytest.raises(IndexError):
            read_rows(f["x"], [1000])


def test_pickle_keeps_only_the_path(small_h5):
    h5 = BioscanH5(small_h5)
    g = h5.group("val_seen")
    first = g.image_bytes(0)  # opens the file in this process
    state = pickle.dumps(g)
    assert b"h5py" not in state
    again = pickle.loads(state)
    assert again.h5._file is None and again._row_readers == {}
    assert again.image_bytes(0) == first


def _child_reads(reader, queue):
    queue.put((reader.image_bytes(2), reader.string("species", 4), reader.h5._pid))


def test_fork_reopens_the_file(small_h5):
    g = BioscanH5(small_h5).group("val_seen")
    parent = (g.image_bytes(2), g.string("species", 4))
    parent_pid = g.h5._pid
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_reads, args=(g, queue))
    proc.start()
    got = queue.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    assert got[:2] == parent and got[2] != parent_pid
    assert g.image_bytes(2) == parent[0] and g.h5._pid == parent_pid  # the parent's handle still works


def _image_file(path, layout: dict, rows: int = 37, width: int = 300, userblock: int = 0):
    """A group ``g`` whose ``image`` dataset is stored as `layout` (h5py create_dataset keywords) holding rows of
    random lengths (some empty, one full width); returns the rows' bytes."""
    rng = np.random.default_rng(rows + width)
    lengths = rng.integers(0, width + 1, rows)
    lengths[[1, -1]] = [width, 0]
    padded = np.zeros((rows, width), dtype=np.uint8)
    images = []
    for i, n in enumerate(lengths):
        padded[i, :n] = rng.integers(0, 256, n, dtype=np.uint8)
        images.append(padded[i, :n].tobytes())
    with h5py.File(path, "w", userblock_size=userblock) if userblock else h5py.File(path, "w") as f:
        g = f.create_group("g")
        g.create_dataset("image", data=padded, **layout)
        g["image_mask"] = lengths.astype(np.int32)
    return images


@pytest.mark.parametrize(
    "layout, userblock, raw",
    [
        ({}, 0, True),  # contiguous, as the published files
        ({}, 512, True),
        ({"chunks": (8, 300)}, 0, True),  # ours: 8 rows a chunk
        ({"chunks": (3, 64)}, 0, True),  # a row spans five chunk columns; partial edge chunks
        ({"chunks": (5, 128)}, 1024, True),
        ({"chunks": (8, 300), "compression": "gzip"}, 0, False),  # filtered: HDF5 reads it
        ({"chunks": (8, 300), "shuffle": True}, 0, False),
    ],
)
def test_raw_row_reads_equal_hdf5(tmp_path, layout, userblock, raw):
    """Rows read straight from the file (os.pread) are HDF5's bytes, for every layout it takes on."""
    path = tmp_path / "layout.hdf5"
    images = _image_file(path, layout, userblock=userblock)
    g = BioscanH5(path).group("g")
    reader = g._raw_images()
    assert (reader is not None) is raw
    lookups = []
    if raw and reader.base is None:  # count the chunk-index lookups
        lookup = reader._lookup
        reader._lookup = lambda coord: lookups.append(coord) or lookup(coord)
    assert [g.image_bytes(i) for i in range(len(images))] == images
    assert [g.image_bytes(i) for i in (5, 2, 36, 0, 5)] == [images[i] for i in (5, 2, 36, 0, 5)]  # any order
    if raw:  # HDF5's own reader was not needed; each chunk's offset was looked up once
        assert "image" not in g._row_readers
        assert len(lookups) == len(set(lookups))
        assert reader.base is not None or (reader._offsets != -1).all()
        assert (reader.base is not None) is ("chunks" not in layout)


def test_raw_reads_leave_unwritten_chunks_and_mismatches_to_hdf5(tmp_path):
    path = tmp_path / "partial.hdf5"
    with h5py.File(path, "w") as f:
        g = f.create_group("g")
        ds = g.create_dataset("image", shape=(24, 100), maxshape=(None, 100), chunks=(8, 100), dtype=np.uint8)
        ds[:8] = 7  # the chunks of rows 8-23 are never written: HDF5 reads them as the fill value
        g["image_mask"] = np.full(24, 60, dtype=np.int32)
    g = BioscanH5(path).group("g")
    assert g.image_bytes(3) == b"\x07" * 60
    assert g.image_bytes(17) == b"\x00" * 60
    reader = g._raw_images()
    assert reader.read(3, 60) == b"\x07" * 60 and reader.read(17, 60) is None
    assert reader.read(3, 101) is None  # longer than the row
    # a contiguous offset that does not point at the rows is found out when the reader is made
    bad = hdf5_module._RawRows(g.h5.raw_fd(), (24, 100), base=0)
    assert not bad._agrees_with(g.dataset("image"))


def test_close_then_read_reopens(small_h5):
    h5 = BioscanH5(small_h5)
    g = h5.group("val_seen")
    first = [g.image_bytes(i) for i in range(7)], g.string("species", 3)
    fd = h5.raw_fd()
    h5.close()
    assert h5._file is None and h5._fd is None
    with pytest.raises(OSError):
        os.fstat(fd)  # the plain descriptor was closed with the file
    assert ([g.image_bytes(i) for i in range(7)], g.string("species", 3)) == first

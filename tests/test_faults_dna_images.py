"""Issue 16, faults 7 and 8: image bombs are refused at build time and named by row at read time; DNA
alignment gaps are removed (and reported) the same way in build, embed/train and predict."""

from __future__ import annotations

import io

import numpy as np
import pytest
from test_data_build import image_path, sample_rows, write_raw

from bioclip_cli.config import load_config
from bioclip_cli.data.dna import DnaTokenizer, kmer_tokenize, strip_gaps
from bioclip_cli.workflows.build_hdf5 import build_5m

BARCODE = next(r["dna_barcode"] for r in sample_rows() if len(r["dna_barcode"]) > 600)
GAPPED = "-".join(BARCODE[i : i + 10] for i in range(0, len(BARCODE), 10))  # a '-' every 10 bases


# ------------------------------------------------------------------------------------------ fault 8: gaps


def test_gaps_are_removed_before_the_kmers_are_cut():
    assert GAPPED.count("-") > 50 and strip_gaps(GAPPED) == BARCODE and strip_gaps("AC.GT-") == "ACGT"
    gapped, plain = kmer_tokenize([GAPPED, "." + BARCODE]), kmer_tokenize([BARCODE, BARCODE])
    np.testing.assert_array_equal(gapped[0], plain[0])
    np.testing.assert_array_equal(gapped[1], plain[1])
    kept = kmer_tokenize([GAPPED], gaps="keep")[0]
    assert (kept == 2).sum() > (gapped[0][:1] == 2).sum() + 50  # kept, every k-mer holding a gap is <UNK>


def test_gaps_keep_is_the_original_tokenisation_behind_a_named_option():
    cfg = load_config("tiny", sets=["data.dna.gaps=keep"]).data.dna
    ids, _ = DnaTokenizer(cfg).numpy([GAPPED])
    assert (ids == 2).sum() > 50  # every k-mer holding a '-' is <UNK>, as in BarcodeBERT's own code
    default = DnaTokenizer(load_config("tiny").data.dna).numpy([GAPPED])[0]
    np.testing.assert_array_equal(default, kmer_tokenize([BARCODE])[0])


def test_predict_strips_gaps_and_says_so():
    from bioclip_cli.workflows.predict import QueryInput, _prepare

    cfg = load_config("tiny")
    predictions, _, barcodes = _prepare([QueryInput("q", dna=GAPPED, dna_name="#1"), QueryInput("p", dna=BARCODE)], cfg)
    assert barcodes == {0: BARCODE, 1: BARCODE}
    gaps = GAPPED.count("-")
    assert predictions[0].notes == [
        f"barcode #1: removed {gaps} alignment gap character(s) ('-', '.') before embedding"
    ]
    assert predictions[1].notes == [] and predictions[0].error is None


def test_build_reports_barcodes_with_gaps(tmp_path):
    rows = [dict(r) for r in sample_rows() if r["split"] == "val"][:4]
    rows[1]["dna_barcode"] = "ACGT--ACGT.." + rows[1]["dna_barcode"]
    report = build_5m(write_raw(tmp_path / "raw", rows), tmp_path / "out.hdf5", workers=1)
    gaps = report.problems["alignment_gaps"]
    assert gaps["ids"] == [rows[1]["processid"]] and gaps["action"] == "kept"
    assert gaps["details"][rows[1]["processid"]] == "4 gap character(s) '-'/'.', removed when tokenised"
    assert "barcode_chars" not in report.problems  # gaps are not "odd characters"


# ---------------------------------------------------------------------------------------- fault 7: bombs


def bomb_jpeg(width: int = 30000, height: int = 30000) -> bytes:
    """A real 16x16 JPEG whose frame header (SOF) declares `width` x `height`."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 80, 40)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def bomb_raw(tmp_path):
    rows = [dict(r) for r in sample_rows() if r["split"] == "val"][:4]
    root = write_raw(tmp_path / "raw", rows)
    image_path(root, rows[2]).write_bytes(bomb_jpeg())
    return root, rows


def test_a_header_only_image_bomb_is_refused_at_build_time(tmp_path):
    root, rows = bomb_raw(tmp_path)
    report = build_5m(root, tmp_path / "out.hdf5", workers=1)  # the default --check-images markers
    bad = report.problems["bad_image"]
    assert bad["ids"] == [rows[2]["processid"]] and bad["action"] == "skipped"
    assert "declares 30000x30000 pixels" in bad["details"][rows[2]["processid"]]
    assert report.groups["val_seen"] == 3


@pytest.fixture
def bomb_h5(tmp_path):
    """A dataset whose val_seen row 1 is an image bomb (as a file built by an older version would hold)."""
    import h5py

    root, rows = bomb_raw(tmp_path)
    image_path(root, rows[2]).write_bytes(image_path(root, rows[0]).read_bytes())
    out = tmp_path / "bomb.hdf5"
    build_5m(root, out, workers=1)
    with h5py.File(out, "r+") as f:
        g = f["val_seen"]
        data = bomb_jpeg()
        row = np.zeros(g["image"].shape[1], dtype=np.uint8)
        row[: len(data)] = np.frombuffer(data, dtype=np.uint8)
        g["image"][1] = row
        g["image_mask"][1] = len(data)
        ids = [s.decode() if isinstance(s, bytes) else s for s in g["processid"][:]]
    return out, ids[1]


def test_a_bomb_at_read_time_is_one_error_naming_group_row_and_id(bomb_h5):
    from bioclip_cli.data.datasets import EvalDataset
    from bioclip_cli.errors import DataError

    path, pid = bomb_h5
    cfg = load_config("tiny", sets=[f"data.hdf5={path}"])
    ds = EvalDataset(path, "val_seen", cfg.data, modalities=cfg.model.modalities, tokenizer=cfg.model.text.tokenizer)
    with pytest.raises(DataError) as err:
        ds.__getitems__([0, 1, 2])
    message = str(err.value)
    assert f"group 'val_seen' row 1 ({pid}) has an unreadable image (the image declares 30000x30000 pixels" in message


def test_training_skips_a_bomb_row_with_a_count_or_fails_naming_it(bomb_h5, capsys):
    from bioclip_cli.data.datasets import TrainDataset
    from bioclip_cli.errors import DataError

    path, pid = bomb_h5

    def train_set(cfg):
        return TrainDataset(path, "val_seen", cfg.data, modalities=cfg.model.modalities,
                            tokenizer=cfg.model.text.tokenizer, seed=cfg.train.seed)  # fmt: skip

    skip = train_set(load_config("tiny", sets=[f"data.hdf5={path}"]))
    items = skip.__getitems__([0, 1, 2])
    assert [it["index"] for it in items] == [0, 2] and skip.skipped_rows == 1
    assert "Warning: skipped" in capsys.readouterr().err
    fail = train_set(load_config("tiny", sets=[f"data.hdf5={path}", "data.bad_images=fail"]))
    with pytest.raises(DataError, match=rf"row 1 \({pid}\) has an unreadable image"):
        fail.__getitems__([0, 1, 2])

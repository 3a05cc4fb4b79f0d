"""INSECT_metadata.csv and the two BZSL embedding CSVs: exact round trips and the original byte format."""

from __future__ import annotations

import io

import numpy as np
import pytest

from bioclip_cli.data.bzsl_csv import (
    class_mean_embeddings,
    read_dna_class_embeddings,
    read_image_embeddings,
    write_dna_class_embeddings,
    write_image_embeddings,
)
from bioclip_cli.data.insect_table import InsectTable, read_insect_metadata, write_insect_metadata
from bioclip_cli.errors import DataError

HEADER = "bold_ids,ids,labels,species,nucleotides,trainval,train,val,test_seen,test_unseen\n"


def small_table() -> InsectTable:
    return InsectTable(
        bold_ids=["BOLD:A1", "BOLD:A2", "BOLD:B1", "BOLD:C1"],
        ids=["img_1", "img_2", "img 3", "img_4"],
        labels=np.array([0, 0, 1, 2]),
        species=["Aus bus", "Aus bus", "Cus, dus", 'Eus "fus"'],
        nucleotides=["ACGT", "", "NNAC-GT", "TTTT"],
        trainval=[1, 1, 0, 0],
        train=[1, 0, 0, 0],
        val=[0, 1, 0, 0],
        test_seen=[0, 0, 1, 0],
        test_unseen=[0, 0, 0, 1],
    )


def test_metadata_round_trip_is_exact(tmp_path):
    table = small_table()
    path = write_insect_metadata(table, tmp_path / "INSECT_metadata.csv")
    assert path.read_text().startswith(HEADER)
    back = read_insect_metadata(path)
    assert back.bold_ids == table.bold_ids and back.ids == table.ids
    assert back.species == table.species and back.nucleotides == table.nucleotides
    np.testing.assert_array_equal(back.labels, [0, 0, 1, 2])
    assert back.n_classes == 3
    np.testing.assert_array_equal(back.loc("trainval"), [0, 1])
    np.testing.assert_array_equal(back.loc("train"), [0])
    np.testing.assert_array_equal(back.loc("val"), [1])
    np.testing.assert_array_equal(back.loc("test_seen"), [2])
    np.testing.assert_array_equal(back.loc("test_unseen"), [3])
    assert back.trainval.dtype == bool and back.labels.dtype == np.int64
    # writing what was read gives the same bytes
    again = write_insect_metadata(back, tmp_path / "again.csv")
    assert again.read_bytes() == path.read_bytes()


def test_metadata_reads_the_processed_release_layout(tmp_path):
    # as pandas' to_csv(index=False) writes it; column order does not matter, True/False flags accepted
    path = tmp_path / "m.csv"
    path.write_text(
        "ids,bold_ids,labels,species,nucleotides,trainval,train,val,test_seen,test_unseen\n"
        "a,B1,4,Aus bus,ACGT,1,1,0,0,0\n"
        "b,B2,0,Cus dus,GG,False,False,False,False,True\n"
    )
    table = read_insect_metadata(path)
    assert table.ids == ["a", "b"] and table.bold_ids == ["B1", "B2"]
    np.testing.assert_array_equal(table.labels, [4, 0])
    assert table.n_classes == 5
    np.testing.assert_array_equal(table.loc("test_unseen"), [1])
    with pytest.raises(ValueError, match="unknown INSECT split"):
        table.loc("test")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "is empty"),
        ("bold_ids,ids,labels,species\nB,a,0,x\n", "lacks the column"),
        (HEADER, "no rows"),
        (HEADER + "B,a,zero,x,AC,1,1,0,0,0\n", "line 2: label 'zero' is not an integer"),
        (HEADER + "B,a,0,x,AC,1,1,0,0\n", "line 2: 9 fields"),
        (HEADER + "B,a,0,x,AC,1,yes,0,0,0\n", "column 'train' holds 'yes'"),
        (HEADER + "B,a,-1,x,AC,1,1,0,0,0\n", "0-based"),
    ],
)
def test_metadata_problems_are_one_sentence(tmp_path, text, message):
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_insect_metadata(path)


def test_missing_metadata_names_the_download(tmp_path):
    with pytest.raises(DataError) as info:
        read_insect_metadata(tmp_path / "nope.csv")
    assert "does not exist" in info.value.message and "bioclip download insect" in info.value.hint


def test_embedding_csvs_match_numpy_savetxt_bytes_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(7, 5))  # N=7 rows, d=5
    labels = np.array([0, 2, 1, 0, 2, 2, 1])
    dna = rng.normal(size=(7, 5))
    class_dna = class_mean_embeddings(dna, labels, 3)
    np.testing.assert_allclose(class_dna[2], dna[[1, 4, 5]].mean(axis=0), rtol=0, atol=1e-15)

    image_path = write_image_embeddings(image, tmp_path / "image_embedding_from_bioscan_clip.csv")
    dna_path = write_dna_class_embeddings(class_dna, tmp_path / "dna_embedding_from_bioscan_clip.csv")
    for matrix, path, shape in ((image, image_path, (5, 7)), (class_dna, dna_path, (5, 3))):
        expected = io.BytesIO()
        np.savetxt(expected, matrix.T, delimiter=",", fmt="%.18e")
        assert path.read_bytes() == expected.getvalue()
        lines = path.read_text().splitlines()
        assert (len(lines), len(lines[0].split(","))) == shape  # [d × N] / [d × C]
        assert lines[0].split(",")[1] == f"{matrix[1, 0]:.18e}"  # column i = row i
    np.testing.assert_array_equal(read_image_embeddings(image_path), image)  # %.18e is exact for float64
    np.testing.assert_array_equal(read_dna_class_embeddings(dna_path), class_dna)


def test_class_means_need_every_class(tmp_path):
    with pytest.raises(ValueError, match="class 1"):
        class_mean_embeddings(np.ones((2, 3)), np.array([0, 2]), 3)
    with pytest.raises(DataError, match="does not exist"):
        read_image_embeddings(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("1.0,abc\n")
    with pytest.raises(DataError, match="not a comma-separated numeric matrix"):
        read_dna_class_embeddings(bad)

"""Taxonomy strings, the bundled WordPiece vocabulary and tokenisation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bioclip_cli.data.sample import sample_tokenizer_dir
from bioclip_cli.data.taxonomy import (
    NOT_CLASSIFIED,
    clean_rank,
    load_text_tokenizer,
    taxonomy_string,
    taxonomy_strings,
    tokenize_taxonomy,
    wordpiece_vocabulary,
)
from bioclip_cli.errors import MissingArtifact


def test_taxonomy_string_and_missing_ranks():
    assert taxonomy_string("Diptera", "Asilidae", "Machimus", "Machimus erythocnemius") == (
        "Diptera Asilidae Machimus Machimus erythocnemius"
    )
    assert taxonomy_string("Diptera", "", None, float("nan")) == (
        "Diptera not_classified not_classified not_classified"
    )
    for missing in ("", "  ", "nan", "None", "not_classified", None, math.nan, b""):
        assert clean_rank(missing) == NOT_CLASSIFIED
    assert clean_rank(b"Culicidae ") == "Culicidae"


def test_taxonomy_strings_vectorised_matches_scalar():
    cols = {
        "order": ["Diptera", "Lepidoptera", "", "Coleoptera"],
        "family": ["Asilidae", None, "Aphididae", "nan"],
        "genus": ["Machimus", "Eurois", "", "Pidonia"],
        "species": ["Machimus erythocnemius", "", "", "Pidonia quadrata"],
    }
    got = taxonomy_strings(cols["order"], cols["family"], cols["genus"], cols["species"])
    expected = [taxonomy_string(*row) for row in zip(*cols.values())]
    assert got.dtype == object and got.tolist() == expected
    strs = taxonomy_strings(np.array(["A", ""]), np.array(["B", "C"]), np.array(["", "D"]), np.array(["E", "F"]))
    assert strs.tolist() == ["A B not_classified E", "not_classified C D F"]


def test_sample_tokenizer_vocabulary():
    vocab = (sample_tokenizer_dir() / "vocab.txt").read_text().splitlines()
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(vocab) <= 512 and len(vocab) == len(set(vocab))
    assert {"diptera", "tephritidae", "rhagoletis", "cingulata", "not", "_", "classified", "##a", "z"} <= set(vocab)
    tok = load_text_tokenizer("bioclip-sample")
    assert len(tok) == len(vocab)
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id) == (0, 1, 2, 3)


def test_tokenize_taxonomy_padding_and_truncation():
    tok = load_text_tokenizer("bioclip-sample")
    enc = tokenize_taxonomy(
        tok,
        [
            "Diptera Tephritidae Rhagoletis Rhagoletis cingulata",
            "Diptera not_classified not_classified not_classified",
            "Zygentoma Lepismatidae Thermobia domestica",  # words outside the vocabulary: character pieces
        ],
        max_len=20,
    )
    assert set(enc) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(v.shape == (3, 20) and v.dtype == np.int64 for v in enc.values())
    first = tok.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    assert first[:7] == ["[CLS]", "diptera", "tephritidae", "rhagoletis", "rhagoletis", "cingulata", "[SEP]"]
    assert enc["attention_mask"][0].tolist() == [1] * 7 + [0] * 13
    assert enc["input_ids"][0, 7:].tolist() == [0] * 13
    second = tok.convert_ids_to_tokens(enc["input_ids"][1].tolist())
    assert second[1:5] == ["diptera", "not", "_", "classified"]
    assert enc["attention_mask"][2].sum() == 20 and enc["input_ids"][2, 19] == tok.sep_token_id  # truncated
    assert 1 not in enc["input_ids"][2].tolist()  # no [UNK]: unseen words split into characters
    assert (enc["token_type_ids"] == 0).all()
    assert tokenize_taxonomy(tok, [], 20)["input_ids"].shape == (0, 20)


def test_unknown_tokenizer_is_missing_artifact():
    with pytest.raises(MissingArtifact) as info:
        load_text_tokenizer("no-such-org/no-such-tokenizer")
    assert "no-such-org/no-such-tokenizer" in info.value.message
    assert "bioclip download encoders" in info.value.hint


def test_local_tokenizer_folder(tmp_path):
    tok = load_text_tokenizer("bioclip-sample")
    tok.save_pretrained(str(tmp_path / "tok"))
    again = load_text_tokenizer(str(tmp_path / "tok"))
    text = ["Diptera Asilidae Machimus Machimus erythocnemius"]
    assert np.array_equal(tokenize_taxonomy(tok, text)["input_ids"], tokenize_taxonomy(again, text)["input_ids"])


def test_wordpiece_vocabulary_limits():
    vocab = wordpiece_vocabulary(["Diptera Asilidae", "Culex sp. 2"])
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert "diptera" in vocab and "culex" in vocab and "." in vocab
    with pytest.raises(ValueError, match="more than 10"):
        wordpiece_vocabulary(["a b c"], max_size=10)

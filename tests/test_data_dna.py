"""BarcodeBERT k-mer tokenizer: exact values (docs/method.md, Model) and a plain per-string reference on real barcodes."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from bioclip_cli.config.schema import DnaDataConfig
from bioclip_cli.data.dna import DnaTokenizer, kmer_tokenize, kmer_vocabulary, vocab_size


def reference_tokenize(seq: str, k: int = 5, max_len: int = 660, prefix_id: int | None = 0) -> list[int]:
    """The obvious per-string, per-k-mer implementation of BarcodeBERT v1's tokenizer."""
    vocab = {token: i for i, token in enumerate(kmer_vocabulary(k))}
    seq = seq[:max_len] + "N" * max(0, max_len - len(seq))
    ids = [vocab.get(seq[i : i + k], 2) for i in range(0, max_len - k + 1, k)]
    return ([prefix_id] if prefix_id is not None else []) + ids


def test_vocabulary_layout():
    vocab = kmer_vocabulary(5)
    assert len(vocab) == vocab_size(5) == 1027
    assert vocab[:5] == ["<MASK>", "<CLS>", "<UNK>", "AAAAA", "AAAAC"]
    assert vocab[-1] == "TTTTT"
    assert vocab[3 + 4**5 // 2] == "GAAAA"


def test_exact_values():
    ids, mask = kmer_tokenize(["AAAAA", "TTTTT", "NNNNN", "AAAAC", "ACGTA"])
    assert ids.shape == mask.shape == (5, 133)
    assert ids.dtype == mask.dtype == np.int64
    assert ids[:, 0].tolist() == [0, 0, 0, 0, 0]  # the prefix id
    assert ids[:, 1].tolist() == [3, 1026, 2, 4, 3 + 0b0001101100]  # ACGTA = 0,1,2,3,0 in base 4
    assert (ids[:, 2:] == 2).all()  # right-padded with N -> <UNK>
    assert mask[:, :2].tolist() == [[1, 1]] * 5 and (mask[:, 2:] == 0).all()


@pytest.mark.parametrize("kmer", ["aaaaa", "AAAAa", "ACGTR", "RYSWK", "AC-GT", "ACGTÄ", "ACGT ", "NAAAA"])
def test_non_acgt_is_unk(kmer):
    ids, _ = kmer_tokenize([kmer + "AAAAA"], gaps="keep")  # gaps="keep": '-' stays in its k-mer
    assert ids[0, 1] == 2
    assert ids[0, 2] == 3


def test_truncation_and_padding_mask():
    long = "ACGTA" * 200  # 1000 nt
    ids, mask = kmer_tokenize([long, "A" * 7, ""])
    assert ids.shape == (3, 133)
    assert (ids[0, 1:] == 3 + 0b0001101100).all()  # truncated at 660: 132 full k-mers
    assert mask[0].sum() == 133
    assert mask[1].tolist()[:4] == [1, 1, 1, 0]  # k-mers starting at 0 and 5 are inside the 7-nt barcode
    assert ids[1, 1:3].tolist() == [3, 2]  # AAAAA, then AANNN -> <UNK>
    assert mask[2].tolist()[:2] == [1, 0] and (ids[2, 1:] == 2).all()  # empty barcode: prefix only


def test_options_k_max_len_prefix():
    ids, mask = kmer_tokenize(["ACGTACGT"], k=4, max_len=12, prefix_id=None)
    assert ids.tolist() == [[3 + 0b00011011, 3 + 0b00011011, 2]]
    assert mask.tolist() == [[1, 1, 0]]
    ids, _ = kmer_tokenize(["ACG"], k=3, max_len=6, prefix_id=1)
    assert ids.tolist() == [[1, 3 + 0b000110, 2]]


def test_bytes_and_numpy_inputs():
    seqs = np.array(["ACGTA", "TTTTT"], dtype=object)
    a, _ = kmer_tokenize(seqs)
    b, _ = kmer_tokenize([b"ACGTA", b"TTTTT"])
    assert np.array_equal(a, b)


def test_real_barcodes_match_reference(realdata):
    """All 4,278 real barcodes (with Ns, 307-761 nt) against the per-string reference, several settings."""
    with open(realdata / "barcodebert_unseen" / "barcodes.csv", newline="") as fh:
        seqs = [row["dna_barcode"] for row in csv.DictReader(fh)]
    assert len(seqs) == 4278
    ids, mask = kmer_tokenize(seqs)
    expected = np.array([reference_tokenize(s) for s in seqs])
    assert np.array_equal(ids, expected)
    lengths = np.array([min(len(s), 660) for s in seqs])
    assert np.array_equal(mask[:, 1:].sum(axis=1), -(-lengths // 5))  # k-mers starting inside the barcode
    some = seqs[::7]
    for k, max_len, prefix in ((4, 600, None), (6, 660, 1), (3, 300, 0)):
        got, _ = kmer_tokenize(some, k=k, max_len=max_len, prefix_id=prefix)
        assert np.array_equal(got, np.array([reference_tokenize(s, k, max_len, prefix) for s in some]))
    assert (ids == 2).any() and ids.max() <= 1026


def test_chunk_boundary_is_invisible():
    """More sequences than one internal chunk: the result equals tokenising each alone."""
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGTN"), size=int(n))) for n in rng.integers(0, 800, size=4100)]
    ids, mask = kmer_tokenize(seqs)
    for i in (0, 4095, 4096, 4099):
        one_ids, one_mask = kmer_tokenize([seqs[i]])
        assert np.array_equal(ids[i], one_ids[0]) and np.array_equal(mask[i], one_mask[0])


def test_dna_tokenizer_wrapper():
    tok = DnaTokenizer(DnaDataConfig())
    ids, mask = tok(["AAAAA", "TTTTT"])
    assert isinstance(ids, torch.Tensor) and ids.dtype == torch.long and ids.shape == (2, 133)
    assert tok.n_tokens == 133
    ids_np, _ = tok("AAAAA", return_tensors="np")
    assert ids_np[0, 1] == 3
    short = DnaTokenizer(DnaDataConfig(k=4, max_len=8, prefix_id=None))
    assert short(["ACGTACGT"])[0].tolist() == [[30, 30]]

"""BarcodeBERT's k-mer tokenizer (docs/method.md, Model), vectorised over a batch with numpy.

Vocabulary: ``<MASK>``=0, ``<CLS>``=1, ``<UNK>``=2, then the 4**k k-mers over ACGT in lexicographic order
(k=5: AAAAA=3 ... TTTTT=1026). A k-mer holding any other character (N, IUPAC codes, a kept '-', lower case,
anything non-ASCII) is ``<UNK>``. Each barcode is truncated to ``max_len`` characters or right-padded with
'N', cut into ``max_len // k`` non-overlapping k-mers, mapped to ids, and ``prefix_id`` is prepended
(compat: 0, so BarcodeBERT v1 always sees 133 ids).

Alignment gaps (``-`` and ``.``, as in aligned FASTA) are removed before the k-mers are cut
(:func:`strip_gaps`; ``data.dna.gaps: strip``, the default), so a gapped barcode reads as the sequence it
aligns; without that, every k-mer holding a gap would become ``<UNK>`` and the k-mer frame would shift
(``data.dna.gaps: keep`` reproduces that behaviour of the original code). `build-hdf5` reports barcodes
with gaps and `predict` notes them; all of them use :func:`strip_gaps`.

The attention mask is 1 for the prefix and for k-mers that start inside the (truncated) barcode, 0 for
k-mers made only of padding. The compat pooling ignores it (it averages over every position); the fixed
``dna.pooling: mean`` uses it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bioclip_cli.config.schema import DnaDataConfig

MASK_ID = 0
CLS_ID = 1
UNK_ID = 2
N_SPECIAL = 3
_BAD = 128  # any byte that is not A, C, G or T maps to a value with this bit set

# bytes.translate table: A, C, G, T -> 0..3, every other byte -> _BAD
_TABLE = bytes({ord("A"): 0, ord("C"): 1, ord("G"): 2, ord("T"): 3}.get(c, _BAD) for c in range(256))

_CHUNK = 4096  # sequences per numpy pass: keeps the working set in cache

GAP_CHARACTERS = "-."  # alignment gaps in aligned FASTA/CSV barcodes: removed, never read as k-mer letters
_NO_GAPS = str.maketrans("", "", GAP_CHARACTERS)


def strip_gaps(seq: str) -> str:
    """A barcode without its alignment gap characters (``-`` and ``.``): the one rule of build-hdf5 (reported),
    manifests, training, embed and predict."""
    return seq.translate(_NO_GAPS)


def gap_count(seq: str | bytes) -> int:
    """How many alignment gap characters `seq` holds."""
    if isinstance(seq, bytes):
        return seq.count(b"-") + seq.count(b".")
    return seq.count("-") + seq.count(".")


def vocab_size(k: int = 5) -> int:
    """Number of ids for k-mers of length k: 4**k + the 3 special tokens."""
    return 4**k + N_SPECIAL


def kmer_vocabulary(k: int = 5) -> list[str]:
    """All tokens in id order: the 3 special tokens, then the k-mers lexicographically."""
    kmers = [""]
    for _ in range(k):
        kmers = [prefix + base for prefix in kmers for base in "ACGT"]
    return ["<MASK>", "<CLS>", "<UNK>", *kmers]


def kmer_tokenize(
    seqs: Sequence[str], k: int = 5, max_len: int = 660, prefix_id: int | None = 0, gaps: str = "strip"
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask, both int64 [N, max_len // k (+1 with a prefix)].

    `seqs` is any sequence of str (bytes are decoded as ASCII). Works on all sequences at once; the only
    Python-level loop is one string operation per barcode. `gaps="strip"` removes alignment gaps first.
    """
    if gaps not in ("strip", "keep"):
        raise ValueError(f"gaps must be strip or keep, got {gaps!r}")
    if k < 1 or max_len < k:
        raise ValueError(f"need 1 <= k <= max_len, got k={k}, max_len={max_len}")
    n = len(seqs)
    n_kmers = max_len // k
    offset = 0 if prefix_id is None else 1
    ids = np.empty((n, n_kmers + offset), dtype=np.int64)
    mask = np.empty((n, n_kmers + offset), dtype=np.int64)
    if offset:
        ids[:, 0] = prefix_id
        mask[:, 0] = 1
    starts = np.arange(n_kmers, dtype=np.int64) * k
    # a k-mer's id is 3 + its base-4 number; any _BAD digit makes it <UNK>
    dtype = np.uint16 if k <= 5 else np.uint32 if k <= 13 else np.uint64
    for lo in range(0, n, _CHUNK):
        chunk = [s.decode("ascii", "replace") if isinstance(s, bytes) else s for s in seqs[lo : lo + _CHUNK]]
        if gaps == "strip":
            chunk = [s.translate(_NO_GAPS) for s in chunk]
        hi = lo + len(chunk)
        # one padded line per barcode: truncate, right-pad with N; non-ASCII characters become '?'
        text = "".join([s[:max_len].ljust(max_len, "N") for s in chunk]).encode("ascii", "replace")
        codes = np.frombuffer(text.translate(_TABLE), dtype=np.uint8).reshape(hi - lo, max_len)
        kmers = codes[:, : n_kmers * k].reshape(hi - lo, n_kmers, k)
        value = kmers[:, :, 0].astype(dtype)
        bad = kmers[:, :, 0].copy()
        for j in range(1, k):
            column = kmers[:, :, j]
            value <<= 2
            value += column
            bad |= column
        out = ids[lo:hi, offset:]
        np.add(value, N_SPECIAL, out=out, casting="unsafe")
        out[bad >= _BAD] = UNK_ID
        lengths = np.minimum(np.array([len(s) for s in chunk], dtype=np.int64), max_len)
        mask[lo:hi, offset:] = starts[None, :] < lengths[:, None]
    return ids, mask


class DnaTokenizer:
    """Callable tokenizer configured by `data.dna`: ``tok(seqs)`` -> (ids, mask) as torch tensors (or numpy)."""

    def __init__(self, cfg: DnaDataConfig | None = None):
        self.cfg = cfg or DnaDataConfig()

    @property
    def n_tokens(self) -> int:
        return self.cfg.n_tokens

    def numpy(self, seqs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return kmer_tokenize(
            seqs, k=self.cfg.k, max_len=self.cfg.max_len, prefix_id=self.cfg.prefix_id, gaps=self.cfg.gaps
        )

    def __call__(self, seqs: Sequence[str] | str, return_tensors: str = "pt"):
        if isinstance(seqs, str):
            seqs = [seqs]
        ids, mask = self.numpy(seqs)
        if return_tensors == "np":
            return ids, mask
        import torch

        return torch.from_numpy(ids), torch.from_numpy(mask)

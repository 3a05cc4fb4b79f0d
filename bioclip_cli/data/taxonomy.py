"""Taxonomy text: the `"{order} {family} {genus} {species}"` string and its tokenisation
(docs/method.md, Model: text encoder).

A missing rank is the literal ``not_classified``, as upstream. Any Hugging Face tokenizer works; the
name ``bioclip-sample`` resolves to the small uncased WordPiece vocabulary bundled with the sample
(used by the `tiny` and `demo` presets, which train the text encoder from scratch).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from bioclip_cli.data.sample import SAMPLE_TOKENIZER, sample_tokenizer_dir
from bioclip_cli.errors import DataError, MissingArtifact

LEVELS: tuple[str, ...] = ("order", "family", "genus", "species")
NOT_CLASSIFIED = "not_classified"
_MISSING = {"", "nan", "none", "null", "na", NOT_CLASSIFIED}
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def clean_rank(value) -> str:
    """A rank value as stored: stripped, and ``not_classified`` when missing (None, NaN, '', 'nan'...)."""
    if value is None:
        return NOT_CLASSIFIED
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, float):  # NaN from a CSV reader
        return NOT_CLASSIFIED
    text = str(value).strip()
    return NOT_CLASSIFIED if text.lower() in _MISSING else text


def taxonomy_string(order, family, genus, species) -> str:
    """``"{order} {family} {genus} {species}"``, each missing rank written ``not_classified``."""
    return " ".join(clean_rank(v) for v in (order, family, genus, species))


def taxonomy_strings(order: Sequence, family: Sequence, genus: Sequence, species: Sequence) -> np.ndarray:
    """Vectorised :func:`taxonomy_string` over four equally long columns; object array of str."""
    cols = [_clean_column(c) for c in (order, family, genus, species)]
    out = cols[0] + " " + cols[1] + " " + cols[2] + " " + cols[3]
    return out.astype(object)


def _clean_column(values: Sequence) -> np.ndarray:
    arr = np.asarray(values, dtype=object)
    if arr.size and all(isinstance(v, str) for v in arr[: min(arr.size, 64)]):
        # fast path: strings already; only blanks and the usual missing spellings need replacing
        stripped = np.char.strip(arr.astype(str))
        missing = np.isin(np.char.lower(stripped), list(_MISSING))
        out = stripped.astype(object)
        out[missing] = NOT_CLASSIFIED
        return out
    return np.array([clean_rank(v) for v in arr], dtype=object)


@lru_cache(maxsize=8)
def load_text_tokenizer(name: str):
    """A Hugging Face fast tokenizer: ``bioclip-sample``, a local folder, or a Hub id in the local cache.

    Raises MissingArtifact (naming the source and `bioclip download encoders`) when it cannot be loaded.
    """
    from transformers import AutoTokenizer

    if name == SAMPLE_TOKENIZER:
        folder = sample_tokenizer_dir()
        if not (folder / "vocab.txt").is_file():
            raise DataError(folder, f"the bundled sample vocabulary is missing from {folder}", "reinstall bioscan-clip")
        return AutoTokenizer.from_pretrained(str(folder))
    path = Path(name).expanduser()
    if path.is_dir():
        try:
            return AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as exc:
            raise DataError(path, f"{path} is not a Hugging Face tokenizer folder ({exc})") from exc
    error: Exception | None = None
    try:  # the local Hugging Face cache first: no network round trip when it is there
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as exc:
        error = exc
    if not _offline():
        try:
            return AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as exc:
            error = exc
    raise MissingArtifact(
        name,
        f"text tokenizer {name!r} is not on disk and could not be fetched from the Hugging Face Hub",
        "run `bioclip download encoders` (or pass a local tokenizer folder)",
    ) from error


def _offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def tokenize_taxonomy(tokenizer, strings: Sequence[str], max_len: int = 20) -> dict[str, np.ndarray]:
    """Tokenise taxonomy strings: int64 arrays ``input_ids``, ``attention_mask``, ``token_type_ids`` [N, max_len].

    Padding to `max_len` and truncation, as upstream (BERT-small, length 20).
    """
    strings = [str(s) for s in strings]
    n = len(strings)
    out = {
        "input_ids": np.zeros((n, max_len), dtype=np.int64),
        "attention_mask": np.zeros((n, max_len), dtype=np.int64),
        "token_type_ids": np.zeros((n, max_len), dtype=np.int64),
    }
    if n == 0:
        return out
    enc = tokenizer(
        strings,
        padding="max_length",
        truncation=True,
        max_length=max_len,
        return_attention_mask=True,
        return_token_type_ids=True,
    )
    for key in out:
        if key in enc:
            out[key][:] = np.asarray(enc[key], dtype=np.int64)
    return out


def wordpiece_vocabulary(words: Iterable[str], max_size: int | None = None) -> list[str]:
    """An uncased BERT WordPiece vocabulary covering `words`.

    Order: the 5 special tokens, the single characters a-z, 0-9 and common punctuation with their
    ``##`` continuations (so any unseen word still splits into pieces instead of [UNK]), then every whole
    lower-cased word, sorted. Raises ValueError when the result exceeds `max_size`.
    """
    import string

    chars = list(string.ascii_lowercase + string.digits)
    punct = list("_-.,()'&/")
    pieces = chars + punct + [f"##{c}" for c in chars]  # '##' + a-z and 0-9
    whole = sorted({w for text in words for w in _basic_split(text.lower())} - set(pieces))
    vocab = [*SPECIAL_TOKENS, *pieces, *whole]
    if max_size is not None and len(vocab) > max_size:
        raise ValueError(f"the vocabulary has {len(vocab)} entries, more than {max_size}")
    return vocab


def _basic_split(text: str) -> list[str]:
    """BERT's basic pre-tokenisation: whitespace, then every punctuation character on its own."""
    out: list[str] = []
    for word in text.split():
        current = ""
        for ch in word:
            if not ch.isalnum():
                if current:
                    out.append(current)
                out.append(ch)
                current = ""
            else:
                current += ch
        if current:
            out.append(current)
    return out

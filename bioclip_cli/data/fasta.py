"""FASTA files of DNA barcodes, and the check of one barcode before it is tokenised.

:func:`read_fasta` reads ``>id description`` headers followed by sequence lines (wrapped or not); blank
lines and ``;`` comment lines are skipped. :func:`barcode_problem` says why a user-given sequence cannot be
embedded (empty, a character that is no nucleotide code, no k-mer made only of A/C/G/T), or returns None.
:func:`clean_barcode` normalises what a user pastes: whitespace removed, upper case (the BarcodeBERT
vocabulary has only upper-case k-mers; a lower-case k-mer would be `<UNK>`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bioclip_cli.errors import DataError

# IUPAC nucleotide codes and the gap; anything else in a barcode is refused. Only A/C/G/T k-mers are in the
# BarcodeBERT vocabulary: a k-mer holding another code is <UNK>, as in the published tokenisation.
NUCLEOTIDE_CODES = frozenset("ACGTURYSWKMBDHVN-")
_WHITESPACE = re.compile(r"\s+")
_ACGT = re.compile("[ACGT]+")


@dataclass(frozen=True)
class FastaRecord:
    id: str  # the first word of the header
    description: str  # the rest of the header
    sequence: str  # the sequence lines joined, as written
    line: int  # line number of the header (1-based)


def read_fasta(path: str | Path) -> list[FastaRecord]:
    """All records of a FASTA file; DataError naming the file and line for a file that is not FASTA."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(path, f"FASTA file {path} does not exist", "check the path given to --dna-fasta") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"{path} is not a readable text file ({exc})", "pass a FASTA file of barcodes") from None
    records: list[FastaRecord] = []
    header: tuple[str, str, int] | None = None
    parts: list[str] = []

    def flush() -> None:
        if header is not None:
            records.append(FastaRecord(header[0], header[1], "".join(parts), header[2]))

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            flush()
            words = line[1:].strip().split(maxsplit=1)
            name = words[0] if words else f"record-{len(records) + 1}"
            header, parts = (name, words[1] if len(words) > 1 else "", number), []
            continue
        if header is None:
            raise DataError(
                path,
                f"{path} line {number}: sequence data before the first '>' header, so this is not a FASTA file",
                "each barcode needs a header line such as '>specimen-1' above it",
            )
        parts.append(_WHITESPACE.sub("", line))
    flush()
    if not records:
        raise DataError(
            path, f"{path} holds no FASTA record (no line starts with '>')", "pass a FASTA file of barcodes"
        )
    return records


def clean_barcode(sequence: str) -> str:
    """The barcode as it is tokenised: whitespace removed, upper case."""
    return _WHITESPACE.sub("", sequence).upper()


def barcode_problem(sequence: str, k: int = 5, max_len: int = 660) -> str | None:
    """Why a (cleaned) barcode cannot be embedded, or None when it can.

    The tokenizer cuts the first `max_len` characters into non-overlapping k-mers from position 0; at
    least one of them must be made of A/C/G/T only, or the model would see nothing but `<UNK>`.
    """
    if not sequence:
        return "the sequence is empty"
    bad = sorted({c for c in sequence if c not in NUCLEOTIDE_CODES})
    if bad:
        first = min(sequence.index(c) for c in bad)
        shown = ", ".join(repr(c) for c in bad[:5]) + (" ..." if len(bad) > 5 else "")
        return f"not a DNA sequence: character(s) {shown} (first at position {first + 1}) are no nucleotide codes"
    head = sequence[:max_len]
    if not any(_ACGT.fullmatch(head, i, i + k) for i in range(0, len(head) - k + 1, k)):
        return f"no {k}-mer of the sequence is made of A/C/G/T only: the model would see nothing but unknown tokens"
    return None
